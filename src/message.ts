/**
 * A received message: the envelope, and the body as a stream with
 * backpressure. Nothing is buffered or parsed unless asked.
 *
 * @module
 */

import { type Email as PostalMimeEmail, PostalMime } from "./email.ts";
import type { Mailbox } from "./address.ts";
import type { BodyType, MailParams, Recipient } from "./engine.ts";
import type { SmtpError } from "./errors.ts";
import type { Session } from "./session.ts";
import type { MilterResult } from "./milter/options.ts";
import { LENT_BODY, type LentBody } from "./lent_body.ts";

/**
 * A message as postal-mime parses it (`message.parse()`): headers,
 * addresses, subject, text and HTML bodies, attachments. Named here so that
 * applications can type their code without installing postal-mime.
 *
 * @example
 * ```ts
 * import type { Email } from "@smtpd/smtpd";
 *
 * function summary(email: Email): string {
 *   return `${email.from?.address ?? "?"}: ${email.subject ?? "(no subject)"}`;
 * }
 * ```
 */
export type Email = PostalMimeEmail;

/** How many body bytes may wait in `raw` before reading from the client pauses. */
const HIGH_WATER_MARK = 256 * 1024;

/**
 * A message being received. The hook (or the `for await` loop) gets it as
 * soon as its body begins to arrive; `raw` streams the body while it
 * arrives.
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd";
 *
 * await serve({
 *   port: 0,
 *   async onMessage(message) {
 *     const email = await message.parse();
 *     console.log(message.from, message.to, email.subject, message.size);
 *   },
 * });
 * ```
 */
export interface Message {
  /** A unique id for logs and replies. */
  readonly id: string;
  /** The envelope sender (MAIL FROM); `""` for the null reverse-path `<>`. */
  readonly from: string;
  /** The accepted envelope recipients (RCPT TO), in order. */
  readonly to: readonly string[];
  /** The sender as parsed, with its MAIL parameters. */
  readonly mailFrom: { mailbox: Mailbox; params: MailParams };
  /** The recipients as parsed, with their RCPT parameters. */
  readonly recipients: readonly Recipient[];
  /** The session the message came in on. */
  readonly session: Session;
  /**
   * The body (headers and content) as it arrives: dot-unstuffed after
   * DATA, exactly as sent after BDAT (a `BINARYMIME` body may hold any
   * octet, bare CR and LF included).
   *
   * A byte stream (`type: "bytes"`), read either way:
   *
   * - a default reader (`getReader()`, `for await`, `new Response(raw)`)
   *   gets chunks that are the application's to keep, which the server
   *   never writes into again: each a copy made for it, or (on Bun, whose
   *   reads are fresh arrays) the received bytes themselves, the server
   *   having let go of their memory (their `buffer` may then hold a few
   *   bytes around the chunk, such as the terminating `.`);
   * - a BYOB reader (`getReader({ mode: "byob" })`) gets the body copied
   *   straight from the server's read buffer into the application's own
   *   buffer, with no memory allocated per chunk: the way to take a large
   *   body with the least garbage (on Node and Deno a 100 MB message then
   *   raises the process's RSS by a few MB, where chunks of its own raise
   *   it by tens of MB until the garbage collector catches up).
   *
   * While the application does not read, the server stops reading from
   * the client (after up to 256 KiB queued for a default reader).
   */
  readonly raw: ReadableStream<Uint8Array>;
  /**
   * The body type the sender declared with `MAIL FROM ... BODY=`:
   * `"7BIT"` (none declared), `"8BITMIME"` or `"BINARYMIME"` (RFC 3030,
   * sent with BDAT only).
   */
  readonly bodyType: BodyType;
  /** How the body came: `"DATA"`, or `"BDAT"` chunks (CHUNKING, RFC 3030). */
  readonly command: "DATA" | "BDAT";
  /**
   * LMTP only (`serve({ lmtp: true })`): refuses the message for one
   * recipient, who gets `error` as its reply after the body, while the
   * others are accepted (RFC 2033 §4.2: one reply per recipient). The
   * recipient is an address of `to` (every recipient with that address,
   * compared without regard to case) or an index into `to`.
   *
   * Call it while the message is being handled: before `onMessage`
   * resolves, or before the `for await` loop asks for the next message.
   * Resolving (or moving on) then accepts every recipient not refused;
   * throwing an error (or `reject()` in the loop) still answers every
   * recipient with that one error, whatever was refused here.
   *
   * Throws a `TypeError` in SMTP mode (one reply per message there: throw
   * from `onMessage` instead), for an address or index that is not a
   * recipient, or for an error that is not an {@link SmtpError}; throws an
   * `Error` once the message has been answered.
   *
   * @param recipient an address of `to`, or its index in `to`
   * @param error the reply this recipient gets
   *
   * @example
   * ```ts
   * import { serve, SmtpError } from "@smtpd/smtpd";
   *
   * declare function quotaLeft(address: string): Promise<number>;
   * declare function store(address: string, body: Uint8Array): Promise<void>;
   *
   * await serve({
   *   lmtp: true,
   *   path: "/run/smtpd/lmtp.sock",
   *   async onMessage(message) {
   *     const body = await message.bytes();
   *     for (const address of message.to) {
   *       if ((await quotaLeft(address)) < body.length) {
   *         message.rejectRecipient(address, new SmtpError(452, "4.2.2", "Mailbox full"));
   *       } else {
   *         await store(address, body);
   *       }
   *     }
   *   },
   * });
   * ```
   */
  rejectRecipient(recipient: string | number, error: SmtpError): void;
  /** Bytes of body received so far; the full size once `raw` has ended. */
  readonly size: number;
  /** Reads the whole body into one array. */
  bytes(): Promise<Uint8Array>;
  /** Reads the whole body and decodes it as UTF-8. */
  text(): Promise<string>;
  /** Reads and parses the body with postal-mime (loaded on first use). */
  parse(): Promise<Email>;
  /**
   * Aborted when the server gives up on the message: the hook (or the
   * `for await` loop body) ran past `hookTimeout`, the client left or the
   * body failed, or the server was shut down. The sender then gets (or
   * got) a failure reply and will send the message again, so the
   * application must not keep this copy: pass the signal to the calls that
   * store or forward it, and check `signal.aborted` before committing. The
   * reason is the `SmtpError` the sender was given, or the body's
   * error.
   */
  readonly signal: AbortSignal;
  /**
   * With `milters`: what each filter made of the message, in the order of
   * the option (its verdict, the modifications applied to this message,
   * the header fields it added such as `Authentication-Results` or
   * `X-Spam-Status`, its quarantine reason); `undefined` without filters.
   *
   * @example
   * ```ts
   * import { serve } from "@smtpd/smtpd";
   *
   * await serve({
   *   port: 2525,
   *   milters: [{ address: "inet:11332@127.0.0.1" }],
   *   onMessage(message) {
   *     for (const r of message.milter ?? []) {
   *       console.log(r.address, r.verdict.action, r.addedHeaders, r.quarantine);
   *     }
   *   },
   * });
   * ```
   */
  readonly milter?: readonly MilterResult[];
}

/**
 * The driver's side of a {@link Message}: feeds the body in.
 *
 * `raw` is created on first use: a `ReadableStream` per message is the
 * costliest object of a small message (about 29 µs on Node 20), and a hook
 * that calls `bytes()`, `text()` or `parse()` (or does not read the body)
 * never needs one. Until then the body waits in a queue bounded like the
 * stream's, with the same backpressure: `push()` asks the driver to wait
 * once HIGH_WATER_MARK bytes are queued and nobody reads.
 */
export class IncomingMessage implements Message {
  readonly id: string;
  readonly from: string;
  readonly to: readonly string[];
  readonly mailFrom: { mailbox: Mailbox; params: MailParams };
  readonly recipients: readonly Recipient[];
  readonly session: Session;
  readonly bodyType: BodyType;
  readonly command: "DATA" | "BDAT";
  /** Set by the milter filters (see {@link Message.milter}). */
  milter?: readonly MilterResult[];

  #size = 0;
  /** LMTP: one entry per recipient (null: not refused); null in SMTP mode. */
  #recipientErrors: (SmtpError | null)[] | null;
  #answered = false;
  #stream: ReadableStream<Uint8Array> | null = null;
  /** The stream's controller while it takes chunks (null once closed, errored or cancelled). */
  #controller: ReadableByteStreamController | null = null;
  /**
   * The part of the driver's chunk that the stream's reader has not taken
   * yet: lent (a view of the read buffer), so the driver waits until it
   * has been taken (see `push()`).
   */
  #lent: Uint8Array | null = null;
  /** A default reader asked (it gets copies, queued up to HIGH_WATER_MARK). */
  #copies = false;
  /**
   * Chunks received before anyone read (no stream yet, no bytes() yet):
   * copies, or owned chunks (see push()).
   */
  #queue: Uint8Array<ArrayBuffer>[] | null = null;
  #queued = 0;
  /** bytes() without a stream: the chunks so far, and how it settles. */
  #collector: Collector | null = null;
  #waiter: (() => void) | null = null;
  #done = false; // ended, aborted, or nobody reads any more
  #state: "open" | "ended" | "aborted" = "open";
  #reason: Error | null = null;
  #bytes: Promise<Uint8Array> | null = null;
  /** The body taken as a {@link LentBody} (see `[LENT_BODY]()`), else null. */
  #taker: Taker | null = null;
  /** Made on first use of `signal` (most hooks never look). */
  #abort: AbortController | null = null;
  #givenUp: Error | null = null;

  constructor(
    id: string,
    mailFrom: { mailbox: Mailbox; params: MailParams },
    recipients: readonly Recipient[],
    session: Session,
    kind: {
      bodyType: BodyType;
      command: "DATA" | "BDAT";
      lmtp: boolean;
    } = { bodyType: "7BIT", command: "DATA", lmtp: false },
  ) {
    this.id = id;
    this.bodyType = kind.bodyType;
    this.command = kind.command;
    this.#recipientErrors = kind.lmtp ? recipients.map(() => null) : null;
    this.mailFrom = mailFrom;
    this.from = mailFrom.mailbox.address;
    this.recipients = recipients;
    // A loop, not map(): JavaScriptCore's map() is a builtin written in
    // JavaScript, with a callback per recipient (about 1 µs per message).
    const to: string[] = [];
    for (let i = 0; i < recipients.length; i++) {
      to.push(recipients[i].mailbox.address);
    }
    this.to = to;
    this.session = session;
  }

  rejectRecipient(recipient: string | number, error: SmtpError): void {
    const errors = this.#recipientErrors;
    if (errors === null) {
      throw new TypeError(
        "Cannot reject one recipient: not an LMTP server (throw from onMessage to refuse the message)",
      );
    }
    if (
      typeof error !== "object" || error === null ||
      typeof (error as SmtpError).code !== "number" ||
      typeof (error as SmtpError).enhancedCode !== "string"
    ) {
      throw new TypeError(
        "Cannot reject recipient: error is not an SmtpError",
      );
    }
    if (this.#answered) {
      throw new Error(
        "Cannot reject recipient: the message has already been answered",
      );
    }
    if (typeof recipient === "number") {
      if (
        !Number.isInteger(recipient) || recipient < 0 ||
        recipient >= errors.length
      ) {
        throw new TypeError(
          `Cannot reject recipient: index ${recipient} is not in 0..${
            errors.length - 1
          }`,
        );
      }
      errors[recipient] = error;
      return;
    }
    if (typeof recipient !== "string") {
      throw new TypeError(
        "Cannot reject recipient: value is not an address or an index",
      );
    }
    const wanted = recipient.toLowerCase();
    let found = false;
    for (let i = 0; i < this.to.length; i++) {
      if (this.to[i].toLowerCase() === wanted) {
        errors[i] = error;
        found = true;
      }
    }
    if (!found) {
      throw new TypeError(
        `Cannot reject recipient: ${
          JSON.stringify(recipient)
        } is not a recipient of this message`,
      );
    }
  }

  /**
   * The driver answers the message: no more `rejectRecipient()`. Returns
   * the LMTP outcome per recipient (null: accepted, else its refusal), or
   * null in SMTP mode.
   */
  answer(): readonly (SmtpError | null)[] | null {
    this.#answered = true;
    return this.#recipientErrors;
  }

  /** The body as a stream (created on first use, with what arrived so far). */
  get raw(): ReadableStream<Uint8Array> {
    return this.#stream ??= this.#openStream();
  }

  get size(): number {
    return this.#size;
  }

  get signal(): AbortSignal {
    if (this.#abort === null) {
      this.#abort = new AbortController();
      if (this.#givenUp !== null) this.#abort.abort(this.#givenUp);
    }
    return this.#abort.signal;
  }

  /** Whether the server gave up on the message (see `signal`). */
  get givenUp(): boolean {
    return this.#givenUp !== null;
  }

  /**
   * The server gave up on the message: the sender gets (or got) `reason`
   * and will retry. Aborts `signal`; the body, if complete, stays readable.
   */
  giveUp(reason: Error): void {
    if (this.#givenUp !== null) return;
    this.#givenUp = reason;
    this.#abort?.abort(reason);
  }

  #openStream(): ReadableStream<Uint8Array> {
    if (this.#taker !== null) return takenStream(this.#taker);
    // One source object with shared methods, not three closures per stream.
    // No strategy: a byte stream's highWaterMark is 0 by default.
    const stream = new ReadableStream(
      new IncomingMessage.#Source(this),
    ) as ReadableStream<Uint8Array>;
    // bytes() already takes the body: the stream is locked, as it was
    // when bytes() read it through a reader.
    if (this.#bytes !== null) stream.getReader();
    return stream;
  }

  /** `raw`'s underlying source: the message's own methods, called by the stream. */
  static readonly #Source = class BodySource implements UnderlyingByteSource {
    readonly type = "bytes";
    readonly msg: IncomingMessage;
    constructor(msg: IncomingMessage) {
      this.msg = msg;
    }
    start(c: ReadableByteStreamController): void {
      this.msg.#start(c);
    }
    pull(c: ReadableByteStreamController): void {
      this.msg.#pull(c);
    }
    cancel(): void {
      this.msg.#cancel();
    }
  };

  /** The stream starts (in its constructor): it takes what arrived so far. */
  #start(c: ReadableByteStreamController): void {
    const queue = this.#queue;
    this.#queue = null;
    this.#queued = 0;
    // bytes() already takes the body (see #openStream()).
    if (this.#bytes !== null) return;
    // Copies or owned chunks (see push()): the stream may take them over.
    if (queue !== null) { for (const chunk of queue) c.enqueue(chunk); }
    if (this.#state === "ended") c.close();
    else if (this.#state === "aborted") c.error(this.#reason);
    else this.#controller = c;
  }

  /**
   * The reader is done with the body: end() or abort() must not touch the
   * controller again (close() on a cancelled stream throws, which killed
   * the connection).
   */
  #cancel(): void {
    this.#controller = null;
    this.#lent = null;
    this.#done = true;
    this.#wake();
  }

  /**
   * A reader asks for more: a BYOB reader gets the lent chunk copied into
   * its buffer, a default reader a copy of it; with nothing lent, the
   * driver may push again.
   */
  #pull(c: ReadableByteStreamController): void {
    const request = c.byobRequest;
    if (request === null) this.#copies = true;
    const lent = this.#lent;
    if (lent !== null) {
      if (request !== null) {
        const rest = fill(request, lent);
        this.#lent = rest.byteLength > 0 ? rest : null;
      } else {
        this.#lent = null;
        c.enqueue(new Uint8Array(lent));
      }
      if (this.#lent !== null) return;
    }
    this.#wake();
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = null;
    w?.();
  }

  #behind(): Promise<void> {
    return new Promise((resolve) => {
      this.#waiter = resolve;
    });
  }

  /**
   * Adds body bytes. Returns a promise when the reader is behind (resolve it
   * before pushing more), else `undefined`.
   *
   * `chunk` is lent (a view of the connection's read buffer): it stays
   * valid until the returned promise resolves (the driver reads nothing
   * meanwhile), or until `push()` returns `undefined`. What is kept past
   * that is a copy: for a default reader, the queue, `bytes()`; a BYOB
   * reader takes the bytes straight into its buffer. Copies are made with
   * `new Uint8Array(chunk)`: a runtime's Buffer `slice()` is a view, and
   * a view enqueued in a byte stream would detach the read buffer.
   *
   * `owned`: `chunk` is not lent but given, with the whole `ArrayBuffer`
   * it views, which nothing else uses any more (see `OWNED_CHUNKS` in
   * shim_kit.ts): a default reader then gets it as it is, the stream taking
   * over its memory, instead of a copy.
   */
  push(chunk: Uint8Array, owned = false): Promise<void> | undefined {
    this.#size += chunk.byteLength;
    if (this.#done || chunk.byteLength === 0) return undefined;
    const c = this.#controller;
    if (c !== null) {
      const request = c.byobRequest;
      if (request !== null) {
        chunk = fill(request, chunk);
        if (chunk.byteLength === 0) return undefined;
      }
      const queued = -(c.desiredSize ?? 0);
      if (this.#copies && queued < HIGH_WATER_MARK) {
        // Read before enqueue(), which detaches an owned chunk.
        const n = chunk.byteLength;
        c.enqueue(
          owned ? chunk as Uint8Array<ArrayBuffer> : new Uint8Array(chunk),
        );
        return queued + n < HIGH_WATER_MARK ? undefined : this.#behind();
      }
      // No reader waiting (or a BYOB one behind): the driver waits until
      // a read takes the chunk.
      this.#lent = chunk;
      return this.#behind();
    }
    const taker = this.#taker;
    if (taker !== null) {
      // Lent to the LentBody's reader until it asks for the next part.
      this.#lent = chunk;
      const w = taker.waiting;
      if (w !== null) {
        taker.waiting = null;
        taker.handed = true;
        w.resolve(chunk);
      }
      return this.#behind();
    }
    if (this.#collector !== null) {
      this.#collector.parts.push(new Uint8Array(chunk));
      return undefined;
    }
    if (this.#stream !== null) return undefined; // a stream that takes no more
    // Kept: a copy, or an owned chunk itself (as a default reader gets it).
    (this.#queue ??= []).push(
      owned ? chunk as Uint8Array<ArrayBuffer> : new Uint8Array(chunk),
    );
    this.#queued += chunk.byteLength;
    return this.#queued < HIGH_WATER_MARK ? undefined : this.#behind();
  }

  /** Nobody will read further (the hook finished): drop what comes next. */
  drain(): void {
    this.#done = true;
    this.#lent = null;
    this.#wake();
  }

  /** The body ended normally. */
  end(): void {
    if (this.#state !== "open") return;
    this.#state = "ended";
    this.#done = true;
    this.#lent = null;
    const c = this.#controller;
    this.#controller = null;
    if (c !== null) {
      c.close();
      // A BYOB read waiting is answered "done" (a byte stream needs it).
      c.byobRequest?.respond(0);
    }
    this.#collector?.resolve(concat(this.#collector.parts));
    if (this.#taker !== null) settleTaken(this.#taker, null);
    this.#wake();
  }

  /** The body will not complete (refused, timeout, disconnect). */
  abort(reason: Error): void {
    if (this.#state !== "open") return;
    this.#state = "aborted";
    this.#reason = reason;
    this.#done = true;
    this.#lent = null;
    const c = this.#controller;
    this.#controller = null;
    c?.error(reason);
    this.#collector?.reject(reason);
    if (this.#taker !== null) settleTaken(this.#taker, reason);
    this.#wake();
  }

  bytes(): Promise<Uint8Array> {
    this.#bytes ??= this.#stream === null && this.#taker === null
      ? this.#collect()
      : readAll(this.raw);
    return this.#bytes;
  }

  /**
   * The body as a {@link LentBody}, without a stream (Maildir delivery),
   * or `null` when it is taken already. What arrived before (copies, or
   * owned chunks) comes first; then each part the driver pushes is lent
   * until the next read.
   */
  [LENT_BODY](): LentBody | null {
    if (
      this.#stream !== null || this.#bytes !== null || this.#taker !== null
    ) return null;
    const taker: Taker = {
      queue: this.#queue,
      handed: false,
      waiting: null,
      finished: false,
      failed: null,
      controller: null,
      reader: null,
    };
    this.#taker = taker;
    this.#queue = null;
    this.#queued = 0;
    this.#wake(); // the queue is the reader's now: the driver may push again
    return {
      read: () => this.#readLent(taker),
      cancel: () => {
        taker.handed = false;
        taker.waiting = null;
        this.#cancel();
        finishTaken(taker, null);
      },
    };
  }

  #readLent(taker: Taker): Promise<Uint8Array | null> {
    const queue = taker.queue;
    if (queue !== null && this.#state !== "aborted") {
      const chunk = queue.shift();
      if (queue.length === 0) taker.queue = null;
      if (chunk !== undefined) return Promise.resolve(chunk);
    }
    if (taker.handed) {
      // The part lent last is done with: the driver may push the next.
      taker.handed = false;
      this.#lent = null;
      this.#wake();
    }
    if (this.#state === "aborted") {
      finishTaken(taker, this.#reason);
      return Promise.reject(this.#reason);
    }
    const lent = this.#lent;
    if (lent !== null) {
      taker.handed = true;
      return Promise.resolve(lent);
    }
    if (this.#state === "ended" || this.#done) {
      finishTaken(taker, null);
      return Promise.resolve(null);
    }
    return new Promise((resolve, reject) => {
      taker.waiting = { resolve, reject };
    });
  }

  /** bytes() when `raw` was never used: takes the chunks without a stream. */
  #collect(): Promise<Uint8Array> {
    const parts = this.#queue ?? [];
    this.#queue = null;
    this.#queued = 0;
    // An owned chunk's buffer may hold bytes around it: the body is one
    // array of its own.
    if (
      parts.length === 1 && parts[0].byteLength !== parts[0].buffer.byteLength
    ) {
      parts[0] = new Uint8Array(parts[0]);
    }
    if (this.#state === "ended") return Promise.resolve(concat(parts));
    if (this.#state === "aborted") return Promise.reject(this.#reason);
    return new Promise((resolve, reject) => {
      this.#collector = { parts, resolve, reject };
      this.#wake(); // a reader now: the driver may push again
    });
  }

  async text(): Promise<string> {
    return new TextDecoder().decode(await this.bytes());
  }

  async parse(): Promise<Email> {
    return PostalMime.parse(await this.bytes());
  }
}

/**
 * Copies as much of `chunk` as fits into a BYOB reader's buffer and
 * answers its read; returns the rest of `chunk`.
 */
function fill(
  request: ReadableStreamBYOBRequest,
  chunk: Uint8Array,
): Uint8Array {
  const view = request.view as Uint8Array;
  const n = Math.min(view.byteLength, chunk.byteLength);
  view.set(n === chunk.byteLength ? chunk : chunk.subarray(0, n));
  request.respond(n);
  return n === chunk.byteLength ? EMPTY : chunk.subarray(n);
}

const EMPTY = new Uint8Array(0);

/** A {@link LentBody}'s side of the message (see `[LENT_BODY]()`). */
interface Taker {
  /** Copies queued before the body was taken, handed out first. */
  queue: Uint8Array[] | null;
  /** The reader has `#lent` (the driver waits until its next read). */
  handed: boolean;
  /** A read waiting for the next part. */
  waiting: {
    resolve: (chunk: Uint8Array | null) => void;
    reject: (reason: Error) => void;
  } | null;
  /** The LentBody is done: read to the end, cancelled, or failed (`failed`). */
  finished: boolean;
  failed: Error | null;
  /** `raw` when asked for while the LentBody reads, and the reader that locks it. */
  controller: ReadableByteStreamController | null;
  reader: ReadableStreamDefaultReader<Uint8Array> | null;
}

/**
 * `raw` of a message whose body a LentBody takes: as if that had read it
 * through a reader of `raw`, locked while it reads, then closed (errored
 * if the body failed) and unlocked.
 */
function takenStream(taker: Taker): ReadableStream<Uint8Array> {
  const stream = new ReadableStream({
    type: "bytes",
    start(c: ReadableByteStreamController) {
      if (!taker.finished) taker.controller = c;
      else if (taker.failed !== null) c.error(taker.failed);
      else c.close();
    },
  });
  if (!taker.finished) taker.reader = stream.getReader();
  return stream as ReadableStream<Uint8Array>;
}

/**
 * The body ended (`failed` null) or failed: a LentBody read waiting for
 * the next part gets the end or the reason.
 */
function settleTaken(taker: Taker, failed: Error | null): void {
  const w = taker.waiting;
  if (w === null) return;
  taker.waiting = null;
  finishTaken(taker, failed);
  if (failed === null) w.resolve(null);
  else w.reject(failed);
}

/** The LentBody is done (`failed`: with that reason): see {@link takenStream}. */
function finishTaken(taker: Taker, failed: Error | null): void {
  if (taker.finished) return;
  taker.finished = true;
  taker.failed = failed;
  const c = taker.controller;
  taker.controller = null;
  if (c !== null) {
    if (failed !== null) c.error(failed);
    else c.close();
  }
  taker.reader?.releaseLock();
  taker.reader = null;
}

/** bytes() collecting without a stream. */
interface Collector {
  parts: Uint8Array[];
  resolve: (body: Uint8Array) => void;
  reject: (reason: Error) => void;
}

/** Reads a stream to its end, into one array. */
async function readAll(
  stream: ReadableStream<Uint8Array>,
): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
  }
  return concat(parts);
}

/**
 * The chunks as one array (the chunk itself when there is one).
 *
 * @example
 * ```ts
 * import { concat } from "./message.ts";
 *
 * concat([new Uint8Array([1]), new Uint8Array([2, 3])]); // Uint8Array [1, 2, 3]
 * ```
 */
export function concat(parts: readonly Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0];
  if (parts.length === 0) return new Uint8Array(0);
  let total = 0;
  for (const p of parts) total += p.byteLength;
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}
