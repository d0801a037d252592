/**
 * The fixed replies (the same text every time: "250 2.1.0 Sender OK",
 * "354 …"), formatted and encoded once: the engine hands out their bytes
 * instead of encoding the text again for each reply.
 *
 * @module
 */

import { formatReply } from "../errors.ts";

/** The bytes of each fixed reply, by its text. */
const FIXED = new Map<string, Uint8Array>();

/**
 * A fixed reply's text, formatted (see formatReply), whose bytes
 * {@link fixedBytes} then has.
 *
 * @example
 * ```ts
 * import { fixedBytes, fixedReply } from "./fixed_replies.ts";
 *
 * const OK = fixedReply(250, "2.0.0", "OK"); // "250 2.0.0 OK\r\n"
 * fixedBytes(OK); // its bytes
 * ```
 */
export function fixedReply(
  code: number,
  enhancedCode: string,
  text: string,
): string {
  const reply = formatReply(code, enhancedCode, text);
  FIXED.set(reply, new TextEncoder().encode(reply));
  return reply;
}

/**
 * The bytes of `reply` when it is one fixed reply (made by
 * {@link fixedReply}), else undefined. Shared by every session: never
 * written into.
 *
 * @example
 * ```ts
 * import { fixedBytes } from "./fixed_replies.ts";
 *
 * fixedBytes("250 2.0.0 queued as 12345\r\n"); // undefined
 * ```
 */
export function fixedBytes(reply: string): Uint8Array | undefined {
  return FIXED.get(reply);
}
