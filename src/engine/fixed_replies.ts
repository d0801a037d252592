/**
 * The fixed replies (the same text every time: "250 2.1.0 Sender OK",
 * "354 …"), formatted and encoded once: the engine hands out their bytes
 * instead of encoding the text again for each reply. Also those made once
 * per server's options (the 220 greeting, the 221 to QUIT) and the default
 * reply to HELO/EHLO, made once for the last client name.
 *
 * @module
 */

import { formatReply } from "../errors.ts";
import type { ResolvedEngineOptions } from "../options.ts";
import { ehloReply } from "./capabilities.ts";

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

/**
 * A reply formatted and encoded once: its text and its bytes, which the
 * engine queues together (`EngineCore.writeFixed`), so that takeOutput()
 * hands out the bytes without looking the text up. The bytes are shared
 * by every session: never written into.
 */
export interface Encoded {
  readonly text: string;
  readonly bytes: Uint8Array;
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
 * The default 220 greeting (`serverName greeting`), formatted and encoded
 * once per options: every session of a server greets the same way.
 *
 * @example
 * ```ts
 * import { resolveEngineOptions } from "../options.ts";
 * import { greeting } from "./fixed_replies.ts";
 *
 * greeting(resolveEngineOptions({ serverName: "mx.test" })).text;
 * // "220 mx.test ESMTP smtpd\r\n"
 * ```
 */
export function greeting(o: ResolvedEngineOptions): Encoded {
  return repliesOf(o).greeting;
}

/**
 * The 221 reply to QUIT (`serverName Bye`), formatted and encoded once
 * per options.
 *
 * @example
 * ```ts
 * import { resolveEngineOptions } from "../options.ts";
 * import { bye } from "./fixed_replies.ts";
 *
 * bye(resolveEngineOptions({ serverName: "mx.test" })).text;
 * // "221 2.0.0 mx.test Bye\r\n"
 * ```
 */
export function bye(o: ResolvedEngineOptions): Encoded {
  return repliesOf(o).bye;
}

/** {@link defaultHeloReply}'s last reply, and what it was made for. */
class LastHelo {
  /** The options it was made with (null: none yet). */
  options: ResolvedEngineOptions | null = null;
  secure = false;
  esmtp = false;
  /** The client's name the reply greets. */
  hostname = "";
  text = "";
  bytes: Uint8Array = new Uint8Array(0);
}

/** See {@link defaultHeloReply}. */
const lastHelo = new LastHelo();

/**
 * The default reply to HELO or EHLO (`esmtp`): "<serverName> greets
 * <hostname>", and after EHLO the capabilities, with its bytes; made and
 * encoded once for the last client name asked for: clients greet with
 * the same name connection after connection (a relay, a sending host),
 * and each such session's greeting then formats and encodes nothing (one
 * entry for the process, no lookup by options). Read its fields at once:
 * the next reply replaces them (its bytes are never written to).
 *
 * @example
 * ```ts
 * import { resolveEngineOptions } from "../options.ts";
 * import { defaultHeloReply } from "./fixed_replies.ts";
 *
 * const o = resolveEngineOptions({ serverName: "mx.test" });
 * defaultHeloReply(o, false, true, "c.test").text.startsWith("250-mx.test greets c.test\r\n"); // true
 * defaultHeloReply(o, false, false, "c.test").text; // "250 mx.test greets c.test\r\n"
 * ```
 */
export function defaultHeloReply(
  o: ResolvedEngineOptions,
  secure: boolean,
  esmtp: boolean,
  hostname: string,
): Encoded {
  const e = lastHelo;
  if (
    e.hostname !== hostname || e.options !== o || e.secure !== secure ||
    e.esmtp !== esmtp
  ) {
    const greet = `${o.serverName} greets ${hostname}`;
    e.text = esmtp
      ? ehloReply(o, secure, greet)
      : formatReply(250, null, greet);
    e.bytes = new TextEncoder().encode(e.text);
    e.options = o;
    e.secure = secure;
    e.esmtp = esmtp;
    e.hostname = hostname;
  }
  return e;
}
