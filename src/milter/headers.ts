/**
 * Applies a milter's header modifications to a message's header block, as
 * Postfix does: pure bytes in, bytes out, the untouched fields kept byte
 * for byte.
 *
 * @module
 */

/**
 * A header change requested by a filter at end-of-message.
 *
 * @example
 * ```ts
 * import type { HeaderModification } from "./headers.ts";
 * const sign: HeaderModification = { type: "insert-header", index: 0, name: "DKIM-Signature", value: "v=1; ..." };
 * ```
 */
export type HeaderModification =
  /** Appends `name: value` after the last field. */
  | { type: "add-header"; name: string; value: string }
  /** Inserts `name: value` before field number `index` (0 = first; past the end appends). */
  | { type: "insert-header"; index: number; name: string; value: string }
  /**
   * Replaces the value of occurrence `index` (1-based) of `name`
   * (case-insensitive); appends the field when there is no such occurrence.
   */
  | { type: "change-header"; index: number; name: string; value: string }
  /** Removes occurrence `index` (1-based) of `name`; nothing if there is none. */
  | { type: "delete-header"; index: number; name: string };

const CR = 13;
const LF = 10;
const SP = 32;
const HT = 9;
const COLON = 58;
const encoder = new TextEncoder();

/** One field: its name (lower case, for matching) and its bytes with CRLF. */
interface Field {
  key: string;
  bytes: Uint8Array;
}

/**
 * Where the field that starts at `at` in a header block ends (past its
 * last line's LF, folded lines included), or -1 when `at` is the empty
 * line that ends the block (CRLF or a bare LF) or the block's end.
 *
 * @example
 * ```ts
 * import { fieldEnd } from "./headers.ts";
 * const block = new TextEncoder().encode("A: 1\r\n 2\r\nB: 3\r\n\r\n");
 * fieldEnd(block, 0); // 11: "A: 1\r\n 2\r\n"
 * fieldEnd(block, 17); // -1: the empty line
 * ```
 */
export function fieldEnd(block: Uint8Array, at: number): number {
  if (at >= block.length || block[at] === LF) return -1;
  if (block[at] === CR && block[at + 1] === LF) return -1;
  let end = at;
  for (;;) {
    const nl = block.indexOf(LF, end);
    if (nl < 0) return block.length;
    end = nl + 1;
    if (end >= block.length || (block[end] !== SP && block[end] !== HT)) {
      return end;
    }
  }
}

function split(block: Uint8Array): { fields: Field[]; rest: Uint8Array } {
  const fields: Field[] = [];
  let at = 0;
  // An empty line ends the header block; keep it and what follows as is.
  for (let end = fieldEnd(block, at); end >= 0; end = fieldEnd(block, at)) {
    const bytes = block.subarray(at, end);
    const colon = bytes.indexOf(COLON);
    const key = colon < 0 ? "" : new TextDecoder().decode(
      bytes.subarray(0, colon),
    ).trim().toLowerCase();
    fields.push({ key, bytes });
    at = end;
  }
  return { fields, rest: block.subarray(at) };
}

/** `name: value` with CRLF line ends; a folded value keeps its folding. */
function field(name: string, value: string): Field {
  const v = value.replace(/\r?\n/g, "\r\n");
  const sep = v.startsWith(" ") || v.startsWith("\t") ? ":" : ": ";
  return {
    key: name.toLowerCase(),
    bytes: encoder.encode(`${name}${sep}${v}\r\n`),
  };
}

/** Position in `fields` of occurrence `index` (1-based) of `name`, or -1. */
function nth(fields: Field[], name: string, index: number): number {
  const key = name.toLowerCase();
  let seen = 0;
  for (let i = 0; i < fields.length; i++) {
    if (fields[i].key === key && ++seen === Math.max(1, index)) return i;
  }
  return -1;
}

/**
 * Returns `headers` (the header fields of a message, each ending in CRLF,
 * optionally followed by the empty line and anything after it, which is
 * kept as is) with `modifications` applied in order.
 *
 * Values from filters may use LF or CRLF line ends; both are written as
 * CRLF. A value that starts with white space is written right after the
 * colon, any other value after `": "`.
 *
 * @example
 * ```ts
 * import { applyHeaderModifications } from "./headers.ts";
 * const block = new TextEncoder().encode("Subject: hi\r\nX-Old: 1\r\n");
 * const out = applyHeaderModifications(block, [
 *   { type: "add-header", name: "X-Spam-Status", value: "No" },
 *   { type: "change-header", index: 1, name: "Subject", value: "[SPAM] hi" },
 *   { type: "delete-header", index: 1, name: "X-Old" },
 * ]);
 * new TextDecoder().decode(out); // "Subject: [SPAM] hi\r\nX-Spam-Status: No\r\n"
 * ```
 */
export function applyHeaderModifications(
  headers: Uint8Array,
  modifications: readonly HeaderModification[],
): Uint8Array {
  const { fields, rest } = split(headers);
  for (const m of modifications) {
    switch (m.type) {
      case "add-header":
        fields.push(field(m.name, m.value));
        break;
      case "insert-header":
        fields.splice(
          Math.min(m.index, fields.length),
          0,
          field(m.name, m.value),
        );
        break;
      case "change-header": {
        const i = nth(fields, m.name, m.index);
        if (m.value === "") {
          if (i >= 0) fields.splice(i, 1);
        } else if (i >= 0) fields[i] = field(m.name, m.value);
        else fields.push(field(m.name, m.value));
        break;
      }
      case "delete-header": {
        const i = nth(fields, m.name, m.index);
        if (i >= 0) fields.splice(i, 1);
        break;
      }
      default: {
        const never: never = m;
        throw new TypeError(
          `Cannot apply header modification: unknown type ${
            (never as { type: string }).type
          }`,
        );
      }
    }
  }
  let n = rest.length;
  for (const f of fields) n += f.bytes.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const f of fields) {
    out.set(f.bytes, at);
    at += f.bytes.length;
  }
  out.set(rest, at);
  return out;
}
