/**
 * A message held while milter filters look at it: its header block read as
 * it arrives ({@link HeaderReader}), the fields a filter is shown
 * ({@link fieldsOf}), and the body kept in memory, then in a temporary file
 * ({@link Hold}). Used by `session.ts`.
 *
 * @module
 */

import { open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { concat } from "../message.ts";
import { fieldEnd } from "./headers.ts";

/**
 * Body bytes held in memory before the rest goes to a temporary file.
 *
 * @example
 * ```ts
 * import { SPILL_BYTES } from "./held_message.ts";
 * console.log(SPILL_BYTES / 1024); // 256
 * ```
 */
export const SPILL_BYTES = 256 * 1024;
/** Header bytes parsed at most; past them the rest counts as body. */
const MAX_HEADER_BYTES = 1024 * 1024;
/** Bytes read back from the temporary file at a time. */
const READ_BYTES = 64 * 1024;

const decoder = new TextDecoder();

/**
 * The header block of a message as it arrives: the bytes up to and with
 * the empty line, and each field's name and value as a filter wants them.
 *
 * @example
 * ```ts
 * import { HeaderReader } from "./held_message.ts";
 * const r = new HeaderReader();
 * r.push(new TextEncoder().encode("Subject: hi\r\n\r\nbody")); // true
 * r.done?.rest; // the bytes of "body"
 * ```
 */
export class HeaderReader {
  #parts: Uint8Array[] = [];
  #size = 0;
  /** The last bytes seen (an empty line may straddle two chunks). */
  #tail = new Uint8Array(0);
  /** Set once the block is whole: the block, and the body bytes after it. */
  done: { block: Uint8Array; rest: Uint8Array } | null = null;

  /**
   * Adds bytes; true once the header block is complete. Only the new bytes
   * (and the three before them) are searched: a header block that comes a
   * byte at a time costs no more than one that comes at once.
   */
  push(chunk: Uint8Array): boolean {
    const before = this.#size;
    this.#parts.push(chunk);
    this.#size += chunk.length;
    let end: number;
    if (before < 2) {
      const all = concat(this.#parts);
      end = endOfHeaders(all);
      this.#tail = all.slice(Math.max(0, all.length - 3));
    } else {
      const probe = concat([this.#tail, chunk]);
      const e = blankLine(probe);
      end = e < 0 ? -1 : before - this.#tail.length + e;
      this.#tail = probe.slice(Math.max(0, probe.length - 3));
    }
    if (end < 0 && this.#size <= MAX_HEADER_BYTES) return false;
    const all = concat(this.#parts);
    this.#parts = [];
    // No end in sight past MAX_HEADER_BYTES: what came is the header
    // block, the rest body.
    this.done = end >= 0
      ? { block: all.subarray(0, end), rest: all.subarray(end) }
      : { block: all, rest: new Uint8Array(0) };
    return true;
  }

  /** The body ended inside the header block. */
  finish(): { block: Uint8Array; rest: Uint8Array } {
    this.done ??= { block: concat(this.#parts), rest: new Uint8Array(0) };
    return this.done;
  }
}

/** Index after the empty line ending the header block, or -1. */
function endOfHeaders(b: Uint8Array): number {
  if (b[0] === 13 && b[1] === 10) return 2;
  if (b[0] === 10) return 1;
  return blankLine(b);
}

/** Index after the first empty line that follows a line end, or -1. */
function blankLine(b: Uint8Array): number {
  for (
    let i = b.indexOf(10);
    i >= 0 && i + 1 < b.length;
    i = b.indexOf(10, i + 1)
  ) {
    if (b[i + 1] === 10) return i + 2;
    if (b[i + 1] === 13 && b[i + 2] === 10) return i + 3;
  }
  return -1;
}

/**
 * The fields of a header block: name, and value after the colon (one space
 * off; the line ends of a folded value kept, the last one not).
 *
 * @example
 * ```ts
 * import { fieldsOf } from "./held_message.ts";
 * fieldsOf(new TextEncoder().encode("Subject: hi\r\n\r\n")); // [{ name: "Subject", value: the bytes of "hi" }]
 * ```
 */
export function fieldsOf(
  block: Uint8Array,
): { name: string; value: Uint8Array }[] {
  const out: { name: string; value: Uint8Array }[] = [];
  let at = 0;
  for (let end = fieldEnd(block, at); end >= 0; end = fieldEnd(block, at)) {
    const field = block.subarray(at, end);
    at = end;
    const colon = field.indexOf(58);
    if (colon <= 0) continue; // not a field: nothing to show a filter
    let v = colon + 1;
    if (field[v] === 32) v++;
    let e = field.length;
    if (field[e - 1] === 10) e--;
    if (field[e - 1] === 13) e--;
    out.push({
      name: decoder.decode(field.subarray(0, colon)).trim(),
      value: field.subarray(v, Math.max(v, e)),
    });
  }
  return out;
}

/**
 * The body held while the filters look at it: in memory up to
 * {@link SPILL_BYTES}, then in a temporary file (mode 0600) removed by
 * {@link Hold.dispose} on every path.
 *
 * @example
 * ```ts
 * import { Hold } from "./held_message.ts";
 * const hold = new Hold("msg-1");
 * try {
 *   await hold.write(new TextEncoder().encode("body\r\n"));
 *   for await (const piece of hold.read()) console.log(piece.length);
 * } finally {
 *   await hold.dispose();
 * }
 * ```
 */
export class Hold {
  readonly #name: string;
  #parts: Uint8Array[] = [];
  #memory = 0;
  #file: Awaited<ReturnType<typeof open>> | null = null;
  #path: string | null = null;
  #size = 0;

  constructor(name: string) {
    this.#name = name;
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (chunk.length === 0) return;
    this.#size += chunk.length;
    if (this.#file === null && this.#memory + chunk.length <= SPILL_BYTES) {
      this.#parts.push(chunk);
      this.#memory += chunk.length;
      return;
    }
    if (this.#file === null) {
      this.#path = join(
        tmpdir(),
        `smtpd-milter-${this.#name.replace(/[^\w.-]/g, "_")}`,
      );
      this.#file = await open(this.#path, "wx+", 0o600);
      for (const p of this.#parts) await this.#file.write(p);
      this.#parts = [];
      this.#memory = 0;
    }
    await this.#file.write(chunk);
  }

  /** The body, in pieces of at most {@link READ_BYTES} from the file. */
  async *read(): AsyncGenerator<Uint8Array> {
    if (this.#file === null) {
      yield* this.#parts;
      return;
    }
    let at = 0;
    while (at < this.#size) {
      const buf = new Uint8Array(Math.min(READ_BYTES, this.#size - at));
      const { bytesRead } = await this.#file.read(buf, 0, buf.length, at);
      if (bytesRead === 0) break;
      at += bytesRead;
      yield buf.subarray(0, bytesRead);
    }
  }

  /** Closes and removes the temporary file, if any. */
  async dispose(): Promise<void> {
    const f = this.#file;
    const p = this.#path;
    this.#file = null;
    this.#path = null;
    this.#parts = [];
    try {
      await f?.close();
    } catch { /* closed already */ }
    if (p !== null) await rm(p, { force: true });
  }
}
