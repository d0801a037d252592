// The body scanner (src/engine/scanner.ts) against a byte-by-byte
// reference: every start and end of what is at hand, the text at each
// offset of a word (a view of a larger buffer), with and without dots, so
// that a line break that straddles the scanner's words or its SIMD blocks
// and copies, and a chunk refilled in place, are covered. Each case runs
// twice: with the SIMD scanner (WebAssembly) and with the word loop.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TextScanner } from "../src/engine/scanner.ts";
import { SCAN_WASM } from "../src/engine/scanner_wasm.ts";
// @ts-types="../scripts/scanner_wasm.d.ts"
import { assemble } from "../scripts/scanner_wasm.mjs";

const CR = 13;
const LF = 10;
const DOT = 46;

/** The first CR or LF in `buf[q, end)` that is not an ordinary CRLF, or `end`. */
function reference(
  buf: Uint8Array,
  q: number,
  end: number,
  dots: boolean,
): number {
  for (; q < end; q++) {
    if (buf[q] === LF) return q;
    if (buf[q] === CR) {
      if (q + 2 < end && buf[q + 1] === LF && !(dots && buf[q + 2] === DOT)) {
        q++;
        continue;
      }
      return q;
    }
  }
  return end;
}

/** A deterministic pseudo-random generator (xorshift32). */
function random(seed: number): () => number {
  let x = seed;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
}

/**
 * Text of `n` bytes: mostly letters, with CRLFs, bare CRs and LFs, dots,
 * TABs and high bytes, `density` times as many as in a short-lined text.
 */
function text(n: number, rnd: () => number, density: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const r = rnd() / density;
    if (r < 0.06 && i + 1 < n) {
      out[i++] = CR;
      out[i] = LF;
    } else if (r < 0.08) out[i] = CR;
    else if (r < 0.10) out[i] = LF;
    else if (r < 0.14) out[i] = DOT;
    else if (r < 0.15) out[i] = 9;
    else if (r < 0.16) out[i] = 0xc3;
    else out[i] = 0x61 + Math.floor(rnd() * 26);
  }
  return out;
}

/** Compares the scanner with the reference on `buf` for every start and end. */
function compare(scanner: TextScanner, buf: Uint8Array, label: string): void {
  for (const dots of [false, true]) {
    for (let end = 0; end <= buf.length; end++) {
      for (let q = 0; q <= end; q++) {
        assert.equal(
          scanner.next(buf, q, end, dots),
          reference(buf, q, end, dots),
          `${label} q=${q} end=${end} dots=${dots}`,
        );
      }
    }
  }
}

describe("text scanner's SIMD module", () => {
  it("is what scripts/scanner_wasm.mjs assembles", () => {
    assert.deepEqual(SCAN_WASM, assemble());
  });

  it("is valid WebAssembly on this runtime (so the cases below use it)", () => {
    assert.equal(WebAssembly.validate(SCAN_WASM as BufferSource), true);
  });
});

for (const simd of [true, false]) {
  describe(`text scanner (${simd ? "SIMD" : "word loop"})`, () => {
    cases(simd);
  });
}

/** The scanner's cases, with the SIMD scanner or the word loop. */
function cases(simd: boolean): void {
  it("finds what a byte-by-byte scan finds, at every offset of a word", () => {
    const rnd = random(0x2545f491);
    const scanner = new TextScanner(simd);
    for (let round = 0; round < 40; round++) {
      const body = text(96, rnd, round % 2 === 0 ? 1 : 0.25);
      for (let offset = 0; offset < 4; offset++) {
        const backing = new Uint8Array(body.length + 8);
        backing.set(body, offset);
        const buf = backing.subarray(offset, offset + body.length);
        compare(scanner, buf, `round ${round} offset ${offset}`);
      }
    }
  });

  it("passes long lines and a CRLF split between two words", () => {
    const scanner = new TextScanner(simd);
    for (let cut = 24; cut < 48; cut++) {
      // A CRLF at every position around the words' boundaries, then a
      // line that starts with a dot.
      const s = "x".repeat(cut) + "\r\n" + "y".repeat(40) + "\r\n.z\r\n" +
        "w".repeat(20);
      compare(scanner, new TextEncoder().encode(s), `cut ${cut}`);
    }
  });

  it("passes a run of CRLFs that keeps the scan off a word's start", () => {
    const scanner = new TextScanner(simd);
    for (let offset = 0; offset < 4; offset++) {
      for (const tail of ["x\n\r", "xy\r\n", "\r\n.", "xyz\n"]) {
        const s = "\r\n".repeat(24) + tail;
        const backing = new Uint8Array(s.length + 4);
        backing.set(new TextEncoder().encode(s), offset);
        compare(
          scanner,
          backing.subarray(offset, offset + s.length),
          `offset ${offset} tail ${JSON.stringify(tail)}`,
        );
      }
    }
  });

  it("scans a chunk refilled in place afresh once renewed", () => {
    // The engine renews its scanner with every chunk it is given.
    const scanner = new TextScanner(simd);
    const buf = new Uint8Array(64);
    buf.set(new TextEncoder().encode("a".repeat(40) + "\r\n" + "b".repeat(22)));
    assert.equal(scanner.next(buf, 0, 64, true), 64);
    buf.set(new TextEncoder().encode("c".repeat(20) + "\n" + "d".repeat(43)));
    scanner.renew();
    assert.equal(scanner.next(buf, 0, 64, true), 20);
    buf.set(new TextEncoder().encode("e".repeat(50) + "\r"), 0);
    scanner.renew();
    assert.equal(scanner.next(buf, 0, 64, true), 50);
    scanner.release();
    assert.equal(scanner.next(buf, 51, 64, true), 64);
  });

  it("scans spans longer than one SIMD copy, with a CRLF at each cut", () => {
    const page = 65536;
    for (const at of [page - 3, page - 2, page - 1, page, page + 1]) {
      for (const dots of [false, true]) {
        // Text lines, a CRLF (then a dot) around the copy's end, and a
        // bare LF far after it.
        const buf = new Uint8Array(3 * page + 100).fill(0x61);
        for (let i = 70; i < buf.length - 2; i += 80) {
          buf[i] = CR;
          buf[i + 1] = LF;
        }
        const cut = at + 17;
        buf[cut] = CR;
        buf[cut + 1] = LF;
        buf[cut + 2] = DOT;
        buf[2 * page + 50] = LF;
        const scanner = new TextScanner(simd);
        for (const q of [0, 17, 18, 5000]) {
          for (const end of [buf.length, cut + 1, cut + 2, cut + 3, page * 2]) {
            if (q > end) continue;
            scanner.renew();
            assert.equal(
              scanner.next(buf, q, end, dots),
              reference(buf, q, end, dots),
              `at ${at} q=${q} end=${end} dots=${dots}`,
            );
          }
        }
        // Calls that go on through the same chunk, as the body reader's.
        const got: number[] = [];
        const want: number[] = [];
        scanner.renew();
        for (let q = 0; q < buf.length;) {
          const r = scanner.next(buf, q, buf.length, dots);
          got.push(r);
          q = r + 1;
        }
        for (let q = 0; q < buf.length;) {
          const r = reference(buf, q, buf.length, dots);
          want.push(r);
          q = r + 1;
        }
        assert.deepEqual(got, want, `at ${at} dots=${dots}`);
      }
    }
  });

  it("keeps two scanners apart when their calls interleave", () => {
    const rnd = random(0x9e3779b9);
    const a = new TextScanner(simd);
    const b = new TextScanner(simd);
    for (let round = 0; round < 20; round++) {
      const x = text(300, rnd, 0.3);
      const y = text(300, rnd, 0.3);
      let qa = 0;
      let qb = 0;
      while (qa < x.length || qb < y.length) {
        if (qa < x.length) {
          const r = a.next(x, qa, x.length, true);
          assert.equal(r, reference(x, qa, x.length, true), `a ${round}`);
          qa = r + 1;
        }
        if (qb < y.length) {
          const r = b.next(y, qb, y.length, false);
          assert.equal(r, reference(y, qb, y.length, false), `b ${round}`);
          qb = r + 1;
        }
      }
      a.renew();
      b.renew();
    }
  });
}
