/**
 * The AUTH command and its SASL exchange (RFC 4954): the checks before it
 * starts, the 334 challenges, the client's response lines, and the
 * credentials handed out as an `auth` decision.
 *
 * @module
 */

import { SmtpError } from "../errors.ts";
import { SaslExchange, type SaslStep } from "../sasl.ts";
import { assertNever, type EngineCore } from "./core.ts";
import { parseAuthArg, parseSaslResponse } from "./params.ts";
import type { SmtpEvent } from "./types.ts";

/**
 * AUTH <mechanism> [initial-response]: the checks, then the first step of
 * the exchange (a 334 challenge, or the `auth` decision).
 *
 * @example
 * ```ts
 * import { resolveEngineOptions } from "../options.ts";
 * import { EngineCore } from "./core.ts";
 * import { auth } from "./sasl_exchange.ts";
 *
 * const core = new EngineCore(
 *   resolveEngineOptions({ authMechanisms: ["PLAIN"], secure: true }),
 *   0,
 * );
 * core.esmtp = true;
 * auth(core, "PLAIN"); // null; core.out is "334 \r\n"
 * ```
 */
export function auth(core: EngineCore, arg: string): SmtpEvent | null {
  const o = core.options;
  if (o.authMechanisms.length === 0) {
    return core.fail(502, "5.5.1", "Command not implemented");
  }
  if (!core.esmtp) return core.fail(503, "5.5.1", "Send EHLO first");
  if (core.user !== null) {
    return core.fail(503, "5.5.1", "Already authenticated");
  }
  if (core.tx !== null) {
    return core.fail(
      503,
      "5.5.1",
      "AUTH is not allowed during a transaction",
    );
  }
  if (!core.authOffered()) {
    return o.requireTls && !core.secure
      ? core.fail(530, "5.7.0", "Must issue a STARTTLS command first")
      : core.fail(
        538,
        "5.7.11",
        "Encryption required for requested authentication mechanism",
      );
  }
  const parsed = parseAuthArg(arg, o.authMechanisms);
  if (parsed instanceof SmtpError) return core.failWith(parsed);
  const sasl = new SaslExchange(parsed.mechanism, challenge(core));
  core.authState().exchange = sasl;
  return saslStep(core, sasl.start(parsed.initial));
}

/** A CRAM-MD5 challenge: `<random.time@server>` (RFC 2195). */
function challenge(core: EngineCore): string {
  const r = new Uint32Array(2);
  crypto.getRandomValues(r);
  return `<${r[0]}${r[1]}.${core.lastActivity}@${core.options.serverName}>`;
}

/** Acts on one step of the exchange: a challenge, the credentials, or an error. */
function saslStep(core: EngineCore, step: SaslStep): SmtpEvent | null {
  switch (step.type) {
    case "challenge":
      core.mode = "sasl";
      // RFC 4954: continue-req = "334" SP [base64] CRLF (the space stays).
      core.write(`334 ${step.text}\r\n`);
      return null;
    case "done":
      core.endSasl();
      return core.decide({
        type: "auth",
        credentials: step.credentials,
      });
    case "error":
      core.endSasl();
      return core.fail(501, "5.5.2", "Invalid authentication data");
    default:
      return assertNever(step);
  }
}

/**
 * One client response line during AUTH: `buf[start, end)`, without CRLF.
 *
 * @example
 * ```ts
 * import { resolveEngineOptions } from "../options.ts";
 * import { EngineCore } from "./core.ts";
 * import { auth, saslResponse } from "./sasl_exchange.ts";
 *
 * const core = new EngineCore(
 *   resolveEngineOptions({ authMechanisms: ["PLAIN"], secure: true }),
 *   0,
 * );
 * core.esmtp = true;
 * auth(core, "PLAIN");
 * const line = new TextEncoder().encode("AHVzZXIAcGFzcw==");
 * saslResponse(core, line, 0, line.length); // the "auth" decision event
 * ```
 */
export function saslResponse(
  core: EngineCore,
  buf: Uint8Array,
  start: number,
  end: number,
): SmtpEvent | null {
  const decoded = parseSaslResponse(buf, start, end);
  if (decoded instanceof SmtpError) {
    core.endSasl();
    return core.failWith(decoded);
  }
  return saslStep(core, core.auth!.exchange!.next(decoded));
}
