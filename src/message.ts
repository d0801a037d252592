/**
 * A received message: the envelope, and the body as a stream with
 * backpressure. Nothing is buffered or parsed unless asked.
 *
 * @module
 */

import type { Email } from "postal-mime";
import type { Mailbox } from "./address.ts";
import type { MailParams, Recipient } from "./engine.ts";
import type { Session } from "./session.ts";

/** How many body bytes may wait in `raw` before reading from the client pauses. */
const HIGH_WATER_MARK = 256 * 1024;

/**
 * A message being received. The hook (or the `for await` loop) gets it as
 * soon as DATA starts; `raw` streams the body while it arrives.
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
  /** The body (headers and content, dot-unstuffed, CRLF line ends) as it arrives. */
  readonly raw: ReadableStream<Uint8Array>;
  /** Bytes of body received so far; the full size once `raw` has ended. */
  readonly size: number;
  /** Reads the whole body into one array. */
  bytes(): Promise<Uint8Array>;
  /** Reads the whole body and decodes it as UTF-8. */
  text(): Promise<string>;
  /** Reads and parses the body with postal-mime (loaded on first use). */
  parse(): Promise<Email>;
}

/** The driver's side of a {@link Message}: feeds the body in. */
export class IncomingMessage implements Message {
  readonly id: string;
  readonly from: string;
  readonly to: readonly string[];
  readonly mailFrom: { mailbox: Mailbox; params: MailParams };
  readonly recipients: readonly Recipient[];
  readonly session: Session;
  readonly raw: ReadableStream<Uint8Array>;

  #size = 0;
  #controller!: ReadableStreamDefaultController<Uint8Array>;
  #waiter: (() => void) | null = null;
  #done = false; // ended, aborted, or nobody reads any more
  #bytes: Promise<Uint8Array> | null = null;

  constructor(
    id: string,
    mailFrom: { mailbox: Mailbox; params: MailParams },
    recipients: readonly Recipient[],
    session: Session,
  ) {
    this.id = id;
    this.mailFrom = mailFrom;
    this.from = mailFrom.mailbox.address;
    this.recipients = recipients;
    this.to = recipients.map((r) => r.mailbox.address);
    this.session = session;
    this.raw = new ReadableStream<Uint8Array>(
      {
        start: (c) => {
          this.#controller = c;
        },
        pull: () => this.#wake(),
        cancel: () => {
          // The reader is done with the body: the stream is closed, and
          // end() or abort() must not touch the controller again (close()
          // on a cancelled stream throws, which killed the connection).
          this.#closedStream = true;
          this.#done = true;
          this.#wake();
        },
      },
      { highWaterMark: HIGH_WATER_MARK, size: (c) => c.byteLength },
    );
  }

  get size(): number {
    return this.#size;
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = null;
    w?.();
  }

  /**
   * Adds body bytes. Returns a promise when the reader is behind (resolve it
   * before pushing more), else `undefined`.
   */
  push(chunk: Uint8Array): Promise<void> | undefined {
    this.#size += chunk.byteLength;
    if (this.#done) return undefined;
    this.#controller.enqueue(chunk);
    if ((this.#controller.desiredSize ?? 1) > 0) return undefined;
    return new Promise((resolve) => {
      this.#waiter = resolve;
    });
  }

  /** Nobody will read further (the hook finished): drop what comes next. */
  drain(): void {
    this.#done = true;
    this.#wake();
  }

  /** The body ended normally. */
  end(): void {
    if (this.#closedStream) return;
    this.#closedStream = true;
    this.#done = true;
    this.#controller.close();
    this.#wake();
  }

  /** The body will not complete (refused, timeout, disconnect). */
  abort(reason: Error): void {
    if (this.#closedStream) return;
    this.#closedStream = true;
    this.#done = true;
    this.#controller.error(reason);
    this.#wake();
  }
  #closedStream = false;

  bytes(): Promise<Uint8Array> {
    this.#bytes ??= (async () => {
      const parts: Uint8Array[] = [];
      let total = 0;
      const reader = this.raw.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        parts.push(value);
        total += value.byteLength;
      }
      if (parts.length === 1) return parts[0];
      const out = new Uint8Array(total);
      let at = 0;
      for (const p of parts) {
        out.set(p, at);
        at += p.byteLength;
      }
      return out;
    })();
    return this.#bytes;
  }

  async text(): Promise<string> {
    return new TextDecoder().decode(await this.bytes());
  }

  async parse(): Promise<Email> {
    const [{ default: PostalMime }, body] = await Promise.all([
      import("postal-mime"),
      this.bytes(),
    ]);
    return PostalMime.parse(body);
  }
}
