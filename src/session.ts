/**
 * What hooks see of a connection, and the structured log entries.
 *
 * @module
 */

import type { TlsInfo } from "./transport.ts";
import type { ProxyEndpoint, ProxyTlvs } from "./proxy.ts";
import type { Message } from "./message.ts";
import type { ReverseDnsResult } from "./rdns.ts";
import type { RefusalCode } from "./stats.ts";

/**
 * What a PROXY protocol header said about a connection (see
 * `proxyProtocol` in the serve options), as `session.proxy`.
 *
 * With `command: "proxy"` and a TCP family, the session's
 * `remoteAddress`/`remotePort` are the original client's (`source`). With
 * `command: "local"` (a v2 LOCAL header: the proxy's own health check),
 * family `unknown` (v1 `UNKNOWN`, v2 AF_UNSPEC) or `unix`, they stay the
 * real peer's, which is the proxy.
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd";
 *
 * await serve({
 *   port: 0,
 *   proxyProtocol: { trusted: ["10.0.0.0/8"] },
 *   onConnect(session) {
 *     if (session.proxy?.healthCheck) return;
 *     console.log(session.remoteAddress, "via", session.proxy?.address);
 *   },
 * });
 * ```
 */
export interface SessionProxy {
  /** PROXY protocol version of the header. */
  readonly version: 1 | 2;
  /** `proxy`: relayed for a client; `local`: the proxy's own connection (a health check). */
  readonly command: "proxy" | "local";
  /** Address family of the header's addresses (`unknown` for LOCAL and UNKNOWN). */
  readonly family: "tcp4" | "tcp6" | "unix" | "unknown";
  /** The proxy's own address: the real peer of this TCP connection. */
  readonly address: string;
  /** The proxy's own port on this TCP connection. */
  readonly port: number;
  /** The original client as the header gave it (`null` for LOCAL and UNKNOWN). */
  readonly source: ProxyEndpoint | null;
  /** The address the client connected to, at the proxy (`null` for LOCAL and UNKNOWN). */
  readonly destination: ProxyEndpoint | null;
  /**
   * The proxy opened this connection for itself (a health check), not for
   * a client: a v2 LOCAL header, or a header whose source is the proxy's
   * own end of this TCP connection (HAProxy's v1 health checks send
   * `PROXY TCP4` with the check's own addresses). Leave these out of
   * per-client statistics.
   */
  readonly healthCheck: boolean;
  /** v2 TLVs: `authority` (the SNI the client sent the proxy), `ssl` (TLS the proxy terminated), `alpn`, ... Empty for v1. */
  readonly tlvs: ProxyTlvs;
}

/**
 * One client connection as hooks see it. The driver keeps it up to date.
 *
 * @example
 * ```ts
 * import { serve, SmtpError } from "@smtpd/smtpd";
 *
 * await serve({
 *   port: 0,
 *   onMailFrom(address, session) {
 *     if (!session.secure) throw new SmtpError(530, "5.7.0", "Must issue a STARTTLS command first");
 *   },
 * });
 * ```
 */
export interface Session {
  /** A unique id (also in every log entry of the connection). */
  readonly id: string;
  /**
   * The client's IP address; `"unix"` on a Unix domain socket (`serve({
   * path })`). Behind a PROXY protocol proxy, the original client's (from
   * the header); see {@link Session.proxy}.
   */
  readonly remoteAddress: string;
  /** The client's port: the original client's behind a proxy, 0 on a Unix domain socket. */
  readonly remotePort: number;
  /**
   * With the `reverseDns` option: the client's forward-confirmed name
   * (lower case, as Postfix's `client_name`), or `"unknown"` when its
   * address has no PTR name that resolves back to it, or the lookup failed
   * or timed out. `null` when `reverseDns` is off, and on a Unix socket or
   * a proxy's health check (no lookup is made). Known before `onConnect`.
   */
  readonly clientHostname: string | null;
  /**
   * With the `reverseDns` option: the whole lookup (`status`: `confirmed`,
   * `unconfirmed`, `none` or `tempfail`; `reverseName`: the first PTR name,
   * confirmed or not; `ptrNames`), else `null` (see
   * {@link Session.clientHostname}).
   */
  readonly reverseDns: ReverseDnsResult | null;
  /** The server's IP address on this connection; `"unix"` on a Unix domain socket. */
  readonly localAddress: string;
  /** The server's port on this connection; 0 on a Unix domain socket. */
  readonly localPort: number;
  /** The name given with EHLO/HELO, or `null` before it. */
  readonly heloName: string | null;
  /** Whether the client greeted with EHLO (or LHLO in LMTP). */
  readonly esmtp: boolean;
  /** Whether this is an LMTP session (RFC 2033: `serve({ lmtp: true })`). */
  readonly lmtp: boolean;
  /** Whether the connection is encrypted. */
  readonly secure: boolean;
  /** TLS version and cipher when encrypted. */
  readonly tls: TlsInfo | null;
  /** The authenticated user, or `null`. */
  readonly user: string | null;
  /** Messages accepted on this connection. */
  readonly messages: number;
  /** Transactions started (MAIL accepted) on this connection. */
  readonly transactions: number;
  /** When the connection was accepted (ms since the epoch). */
  readonly openedAt: number;
  /**
   * The PROXY protocol header of this connection (its version, the
   * proxy's own address, TLVs), or `null` when `proxyProtocol` is off.
   * `proxy.healthCheck` marks a proxy's health check.
   */
  readonly proxy: SessionProxy | null;
}

/** A structured log entry. Command lines of AUTH are redacted. */
export type LogEntry =
  | { type: "listen"; hostname: string; port: number; runtime: string }
  | {
    type: "connect";
    session: string;
    remoteAddress: string;
    remotePort: number;
    /**
     * With PROXY protocol on: the proxy's own address, the header's
     * version and command, and whether the connection is the proxy's
     * health check rather than a client's (see `SessionProxy`).
     */
    proxy?: {
      address: string;
      port: number;
      version: 1 | 2;
      command: "proxy" | "local";
      healthCheck: boolean;
    };
    /** With `reverseDns`: the lookup's result (see `Session.reverseDns`). */
    reverseDns?: ReverseDnsResult;
  }
  | {
    type: "refused";
    remoteAddress: string;
    reason: string;
    /** The `reason` label it is counted under in `smtpd_connections_refused_total`. */
    code: RefusalCode;
  }
  | { type: "command"; session: string; line: string }
  | { type: "reply"; session: string; text: string }
  | {
    type: "message";
    session: string;
    id: string;
    from: string;
    to: readonly string[];
    size: number;
    /** With `milters`: `accept`, `quarantine` or `discard`. */
    milter?: string;
  }
  | {
    /**
     * A milter filter refused (`reject`, `tempfail`) or discarded at
     * `stage` (`connect`, `helo`, `mail`, `rcpt`, `data`, `header`,
     * `eoh`, `body`, `eom`); `failure` when the verdict is its error
     * policy's (the filter was down, slow or spoke garbage); the
     * message's `id`, `from` and `to` from DATA on.
     */
    type: "milter";
    session: string;
    milter: string;
    stage: string;
    action: string;
    reply?: string;
    failure?: string;
    id?: string;
    from?: string;
    to?: readonly string[];
  }
  | {
    type: "auth";
    session: string;
    mechanism: string;
    username: string;
    success: boolean;
  }
  | {
    /**
     * The client's address used up its AUTH failure budget
     * (`maxAuthFailuresPerIp`): AUTH from it gets 454 4.7.0 for
     * `authFailureWindow` ms. Logged once per lock-out.
     */
    type: "auth-lockout";
    session: string;
    remoteAddress: string;
    failures: number;
  }
  | {
    type: "error";
    session?: string;
    message: string;
    error: unknown;
    /** Set when an application's hook threw (also given to `onError`). */
    hook?: HookName;
  }
  | { type: "close"; session: string; reason: string; messages: number };

/**
 * Receives structured log entries.
 *
 * @example
 * ```ts
 * import type { Logger } from "@smtpd/smtpd";
 *
 * const logger: Logger = (entry) => console.log(JSON.stringify(entry));
 * ```
 */
export type Logger = (entry: LogEntry) => void;

/**
 * The hook whose error {@link ErrorContext} reports: a hook of the serve
 * options, or `"auth"` for the `auth` options' `verify`, `lookupPassword`
 * and `authorize`.
 *
 * @example
 * ```ts
 * import type { HookName } from "@smtpd/smtpd";
 *
 * const hook: HookName = "onMessage";
 * ```
 */
export type HookName =
  | "onConnect"
  | "onHelo"
  | "onMailFrom"
  | "onRcptTo"
  | "onMessage"
  | "auth"
  | "onClose";

/**
 * Where an application's error happened: the second argument of the
 * `onError` serve option.
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd";
 *
 * await serve({
 *   port: 0,
 *   async onMessage(message) {
 *     await message.bytes();
 *     throw new Error("database down");
 *   },
 *   onError(error, context) {
 *     console.error(
 *       `${context.hook} failed for ${context.session.remoteAddress}`,
 *       context.message?.id,
 *       error,
 *     );
 *   },
 * });
 * ```
 */
export interface ErrorContext {
  /** The hook that threw or rejected. */
  readonly hook: HookName;
  /** The session it ran for (its `id` is in every log entry of the connection). */
  readonly session: Session;
  /** With `onMessage`: the message it was handling; otherwise `null`. */
  readonly message: Message | null;
}
