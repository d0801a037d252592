/**
 * The line-end scanner that the DATA and BDAT body readers share.
 *
 * @module
 */

// Not exported: an exported const is a load from a module cell in the hot
// loops, a local one is folded into the code (see body_data.ts).
const CR = 13;
const LF = 10;
const DOT = 46;

/** CR LF: a bare line ending normalized (copied with `slice()` for each use). */
export const CRLF_BYTES = new Uint8Array([CR, LF]);

/** Spans shorter than this are scanned byte by byte (no word view). */
const WORD_SCAN_MIN = 32;
/** 0x0e in every byte of a 32-bit word: CR + 1. */
const BELOW_CR_PLUS_1 = 0x0e0e0e0e;
/** The high bit of every byte of a 32-bit word. */
const HIGH_BITS = 0x80808080 | 0;
const EMPTY_WORDS = new Int32Array(0);

/**
 * Finds the next line end in a body that needs a look (`next`): text bytes
 * (above CR) are skipped a 32-bit word at a time, two words per step; a
 * pair with a byte at or below CR is read byte by byte from its first such
 * word, and the scan goes on past an ordinary CRLF (and other control
 * bytes) without leaving the word loop, so that a line costs no new start.
 * `(x - 0x0e0e0e0e) & ~x & 0x80808080` is non-zero exactly when some byte
 * of `x` is below 0x0e (the "has a byte less than n" test), whatever the
 * byte order. The word view covers the chunk's whole ArrayBuffer and is
 * kept for the next call on the same chunk, and released with it (one per
 * engine, so that it holds no buffer the engine does not hold already).
 */
export class TextScanner {
  /** The chunk `#words` views (all of its ArrayBuffer), or null. */
  #chunk: Uint8Array | null = null;
  #words: Int32Array = EMPTY_WORDS;

  /**
   * The index of the first CR or LF in `buf[q, end)` that is not an
   * ordinary line break, or `end`. Ordinary: a CRLF whose next byte is at
   * hand and, with `dots` (a DATA body), is not a dot. The caller handles
   * every other case (a bare CR or LF, a CRLF at the end of what is at
   * hand, a line that starts with a dot) without the scanner returning
   * at every line.
   */
  next(buf: Uint8Array, q: number, end: number, dots: boolean): number {
    if (end - q >= WORD_SCAN_MIN) {
      if (buf !== this.#chunk) {
        // Once per chunk: `buffer` is a slow getter on V8 (a call, not a
        // load), and the scanner runs once per line.
        const ab = buf.buffer;
        this.#words = new Int32Array(ab, 0, ab.byteLength >>> 2);
        this.#chunk = buf;
      }
      const off = buf.byteOffset;
      // (A run of CRLFs may keep `q` off a word's start up to `end`.)
      while (q < end && ((off + q) & 3) !== 0) {
        const b = buf[q];
        if (b <= CR) {
          if (b === LF) return q;
          if (b === CR) {
            if (!ordinaryCRLF(buf, q, end, dots)) return q;
            q += 2;
            continue;
          }
        }
        q++;
      }
      // Pairs of words; a pair with a byte at or below CR is looked at
      // byte by byte from `q` on (the bytes before `q` are passed: an
      // ordinary CRLF's LF may be the first byte of the next pair).
      const words = this.#words;
      let w = (off + q) >>> 2;
      const last = ((off + end) >>> 2) - 1; // the pair w, w + 1 ends before `end`
      while (w < last) {
        const a = words[w];
        const b = words[w + 1];
        if (
          (((a - BELOW_CR_PLUS_1) & ~a) | ((b - BELOW_CR_PLUS_1) & ~b)) &
          HIGH_BITS
        ) {
          const at = w * 4 - off;
          // From the first word with such a byte.
          const from = ((a - BELOW_CR_PLUS_1) & ~a & HIGH_BITS) ? at : at + 4;
          if (q < from) q = from;
          const stop = at + 8;
          q = scanBytes(buf, q, stop, end, dots);
          if (q < stop) return q;
        }
        w += 2;
      }
      const at = w * 4 - off;
      if (at > q) q = at;
    }
    q = scanBytes(buf, q, end, end, dots);
    return q < end ? q : end;
  }

  /** The engine let go of its chunk: so does the word view. */
  release(): void {
    this.#chunk = null;
    this.#words = EMPTY_WORDS;
  }
}

/**
 * `TextScanner.next` byte by byte over `buf[q, stop)`: the index of what
 * it returns if that is before `stop`, else where the scan goes on (`stop`,
 * or `stop + 1` after a CRLF whose LF is at `stop`).
 */
function scanBytes(
  buf: Uint8Array,
  q: number,
  stop: number,
  end: number,
  dots: boolean,
): number {
  for (; q < stop; q++) {
    const b = buf[q];
    if (b > CR) continue;
    if (b === LF) return q;
    if (b === CR) {
      if (!ordinaryCRLF(buf, q, end, dots)) return q;
      q++; // the LF
    }
  }
  return q;
}

/**
 * Whether the CR at `buf[q]` starts an ordinary line break: its LF and the
 * byte after it are at hand, and with `dots` that byte is not a dot.
 */
function ordinaryCRLF(
  buf: Uint8Array,
  q: number,
  end: number,
  dots: boolean,
): boolean {
  const after = q + 2;
  return after < end && buf[q + 1] === LF && (!dots || buf[after] !== DOT);
}
