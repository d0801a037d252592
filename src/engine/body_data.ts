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
  /** The body the bytes go to (the last one, once it ended). */
  body: Body;
  /** Finds line ends (the engine's, shared with the BDAT reader). */
  readonly text: TextScanner;
  /** The engine's event queue. */
  readonly events: SmtpEvent[];
  /**
   * Where the bytes around stuffed dots are joined (see {@link readData}):
   * one array per chunk, as long as the rest of the chunk at the first
   * stuffed line, that later calls on the same chunk go on filling after
   * what was handed out.
   */
  joined: Uint8Array | null = null;
  /** The chunk that `joined` is for. */
  joinedFor: Uint8Array | null = null;
  /** Where the free part of `joined` starts. */
  joinedAt = 0;

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

  /**
   * Reads the next DATA body of the session into `body`: the engine keeps
   * one reader per session rather than making one per message.
   */
  start(body: Body): void {
    this.body = body;
    this.ended = false;
    this.lineStart = true;
    this.joined = this.joinedFor = null;
    this.joinedAt = 0;
  }
}

/**
 * Reads body bytes from `input` (at `input.pos`, which it moves on) into
 * `reader`'s body: returns one `data` event with as many whole lines as
 * can be handed out at once, or the end of the message
 * ({@link DataReader.ended}). Returns an event, `need-data`, or null when
 * events were queued.
 *
 * Line ends are found by a TextScanner, which tests 16 bytes at once
 * (WebAssembly SIMD; four, a 32-bit load, without it) and passes over
 * ordinary CRLFs itself: faster than a
 * byte loop and than two indexOf() calls per line (one for LF, one for
 * CR) on every runtime, and than a return to this loop at every line.
 *
 * Dot-stuffed lines do not split the event: the bytes around the stuffed
 * dots are joined into one new array, so that the chunk still goes out as
 * one event (a view of received bytes when no line in it was stuffed).
 * Handing out one event per stuffed line cost 2.4× the CPU per MiB with
 * the default reader of `message.raw` and 4.3× with a BYOB reader (every
 * 10th line stuffed, Node 24), as each event is a read for the
 * application.
 *
 * A function, not a method of DataReader: V8 ran the same loop 3–8% slower
 * on 1 MB bodies with every 10th line dot-stuffed as a method of the
 * reader (called from the engine) than as a function that reads and moves
 * the engine's position itself.
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
  // The bytes before stuffed dots in this call, unstuffed, at
  // out[base, base + outLen): the rest of the chunk then goes out as one
  // event, not one event per dot-stuffed line (each costs the application
  // a read).
  let out: Uint8Array | null = null;
  let base = 0;
  let outLen = 0;
  for (;;) {
    if (lineStart) {
      if (p >= len) break;
      if (buf[p] === DOT) {
        // ".\r\n" ends the message; "." + anything else is dot-stuffing.
        if (p + 1 >= len || (buf[p + 1] === CR && p + 2 >= len)) break;
        if (buf[p + 1] === CR && buf[p + 2] === LF) {
          reader.lineStart = true;
          const ev = emitJoined(reader, out, base, outLen, buf, spanStart, p);
          reader.joined = reader.joinedFor = null;
          input.pos = p + 3;
          if (ev !== null) reader.events.push(ev);
          reader.ended = true;
          return null;
        }
        if (body.aborted === null) {
          if (p > spanStart) {
            if (out === null) {
              // What was handed out and the rest of the chunk fit (each
              // input byte gives at most one output byte).
              if (reader.joinedFor !== buf) {
                reader.joined = new Uint8Array(len - spanStart);
                reader.joinedFor = buf;
                reader.joinedAt = 0;
              }
              out = reader.joined!;
              base = reader.joinedAt;
            }
            out.set(buf.subarray(spanStart, p), base + outLen);
            outLen += p - spanStart;
          }
        } else {
          body.emit(buf, spanStart, p); // refused: only counted
        }
        p += 1; // drop the stuffed dot
        spanStart = p;
        lineStart = false;
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
      const ev = emitJoined(reader, out, base, outLen, buf, spanStart, q);
      reader.joined = reader.joinedFor = null; // the chunk is read
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
    const ev = emitJoined(reader, out, base, outLen, buf, spanStart, q);
    if (ev !== null) reader.events.push(ev);
    body.bareLineEnding(bareCR);
    // Only a real CRLF may start a line (and so a terminator).
    input.pos = q + 1;
    return null;
  }
  reader.lineStart = lineStart;
  const ev = emitJoined(reader, out, base, outLen, buf, spanStart, p);
  reader.joined = reader.joinedFor = null; // the chunk is read
  input.pos = p;
  return ev ?? NEED_DATA;
}

/**
 * The `data` event for `buf[start, end)`, after the `outLen` bytes at
 * `out[base]` when there are some (the span joins them there, and the
 * reader's free part of `out` starts after them).
 */
function emitJoined(
  reader: DataReader,
  out: Uint8Array | null,
  base: number,
  outLen: number,
  buf: Uint8Array,
  start: number,
  end: number,
): SmtpEvent | null {
  if (out === null) return reader.body.emit(buf, start, end);
  out.set(buf.subarray(start, end), base + outLen);
  const stop = base + outLen + end - start;
  reader.joinedAt = stop;
  return reader.body.emit(out, base, stop);
}
