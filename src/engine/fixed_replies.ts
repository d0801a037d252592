/**
 * The fixed replies (the same text every time: "250 2.1.0 Sender OK",
 * "354 …"), formatted and encoded once: the engine hands out their bytes
 * instead of encoding the text again for each reply.
 *
 * @module
 */

import { formatReply } from "../errors.ts";
import type { ResolvedEngineOptions } from "../options.ts";

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

/** The default 220 greeting of each server's options, formatted and encoded. */
const GREETINGS = new WeakMap<
  ResolvedEngineOptions,
  { text: string; bytes: Uint8Array }
>();

/**
 * The default 220 greeting (`serverName greeting`), formatted once per
 * options (every session of a server greets the same way), whose bytes
 * {@link greetingBytes} then has.
 *
 * @example
 * ```ts
 * import { resolveEngineOptions } from "../options.ts";
 * import { greetingReply } from "./fixed_replies.ts";
 *
 * greetingReply(resolveEngineOptions({ serverName: "mx.test" }));
 * // "220 mx.test ESMTP smtpd\r\n"
 * ```
 */
export function greetingReply(o: ResolvedEngineOptions): string {
  let g = GREETINGS.get(o);
  if (g === undefined) {
    const text = formatReply(220, null, `${o.serverName} ${o.greeting}`);
    GREETINGS.set(o, g = { text, bytes: new TextEncoder().encode(text) });
  }
  return g.text;
}

/**
 * The bytes of `reply` when it is the default greeting of `o` (see
 * {@link greetingReply}), else undefined. Shared by every session: never
 * written into.
 *
 * @example
 * ```ts
 * import { resolveEngineOptions } from "../options.ts";
 * import { greetingBytes, greetingReply } from "./fixed_replies.ts";
 *
 * const o = resolveEngineOptions({});
 * greetingBytes(o, greetingReply(o)); // its bytes
 * ```
 */
export function greetingBytes(
  o: ResolvedEngineOptions,
  reply: string,
): Uint8Array | undefined {
  const g = GREETINGS.get(o);
  return g !== undefined && g.text === reply ? g.bytes : undefined;
}
