/**
 * The sans-IO SMTP engine and its building blocks: bytes in, events out,
 * decisions in, bytes out; no sockets, timers or clocks. For those who
 * build their own driver, proxy or test harness on the protocol; an
 * application that receives mail wants `serve()` from the package root.
 *
 * Also here: the engine's options and their validation, the SASL exchange
 * (AUTH PLAIN, LOGIN, CRAM-MD5, XOAUTH2), the RFC 5321 path and parameter
 * parsers, reply formatting, and the limits per client address (to share
 * them among processes through `serve({ limits })`).
 *
 * @example
 * ```ts
 * import { SmtpEngine } from "@smtpd/smtpd/engine";
 *
 * const engine = new SmtpEngine({ serverName: "mx.example.org" });
 * engine.receive(new TextEncoder().encode("HELO client\r\nQUIT\r\n"), 0);
 * for (let ev = engine.nextEvent(); ev.type !== "close"; ev = engine.nextEvent()) {
 *   if (ev.type === "connect" || ev.type === "helo") engine.accept();
 * }
 * console.log(new TextDecoder().decode(engine.takeOutput()!));
 * ```
 *
 * @module
 */

export { formatReply, SmtpError } from "../errors.ts";
export {
  type BodyType,
  type CloseReason,
  type Decision,
  type MailParams,
  type RcptParams,
  type Recipient,
  type SessionView,
  SmtpEngine,
  type SmtpEvent,
} from "../engine.ts";
export {
  type BareLineEndingPolicy,
  ENGINE_DEFAULTS,
  type EngineOptions,
  limitOption,
  type ResolvedEngineOptions,
  resolveEngineOptions,
} from "../options.ts";
export {
  type AuthCredentials,
  type AuthMechanism,
  decodeBase64Text,
  encodeBase64Text,
  SaslExchange,
  type SaslStep,
  SUPPORTED_AUTH_MECHANISMS,
} from "../sasl.ts";
export {
  decodeXtext,
  isDomainOrLiteral,
  type Mailbox,
  type ParamsResult,
  parseParams,
  parsePath,
  type PathError,
  type PathResult,
} from "../address.ts";
export {
  type AttemptVerdict,
  type AuthStart,
  clientKey,
  type ClientLimits,
  FailureBudget,
  type FailureBudgetOptions,
  type FailureCount,
  LocalClientLimits,
  type LocalClientLimitsOptions,
} from "../limits.ts";
