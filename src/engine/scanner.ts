/**
 * The line-end scanner that the DATA and BDAT body readers share.
 *
 * @module
 */

import { SCAN_WASM } from "./scanner_wasm.ts";

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

/** The part of WebAssembly the scanner uses (a standard global). */
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => {
    exports: Record<string, unknown>;
  };
}

/**
 * The process's SIMD scanner (scripts/scanner_wasm.mjs): `scan` over
 * `mem`, which holds a copy of the bytes at hand of the chunk `chunk`
 * from its index `base` to `limit` (one scanner's at a time: `owner`).
 */
interface Simd {
  scan: (q: number, end: number, dots: number) => number;
  mem: Uint8Array;
  owner: TextScanner | null;
}

/** Spans shorter than this are scanned in JavaScript (no copy, no call). */
const SIMD_SCAN_MIN = 64;

/** Not looked for yet (undefined), or none on this runtime (null). */
let simd: Simd | null | undefined;

/**
 * The SIMD scanner, made at the first body scan; null where WebAssembly
 * or its 128-bit SIMD is missing or refused (the word loop then).
 */
function loadSimd(): Simd | null {
  try {
    const wasm = (globalThis as { WebAssembly?: WasmApi }).WebAssembly;
    if (wasm === undefined) return null;
    const { exports } = new wasm.Instance(new wasm.Module(SCAN_WASM), {});
    const memory = exports.mem as { buffer: ArrayBuffer };
    return {
      scan: exports.scan as Simd["scan"],
      mem: new Uint8Array(memory.buffer),
      owner: null,
    };
  } catch {
    return null;
  }
}

/**
 * Finds the next line end in a body that needs a look (`next`). Where
 * WebAssembly has 128-bit SIMD (Deno, Bun, Node), spans of 64 bytes and
 * more are scanned 16 bytes a step by the module of scanner_wasm.ts (its
 * listing: scripts/scanner_wasm.mjs), in one memory of the process into
 * which the bytes at hand are copied once per chunk (a page at a time):
 * 3–4 times the word loop's speed, copy included. The word loop, for the
 * rest and where SIMD is missing: text bytes
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
  /** Whether to use the SIMD scanner where there is one. */
  readonly #simd: boolean;
  /** The chunk whose bytes `[#base, #limit)` the SIMD memory holds. */
  #copied: Uint8Array | null = null;
  #base = 0;
  #limit = 0;

  /**
   * A scanner; `simd: false` keeps it to the word loop (which is also
   * what it does where WebAssembly's SIMD is missing).
   */
  constructor(simd = true) {
    this.#simd = simd;
  }

  /**
   * The index of the first CR or LF in `buf[q, end)` that is not an
   * ordinary line break, or `end`. Ordinary: a CRLF whose next byte is at
   * hand and, with `dots` (a DATA body), is not a dot. The caller handles
   * every other case (a bare CR or LF, a CRLF at the end of what is at
   * hand, a line that starts with a dot) without the scanner returning
   * at every line.
   */
  next(buf: Uint8Array, q: number, end: number, dots: boolean): number {
    if (end - q >= SIMD_SCAN_MIN && this.#simd) {
      const s = simd === undefined ? (simd = loadSimd()) : simd;
      if (s !== null) return this.#nextSimd(s, buf, q, end, dots);
    }
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

  /**
   * `next()` with the SIMD scanner: the bytes from `q` are copied into its
   * memory (at most a page at a time) once per chunk, and the copy serves
   * the next calls on the same chunk while it holds their bytes. A CR in
   * a copy's last two bytes is looked at again from a copy that starts
   * with it, unless the copy ends where the bytes at hand do.
   */
  #nextSimd(
    s: Simd,
    buf: Uint8Array,
    q: number,
    end: number,
    dots: boolean,
  ): number {
    const flag = dots ? 1 : 0;
    for (;;) {
      if (
        s.owner !== this || buf !== this.#copied || q < this.#base ||
        q >= this.#limit
      ) {
        const n = Math.min(end - q, s.mem.length);
        s.mem.set(buf.subarray(q, q + n));
        s.owner = this;
        this.#copied = buf;
        this.#base = q;
        this.#limit = q + n;
      }
      const base = this.#base;
      const stop = end < this.#limit ? end : this.#limit;
      const r = s.scan(q - base, stop - base, flag) + base;
      if (stop === end || r < stop - 2) return r;
      // A CR too close to the copy's end to tell, or nothing found: on
      // from there in a new copy.
      q = r;
      this.#copied = null;
    }
  }

  /**
   * The engine was given new bytes, which may be in the memory of the last
   * chunk read into again: the SIMD copy is stale.
   */
  renew(): void {
    this.#copied = null;
  }

  /** The engine let go of its chunk: so does the word view. */
  release(): void {
    this.#chunk = null;
    this.#words = EMPTY_WORDS;
    this.#copied = null;
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
