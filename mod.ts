/**
 * smtpd: receive email over SMTP in your application, on Deno, Bun and Node.
 *
 * {@link serve} starts a server on whichever runtime runs it; hooks decide
 * at each step, and `onMessage` (or `for await (const message of server)`)
 * receives each message with its body streaming. The runtime-free parts are
 * exported too: the sans-IO protocol engine ({@link SmtpEngine}), typed SMTP
 * replies ({@link SmtpError}) and the address parsers.
 *
 * @example
 * ```ts
 * import { serve, SmtpError } from "@smtpd/smtpd";
 *
 * const server = await serve({
 *   port: 2525,
 *   onRcptTo(address) {
 *     if (!address.endsWith("@example.org")) {
 *       throw new SmtpError(550, "5.7.1", "Relaying denied");
 *     }
 *   },
 *   async onMessage(message) {
 *     const email = await message.parse();
 *     console.log(message.from, message.to, email.subject);
 *   },
 * });
 * ```
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

import type { ServeOptions, Server } from "./src/server.ts";

export { formatReply, SmtpError } from "./src/errors.ts";
export { authMechanisms, type AuthOptions, checkAuth } from "./src/auth.ts";
export {
  createServer,
  type HookResult,
  type LoopMessage,
  type ServeOptions,
  type Server,
} from "./src/server.ts";
export type { Message } from "./src/message.ts";
export type { LogEntry, Logger, Session } from "./src/session.ts";
export {
  checkTlsOptions,
  type Connection,
  ConnectionQueue,
  HANDSHAKE_TIMEOUT_MS,
  type Listener,
  type ListenFn,
  type ListenOptions,
  matchServerName,
  type NetAddress,
  type TlsCertificate,
  type TlsInfo,
  type TlsOptions,
} from "./src/transport.ts";
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
  AUTH_MECHANISMS,
  type AuthCredentials,
  type AuthMechanism,
  decodeBase64Text,
  encodeBase64Text,
  SaslExchange,
  type SaslStep,
} from "./src/sasl.ts";
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

/**
 * Starts an SMTP server on the runtime that runs this code (Deno, Bun or
 * Node), with that runtime's native listener. Resolves once listening;
 * `server.addr.port` is the bound port (ask for port 0 to get a free one).
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd";
 *
 * const server = await serve({
 *   port: 0,
 *   async onMessage(message) {
 *     console.log(message.from, message.to, (await message.text()).length);
 *   },
 * });
 * console.log(`listening on ${server.addr.hostname}:${server.addr.port}`);
 * await server.close();
 * ```
 */
export async function serve(options: ServeOptions = {}): Promise<Server> {
  const g = globalThis as { Deno?: unknown; Bun?: unknown };
  const shim = g.Deno !== undefined
    ? await import("./runtimes/deno.ts")
    : g.Bun !== undefined
    ? await import("./runtimes/bun.ts")
    : await import("./runtimes/node.ts");
  return shim.serve(options);
}
