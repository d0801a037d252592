/**
 * The BDAT body reader (RFC 3030): the octets of each accepted chunk of
 * one transaction, handed out as sent (BINARYMIME) or with the
 * bareLineEnding policy, a CRLF split between two chunks recognized as one;
 * and the reader of a refused chunk, which drops its octets. Each owns its
 * framing state.
 *
 * @module
 */

import { type Body, NEED_DATA } from "./body.ts";
import { CRLF_BYTES, type TextScanner } from "./scanner.ts";
import type { SmtpEvent } from "./types.ts";

// Byte values as module-local constants, not imported: V8 folds a local
// const into the code, while an import (or an export) is a load from a
// module cell in the hot loops (the DATA reader scanned 1 MB bodies about
// 10% slower with them imported).
const CR = 13;
const LF = 10;

/**
 * Reads the accepted chunks of one BDAT transaction.
 *
 * @example
 * ```ts
 * import { Body } from "./body.ts";
 * import { BdatReader } from "./body_bdat.ts";
 * import { TextScanner } from "./scanner.ts";
 * import type { SmtpEvent } from "./types.ts";
 *
 * const events: SmtpEvent[] = [];
 * const body = new Body("BDAT", events, 1000, false);
 * const reader = new BdatReader(body, new TextScanner(), events, false);
 * reader.startChunk(4, true);
 * reader.read(new TextEncoder().encode("Hi\r\n"), 0);
 * // events: [{ type: "data", ... }], reader.chunkEnded === true
 * ```
 */
export class BdatReader {
  /** Where reading stopped in the bytes last given to {@link BdatReader.read}. */
  pos = 0;
  /** The last octet of the current chunk was read. */
  get chunkEnded(): boolean {
    return this.#chunkLeft === 0;
  }
  /** Octets of the accepted chunks of this transaction, as sent. */
  octets = 0;
  /** The size of the current chunk. */
  chunkSize = 0;
  /** The current chunk is the LAST one. */
  chunkLast = false;
  /** Octets of the current chunk not yet read. */
  #chunkLeft = 0;
  /** A non-BINARYMIME chunk ended with a CR: the next octet decides. */
  #pendingCR = false;
  readonly #body: Body;
  /** Finds line ends (the engine's, shared with the DATA reader). */
  readonly #text: TextScanner;
  readonly #events: SmtpEvent[];
  /** The body is BINARYMIME: handed out untouched. */
  readonly #binary: boolean;

  /**
   * @param body the body the octets go to
   * @param text the engine's scanner
   * @param events the engine's event queue
   * @param binary the body is BINARYMIME
   */
  constructor(
    body: Body,
    text: TextScanner,
    events: SmtpEvent[],
    binary: boolean,
  ) {
    this.#body = body;
    this.#text = text;
    this.#events = events;
    this.#binary = binary;
  }

  /** An accepted chunk of `size` octets starts. */
  startChunk(size: number, last: boolean): void {
    this.#chunkLeft = size;
    this.chunkSize = size;
    this.chunkLast = last;
    this.octets += size;
  }

  read(buf: Uint8Array, start: number): SmtpEvent | null {
    const end = start + Math.min(buf.length - start, this.#chunkLeft);
    this.#chunkLeft -= end - start;
    this.pos = end;
    const body = this.#body;
    if (this.#binary || body.aborted !== null) {
      // Untouched (or refused already: counted, not handed out).
      const ev = body.emit(buf, start, end);
      if (this.#chunkLeft > 0) return ev ?? NEED_DATA;
      if (ev !== null) this.#events.push(ev);
      return null;
    }
    const text = this.#text;
    let p = start;
    if (this.#pendingCR && p < end) {
      this.#pendingCR = false;
      if (buf[p] === LF) {
        body.queueEmit(CRLF_BYTES.slice(), 0, 2);
        p++;
      } else body.bareLineEnding(true);
    }
    let span = p;
    for (;;) {
      // The next CR or LF that is not part of a CRLF (dots mean nothing
      // here; a CRLF split between two reads comes back, as its CR is
      // the last octet at hand).
      const q = text.next(buf, p, end, false);
      if (q >= end) break;
      if (buf[q] === CR) {
        if (q + 1 < end) {
          if (buf[q + 1] === LF) {
            p = q + 2;
            continue;
          }
        } else {
          // A CR as the last octet at hand: the next octet (in this chunk
          // or the next) decides whether it is half of a CRLF.
          body.queueEmit(buf, span, q);
          span = end;
          this.#pendingCR = true;
          break;
        }
      }
      body.queueEmit(buf, span, q);
      body.bareLineEnding(buf[q] === CR);
      p = span = q + 1;
    }
    body.queueEmit(buf, span, end);
    if (this.#chunkLeft > 0) return this.#events.length > 0 ? null : NEED_DATA;
    return null;
  }

  /** The chunk ended: after the LAST one, a CR it ended with is a bare CR. */
  finishChunk(): void {
    if (this.chunkLast && this.#pendingCR) {
      // The body ends with a bare CR.
      this.#pendingCR = false;
      this.#body.bareLineEnding(true);
    }
  }
}

/**
 * A refused BDAT chunk: its octets are read and dropped (they must never
 * run as commands), then its reply is due.
 *
 * @example
 * ```ts
 * import { SkippedChunk } from "./body_bdat.ts";
 *
 * const skipped = new SkippedChunk(10, "503 5.5.1 Send MAIL first\r\n");
 * skipped.skip(new Uint8Array(4), 0); // 4; skipped.left === 6
 * ```
 */
export class SkippedChunk {
  /** Octets of the chunk not yet read. */
  left: number;
  /** The reply, sent when the last octet is read. */
  readonly reply: string;

  /**
   * @param size the chunk size
   * @param reply the reply (formatted), sent after the chunk
   */
  constructor(size: number, reply: string) {
    this.left = size;
    this.reply = reply;
  }

  /** Drops the octets of the chunk in `buf` from `start` on: where they end. */
  skip(buf: Uint8Array, start: number): number {
    const end = start + Math.min(buf.length - start, this.left);
    this.left -= end - start;
    return end;
  }
}
