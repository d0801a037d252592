/**
 * A test inbox: a real SMTP server in your test process that keeps every
 * message it receives, parsed, so that a test can send mail with the code
 * under test and then assert on what arrived. It runs on Deno, Bun and
 * Node, with any test runner (`deno test`, `bun test`, `node --test`).
 *
 * {@link createTestInbox} listens on 127.0.0.1 on a free port, speaks plain
 * SMTP (STARTTLS, implicit TLS and AUTH when asked), with limits no test
 * trips over. {@link TestInbox.waitFor} waits for a message that matches a
 * predicate and, on timeout, says what did arrive.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createTestInbox } from "@smtpd/smtpd/testing";
 *
 * declare function sendWelcomeMail(
 *   smtp: { host: string; port: number },
 *   to: string,
 * ): Promise<void>;
 *
 * const inbox = await createTestInbox();
 * try {
 *   await sendWelcomeMail({ host: inbox.hostname, port: inbox.port }, "a@example.org");
 *   const mail = await inbox.waitFor((m) => m.to.includes("a@example.org"));
 *   assert.equal(mail.subject, "Welcome");
 * } finally {
 *   await inbox.close();
 * }
 * ```
 *
 * @module
 */

import { serve } from "../mod.ts";
import { SmtpError } from "./errors.ts";
import type { Email } from "./message.ts";
import type { ServeOptions } from "./server.ts";
import type { TlsCertificate, TlsInfo, TlsOptions } from "./transport.ts";
import { suggest } from "./keys.ts";

export { SmtpError };
export type { Email, TlsCertificate, TlsInfo, TlsOptions };

/**
 * Options of {@link createTestInbox}. All are optional; unknown keys throw
 * a `TypeError`.
 *
 * @example
 * ```ts
 * import type { TestInboxOptions } from "@smtpd/smtpd/testing";
 *
 * const options: TestInboxOptions = {
 *   serverName: "mx.test",
 *   auth: { users: { alice: "secret" } },
 *   maxMessageSize: 1024 * 1024,
 * };
 * ```
 */
export interface TestInboxOptions {
  /** Interface to listen on. Default `"127.0.0.1"`. */
  hostname?: string;
  /** Port to listen on. Default 0: a free port (see {@link TestInbox.port}). */
  port?: number;
  /** Name in the greeting and the EHLO reply. Default `"smtpd.test"`. */
  serverName?: string;
  /**
   * Certificate and key: STARTTLS is offered (or, with `implicitTls`, TLS
   * from the first byte). Default: none, plain SMTP only.
   */
  tls?: TlsOptions;
  /** TLS from the first byte (port 465 style). Needs `tls`. Default `false`. */
  implicitTls?: boolean;
  /**
   * Users that may log in with AUTH (PLAIN, LOGIN and CRAM-MD5): name →
   * password. On a loopback `hostname` AUTH is offered without TLS too;
   * elsewhere only after STARTTLS or on implicit TLS. Mail without AUTH is
   * still accepted unless `required: true`. Default: no AUTH.
   */
  auth?: TestInboxAuth;
  /**
   * Largest message in octets (advertised with SIZE; larger gets 552).
   * Default 104857600 (100 MiB).
   */
  maxMessageSize?: number;
}

/**
 * The AUTH users of a test inbox ({@link TestInboxOptions.auth}).
 *
 * @example
 * ```ts
 * import { createTestInbox, type TestInboxAuth } from "@smtpd/smtpd/testing";
 *
 * const auth: TestInboxAuth = { users: { alice: "secret" }, required: true };
 * const inbox = await createTestInbox({ auth });
 * await inbox.close();
 * ```
 */
export interface TestInboxAuth {
  /** User name → password. */
  users: Record<string, string>;
  /** MAIL without a successful AUTH gets 530 5.7.0. Default `false`. */
  required?: boolean;
}

/**
 * The connection a {@link ReceivedMail} came in on, as it was when the
 * message ended.
 *
 * @example
 * ```ts
 * import type { ReceivedMail } from "@smtpd/smtpd/testing";
 *
 * function checkSecure(mail: ReceivedMail): void {
 *   if (!mail.session.secure || mail.session.user !== "alice") {
 *     throw new Error(`sent by ${mail.session.user} over ${mail.session.tls?.version ?? "plaintext"}`);
 *   }
 * }
 * ```
 */
export interface ReceivedSession {
  /** The connection's id (as in the server's log entries). */
  readonly id: string;
  /** The client's IP address. */
  readonly remoteAddress: string;
  /** The client's port. */
  readonly remotePort: number;
  /** The name the client gave with EHLO/HELO. */
  readonly helo: string | null;
  /** Whether the client greeted with EHLO (not HELO). */
  readonly esmtp: boolean;
  /** Whether the connection was encrypted (STARTTLS or implicit TLS). */
  readonly secure: boolean;
  /** TLS version and cipher when encrypted, else `null`. */
  readonly tls: TlsInfo | null;
  /** The user that logged in with AUTH, or `null`. */
  readonly user: string | null;
}

/**
 * A message the inbox accepted: the SMTP envelope, the bytes as received,
 * and the message as parsed by postal-mime, with its most used fields
 * copied to the top level. `to` and `from` are the **envelope** (RCPT TO,
 * MAIL FROM): where the mail was sent, Bcc included. The header fields are
 * `fromHeader`, `toHeader` and `ccHeader`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createTestInbox } from "@smtpd/smtpd/testing";
 *
 * const inbox = await createTestInbox();
 * // ... the code under test sends a message ...
 * const mail = await inbox.waitFor((m) => m.subject === "Your receipt");
 * assert.deepEqual(mail.to, ["buyer@example.org"]);
 * assert.match(mail.text ?? "", /Total: 12\.00 EUR/);
 * assert.equal(mail.attachments[0]?.filename, "receipt.pdf");
 * assert.equal(mail.header("x-mailer"), "shop 1.0");
 * await inbox.close();
 * ```
 */
export interface ReceivedMail {
  /** The server's id of the message (as in its 250 reply and log). */
  readonly id: string;
  /** Envelope sender (MAIL FROM); `""` for the null reverse-path `<>`. */
  readonly from: string;
  /** Envelope recipients (RCPT TO), in order. */
  readonly to: readonly string[];
  /** The connection it came in on. */
  readonly session: ReceivedSession;
  /** When it was received. */
  readonly receivedAt: Date;
  /** The message as received: headers and body, CRLF line ends, dot-unstuffed. */
  readonly raw: Uint8Array;
  /** `raw` decoded as UTF-8, for `assert.match` on the source. */
  readonly source: string;
  /** The whole parse result of postal-mime. */
  readonly email: Email;
  /** The Subject header (decoded), or `undefined`. */
  readonly subject: string | undefined;
  /** The plain-text body, or `undefined` when there is none. */
  readonly text: string | undefined;
  /** The HTML body, or `undefined` when there is none. */
  readonly html: string | undefined;
  /** Every header in order, duplicates included (`key` is lower case). */
  readonly headers: Email["headers"];
  /** Attachments (and inline parts) with their content. */
  readonly attachments: Email["attachments"];
  /** The Message-ID header, angle brackets included, or `undefined`. */
  readonly messageId: string | undefined;
  /** The Date header as an ISO 8601 string (or as written when it does not parse). */
  readonly date: string | undefined;
  /** The From header, parsed (`{ name, address }`), or `undefined`. */
  readonly fromHeader: Email["from"];
  /** The To header, parsed, or `undefined`. */
  readonly toHeader: Email["to"];
  /** The Cc header, parsed, or `undefined`. */
  readonly ccHeader: Email["cc"];
  /**
   * The value of the first header with this name (any case), unfolded, or
   * `undefined`.
   */
  header(name: string): string | undefined;
}

/**
 * Options of {@link TestInbox.waitFor} and {@link TestInbox.waitForCount}.
 *
 * @example
 * ```ts
 * import type { WaitOptions } from "@smtpd/smtpd/testing";
 *
 * const slow: WaitOptions = { timeout: 30_000 };
 * ```
 */
export interface WaitOptions {
  /** Milliseconds to wait before rejecting. Default 5000. */
  timeout?: number;
}

/**
 * A running test inbox (see {@link createTestInbox}). Messages are stored
 * before the client gets its 250: once the code under test has sent a
 * message, it is in `messages`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createTestInbox } from "@smtpd/smtpd/testing";
 *
 * await using inbox = await createTestInbox();
 * // ... send two messages to inbox.hostname:inbox.port ...
 * const [first, second] = await inbox.waitForCount(2);
 * assert.equal(first.subject, "Hello");
 * assert.equal(second.subject, "Hello again");
 * inbox.clear();
 * assert.equal(inbox.messages.length, 0);
 * ```
 */
export interface TestInbox extends TestInboxDispose {
  /** The address the inbox listens on, for the code under test. */
  readonly hostname: string;
  /** The bound port (a free one unless `port` was given). */
  readonly port: number;
  /** `smtp://hostname:port` (`smtps://` with implicit TLS). */
  readonly url: string;
  /** The messages received so far (since the last `clear()`), in order of arrival: a copy. */
  readonly messages: readonly ReceivedMail[];
  /**
   * Resolves with the first message, received before or after the call
   * (and since the last `clear()`), that `predicate` accepts (any message
   * without one). Rejects after `timeout` ms (default 5000), or when the
   * inbox closes, with an error that lists what did arrive.
   */
  waitFor(
    predicate?: (mail: ReceivedMail) => boolean,
    options?: WaitOptions,
  ): Promise<ReceivedMail>;
  /**
   * Resolves with the first `count` messages once that many have arrived
   * (since the last `clear()`). Rejects like {@link TestInbox.waitFor}.
   */
  waitForCount(
    count: number,
    options?: WaitOptions,
  ): Promise<ReceivedMail[]>;
  /**
   * Refuses the next message with this reply instead of storing it (for
   * testing how the code under test handles a temporary or permanent
   * failure). Calls queue up: each refuses one message. Default reply:
   * 451 4.3.0. Nothing is printed for it: {@link TestInbox.waitFor}
   * lists the refused messages when it times out. (Only an error inside
   * the inbox itself, a bug, is printed, with `console.error`.)
   */
  failNext(error?: SmtpError): void;
  /** Forgets the messages received so far (and pending `failNext` replies). */
  clear(): void;
  /** Stops the server and rejects pending waits. Safe to call twice. */
  close(): Promise<void>;
}

/**
 * A {@link TestInbox}'s `[Symbol.asyncDispose]()`: the same as `close()`,
 * for `await using inbox = await createTestInbox()`. It is in the type
 * where the project's TypeScript library knows `Symbol.asyncDispose`
 * (`lib: ["esnext"]` or `"esnext.disposable"`, or @types/node), and left
 * out where it does not (`lib: ["es2022", "dom"]`), so that such a project
 * compiles too; the inbox has the method either way.
 *
 * @example
 * ```ts
 * import { createTestInbox } from "@smtpd/smtpd/testing";
 *
 * await using inbox = await createTestInbox();
 * console.log(`send to ${inbox.hostname}:${inbox.port}`);
 * ```
 */
export type TestInboxDispose = SymbolConstructor extends {
  readonly asyncDispose: infer S extends symbol;
} ? { [K in S]: () => Promise<void> }
  : Record<never, never>;

const DEFAULT_TIMEOUT = 5000;
const DEFAULT_MAX_MESSAGE_SIZE = 100 * 1024 * 1024;
const KNOWN_OPTIONS = [
  "hostname",
  "port",
  "serverName",
  "tls",
  "implicitTls",
  "auth",
  "maxMessageSize",
] as const;
const KNOWN_AUTH_OPTIONS = ["users", "required"] as const;

/** `Symbol.asyncDispose`, or the well-known stand-in where a runtime lacks it. */
const asyncDispose: typeof Symbol.asyncDispose =
  (Symbol as { asyncDispose?: typeof Symbol.asyncDispose }).asyncDispose ??
    (Symbol.for("Symbol.asyncDispose") as typeof Symbol.asyncDispose);

/**
 * Starts a test inbox: an SMTP server on 127.0.0.1 on a free port that
 * stores every message it receives, parsed. Plain SMTP by default; give
 * `tls` for STARTTLS (and `implicitTls` for TLS from the first byte),
 * `auth.users` for AUTH. Limits are generous (100 MiB messages, 1000
 * recipients, no connection limits); bare CR or LF in a message is still
 * refused (550 5.6.0), as most real servers do.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createTestInbox } from "@smtpd/smtpd/testing";
 *
 * declare function sendInvoice(host: string, port: number, to: string): Promise<void>;
 *
 * const inbox = await createTestInbox();
 * try {
 *   await sendInvoice(inbox.hostname, inbox.port, "a@example.org");
 *   const mail = await inbox.waitFor((m) => m.to.includes("a@example.org"), { timeout: 5000 });
 *   assert.equal(mail.subject, "Invoice");
 * } finally {
 *   await inbox.close();
 * }
 * ```
 */
export async function createTestInbox(
  options: TestInboxOptions = {},
): Promise<TestInbox> {
  checkOptions(options);
  const hostname = options.hostname ?? "127.0.0.1";
  const users = options.auth?.users;
  const received: ReceivedMail[] = [];
  const refused: string[] = [];
  const failures: SmtpError[] = [];
  const waiters = new Set<Waiter>();
  let closed = false;
  // Messages are stored in the order their bodies ended, even if one
  // parses slower than the next.
  let chain: Promise<unknown> = Promise.resolve();

  const notify = () => {
    for (const w of waiters) w.check();
  };

  const serveOptions: ServeOptions = {
    hostname,
    port: options.port ?? 0,
    serverName: options.serverName ?? "smtpd.test",
    maxMessageSize: options.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE,
    maxRecipients: 1000,
    maxConnections: Infinity,
    maxConnectionsPerIp: Infinity,
    closeTimeout: 2000,
    async onMessage(message, session) {
      const raw = await message.bytes();
      const snapshot: ReceivedSession = {
        id: session.id,
        remoteAddress: session.remoteAddress,
        remotePort: session.remotePort,
        helo: session.heloName,
        esmtp: session.esmtp,
        secure: session.secure,
        tls: session.tls,
        user: session.user,
      };
      const fail = failures.shift();
      if (fail !== undefined) {
        refused.push(
          `${
            describeEnvelope(message.from, message.to)
          }: refused with ${fail.code} ${fail.message} (failNext)`,
        );
        throw fail;
      }
      const turn = chain.then(async () => {
        const email = await message.parse();
        const mail = toReceivedMail(
          message.id,
          message.from,
          message.to,
          snapshot,
          raw,
          email,
        );
        received.push(mail);
        notify();
      });
      chain = turn.catch(() => {});
      try {
        await turn;
      } catch (err) {
        const reason = err instanceof Error ? err.message : String(err);
        const envelope = describeEnvelope(message.from, message.to);
        refused.push(`${envelope}: refused with 451, cannot parse: ${reason}`);
        // Not a refusal the test asked for: say why, where the test's
        // output shows it, and in the reply the code under test gets.
        console.error(
          `smtpd/testing: ${envelope}: refused with 451, cannot parse the message:`,
          err,
        );
        const reply = new SmtpError(
          451,
          "4.3.0",
          `Test inbox cannot parse the message: ${firstLine(reason)}`,
        );
        reply.cause = err;
        throw reply;
      }
    },
  };
  if (options.tls !== undefined) serveOptions.tls = options.tls;
  if (options.implicitTls !== undefined) {
    serveOptions.implicitTls = options.implicitTls;
  }
  if (users !== undefined) {
    serveOptions.auth = {
      lookupPassword: (name) =>
        Object.prototype.hasOwnProperty.call(users, name) ? users[name] : null,
      required: options.auth?.required ?? false,
    };
    serveOptions.allowInsecureAuth = isLoopback(hostname);
  }

  const server = await serve(serveOptions);
  const port = server.addr.port;
  const urlHost = server.addr.hostname.includes(":")
    ? `[${server.addr.hostname}]`
    : server.addr.hostname;
  const url = `${options.implicitTls ? "smtps" : "smtp"}://${urlHost}:${port}`;

  const summary = (): string => {
    const lines = received.length === 0 ? ["nothing arrived"] : [
      `${received.length} message${received.length === 1 ? "" : "s"} arrived:`,
      ...received.map((m, i) => `  ${i + 1}. ${describeMail(m)}`),
    ];
    if (refused.length > 0) {
      lines.push(
        `${refused.length} refused:`,
        ...refused.map((r, i) => `  ${i + 1}. ${r}`),
      );
    }
    return lines.join("\n");
  };

  function wait<T>(
    what: string,
    options: WaitOptions | undefined,
    ready: () => T | undefined,
  ): Promise<T> {
    const timeout = checkTimeout(options);
    // A predicate that throws rejects the wait (not the message).
    let now: T | undefined;
    try {
      now = ready();
    } catch (err) {
      return Promise.reject(err);
    }
    if (now !== undefined) return Promise.resolve(now);
    if (closed) {
      return Promise.reject(
        new Error(
          `Cannot wait for ${what}: the test inbox is closed; ${summary()}`,
        ),
      );
    }
    return new Promise<T>((resolve, reject) => {
      const waiter: Waiter = {
        check() {
          let value: T | undefined;
          try {
            value = ready();
          } catch (err) {
            done();
            reject(err);
            return;
          }
          if (value === undefined) return;
          done();
          resolve(value);
        },
        fail(reason) {
          done();
          reject(new Error(`${reason} waiting for ${what}; ${summary()}`));
        },
      };
      const timer = setTimeout(
        () => waiter.fail(`Timed out after ${timeout} ms`),
        timeout,
      );
      const done = () => {
        clearTimeout(timer);
        waiters.delete(waiter);
      };
      waiters.add(waiter);
    });
  }

  let closing: Promise<void> | null = null;
  const close = (): Promise<void> => {
    if (closing !== null) return closing;
    closed = true;
    for (const w of [...waiters]) w.fail("The test inbox closed");
    closing = server.close();
    return closing;
  };

  const inbox: TestInbox = {
    hostname: server.addr.hostname,
    port,
    url,
    get messages(): readonly ReceivedMail[] {
      return received.slice();
    },
    waitFor(predicate, options) {
      if (predicate !== undefined && typeof predicate !== "function") {
        throw new TypeError(
          "Cannot use predicate: value is not a function",
        );
      }
      const match = predicate ?? (() => true);
      return wait(describePredicate(predicate), options, () => {
        for (const m of received) if (match(m)) return m;
        return undefined;
      });
    },
    waitForCount(count, options) {
      if (!Number.isInteger(count) || count < 1) {
        throw new TypeError(
          `Cannot use count: value is not a positive integer`,
        );
      }
      return wait(
        `${count} message${count === 1 ? "" : "s"}`,
        options,
        () => received.length >= count ? received.slice(0, count) : undefined,
      );
    },
    failNext(error) {
      if (
        error !== undefined &&
        (typeof error !== "object" || error === null ||
          typeof (error as SmtpError).code !== "number")
      ) {
        throw new TypeError("Cannot use error: value is not an SmtpError");
      }
      failures.push(
        error ??
          new SmtpError(
            451,
            "4.3.0",
            "Test inbox refuses this message as asked",
          ),
      );
    },
    clear() {
      received.length = 0;
      refused.length = 0;
      failures.length = 0;
    },
    close,
    [asyncDispose]: close,
  };
  return inbox;
}

/** A pending waitFor/waitForCount. */
interface Waiter {
  check(): void;
  fail(reason: string): void;
}

function toReceivedMail(
  id: string,
  from: string,
  to: readonly string[],
  session: ReceivedSession,
  raw: Uint8Array,
  email: Email,
): ReceivedMail {
  const headers = email.headers;
  return {
    id,
    from,
    to: Object.freeze([...to]),
    session: Object.freeze(session),
    receivedAt: new Date(),
    raw,
    source: new TextDecoder().decode(raw),
    email,
    subject: email.subject,
    text: email.text,
    html: email.html,
    headers,
    attachments: email.attachments,
    messageId: email.messageId,
    date: email.date,
    fromHeader: email.from,
    toHeader: email.to,
    ccHeader: email.cc,
    header(name: string): string | undefined {
      const key = String(name).toLowerCase();
      return headers.find((h) => h.key === key)?.value;
    },
  };
}

/** `from → to, to: "subject"` for error messages. */
function describeMail(m: ReceivedMail): string {
  return `${describeEnvelope(m.from, m.to)}: ${
    m.subject === undefined ? "(no subject)" : JSON.stringify(m.subject)
  }`;
}

/** The first line of a text, at most 200 characters (for a reply). */
function firstLine(text: string): string {
  const line = text.split(/\r\n|\r|\n/, 1)[0];
  return line.length <= 200 ? line : `${line.slice(0, 197)}...`;
}

function describeEnvelope(from: string, to: readonly string[]): string {
  return `${from === "" ? "<>" : from} → ${to.join(", ")}`;
}

function describePredicate(
  predicate: ((mail: ReceivedMail) => boolean) | undefined,
): string {
  if (predicate === undefined) return "a message";
  const source = String(predicate).replace(/\s+/g, " ");
  return source.length <= 120
    ? `a message matching ${source}`
    : "a message matching the predicate";
}

function checkTimeout(options: WaitOptions | undefined): number {
  if (options === undefined) return DEFAULT_TIMEOUT;
  if (typeof options !== "object" || options === null) {
    throw new TypeError("Cannot use wait options: value is not an object");
  }
  for (const key of Object.keys(options)) {
    if (key !== "timeout") {
      throw new TypeError(
        `Cannot use wait option ${key}: unknown option${
          didYouMean(key, ["timeout"])
        }`,
      );
    }
  }
  const t = options.timeout;
  if (t === undefined) return DEFAULT_TIMEOUT;
  if (typeof t !== "number" || Number.isNaN(t) || t < 0) {
    throw new TypeError(
      "Cannot use wait option timeout: value is not a non-negative number",
    );
  }
  // setTimeout takes at most 2^31-1 ms; longer waits are "forever" in a test.
  return Math.min(t, 2147483647);
}

function checkOptions(options: TestInboxOptions): void {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(
      "Cannot use test inbox options: value is not an object",
    );
  }
  for (const key of Object.keys(options)) {
    if (!(KNOWN_OPTIONS as readonly string[]).includes(key)) {
      throw new TypeError(
        `Cannot use test inbox option ${key}: unknown option${
          didYouMean(key, KNOWN_OPTIONS)
        }`,
      );
    }
  }
  const auth = options.auth;
  if (auth === undefined) return;
  if (typeof auth !== "object" || auth === null) {
    throw new TypeError("Cannot use option auth: value is not an object");
  }
  for (const key of Object.keys(auth)) {
    if (!(KNOWN_AUTH_OPTIONS as readonly string[]).includes(key)) {
      throw new TypeError(
        `Cannot use option auth.${key}: unknown option${
          didYouMean(key, KNOWN_AUTH_OPTIONS)
        }`,
      );
    }
  }
  const users = auth.users;
  if (typeof users !== "object" || users === null || Array.isArray(users)) {
    throw new TypeError(
      "Cannot use option auth.users: value is not an object of user → password",
    );
  }
  for (const [name, password] of Object.entries(users)) {
    if (typeof password !== "string") {
      throw new TypeError(
        `Cannot use option auth.users.${name}: value is not a string`,
      );
    }
  }
  if (auth.required !== undefined && typeof auth.required !== "boolean") {
    throw new TypeError(
      "Cannot use option auth.required: value is not a boolean",
    );
  }
}

/** ` (did you mean "x"?)` for a near match (as serve() finds it), else `""`. */
function didYouMean(key: string, known: readonly string[]): string {
  const near = suggest(key, known);
  return near !== undefined ? ` (did you mean "${near}"?)` : "";
}

function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" ||
    /^127\.\d+\.\d+\.\d+$/.test(hostname);
}
