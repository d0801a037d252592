/**
 * What hooks see of a connection, and the structured log entries.
 *
 * @module
 */

import type { TlsInfo } from "./transport.ts";

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
  /** The client's IP address; `"unix"` on a Unix domain socket (`serve({ path })`). */
  readonly remoteAddress: string;
  /** The client's port; 0 on a Unix domain socket. */
  readonly remotePort: number;
  /** The server's IP address on this connection; `"unix"` on a Unix domain socket. */
  readonly localAddress: string;
  /** The server's port on this connection; 0 on a Unix domain socket. */
  readonly localPort: number;
  /** The name given with EHLO/HELO, or `null` before it. */
  readonly heloName: string | null;
  /** Whether the client greeted with EHLO (or LHLO in LMTP). */
  readonly esmtp: boolean;
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
}

/** A structured log entry. Command lines of AUTH are redacted. */
export type LogEntry =
  | { type: "listen"; hostname: string; port: number; runtime: string }
  | {
    type: "connect";
    session: string;
    remoteAddress: string;
    remotePort: number;
  }
  | { type: "refused"; remoteAddress: string; reason: string }
  | { type: "command"; session: string; line: string }
  | { type: "reply"; session: string; text: string }
  | {
    type: "message";
    session: string;
    id: string;
    from: string;
    to: readonly string[];
    size: number;
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
  | { type: "error"; session?: string; message: string; error: unknown }
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
