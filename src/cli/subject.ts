/**
 * The Subject of a delivered message, for its log line: taken from the
 * header block only (the body is never read), unfolded, its encoded words
 * (RFC 2047) decoded, cut to {@link SUBJECT_MAX} characters, and every
 * control, bidirectional-override or line-separator character written as
 * an escape, so that a sender cannot forge or hide log lines with it.
 *
 * @module
 */

import { open } from "node:fs/promises";
import { decodeWords } from "postal-mime";

/** Characters of the Subject kept in a log line (then `…`). */
export const SUBJECT_MAX = 100;

/** How much of a stored file is read to find its header block's Subject. */
export const HEADER_READ_MAX = 64 * 1024;

/**
 * The header block at the start of `bytes`: up to the empty line that
 * ends it (all of `bytes` when it does not end within them).
 */
export function headerBlock(bytes: Uint8Array): Uint8Array {
  for (let i = 0; i + 1 < bytes.length; i++) {
    if (bytes[i] !== 0x0a) continue;
    // LF LF, or LF CR LF: an empty line.
    if (bytes[i + 1] === 0x0a) return bytes.subarray(0, i + 1);
    if (bytes[i + 1] === 0x0d && bytes[i + 2] === 0x0a) {
      return bytes.subarray(0, i + 1);
    }
  }
  return bytes;
}

/**
 * `text` with `\` doubled and every control character (C0, DEL, C1),
 * bidirectional control and line or paragraph separator written as
 * `\xNN` or `\u{NNNN}`: printable on one line, and unambiguous.
 */
export function escapeControls(text: string): string {
  return text.replace(
    // deno-lint-ignore no-control-regex
    /[\\\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g,
    (c) => {
      if (c === "\\") return "\\\\";
      const n = c.codePointAt(0)!;
      return n <= 0xff
        ? `\\x${n.toString(16).padStart(2, "0")}`
        : `\\u{${n.toString(16)}}`;
    },
  );
}

/**
 * The Subject of the message whose header block starts `bytes`, decoded,
 * cut and escaped for a log line; `null` when there is none.
 *
 * @param bytes the start of the message (trace headers first is fine)
 *
 * @example
 * ```ts
 * import { subjectOf } from "./subject.ts";
 *
 * subjectOf(new TextEncoder().encode("Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n\r\n"));
 * // "Grüße"
 * ```
 */
export function subjectOf(bytes: Uint8Array): string | null {
  const header = new TextDecoder("utf-8").decode(headerBlock(bytes));
  const m = /(?:^|\n)subject[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)/i.exec(header);
  if (m === null) return null;
  const raw = m[1].replace(/\r?\n(?=[ \t])/g, "").replace(/\r$/, "").trim();
  let decoded: string;
  try {
    decoded = decodeWords(raw);
  } catch {
    decoded = raw;
  }
  const chars = [...decoded];
  const cut = chars.length > SUBJECT_MAX
    ? chars.slice(0, SUBJECT_MAX).join("") + "…"
    : decoded;
  return escapeControls(cut);
}

/** How much of a stored file is read at a time while looking for the header's end. */
const HEADER_READ_STEP = 4096;

/**
 * The Subject of a stored message: reads the file from its start until
 * the header block has ended (at most {@link HEADER_READ_MAX} bytes), not
 * the body. `null` when there is none, or the file cannot be read (gone
 * meanwhile).
 *
 * @param path the stored message's file
 *
 * @example
 * ```ts
 * import { subjectOfFile } from "./subject.ts";
 *
 * console.log(await subjectOfFile("maildir/new/1700000000.M1P2.host"));
 * ```
 */
export async function subjectOfFile(path: string): Promise<string | null> {
  try {
    const file = await open(path, "r");
    try {
      const buf = new Uint8Array(HEADER_READ_MAX);
      let length = 0;
      while (length < buf.byteLength) {
        const { bytesRead } = await file.read(
          buf,
          length,
          Math.min(HEADER_READ_STEP, buf.byteLength - length),
          length,
        );
        if (bytesRead === 0) break;
        // The empty line may start in the previous step's last bytes.
        const from = Math.max(0, length - 2);
        length += bytesRead;
        const seen = buf.subarray(from, length);
        if (headerBlock(seen).length < seen.length) break;
      }
      return subjectOf(buf.subarray(0, length));
    } finally {
      await file.close();
    }
  } catch {
    return null;
  }
}
