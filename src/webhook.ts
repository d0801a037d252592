/**
 * An inbound-mail webhook: each message as one JSON document (envelope,
 * parsed headers, subject, text, HTML, attachment metadata, the raw message
 * in base64), posted to an HTTP endpoint. The sender gets its `250` only
 * after the endpoint answered 2xx; anything else (another status, a network
 * error, a timeout) becomes `451 4.3.0`, and the sender retries later.
 *
 * Redirects are not followed (a `POST` that a 301, 302 or 303 turns into a
 * `GET` would drop the message): a 3xx is a failure like any other non-2xx.
 * The endpoint can check who is calling by Basic auth (the URL's
 * `user:password@`), extra headers, and an HMAC-SHA256 signature of the
 * body with a shared secret (`X-Smtpd-Timestamp`, `X-Smtpd-Signature`; see
 * {@link webhookSignature}). No error text names the URL's credentials or
 * query, a header's value or the secret: the URL appears as origin and
 * path only.
 *
 * Uses only `fetch` and WebCrypto, so it runs on Deno, Bun and Node alike.
 * The `smtpd` command line does the same with `--webhook URL`.
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd";
 * import { postWebhook, webhookPayload } from "@smtpd/smtpd/webhook";
 *
 * await serve({
 *   port: 2525,
 *   async onMessage(message) {
 *     const raw = await message.bytes();
 *     await postWebhook("https://example.org/inbound", await webhookPayload(message, raw));
 *   },
 * });
 * ```
 *
 * @module
 */

import { type Address, PostalMime } from "./email.ts";
import { SmtpError } from "./errors.ts";

/**
 * What {@link webhookPayload} reads of a message: its id, the envelope and
 * a few facts of its session. A received `Message` has all of them.
 *
 * @example
 * ```ts
 * import { webhookPayload, type WebhookSource } from "@smtpd/smtpd/webhook";
 *
 * const source: WebhookSource = {
 *   id: "m1",
 *   from: "alice@example.com",
 *   to: ["bob@example.org"],
 *   session: { remoteAddress: "192.0.2.1", remotePort: 40000, heloName: "mx.example.com", secure: false, user: null },
 * };
 * const payload = await webhookPayload(source, new TextEncoder().encode("Subject: hi\r\n\r\nhello\r\n"));
 * ```
 */
export interface WebhookSource {
  /** The message id. */
  readonly id: string;
  /** MAIL FROM (`""` for `<>`). */
  readonly from: string;
  /** The accepted recipients. */
  readonly to: readonly string[];
  /** The connection's facts that go into {@link WebhookEnvelope}. */
  readonly session: {
    readonly remoteAddress: string;
    readonly remotePort: number;
    readonly heloName: string | null;
    readonly secure: boolean;
    readonly user: string | null;
  };
}

/**
 * The SMTP envelope and connection of a message, as the webhook sends it.
 *
 * @example
 * ```ts
 * import type { WebhookEnvelope } from "@smtpd/smtpd/webhook";
 *
 * const envelope: WebhookEnvelope = {
 *   from: "alice@example.com",
 *   to: ["bob@example.org"],
 *   remoteAddress: "192.0.2.1",
 *   remotePort: 40000,
 *   heloName: "mx.example.com",
 *   secure: true,
 *   user: null,
 * };
 * ```
 */
export interface WebhookEnvelope {
  /** MAIL FROM; `""` for the null reverse-path `<>`. */
  from: string;
  /** The accepted RCPT TO addresses, in order. */
  to: string[];
  /** The client's IP address. */
  remoteAddress: string;
  /** The client's port. */
  remotePort: number;
  /** The name the client gave with EHLO/HELO. */
  heloName: string | null;
  /** Whether the message came over TLS. */
  secure: boolean;
  /** The authenticated user, or `null`. */
  user: string | null;
}

/**
 * One header field of the message, in message order.
 *
 * @example
 * ```ts
 * import type { WebhookHeader } from "@smtpd/smtpd/webhook";
 *
 * const header: WebhookHeader = { name: "subject", value: "Hello" };
 * ```
 */
export interface WebhookHeader {
  /** The field name, lower case. */
  name: string;
  /** The value, unfolded, MIME encoded words left as they are. */
  value: string;
}

/**
 * A mailbox of a header (groups are flattened into their members).
 *
 * @example
 * ```ts
 * import type { WebhookAddress } from "@smtpd/smtpd/webhook";
 *
 * const alice: WebhookAddress = { name: "Alice", address: "alice@example.com" };
 * ```
 */
export interface WebhookAddress {
  /** The decoded display name, `""` when none. */
  name: string;
  /** The address. */
  address: string;
}

/**
 * What the webhook says about an attachment (the content itself is in
 * `raw`).
 *
 * @example
 * ```ts
 * import type { WebhookAttachment } from "@smtpd/smtpd/webhook";
 *
 * const a: WebhookAttachment = {
 *   filename: "report.pdf",
 *   contentType: "application/pdf",
 *   size: 48213,
 *   disposition: "attachment",
 *   contentId: null,
 * };
 * ```
 */
export interface WebhookAttachment {
  /** The decoded file name, or `null`. */
  filename: string | null;
  /** The MIME type, lower case. */
  contentType: string;
  /** Decoded size in bytes. */
  size: number;
  /** `"attachment"`, `"inline"` or another disposition, or `null`. */
  disposition: string | null;
  /** The Content-ID (with angle brackets), or `null`. */
  contentId: string | null;
}

/**
 * The JSON document posted for each message.
 *
 * @example
 * ```ts
 * import type { WebhookPayload } from "@smtpd/smtpd/webhook";
 *
 * // The endpoint's side:
 * function handle(payload: WebhookPayload): void {
 *   const raw = Uint8Array.from(atob(payload.raw), (c) => c.charCodeAt(0));
 *   console.log(payload.envelope.from, payload.subject, raw.length);
 * }
 * ```
 */
export interface WebhookPayload {
  /** The message id smtpd gave it (also in its logs). */
  id: string;
  /** When the payload was made (ISO 8601, UTC). */
  receivedAt: string;
  /** MAIL FROM, RCPT TO and the client connection. */
  envelope: WebhookEnvelope;
  /** Every header field, in order, duplicates included. */
  headers: WebhookHeader[];
  /** The Message-ID header, or `null`. */
  messageId: string | null;
  /** The Date header (ISO 8601 when it parses), or `null`. */
  date: string | null;
  /** The From header's mailbox, or `null`. */
  from: WebhookAddress | null;
  /** The To header's mailboxes. */
  to: WebhookAddress[];
  /** The Cc header's mailboxes. */
  cc: WebhookAddress[];
  /** The Reply-To header's mailboxes. */
  replyTo: WebhookAddress[];
  /** The decoded Subject, or `null`. */
  subject: string | null;
  /** The plain-text body, or `null`. */
  text: string | null;
  /** The HTML body, or `null`. */
  html: string | null;
  /** The attachments' metadata. */
  attachments: WebhookAttachment[];
  /** Size of the raw message in bytes. */
  size: number;
  /** The raw message (headers and body, CRLF line ends), base64. */
  raw: string;
  /** Where the message is stored too, when it is (the CLI's Maildir file). */
  file?: string;
}

/**
 * Options of {@link postWebhook}.
 *
 * @example
 * ```ts
 * import type { PostWebhookOptions } from "@smtpd/smtpd/webhook";
 *
 * const options: PostWebhookOptions = {
 *   timeout: 10000,
 *   headers: { authorization: "Bearer 1234" },
 *   secret: "a long random string the endpoint knows too",
 * };
 * ```
 */
export interface PostWebhookOptions {
  /** Milliseconds to wait for the endpoint's status (default 30000). */
  timeout?: number;
  /**
   * More request headers, such as `authorization` (not `content-type`,
   * `content-length`, `host` or the signature's headers, which smtpd
   * sets; not `authorization` when the URL has a user name).
   */
  headers?: Record<string, string>;
  /**
   * Signs each request: `X-Smtpd-Timestamp` (Unix time in seconds) and
   * `X-Smtpd-Signature: v1=<hex HMAC-SHA256 of timestamp + "." + body>`,
   * as {@link webhookSignature} computes it.
   */
  secret?: string | Uint8Array;
  /** Aborts the request (for example `message.signal` of a hook). */
  signal?: AbortSignal;
  /** The `fetch` to use (default: the global one). */
  fetch?: typeof fetch;
}

/**
 * What the endpoint answered: a 2xx status.
 *
 * @example
 * ```ts
 * import { postWebhook, type WebhookResponse } from "@smtpd/smtpd/webhook";
 *
 * declare const payload: Parameters<typeof postWebhook>[1];
 * const response: WebhookResponse = await postWebhook("http://127.0.0.1:8080/", payload);
 * console.log(response.status); // 200, 201, 202 or 204 ...
 * ```
 */
export interface WebhookResponse {
  /** The HTTP status, 200 to 299. */
  status: number;
}

/**
 * Makes the webhook's JSON document of a message from its raw bytes (the
 * bytes are parsed with postal-mime).
 *
 * @param message the message (or anything with its id, envelope and session)
 * @param raw the whole message, as `await message.bytes()` gives it
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd";
 * import { webhookPayload } from "@smtpd/smtpd/webhook";
 *
 * await serve({
 *   port: 0,
 *   async onMessage(message) {
 *     const payload = await webhookPayload(message, await message.bytes());
 *     console.log(JSON.stringify(payload.envelope), payload.subject, payload.attachments.length);
 *   },
 * });
 * ```
 */
export async function webhookPayload(
  message: WebhookSource,
  raw: Uint8Array,
): Promise<WebhookPayload> {
  if (!(raw instanceof Uint8Array)) {
    throw new TypeError("Cannot make webhook payload: raw is not a Uint8Array");
  }
  const email = await PostalMime.parse(raw);
  const s = message.session;
  return {
    id: message.id,
    receivedAt: new Date().toISOString(),
    envelope: {
      from: message.from,
      to: [...message.to],
      remoteAddress: s.remoteAddress,
      remotePort: s.remotePort,
      heloName: s.heloName,
      secure: s.secure,
      user: s.user,
    },
    headers: email.headers.map((h) => ({ name: h.key, value: h.value })),
    messageId: email.messageId ?? null,
    date: email.date ?? null,
    from: email.from === undefined ? null : mailboxes([email.from])[0] ?? null,
    to: mailboxes(email.to),
    cc: mailboxes(email.cc),
    replyTo: mailboxes(email.replyTo),
    subject: email.subject ?? null,
    text: email.text ?? null,
    html: email.html ?? null,
    attachments: email.attachments.map((a) => ({
      filename: a.filename,
      contentType: a.mimeType,
      size: typeof a.content === "string"
        ? new TextEncoder().encode(a.content).byteLength
        : a.content.byteLength,
      disposition: a.disposition,
      contentId: a.contentId ?? null,
    })),
    size: raw.byteLength,
    raw: base64(raw),
  };
}

/**
 * Posts a payload as JSON (`POST`, `content-type: application/json`) and
 * resolves once the endpoint answered 2xx. Any other outcome throws an
 * {@link SmtpError} `451 4.3.0` (the reason is its `cause`), so that a hook
 * that awaits it answers the sender with a temporary failure and the sender
 * retries: a non-2xx status, a redirect (never followed: a 301, 302 or 303
 * would turn the `POST` into a `GET` without the message), a network error,
 * no status within `timeout`.
 *
 * A user name and password in the URL (`https://user:pass@host/path`) are
 * taken out of it and sent as `Authorization: Basic`. With `secret`, the
 * request is signed (see {@link webhookSignature}). The reason's text
 * never contains the password, the query, a header's value or the secret.
 *
 * @param url the endpoint, `http:` or `https:`
 * @param payload the document, usually from {@link webhookPayload}
 * @param options timeout, extra headers, a signing secret, an abort signal,
 *   a custom fetch
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd";
 * import { postWebhook, webhookPayload } from "@smtpd/smtpd/webhook";
 *
 * await serve({
 *   port: 2525,
 *   async onMessage(message) {
 *     const payload = await webhookPayload(message, await message.bytes());
 *     await postWebhook("http://127.0.0.1:8080/inbound", payload, {
 *       timeout: 10000,
 *       secret: "a long random string the endpoint knows too",
 *       signal: message.signal,
 *     });
 *   },
 * });
 * ```
 */
export async function postWebhook(
  url: string | URL,
  payload: WebhookPayload,
  options: PostWebhookOptions = {},
): Promise<WebhookResponse> {
  const target = webhookUrl(url);
  const timeout = options.timeout ?? 30000;
  if (!Number.isInteger(timeout) || timeout < 1) {
    throw new TypeError(
      `Cannot use option timeout: value is not a positive whole number of milliseconds`,
    );
  }
  const doFetch = options.fetch ?? globalThis.fetch;
  if (typeof doFetch !== "function") {
    throw new TypeError("Cannot use option fetch: value is not a function");
  }
  const secret = options.secret;
  if (
    secret !== undefined &&
      !(typeof secret === "string" || secret instanceof Uint8Array) ||
    secret?.length === 0
  ) {
    throw new TypeError(
      "Cannot use option secret: value is not a non-empty string or Uint8Array",
    );
  }
  // Everything that must not show in an error text.
  const secrets: string[] = [];
  const headers = new Headers();
  checkWebhookHeaders(options.headers ?? {}, target);
  for (const [name, value] of Object.entries(options.headers ?? {})) {
    headers.set(name, value);
    secrets.push(value.trim());
  }
  const endpoint = new URL(target.href);
  for (const value of target.searchParams.values()) secrets.push(value);
  if (target.search.length > 1) secrets.push(target.search.slice(1));
  if (target.username !== "" || target.password !== "") {
    const user = decodeURIComponent(target.username);
    const password = decodeURIComponent(target.password);
    secrets.push(target.username, target.password, user, password);
    headers.set(
      "authorization",
      `Basic ${base64(new TextEncoder().encode(`${user}:${password}`))}`,
    );
    endpoint.username = "";
    endpoint.password = "";
  }
  headers.set("content-type", "application/json");
  const body = new TextEncoder().encode(JSON.stringify(payload));
  if (secret !== undefined) {
    if (typeof secret === "string") secrets.push(secret);
    const timestamp = Math.floor(Date.now() / 1000);
    headers.set("x-smtpd-timestamp", String(timestamp));
    headers.set(
      "x-smtpd-signature",
      await webhookSignature(secret, timestamp, body),
    );
  }
  /** An error's text with the URL as origin and path, and no secret. */
  const scrub = (text: string): string => {
    let out = text.split(target.href).join(safeUrl(target))
      .split(endpoint.href).join(safeUrl(target));
    // (Shorter ones would blot out ordinary words; they are in no text
    // but the URL's, replaced above.)
    for (const s of secrets) {
      if (s.length >= 4) out = out.split(s).join("[redacted]");
    }
    return out;
  };
  const signals = [AbortSignal.timeout(timeout)];
  if (options.signal !== undefined) signals.push(options.signal);
  const signal = signals.length === 1 ? signals[0] : AbortSignal.any(signals);
  let response: Response;
  try {
    response = await doFetch(endpoint, {
      method: "POST",
      headers,
      body,
      signal,
      // A 301, 302 or 303 would be followed as a GET without the body, and
      // its landing page's 200 taken for the endpoint's: never follow.
      redirect: "manual",
    });
  } catch (error) {
    const timedOut = (error as { name?: unknown } | null)?.name ===
        "TimeoutError" || signals[0].aborted;
    throw failure(
      new Error(
        timedOut
          ? `Cannot post webhook: no answer within ${timeout} ms`
          : scrub(`Cannot post webhook: ${reason(error)}`),
      ),
    );
  }
  // The body is not used: release the connection.
  await response.body?.cancel().catch(() => {});
  if (response.redirected || response.type === "opaqueredirect") {
    throw failure(
      new Error(
        "Cannot post webhook: endpoint redirected (redirects are not followed: give the final URL)",
      ),
    );
  }
  if (response.status >= 300 && response.status <= 399) {
    const location = response.headers.get("location");
    let to = "";
    try {
      if (location !== null) to = ` to ${safeUrl(new URL(location, endpoint))}`;
    } catch { /* not a URL: say nothing of it */ }
    throw failure(
      new Error(
        scrub(
          `Cannot post webhook: endpoint answered ${response.status}, a redirect${to} (redirects are not followed: give the final URL)`,
        ),
      ),
    );
  }
  if (response.status < 200 || response.status > 299) {
    throw failure(
      new Error(`Cannot post webhook: endpoint answered ${response.status}`),
    );
  }
  return { status: response.status };
}

/**
 * The signature of a webhook request: `v1=` and the hex digits of
 * HMAC-SHA256 with key `secret` over the timestamp, a dot and the body's
 * bytes (`X-Smtpd-Signature`; the timestamp is `X-Smtpd-Timestamp`, Unix
 * time in seconds). {@link postWebhook} signs with it when given a
 * `secret`; an endpoint written in JavaScript can check with it (compare in
 * constant time, and refuse timestamps more than a few minutes old).
 *
 * @param secret the shared secret (a string is taken as UTF-8)
 * @param timestamp the `X-Smtpd-Timestamp` value
 * @param body the request body, exactly as received
 * @returns `"v1="` followed by 64 hex digits
 *
 * @example
 * ```ts
 * import { webhookSignature } from "@smtpd/smtpd/webhook";
 *
 * // The endpoint's side, with the raw body as received:
 * async function verified(headers: Headers, body: Uint8Array, secret: string): Promise<boolean> {
 *   const timestamp = headers.get("x-smtpd-timestamp") ?? "";
 *   if (Math.abs(Date.now() / 1000 - Number(timestamp)) > 300) return false;
 *   const expected = await webhookSignature(secret, timestamp, body);
 *   return expected === headers.get("x-smtpd-signature"); // use a constant-time compare
 * }
 * ```
 */
export async function webhookSignature(
  secret: string | Uint8Array,
  timestamp: number | string,
  body: string | Uint8Array,
): Promise<string> {
  const encoder = new TextEncoder();
  const key = await crypto.subtle.importKey(
    "raw",
    typeof secret === "string"
      ? encoder.encode(secret)
      : new Uint8Array(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const prefix = encoder.encode(`${timestamp}.`);
  const bytes = typeof body === "string" ? encoder.encode(body) : body;
  const data = new Uint8Array(prefix.byteLength + bytes.byteLength);
  data.set(prefix);
  data.set(bytes, prefix.byteLength);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, data));
  return `v1=${
    Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join("")
  }`;
}

/**
 * Checks a webhook URL: an absolute `http:` or `https:` URL, else a
 * `TypeError` (whose text does not repeat the URL: it may hold a password).
 *
 * @param url the endpoint
 * @returns the parsed URL
 *
 * @example
 * ```ts
 * import { webhookUrl } from "@smtpd/smtpd/webhook";
 *
 * webhookUrl("https://example.org/inbound").host; // "example.org"
 * webhookUrl("ftp://example.org/"); // throws TypeError
 * ```
 */
export function webhookUrl(url: string | URL): URL {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new TypeError("Cannot parse webhook URL: value is not a URL");
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new TypeError(
      `Cannot use webhook URL: protocol is "${parsed.protocol}", not http: or https:`,
    );
  }
  return parsed;
}

/**
 * Checks the extra headers of a webhook's post, as {@link postWebhook}
 * does before it sends anything: each name an HTTP token, each value one
 * line of Latin-1 text (what HTTP carries), none of the headers smtpd sets
 * itself (`content-type`, `content-length`, `host`, `x-smtpd-timestamp`,
 * `x-smtpd-signature`), and no `authorization` when `url` has a user name
 * (sent as Basic auth). Throws a `TypeError` naming the header, never its
 * value.
 *
 * @param headers the extra headers, name → value
 * @param url the endpoint (for its user name), if known
 *
 * @example
 * ```ts
 * import { checkWebhookHeaders } from "@smtpd/smtpd/webhook";
 *
 * checkWebhookHeaders({ "X-Team": "mail" }); // fine
 * checkWebhookHeaders({ "Content-Type": "text/plain" }); // throws TypeError
 * checkWebhookHeaders(
 *   { Authorization: "Bearer x" },
 *   new URL("https://u:p@example.org/in"),
 * ); // throws TypeError
 * ```
 */
export function checkWebhookHeaders(
  headers: Readonly<Record<string, string>>,
  url?: URL,
): void {
  for (const [name, value] of Object.entries(headers)) {
    if (!HEADER_NAME.test(name)) {
      throw new TypeError(
        `Cannot use option headers: "${name}" is not a header name`,
      );
    }
    // What HTTP can carry (and fetch takes): one line of Latin-1.
    if (typeof value !== "string" || /[^\t\x20-\x7e\x80-\xff]/.test(value)) {
      throw new TypeError(
        `Cannot use option headers: the value of ${name} is not one line of text`,
      );
    }
    const key = name.toLowerCase();
    if (OWN_HEADERS.has(key)) {
      throw new TypeError(
        `Cannot use option headers: ${name} is set by smtpd`,
      );
    }
    if (
      key === "authorization" && url !== undefined &&
      (url.username !== "" || url.password !== "")
    ) {
      throw new TypeError(
        `Cannot use option headers: ${name} is set by the URL's user name`,
      );
    }
  }
}

/**
 * A webhook URL as logs may show it: origin and path, without the user
 * name, password, query or fragment.
 *
 * @param url the endpoint
 * @returns `protocol//host/path`
 *
 * @example
 * ```ts
 * import { safeUrl } from "@smtpd/smtpd/webhook";
 *
 * safeUrl(new URL("https://u:p@example.org/in?token=abc")); // "https://example.org/in"
 * ```
 */
export function safeUrl(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}`;
}

/** A header name (RFC 9110 token). */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** Headers {@link postWebhook} sets itself. */
const OWN_HEADERS = new Set([
  "content-type",
  "content-length",
  "host",
  "x-smtpd-timestamp",
  "x-smtpd-signature",
]);

/** What went wrong in a fetch: its message and its cause's, when that says more. */
function reason(error: unknown): string {
  const e = error as { message?: unknown; cause?: unknown } | null;
  const message = String(e?.message ?? error);
  const cause = (e?.cause as { message?: unknown } | null)?.message;
  return typeof cause === "string" && cause !== "" && !message.includes(cause)
    ? `${message}: ${cause}`
    : message;
}

/** The reply for a failed post, with the reason as `cause`. */
function failure(cause: Error): SmtpError {
  const error = new SmtpError(
    451,
    "4.3.0",
    "Local error in processing, try again later",
  );
  error.cause = cause;
  return error;
}

/** Mailboxes of address headers, groups flattened. */
function mailboxes(list: readonly Address[] | undefined): WebhookAddress[] {
  const out: WebhookAddress[] = [];
  for (const a of list ?? []) {
    if (a.group !== undefined) {
      for (const m of a.group) out.push({ name: m.name, address: m.address });
    } else {
      out.push({ name: a.name, address: a.address });
    }
  }
  return out;
}

/** Base64 of bytes, with `btoa` (on every runtime) over pieces of the input. */
function base64(bytes: Uint8Array): string {
  const parts: string[] = [];
  // A multiple of 3, so that the pieces' encodings join without padding.
  const step = 3 * 8192;
  for (let at = 0; at < bytes.byteLength; at += step) {
    const piece = bytes.subarray(at, at + step);
    parts.push(btoa(String.fromCharCode(...piece)));
  }
  return parts.join("");
}
