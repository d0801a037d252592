/**
 * The {@link Server}: the accept loop over a runtime shim's listener, the
 * connection limits, a driver (`driver.ts`) per connection, and
 * {@link createServer}.
 *
 * Runtime-free: the shim (`runtimes/*.ts`) supplies the listener.
 *
 * @module
 */

import type { EngineOptions } from "./options.ts";
import { ENGINE_DEFAULTS, sharedEngineOptions } from "./options.ts";
import type { IncomingMessage } from "./message.ts";
import { type ClientLimits, LocalClientLimits } from "./limits.ts";
import type { ErrorContext, Logger, Session } from "./session.ts";
import type {
  Connection,
  Listener,
  ListenFn,
  NetAddress,
  TlsOptions,
} from "./transport.ts";
import {
  type HookResult,
  proxyTrusts,
  type ResolvedServeOptions,
  resolveServeOptions,
  type ServeOptions,
} from "./serve_options.ts";
import type { DriverHost } from "./host.ts";
import { errorReporter } from "./hooks.ts";
import { Inbox, type LoopMessage } from "./inbox.ts";
import { replyAndClose } from "./preamble.ts";
import { ConnectionDriver } from "./driver.ts";
import { type DnsResolverFactory, ReverseDns } from "./rdns.ts";
import type { MilterServer, MilterSession } from "./milter/session.ts";
import { type RefusalCode, ServerCounters, type ServerStats } from "./stats.ts";
import { ACCEPT, type DirectListener } from "./shim_kit.ts";

export type {
  HookResult,
  ProxyProtocolOptions,
  ServeOptions,
} from "./serve_options.ts";
export type { LoopMessage } from "./inbox.ts";
export type { ServerStats } from "./stats.ts";

/**
 * A running SMTP server.
 *
 * Also an async iterable of messages, the "run it in your own loop" style:
 * each message is acknowledged (250) when the loop body has handled it and
 * asks for the next one. Leaving the loop (break or throw) sends 451 4.3.0
 * for the message in hand; `message.reject(error)` chooses the reply. A
 * message whose body fails before the loop takes it (the client left, say)
 * is never handed out; once taken, reading its `raw` rejects: catch that in
 * the loop body, or the loop ends.
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd";
 *
 * const server = await serve({ port: 0 });
 * console.log(`listening on port ${server.addr.port}`);
 * for await (const message of server) {
 *   console.log(message.from, "→", message.to.join(", "), await message.text());
 * }
 * ```
 */
export interface Server extends AsyncIterable<LoopMessage> {
  /** The bound address (the real port when port 0 was asked for). */
  readonly addr: NetAddress;
  /** Open connections. */
  readonly connections: number;
  /** Resolves when the server has closed and every connection has ended. */
  readonly finished: Promise<void>;
  /**
   * Closes gracefully: stops accepting, idle sessions get 421 4.3.2, a
   * message in transfer gets `closeTimeout` to finish; resolves when all
   * connections have ended.
   */
  close(): Promise<void>;
  /**
   * Replaces the certificate (and the rest of `tls`: key, CA, minimum
   * version, SNI certificates) for every TLS handshake from now on: new
   * implicit-TLS connections and STARTTLS upgrades. Sessions already
   * encrypted keep theirs. The new options are checked first: a bad one
   * throws a `TypeError` and the old certificate stays. Throws a
   * `TypeError` on a server started without `tls`.
   *
   * @example
   * ```ts
   * import { serve } from "@smtpd/smtpd";
   *
   * declare function readPem(path: string): string;
   * const server = await serve({ port: 0, tls: { key: readPem("mx.key"), cert: readPem("mx.pem") } });
   * server.setTls({ key: readPem("mx.key"), cert: readPem("mx.pem") }); // after renewal
   * ```
   */
  setTls(tls: TlsOptions): void;
  /**
   * The counters the driver keeps (the README lists them), as a fresh
   * snapshot of plain, JSON-safe data: `formatPrometheus()` of
   * `smtpd/metrics` renders it, `mergeSnapshots()` sums workers'.
   *
   * @example
   * ```ts
   * import { serve } from "@smtpd/smtpd";
   * import { formatPrometheus } from "@smtpd/smtpd/metrics";
   *
   * const server = await serve({ port: 0 });
   * console.log(formatPrometheus(server.stats())); // for /metrics
   * await server.close();
   * ```
   */
  stats(): ServerStats;
}

/** Pause before iterating a listener again after its iteration threw. */
const LISTENER_RETRY_MS = 100;

/** Accepts connections and runs a driver for each. */
class SmtpServer implements Server, DriverHost {
  readonly options: ResolvedServeOptions;
  readonly engineOptions: EngineOptions;
  /** engineOptionsFor()'s four kinds, made once each. */
  #engineOptionsByKind: EngineOptions[] = [];
  readonly hooks: ServeOptions;
  readonly logger: Logger | undefined;
  /** Reports an application's hook error (onError, or console.error). */
  readonly reportError: (error: unknown, context: ErrorContext) => void;
  readonly finished: Promise<void>;
  #listener: Listener;
  /**
   * The open connections' drivers, each at its `slot`: an array, not a
   * Set. A Set that drivers were added to and deleted from kept the
   * deleted ones reachable for JavaScriptCore's young-generation
   * collections (Bun): every connection's driver, session and socket
   * survived them until a full collection, ~1.4 KB per connection
   * promoted and each young collection 3× longer (W2).
   */
  #drivers: ConnectionDriver[] = [];
  #closing: Promise<void> | null = null;
  /** Where connections and AUTH failures per client address are counted. */
  readonly limits: ClientLimits;
  /** The counters behind stats(). */
  readonly counters: ServerCounters;
  /** Messages for the `for await` loop (when there is no onMessage). */
  #inbox = new Inbox();
  /** The lookups of `reverseDns`, shared by every session; null: off. */
  readonly reverseDns: ReverseDns | null;
  /** A session's `milters` filters; null when there are none. */
  readonly milters: ((session: Session) => MilterSession) | null = null;

  constructor(
    listener: Listener,
    options: ServeOptions,
    resolved: ResolvedServeOptions,
    runtime: string,
    counters: ServerCounters,
    reverseDns: ReverseDns | null = null,
    milter: MilterModule | null = null,
  ) {
    this.counters = counters;
    const milters = resolved.milters;
    if (milter !== null && milters !== null) {
      const server: MilterServer = {
        serverName: resolved.engine.serverName ?? ENGINE_DEFAULTS.serverName,
        lmtp: resolved.engine.lmtp === true,
        logger: resolved.logger,
        observe: (m, stage, ms) => counters.milter(m, stage, ms),
        deliver: (message) => this.deliver(message),
        withdraw: (message) => this.withdraw(message),
      };
      this.milters = (session) =>
        new milter.MilterSession(milters, session, server);
    }
    this.options = resolved;
    this.reverseDns = reverseDns;
    this.engineOptions = resolved.engine;
    this.hooks = options;
    this.limits = this.options.limits ?? new LocalClientLimits({
      maxConnectionsPerIp: this.options.maxConnectionsPerIp,
      maxAuthFailuresPerIp: this.engineOptions.authMechanisms!.length > 0
        ? this.options.maxAuthFailuresPerIp
        : Infinity,
      authFailureWindow: this.options.authFailureWindow,
      now: Date.now,
    });
    // A logger that throws must not break the connection's loop (its catch
    // and finally log too, and a rejection there went unhandled).
    this.logger = resolved.logger;
    this.reportError = errorReporter(options.onError);
    this.#listener = listener;
    this.logger?.({
      type: "listen",
      hostname: listener.addr.hostname,
      port: listener.addr.port,
      runtime,
    });
    this.finished = this.#acceptLoop();
  }

  /**
   * The engine options of a connection of this kind (STARTTLS offered,
   * already encrypted): the same object for every connection of the
   * kind, not a copy per connection.
   */
  engineOptionsFor(startTls: boolean, secure: boolean): EngineOptions {
    const i = (startTls ? 1 : 0) + (secure ? 2 : 0);
    return this.#engineOptionsByKind[i] ??= sharedEngineOptions({
      ...this.engineOptions,
      startTls,
      secure,
      traceCommands: this.logger !== undefined,
    });
  }

  get addr(): NetAddress {
    return this.#listener.addr;
  }

  get connections(): number {
    return this.#drivers.length;
  }

  async #acceptLoop(): Promise<void> {
    // A shim's listener hands each connection over in its accept callback
    // (no promise and resumed loop per connection); another is iterated.
    const direct = (this.#listener as DirectListener)[ACCEPT];
    if (direct !== undefined) {
      await direct.call(this.#listener, (conn) => this.#accepted(conn));
    } else await this.#iterate();
    await Promise.all([...this.#drivers].map((d) => d.done));
    this.#inbox.end();
  }

  /**
   * Takes the listener's connections by its iteration, until it ends. A
   * listener whose iteration throws is iterated again after a pause: the
   * server must never stop accepting in silence. It ends when the
   * listener does (close()).
   */
  async #iterate(): Promise<void> {
    while (!this.#closing) {
      try {
        for await (const conn of this.#listener) this.#accepted(conn);
        break;
      } catch (error) {
        if (this.#closing) break;
        this.logger?.({
          type: "error",
          message: "listener failed; accepting again",
          error,
        });
        await new Promise((r) => setTimeout(r, LISTENER_RETRY_MS));
      }
    }
  }

  /**
   * A connection from the listener: admitted, or closed once the server
   * closes; one that cannot be admitted is closed alone (never throws).
   */
  #accepted(conn: Connection): void {
    try {
      if (this.#closing) return conn.close();
      this.#admit(conn);
    } catch (error) {
      this.logger?.({
        type: "error",
        message: "could not admit a connection",
        error,
      });
      try {
        conn.close(true);
      } catch { /* gone already */ }
    }
  }

  #admit(conn: Connection): void {
    const ip = conn.remoteAddr.hostname;
    const o = this.options;
    // Implicit TLS: the shim hands out a connection once its handshake is
    // done (a failed one is counted by onTlsFailure).
    if (o.implicitTls && conn.tls !== null) this.counters.implicitSuccess++;
    // PROXY protocol: a peer that may not send a header gets nothing at
    // all (a shim that read the header itself checked already). One with
    // no address left before it was accepted (a proxy's connect-only
    // health check): nothing to tell.
    if (
      o.proxyProtocol !== null && conn.proxy === undefined &&
      !proxyTrusts(o, ip)
    ) {
      if (ip === "") return conn.close(true);
      this.refused(
        ip,
        "proxy_untrusted",
        "PROXY header from an untrusted address",
      );
      conn.close();
      return;
    }
    if (this.#drivers.length >= o.maxConnections) {
      return this.refuse(
        conn,
        ip,
        "too_many_connections",
        "too many connections",
      );
    }
    // Counted per IP address by the driver (claimIp in preamble.ts), by
    // the client's real address once a PROXY header has named it.
    // In #drivers before it runs: a session can end before its first await
    // (over maxConnectionsPerIp), and driverEnded() must find it.
    const driver = new ConnectionDriver(this, conn);
    driver.slot = this.#drivers.length;
    this.#drivers.push(driver);
    driver.start();
  }

  /** A driver's connection is over (its last act, before `done` settles). */
  driverEnded(driver: ConnectionDriver): void {
    this.#forget(driver);
    const counted = driver.countedIp;
    if (counted !== null) this.limits.disconnect(counted);
  }

  /** Takes `driver` out of #drivers (once): the last one takes its slot. */
  #forget(driver: ConnectionDriver): void {
    const drivers = this.#drivers;
    const i = driver.slot;
    if (i < 0) return;
    driver.slot = -1;
    const last = drivers.pop()!;
    if (last === driver) return;
    drivers[i] = last;
    last.slot = i;
  }

  /**
   * Counts a connection under `key` (see clientKey) for
   * maxConnectionsPerIp: false when that would be over the limit. The
   * driver calls it before the greeting (after the PROXY header, which
   * names the address to count).
   */
  claimIp(key: string): boolean | Promise<boolean> {
    // On a Unix socket every client is local: no per-address limit.
    if (this.options.path !== null) return true;
    return this.limits.connect(key);
  }

  /** A connection refused before its greeting: counted under `code`, logged with `reason`. */
  refused(ip: string, code: RefusalCode, reason: string): void {
    this.counters.refuse(code);
    this.logger?.({ type: "refused", remoteAddress: ip, reason, code });
  }

  /**
   * Refuses a connection ({@link refused}):
   * 421 4.7.0, then close (see {@link replyAndClose} for `write`).
   */
  refuse(
    conn: Connection,
    ip: string,
    code: RefusalCode,
    reason: string,
    write?: (bytes: Uint8Array) => void | Promise<void>,
  ): void {
    this.refused(ip, code, reason);
    const name = this.engineOptions.serverName ?? "localhost";
    replyAndClose(
      conn,
      `421 4.7.0 ${name} Too many connections, try again later`,
      write,
    );
  }

  /** Hands a message to onMessage, or to the `for await` loop. */
  deliver(message: IncomingMessage): HookResult {
    if (this.hooks.onMessage) {
      return this.hooks.onMessage(message, message.session);
    }
    return this.#inbox.deliver(message);
  }

  /** Takes a message out of the `for await` inbox, if it is still there. */
  withdraw(message: IncomingMessage): void {
    this.#inbox.withdraw(message);
  }

  stats(): ServerStats {
    return this.counters.snapshot();
  }

  [Symbol.asyncIterator](): AsyncIterator<LoopMessage> {
    return this.#inbox[Symbol.asyncIterator]();
  }

  setTls(tls: TlsOptions): void {
    if (this.#listener.setTls === undefined) {
      throw new TypeError(
        "Cannot replace the certificate: the server was started without tls",
      );
    }
    this.#listener.setTls(tls);
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#listener.close();
      // Over a copy: a driver may end (and leave #drivers) as it is told.
      for (const d of [...this.#drivers]) d.shutdown(false);
      const ms = this.options.closeTimeout;
      let timer: ReturnType<typeof setTimeout> | undefined;
      if (ms !== Infinity) {
        timer = setTimeout(() => {
          for (const d of [...this.#drivers]) d.shutdown(true);
        }, ms);
      }
      await this.finished;
      clearTimeout(timer);
      // Messages nobody took: the senders retry.
      this.#inbox.refuseWaiting();
    })();
    return this.#closing;
  }
}

/**
 * Starts a server on the listener of a runtime shim. `serve()` (in `mod.ts`
 * and in each `runtimes/*.ts`) calls this with its shim; call it directly
 * to bring your own {@link Listener}. `runtimeServices.dnsResolver` makes
 * the DNS resolver of the `reverseDns` option (each shim passes its
 * runtime's); without it, `reverseDns` throws a `TypeError`.
 *
 * @example
 * ```ts
 * import { createServer } from "@smtpd/smtpd/transport";
 * import { listen } from "@smtpd/smtpd/node";
 *
 * const server = await createServer(listen, "node", { port: 0 });
 * await server.close();
 * ```
 */
export async function createServer(
  listen: ListenFn,
  runtime: string,
  options: ServeOptions = {},
  runtimeServices: { dnsResolver?: DnsResolverFactory } = {},
): Promise<Server> {
  // Validate everything before anything listens.
  const resolved = resolveServeOptions(options);
  const reverseDns = await reverseDnsOf(resolved, runtimeServices.dnsResolver);
  // Loaded only with filters: node:net and node:fs.
  const milter = resolved.milters === null
    ? null
    : await import("./milter/session.ts");
  const proxy = resolved.proxyProtocol;
  const counters = new ServerCounters();
  // Made once listen() resolves: no connection is refused before.
  let server: SmtpServer | undefined = undefined;
  const listener = await listen({
    hostname: resolved.hostname,
    port: resolved.port,
    ...(resolved.path !== null ? { path: resolved.path } : {}),
    tls: options.tls,
    implicitTls: resolved.implicitTls,
    handshakeTimeout: resolved.handshakeTimeout,
    ...(proxy !== null
      ? {
        proxyProtocol: {
          trusted: (address: string) => proxyTrusts(resolved, address),
          maxV2Length: proxy.maxV2Length,
          onRefused: (remoteAddress, reason, code) =>
            server?.refused(remoteAddress, code, reason),
        },
      }
      : {}),
    reusePort: resolved.reusePort,
    onTlsFailure: () => counters.implicitFailure++,
  });
  server = new SmtpServer(
    listener,
    options,
    resolved,
    runtime,
    counters,
    reverseDns,
    milter,
  );
  return server;
}

/** The module of the `milters` option. */
type MilterModule = typeof import("./milter/session.ts");

/** The server's one {@link ReverseDns} (its cache and lookups shared), or null. */
async function reverseDnsOf(
  o: ResolvedServeOptions,
  dnsResolver: DnsResolverFactory | undefined,
): Promise<ReverseDns | null> {
  if (o.reverseDns === null) return null;
  if (typeof dnsResolver !== "function") {
    throw new TypeError(
      "Cannot use option reverseDns: createServer was given no dnsResolver",
    );
  }
  // A Unix socket's clients have no address to look up.
  if (o.path !== null) return null;
  const resolver = await dnsResolver(
    o.dnsServers === null ? {} : { dnsServers: o.dnsServers },
  );
  return new ReverseDns(resolver, o.reverseDns);
}
