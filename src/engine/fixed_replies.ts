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

/** A reply formatted and encoded once. */
interface Encoded {
  text: string;
  bytes: Uint8Array;
}

/**
 * The replies each server's options make the same way for every session:
 * the default 220 greeting and the 221 to QUIT, formatted and encoded.
 */
const BY_OPTIONS = new WeakMap<
  ResolvedEngineOptions,
  { greeting: Encoded; bye: Encoded }
>();

/** The replies of `o` (see BY_OPTIONS), made on first use. */
function repliesOf(
  o: ResolvedEngineOptions,
): { greeting: Encoded; bye: Encoded } {
  let r = BY_OPTIONS.get(o);
  if (r === undefined) {
    const encoder = new TextEncoder();
    const greeting = formatReply(220, null, `${o.serverName} ${o.greeting}`);
    const bye = formatReply(221, "2.0.0", `${o.serverName} Bye`);
    BY_OPTIONS.set(
      o,
      r = {
        greeting: { text: greeting, bytes: encoder.encode(greeting) },
        bye: { text: bye, bytes: encoder.encode(bye) },
      },
    );
  }
  return r;
}

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
  return repliesOf(o).greeting.text;
}

/**
 * The 221 reply to QUIT (`serverName Bye`), formatted once per options,
 * whose bytes {@link greetingBytes} then has.
 *
 * @example
 * ```ts
 * import { resolveEngineOptions } from "../options.ts";
 * import { byeReply } from "./fixed_replies.ts";
 *
 * byeReply(resolveEngineOptions({ serverName: "mx.test" }));
 * // "221 2.0.0 mx.test Bye\r\n"
 * ```
 */
export function byeReply(o: ResolvedEngineOptions): string {
  return repliesOf(o).bye.text;
}

/**
 * The bytes of `reply` when it is the default greeting or the 221 of `o`
 * (see {@link greetingReply}, {@link byeReply}), else undefined. Shared
 * by every session: never written into.
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
  const r = BY_OPTIONS.get(o);
  if (r === undefined) return undefined;
  return r.greeting.text === reply
    ? r.greeting.bytes
    : r.bye.text === reply
    ? r.bye.bytes
    : undefined;
}
