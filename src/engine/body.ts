/**
 * The message body in transfer, shared by the DATA and the BDAT reader: its
 * size against maxMessageSize, its refusal, and the `data` and
 * `message-abort` events it queues.
 *
 * @module
 */

import { SmtpError } from "../errors.ts";
import { CRLF_BYTES } from "./scanner.ts";
import type { SmtpEvent } from "./types.ts";

/** The event that asks for more bytes (one frozen object). */
export const NEED_DATA: SmtpEvent = Object.freeze({ type: "need-data" });
/** The text of a 552 reply to a body over maxMessageSize. */
export const TOO_LARGE = "Message size exceeds fixed maximum message size";

/**
 * One message body, from `message-start` to its end or its refusal.
 *
 * @example
 * ```ts
 * import { Body } from "./body.ts";
 * import type { SmtpEvent } from "./types.ts";
 *
 * const events: SmtpEvent[] = [];
 * const body = new Body("DATA", events, 10, false);
 * body.emit(new Uint8Array(4), 0, 4); // a data event of 4 bytes
 * ```
 */
export class Body {
  /** Octets of the body so far (as handed out, or counted once refused). */
  size = 0;
  /** The refusal of the body, or null. */
  aborted: SmtpError | null = null;
  /** message-start was sent and neither message-end nor message-abort yet. */
  open = true;
  /** The body crossed maxMessageSize (a BDAT chunk then gets 552). */
  tooLarge = false;
  readonly #events: SmtpEvent[];
  readonly #max: number;
  /** bareLineEnding is "normalize" (else "reject"). */
  readonly normalize: boolean;
  /** The command that carries the body. */
  readonly command: "DATA" | "BDAT";

  /**
   * @param command the command that carries the body
   * @param events the engine's event queue
   * @param maxSize maxMessageSize
   * @param normalize a bare CR or LF becomes CRLF (else the body is refused)
   */
  constructor(
    command: "DATA" | "BDAT",
    events: SmtpEvent[],
    maxSize: number,
    normalize: boolean,
  ) {
    this.command = command;
    this.#events = events;
    this.#max = maxSize;
    this.normalize = normalize;
  }

  /**
   * A `data` event for `buf[start, end)`, or null when empty or aborted.
   * When the span crosses maxMessageSize, the bytes up to the limit are
   * queued as a last `data` event before the `message-abort`, so that what
   * the application sees does not depend on how the input was split.
   */
  emit(buf: Uint8Array, start: number, end: number): SmtpEvent | null {
    const n = end - start;
    if (n <= 0) return null;
    const room = this.#max - this.size;
    this.size += n;
    if (this.aborted !== null) return null;
    if (n > room) {
      if (room > 0) {
        this.#events.push({
          type: "data",
          chunk: buf.subarray(start, start + room),
        });
      }
      this.tooLarge = true;
      this.abort(new SmtpError(552, "5.3.4", TOO_LARGE));
      return null;
    }
    return { type: "data", chunk: buf.subarray(start, end) };
  }

  /** {@link Body.emit}, the event queued. */
  queueEmit(buf: Uint8Array, start: number, end: number): void {
    const ev = this.emit(buf, start, end);
    if (ev !== null) this.#events.push(ev);
  }

  /** Refuses the body in transfer: the application hears of it at once. */
  abort(error: SmtpError): void {
    this.aborted = error;
    this.open = false;
    this.#events.push({ type: "message-abort", error });
  }

  /** A bare CR or LF in a DATA or BDAT body: normalized to CRLF, or the message refused. */
  bareLineEnding(cr: boolean): void {
    if (this.normalize) {
      // A copy: the application may write into the chunks it gets.
      this.queueEmit(CRLF_BYTES.slice(), 0, 2);
    } else if (this.aborted === null) {
      this.abort(
        new SmtpError(
          550,
          "5.6.0",
          `Message refused: bare ${
            cr ? "CR" : "LF"
          } in body (RFC 5321 section 2.3.8)`,
        ),
      );
    }
  }
}
