/**
 * The options of `serve()`: their types, their defaults (one table), the
 * names it knows, and their validation, done once before anything
 * listens ({@link resolveServeOptions}).
 *
 * @module
 */

import type { MailParams, RcptParams } from "./engine.ts";
import { type AuthOptions, resolveAuth } from "./auth.ts";
// deno-lint-ignore no-unused-vars -- named by {@link SmtpError} in the docs
import type { SmtpError } from "./errors.ts";
import type { Message } from "./message.ts";
import {
  ENGINE_DEFAULTS,
  type EngineOptions,
  limitOption,
  resolveEngineOptions,
} from "./options.ts";
import { checkKeys } from "./keys.ts";
import {
  type ClientLimits,
  DEFAULT_AUTH_FAILURE_WINDOW,
  DEFAULT_MAX_AUTH_FAILURES_PER_IP,
  DEFAULT_MAX_CONNECTIONS_PER_IP,
} from "./limits.ts";
import type { ErrorContext, LogEntry, Logger, Session } from "./session.ts";
import { CidrSet, LOOPBACK } from "./cidr.ts";
import {
  PROXY_V2_ABSOLUTE_MAX_LENGTH,
  PROXY_V2_DEFAULT_MAX_LENGTH,
  PROXY_V2_MIN_MAX_LENGTH,
} from "./proxy.ts";
import { HANDSHAKE_TIMEOUT_MS, type TlsOptions } from "./transport.ts";
import { dnsServersOption, REVERSE_DNS_DEFAULTS } from "./rdns.ts";
import { type MilterOptions, resolveMilterOptions } from "./milter/options.ts";

/**
 * PROXY protocol settings (the `proxyProtocol` option of {@link serve};
 * `true` means all defaults).
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd";
 *
 * // Behind HAProxy on 10.0.0.5 and 10.0.0.6 (send-proxy-v2):
 * await serve({
 *   hostname: "0.0.0.0",
 *   port: 2525,
 *   proxyProtocol: { trusted: ["10.0.0.5", "10.0.0.6"] },
 * });
 * ```
 */
export interface ProxyProtocolOptions {
  /**
   * Peers allowed to send a header: IPv4 and IPv6 addresses and CIDR
   * ranges (`"10.0.0.0/8"`, `"fd00::/8"`). A connection from anywhere
   * else is closed without a greeting. Default loopback
   * (`127.0.0.0/8`, `::1`). On a Unix domain socket (`path`) every peer
   * may send one, whatever this list says: the socket file's permissions
   * say who may connect (as HAProxy's `send-proxy` over a Unix socket
   * expects).
   */
  trusted?: readonly string[];
  /**
   * Largest v2 header accepted, in bytes (232 to 65551; default 4096).
   * A v1 header is at most 107 bytes, as the protocol says.
   */
  maxV2Length?: number;
}

/**
 * Reverse DNS settings (the `reverseDns` option of {@link serve}; `true`
 * means all defaults). Times are in milliseconds.
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd";
 *
 * await serve({
 *   port: 2525,
 *   reverseDns: { timeout: 3000, cacheSize: 10000 },
 *   onConnect(session) {
 *     console.log(session.remoteAddress, session.clientHostname);
 *   },
 * });
 * ```
 */
export interface ReverseDnsServeOptions {
  /**
   * Time for the whole lookup of one client (its PTR names and their
   * A/AAAA records); past it the result is `tempfail` and the name
   * `unknown`. The greeting waits this long at most. Default 5000.
   */
  timeout?: number;
  /** Most client addresses whose result is kept; 0 keeps none. Default 1000. */
  cacheSize?: number;
  /** How long a `confirmed` or `unconfirmed` result is kept. Default 3600000 (1 hour). */
  cacheTtl?: number;
  /** How long a `none` or `tempfail` result is kept. Default 60000. */
  negativeCacheTtl?: number;
}

/** A hook's result: nothing (accept), or a promise of nothing. Throw {@link SmtpError} to reject. */
export type HookResult = void | Promise<void>;

/**
 * Options of {@link serve}. All optional; every limit is validated when the
 * server starts (zero, negative, NaN or a string throws a `TypeError`).
 *
 * @example
 * ```ts
 * import { serve, SmtpError } from "@smtpd/smtpd";
 *
 * const server = await serve({
 *   hostname: "127.0.0.1",
 *   port: 2525,
 *   serverName: "mx.example.org",
 *   maxMessageSize: 10 * 1024 * 1024,
 *   onRcptTo(address) {
 *     if (!address.endsWith("@example.org")) {
 *       throw new SmtpError(550, "5.7.1", "Relaying denied");
 *     }
 *   },
 *   async onMessage(message) {
 *     console.log(message.from, message.to, (await message.bytes()).length);
 *   },
 * });
 * ```
 */
export interface ServeOptions extends
  Omit<
    EngineOptions,
    "startTls" | "secure" | "traceCommands" | "authMechanisms" | "authRequired"
  > {
  /** Interface to listen on. Default `"127.0.0.1"` (pass `"0.0.0.0"` or `"::"` to accept from the network). */
  hostname?: string;
  /** Port to listen on; 0 picks a free port (see `server.addr`). Default 2525. */
  port?: number;
  /**
   * Listen on a Unix domain socket at this path instead of TCP (not with
   * `hostname` or `port`): the usual place for an LMTP server
   * (`lmtp: true`), and for SMTP too. A socket file left by a crashed run
   * is replaced only when nothing listens on it (connecting is refused);
   * a path where a server listens (even one that does not accept, or
   * whose backlog is full), or that exists and is not a socket, is
   * refused with an error. `close()` removes the file. The file's permissions follow the
   * process's umask (`chmod` it, or set the umask, to let a mail system
   * in another user connect).
   *
   * On such a socket, `session.remoteAddress` and `session.localAddress`
   * are `"unix"`, the ports 0; `server.addr` is `{ hostname: "unix",
   * port: 0, path }`. `maxConnectionsPerIp` does not apply (every client
   * is local); `maxConnections` does.
   *
   * @example
   * ```ts
   * import { serve } from "@smtpd/smtpd";
   *
   * const server = await serve({ lmtp: true, path: "/run/smtpd/lmtp.sock" });
   * console.log(server.addr.path); // "/run/smtpd/lmtp.sock"
   * ```
   */
  path?: string;
  /** Certificate and key: enables STARTTLS (or implicit TLS with `implicitTls`). */
  tls?: TlsOptions;
  /** TLS from the first byte (RFC 8314, port 465 style). Needs `tls`. Default `false`. */
  implicitTls?: boolean;
  /** Open connections at most; more get 421 4.7.0 and are closed. Default 1000. */
  maxConnections?: number;
  /**
   * Open connections per client address at most; more get 421 4.7.0. An
   * IPv4 client counts by its address (an IPv4-mapped IPv6 address as its
   * IPv4 address), an IPv6 client by its /64 network (a host picks any
   * address in its /64). Behind a relay or a load balancer without the
   * PROXY protocol, every client has the balancer's address: raise it.
   * Default 50.
   */
  maxConnectionsPerIp?: number;
  /**
   * Failed AUTH attempts (535) per client address, across its
   * connections, within `authFailureWindow`; past them AUTH from that
   * address gets 454 4.7.0 (even with the right password) until
   * `authFailureWindow` has passed since the last counted failure, and one
   * `auth-lockout` entry is logged. Each failure is also answered only
   * after 250 ms per failure counted (at most 3 s), without holding up
   * other connections. An IPv6 client counts by its /64. An attempt is
   * counted when it begins: attempts from one address at once wait for
   * those in flight when these could use up the budget (at most 10 s,
   * then 454 4.7.0), so that no more than this many passwords are ever
   * checked per window. The addresses are kept in a table of 10,000 at
   * most; one is forgotten only once its window and lock-out are over,
   * and while the table is full, AUTH from an address not in it gets
   * 454 4.7.0 (a flood of addresses cannot free a lock-out).
   * `Infinity` turns it off. Default 10.
   */
  maxAuthFailuresPerIp?: number;
  /** Milliseconds that `maxAuthFailuresPerIp` counts over, and a lock-out lasts. Default 900000 (15 minutes). */
  authFailureWindow?: number;
  /**
   * Where `maxConnectionsPerIp` and `maxAuthFailuresPerIp` are counted.
   * By default in this process; several processes serving one port (see
   * `reusePort`) share the counts by each passing an implementation that
   * asks one process holding them (`smtpd --workers` does this over its
   * IPC channel). Given this, `maxConnectionsPerIp`,
   * `maxAuthFailuresPerIp` and `authFailureWindow` are the object's to
   * apply, not this server's.
   *
   * @example
   * ```ts
   * import { serve } from "@smtpd/smtpd";
   * import { LocalClientLimits } from "@smtpd/smtpd/engine";
   *
   * const limits = new LocalClientLimits({
   *   maxConnectionsPerIp: 20,
   *   maxAuthFailuresPerIp: 5,
   *   authFailureWindow: 600000,
   *   now: () => Date.now(),
   * });
   * const server = await serve({ port: 2525, limits });
   * ```
   */
  limits?: ClientLimits;
  /**
   * Milliseconds a hook may take before the client gets 451 4.3.0. For
   * `onMessage` this counts after the body has ended, and also bounds how
   * long it may leave `raw` unread while the client sends. Default 60000.
   */
  hookTimeout?: number;
  /** Milliseconds `close()` lets a message in transfer finish before closing it. Default 30000. */
  closeTimeout?: number;
  /**
   * Milliseconds a TLS handshake (STARTTLS or implicit) may take; with
   * `proxyProtocol`, also how long the PROXY header may take to arrive.
   * Default 30000.
   */
  handshakeTimeout?: number;
  /**
   * PROXY protocol v1 and v2 (HAProxy's `send-proxy` / `send-proxy-v2`,
   * and cloud load balancers). Off by default; `true` or an object turns
   * it on. Then every connection must start with a PROXY header before
   * the server sends anything (for `implicitTls`, before the TLS
   * handshake), and only from a trusted peer (on a Unix socket, `path`,
   * from any peer: see {@link ProxyProtocolOptions.trusted}); otherwise it is closed
   * without a greeting (a `refused` log entry says why). The session's
   * `remoteAddress`/`remotePort` are then the original client's,
   * `maxConnectionsPerIp` counts original clients, and `session.proxy`
   * tells the rest (the proxy's own address, TLVs). A proxy's health
   * check (a v2 LOCAL header, or HAProxy's v1 check naming its own
   * connection) is served as usual, marked `session.proxy.healthCheck`
   * and `healthCheck` in the `connect` log entry.
   */
  proxyProtocol?: ProxyProtocolOptions | boolean;
  /**
   * Milliseconds to wait before the 220 greeting (Postfix postscreen's
   * pregreet test): a client that sends anything before the greeting gets
   * `554 5.7.1` and is disconnected (a `refused` log entry, no session
   * hooks). With `proxyProtocol`, the wait starts after the header.
   * Default 0 (no wait).
   */
  greetingDelay?: number;
  /**
   * Look up each client's name before the greeting, as Postfix does:
   * the PTR names of its address, of which one counts only when its A
   * (IPv4) or AAAA (IPv6) records give the address back (forward-confirmed
   * reverse DNS). `session.clientHostname` is then that name, or
   * `unknown`; `session.reverseDns` holds the whole result (`confirmed`,
   * `unconfirmed` for a PTR that does not resolve back, `none`, `tempfail`
   * for a failure or the timeout); a `Received` header written by the
   * Maildir names the client `from HELO (NAME [ADDRESS])`.
   *
   * One lookup per connection, started once the client's address is known
   * (after the PROXY header) and run alongside `greetingDelay`; the
   * greeting waits for it, `timeout` at most. Results are cached per
   * address (all sessions of the server share the cache, and concurrent
   * lookups of one address send one set of queries). Skipped on a Unix
   * socket and for a proxy's health check (`clientHostname` stays `null`).
   * Off by default; `true` or an object turns it on.
   *
   * @example
   * ```ts
   * import { serve } from "@smtpd/smtpd";
   *
   * await serve({
   *   hostname: "0.0.0.0",
   *   port: 25,
   *   reverseDns: { timeout: 3000 },
   *   onMailFrom(address, session) {
   *     console.log(session.clientHostname, session.reverseDns?.status);
   *   },
   * });
   * ```
   */
  reverseDns?: ReverseDnsServeOptions | boolean;
  /**
   * The DNS servers `reverseDns` asks, each `IP` or `IP:port`
   * (`[IPv6]:port`): `["127.0.0.1:5353", "[::1]:53"]`. Default the
   * system's (`/etc/resolv.conf`).
   */
  dnsServers?: readonly string[];
  /**
   * Milter filters (rspamd, OpenDKIM, OpenDMARC, clamav-milter, …), asked
   * in order as Postfix's `smtpd_milters` asks them: each its `address`
   * (`inet:PORT@HOST`, `inet:HOST:PORT` or `unix:/path`), its `onError`
   * policy when it is down, slow or speaks garbage (`"tempfail"`, the
   * default: 451 4.7.1; `"accept"`: go on without it; `"reject"`: 550
   * 5.7.1) and its `timeouts` per stage (connect 30 s, each command 30 s,
   * end-of-message 300 s).
   *
   * Each SMTP session opens one connection per filter once `onConnect`
   * accepted (before the greeting), reuses it for its transactions and
   * closes it at the end. A filter's verdict applies at the stage it
   * comes in: at connect a reject refuses the greeting (554 5.7.1; a
   * tempfail 421 4.7.1), at HELO, MAIL or RCPT (one recipient) the command
   * gets the filter's reply, from DATA to end-of-message the message
   * does; `discard` answers 250 and delivers to nobody. With filters, the
   * application gets the message only after end-of-message, as the
   * filters changed it (headers, body, sender, recipients), with
   * `message.milter`: the body is held meanwhile (in memory up to
   * 256 KiB, then in a temporary file removed afterwards). The filters'
   * time at end-of-data counts in `hookTimeout`. Default none.
   *
   * @example
   * ```ts
   * import { serve } from "@smtpd/smtpd";
   *
   * await serve({
   *   port: 25,
   *   hostname: "0.0.0.0",
   *   serverName: "mx.example.org",
   *   milters: [
   *     { address: "inet:11332@127.0.0.1" }, // rspamd's proxy worker
   *     { address: "unix:/run/opendkim/opendkim.sock", onError: "accept" },
   *   ],
   *   onMessage(message) {
   *     console.log(message.milter?.map((r) => r.verdict.action));
   *   },
   * });
   * ```
   */
  milters?: readonly MilterOptions[];
  /**
   * Listen with `SO_REUSEPORT`, so that several processes (each calling
   * `serve()` with the same `hostname`, `port` and `reusePort: true`) share
   * the port: the kernel hands each new connection to one of them (by a
   * hash of its addresses, so spread over many connections, not strictly
   * in turn). Linux (Node also has it on FreeBSD). Default `false`.
   *
   * Deno: `Deno.listen({ reusePort })` when run with `--unstable-net`,
   * else the `node:net` listener (which Deno runs, at some CPU cost).
   * Bun: `Bun.listen({ reusePort })`. Node: needs Node 22.12 or later;
   * on older Node `serve()` rejects with a `TypeError` (use the
   * `node:cluster` module there: workers share the primary's socket).
   * Any process of the same user can then join the port, so a second copy
   * started by mistake shares it instead of failing with `EADDRINUSE`.
   */
  reusePort?: boolean;
  /** Receives structured log entries (AUTH payloads are redacted). */
  logger?: Logger;
  /**
   * Called with every error an application's hook throws or rejects
   * with that is not an {@link SmtpError} (an `SmtpError` is a reply you
   * chose, not a failure): `onConnect`, `onHelo`, `onMailFrom`,
   * `onRcptTo`, `onMessage`, the `auth` functions and `onClose`, once per
   * error, with the hook's name and its session. The client's reply does
   * not change (451 4.3.0, or 454 4.7.0 for AUTH, without the error's
   * text; the sender retries). An error thrown by `onError` itself is
   * printed with `console.error` and otherwise ignored.
   *
   * Default: `console.error` prints the hook's name, the session and
   * the client's address, then the error with its stack (as `Deno.serve`
   * and `Bun.serve` do for an error in their handler). An error after
   * `hookTimeout`, once `message.signal` has aborted, is not reported
   * (the timeout is logged, and the sender already has its 451).
   *
   * @example
   * ```ts
   * import { serve } from "@smtpd/smtpd";
   *
   * declare function store(raw: Uint8Array): Promise<void>;
   * declare const errorTracker: { capture(e: unknown, tags: object): void };
   *
   * await serve({
   *   port: 0,
   *   async onMessage(message) {
   *     await store(await message.bytes()); // a throw here: 451 4.3.0
   *   },
   *   onError(error, { hook, session, message }) {
   *     errorTracker.capture(error, { hook, session: session.id, message: message?.id });
   *   },
   * });
   * ```
   */
  onError?: (error: unknown, context: ErrorContext) => void;
  /** A client connected (before the greeting). Throw to refuse it (its reply, then close). */
  onConnect?: (session: Session) => HookResult;
  /**
   * SMTP AUTH: how credentials are checked, which mechanisms are offered,
   * and whether MAIL needs AUTH first. AUTH is offered only over TLS unless
   * `allowInsecureAuth` is set.
   */
  auth?: AuthOptions;
  /** The client sent EHLO/HELO. */
  onHelo?: (hostname: string, session: Session) => HookResult;
  /** MAIL FROM: `address` is `""` for the null reverse-path. */
  onMailFrom?: (
    address: string,
    session: Session,
    params: MailParams,
  ) => HookResult;
  /** RCPT TO. */
  onRcptTo?: (
    address: string,
    session: Session,
    params: RcptParams,
  ) => HookResult;
  /**
   * A message: called when its body begins to arrive (the first bytes
   * after DATA, or the first BDAT chunk; an empty body at its end), with
   * `message.raw` streaming the body. The client gets 250 only after
   * this resolves and the body has ended; a thrown {@link SmtpError} is
   * sent as the reply, any other error sends 451 4.3.0. Without this hook,
   * messages go to `for await (const m of server)`.
   *
   * With `lmtp`, every accepted recipient gets its own reply:
   * `message.rejectRecipient(address, error)` refuses one, resolving
   * accepts the others, and a thrown error answers them all.
   *
   * Past `hookTimeout` the client gets 451 4.3.0 and `message.signal`
   * aborts: the sender will send the message again, so do not keep this
   * copy (pass the signal to the calls that store the message, or check
   * `message.signal.aborted` before committing).
   */
  onMessage?: (message: Message, session: Session) => HookResult;
  /** The connection closed. */
  onClose?: (session: Session) => void;
}

/**
 * The defaults of serve()'s own options (the engine's are
 * `ENGINE_DEFAULTS`), in the order the options are documented. `null`:
 * off (no Unix socket, no shared limits, no PROXY protocol).
 */
export const SERVE_DEFAULTS = Object.freeze(
  {
    hostname: "127.0.0.1",
    port: 2525,
    path: null,
    tls: undefined,
    implicitTls: false,
    maxConnections: 1000,
    maxConnectionsPerIp: DEFAULT_MAX_CONNECTIONS_PER_IP,
    maxAuthFailuresPerIp: DEFAULT_MAX_AUTH_FAILURES_PER_IP,
    authFailureWindow: DEFAULT_AUTH_FAILURE_WINDOW,
    limits: null,
    hookTimeout: 60000,
    closeTimeout: 30000,
    handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
    proxyProtocol: null,
    greetingDelay: 0,
    reverseDns: null,
    dnsServers: null,
    milters: null,
    reusePort: false,
    auth: undefined,
  } as const,
);

/** The options of serve() that are functions: the hooks, the logger and onError. */
export const HOOK_OPTIONS = [
  "onConnect",
  "onHelo",
  "onMailFrom",
  "onRcptTo",
  "onMessage",
  "onClose",
  "logger",
  "onError",
] as const;

/** serve()'s options, validated, with the defaults filled in. */
export interface ResolvedServeOptions {
  hostname: string;
  port: number;
  /** A Unix domain socket's path, or null for TCP. */
  path: string | null;
  implicitTls: boolean;
  reusePort: boolean;
  maxConnections: number;
  maxConnectionsPerIp: number;
  maxAuthFailuresPerIp: number;
  authFailureWindow: number;
  /** The given `limits`, or null (this process counts). */
  limits: ClientLimits | null;
  hookTimeout: number;
  closeTimeout: number;
  handshakeTimeout: number;
  proxyProtocol: { trusted: CidrSet; maxV2Length: number } | null;
  greetingDelay: number;
  /** `reverseDns` with its defaults, or null (off). */
  reverseDns: Required<ReverseDnsServeOptions> | null;
  /** `dnsServers` as `node:dns` takes them, or null (the system's). */
  dnsServers: string[] | null;
  /** The `milters` option, validated; null when none. */
  milters: readonly MilterOptions[] | null;
  /** The engine's options out of serve()'s, with AUTH resolved (validated). */
  engine: EngineOptions;
  /** The `logger` option, its exceptions swallowed. */
  logger: Logger | undefined;
}

/**
 * Whether a peer may send a PROXY header: every peer of a Unix domain
 * socket (its file's permissions say who connects), else one in the
 * trusted list.
 */
export function proxyTrusts(o: ResolvedServeOptions, address: string): boolean {
  return o.path !== null || o.proxyProtocol?.trusted.has(address) === true;
}

/** Engine options that the server sets itself (not options of serve()). */
const ENGINE_INTERNAL = new Set([
  "startTls",
  "secure",
  "traceCommands",
  "authMechanisms",
  "authRequired",
]);

/** The options of serve() that are the engine's. */
const ENGINE_KEYS: readonly string[] = Object.keys(ENGINE_DEFAULTS).filter((
  k,
) => !ENGINE_INTERNAL.has(k));

/** The engine's options out of serve()'s, with AUTH resolved. */
function engineOptionsOf(o: ServeOptions): EngineOptions {
  const picked: Record<string, unknown> = {};
  for (const k of ENGINE_KEYS) {
    if (k in o) picked[k] = (o as Record<string, unknown>)[k];
  }
  const auth = resolveAuth(o.auth);
  return {
    ...picked,
    authMechanisms: auth.mechanisms,
    authRequired: auth.required,
  };
}

/** Every option name serve() knows, at the top level. */
const SERVE_KEYS: ReadonlySet<string> = new Set([
  ...ENGINE_KEYS,
  ...Object.keys(SERVE_DEFAULTS),
  ...HOOK_OPTIONS,
]);

const AUTH_KEYS: ReadonlySet<string> = new Set([
  "verify",
  "authorize",
  "lookupPassword",
  "mechanisms",
  "required",
]);
const TLS_KEYS: ReadonlySet<string> = new Set([
  "key",
  "cert",
  "ca",
  "minVersion",
  "sni",
]);
const CERT_KEYS: ReadonlySet<string> = new Set(["key", "cert"]);
const PROXY_KEYS: ReadonlySet<string> = new Set(["trusted", "maxV2Length"]);
const REVERSE_DNS_KEYS: ReadonlySet<string> = new Set(
  Object.keys(REVERSE_DNS_DEFAULTS),
);

/**
 * Throws a `TypeError` for an option name serve() does not know, at any
 * level (`auth`, `tls`, `tls.sni[name]`), suggesting the near one.
 */
function checkOptionNames(o: ServeOptions): void {
  if (typeof o !== "object" || o === null) {
    throw new TypeError("Cannot use options: value is not an object");
  }
  checkKeys(o, SERVE_KEYS);
  const isObject = (v: unknown): v is object =>
    typeof v === "object" && v !== null;
  if (isObject(o.auth)) checkKeys(o.auth, AUTH_KEYS, "auth");
  if (isObject(o.proxyProtocol)) {
    checkKeys(o.proxyProtocol, PROXY_KEYS, "proxyProtocol");
  }
  if (isObject(o.reverseDns)) {
    checkKeys(o.reverseDns, REVERSE_DNS_KEYS, "reverseDns");
  }
  if (isObject(o.tls)) {
    checkKeys(o.tls, TLS_KEYS, "tls");
    const sni = (o.tls as { sni?: unknown }).sni;
    if (isObject(sni)) {
      for (const [name, c] of Object.entries(sni)) {
        if (isObject(c)) {
          checkKeys(c, CERT_KEYS, `tls.sni[${JSON.stringify(name)}]`);
        }
      }
    }
  }
}

function resolveProxyProtocol(
  value: unknown,
): ResolvedServeOptions["proxyProtocol"] {
  if (value === undefined || value === false) return null;
  if (value === true) value = {};
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new TypeError(
      "Cannot use option proxyProtocol: value is not an object or a boolean",
    );
  }
  const o = value as ProxyProtocolOptions;
  let trusted: readonly string[] = LOOPBACK;
  if (o.trusted !== undefined) {
    if (
      !Array.isArray(o.trusted) ||
      !o.trusted.every((t) => typeof t === "string")
    ) {
      throw new TypeError(
        "Cannot use option proxyProtocol.trusted: value is not an array of strings",
      );
    }
    if (o.trusted.length === 0) {
      throw new TypeError(
        "Cannot use option proxyProtocol.trusted: value is an empty list (no proxy could connect)",
      );
    }
    trusted = o.trusted;
  }
  const maxV2Length = limitOption(
    "proxyProtocol.maxV2Length",
    o.maxV2Length,
    PROXY_V2_DEFAULT_MAX_LENGTH,
    { min: PROXY_V2_MIN_MAX_LENGTH },
  );
  if (maxV2Length > PROXY_V2_ABSOLUTE_MAX_LENGTH) {
    throw new TypeError(
      `Cannot use option proxyProtocol.maxV2Length: value is greater than ${PROXY_V2_ABSOLUTE_MAX_LENGTH}`,
    );
  }
  return { trusted: new CidrSet(trusted), maxV2Length };
}

function resolveReverseDns(
  value: unknown,
): ResolvedServeOptions["reverseDns"] {
  if (value === undefined || value === false) return null;
  if (value === true) value = {};
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new TypeError(
      "Cannot use option reverseDns: value is not an object or a boolean",
    );
  }
  const o = value as ReverseDnsServeOptions;
  const d = REVERSE_DNS_DEFAULTS;
  const ms = (key: keyof ReverseDnsServeOptions, min: number) =>
    limitOption(`reverseDns.${key}`, o[key], d[key], { min });
  return {
    timeout: ms("timeout", 1),
    cacheSize: ms("cacheSize", 0),
    cacheTtl: ms("cacheTtl", 0),
    negativeCacheTtl: ms("negativeCacheTtl", 0),
  };
}

function resolveLimits(limits: ClientLimits | undefined): ClientLimits | null {
  if (limits === undefined) return null;
  const methods = ["connect", "disconnect", "authStart", "authEnd"] as const;
  if (
    typeof limits !== "object" || limits === null ||
    methods.some((m) => typeof limits[m] !== "function")
  ) {
    throw new TypeError(
      "Cannot use option limits: value has no connect, disconnect, authStart and authEnd methods",
    );
  }
  return limits;
}

/**
 * Validates serve()'s options (a `TypeError` for an unknown name or a bad
 * value, the engine's and `auth` included) and fills in the defaults.
 *
 * @example
 * ```ts
 * import { resolveServeOptions } from "./serve_options.ts";
 *
 * resolveServeOptions({ port: 0 }).hostname; // "127.0.0.1"
 * ```
 */
export function resolveServeOptions(o: ServeOptions): ResolvedServeOptions {
  checkOptionNames(o);
  if (o.hostname !== undefined && typeof o.hostname !== "string") {
    throw new TypeError("Cannot use option hostname: value is not a string");
  }
  if (o.path !== undefined) {
    if (typeof o.path !== "string") {
      throw new TypeError("Cannot use option path: value is not a string");
    }
    if (o.path === "" || o.path.includes("\0")) {
      throw new TypeError(
        "Cannot use option path: value is not a file path",
      );
    }
    for (const other of ["hostname", "port"] as const) {
      if (o[other] !== undefined) {
        throw new TypeError(
          `Cannot use option path: ${other} is given too (a server listens on a Unix socket or on TCP)`,
        );
      }
    }
  }
  const d = SERVE_DEFAULTS;
  const port = limitOption("port", o.port, d.port, { min: 0 });
  if (port > 65535) {
    throw new TypeError("Cannot use option port: value is greater than 65535");
  }
  if (o.implicitTls && !o.tls) {
    throw new TypeError(
      "Cannot use option implicitTls: no tls certificate given",
    );
  }
  if (o.reusePort !== undefined && typeof o.reusePort !== "boolean") {
    throw new TypeError("Cannot use option reusePort: value is not a boolean");
  }
  if (o.reusePort && o.path !== undefined) {
    throw new TypeError(
      "Cannot use option reusePort: path is given (it is for TCP ports)",
    );
  }
  for (const hook of HOOK_OPTIONS) {
    if (o[hook] !== undefined && typeof o[hook] !== "function") {
      throw new TypeError(`Cannot use option ${hook}: value is not a function`);
    }
  }
  const resolved: Omit<ResolvedServeOptions, "engine"> = {
    hostname: o.hostname ?? d.hostname,
    port,
    path: o.path ?? d.path,
    implicitTls: o.implicitTls ?? d.implicitTls,
    reusePort: o.reusePort ?? d.reusePort,
    maxConnections: limitOption(
      "maxConnections",
      o.maxConnections,
      d.maxConnections,
      {
        allowInfinity: true,
      },
    ),
    maxConnectionsPerIp: limitOption(
      "maxConnectionsPerIp",
      o.maxConnectionsPerIp,
      d.maxConnectionsPerIp,
      { allowInfinity: true },
    ),
    maxAuthFailuresPerIp: limitOption(
      "maxAuthFailuresPerIp",
      o.maxAuthFailuresPerIp,
      d.maxAuthFailuresPerIp,
      { allowInfinity: true },
    ),
    authFailureWindow: limitOption(
      "authFailureWindow",
      o.authFailureWindow,
      d.authFailureWindow,
    ),
    limits: resolveLimits(o.limits),
    hookTimeout: limitOption("hookTimeout", o.hookTimeout, d.hookTimeout, {
      allowInfinity: true,
    }),
    closeTimeout: limitOption("closeTimeout", o.closeTimeout, d.closeTimeout, {
      allowInfinity: true,
    }),
    handshakeTimeout: limitOption(
      "handshakeTimeout",
      o.handshakeTimeout,
      d.handshakeTimeout,
    ),
    proxyProtocol: resolveProxyProtocol(o.proxyProtocol),
    greetingDelay: limitOption(
      "greetingDelay",
      o.greetingDelay,
      d.greetingDelay,
      {
        min: 0,
      },
    ),
    reverseDns: resolveReverseDns(o.reverseDns),
    dnsServers: o.dnsServers === undefined
      ? null
      : dnsServersOption(o.dnsServers),
    milters: resolveMilters(o.milters),
    logger: safeLogger(o.logger),
  };
  // After serve()'s own: a bad engine or auth option throws a TypeError.
  const engine = engineOptionsOf(o);
  resolveEngineOptions(engine);
  return { ...resolved, engine };
}

/** The `milters` option, each filter's options checked; null when empty. */
function resolveMilters(
  milters: readonly MilterOptions[] | undefined,
): readonly MilterOptions[] | null {
  if (milters === undefined) return null;
  if (!Array.isArray(milters)) {
    throw new TypeError(
      "Cannot use option milters: value is not an array of filters",
    );
  }
  const out = milters.map((m: MilterOptions) => {
    resolveMilterOptions(m);
    return { ...m };
  });
  return out.length === 0 ? null : out;
}

/** A logger whose exceptions are swallowed (a throwing logger must not break a loop). */
function safeLogger(logger: Logger | undefined): Logger | undefined {
  return logger && ((entry: LogEntry) => {
    try {
      logger(entry);
    } catch { /* the application's logger failed: nothing to tell */ }
  });
}
