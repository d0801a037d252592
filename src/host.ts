/**
 * What a connection's driver asks of the server that accepted it: the
 * resolved options, the application's hooks, the logger, the per-client
 * counts and the way to the application (onMessage or the `for await`
 * loop). The server implements it; the driver and its helpers use it.
 *
 * @module
 */

import type { EngineOptions } from "./options.ts";
import type { IncomingMessage } from "./message.ts";
import type { ClientLimits } from "./limits.ts";
import type { ErrorContext, Logger, Session } from "./session.ts";
import type { MilterSession } from "./milter/session.ts";
import type { Connection } from "./transport.ts";
import type { ReverseDns } from "./rdns.ts";
import type { RefusalCode, ServerCounters } from "./stats.ts";
import type {
  HookResult,
  ResolvedServeOptions,
  ServeOptions,
} from "./serve_options.ts";

/**
 * The server as its drivers see it.
 *
 * @example
 * ```ts
 * import type { DriverHost } from "./host.ts";
 *
 * function countRefusal(host: DriverHost, ip: string): void {
 *   host.refused(ip, "other", "example");
 * }
 * ```
 */
export interface DriverHost {
  /** serve()'s options, resolved. */
  readonly options: ResolvedServeOptions;
  /** The application's hooks (serve()'s options as given). */
  readonly hooks: ServeOptions;
  /** The logger (its exceptions swallowed), if any. */
  readonly logger: Logger | undefined;
  /** Reports an application's hook error (onError, or console.error). */
  readonly reportError: (error: unknown, context: ErrorContext) => void;
  /** Where connections and AUTH failures per client address are counted. */
  readonly limits: ClientLimits;
  /** The `reverseDns` lookups, shared by every session; null when off. */
  readonly reverseDns: ReverseDns | null;
  /** Makes a session's `milters` filters; null when there are none. */
  readonly milters: ((session: Session) => MilterSession) | null;
  /** The server's counters (`server.stats()`), incremented where things happen. */
  readonly counters: ServerCounters;
  /** The engine options of a connection of this kind (shared, not copied). */
  engineOptionsFor(startTls: boolean, secure: boolean): EngineOptions;
  /** Counts a connection for maxConnectionsPerIp: false when over. */
  claimIp(key: string): boolean | Promise<boolean>;
  /** A connection refused before its greeting: counted under `code`, logged with `reason`. */
  refused(ip: string, code: RefusalCode, reason: string): void;
  /** Refuses a connection ({@link DriverHost.refused}): 421 4.7.0, then close. */
  refuse(
    conn: Connection,
    ip: string,
    code: RefusalCode,
    reason: string,
    write?: (bytes: Uint8Array) => void | Promise<void>,
  ): void;
  /** Hands a message to onMessage, or to the `for await` loop. */
  deliver(message: IncomingMessage): HookResult;
  /** Takes a message out of the `for await` inbox, if it is still there. */
  withdraw(message: IncomingMessage): void;
  /** A driver's connection is over (its last act). */
  driverEnded(driver: { readonly countedIp: string | null }): void;
}
