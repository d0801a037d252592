// The body scanner's WebAssembly module (src/engine/scanner_wasm.ts): its
// code as a listing of instructions, and the few lines that assemble it.
//
//   node scripts/scanner_wasm.mjs    # rewrites src/engine/scanner_wasm.ts
//
// test/unit_scanner.test.ts checks that the committed bytes are what this
// listing assembles to, and the scanner against a byte-by-byte reference.
//
// The module exports `mem` (one 64 KiB page, what the scanner copies the
// bytes at hand into) and `scan(q, end, dots) -> i32`: the index of the
// first CR or LF in mem[q, end) that is not an ordinary line break, or
// `end` (TextScanner.next's contract: ordinary is a CRLF whose next byte
// is before `end` and, with `dots`, not a dot). Sixteen bytes at a time:
// the CRs and LFs of a block as a bit mask (i8x16.eq, i8x16.bitmask); an
// ordinary CRLF clears its two bits (its LF's in the next block when the
// CR is the block's last byte: `carry`), anything else is returned. The
// bytes after the last whole block are read one by one.
import { writeFileSync } from "node:fs";
import process from "node:process";
import { pathToFileURL } from "node:url";

/** Opcodes of the instructions the listing uses (SIMD ones after 0xfd). */
const OPS = {
  block: [0x02],
  loop: [0x03],
  if: [0x04],
  else: [0x05],
  end: [0x0b],
  br: [0x0c],
  br_if: [0x0d],
  return: [0x0f],
  "local.get": [0x20],
  "local.set": [0x21],
  "i32.load8_u": [0x2d],
  "i32.const": [0x41],
  "i32.eqz": [0x45],
  "i32.eq": [0x46],
  "i32.ne": [0x47],
  "i32.gt_u": [0x4b],
  "i32.ge_u": [0x4f],
  "i32.ctz": [0x68],
  "i32.add": [0x6a],
  "i32.sub": [0x6b],
  "i32.and": [0x71],
  "i32.xor": [0x73],
  "v128.load": [0xfd, 0x00],
  "i8x16.splat": [0xfd, 0x0f],
  "i8x16.eq": [0xfd, 0x23],
  "v128.or": [0xfd, 0x50],
  "i8x16.bitmask": [0xfd, 0x64],
};

// Locals: the parameters q 0, end 1, dots 2; mask 3, at 4, carry 5,
// byte 6 (i32); block 7 (v128). `i32.load8_u N` reads at offset N.
const SCAN = `
block loop                                  ;; whole blocks
  local.get 0 i32.const 16 i32.add local.get 1 i32.gt_u br_if 1
  local.get 0 v128.load local.set 7
  local.get 7 i32.const 13 i8x16.splat i8x16.eq
  local.get 7 i32.const 10 i8x16.splat i8x16.eq
  v128.or i8x16.bitmask
  local.get 5 i32.const -1 i32.xor i32.and local.set 3   ;; mask & ~carry
  i32.const 0 local.set 5
  block loop                                ;; each CR or LF of the block
    local.get 3 i32.eqz br_if 1
    local.get 0 local.get 3 i32.ctz i32.add local.set 4
    local.get 4 i32.load8_u 0 i32.const 10 i32.eq if local.get 4 return end
    local.get 4 i32.const 2 i32.add local.get 1 i32.ge_u if local.get 4 return end
    local.get 4 i32.load8_u 1 i32.const 10 i32.ne if local.get 4 return end
    local.get 2 if
      local.get 4 i32.load8_u 2 i32.const 46 i32.eq if local.get 4 return end
    end
    local.get 3 local.get 3 i32.const 1 i32.sub i32.and local.set 3   ;; the CR
    local.get 4 local.get 0 i32.sub i32.const 15 i32.eq
    if i32.const 1 local.set 5                                       ;; its LF: next block
    else local.get 3 local.get 3 i32.const 1 i32.sub i32.and local.set 3
    end
    br 0
  end end
  local.get 0 i32.const 16 i32.add local.set 0
  br 0
end end
local.get 0 local.get 5 i32.add local.set 0  ;; the rest, byte by byte
block loop
  local.get 0 local.get 1 i32.ge_u br_if 1
  local.get 0 i32.load8_u 0 local.set 6
  local.get 6 i32.const 10 i32.eq if local.get 0 return end
  local.get 6 i32.const 13 i32.eq if
    local.get 0 i32.const 2 i32.add local.get 1 i32.ge_u if local.get 0 return end
    local.get 0 i32.load8_u 1 i32.const 10 i32.ne if local.get 0 return end
    local.get 2 if
      local.get 0 i32.load8_u 2 i32.const 46 i32.eq if local.get 0 return end
    end
    local.get 0 i32.const 1 i32.add local.set 0
  end
  local.get 0 i32.const 1 i32.add local.set 0
  br 0
end end
local.get 1
end`;

/** Unsigned LEB128. */
function uleb(n) {
  const out = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

/** Signed LEB128. */
function sleb(n) {
  const out = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

/** The code of a listing: opcodes and their immediates. */
function code(listing) {
  const words = listing.replace(/;;.*$/gm, "").trim().split(/\s+/);
  const out = [];
  for (let k = 0; k < words.length; k++) {
    const w = words[k];
    const op = OPS[w];
    if (op === undefined) throw new Error(`unknown instruction ${w}`);
    out.push(...op);
    if (w === "block" || w === "loop" || w === "if") out.push(0x40); // no result
    else if (w === "i32.const") out.push(...sleb(Number(words[++k])));
    else if (w === "br" || w === "br_if" || w.startsWith("local.")) {
      out.push(...uleb(Number(words[++k])));
    } else if (w === "i32.load8_u") out.push(0, ...uleb(Number(words[++k])));
    else if (w === "v128.load") out.push(0, 0); // align 1, offset 0
  }
  return out;
}

/** A section: its id, size and contents. */
const section = (id, body) => [id, ...uleb(body.length), ...body];
/** A name. */
const name = (s) => [...uleb(s.length), ...new TextEncoder().encode(s)];

/** The module's bytes. */
export function assemble() {
  const I32 = 0x7f;
  const V128 = 0x7b;
  const body = [2, 4, I32, 1, V128, ...code(SCAN)]; // locals, code
  return new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00], // "\0asm", version 1
    ...section(1, [1, 0x60, 3, I32, I32, I32, 1, I32]), // (i32 i32 i32) -> i32
    ...section(3, [1, 0]), // function 0 has type 0
    ...section(5, [1, 0x00, 1]), // one memory of 1 page, no maximum
    ...section(7, [2, ...name("scan"), 0x00, 0, ...name("mem"), 0x02, 0]),
    ...section(10, [1, ...uleb(body.length), ...body]),
  ]);
}

/** src/engine/scanner_wasm.ts's text for `bytes`. */
export function moduleText(bytes) {
  const rows = [];
  for (let i = 0; i < bytes.length; i += 16) {
    rows.push("  " + [...bytes.subarray(i, i + 16)].join(", ") + ",");
  }
  return `/**
 * The body scanner's WebAssembly module (SIMD): written by
 * \`node scripts/scanner_wasm.mjs\` from the listing there, which says what
 * it does. Do not edit by hand.
 *
 * @module
 */

/** The module's bytes (${bytes.length}). */
// deno-fmt-ignore
export const SCAN_WASM: Uint8Array = new Uint8Array([
${rows.join("\n")}
]);
`;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const file = new URL("../src/engine/scanner_wasm.ts", import.meta.url);
  writeFileSync(file, moduleText(assemble()));
  console.log(`wrote ${file.pathname}`);
}
