/**
 * smtpd: receive email over SMTP in your application, on Deno, Bun and Node.
 *
 * This entry point holds the runtime-free parts: the sans-IO protocol engine
 * ({@link SmtpEngine}), typed SMTP replies ({@link SmtpError}) and the
 * address parsers.
 *
 * @example
 * ```ts
 * import { SmtpEngine } from "@smtpd/smtpd";
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

export { formatReply, SmtpError } from "./src/errors.ts";
export {
  type CloseReason,
  type MailParams,
  type RcptParams,
  type Recipient,
  SmtpEngine,
  type SmtpEvent,
} from "./src/engine.ts";
export {
  type BareLineEndingPolicy,
  ENGINE_DEFAULTS,
  type EngineOptions,
  limitOption,
  type ResolvedEngineOptions,
  resolveEngineOptions,
} from "./src/options.ts";
export {
  decodeXtext,
  isDomainOrLiteral,
  type Mailbox,
  type ParamsResult,
  parseParams,
  parsePath,
  type PathError,
  type PathResult,
} from "./src/address.ts";
