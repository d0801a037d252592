/**
 * The DATA body reader (RFC 5321 §4.5.2): dot-unstuffing, the CRLF.CRLF
 * terminator, and the bareLineEnding policy. The reader owns its framing
 * state (whether the next byte starts a line); the loop is a function that
 * takes the engine's input and the reader.
 *
 * @module
 */

import { type Body, NEED_DATA } from "./body.ts";
import type { TextScanner } from "./scanner.ts";
import type { SmtpEvent } from "./types.ts";

/**
 * Where the bytes come from: the engine core's buffer and read position.
 *
 * @example
 * ```ts
 * import type { ByteInput } from "./body_data.ts";
 *
 * const input: ByteInput = { buf: new Uint8Array(8), pos: 0 };
 * ```
 */
export interface ByteInput {
  /** The bytes received. */
  buf: Uint8Array;
  /** Where reading goes on in `buf`; {@link readData} moves it on. */
  pos: number;
}

// Byte values as module-local constants, not imported: V8 folds a local
// const into the code, while an import (or an export) is a load from a
// module cell in the hot loops (the DATA reader scanned 1 MB bodies about
// 10% slower with them imported).
const CR = 13;
const LF = 10;
const DOT = 46;

/**
 * The state of one DATA body in transfer, read by {@link readData}.
 *
 * @example
 * ```ts
 * import { Body } from "./body.ts";
 * import { DataReader, readData } from "./body_data.ts";
 * import { TextScanner } from "./scanner.ts";
 * import type { SmtpEvent } from "./types.ts";
 *
 * const events: SmtpEvent[] = [];
 * const body = new Body("DATA", events, 1000, false);
 * const reader = new DataReader(body, new TextScanner(), events);
 * const input = { buf: new TextEncoder().encode("Hi\r\n.\r\n"), pos: 0 };
 * const ev = readData(input, reader);
 * // ev === null, events: [{ type: "data", ... }], reader.ended === true
 * ```
 */
export class DataReader {
  /** The terminator was read: the body is complete (or refused). */
  ended = false;
  /** The next body byte starts a line (after CRLF). */
  lineStart = true;
  /** The body the bytes go to. */
  readonly body: Body;
  /** Finds line ends (the engine's, shared with the BDAT reader). */
  readonly text: TextScanner;
  /** The engine's event queue. */
  readonly events: SmtpEvent[];

  /**
   * @param body the body the bytes go to
   * @param text the engine's scanner
   * @param events the engine's event queue
   */
  constructor(body: Body, text: TextScanner, events: SmtpEvent[]) {
    this.body = body;
    this.text = text;
    this.events = events;
  }
}

/**
 * Reads body bytes from `input` (at `input.pos`, which it moves on) into
 * `reader`'s body: returns one `data` event with as many whole lines as
 * can be handed out as one view, or the end of the message
 * ({@link DataReader.ended}). Returns an event, `need-data`, or null when
 * events were queued.
 *
 * Line ends are found by a TextScanner, which tests four bytes at once
 * (one 32-bit load) and passes over ordinary CRLFs itself: faster than a
 * byte loop and than two indexOf() calls per line (one for LF, one for
 * CR) on every runtime, and than a return to this loop at every line.
 *
 * A function, not a method of DataReader: a dot-stuffed line returns here
 * once per line, and V8 ran the same loop 3–8% slower on 1 MB bodies with
 * every 10th line dot-stuffed as a method of the reader (called from the
 * engine) than as a function that reads and moves the engine's position
 * itself.
 *
 * @example
 * ```ts
 * import { Body } from "./body.ts";
 * import { DataReader, readData } from "./body_data.ts";
 * import { TextScanner } from "./scanner.ts";
 * import type { SmtpEvent } from "./types.ts";
 *
 * const events: SmtpEvent[] = [];
 * const reader = new DataReader(
 *   new Body("DATA", events, 1000, false),
 *   new TextScanner(),
 *   events,
 * );
 * readData({ buf: new TextEncoder().encode("..a\r\n"), pos: 0 }, reader);
 * // a data event of ".a\r\n" (the stuffed dot dropped)
 * ```
 */
export function readData(
  input: ByteInput,
  reader: DataReader,
): SmtpEvent | null {
  const buf = input.buf;
  let p = input.pos;
  const len = buf.length;
  const body = reader.body;
  let spanStart = p;
  let lineStart = reader.lineStart;
  const text = reader.text;
  for (;;) {
    if (lineStart) {
      if (p >= len) break;
      if (buf[p] === DOT) {
        // ".\r\n" ends the message; "." + anything else is dot-stuffing.
        if (p + 1 >= len || (buf[p + 1] === CR && p + 2 >= len)) break;
        if (buf[p + 1] === CR && buf[p + 2] === LF) {
          reader.lineStart = true;
          const ev = body.emit(buf, spanStart, p);
          input.pos = p + 3;
          if (ev !== null) reader.events.push(ev);
          reader.ended = true;
          return null;
        }
        const ev = body.emit(buf, spanStart, p);
        p += 1; // drop the stuffed dot
        spanStart = p;
        lineStart = false;
        if (ev !== null) {
          reader.lineStart = false;
          input.pos = p;
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
    reader.lineStart = false;
    if (q >= len || (q === len - 1 && buf[q] === CR)) {
      // An incomplete line: hand out all but a trailing CR (its LF may
      // come with the next chunk).
      const ev = body.emit(buf, spanStart, q);
      input.pos = q;
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
    body.queueEmit(buf, spanStart, q);
    body.bareLineEnding(bareCR);
    // Only a real CRLF may start a line (and so a terminator).
    input.pos = q + 1;
    return null;
  }
  reader.lineStart = lineStart;
  const ev = body.emit(buf, spanStart, p);
  input.pos = p;
  return ev ?? NEED_DATA;
}
