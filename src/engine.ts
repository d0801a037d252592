/**
 * The sans-IO SMTP protocol engine (RFC 5321 with PIPELINING, 8BITMIME,
 * SIZE, ENHANCEDSTATUSCODES, SMTPUTF8, DSN, STARTTLS, AUTH, CHUNKING and
 * BINARYMIME), and LMTP (RFC 2033) with the `lmtp` option.
 *
 * Bytes go in with {@link SmtpEngine.receive}, events come out of
 * {@link SmtpEngine.nextEvent}, the application's decisions go back with
 * {@link SmtpEngine.accept} / {@link SmtpEngine.reject}, and the bytes to
 * write come out of {@link SmtpEngine.takeOutput}. The engine never touches a
 * socket, a timer or a clock: time comes in as an argument.
 *
 * @module
 */

import { isDomainOrLiteral, type Mailbox } from "./address.ts";
import { formatReply, SmtpError } from "./errors.ts";
import { encodeBase64Text, SaslExchange, type SaslStep } from "./sasl.ts";
import {
  type EngineOptions,
  isSharedEngineOptions,
  type ResolvedEngineOptions,
  resolveEngineOptions,
} from "./options.ts";
import { Body, NEED_DATA, TOO_LARGE } from "./engine/body.ts";
import { BdatReader, SkippedChunk } from "./engine/body_bdat.ts";
import { DataReader } from "./engine/body_data.ts";
import { TextScanner } from "./engine/scanner.ts";
import { acceptedForEach, eachReply, perRecipient } from "./engine/lmtp.ts";
import { Transaction } from "./engine/transaction.ts";
import { authOffered, capabilities, helpLines } from "./engine/capabilities.ts";
import { decodeCommandLine, isAuthLine } from "./engine/command_line.ts";
import {
  parseAuthArg,
  parseChunkSize,
  parseEnvelopeArg,
  parseMailParams,
  parseRcptParams,
  parseSaslResponse,
} from "./engine/params.ts";
import type {
  CloseReason,
  Decision,
  MailParams,
  Recipient,
  SmtpEvent,
} from "./engine/types.ts";

// Byte values as module-local constants, not imported: V8 folds a local
// const into the code, while an import (or an export) is a load from a
// module cell in the hot loops (the DATA reader scanned 1 MB bodies about
// 10% slower with them imported).
const CR = 13;
const LF = 10;

export type {
  BodyType,
  CloseReason,
  Decision,
  MailParams,
  RcptParams,
  Recipient,
  SmtpEvent,
} from "./engine/types.ts";

type Mode =
  | "connect" // before the greeting
  | "command" // reading command lines
  | "discard-line" // inside a command line that is too long
  | "data" // inside a DATA body
  | "bdat" // inside a BDAT chunk (delivered or discarded)
  | "sasl" // AUTH exchange: reading a client response line
  | "sasl-failed" // XOAUTH2 failed: reading the client's empty response
  | "tls" // STARTTLS accepted: waiting for tlsStarted()
  | "closed";

/** An event that waits for `accept()` or `reject()`. */
type DecisionEvent = Extract<SmtpEvent, { type: Decision }>;

const EMPTY = new Uint8Array(0);
const ENCODER = new TextEncoder();
// The fixed replies, formatted once.
const SENDER_OK = formatReply(250, "2.1.0", "Sender OK");
const RECIPIENT_OK = formatReply(250, "2.1.5", "Recipient OK");
const MESSAGE_OK = formatReply(250, "2.0.0", "Message accepted");
const AUTH_OK = formatReply(235, "2.7.0", "Authentication successful");
const TLS_READY = formatReply(220, "2.0.0", "Ready to start TLS");
const DATA_GO_AHEAD = formatReply(
  354,
  "2.0.0",
  "End data with <CR><LF>.<CR><LF>",
);
const OK = formatReply(250, "2.0.0", "OK");
/** The reason given to the application when a transaction drops a BDAT body. */
const dropped = (): SmtpError =>
  new SmtpError(451, "4.3.0", "Message dropped before its last BDAT chunk");
const VRFY_REPLY = formatReply(
  252,
  "2.5.0",
  "Cannot VRFY user, but will accept message and attempt delivery",
);
/**
 * Replies are encoded into views of a shared slab (as Node's Buffer pool
 * does): a fresh Uint8Array per reply costs 0.4 µs on Deno (every typed
 * array is allocated outside the JS heap there) and TextEncoder about as
 * much on Node. A slab is never written twice, so a view handed out stays
 * valid for as long as its holder keeps it.
 */
const SLAB_SIZE = 16 * 1024;
/** Replies longer than this get their own array. */
const SLAB_MAX = 1024;
let slab = new Uint8Array(SLAB_SIZE);
let slabAt = 0;
// deno-lint-ignore no-control-regex
const NON_ASCII = /[^\x00-\x7f]/;
const HELO_NAME = /^[A-Za-z0-9_.-]+$/;
const NOT_IMPLEMENTED = new Set([
  "EXPN",
  "TURN",
  "ETRN",
  "ATRN",
  "SEND",
  "SOML",
  "SAML",
]);
/** RFC 4954 §4: AUTH lines and SASL responses may be this long. */
const AUTH_LINE_MAX = 12288;
/** The XOAUTH2 failure challenge: {"status":"401","schemes":"bearer"}. */
const XOAUTH2_FAILURE = encodeBase64Text('{"status":"401","schemes":"bearer"}');

/**
 * One SMTP session as a pure state machine.
 *
 * @example
 * ```ts
 * import { SmtpEngine } from "@smtpd/smtpd/engine";
 *
 * const engine = new SmtpEngine({ serverName: "mx.example.org" });
 * const enc = new TextEncoder();
 * engine.receive(enc.encode("EHLO client.example\r\n"), Date.now());
 * for (let ev = engine.nextEvent(); ev.type !== "need-data"; ev = engine.nextEvent()) {
 *   if (ev.type === "connect" || ev.type === "helo") engine.accept();
 * }
 * const reply = new TextDecoder().decode(engine.takeOutput()!);
 * // "220 mx.example.org ESMTP smtpd\r\n250-mx.example.org greets client.example\r\n..."
 * ```
 */
export class SmtpEngine {
  /** The validated options. */
  readonly options: ResolvedEngineOptions;

  #mode: Mode = "connect";
  /** The event that waits for accept() or reject(), or null. */
  #pending: DecisionEvent | null = null;
  #queue: SmtpEvent[] = [];
  #closeReason: CloseReason | null = null;

  #buf: Uint8Array = EMPTY;
  #pos = 0;
  #lastActivity: number;
  #dataStarted = 0;
  /** When the session started (sessionTimeout). */
  #sessionStarted: number;
  /** When the first byte of the command line in progress came. */
  #lineStarted = 0;

  #out = "";
  #badCommands = 0;

  // Session state.
  #heloName: string | null = null;
  #user: string | null = null;
  #authFailures = 0;
  #sasl: SaslExchange | null = null;
  #saslError: SmtpError | null = null; // XOAUTH2: sent after the client's empty line
  #esmtp = false;
  #secure: boolean;

  /** The transaction in progress (after an accepted MAIL), or null. */
  #tx: Transaction | null = null;
  /** The reader of the DATA body in transfer, or null. */
  #dataReader: DataReader | null = null;
  /** The refused BDAT chunk being dropped, or null. */
  #skipped: SkippedChunk | null = null;
  /** Finds line ends in bodies (made with the first body). */
  #text: TextScanner | null = null;
  /**
   * LMTP: the accepted recipients of a transaction that a refused chunk
   * ended. A LAST chunk the client pipelined behind it still gets one
   * reply for each (RFC 2033 §4.3); any command but BDAT forgets them.
   */
  #owedReplies = 0;

  // Command line being discarded (too long): was its last byte CR?
  #discardCR = false;

  /**
   * Makes the engine of one connection; throws a `TypeError` on a bad option.
   *
   * @param options engine options (validated; see {@link EngineOptions})
   * @param now the current time in milliseconds, for the idle deadline
   */
  constructor(options: EngineOptions = {}, now = 0) {
    this.options = isSharedEngineOptions(options)
      ? options
      : resolveEngineOptions(options);
    this.#secure = this.options.secure;
    this.#lastActivity = now;
    this.#sessionStarted = now;
  }

  // ---------------------------------------------------------------- input

  /**
   * Hands received bytes to the engine. The engine keeps a view of `chunk`
   * (no copy) until it has been consumed, so do not reuse its memory until
   * `nextEvent()` returns `need-data`.
   */
  receive(chunk: Uint8Array, now: number): void {
    this.#lastActivity = now;
    if (chunk.length === 0) {
      // The driver's "the hook has answered": time in a hook does not
      // count against the command line the client pipelined behind it.
      this.#lineStarted = now;
      return;
    }
    // A new line starts with this chunk when nothing is left of the last
    // one. A body's bytes do not count for commandTimeout: the line after
    // the body started with the last chunk at the earliest.
    if (
      this.#mode === "data" ||
      (this.#pos >= this.#buf.length && this.#mode !== "discard-line")
    ) {
      this.#lineStarted = now;
    }
    if (this.#mode === "closed" || this.#mode === "tls") return; // RFC 3207 §4.2
    if (this.#pos >= this.#buf.length) {
      this.#buf = chunk;
    } else {
      const rest = this.#buf.length - this.#pos;
      const merged = new Uint8Array(rest + chunk.length);
      merged.set(this.#buf.subarray(this.#pos));
      merged.set(chunk, rest);
      this.#buf = merged;
    }
    this.#pos = 0;
  }

  /**
   * The peer closed its side. A body in transfer is aborted (never
   * delivered) and the engine asks for the connection to be closed.
   */
  end(): void {
    if (this.#mode === "closed") return;
    const body = this.#openBody();
    if (body !== null) {
      body.abort(
        new SmtpError(
          451,
          "4.3.0",
          body.command === "BDAT"
            ? "Connection closed during BDAT"
            : "Connection closed during DATA",
        ),
      );
    }
    this.#close("eof");
  }

  /**
   * Checks the deadlines. Past the idle or DATA deadline (and not waiting
   * for a decision), the engine replies 421 4.4.2 and asks to close.
   */
  tick(now: number): void {
    if (this.#pending !== null || this.#mode === "closed") return;
    if (now < this.deadline()) return;
    const what = now >= this.#sessionStarted + this.options.sessionTimeout
      ? "Session too long"
      : now >= this.#commandDeadline()
      ? "Command timeout"
      : "Timeout";
    const error = new SmtpError(
      421,
      "4.4.2",
      `${this.options.serverName} ${what}, closing connection`,
    );
    this.#openBody()?.abort(error);
    this.#write(formatReply(error.code, error.enhancedCode, error.message));
    this.#close("timeout");
  }

  /**
   * The time (same clock as `now`) at which {@link SmtpEngine.tick} will
   * time the session out; `Infinity` when no deadline applies. The DATA
   * deadline (`dataTimeout`) covers a DATA body, and a BDAT transaction
   * from its first chunk to the end of its last.
   */
  deadline(): number {
    if (this.#pending !== null || this.#mode === "closed") return Infinity;
    const o = this.options;
    const idle = Math.min(
      this.#lastActivity + o.idleTimeout,
      this.#sessionStarted + o.sessionTimeout,
    );
    // A BDAT transaction has one deadline from its first chunk to the end
    // of its last, commands between chunks included.
    const data = this.#mode === "data" || this.#tx?.bdat
      ? this.#dataStarted + o.dataTimeout
      : Infinity;
    if (this.#mode === "data") return Math.min(idle, data);
    return Math.min(idle, data, this.#commandDeadline());
  }

  /** When the command line in progress times out (commandTimeout). */
  #commandDeadline(): number {
    switch (this.#mode) {
      case "command":
      case "sasl":
      case "sasl-failed":
        // Only while part of a line waits for its CRLF.
        return this.#pos < this.#buf.length
          ? this.#lineStarted + this.options.commandTimeout
          : Infinity;
      case "discard-line":
        return this.#lineStarted + this.options.commandTimeout;
      case "connect":
      case "data":
      case "bdat": // chunk bytes are body: dataTimeout covers them
      case "tls":
      case "closed":
        return Infinity;
      default:
        return assertNever(this.#mode);
    }
  }

  /**
   * Asks the session to end (server shutdown): replies 421 4.3.2 and closes.
   * A body in transfer is aborted.
   */
  shutdown(text = "Service shutting down"): void {
    if (this.#mode === "closed") return;
    this.#openBody()?.abort(new SmtpError(421, "4.3.2", text));
    this.#pending = null;
    this.#write(
      formatReply(421, "4.3.2", `${this.options.serverName} ${text}`),
    );
    this.#close("shutdown");
  }

  /**
   * Whether the engine is inside a body: a DATA body, or the octets of a
   * BDAT chunk. Between two BDAT chunks (reading the next command) it is
   * not, although the message is still open.
   */
  get inBody(): boolean {
    return this.#mode === "data" || this.#mode === "bdat";
  }

  /** Bytes received and not yet consumed (bounded by the driver's reads). */
  get bufferedBytes(): number {
    return this.#buf.length - this.#pos;
  }

  // --------------------------------------------------------------- output

  /**
   * The bytes to write to the client, or `null` when there are none: a
   * view that may share its `ArrayBuffer` with other replies (which is
   * never written again). Keep it as long as needed; do not write into it.
   */
  takeOutput(): Uint8Array | null {
    const s = this.#out;
    if (s === "") return null;
    this.#out = "";
    return encodeReply(s);
  }

  /** Whether replies are waiting in {@link SmtpEngine.takeOutput}. */
  get hasOutput(): boolean {
    return this.#out !== "";
  }

  // -------------------------------------------------------------- session

  /** The name the client gave with HELO/EHLO, or `null`. */
  get heloName(): string | null {
    return this.#heloName;
  }

  /** The authenticated user (AUTH), or `null`. */
  get user(): string | null {
    return this.#user;
  }

  /** Whether the client greeted with EHLO. */
  get esmtp(): boolean {
    return this.#esmtp;
  }

  /** Whether the connection is encrypted (implicit TLS or after STARTTLS). */
  get secure(): boolean {
    return this.#secure;
  }

  /** The envelope of the current transaction. */
  get envelope(): {
    from: Mailbox | null;
    mailParams: MailParams | null;
    recipients: readonly Recipient[];
  } {
    const tx = this.#tx;
    return tx === null
      ? { from: null, mailParams: null, recipients: [] }
      : { from: tx.from, mailParams: tx.mailParams, recipients: tx.recipients };
  }

  /** The decision the engine waits for, or `null`. */
  get pendingDecision(): Decision | null {
    return this.#pending?.type ?? null;
  }

  /** Whether the engine has asked to close (no more input is read). */
  get closed(): boolean {
    return this.#mode === "closed";
  }

  // ------------------------------------------------------------ decisions

  /**
   * Accepts the pending decision with its default reply (or `text` in place
   * of the default text). In LMTP an accepted `message-end` answers every
   * accepted recipient with 250 (see {@link SmtpEngine.acceptEach} to
   * answer each on its own).
   */
  accept(text?: string): void {
    const ev = this.#takeDecision("accept");
    if (ev === null) return;
    const o = this.options;
    switch (ev.type) {
      case "connect":
        this.#write(
          formatReply(220, null, text ?? `${o.serverName} ${o.greeting}`),
        );
        this.#mode = "command";
        return;
      case "helo": {
        this.#heloName = ev.hostname;
        this.#esmtp = ev.verb !== "HELO";
        const greet = text ?? `${o.serverName} greets ${ev.hostname}`;
        this.#write(
          formatReply(
            250,
            null,
            this.#esmtp ? [greet, ...capabilities(o, this.#secure)] : greet,
          ),
        );
        this.#badCommands = 0;
        return;
      }
      case "mail":
        this.#tx = new Transaction(ev.from, ev.params);
        this.#ok(orText(SENDER_OK, 250, "2.1.0", text));
        return;
      case "rcpt":
        this.#tx!.recipients.push({ mailbox: ev.to, params: ev.params });
        this.#ok(orText(RECIPIENT_OK, 250, "2.1.5", text));
        return;
      case "message-end": {
        // RFC 2033 §4.2: in LMTP one reply per accepted recipient, in RCPT order.
        const out = o.lmtp
          ? acceptedForEach(this.#tx!.recipients, text)
          : orText(MESSAGE_OK, 250, "2.0.0", text);
        this.#resetTransaction(false);
        this.#ok(out);
        return;
      }
      case "auth":
        this.#user = ev.credentials.username;
        this.#ok(orText(AUTH_OK, 235, "2.7.0", text));
        return;
      case "starttls":
        this.#ok(orText(TLS_READY, 220, "2.0.0", text));
        this.#mode = "tls";
        // RFC 3207 §4.2: nothing sent before the handshake may be acted upon.
        this.#buf = EMPTY;
        this.#pos = 0;
        return;
      default:
        return assertNever(ev);
    }
  }

  /**
   * Rejects the pending decision with `error`'s reply (in LMTP, a
   * `message-end` gets it once per accepted recipient).
   */
  reject(error: SmtpError): void {
    const ev = this.#takeDecision("reject");
    if (ev === null) return;
    const decision = ev.type;
    if (decision === "auth") {
      if (ev.credentials.mechanism === "XOAUTH2") {
        // XOAUTH2: a failure is a 334 with an error; the client answers with
        // an empty line, then gets the final reply.
        this.#write(`334 ${XOAUTH2_FAILURE}\r\n`);
        this.#saslError = error;
        this.#mode = "sasl-failed";
        return;
      }
      this.#authFailed(error);
      return;
    }
    const reply = formatReply(error.code, error.enhancedCode, error.message);
    this.#write(
      decision === "message-end" ? this.#perRecipient(reply) : reply,
    );
    switch (decision) {
      case "connect":
        this.#close("rejected");
        return;
      case "helo":
      case "mail":
      case "starttls":
        return;
      case "rcpt":
        return;
      case "message-end":
        this.#resetTransaction(false);
        return;
      default:
        return assertNever(decision);
    }
  }

  /**
   * Answers the pending `message-end` of an LMTP session recipient by
   * recipient (RFC 2033 §4.2): `results[i]` is the outcome for the i-th
   * accepted recipient of the event's `recipients` (in RCPT order): `null`
   * accepts with the default reply, a string accepts with that text, an
   * {@link SmtpError} refuses with its reply. `accept()` and `reject()`
   * still answer every recipient alike.
   *
   * Throws when no `message-end` is pending, when LMTP is off (SMTP has one
   * reply per message), or when `results` does not have one entry per
   * recipient; the decision then stays pending.
   *
   * @example
   * ```ts
   * import { SmtpEngine, SmtpError } from "@smtpd/smtpd/engine";
   *
   * const engine = new SmtpEngine({ lmtp: true });
   * // ... on a message-end event with two recipients:
   * // engine.acceptEach([null, new SmtpError(452, "4.2.2", "Mailbox full")]);
   * ```
   */
  acceptEach(results: readonly (SmtpError | string | null)[]): void {
    if (this.#mode === "closed") return;
    if (this.#pending?.type !== "message-end") {
      throw new Error(
        "Cannot answer per recipient: no message-end decision is pending",
      );
    }
    if (!this.options.lmtp) {
      throw new Error("Cannot answer per recipient: LMTP is off");
    }
    const recipients = this.#tx!.recipients;
    if (!Array.isArray(results) || results.length !== recipients.length) {
      throw new TypeError(
        `Cannot answer per recipient: ${
          Array.isArray(results) ? results.length : "no"
        } results for ${recipients.length} recipients`,
      );
    }
    const out = eachReply(recipients, results);
    this.#pending = null;
    this.#resetTransaction(false);
    // Any accepted recipient makes it a success for the bad-command count.
    if (results.some((r) => !(r instanceof SmtpError))) this.#ok(out);
    else this.#write(out);
  }

  /** A failed AUTH: the reply, and 421 after too many failures. */
  #authFailed(error: SmtpError): void {
    this.#write(formatReply(error.code, error.enhancedCode, error.message));
    if (++this.#authFailures >= this.options.maxAuthFailures) {
      this.#write(
        formatReply(
          421,
          "4.7.0",
          `${this.options.serverName} Too many failed authentications, closing connection`,
        ),
      );
      this.#close("too-many-errors");
    }
  }

  /**
   * The TLS handshake after STARTTLS finished: the session starts over
   * (RFC 3207 §4.2: the client must send EHLO again).
   */
  tlsStarted(): void {
    if (this.#mode !== "tls") {
      throw new Error("Cannot start TLS: STARTTLS was not accepted");
    }
    this.#secure = true;
    this.#heloName = null;
    this.#esmtp = false;
    this.#user = null;
    // A transaction started before STARTTLS is dropped: say so with a
    // `reset` event, as SmtpEvent documents.
    this.#resetTransaction(true);
    this.#buf = EMPTY;
    this.#pos = 0;
    this.#mode = "command";
  }

  // --------------------------------------------------------------- events

  /**
   * The next event. Call it until it returns `need-data` (or `close`),
   * answering each decision before asking again.
   */
  nextEvent(): SmtpEvent {
    if (this.#queue.length > 0) return this.#queue.shift()!;
    if (this.#pending !== null) {
      throw new Error(
        `Cannot read the next event: the ${this.#pending.type} decision is pending`,
      );
    }
    for (;;) {
      let ev: SmtpEvent | null;
      switch (this.#mode) {
        case "connect":
          return this.#decide({ type: "connect" });
        case "command":
          ev = this.#readCommand();
          break;
        case "discard-line":
          ev = this.#discardLine();
          break;
        case "sasl":
        case "sasl-failed":
          ev = this.#readCommand();
          break;
        case "data":
          ev = this.#readData();
          break;
        case "bdat":
          ev = this.#readChunk();
          break;
        case "tls":
          return NEED_DATA;
        case "closed":
          return { type: "close", reason: this.#closeReason ?? "eof" };
        default:
          return assertNever(this.#mode);
      }
      if (this.#queue.length > 0) {
        if (ev !== null) this.#queue.push(ev);
        return this.#queue.shift()!;
      }
      if (ev !== null) return ev;
    }
  }

  // ------------------------------------------------------------- internals

  #takeDecision(what: string): DecisionEvent | null {
    const d = this.#pending;
    if (this.#mode === "closed") return null; // closed meanwhile: nothing to answer
    if (d === null) throw new Error(`Cannot ${what}: no decision is pending`);
    this.#pending = null;
    return d;
  }

  #decide(ev: DecisionEvent): SmtpEvent {
    this.#pending = ev;
    return ev;
  }

  #write(reply: string): void {
    this.#out += reply;
  }

  /** A positive reply (formatted): the error count starts over. */
  #ok(reply: string): void {
    this.#badCommands = 0;
    this.#out += reply;
  }

  /** A protocol error reply; too many in a row close the session. */
  #fail(code: number, enhanced: string, text: string): null {
    this.#write(formatReply(code, enhanced, text));
    if (++this.#badCommands >= this.options.maxBadCommands) {
      this.#write(
        formatReply(
          421,
          "4.7.0",
          `${this.options.serverName} Too many errors, closing connection`,
        ),
      );
      this.#close("too-many-errors");
    }
    return null;
  }

  /** {@link SmtpEngine.#fail} with the codes and text of `error`. */
  #failWith(error: SmtpError): null {
    return this.#fail(error.code, error.enhancedCode, error.message);
  }

  /**
   * A reply to the end of the message: in LMTP once per accepted recipient
   * of the transaction.
   */
  #perRecipient(reply: string): string {
    return perRecipient(reply, this.options.lmtp, this.#tx!.recipients.length);
  }

  #close(reason: CloseReason): void {
    this.#mode = "closed";
    this.#closeReason = reason;
    this.#pending = null;
    this.#buf = EMPTY;
    this.#pos = 0;
  }

  /** AUTH is advertised and accepted: over TLS, or plaintext when allowed. */
  #authOffered(): boolean {
    return authOffered(this.options, this.#secure);
  }

  /**
   * Ends the transaction. A BDAT body still open (RSET, QUIT, HELO/EHLO or
   * STARTTLS between chunks) is aborted first: nothing is delivered.
   */
  #resetTransaction(announce: boolean): void {
    const had = this.#tx !== null;
    this.#openBody()?.abort(dropped());
    this.#tx = null;
    if (announce && had) this.#queue.push({ type: "reset" });
  }

  // ------------------------------------------------------- command lines

  /** Reads one command line; returns an event, or null to go on reading. */
  #readCommand(): SmtpEvent | null {
    const buf = this.#buf;
    const start = this.#pos;
    if (start >= buf.length) {
      // All read: let go of the chunk, which an idle session would
      // otherwise keep (with the memory of the read it is a view of).
      this.#buf = EMPTY;
      this.#pos = 0;
      this.#text?.release();
      return NEED_DATA;
    }
    let from = start;
    let lf = -1;
    // A command ends only at CRLF; a bare LF is part of the line (and an error).
    for (;;) {
      lf = buf.indexOf(LF, from);
      if (lf < 0 || (lf > start && buf[lf - 1] === CR)) break;
      from = lf + 1;
    }
    const max = this.#mode !== "command" || isAuthLine(buf, start)
      ? Math.max(AUTH_LINE_MAX, this.options.maxLineLength)
      : this.options.maxLineLength;
    if (lf < 0) {
      const avail = buf.length - start;
      const content = avail - (avail > 0 && buf[buf.length - 1] === CR ? 1 : 0);
      if (content > max - 2) {
        // Too long: drop what we have and discard up to the next CRLF.
        this.#discardCR = buf[buf.length - 1] === CR;
        this.#buf = EMPTY;
        this.#pos = 0;
        this.#mode = "discard-line";
        return null;
      }
      return NEED_DATA;
    }
    this.#pos = lf + 1;
    // A line is complete: what follows (pipelined) came with the last chunk.
    this.#lineStarted = this.#lastActivity;
    if (lf + 1 - start > max) {
      this.#endSasl();
      return this.#fail(500, "5.5.2", "Line too long");
    }
    // The line is buf[start, lf - 1): no subarray view, which costs up to
    // 0.4 µs on a small chunk (Bun and V8 then move its bytes off the heap).
    if (this.#mode === "sasl") return this.#saslResponse(buf, start, lf - 1);
    if (this.#mode === "sasl-failed") {
      const error = this.#saslError!;
      this.#endSasl();
      this.#authFailed(error);
      return null;
    }
    return this.#command(buf, start, lf - 1);
  }

  #discardLine(): SmtpEvent | null {
    const buf = this.#buf;
    let i = this.#pos;
    if (i >= buf.length) return NEED_DATA;
    if (this.#discardCR && buf[i] === LF) {
      i += 1;
    } else {
      let found = -1;
      for (let from = i;;) {
        const lf = buf.indexOf(LF, from);
        if (lf < 0) break;
        if (lf > i && buf[lf - 1] === CR) {
          found = lf + 1;
          break;
        }
        from = lf + 1;
      }
      if (found < 0) {
        this.#discardCR = buf[buf.length - 1] === CR;
        this.#buf = EMPTY;
        this.#pos = 0;
        return NEED_DATA;
      }
      i = found;
    }
    this.#pos = i;
    this.#lineStarted = this.#lastActivity;
    this.#discardCR = false;
    this.#endSasl();
    return this.#fail(500, "5.5.2", "Line too long");
  }

  /** Decodes and dispatches one command line (without CRLF). */
  #command(buf: Uint8Array, start: number, end: number): SmtpEvent | null {
    const line = decodeCommandLine(buf, start, end);
    if (typeof line !== "string") return this.#failWith(line);
    const sp = line.indexOf(" ");
    const verb = (sp < 0 ? line : line.slice(0, sp)).toUpperCase();
    const arg = sp < 0 ? "" : line.slice(sp + 1);
    if (this.options.traceCommands) {
      // Never hand credentials to a logger: keep only "AUTH <mechanism>".
      const shown = verb === "AUTH" && arg.includes(" ")
        ? `${line.slice(0, sp)} ${arg.slice(0, arg.indexOf(" "))} ***`
        : line;
      this.#queue.push({ type: "command", verb, line: shown });
    }
    if (verb !== "BDAT") this.#owedReplies = 0;
    switch (verb) {
      case "EHLO":
      case "HELO":
        if (this.options.lmtp) {
          return this.#fail(500, "5.5.1", "This is LMTP: send LHLO");
        }
        return this.#helo(verb, arg);
      case "LHLO":
        if (!this.options.lmtp) {
          return this.#fail(500, "5.5.1", "Command unrecognized");
        }
        return this.#helo(verb, arg);
      case "BDAT":
        return this.#bdatCommand(arg);
      case "MAIL":
        return this.#mail(arg);
      case "RCPT":
        return this.#rcpt(arg);
      case "DATA":
        return this.#data(arg);
      case "RSET":
        if (arg !== "") {
          return this.#fail(501, "5.5.4", "RSET takes no arguments");
        }
        this.#resetTransaction(true);
        this.#ok(OK);
        return null;
      case "NOOP":
        this.#ok(OK);
        return null;
      case "QUIT":
        if (arg !== "") {
          return this.#fail(501, "5.5.4", "QUIT takes no arguments");
        }
        this.#write(
          formatReply(221, "2.0.0", `${this.options.serverName} Bye`),
        );
        this.#resetTransaction(true);
        this.#close("quit");
        return null;
      case "VRFY":
        if (arg.trim() === "") {
          return this.#fail(501, "5.5.4", "VRFY needs an argument");
        }
        this.#ok(VRFY_REPLY);
        return null;
      case "HELP":
        this.#ok(
          formatReply(214, "2.0.0", helpLines(this.options, this.#secure)),
        );
        return null;
      case "STARTTLS":
        return this.#starttls(arg);
      case "AUTH":
        return this.#auth(arg);
      default:
        if (NOT_IMPLEMENTED.has(verb)) {
          return this.#fail(502, "5.5.1", "Command not implemented");
        }
        if (line === "") return this.#fail(500, "5.5.2", "Empty command");
        return this.#fail(500, "5.5.1", "Command unrecognized");
    }
  }

  #helo(verb: "EHLO" | "HELO" | "LHLO", arg: string): SmtpEvent | null {
    const name = arg.trim();
    if (name === "") {
      return this.#fail(501, "5.5.4", `${verb} needs a domain name`);
    }
    const valid = name[0] === "["
      ? isDomainOrLiteral(name, false)
      : HELO_NAME.test(name) ||
        (this.options.smtputf8 && !name.includes(" ") &&
          isDomainOrLiteral(name, true));
    if (!valid) return this.#fail(501, "5.5.4", "Invalid domain name");
    this.#resetTransaction(true);
    return this.#decide({ type: "helo", verb, hostname: name });
  }

  #mail(arg: string): SmtpEvent | null {
    if (this.#heloName === null) {
      return this.#fail(503, "5.5.1", "Send EHLO or HELO first");
    }
    if (this.#tx !== null) {
      return this.#fail(503, "5.5.1", "Nested MAIL command");
    }
    if (this.options.requireTls && !this.#secure) {
      return this.#fail(530, "5.7.0", "Must issue a STARTTLS command first");
    }
    if (this.options.authRequired && this.#user === null) {
      return this.#fail(530, "5.7.0", "Authentication required");
    }
    const env = parseEnvelopeArg(arg, false);
    if (env instanceof SmtpError) return this.#failWith(env);
    const params = parseMailParams(
      env.params,
      this.options,
      this.#esmtp,
      this.#authOffered(),
    );
    if (params instanceof SmtpError) return this.#failWith(params);
    if (NON_ASCII.test(env.mailbox.address) && !params.smtputf8) {
      return this.#fail(553, "5.6.7", "UTF-8 address needs SMTPUTF8");
    }
    return this.#decide({ type: "mail", from: env.mailbox, params });
  }

  #rcpt(arg: string): SmtpEvent | null {
    const tx = this.#tx;
    if (tx === null) return this.#fail(503, "5.5.1", "Send MAIL first");
    const env = parseEnvelopeArg(arg, true);
    if (env instanceof SmtpError) return this.#failWith(env);
    const params = parseRcptParams(env.params, this.#esmtp, this.options.dsn);
    if (params instanceof SmtpError) return this.#failWith(params);
    if (NON_ASCII.test(env.mailbox.address) && !tx.mailParams.smtputf8) {
      return this.#fail(553, "5.6.7", "UTF-8 address needs SMTPUTF8");
    }
    tx.rcptAttempts++;
    if (tx.recipients.length >= this.options.maxRecipients) {
      // Not a protocol error: the client sends the rest in another transaction.
      this.#write(formatReply(452, "4.5.3", "Too many recipients"));
      return null;
    }
    return this.#decide({ type: "rcpt", to: env.mailbox, params });
  }

  #data(arg: string): SmtpEvent | null {
    if (arg !== "") return this.#fail(501, "5.5.4", "DATA takes no arguments");
    const tx = this.#tx;
    if (tx === null) return this.#fail(503, "5.5.1", "Send MAIL first");
    if (tx.bdat !== null) {
      // RFC 3030 §2: DATA and BDAT do not mix in one transaction.
      return this.#fail(503, "5.5.1", "DATA cannot follow BDAT");
    }
    if (tx.mailParams.body === "BINARYMIME") {
      return this.#fail(503, "5.5.1", "BODY=BINARYMIME needs BDAT, not DATA");
    }
    const refused = tx.noRecipients(this.options.lmtp);
    if (refused !== null) return this.#failWith(refused);
    this.#ok(DATA_GO_AHEAD);
    this.#mode = "data";
    const body = tx.body = this.#newBody("DATA");
    this.#dataReader = new DataReader(
      body,
      this.#text ??= new TextScanner(),
      this.#queue,
    );
    this.#dataStarted = this.#lastActivity;
    return {
      type: "message-start",
      command: "DATA",
      body: tx.bodyType,
      envelope: tx.envelope(),
    };
  }

  /** The body of this transaction, as the options have it. */
  #newBody(command: "DATA" | "BDAT"): Body {
    const o = this.options;
    return new Body(
      command,
      this.#queue,
      o.maxMessageSize,
      o.bareLineEnding === "normalize",
    );
  }

  /** The body in transfer (message-start sent, no end or abort yet), or null. */
  #openBody(): Body | null {
    const body = this.#tx?.body ?? null;
    return body !== null && body.open ? body : null;
  }

  /**
   * BDAT <size> [LAST] (RFC 3030). The chunk is always read before the
   * reply, also when it is refused: its octets must never run as commands.
   * Only a size that cannot be parsed (or counted exactly) leaves the end
   * of the chunk unknown: 501 5.5.4, then 421 4.7.0 and a close.
   */
  #bdatCommand(arg: string): SmtpEvent | null {
    if (!this.options.chunking) {
      return this.#fail(502, "5.5.1", "Command not implemented");
    }
    const sp = arg.indexOf(" ");
    const size = parseChunkSize(sp < 0 ? arg : arg.slice(0, sp));
    if (size < 0) {
      this.#write(formatReply(501, "5.5.4", "Bad BDAT chunk size"));
      this.#write(
        formatReply(
          421,
          "4.7.0",
          `${this.options.serverName} Cannot find the end of the BDAT chunk, closing connection`,
        ),
      );
      this.#openBody()?.abort(
        new SmtpError(501, "5.5.4", "Bad BDAT chunk size"),
      );
      this.#close("protocol-error");
      return null;
    }
    const rest = sp < 0 ? null : arg.slice(sp + 1);
    const last = rest !== null && rest.toUpperCase() === "LAST";
    this.#mode = "bdat";
    const tx = this.#tx;
    const reader = tx?.bdat ?? null;
    let error: SmtpError | null = null;
    if (rest !== null && !last) {
      error = new SmtpError(501, "5.5.4", "Syntax: BDAT size [LAST]");
    } else if (tx === null) {
      error = new SmtpError(503, "5.5.1", "Send MAIL first");
    } else error = tx.noRecipients(this.options.lmtp);
    if (
      error === null &&
      (reader?.octets ?? 0) + size > this.options.maxMessageSize
    ) {
      error = new SmtpError(552, "5.3.4", TOO_LARGE);
    }
    if (error !== null) {
      // RFC 3030 §2: a refused chunk fails the transaction in progress.
      const reply = formatReply(error.code, error.enhancedCode, error.message);
      // RFC 2033 §4.3: in LMTP the LAST chunk gets one reply per accepted
      // recipient, so none when none was accepted (a pipelining client
      // counts its accepted RCPTs and reads that many replies; it then
      // takes the transaction as over). Any other chunk gets one reply.
      const lmtp = this.options.lmtp;
      const owed = tx !== null ? tx.recipients.length : this.#owedReplies;
      this.#skipped = new SkippedChunk(
        size,
        perRecipient(reply, lmtp && last, owed),
      );
      if (reader !== null || error.code === 552 || (lmtp && last)) {
        this.#openBody()?.abort(error);
        this.#resetTransaction(false);
        this.#owedReplies = lmtp && !last ? owed : 0;
      }
      return null;
    }
    if (reader !== null) {
      reader.startChunk(size, last);
      return null;
    }
    const body = tx!.body = this.#newBody("BDAT");
    const bdat = tx!.bdat = new BdatReader(
      body,
      this.#text ??= new TextScanner(),
      this.#queue,
      tx!.mailParams.body === "BINARYMIME",
    );
    bdat.startChunk(size, last);
    this.#dataStarted = this.#lastActivity;
    return {
      type: "message-start",
      command: "BDAT",
      body: tx!.bodyType,
      envelope: tx!.envelope(),
    };
  }

  #auth(arg: string): SmtpEvent | null {
    const o = this.options;
    if (o.authMechanisms.length === 0) {
      return this.#fail(502, "5.5.1", "Command not implemented");
    }
    if (!this.#esmtp) return this.#fail(503, "5.5.1", "Send EHLO first");
    if (this.#user !== null) {
      return this.#fail(503, "5.5.1", "Already authenticated");
    }
    if (this.#tx !== null) {
      return this.#fail(
        503,
        "5.5.1",
        "AUTH is not allowed during a transaction",
      );
    }
    if (!this.#authOffered()) {
      return o.requireTls && !this.#secure
        ? this.#fail(530, "5.7.0", "Must issue a STARTTLS command first")
        : this.#fail(
          538,
          "5.7.11",
          "Encryption required for requested authentication mechanism",
        );
    }
    const parsed = parseAuthArg(arg, o.authMechanisms);
    if (parsed instanceof SmtpError) return this.#failWith(parsed);
    this.#sasl = new SaslExchange(parsed.mechanism, this.#challenge());
    return this.#saslStep(this.#sasl.start(parsed.initial));
  }

  /** A CRAM-MD5 challenge: `<random.time@server>` (RFC 2195). */
  #challenge(): string {
    const r = new Uint32Array(2);
    crypto.getRandomValues(r);
    return `<${r[0]}${r[1]}.${this.#lastActivity}@${this.options.serverName}>`;
  }

  #saslStep(step: SaslStep): SmtpEvent | null {
    switch (step.type) {
      case "challenge":
        this.#mode = "sasl";
        // RFC 4954: continue-req = "334" SP [base64] CRLF (the space stays).
        this.#write(`334 ${step.text}\r\n`);
        return null;
      case "done":
        this.#endSasl();
        return this.#decide({
          type: "auth",
          credentials: step.credentials,
        });
      case "error":
        this.#endSasl();
        return this.#fail(501, "5.5.2", "Invalid authentication data");
      default:
        return assertNever(step);
    }
  }

  /** One client response line during AUTH. */
  #saslResponse(buf: Uint8Array, start: number, end: number): SmtpEvent | null {
    const decoded = parseSaslResponse(buf, start, end);
    if (decoded instanceof SmtpError) {
      this.#endSasl();
      return this.#failWith(decoded);
    }
    return this.#saslStep(this.#sasl!.next(decoded));
  }

  #endSasl(): void {
    this.#sasl = null;
    this.#saslError = null;
    if (this.#mode !== "closed") this.#mode = "command";
  }

  #starttls(arg: string): SmtpEvent | null {
    // Already encrypted (implicit TLS or after STARTTLS): 503, whether or
    // not STARTTLS would be offered in plaintext.
    if (this.#secure) return this.#fail(503, "5.5.1", "TLS already active");
    if (!this.options.startTls) {
      return this.#fail(502, "5.5.1", "Command not implemented");
    }
    if (arg !== "") {
      return this.#fail(501, "5.5.4", "STARTTLS takes no arguments");
    }
    return this.#decide({ type: "starttls" });
  }

  // ----------------------------------------------------------------- body

  /** Reads DATA body bytes with the DATA reader, up to the message's end. */
  #readData(): SmtpEvent | null {
    const reader = this.#dataReader!;
    const ev = reader.read(this.#buf, this.#pos);
    this.#pos = reader.pos;
    if (!reader.ended) return ev;
    this.#dataReader = null;
    return this.#messageEnd();
  }

  /** The body ended: its refusal, or the message-end decision. */
  #messageEnd(): SmtpEvent | null {
    this.#mode = "command";
    const tx = this.#tx!;
    const body = tx.body!;
    const aborted = body.aborted;
    if (aborted !== null) {
      const reply = formatReply(
        aborted.code,
        aborted.enhancedCode,
        aborted.message,
      );
      // LMTP: every accepted recipient gets the refusal.
      this.#write(this.#perRecipient(reply));
      this.#resetTransaction(false);
      return null;
    }
    body.open = false;
    return this.#decide({
      type: "message-end",
      size: body.size,
      recipients: tx.recipients.slice(),
    });
  }

  /**
   * Reads the octets of a BDAT chunk: with the transaction's BDAT reader
   * when it is accepted, else dropped.
   */
  #readChunk(): SmtpEvent | null {
    const skipped = this.#skipped;
    if (skipped !== null) {
      this.#pos = skipped.skip(this.#buf, this.#pos);
      if (skipped.left > 0) return NEED_DATA;
      this.#skipped = null;
      this.#mode = "command";
      this.#write(skipped.reply);
      return null;
    }
    const reader = this.#tx!.bdat!;
    const ev = reader.read(this.#buf, this.#pos);
    this.#pos = reader.pos;
    return reader.chunkEnded ? this.#chunkEnd(reader) : ev;
  }

  /** The last octet of an accepted chunk was read: its reply, or the message's end. */
  #chunkEnd(reader: BdatReader): SmtpEvent | null {
    this.#mode = "command";
    reader.finishChunk();
    const tx = this.#tx!;
    const last = reader.chunkLast;
    if (tx.body!.tooLarge) {
      // Normalized line endings took the body past maxMessageSize.
      const reply = formatReply(552, "5.3.4", TOO_LARGE);
      const lmtp = this.options.lmtp;
      const owed = tx.recipients.length;
      this.#write(perRecipient(reply, last && lmtp, owed));
      this.#resetTransaction(false);
      if (lmtp && !last) this.#owedReplies = owed;
      return null;
    }
    if (!last) {
      // A refused body (bare line ending) still gets its refusal only
      // after the LAST chunk.
      this.#ok(
        formatReply(250, "2.0.0", `${reader.chunkSize} octets received`),
      );
      return null;
    }
    return this.#messageEnd();
  }
}

/** A default reply, or the same codes with the text given to `accept(text)`. */
function orText(
  fixed: string,
  code: number,
  enhanced: string,
  text: string | undefined,
): string {
  // `??` semantics, as before: null means "the default" too.
  return text === undefined || text === null
    ? fixed
    : formatReply(code, enhanced, text);
}

/** Replies as bytes: ASCII (nearly always) copied into the slab, else UTF-8. */
function encodeReply(s: string): Uint8Array {
  const n = s.length;
  if (n > SLAB_MAX) return ENCODER.encode(s);
  if (slabAt + n > SLAB_SIZE) {
    slab = new Uint8Array(SLAB_SIZE);
    slabAt = 0;
  }
  const start = slabAt;
  const buf = slab;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c > 0x7f) return ENCODER.encode(s); // the bytes written stay unused
    buf[start + i] = c;
  }
  slabAt = start + n;
  return buf.subarray(start, start + n);
}

function assertNever(x: never): never {
  throw new Error(`Unexpected value: ${String(x)}`);
}
