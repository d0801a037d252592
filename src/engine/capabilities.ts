/**
 * What the server offers, from its options and the session's TLS state: the
 * EHLO keywords, the HELP text, and whether AUTH is offered.
 *
 * @module
 */

import { formatReply, isPlainReplyText } from "../errors.ts";
import type { ResolvedEngineOptions } from "../options.ts";

/**
 * AUTH is advertised and accepted: over TLS, or plaintext when allowed.
 *
 * @example
 * ```ts
 * import { resolveEngineOptions } from "../options.ts";
 * import { authOffered } from "./capabilities.ts";
 *
 * authOffered(resolveEngineOptions({}), true);
 * ```
 */
export function authOffered(
  o: ResolvedEngineOptions,
  secure: boolean,
): boolean {
  return o.authMechanisms.length > 0 &&
    (secure || (o.allowInsecureAuth && !o.requireTls));
}

/**
 * The EHLO (LHLO) keywords after the greeting line.
 *
 * @example
 * ```ts
 * import { resolveEngineOptions } from "../options.ts";
 * import { capabilities } from "./capabilities.ts";
 *
 * capabilities(resolveEngineOptions({}), false); // ["PIPELINING", ...]
 * ```
 */
export function capabilities(
  o: ResolvedEngineOptions,
  secure: boolean,
): string[] {
  const caps = ["PIPELINING", "8BITMIME"];
  caps.push(
    o.maxMessageSize === Infinity ? "SIZE" : `SIZE ${o.maxMessageSize}`,
  );
  caps.push("ENHANCEDSTATUSCODES");
  if (o.smtputf8) caps.push("SMTPUTF8");
  if (o.dsn) caps.push("DSN");
  if (o.chunking) {
    caps.push("CHUNKING");
    if (o.binaryMime) caps.push("BINARYMIME");
  }
  if (o.startTls && !secure) caps.push("STARTTLS");
  if (authOffered(o, secure)) caps.push(`AUTH ${o.authMechanisms.join(" ")}`);
  caps.push("HELP");
  return caps;
}

/**
 * The lines of the HELP reply: the commands available now, as in the EHLO
 * reply.
 *
 * @example
 * ```ts
 * import { resolveEngineOptions } from "../options.ts";
 * import { helpLines } from "./capabilities.ts";
 *
 * helpLines(resolveEngineOptions({}), false).join("\n");
 * ```
 */
export function helpLines(o: ResolvedEngineOptions, secure: boolean): string[] {
  return [
    `Commands: ${o.lmtp ? "LHLO" : "EHLO HELO"} MAIL RCPT DATA${
      o.chunking ? " BDAT" : ""
    } RSET NOOP QUIT VRFY HELP` +
    // What is available now, as in the EHLO reply.
    (o.startTls && !secure ? " STARTTLS" : "") +
    (authOffered(o, secure) ? " AUTH" : ""),
    "End of HELP info",
  ];
}

/** The formatted capability lines of an EHLO reply, by options and TLS. */
const ehloTails = new WeakMap<
  ResolvedEngineOptions,
  [string | undefined, string | undefined]
>();

/**
 * The whole EHLO reply: `greet` on the first line, then the capabilities.
 * The capability lines are formatted once per options and TLS state (they
 * are the same for every session of a server), so a session's EHLO costs
 * one short string.
 *
 * @example
 * ```ts
 * import { resolveEngineOptions } from "../options.ts";
 * import { ehloReply } from "./capabilities.ts";
 * const o = resolveEngineOptions({ serverName: "mx.test" });
 * ehloReply(o, false, "mx.test greets c.test").startsWith("250-mx.test greets c.test\r\n250-PIPELINING\r\n"); // true
 * ```
 */
export function ehloReply(
  o: ResolvedEngineOptions,
  secure: boolean,
  greet: string,
): string {
  let tails = ehloTails.get(o);
  if (tails === undefined) ehloTails.set(o, tails = [undefined, undefined]);
  const i = secure ? 1 : 0;
  let tail = tails[i];
  if (tail === undefined) {
    const all = formatReply(250, null, ["-", ...capabilities(o, secure)]);
    tail = tails[i] = all.slice(all.indexOf("\r\n") + 2);
  }
  // The common case, one plain line; any other (a hook's text with line
  // breaks, control characters, trailing blanks, none) formatted whole.
  if (isPlainReplyText(greet)) return `250-${greet}\r\n${tail}`;
  return formatReply(250, null, [greet, ...capabilities(o, secure)]);
}
