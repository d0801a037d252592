/**
 * The DATA body reader (RFC 5321 §4.5.2): dot-unstuffing, the CRLF.CRLF
 * terminator, and the bareLineEnding policy; it owns its framing state
 * (whether the next byte starts a line).
 *
 * @module
 */

import { SmtpError } from "../errors.ts";
import { type Body, NEED_DATA } from "./body.ts";
import { CRLF_BYTES, type TextScanner } from "./scanner.ts";
import type { SmtpEvent } from "./types.ts";

// Byte values as module-local constants, not imported: V8 folds a local
// const into the code, while an import (or an export) is a load from a
// module cell in the hot loops (the DATA reader scanned 1 MB bodies about
// 10% slower with them imported).
const CR = 13;
const LF = 10;
const DOT = 46;

/**
 * Reads one DATA body from the bytes at hand, as `data` events (views, no
 * copy) up to the terminator.
 *
 * @example
 * ```ts
 * import { Body } from "./body.ts";
 * import { DataReader } from "./body_data.ts";
 * import { TextScanner } from "./scanner.ts";
 * import type { SmtpEvent } from "./types.ts";
 *
 * const events: SmtpEvent[] = [];
 * const body = new Body("DATA", events, 1000, false);
 * const reader = new DataReader(body, new TextScanner(), events);
 * const ev = reader.read(new TextEncoder().encode("Hi\r\n.\r\n"), 0);
 * // ev === null, events: [{ type: "data", ... }], reader.ended === true
 * ```
 */
export class DataReader {
  /** Where reading stopped in the bytes last given to {@link DataReader.read}. */
  pos = 0;
  /** The terminator was read: the body is complete (or refused). */
  ended = false;
  /** The next body byte starts a line (after CRLF). */
  #lineStart = true;
  readonly #body: Body;
  /** Finds line ends (the engine's, shared with the BDAT reader). */
  readonly #text: TextScanner;
  readonly #events: SmtpEvent[];

  /**
   * @param body the body the bytes go to
   * @param text the engine's scanner
   * @param events the engine's event queue
   */
  constructor(body: Body, text: TextScanner, events: SmtpEvent[]) {
    this.#body = body;
    this.#text = text;
    this.#events = events;
  }

  /**
   * Reads body bytes: returns one `data` event with as many whole lines as
   * can be handed out as one view, or the end of the message.
   *
   * Line ends are found by a TextScanner, which tests four bytes at once
   * (one 32-bit load) and passes over ordinary CRLFs itself: faster than a
   * byte loop and than two indexOf() calls per line (one for LF, one for
   * CR) on every runtime, and than a return to this loop at every line.
   *
   * Reads from `buf` at `p`; {@link DataReader.pos} says where it stopped,
   * {@link DataReader.ended} whether the terminator was read. Returns an
   * event, `need-data`, or null when events were queued.
   */
  read(buf: Uint8Array, p: number): SmtpEvent | null {
    const len = buf.length;
    const body = this.#body;
    let spanStart = p;
    let lineStart = this.#lineStart;
    const text = this.#text;
    for (;;) {
      if (lineStart) {
        if (p >= len) break;
        if (buf[p] === DOT) {
          // ".\r\n" ends the message; "." + anything else is dot-stuffing.
          if (p + 1 >= len || (buf[p + 1] === CR && p + 2 >= len)) break;
          if (buf[p + 1] === CR && buf[p + 2] === LF) {
            this.#lineStart = true;
            const ev = body.emit(buf, spanStart, p);
            this.pos = p + 3;
            if (ev !== null) this.#events.push(ev);
            this.ended = true;
            return null;
          }
          const ev = body.emit(buf, spanStart, p);
          p += 1; // drop the stuffed dot
          spanStart = p;
          lineStart = false;
          if (ev !== null) {
            this.#lineStart = false;
            this.pos = p;
            return ev;
          }
          continue;
        }
        lineStart = false;
      }
      // The next CR or LF that is not an ordinary line break (the
      // TextScanner passes over the bytes above CR a word at a time, and
      // over CRLFs not followed by a dot).
      const q = text.next(buf, p, len, true);
      if (q + 1 < len && buf[q] === CR && buf[q + 1] === LF) {
        p = q + 2;
        lineStart = true;
        continue;
      }
      this.#lineStart = false;
      if (q >= len || (q === len - 1 && buf[q] === CR)) {
        // An incomplete line: hand out all but a trailing CR (its LF may
        // come with the next chunk).
        const ev = body.emit(buf, spanStart, q);
        this.pos = q;
        return ev ?? NEED_DATA;
      }
      // A bare CR (not followed by LF) or a bare LF (not preceded by CR:
      // the scan would have stopped at the CR).
      const bareCR = buf[q] === CR;
      if (body.aborted !== null) {
        // Already refused: keep looking for the end of the body.
        body.size += q + 1 - spanStart;
        p = spanStart = q + 1;
        continue;
      }
      // Hand out the bytes before the bare character, then either a CRLF
      // in its place (normalize) or the refusal (reject).
      const ev = body.emit(buf, spanStart, q);
      if (ev !== null) this.#events.push(ev);
      if (body.normalize) {
        const fixed = body.emit(CRLF_BYTES.slice(), 0, 2); // a copy: the app may write into chunks
        if (fixed !== null) this.#events.push(fixed);
      } else if (body.aborted === null) {
        const what = bareCR ? "CR" : "LF";
        body.abort(
          new SmtpError(
            550,
            "5.6.0",
            `Message refused: bare ${what} in body (RFC 5321 section 2.3.8)`,
          ),
        );
      }
      // Only a real CRLF may start a line (and so a terminator).
      this.pos = q + 1;
      return null;
    }
    this.#lineStart = lineStart;
    const ev = body.emit(buf, spanStart, p);
    this.pos = p;
    return ev ?? NEED_DATA;
  }
}
