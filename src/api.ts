/**
 * The root API shared by `mod.ts` and each runtime's module (`smtpd/deno`,
 * `smtpd/bun`, `smtpd/node`): what an application that receives mail uses.
 * Each of those adds its own `serve()`. The engine and the other building
 * blocks are on subpaths (`smtpd/engine`, `smtpd/transport`).
 *
 * @module
 */

export { SmtpError } from "./errors.ts";
export type { AuthOptions } from "./auth.ts";
export type { AuthCredentials, AuthMechanism } from "./sasl.ts";
export type {
  HookResult,
  ProxyProtocolOptions,
  ReverseDnsServeOptions,
  ServeOptions,
} from "./serve_options.ts";
export type { ReverseDnsResult, ReverseDnsStatus } from "./rdns.ts";
export type {
  MilterErrorPolicy,
  MilterModification,
  MilterOptions,
  MilterRejection,
  MilterResult,
  MilterTimeouts,
  MilterVerdict,
} from "./milter/options.ts";
export type { HeaderModification } from "./milter/headers.ts";
export type { Server, ServerStats } from "./server.ts";
export type { RefusalCode } from "./stats.ts";
export type { LoopMessage } from "./inbox.ts";
export type { Email, Message } from "./message.ts";
export type {
  AttemptVerdict,
  AuthStart,
  ClientLimits,
  FailureCount,
} from "./limits.ts";
export type {
  ErrorContext,
  HookName,
  LogEntry,
  Logger,
  Session,
  SessionProxy,
} from "./session.ts";
export type {
  ProxyEndpoint,
  ProxyRawTlv,
  ProxySslInfo,
  ProxyTlvs,
} from "./proxy.ts";
export type {
  NetAddress,
  TlsCertificate,
  TlsInfo,
  TlsOptions,
} from "./transport.ts";
export type { BodyType, MailParams, RcptParams, Recipient } from "./engine.ts";
export type { Mailbox } from "./address.ts";
export type { BareLineEndingPolicy, EngineOptions } from "./options.ts";
