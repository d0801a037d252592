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

import type { Mailbox } from "./address.ts";
import { formatReply, SmtpError } from "./errors.ts";
import {
  type EngineOptions,
  isSharedEngineOptions,
  type ResolvedEngineOptions,
  resolveEngineOptions,
} from "./options.ts";
import { NEED_DATA, TOO_LARGE } from "./engine/body.ts";
import type { BdatReader } from "./engine/body_bdat.ts";
import { readData } from "./engine/body_data.ts";
import { discardLine, readCommand } from "./engine/commands.ts";
import { assertNever, EngineCore } from "./engine/core.ts";
import {
  accept,
  acceptEach,
  acceptEncoded,
  reject,
} from "./engine/decisions.ts";
import { fixedBytes } from "./engine/fixed_replies.ts";
import { perRecipient } from "./engine/lmtp.ts";
import type {
  Decision,
  MailParams,
  Recipient,
  SessionView,
  SmtpEvent,
} from "./engine/types.ts";

export type {
  BodyType,
  CloseReason,
  Decision,
  MailParams,
  RcptParams,
  Recipient,
  SessionView,
  SmtpEvent,
} from "./engine/types.ts";

const ENCODER = new TextEncoder();
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
  /** The session's state, shared with the command handlers and readers. */
  readonly #core: EngineCore;

  /**
   * The validated options (the core's: a getter, not a second field in
   * every session).
   */
  get options(): ResolvedEngineOptions {
    return this.#core.options;
  }

  /**
   * Makes the engine of one connection; throws a `TypeError` on a bad option.
   *
   * @param options engine options (validated; see {@link EngineOptions})
   * @param now the current time in milliseconds, for the idle deadline
   * @param view kept equal to the engine's HELO name, ESMTP, `secure` and
   *   user from now on (written as they change: the driver's session,
   *   whose fields are then plain data, no getter per session)
   */
  constructor(
    options: EngineOptions = {},
    now = 0,
    view: SessionView | null = null,
  ) {
    this.#core = new EngineCore(
      isSharedEngineOptions(options) ? options : resolveEngineOptions(options),
      now,
      view,
    );
  }

  // ---------------------------------------------------------------- input

  /**
   * Hands received bytes to the engine. The engine keeps a view of `chunk`
   * (no copy) until `nextEvent()` returns `need-data`: then it has copied
   * what it still needs (part of a line, of a line ending), and the
   * chunk's memory may be read into again.
   */
  receive(chunk: Uint8Array, now: number): void {
    const c = this.#core;
    c.lastActivity = now;
    if (chunk.length === 0) {
      // The driver's "the hook has answered": time in a hook does not
      // count against the command line the client pipelined behind it.
      c.lineStarted = now;
      return;
    }
    // A new line starts with this chunk when nothing is left of the last
    // one. A body's bytes do not count for commandTimeout: the line after
    // the body started with the last chunk at the earliest.
    if (
      c.mode === "data" ||
      (c.pos >= c.buf.length && c.mode !== "discard-line")
    ) {
      c.lineStarted = now;
    }
    if (c.mode === "closed" || c.mode === "tls") return; // RFC 3207 §4.2
    c.text?.renew(); // the same memory may have been read into again
    if (c.pos >= c.buf.length) {
      c.buf = chunk;
    } else {
      const rest = c.buf.length - c.pos;
      const merged = new Uint8Array(rest + chunk.length);
      merged.set(c.buf.subarray(c.pos));
      merged.set(chunk, rest);
      c.buf = merged;
    }
    c.pos = 0;
  }

  /**
   * The peer closed its side. A body in transfer is aborted (never
   * delivered) and the engine asks for the connection to be closed.
   */
  end(): void {
    const c = this.#core;
    if (c.mode === "closed") return;
    const body = c.openBody();
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
    c.close("eof");
  }

  /**
   * Checks the deadlines. Past the idle or DATA deadline (and not waiting
   * for a decision), the engine replies 421 4.4.2 and asks to close.
   */
  tick(now: number): void {
    const c = this.#core;
    if (c.pending !== null || c.mode === "closed") return;
    if (now < this.deadline()) return;
    const what = now >= c.sessionStarted + c.options.sessionTimeout
      ? "Session too long"
      : now >= commandDeadline(c)
      ? "Command timeout"
      : "Timeout";
    const error = new SmtpError(
      421,
      "4.4.2",
      `${c.options.serverName} ${what}, closing connection`,
    );
    c.openBody()?.abort(error);
    c.write(formatReply(error.code, error.enhancedCode, error.message));
    c.close("timeout");
  }

  /**
   * The time (same clock as `now`) at which {@link SmtpEngine.tick} will
   * time the session out; `Infinity` when no deadline applies. The DATA
   * deadline (`dataTimeout`) covers a DATA body, and a BDAT transaction
   * from its first chunk to the end of its last.
   */
  deadline(): number {
    const c = this.#core;
    if (c.pending !== null || c.mode === "closed") return Infinity;
    const o = c.options;
    const idle = Math.min(
      c.lastActivity + o.idleTimeout,
      c.sessionStarted + o.sessionTimeout,
    );
    // A BDAT transaction has one deadline from its first chunk to the end
    // of its last, commands between chunks included.
    const data = c.mode === "data" || c.tx?.bdat
      ? c.dataStarted + o.dataTimeout
      : Infinity;
    if (c.mode === "data") return Math.min(idle, data);
    return Math.min(idle, data, commandDeadline(c));
  }

  /**
   * Asks the session to end (server shutdown): replies 421 4.3.2 and closes.
   * A body in transfer is aborted.
   */
  shutdown(text = "Service shutting down"): void {
    const c = this.#core;
    if (c.mode === "closed") return;
    c.openBody()?.abort(new SmtpError(421, "4.3.2", text));
    c.pending = null;
    c.write(
      formatReply(421, "4.3.2", `${c.options.serverName} ${text}`),
    );
    c.close("shutdown");
  }

  /**
   * Whether the engine is inside a body: a DATA body, or the octets of a
   * BDAT chunk. Between two BDAT chunks (reading the next command) it is
   * not, although the message is still open.
   */
  get inBody(): boolean {
    return this.#core.mode === "data" || this.#core.mode === "bdat";
  }

  /**
   * Lets go of the memory received, when the engine is done with it: every
   * byte given to `receive()` consumed, and no `data` event still queued
   * (a view of received bytes). Then true, and the chunk of the `data`
   * event just taken is no longer the engine's (a reader may take over its
   * memory: a byte stream detaches what it is given); else false, and the
   * engine keeps it.
   */
  releaseInput(): boolean {
    const c = this.#core;
    if (c.pos < c.buf.length) return false;
    const q = c.queue;
    if (q !== null) {
      for (let i = 0; i < q.length; i++) if (q[i].type === "data") return false;
    }
    c.dropInput();
    c.text?.release();
    return true;
  }

  /** Bytes received and not yet consumed (bounded by the driver's reads). */
  get bufferedBytes(): number {
    return this.#core.buf.length - this.#core.pos;
  }

  // --------------------------------------------------------------- output

  /**
   * The bytes to write to the client, or `null` when there are none: a
   * view that may share its `ArrayBuffer` with other replies (which is
   * never written again), or the same array every time for a fixed reply
   * (every session's, the default greeting included). Keep it as long as
   * needed; do not write into it.
   */
  takeOutput(): Uint8Array | null {
    const c = this.#core;
    const s = c.out;
    if (s === "") return null;
    c.out = "";
    // One fixed reply queued with its bytes (EngineCore.okFixed): no lookup.
    const fixed = c.outFixed;
    if (fixed !== null) {
      c.outFixed = null;
      return fixed;
    }
    return fixedBytes(s) ?? encodeReply(s);
  }

  /** Whether replies are waiting in {@link SmtpEngine.takeOutput}. */
  get hasOutput(): boolean {
    return this.#core.out !== "";
  }

  // -------------------------------------------------------------- session

  /** The name the client gave with HELO/EHLO, or `null`. */
  get heloName(): string | null {
    return this.#core.heloName;
  }

  /** The authenticated user (AUTH), or `null`. */
  get user(): string | null {
    return this.#core.user;
  }

  /** Whether the client greeted with EHLO. */
  get esmtp(): boolean {
    return this.#core.esmtp;
  }

  /** Whether the connection is encrypted (implicit TLS or after STARTTLS). */
  get secure(): boolean {
    return this.#core.secure;
  }

  /** The envelope of the current transaction. */
  get envelope(): {
    from: Mailbox | null;
    mailParams: MailParams | null;
    recipients: readonly Recipient[];
  } {
    const tx = this.#core.tx;
    return tx === null
      ? { from: null, mailParams: null, recipients: [] }
      : { from: tx.from, mailParams: tx.mailParams, recipients: tx.recipients };
  }

  /** The decision the engine waits for, or `null`. */
  get pendingDecision(): Decision | null {
    return this.#core.pending?.type ?? null;
  }

  /** Whether the engine has asked to close (no more input is read). */
  get closed(): boolean {
    return this.#core.mode === "closed";
  }

  // ------------------------------------------------------------ decisions

  /**
   * Accepts the pending decision with its default reply (or `text` in place
   * of the default text). In LMTP an accepted `message-end` answers every
   * accepted recipient with 250 (see {@link SmtpEngine.acceptEach} to
   * answer each on its own).
   */
  accept(text?: string): void {
    accept(this.#core, text);
  }

  /**
   * Rejects the pending decision with `error`'s reply (in LMTP, a
   * `message-end` gets it once per accepted recipient).
   */
  reject(error: SmtpError): void {
    reject(this.#core, error);
  }

  /**
   * Accepts the pending `message-end` with `250 2.0.0 OK <id>`: the reply
   * `accept("OK " + id)` gives (and does give in LMTP, and for an `id`
   * with a space or a character outside printable ASCII), queued as bytes
   * without formatting and encoding text: its fixed part encoded once,
   * `id` written into the output character by character. The reply
   * serve() gives every message it takes.
   *
   * @example
   * ```ts
   * import { SmtpEngine } from "@smtpd/smtpd/engine";
   *
   * const engine = new SmtpEngine({});
   * // ... on a message-end event:
   * // engine.acceptQueued("m1"); // "250 2.0.0 OK m1\r\n"
   * ```
   */
  acceptQueued(id: string): void {
    const c = this.#core;
    const bytes = c.options.lmtp || c.pending?.type !== "message-end"
      ? null
      : queuedBytes(id);
    if (bytes === null) accept(c, `OK ${id}`);
    else acceptEncoded(c, QUEUED + id + "\r\n", bytes);
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
    acceptEach(this.#core, results);
  }

  /**
   * The TLS handshake after STARTTLS finished: the session starts over
   * (RFC 3207 §4.2: the client must send EHLO again).
   */
  tlsStarted(): void {
    const c = this.#core;
    if (c.mode !== "tls") {
      throw new Error("Cannot start TLS: STARTTLS was not accepted");
    }
    c.secure = true;
    c.heloName = null;
    c.esmtp = false;
    c.user = null;
    c.showState();
    // A transaction started before STARTTLS is dropped: say so with a
    // `reset` event, as SmtpEvent documents.
    c.resetTransaction(true);
    c.dropInput();
    c.mode = "command";
  }

  // --------------------------------------------------------------- events

  /**
   * The next event. Call it until it returns `need-data` (or `close`),
   * answering each decision before asking again.
   */
  nextEvent(): SmtpEvent {
    const c = this.#core;
    const queue = c.queue;
    if (queue !== null && queue.length > 0) return queue.shift()!;
    if (c.pending !== null) {
      throw new Error(
        `Cannot read the next event: the ${c.pending.type} decision is pending`,
      );
    }
    for (;;) {
      let ev: SmtpEvent | null;
      switch (c.mode) {
        case "connect":
          return c.decide({ type: "connect" });
        case "command":
          ev = readCommand(c);
          break;
        case "discard-line":
          ev = discardLine(c);
          break;
        case "sasl":
        case "sasl-failed":
          ev = readCommand(c);
          break;
        case "data":
          ev = readDataBody(c);
          break;
        case "bdat":
          ev = readChunk(c);
          break;
        case "tls":
          return NEED_DATA;
        case "closed":
          return { type: "close", reason: c.closeReason ?? "eof" };
        default:
          return assertNever(c.mode);
      }
      const q = c.queue;
      if (q !== null && q.length > 0) {
        if (ev !== null) q.push(ev);
        return q.shift()!;
      }
      if (ev === NEED_DATA && c.pos < c.buf.length) keepRest(c);
      if (ev !== null) return ev;
    }
  }
}

/**
 * Copies the bytes received and not consumed yet (a line without its CRLF
 * so far, a CR whose LF may follow) out of the chunk they came in: the
 * shim may read into that chunk's memory again once the engine asks for
 * data (see `Connection`'s ownership rule). Short: a line is at most
 * `maxLineLength`.
 */
function keepRest(c: EngineCore): void {
  // A copy (a Buffer's slice() would be a view).
  c.buf = new Uint8Array(c.buf.subarray(c.pos));
  c.pos = 0;
}

/** When the command line in progress times out (commandTimeout). */
function commandDeadline(c: EngineCore): number {
  switch (c.mode) {
    case "command":
    case "sasl":
    case "sasl-failed":
      // Only while part of a line waits for its CRLF.
      return c.pos < c.buf.length
        ? c.lineStarted + c.options.commandTimeout
        : Infinity;
    case "discard-line":
      return c.lineStarted + c.options.commandTimeout;
    case "connect":
    case "data":
    case "bdat": // chunk bytes are body: dataTimeout covers them
    case "tls":
    case "closed":
      return Infinity;
    default:
      return assertNever(c.mode);
  }
}

// ----------------------------------------------------------------- body

/** Reads DATA body bytes with the DATA reader, up to the message's end. */
function readDataBody(c: EngineCore): SmtpEvent | null {
  const reader = c.dataReader!;
  const ev = readData(c, reader);
  if (!reader.ended) return ev;
  return messageEnd(c);
}

/** The body ended: its refusal, or the message-end decision. */
function messageEnd(c: EngineCore): SmtpEvent | null {
  c.mode = "command";
  const tx = c.tx!;
  const body = tx.body!;
  const aborted = body.aborted;
  if (aborted !== null) {
    const reply = formatReply(
      aborted.code,
      aborted.enhancedCode,
      aborted.message,
    );
    // LMTP: every accepted recipient gets the refusal.
    c.write(c.perRecipient(reply));
    c.resetTransaction(false);
    return null;
  }
  body.open = false;
  // The transaction's own array, not a copy: it takes no recipient from
  // now on (none is read while the decision is pending, and the
  // transaction ends with it; the next one has a new array).
  return c.decide({
    type: "message-end",
    size: body.size,
    recipients: tx.recipients,
  });
}

/**
 * Reads the octets of a BDAT chunk: with the transaction's BDAT reader
 * when it is accepted, else dropped.
 */
function readChunk(c: EngineCore): SmtpEvent | null {
  const skipped = c.skipped;
  if (skipped !== null) {
    c.pos = skipped.skip(c.buf, c.pos);
    if (skipped.left > 0) return NEED_DATA;
    c.skipped = null;
    c.mode = "command";
    c.write(skipped.reply);
    return null;
  }
  const reader = c.tx!.bdat!;
  const ev = reader.read(c.buf, c.pos);
  c.pos = reader.pos;
  return reader.chunkEnded ? chunkEnd(c, reader) : ev;
}

/** The last octet of an accepted chunk was read: its reply, or the message's end. */
function chunkEnd(c: EngineCore, reader: BdatReader): SmtpEvent | null {
  c.mode = "command";
  reader.finishChunk();
  const tx = c.tx!;
  const last = reader.chunkLast;
  if (tx.body!.tooLarge) {
    // Normalized line endings took the body past maxMessageSize.
    const reply = formatReply(552, "5.3.4", TOO_LARGE);
    const lmtp = c.options.lmtp;
    const owed = tx.recipients.length;
    c.write(perRecipient(reply, last && lmtp, owed));
    c.resetTransaction(false);
    if (lmtp && !last) c.owedReplies = owed;
    return null;
  }
  if (!last) {
    // A refused body (bare line ending) still gets its refusal only
    // after the LAST chunk.
    c.ok(
      formatReply(250, "2.0.0", `${reader.chunkSize} octets received`),
    );
    return null;
  }
  return messageEnd(c);
}

/**
 * Where the next `size` bytes go in the slab: at its end, or at the start
 * of a new slab when this one has no room left for them.
 */
function slabRoom(size: number): number {
  if (slabAt + size > SLAB_SIZE) {
    slab = new Uint8Array(SLAB_SIZE);
    slabAt = 0;
  }
  return slabAt;
}

/** The fixed part of the reply to a message taken (SmtpEngine.acceptQueued). */
const QUEUED = "250 2.0.0 OK ";
const QUEUED_BYTES = ENCODER.encode(QUEUED);

/**
 * `QUEUED + id + "\r\n"` as bytes in the slab, or null when `id` is not
 * plain (empty, too long, a space, a control or a non-ASCII character:
 * formatReply's work then). A loop rather than set() and encodeInto():
 * two calls into native code per message cost more than 20 characters.
 */
function queuedBytes(id: string): Uint8Array | null {
  const n = id.length;
  if (n === 0 || n > 200) return null;
  const head = QUEUED_BYTES;
  const start = slabRoom(head.length + n + 2);
  const s = slab;
  let at = start;
  for (let i = 0; i < head.length; i++) s[at++] = head[i];
  for (let i = 0; i < n; i++) {
    const ch = id.charCodeAt(i);
    if (ch <= 0x20 || ch >= 0x7f) return null; // nothing taken of the slab
    s[at++] = ch;
  }
  s[at++] = 13;
  s[at++] = 10;
  slabAt = at;
  return s.subarray(start, at);
}

/**
 * Replies as bytes (UTF-8) in the slab. `encodeInto` rather than a loop
 * over the characters: that loop, run for every reply of every session,
 * was the one function JavaScriptCore compiled with its top tier (FTL)
 * while a thousand sessions opened, a one-off 2-5 MB of RSS on Bun.
 */
function encodeReply(s: string): Uint8Array {
  const n = s.length;
  if (n > SLAB_MAX) return ENCODER.encode(s);
  const start = slabRoom(3 * n);
  const { written } = ENCODER.encodeInto(s, slab.subarray(start));
  slabAt = start + written;
  return slab.subarray(start, slabAt);
}
