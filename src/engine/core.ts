/**
 * The engine's core: the one owner of a session's state (mode, framing
 * buffer, deadlines' times, HELO name, ESMTP, user, TLS, the transaction,
 * the pending decision and the event queue) and the few operations every
 * part of the engine shares on it (write a reply, count an error, close,
 * end the transaction). The command handlers (commands.ts), the SASL
 * exchange (sasl_exchange.ts), the decisions (decisions.ts) and the body
 * readers take it; `SmtpEngine` is its public face.
 *
 * @module
 */

import { formatReply, SmtpError } from "../errors.ts";
import type { SaslExchange } from "../sasl.ts";
import type { ResolvedEngineOptions } from "../options.ts";
import { Body } from "./body.ts";
import type { SkippedChunk } from "./body_bdat.ts";
import type { DataReader } from "./body_data.ts";
import { authOffered } from "./capabilities.ts";
import { perRecipient } from "./lmtp.ts";
import type { TextScanner } from "./scanner.ts";
import type { Transaction } from "./transaction.ts";
import type { CloseReason, Decision, SessionView, SmtpEvent } from "./types.ts";

/**
 * What the engine reads next.
 *
 * @example
 * ```ts
 * import type { Mode } from "./core.ts";
 *
 * const mode: Mode = "command";
 * ```
 */
export type Mode =
  | "connect" // before the greeting
  | "command" // reading command lines
  | "discard-line" // inside a command line that is too long
  | "data" // inside a DATA body
  | "bdat" // inside a BDAT chunk (delivered or discarded)
  | "sasl" // AUTH exchange: reading a client response line
  | "sasl-failed" // XOAUTH2 failed: reading the client's empty response
  | "tls" // STARTTLS accepted: waiting for tlsStarted()
  | "closed";

/**
 * An event that waits for `accept()` or `reject()`.
 *
 * @example
 * ```ts
 * import type { DecisionEvent } from "./core.ts";
 *
 * const ev: DecisionEvent = { type: "starttls" };
 * ```
 */
export type DecisionEvent = Extract<SmtpEvent, { type: Decision }>;

/**
 * The empty buffer (nothing received, or all consumed).
 *
 * @example
 * ```ts
 * import { EMPTY } from "./core.ts";
 *
 * EMPTY.length; // 0
 * ```
 */
export const EMPTY: Uint8Array = new Uint8Array(0);

/** The reason given to the application when a transaction drops a BDAT body. */
const dropped = (): SmtpError =>
  new SmtpError(451, "4.3.0", "Message dropped before its last BDAT chunk");

/**
 * A session's AUTH state: the exchange in progress and the failures so far
 * (see {@link EngineCore.auth}).
 *
 * @example
 * ```ts
 * import { AuthState } from "./core.ts";
 *
 * const auth = new AuthState();
 * auth.failures; // 0
 * ```
 */
export class AuthState {
  /** The AUTH exchange in progress, or null. */
  exchange: SaslExchange | null = null;
  /** XOAUTH2: the refusal sent after the client's empty line. */
  error: SmtpError | null = null;
  /** Failed AUTH attempts. */
  failures = 0;
  /** The authenticated user, or null (see {@link EngineCore.user}). */
  user: string | null = null;
}

/**
 * What only some sessions need: a refused BDAT chunk, LMTP replies owed
 * after it, a command line too long (see the accessors of
 * {@link EngineCore}). Made with the first of them: fields of the core
 * itself cost every idle session 8 bytes each on V8.
 *
 * @example
 * ```ts
 * import { EngineExtras } from "./core.ts";
 *
 * new EngineExtras().owedReplies; // 0
 * ```
 */
export class EngineExtras {
  /** The refused BDAT chunk being dropped, or null. */
  skipped: SkippedChunk | null = null;
  /** See {@link EngineCore.owedReplies}. */
  owedReplies = 0;
  /** Command line being discarded (too long): was its last byte CR? */
  discardCR = false;
}

/**
 * The state of one session, owned here and nowhere else.
 *
 * @example
 * ```ts
 * import { resolveEngineOptions } from "../options.ts";
 * import { EngineCore } from "./core.ts";
 *
 * const core = new EngineCore(resolveEngineOptions({}), 0);
 * core.fail(500, "5.5.1", "Command unrecognized");
 * core.out; // "500 5.5.1 Command unrecognized\r\n"
 * ```
 */
export class EngineCore {
  /** The validated options. */
  readonly options: ResolvedEngineOptions;

  /** What is read next. */
  mode: Mode = "connect";
  /** The event that waits for accept() or reject(), or null. */
  pending: DecisionEvent | null = null;
  /**
   * Events to hand out before reading further, or null before the first
   * (see {@link EngineCore.events}): an idle session keeps no array.
   */
  queue: SmtpEvent[] | null = null;
  /** Why the session closed, once it did. */
  closeReason: CloseReason | null = null;

  /** The bytes received and not yet consumed, from {@link EngineCore.pos}. */
  buf: Uint8Array = EMPTY;
  /** Where reading goes on in {@link EngineCore.buf}. */
  pos = 0;
  /** When bytes last came (idleTimeout). */
  lastActivity: number;
  /** When the body started (dataTimeout). */
  dataStarted = 0;
  /** When the session started (sessionTimeout). */
  sessionStarted: number;
  /** When the first byte of the command line in progress came. */
  lineStarted = 0;

  /** Replies not yet taken. */
  out = "";
  /**
   * The bytes of `out` when it is one fixed reply queued alone (see
   * {@link EngineCore.okFixed}), else null. A field of its own: `out`
   * holding either text or bytes cost V8 about 0.8 µs per message.
   */
  outFixed: Uint8Array | null = null;
  /** Protocol errors in a row. */
  badCommands = 0;

  /** The name the client gave with HELO/EHLO, or null. */
  heloName: string | null = null;
  /** The client greeted with EHLO (or LHLO). */
  esmtp = false;
  /** The authenticated user, or null (kept in {@link EngineCore.auth}). */
  get user(): string | null {
    const a = this.auth;
    return a === null ? null : a.user;
  }
  set user(user: string | null) {
    if (user !== null || this.auth !== null) this.authState().user = user;
  }
  /** The connection is encrypted (implicit TLS or after STARTTLS). */
  secure: boolean;
  /**
   * The AUTH state (made with the first AUTH command): a session that
   * never authenticates keeps no fields for it (two fields fewer took
   * this object down a size of heap cell on JavaScriptCore).
   */
  auth: AuthState | null = null;

  /** The transaction in progress (after an accepted MAIL), or null. */
  tx: Transaction | null = null;
  /**
   * The reader of DATA bodies (made with the first, kept for the next: in
   * mode "data" it reads the body in transfer), or null.
   */
  dataReader: DataReader | null = null;
  /** The refused BDAT chunk being dropped, or null. */
  get skipped(): SkippedChunk | null {
    const x = this.extras;
    return x === null ? null : x.skipped;
  }
  set skipped(chunk: SkippedChunk | null) {
    if (chunk !== null || this.extras !== null) {
      this.extrasState().skipped = chunk;
    }
  }
  /** Finds line ends in bodies (made with the first body). */
  text: TextScanner | null = null;
  /**
   * LMTP: the accepted recipients of a transaction that a refused chunk
   * ended. A LAST chunk the client pipelined behind it still gets one
   * reply for each (RFC 2033 §4.3); any command but BDAT forgets them.
   */
  get owedReplies(): number {
    const x = this.extras;
    return x === null ? 0 : x.owedReplies;
  }
  set owedReplies(n: number) {
    if (n !== 0 || this.extras !== null) this.extrasState().owedReplies = n;
  }
  /** Command line being discarded (too long): was its last byte CR? */
  get discardCR(): boolean {
    const x = this.extras;
    return x !== null && x.discardCR;
  }
  set discardCR(cr: boolean) {
    if (cr || this.extras !== null) this.extrasState().discardCR = cr;
  }
  /** What only some sessions need (see EngineExtras), or null. */
  extras: EngineExtras | null = null;
  /** What only some sessions need, made when first needed. */
  extrasState(): EngineExtras {
    return this.extras ??= new EngineExtras();
  }
  /** Told the HELO name, ESMTP, `secure` and the user as they change, or null. */
  readonly view: SessionView | null;

  /**
   * @param options the validated options
   * @param now the current time in milliseconds
   * @param view see {@link EngineCore.showState}
   */
  constructor(
    options: ResolvedEngineOptions,
    now: number,
    view: SessionView | null = null,
  ) {
    this.options = options;
    this.secure = options.secure;
    this.lastActivity = now;
    this.sessionStarted = now;
    this.view = view;
    this.showState();
  }

  /** The event queue, made when first needed (see {@link EngineCore.queue}). */
  events(): SmtpEvent[] {
    return this.queue ??= [];
  }

  /**
   * Copies the HELO name, ESMTP, `secure` and the user to the view (the
   * driver's session): called wherever one of them changes, so that the
   * view always shows what this core owns.
   */
  showState(): void {
    const v = this.view;
    if (v === null) return;
    v.heloName = this.heloName;
    v.esmtp = this.esmtp;
    v.secure = this.secure;
    v.user = this.user;
  }

  /**
   * Takes the pending decision to answer it (`what`: "accept", "reject"),
   * or null when the session closed meanwhile; throws when none is pending.
   */
  takeDecision(what: string): DecisionEvent | null {
    const d = this.pending;
    if (this.mode === "closed") return null; // closed meanwhile: nothing to answer
    if (d === null) throw new Error(`Cannot ${what}: no decision is pending`);
    this.pending = null;
    return d;
  }

  /** `ev` becomes the pending decision. */
  decide(ev: DecisionEvent): SmtpEvent {
    this.pending = ev;
    return ev;
  }

  /** Queues a reply (formatted). */
  write(reply: string): void {
    this.out += reply;
    this.outFixed = null;
  }

  /** A positive reply (formatted): the error count starts over. */
  ok(reply: string): void {
    this.badCommands = 0;
    this.out += reply;
    this.outFixed = null;
  }

  /**
   * A positive fixed reply (made by fixedReply()) with its `bytes`
   * (fixedBytes()): queued as those bytes when nothing else is, which
   * takeOutput() then hands out without looking the text up.
   */
  okFixed(reply: string, bytes: Uint8Array): void {
    this.badCommands = 0;
    this.writeFixed(reply, bytes);
  }

  /**
   * Queues a reply formatted once (made by fixedReply(), or the greeting
   * and the 221 of fixed_replies.ts) with its `bytes`: see okFixed().
   */
  writeFixed(reply: string, bytes: Uint8Array): void {
    if (this.out === "") {
      this.out = reply;
      this.outFixed = bytes;
    } else {
      this.out += reply;
      this.outFixed = null;
    }
  }

  /** A protocol error reply; too many in a row close the session. */
  fail(code: number, enhanced: string, text: string): null {
    this.write(formatReply(code, enhanced, text));
    if (++this.badCommands >= this.options.maxBadCommands) {
      this.write(
        formatReply(
          421,
          "4.7.0",
          `${this.options.serverName} Too many errors, closing connection`,
        ),
      );
      this.close("too-many-errors");
    }
    return null;
  }

  /** {@link EngineCore.fail} with the codes and text of `error`. */
  failWith(error: SmtpError): null {
    return this.fail(error.code, error.enhancedCode, error.message);
  }

  /** The AUTH state, made when first needed. */
  authState(): AuthState {
    return this.auth ??= new AuthState();
  }

  /** A failed AUTH: the reply, and 421 after too many failures. */
  authFailed(error: SmtpError): void {
    this.write(formatReply(error.code, error.enhancedCode, error.message));
    if (++this.authState().failures >= this.options.maxAuthFailures) {
      this.write(
        formatReply(
          421,
          "4.7.0",
          `${this.options.serverName} Too many failed authentications, closing connection`,
        ),
      );
      this.close("too-many-errors");
    }
  }

  /** The AUTH exchange is over: back to commands (unless closed). */
  endSasl(): void {
    const a = this.auth;
    if (a !== null) {
      a.exchange = null;
      a.error = null;
    }
    if (this.mode !== "closed") this.mode = "command";
  }

  /**
   * A reply to the end of the message: in LMTP once per accepted recipient
   * of the transaction.
   */
  perRecipient(reply: string): string {
    return perRecipient(reply, this.options.lmtp, this.tx!.recipients.length);
  }

  /** Asks for the connection to be closed; no more input is read. */
  close(reason: CloseReason): void {
    this.mode = "closed";
    this.closeReason = reason;
    this.pending = null;
    this.buf = EMPTY;
    this.pos = 0;
  }

  /** Drops what was received and not read (RFC 3207 §4.2 around STARTTLS). */
  dropInput(): void {
    this.buf = EMPTY;
    this.pos = 0;
  }

  /** AUTH is advertised and accepted: over TLS, or plaintext when allowed. */
  authOffered(): boolean {
    return authOffered(this.options, this.secure);
  }

  /**
   * Ends the transaction. A BDAT body still open (RSET, QUIT, HELO/EHLO or
   * STARTTLS between chunks) is aborted first: nothing is delivered.
   */
  resetTransaction(announce: boolean): void {
    const had = this.tx !== null;
    this.openBody()?.abort(dropped());
    this.tx = null;
    if (announce && had) this.events().push({ type: "reset" });
  }

  /** The body of this transaction, as the options have it. */
  newBody(command: "DATA" | "BDAT"): Body {
    const o = this.options;
    return new Body(
      command,
      this.events(),
      o.maxMessageSize,
      o.bareLineEnding === "normalize",
    );
  }

  /** The body in transfer (message-start sent, no end or abort yet), or null. */
  openBody(): Body | null {
    const body = this.tx?.body ?? null;
    return body !== null && body.open ? body : null;
  }
}

/**
 * For the exhaustive switches: a value of type `never`.
 *
 * @example
 * ```ts
 * import { assertNever } from "./core.ts";
 *
 * type T = "a";
 * const t = "a" as T;
 * if (t !== "a") assertNever(t);
 * ```
 */
export function assertNever(x: never): never {
  throw new Error(`Unexpected value: ${String(x)}`);
}
