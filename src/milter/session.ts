/**
 * The `milters` option at work in one SMTP session: one
 * {@link MilterClient} per filter, connected after `onConnect` accepts and
 * before the greeting, reused by the session's transactions (`abort()`
 * between them) and closed with the session; never shared between
 * sessions. The driver asks {@link MilterSession.decide} after each
 * connect/HELO/MAIL/RCPT its hook accepted, {@link MilterSession.reset}
 * at RSET, and delivery hands each message to
 * {@link MilterSession.message} instead of the application: the filters
 * see it while it arrives (held meanwhile in memory, past
 * `SPILL_BYTES` in a temporary file, `held_message.ts`), and the application gets it,
 * modified as the filters asked, only after end-of-message.
 *
 * Loaded by the server only when `milters` is not empty (it imports
 * `node:net` and `node:fs`).
 *
 * @module
 */

import { MilterClient } from "./client.ts";
import type { HeaderModification } from "./headers.ts";
import { applyHeaderModifications } from "./headers.ts";
import type {
  MilterConnectInfo,
  MilterMacros,
  MilterModification,
  MilterOptions,
  MilterRejection,
  MilterResult,
  MilterVerdict,
} from "./options.ts";
import type { Mailbox } from "../address.ts";
import type { MailParams, RcptParams, Recipient } from "../engine.ts";
import { SmtpError } from "../errors.ts";
import { IncomingMessage } from "../message.ts";
import { fieldsOf, HeaderReader, Hold } from "./held_message.ts";
import type { HookResult } from "../serve_options.ts";
import type { Logger, Session } from "../session.ts";

const TEMPFAIL = new SmtpError(
  451,
  "4.7.1",
  "Service unavailable - try again later",
);
const TEMPFAIL_CONNECT = new SmtpError(
  421,
  "4.7.1",
  "Service unavailable - try again later",
);

/** The decision events a filter is asked about after the hook accepted. */
export type MilterDecision =
  | { type: "connect" }
  | { type: "helo"; hostname: string }
  | { type: "mail"; from: Mailbox; params: MailParams }
  | { type: "rcpt"; to: Mailbox; params: RcptParams };

/**
 * What a session's filters need of the server.
 *
 * @example
 * ```ts
 * import type { MilterServer } from "./session.ts";
 * const server: MilterServer = {
 *   serverName: "mx.example.org",
 *   lmtp: false,
 *   logger: undefined,
 *   observe: () => {},
 *   deliver: () => {},
 *   withdraw: () => {},
 * };
 * ```
 */
export interface MilterServer {
  /** The server's name: macro `j`. */
  readonly serverName: string;
  /** LMTP: one reply per recipient. */
  readonly lmtp: boolean;
  /** The server's logger. */
  readonly logger: Logger | undefined;
  /** Counts the time one filter took at one stage, in milliseconds. */
  observe(milter: string, stage: string, ms: number): void;
  /** Hands a message to the application (onMessage or the loop). */
  deliver(message: IncomingMessage): HookResult;
  /** Takes a message back from the loop, if it is still waiting. */
  withdraw(message: IncomingMessage): void;
}

interface Filter {
  readonly address: string;
  readonly client: MilterClient;
}

/** `KEY=VALUE` (or `KEY`) for each ESMTP parameter, as sent. */
function esmtpParams(params: Record<string, string | true>): string[] {
  return Object.entries(params).map(([k, v]) => v === true ? k : `${k}=${v}`);
}

/** `<address>` as a milter sees a path. */
function path(address: string): string {
  return `<${address}>`;
}

/** A mailbox out of a filter's `<address>` (or bare address). */
function mailboxOf(given: string): Mailbox {
  let a = given.trim();
  if (a.startsWith("<") && a.endsWith(">")) a = a.slice(1, -1);
  const at = a.lastIndexOf("@");
  return at < 0
    ? { address: a, localPart: a, domain: "" }
    : { address: a, localPart: a.slice(0, at), domain: a.slice(at + 1) };
}

/** The reply for a reject or tempfail verdict. */
function replyOf(v: MilterRejection): SmtpError {
  return new SmtpError(v.code, v.enhancedCode, v.text);
}

/**
 * The filters of one SMTP session.
 *
 * @example
 * ```ts
 * import { MilterSession } from "./session.ts";
 * import type { Session } from "../session.ts";
 *
 * declare const session: Session;
 * const filters = new MilterSession([{ address: "inet:11332@127.0.0.1" }], session, {
 *   serverName: "mx.example.org",
 *   lmtp: false,
 *   logger: undefined,
 *   observe: () => {},
 *   deliver: () => {},
 *   withdraw: () => {},
 * });
 * const refusal = await filters.decide({ type: "connect" }); // null: go on
 * await filters.close();
 * ```
 */
export class MilterSession {
  readonly #filters: Filter[];
  readonly #session: Session;
  readonly #server: MilterServer;
  /** The filters have a transaction (MAIL sent) not ended by EOM or abort. */
  #open = false;
  /** A filter discarded the transaction (or, at connect/HELO, the session). */
  #discard = false;
  /** The SASL mechanism of a successful AUTH: the `{auth_type}` macro. */
  authType: string | null = null;
  /** The envelope each message was handed to the application with. */
  readonly #delivered = new WeakMap<
    IncomingMessage,
    { from: string; to: readonly string[] }
  >();

  /**
   * The filters of `session`, in order (options validated by serve()).
   *
   * @param milters the `milters` option
   * @param session the SMTP session
   * @param server what the filters need of the server
   */
  constructor(
    milters: readonly MilterOptions[],
    session: Session,
    server: MilterServer,
  ) {
    this.#filters = milters.map((o) => ({
      address: o.address,
      client: new MilterClient(o),
    }));
    this.#session = session;
    this.#server = server;
  }

  /** Runs one stage on `f`, timed. */
  async #timed<T>(f: Filter, stage: string, run: () => Promise<T>): Promise<T> {
    const since = performance.now();
    try {
      return await run();
    } finally {
      this.#server.observe(f.address, stage, performance.now() - since);
    }
  }

  /** Logs a verdict that refuses or discards. */
  #log(
    f: Filter,
    stage: string,
    v: MilterVerdict,
    message?: IncomingMessage,
  ): void {
    const log = this.#server.logger;
    if (log === undefined) return;
    log({
      type: "milter",
      session: this.#session.id,
      milter: f.address,
      stage,
      action: v.action,
      ...(v.action === "reject" || v.action === "tempfail"
        ? { reply: replyOf(v).toString() }
        : {}),
      ...("failure" in v && v.failure !== undefined
        ? { failure: v.failure }
        : {}),
      ...(message !== undefined
        ? { id: message.id, from: message.from, to: message.to }
        : {}),
    });
  }

  /**
   * Asks each filter in order; the first reject, tempfail or discard ends
   * the round (and is returned); null when all went on.
   */
  async #each(
    stage: string,
    call: (c: MilterClient) => Promise<MilterVerdict>,
    message?: IncomingMessage,
  ): Promise<MilterVerdict | null> {
    for (const f of this.#filters) {
      const v = await this.#timed(f, stage, () => call(f.client));
      if (
        v.action === "reject" || v.action === "tempfail" ||
        v.action === "discard"
      ) {
        this.#log(f, stage, v, message);
        if (v.action === "discard") this.#discard = true;
        return v;
      }
    }
    return null;
  }

  /** The connect stage's information and macros, as Postfix sends them. */
  #connectInfo(): { info: MilterConnectInfo; macros: MilterMacros } {
    const s = this.#session;
    const unix = s.remoteAddress === "unix";
    const addr = s.remoteAddress;
    const name = s.clientHostname !== null && s.clientHostname !== "unknown"
      ? s.clientHostname
      : null;
    const ptr = s.reverseDns?.reverseName ?? "unknown";
    const literal = addr.includes(":") ? `[IPv6:${addr}]` : `[${addr}]`;
    const macros: Record<string, string> = {
      j: this.#server.serverName,
      "{daemon_name}": "smtpd",
      "{daemon_addr}": s.localAddress,
      v: "smtpd",
      _: `${name ?? "unknown"} ${literal}`,
      "{client_addr}": addr,
      "{client_port}": String(s.remotePort),
      "{client_name}": name ?? "unknown",
      "{client_ptr}": ptr,
      "{if_name}": this.#server.serverName,
      "{if_addr}": s.localAddress,
    };
    return {
      info: {
        hostname: name ?? `[${addr}]`,
        family: unix ? "L" : addr.includes(":") ? "6" : "4",
        port: unix ? 0 : s.remotePort,
        address: addr,
      },
      macros,
    };
  }

  /** TLS and AUTH macros of the session now. */
  #sessionMacros(): Record<string, string> {
    const s = this.#session;
    const m: Record<string, string> = {};
    if (s.tls !== null) {
      m["{tls_version}"] = s.tls.version;
      m["{cipher}"] = s.tls.cipher;
    }
    if (s.user !== null) {
      m["{auth_authen}"] = s.user;
      if (this.authType !== null) m["{auth_type}"] = this.authType;
    }
    return m;
  }

  /** Aborts the filters' transaction, if one is open. */
  async #abort(): Promise<void> {
    if (!this.#open) return;
    this.#open = false;
    for (const f of this.#filters) {
      await this.#timed(f, "abort", () => f.client.abort());
    }
  }

  /**
   * Asks the filters about a connect, HELO/EHLO, MAIL or RCPT the hook
   * accepted: null to go on, else the reply. At connect a reject refuses
   * the greeting with 554 (a tempfail with 421), as Postfix does; at RCPT
   * a reject refuses that recipient only. A discard lets the command
   * through and marks the message (or, at connect and HELO, every
   * message of the session) to be discarded.
   *
   * @example
   * ```ts
   * import type { MilterSession } from "./session.ts";
   * declare const filters: MilterSession;
   * const reply = await filters.decide({ type: "helo", hostname: "client.example" });
   * ```
   */
  async decide(ev: MilterDecision): Promise<SmtpError | null> {
    try {
      return await this.#decide(ev);
    } catch (error) {
      // Not the filter's answer (the client turns those into verdicts):
      // a fault of ours, answered as a filter failure.
      this.#server.logger?.({
        type: "error",
        session: this.#session.id,
        message: `milter ${ev.type} stage failed`,
        error,
      });
      return ev.type === "connect" ? TEMPFAIL_CONNECT : TEMPFAIL;
    }
  }

  async #decide(ev: MilterDecision): Promise<SmtpError | null> {
    let v: MilterVerdict | null;
    switch (ev.type) {
      case "connect": {
        const { info, macros } = this.#connectInfo();
        v = await this.#each("connect", (c) => c.connect(info, macros));
        if (v === null || v.action === "discard") return null;
        if (v.action === "tempfail") {
          return new SmtpError(421, v.enhancedCode, v.text);
        }
        if (v.action !== "reject") return null;
        // The filter's own code (SMFIR_REPLYCODE), else 554 as Postfix.
        return new SmtpError(
          v.code === 550 && v.text === "Command rejected" ? 554 : v.code,
          v.enhancedCode,
          v.text,
        );
      }
      case "helo": {
        // HELO/EHLO ends a transaction in progress.
        await this.#abort();
        const macros = this.#sessionMacros();
        v = await this.#each("helo", (c) => c.helo(ev.hostname, macros));
        break;
      }
      case "mail": {
        await this.#abort();
        this.#open = true;
        this.#discard = false;
        const macros = {
          ...this.#sessionMacros(),
          "{mail_addr}": ev.from.address,
        };
        const params = esmtpParams(ev.params.params);
        v = await this.#each(
          "mail",
          (c) => c.mail(path(ev.from.address), params, macros),
        );
        break;
      }
      case "rcpt": {
        const macros = { "{rcpt_addr}": ev.to.address };
        const params = esmtpParams(ev.params.params);
        v = await this.#each(
          "rcpt",
          (c) => c.rcpt(path(ev.to.address), params, macros),
        );
        break;
      }
      default: {
        const never: never = ev;
        throw new Error(`Unexpected decision: ${JSON.stringify(never)}`);
      }
    }
    return v !== null && (v.action === "reject" || v.action === "tempfail")
      ? replyOf(v)
      : null;
  }

  /**
   * RSET: the filters' transaction ends (`abort()`).
   *
   * @example
   * ```ts
   * import type { MilterSession } from "./session.ts";
   * declare const filters: MilterSession;
   * await filters.reset();
   * ```
   */
  async reset(): Promise<void> {
    this.#discard = false;
    await this.#abort();
  }

  /**
   * Takes the place of the application for `message` (the message as the
   * client sends it): shows it to the filters while it arrives, holds it,
   * and after end-of-message hands the application (through the server's
   * `deliver`) the message as the filters changed it, with
   * `message.milter`. Resolves when the application is done with it (or
   * at once for a discarded message); throws the reply of a filter's
   * reject or tempfail, or the application's error.
   *
   * @example
   * ```ts
   * import type { MilterSession } from "./session.ts";
   * import type { IncomingMessage } from "../message.ts";
   * declare const filters: MilterSession;
   * declare const message: IncomingMessage;
   * await filters.message(message);
   * ```
   */
  async message(msg: IncomingMessage): Promise<void> {
    const hold = new Hold(msg.id);
    const reader = msg.raw.getReader();
    let ended = false;
    let verdict: MilterVerdict | null = this.#discard
      ? { action: "discard" }
      : null;
    try {
      const i = { i: msg.id };
      verdict ??= await this.#each("data", (c) => c.data(i), msg);
      const headers = new HeaderReader();
      /** Sends the header block (once) and starts the body. */
      const sendHeaders = async (block: Uint8Array) => {
        for (const { name, value } of fieldsOf(block)) {
          verdict ??= await this.#each(
            "header",
            (c) => c.header(name, value),
            msg,
          );
        }
        verdict ??= await this.#each("eoh", (c) => c.endOfHeaders(i), msg);
      };
      const sendBody = async (chunk: Uint8Array) => {
        await hold.write(chunk);
        if (verdict === null && chunk.length > 0) {
          verdict = await this.#each("body", (c) => c.body(chunk), msg);
        }
      };
      while (verdict === null) {
        const { done, value } = await reader.read();
        if (done) break;
        if (headers.done === null) {
          if (!headers.push(value)) continue;
          await sendHeaders(headers.done!.block);
          await sendBody(headers.done!.rest);
        } else await sendBody(value);
      }
      if (verdict === null && headers.done === null) {
        // The body ended inside the header block.
        await sendHeaders(headers.finish().block);
        await sendBody(headers.done!.rest);
      }
      const stop = verdict as MilterVerdict | null;
      if (stop !== null) {
        if (stop.action === "reject" || stop.action === "tempfail") {
          throw replyOf(stop);
        }
        // Discarded: the client gets 250, the application nothing.
        msg.milter = this.#results(stop);
        return;
      }
      // From here on the filters' transaction ends at end-of-message (a
      // next MAIL may come while the application still has this one).
      ended = true;
      this.#open = false;
      await this.#endOfMessage(msg, headers.done!.block, hold);
    } finally {
      reader.releaseLock();
      if (!ended) {
        this.#open = true;
        await this.#abort();
      }
      await hold.dispose();
    }
  }

  /** Every filter's result when the message stopped at `v` (no end-of-message). */
  #results(v: MilterVerdict): MilterResult[] {
    return this.#filters.map((f) => ({
      address: f.address,
      verdict: v,
      modifications: [],
      addedHeaders: [],
    }));
  }

  /** End-of-message on each filter, then the message to the application. */
  async #endOfMessage(
    msg: IncomingMessage,
    block: Uint8Array,
    hold: Hold,
  ): Promise<void> {
    const results: MilterResult[] = [];
    const i = { i: msg.id };
    try {
      await this.#endEach(msg, results, i);
    } finally {
      // The filters not asked (one before them rejected or discarded) end
      // the message with an abort.
      for (const f of this.#filters.slice(results.length)) {
        await this.#timed(f, "abort", () => f.client.abort());
      }
    }
    const discard = results.some((r) => r.verdict.action === "discard");
    msg.milter = results;
    if (discard) return;
    await this.#deliver(msg, results, block, hold);
  }

  /** End-of-message on each filter in order, up to a reject or discard. */
  async #endEach(
    msg: IncomingMessage,
    results: MilterResult[],
    i: MilterMacros,
  ): Promise<void> {
    for (const f of this.#filters) {
      const eom = await this.#timed(
        f,
        "eom",
        () => f.client.endOfMessage(i),
      );
      const v = eom.verdict;
      const added = eom.modifications.flatMap((m) =>
        m.type === "add-header" || m.type === "insert-header"
          ? [{ name: m.name, value: m.value }]
          : []
      );
      results.push({
        address: f.address,
        verdict: v,
        modifications: eom.modifications,
        addedHeaders: added,
        ...(v.action === "quarantine" ? { quarantine: v.reason } : {}),
      });
      if (v.action === "reject" || v.action === "tempfail") {
        this.#log(f, "eom", v, msg);
        throw replyOf(v);
      }
      if (v.action === "discard") {
        this.#log(f, "eom", v, msg);
        return;
      }
    }
  }

  /** Applies the filters' modifications and hands the message to the application. */
  async #deliver(
    msg: IncomingMessage,
    results: MilterResult[],
    block: Uint8Array,
    hold: Hold,
  ): Promise<void> {
    const mods: MilterModification[] = results.flatMap((r) => [
      ...r.modifications,
    ]);
    const headerMods = mods.filter((m): m is HeaderModification =>
      m.type.endsWith("-header")
    );
    const headerBytes = headerMods.length > 0
      ? applyHeaderModifications(block, headerMods)
      : block;
    let newBody: Uint8Array[] | null = null;
    for (const r of results) {
      const pieces = r.modifications.flatMap((m) =>
        m.type === "replace-body" ? [m.chunk] : []
      );
      if (pieces.length > 0) newBody = pieces;
    }
    let from = msg.mailFrom;
    let recipients: Recipient[] = [...msg.recipients];
    for (const m of mods) {
      if (m.type === "change-sender") {
        from = { mailbox: mailboxOf(m.sender), params: msg.mailFrom.params };
      } else if (m.type === "add-recipient") {
        const mailbox = mailboxOf(m.recipient);
        recipients.push({ mailbox, params: { params: {} } });
      } else if (m.type === "delete-recipient") {
        const gone = mailboxOf(m.recipient).address.toLowerCase();
        recipients = recipients.filter((r) =>
          r.mailbox.address.toLowerCase() !== gone
        );
      }
    }
    const lmtp = this.#server.lmtp;
    const final = new IncomingMessage(msg.id, from, recipients, msg.session, {
      bodyType: msg.bodyType,
      command: msg.command,
      lmtp,
    });
    final.milter = results;
    // The sender's copy given up (hookTimeout, disconnect, shutdown): the
    // application's copy too.
    const signal = msg.signal;
    const giveUp = () => {
      const reason = signal.reason instanceof Error
        ? signal.reason
        : new Error(String(signal.reason));
      final.giveUp(reason);
      final.abort(reason);
      this.#server.withdraw(final);
    };
    let settled = false;
    let hook: Promise<void>;
    try {
      hook = Promise.resolve(this.#server.deliver(final));
    } catch (err) {
      final.drain();
      throw err;
    }
    if (signal.aborted) giveUp();
    else signal.addEventListener("abort", giveUp, { once: true });
    hook = hook.finally(() => {
      settled = true;
      final.drain();
    });
    // A rejection is awaited below; not unhandled meanwhile.
    hook.catch(() => {});
    try {
      await this.#feed(
        final,
        signal,
        () => settled,
        headerBytes,
        newBody,
        hold,
      );
      await hook;
    } finally {
      signal.removeEventListener("abort", giveUp);
    }
    const refused = final.answer();
    this.#delivered.set(msg, {
      from: final.from,
      to: final.to.filter((_, k) => !refused?.[k]),
    });
    if (lmtp) {
      // The application's refusals of recipients the client gave.
      const errors = refused ?? [];
      errors.forEach((e, k) => {
        if (e === null) return;
        const want = final.to[k].toLowerCase();
        const j = msg.to.findIndex((t) => t.toLowerCase() === want);
        // (Unless the sender was answered already: hookTimeout.)
        if (j >= 0 && !msg.givenUp) msg.rejectRecipient(j, e);
      });
    }
  }

  /**
   * Pushes the message's bytes into `final` with backpressure, until the
   * application is done with it (`settled`) or the sender's copy is given up.
   */
  async #feed(
    final: IncomingMessage,
    signal: AbortSignal,
    settled: () => boolean,
    headerBytes: Uint8Array,
    newBody: Uint8Array[] | null,
    hold: Hold,
  ): Promise<void> {
    const stop = () => settled() || signal.aborted;
    try {
      const feed = async (chunk: Uint8Array) => {
        if (stop() || chunk.length === 0) return;
        const wait = final.push(chunk);
        if (wait !== undefined) await wait;
      };
      await feed(headerBytes);
      if (newBody !== null) {
        for (const c of newBody) await feed(c);
      } else {
        for await (const c of hold.read()) {
          if (stop()) break;
          await feed(c);
        }
      }
      final.end();
    } catch (err) {
      final.abort(err instanceof Error ? err : new Error(String(err)));
      throw err;
    }
  }

  /**
   * The sender and recipients `msg` was delivered with, as the filters
   * changed them (and less those the application refused, in LMTP); for
   * the `message` log entry. `undefined` when it was not delivered.
   *
   * @example
   * ```ts
   * import type { MilterSession } from "./session.ts";
   * import type { IncomingMessage } from "../message.ts";
   * declare const filters: MilterSession;
   * declare const msg: IncomingMessage;
   * await filters.message(msg);
   * console.log(filters.delivered(msg)?.to);
   * ```
   */
  delivered(
    msg: IncomingMessage,
  ): { from: string; to: readonly string[] } | undefined {
    return this.#delivered.get(msg);
  }

  /**
   * Ends the session's filter connections (`SMFIC_QUIT`).
   *
   * @example
   * ```ts
   * import type { MilterSession } from "./session.ts";
   * declare const filters: MilterSession;
   * await filters.close();
   * ```
   */
  async close(): Promise<void> {
    await Promise.all(this.#filters.map((f) => f.client.close()));
  }
}
