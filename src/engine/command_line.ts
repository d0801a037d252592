/**
 * Command lines as text: the bytes of one line (without CRLF) decoded, and
 * the AUTH line test that allows it a longer length.
 *
 * @module
 */

import { SmtpError } from "../errors.ts";

// ignoreBOM: keep a leading U+FEFF (by default the decoder drops it, and
// "<BOM>MAIL FROM:..." would pass as MAIL).
const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
// deno-lint-ignore no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/;
/** decodeCommandLine's scratch array of character codes (one line at a time). */
const CODES: number[] = [];
/** The refusals (made once: bad lines cost no allocation). */
const INVALID_UTF8 = new SmtpError(501, "5.5.2", "Invalid UTF-8 in command");
const CONTROL_CHARACTERS = new SmtpError(
  501,
  "5.5.2",
  "Control characters are not allowed in commands",
);

/**
 * The command line `buf[start, end)` as text, or the error to reply with:
 * invalid UTF-8, or a control character in a line that is not ASCII.
 *
 * @example
 * ```ts
 * import { decodeCommandLine } from "./command_line.ts";
 *
 * decodeCommandLine(new TextEncoder().encode("NOOP\r\n"), 0, 4); // "NOOP"
 * ```
 */
export function decodeCommandLine(
  buf: Uint8Array,
  start: number,
  end: number,
): string | SmtpError {
  let line = "";
  const n = end - start;
  let ascii = true;
  // apply() passes every byte as an argument: only for short lines, or a
  // long maxLineLength overflows the call stack (RangeError). The bytes
  // go through a reused array: cheaper than apply() on a view.
  if (n <= 1024) {
    const codes = CODES;
    codes.length = n;
    for (let i = 0; i < n; i++) {
      const b = buf[start + i];
      if (b > 0x7e || b < 0x20) {
        ascii = false;
        break;
      }
      codes[i] = b;
    }
    if (ascii) line = String.fromCharCode.apply(null, codes);
  } else ascii = false;
  if (!ascii) {
    try {
      line = UTF8.decode(buf.subarray(start, end));
    } catch {
      return INVALID_UTF8;
    }
    if (CONTROL.test(line)) return CONTROL_CHARACTERS;
  }
  return line;
}

/**
 * The bytes `buf[from, to)`, each a character of its own (Latin-1),
 * without the checks of {@link decodeCommandLine}: for a caller that
 * checks the text itself (a byte above 0x7F is then a character above
 * U+007F); at most 1,024 of them (see there).
 *
 * @example
 * ```ts
 * import { asciiText } from "./command_line.ts";
 *
 * asciiText(new TextEncoder().encode("<a@b.c>"), 1, 6); // "a@b.c"
 * ```
 */
export function asciiText(buf: Uint8Array, from: number, to: number): string {
  const codes = CODES;
  const n = to - from;
  codes.length = n;
  for (let i = 0; i < n; i++) codes[i] = buf[from + i];
  return String.fromCharCode.apply(null, codes);
}

/**
 * Whether the line at `start` begins with "AUTH " (any case).
 *
 * @example
 * ```ts
 * import { isAuthLine } from "./command_line.ts";
 *
 * isAuthLine(new TextEncoder().encode("auth PLAIN"), 0); // true
 * ```
 */
export function isAuthLine(buf: Uint8Array, start: number): boolean {
  return buf.length - start >= 5 && (buf[start] | 0x20) === 0x61 &&
    (buf[start + 1] | 0x20) === 0x75 && (buf[start + 2] | 0x20) === 0x74 &&
    (buf[start + 3] | 0x20) === 0x68 && buf[start + 4] === 0x20;
}
