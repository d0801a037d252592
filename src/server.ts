/**
 * The driver: one loop per connection that reads bytes, feeds the engine,
 * awaits the application's hooks, writes replies with backpressure and keeps
 * the deadlines; and the {@link Server} that accepts connections from a
 * runtime shim's listener.
 *
 * Runtime-free: the shim (`runtimes/*.ts`) supplies the listener.
 *
 * @module
 */

import { SmtpEngine, type SmtpEvent } from "./engine.ts";
import { checkAuth } from "./auth.ts";
import { SmtpError } from "./errors.ts";
import type { AuthCredentials } from "./sasl.ts";
import { IncomingMessage, type Message } from "./message.ts";
import { type EngineOptions, sharedEngineOptions } from "./options.ts";
import {
  type AuthStart,
  clientKey,
  type ClientLimits,
  failureDelay,
  LocalClientLimits,
} from "./limits.ts";
import type {
  ErrorContext,
  HookName,
  Logger,
  Session,
  SessionProxy,
} from "./session.ts";
import { stripMapped } from "./cidr.ts";
import { parseProxyHeader, type ProxyHeader } from "./proxy.ts";
import type {
  Connection,
  Listener,
  ListenFn,
  NetAddress,
  TlsOptions,
} from "./transport.ts";
import { type Deadline, deadlines } from "./deadlines.ts";

import {
  type HookResult,
  proxyTrusts,
  type ResolvedServeOptions,
  resolveServeOptions,
  type ServeOptions,
} from "./serve_options.ts";

export type {
  HookResult,
  ProxyProtocolOptions,
  ServeOptions,
} from "./serve_options.ts";

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
}

/**
 * A message as the `for await` loop gets it: it can also be refused
 * explicitly (and, with `lmtp`, for one recipient with
 * `rejectRecipient()`, before the loop moves on).
 *
 * @example
 * ```ts
 * import { serve, SmtpError } from "@smtpd/smtpd";
 *
 * const server = await serve({ lmtp: true, path: "/run/smtpd/lmtp.sock" });
 * for await (const message of server) {
 *   if (message.to.includes("full@example.org")) {
 *     message.rejectRecipient("full@example.org", new SmtpError(452, "4.2.2", "Mailbox full"));
 *   }
 * }
 * ```
 */
export interface LoopMessage extends Message {
  /** Refuses the message with this reply instead of accepting it when the loop moves on. */
  reject(error: SmtpError): void;
}

/**
 * What reports an application's hook error: the `onError` option, or by
 * default `console.error` with the hook's name, the session and the stack.
 * Never throws (an `onError` that throws or rejects is printed instead).
 */
function errorReporter(
  onError: ServeOptions["onError"],
): (error: unknown, context: ErrorContext) => void {
  if (onError === undefined) {
    return (error, { hook, session }) => {
      try {
        console.error(
          `smtpd: error in ${hook} (session ${session.id}, client ${session.remoteAddress}):`,
          error,
        );
      } catch { /* no console to tell */ }
    };
  }
  const failed = (thrown: unknown) => {
    try {
      console.error("smtpd: onError failed:", thrown);
    } catch { /* no console to tell */ }
  };
  return (error, context) => {
    try {
      const r: unknown = onError(error, context);
      if (isThenable(r)) Promise.resolve(r).catch(failed);
    } catch (thrown) {
      failed(thrown);
    }
  };
}

/** Turns anything a hook threw into the reply to send. */
function toSmtpError(err: unknown): SmtpError | null {
  if (err instanceof SmtpError) return err;
  // An SmtpError from another copy of this package (ESM and CJS side by side).
  if (
    typeof err === "object" && err !== null &&
    typeof (err as SmtpError).code === "number" &&
    typeof (err as SmtpError).enhancedCode === "string"
  ) {
    try {
      const e = err as SmtpError;
      return new SmtpError(e.code, e.enhancedCode, e.message);
    } catch {
      return null;
    }
  }
  return null;
}

const TEMPORARY = new SmtpError(
  451,
  "4.3.0",
  "Temporary local problem, try again later",
);
const SHUTDOWN = new SmtpError(421, "4.3.2", "Service shutting down");
const HOOK_TIMEOUT = Symbol("timeout");
const AUTH_INVALID = new SmtpError(
  535,
  "5.7.8",
  "Authentication credentials invalid",
);
const AUTH_TEMPORARY = new SmtpError(
  454,
  "4.7.0",
  "Temporary authentication failure",
);
const AUTH_LOCKED = new SmtpError(
  454,
  "4.7.0",
  "Too many failed authentications from your address, try again later",
);
/** How long an AUTH attempt waits for those in flight (see maxAuthFailuresPerIp). */
const AUTH_QUEUE_MS = 10000;
/** How often a waiting AUTH attempt asks again. */
const AUTH_QUEUE_POLL_MS = 100;
const EMPTY = new Uint8Array(0);
const FORCED = Symbol("forced");
/** A driver's `done` before start(). */
const NOT_STARTED: Promise<void> = Promise.resolve();
/** Pause before iterating a listener again after its iteration threw. */
const LISTENER_RETRY_MS = 100;
/** How long a forced close (after closeTimeout) waits for the 421 to go out. */
const FORCED_FLUSH_MS = 500;

let idCounter = 0;
/**
 * Random per process, then the time the process started: ids stay unique
 * across processes and restarts; a counter tells them apart within one.
 * (Formatting the clock for every id cost up to 0.9 µs per message.)
 * `Math.random`: ids need to be unique, not secret, and the Web Crypto
 * global costs Node 1.5–3 MB of RSS when first used.
 */
const idBase = Math.floor(Math.random() * 0x100000000).toString(16)
  .padStart(8, "0") + Date.now().toString(36);
function newId(): string {
  return idBase + (++idCounter).toString(36);
}

/** A driver's read/hook deadline or its write deadline, as a heap entry. */
class DriverDeadline implements Deadline {
  at = Infinity;
  index = -1;
  readonly driver: ConnectionDriver;
  readonly write: boolean;

  constructor(driver: ConnectionDriver, write: boolean) {
    this.driver = driver;
    this.write = write;
  }

  fire(): void {
    if (this.write) this.driver.onWriteTimer();
    else this.driver.onTimer();
  }
}

/** What a wait (#wait) ends with: the hook's reply (null: accepted), or why it stopped. */
type WaitResult = SmtpError | null | typeof HOOK_TIMEOUT | typeof FORCED;

/** The events that ask a hook (or nobody) before the engine answers. */
type DecisionEvent = Extract<
  SmtpEvent,
  { type: "connect" | "helo" | "mail" | "rcpt" }
>;

/** The hook a decision event asks. */
const HOOK_OF: Readonly<Record<DecisionEvent["type"], HookName>> = {
  connect: "onConnect",
  helo: "onHelo",
  mail: "onMailFrom",
  rcpt: "onRcptTo",
};

/** Whether a hook returned a promise (or any thenable) to wait for. */
function isThenable(r: unknown): r is PromiseLike<unknown> {
  return r !== undefined && r !== null &&
    typeof (r as PromiseLike<unknown>).then === "function";
}

/**
 * Sends one last reply line, then closes: the refusals before a session
 * (421 too many connections, 554 early talker). `write` is the driver's
 * when it already holds the connection, else the shim's (or its
 * stream's); a closed socket throws or rejects, and either way the
 * connection is closed.
 */
function replyAndClose(
  conn: Connection,
  line: string,
  write?: (bytes: Uint8Array) => void | Promise<void>,
): void {
  const bytes = new TextEncoder().encode(`${line}\r\n`);
  new Promise<void>((resolve) =>
    resolve(
      write !== undefined
        ? write(bytes)
        : conn.write !== undefined
        ? conn.write(bytes)
        : conn.writable.getWriter().write(bytes),
    )
  ).catch(() => {}).finally(() => conn.close());
}

/** The mutable side of a {@link Session}. */
class SessionState implements Session {
  readonly id: string;
  // Own data properties, not getters: applications may spread or
  // serialize the session. Behind a PROXY protocol proxy, the driver sets
  // them from the header before the greeting.
  remoteAddress: string;
  remotePort: number;
  readonly localAddress: string;
  readonly localPort: number;
  heloName: string | null = null;
  esmtp = false;
  readonly lmtp: boolean;
  secure: boolean;
  tls: Session["tls"];
  user: string | null = null;
  messages = 0;
  transactions = 0;
  readonly openedAt: number = Date.now();
  proxy: SessionProxy | null = null;

  constructor(conn: Connection, lmtp: boolean) {
    this.id = newId();
    this.lmtp = lmtp;
    this.remoteAddress = conn.remoteAddr.hostname;
    this.remotePort = conn.remoteAddr.port;
    this.localAddress = conn.localAddr.hostname;
    this.localPort = conn.localAddr.port;
    this.tls = conn.tls;
    this.secure = conn.tls !== null;
  }
}

/** A connection's read and write, from its fast path or its streams. */
interface Io {
  read(): Uint8Array | null | Promise<Uint8Array | null>;
  write(bytes: Uint8Array): void | Promise<void>;
  /** Lets go of the streams (STARTTLS); absent on the fast path. */
  release?(): void;
}

/**
 * `conn.read`/`conn.write` when the shim has them (no stream machinery,
 * no promise when bytes are buffered or the kernel takes a write), else
 * a reader and a writer of its streams.
 */
function connectionIo(conn: Connection): Io {
  // The connection itself: no object or bound functions per connection.
  if (conn.read !== undefined && conn.write !== undefined) {
    return conn as Connection & Io;
  }
  const reader = conn.readable.getReader();
  const writer = conn.writable.getWriter();
  return {
    read: () => reader.read().then((r) => r.done ? null : r.value),
    write: (bytes) => writer.write(bytes),
    release() {
      reader.releaseLock();
      writer.releaseLock();
    },
  };
}

/** Runs one connection. */
class ConnectionDriver {
  readonly session: SessionState;
  /** Settles when the session is over (see start()). */
  done: Promise<void> = NOT_STARTED;
  #conn: Connection;
  #engine: SmtpEngine;
  #io: Io;
  #server: SmtpServer;
  /** The connection's deadline in {@link deadlines}, if one is set. */
  #deadline: DriverDeadline | null = null;
  #reading = false;
  #upgrading = false; // waiting for a STARTTLS handshake
  #closing = false;
  #message: IncomingMessage | null = null;
  /** The message hook's outcome: the reply (null: accepted), or its promise. */
  #messageResult: Promise<SmtpError | null> | SmtpError | null = null;
  /** Set when the message hook stopped reading `raw` for hookTimeout. */
  #stalled: SmtpError | null = null;
  /** Set when the client stopped taking our replies. */
  #writeStalled = false;
  /**
   * Writes pending, since when the oldest waits, and their watchdog (in
   * {@link deadlines}: a runtime timer per connection cost Deno about 5 KB
   * per idle connection, and on Deno every write is a promise).
   */
  #writes = 0;
  #writeSince = 0;
  #writeTimer: DriverDeadline | null = null;
  /** The loop has ended: no timer may be armed any more. */
  #ended = false;
  #wasForced = false;
  /**
   * Ends the wait in progress (a hook, or body backpressure; see #wait):
   * with FORCED when close() gives up on this connection (closeTimeout),
   * so that a hook that never settles cannot keep `close()` from
   * resolving, and with HOOK_TIMEOUT past `#hookDeadline`.
   */
  #settle: ((result: WaitResult) => void) | null = null;
  /** When the wait in progress times out (Infinity: no wait). */
  #hookDeadline = Infinity;
  /** The key counted for maxConnectionsPerIp (null: not counted). */
  countedIp: string | null = null;
  /** Reading the PROXY header or waiting out greetingDelay (see #preamble). */
  #inPreamble = false;
  /** A read started during greetingDelay, for the loop to take over. */
  #pendingRead: Promise<Uint8Array | null> | null = null;

  constructor(server: SmtpServer, conn: Connection) {
    this.#server = server;
    this.#conn = conn;
    const options = server.engineOptionsFor(
      conn.startTls !== undefined,
      conn.tls !== null,
    );
    this.session = new SessionState(conn, options.lmtp === true);
    this.#engine = new SmtpEngine(options, Date.now());
    this.#io = connectionIo(conn);
  }

  /** Runs the session (once; `done` settles when it is over). */
  start(): void {
    this.done = this.#run();
  }

  /** Ends a pause (#pause) early. */
  #wake: (() => void) | null = null;

  /** Waits `ms`, or less when the server closes (no timer left behind). */
  #pause(ms: number): Promise<void> {
    if (ms <= 0 || this.#closing) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => this.#wake?.(), ms);
      this.#wake = () => {
        this.#wake = null;
        clearTimeout(timer);
        resolve();
      };
    });
  }

  /** Server shutdown: idle sessions end now, a message in transfer soon. */
  shutdown(force: boolean): void {
    this.#closing = true;
    this.#wake?.();
    if (this.#inPreamble) {
      // No greeting yet: nothing to say; the preamble's read ends.
      this.#conn.close(true);
      return;
    }
    if (this.#upgrading && !force) {
      // Mid-handshake: nothing to say in plaintext; the shim fails the
      // pending startTls() and the loop ends.
      this.#conn.close();
      return;
    }
    // Between two BDAT chunks the message is open but nothing is in
    // transfer: the engine aborts it (the client gets 421, `raw` errors).
    if (force || (this.#reading && this.#idleOrBetweenChunks())) {
      this.#engine.shutdown();
      if (force) {
        this.#wasForced = true;
        // Wake the loop wherever it waits: a hook, or a reader of `raw`
        // that stopped reading. The engine is closed, so their answers
        // no longer matter.
        this.#abortMessage(SHUTDOWN);
        this.#settle?.(FORCED);
      }
      void this.#flushAndClose(force);
    }
  }

  /** No body in transfer: no message, or between two BDAT chunks. */
  #idleOrBetweenChunks(): boolean {
    return this.#message === null || !this.#engine.inBody;
  }

  /**
   * Writes what the engine has, then closes. A forced close (after
   * closeTimeout) waits FORCED_FLUSH_MS at most for the client to take it.
   */
  async #flushAndClose(force = false): Promise<void> {
    const timer = force
      ? setTimeout(() => this.#abort(), FORCED_FLUSH_MS)
      : undefined;
    try {
      await this.#flush();
    } catch { /* peer gone, or not reading */ }
    clearTimeout(timer);
    this.#conn.close(this.#writeStalled);
  }

  /** Closes at once, dropping unsent replies: a pending write fails. */
  #abort(): void {
    this.#writeStalled = true;
    this.#conn.close(true);
  }

  async #run(): Promise<void> {
    // The server forgets the connection here, not in a callback on
    // `done`: no closure, promise and reaction kept per idle session.
    try {
      const server = this.#server;
      const engine = this.#engine;
      const log = server.logger;
      const s = this.session;
      const o = server.options;
      if (o.proxyProtocol !== null || o.greetingDelay > 0) {
        if (!(await this.#preamble())) return;
      } else if (!(await this.#claimIp())) return;
      log?.({
        type: "connect",
        session: s.id,
        remoteAddress: s.remoteAddress,
        remotePort: s.remotePort,
        ...(s.proxy !== null
          ? {
            proxy: {
              address: s.proxy.address,
              port: s.proxy.port,
              version: s.proxy.version,
              command: s.proxy.command,
              healthCheck: s.proxy.healthCheck,
            },
          }
          : {}),
      });
      let reason = "eof";
      try {
        for (;;) {
          const ev = engine.nextEvent();
          switch (ev.type) {
            case "need-data": {
              const flushed = this.#flush();
              if (flushed !== undefined) await flushed;
              if (this.#closing && this.#idleOrBetweenChunks()) {
                engine.shutdown();
                break;
              }
              let chunk: Uint8Array | null | Promise<Uint8Array | null>;
              try {
                const pending = this.#pendingRead;
                this.#pendingRead = null;
                chunk = pending ?? this.#io.read();
              } catch {
                chunk = null;
              }
              if (isThenable(chunk)) {
                // Nothing buffered: the client's silence counts from here.
                this.#armTimer(engine.deadline());
                this.#reading = true;
                try {
                  chunk = await chunk;
                } catch {
                  chunk = null;
                } finally {
                  this.#reading = false;
                }
              }
              if (chunk === null) engine.end();
              else engine.receive(chunk, Date.now());
              break;
            }
            case "connect":
            case "helo":
            case "mail":
            case "rcpt": {
              // Synchronous when there is no hook, or when it returns no
              // promise: no await round trip per command.
              const later = this.#decide(ev);
              if (later !== undefined) await later;
              break;
            }
            case "message-start":
              this.#startMessage(ev);
              break;
            case "data": {
              const wait = this.#message!.push(ev.chunk);
              if (wait !== undefined) await this.#backpressure(wait);
              break;
            }
            case "message-end": {
              const later = this.#endMessage(ev);
              if (later !== undefined) await later;
              break;
            }
            case "message-abort":
              this.#abortMessage(ev.error);
              this.#message = null;
              this.#messageResult = null;
              this.#stalled = null;
              break;
            case "reset":
              break;
            case "starttls":
              await this.#startTls();
              break;
            case "auth":
              await this.#authenticate(ev.credentials);
              break;
            case "command":
              // The engine already replaced AUTH credentials with "***".
              log?.({ type: "command", session: s.id, line: ev.line });
              break;
            case "close": {
              reason = ev.reason;
              const flushed = this.#flush();
              if (flushed !== undefined) await flushed;
              return;
            }
            default:
              assertNever(ev);
          }
        }
      } catch (error) {
        reason = this.#wasForced
          ? "shutdown"
          : this.#writeStalled
          ? "timeout"
          : "error";
        log?.({
          type: "error",
          session: s.id,
          message: "connection failed",
          error,
        });
      } finally {
        this.#ended = true;
        if (this.#deadline !== null) deadlines.remove(this.#deadline);
        if (this.#writeTimer !== null) deadlines.remove(this.#writeTimer);
        this.#abortMessage(TEMPORARY);
        this.#conn.close(this.#writeStalled);
        log?.({ type: "close", session: s.id, reason, messages: s.messages });
        try {
          server.hooks.onClose?.(s);
        } catch (error) {
          this.#hookError(error, "onClose");
        }
      }
    } finally {
      this.#server.driverEnded(this);
    }
  }

  /**
   * Before the greeting: the PROXY header (read here for plaintext, or
   * taken from the shim for implicit TLS), the per-IP count by the
   * client's real address, and greetingDelay. Returns false when the
   * connection was refused (a `refused` log entry; no session hooks, no
   * connect/close entries) and is closed.
   */
  async #preamble(): Promise<boolean> {
    const o = this.#server.options;
    this.#inPreamble = true;
    let rest: Uint8Array = EMPTY;
    try {
      if (o.proxyProtocol !== null) {
        if (this.#conn.proxy !== undefined) this.#useProxy(this.#conn.proxy);
        else {
          const r = await this.#readProxyHeader(o.proxyProtocol.maxV2Length);
          if (r === null) return false;
          rest = r;
        }
      }
      if (!(await this.#claimIp())) return false;
      if (o.greetingDelay > 0) {
        if (!(await this.#greetingDelay(o.greetingDelay, rest))) return false;
      }
    } finally {
      this.#inPreamble = false;
    }
    if (this.#closing) {
      this.#refused("server shutting down");
      this.#conn.close();
      return false;
    }
    // The client's idle time starts now; bytes after the header are its.
    this.#engine.receive(rest, Date.now());
    return true;
  }

  #refused(reason: string): void {
    this.#server.logger?.({
      type: "refused",
      remoteAddress: this.session.remoteAddress,
      reason,
    });
  }

  /** Reads the PROXY header; returns the bytes after it, or null (refused, closed). */
  async #readProxyHeader(maxV2Length: number): Promise<Uint8Array | null> {
    const ms = this.#server.options.handshakeTimeout;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      this.#conn.close(true);
    }, ms);
    let buf: Uint8Array = EMPTY;
    try {
      for (;;) {
        let chunk: Uint8Array | null;
        try {
          chunk = await this.#io.read();
        } catch {
          chunk = null;
        }
        if (chunk === null) {
          this.#refused(
            timedOut
              ? `no PROXY header within ${ms} ms`
              : this.#closing
              ? "server shutting down"
              : "connection closed before the PROXY header",
          );
          this.#conn.close(true);
          return null;
        }
        if (buf.length === 0) buf = chunk;
        else {
          const merged = new Uint8Array(buf.length + chunk.length);
          merged.set(buf);
          merged.set(chunk, buf.length);
          buf = merged;
        }
        const p = parseProxyHeader(buf, { maxV2Length });
        switch (p.status) {
          case "incomplete":
            continue;
          case "error":
            this.#refused(`bad PROXY header: ${p.reason}`);
            this.#conn.close(true);
            return null;
          case "ok":
            this.#useProxy(p.header);
            return buf.subarray(p.length);
          default:
            return assertNever(p);
        }
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** The session as the header tells it: the original client's address. */
  #useProxy(h: ProxyHeader): void {
    const s = this.session;
    const peer = this.#conn.remoteAddr;
    const relayed = h.command === "proxy" && h.family !== "unknown";
    s.proxy = {
      version: h.version,
      command: h.command,
      family: h.command === "local" ? "unknown" : h.family,
      address: peer.hostname,
      port: peer.port,
      source: relayed ? h.source : null,
      destination: relayed ? h.destination : null,
      // HAProxy's v1 checks name the check's own connection as the client.
      healthCheck: h.command === "local" ||
        (relayed && h.family !== "unix" &&
          stripMapped(h.source.address) === peer.hostname &&
          h.source.port === peer.port),
      tlvs: h.tlvs,
    };
    if (relayed && h.family !== "unix") {
      s.remoteAddress = stripMapped(h.source.address);
      s.remotePort = h.source.port;
    }
  }

  /** Counts the connection for maxConnectionsPerIp; false: refused (421, closed). */
  async #claimIp(): Promise<boolean> {
    const ip = this.session.remoteAddress;
    const key = clientKey(ip);
    let claimed = this.#server.claimIp(key);
    if (isThenable(claimed)) claimed = await claimed;
    if (!claimed) {
      this.#server.refuse(
        this.#conn,
        ip,
        "too many connections from this address",
        (bytes) => this.#io.write(bytes),
      );
      return false;
    }
    if (this.#server.options.path === null) this.countedIp = key;
    return true;
  }

  /**
   * Waits `ms` before the greeting; a client that sends anything first
   * (`early`: bytes that came after the PROXY header) gets 554 5.7.1 and
   * is closed. A read still pending when the wait ends is the loop's.
   */
  async #greetingDelay(ms: number, early: Uint8Array): Promise<boolean> {
    // A chunk, null (the client left), or undefined (it kept quiet).
    let r: Uint8Array | null | undefined = early.length > 0 ? early : undefined;
    if (r === undefined) {
      const read = new Promise<Uint8Array | null>((resolve) =>
        resolve(this.#io.read())
      ).catch(() => null);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const waited = new Promise<undefined>((resolve) => {
        timer = setTimeout(() => resolve(undefined), ms);
      });
      r = await Promise.race([read, waited]);
      clearTimeout(timer);
      if (r === undefined) {
        this.#pendingRead = read;
        return true;
      }
    }
    if (r === null) {
      this.#refused(
        this.#closing
          ? "server shutting down"
          : "connection closed before the greeting",
      );
      this.#conn.close(true);
      return false;
    }
    this.#refused("sent data before the greeting");
    replyAndClose(
      this.#conn,
      `554 5.7.1 ${this.#engine.options.serverName} Protocol error: talked before the greeting`,
      (bytes) => this.#io.write(bytes),
    );
    return false;
  }

  /** Writes the engine's replies; `undefined` when it has none. */
  #flush(): Promise<void> | undefined {
    const out = this.#engine.takeOutput();
    if (out === null) return undefined;
    if (this.#server.logger) {
      this.#server.logger({
        type: "reply",
        session: this.session.id,
        text: new TextDecoder().decode(out),
      });
    }
    return this.#write(out);
  }

  /** Writes `out`; a promise only while the client has not taken it. */
  #write(out: Uint8Array): Promise<void> | undefined {
    const pending = this.#io.write(out);
    if (!isThenable(pending)) return undefined;
    if (this.#writes++ === 0) this.#writeSince = Date.now();
    this.#watchWrites(this.#engine.options.idleTimeout);
    const done = () => {
      // Progress: the oldest pending write (if any) is younger now.
      this.#writeSince = --this.#writes === 0 ? 0 : Date.now();
    };
    return pending.then(done, (err) => {
      done();
      throw err;
    });
  }

  /**
   * A client that stops reading its replies (one that pipelines without
   * end, say) used to hold this loop, its connection slot and close() for
   * ever: a write the client does not take within idleTimeout ends the
   * connection (the pending write fails). One timer per idleTimeout window
   * while writes are pending, not one per write: a timer per reply cost up
   * to 2.7 µs per command (Deno).
   */
  #watchWrites(delay: number): void {
    if (delay === Infinity || this.#ended) return;
    const d = this.#writeTimer ??= new DriverDeadline(this, true);
    if (!deadlines.has(d)) deadlines.set(d, Date.now() + delay);
  }

  /** The write watchdog fired (see #watchWrites). */
  onWriteTimer(): void {
    if (this.#writes === 0) return;
    const ms = this.#engine.options.idleTimeout;
    const left = this.#writeSince + ms - Date.now();
    if (left > 0) return this.#watchWrites(left);
    this.#server.logger?.({
      type: "error",
      session: this.session.id,
      message: `the client did not read its replies for ${ms} ms`,
      error: null,
    });
    this.#abort();
  }

  /**
   * The connection's one deadline (in {@link deadlines}, which shares one
   * runtime timer among all connections), for the idle/DATA deadline
   * while reading and the hook deadline while waiting (#wait). Re-armed
   * only when a deadline comes earlier than the one it is set for, or when
   * it fires early: with the default timeouts it is set about once a
   * minute, not once per command or message.
   */
  #armTimer(deadline: number): void {
    if (deadline === Infinity || this.#ended) return;
    const d = this.#deadline ??= new DriverDeadline(this, false);
    // Set already for an earlier time: it fires first and re-arms. A later
    // one moves earlier (DATA started with a dataTimeout shorter than what
    // was left of idleTimeout, or a hook wait began): set() moves it.
    if (deadlines.has(d) && d.at <= deadline) return;
    deadlines.set(d, deadline);
  }

  /** The connection's deadline fired (see #armTimer). */
  onTimer(): void {
    const now = Date.now();
    // A wait past its deadline ends with HOOK_TIMEOUT.
    if (this.#settle !== null && this.#hookDeadline !== Infinity) {
      if (now >= this.#hookDeadline) this.#settle(HOOK_TIMEOUT);
      else this.#armTimer(this.#hookDeadline);
    }
    // Only the client's silence counts: not our own backpressure or hooks.
    if (!this.#reading) return;
    const deadline = this.#engine.deadline();
    if (now < deadline) return this.#armTimer(deadline);
    this.#engine.tick(now);
    if (this.#engine.closed) void this.#flushAndClose();
  }

  /**
   * Waits for `p` (a hook, or the reader of `raw`) until the hook deadline
   * (hookTimeout from now) or a forced close, whichever comes first. One
   * promise and one reaction on `p` per wait, and no timer of its own (see
   * #armTimer): no Promise.race, no reaction left behind on a long-lived
   * promise. `p`'s value is the result when `valued` (a promise that never
   * rejects, of null or the reply); otherwise fulfilment means null and a
   * rejection (before the deadline) the hook's error.
   */
  #wait(
    p: PromiseLike<unknown>,
    valued: boolean,
    hook: HookName = "onMessage",
  ): Promise<WaitResult> {
    return new Promise<WaitResult>((resolve) => {
      let done = false;
      const settle = (result: WaitResult) => {
        if (done) return;
        done = true;
        if (this.#settle === settle) {
          this.#settle = null;
          this.#hookDeadline = Infinity;
        }
        resolve(result);
      };
      // Promise.resolve: a thenable whose then() throws counts as a
      // rejection. Always subscribed, so that no rejection goes unhandled.
      Promise.resolve(p).then(
        valued ? (v) => settle(v as SmtpError | null) : () => settle(null),
        (err) => {
          if (!done) settle(this.#hookError(err, hook));
        },
      );
      if (this.#wasForced) return settle(FORCED);
      this.#settle = settle;
      const ms = this.#server.options.hookTimeout;
      if (ms !== Infinity) {
        this.#hookDeadline = Date.now() + ms;
        this.#armTimer(this.#hookDeadline);
      }
    });
  }

  /** A hook's wait result as the reply to send (null: accepted). */
  #hookReply(r: WaitResult): SmtpError | null {
    if (r === FORCED) return SHUTDOWN;
    if (r === HOOK_TIMEOUT) {
      this.#server.logger?.({
        type: "error",
        session: this.session.id,
        message:
          `hook did not settle within ${this.#server.options.hookTimeout} ms`,
        error: null,
      });
      return TEMPORARY;
    }
    return r;
  }

  /**
   * Calls the hook of a connect/helo/mail/rcpt decision (with the hook
   * deadline) and answers the engine: at once when there is no hook or it
   * returns no promise, else through the returned promise.
   */
  #decide(ev: DecisionEvent): Promise<void> | undefined {
    const hooks = this.#server.hooks;
    const s = this.session;
    let r: HookResult;
    try {
      switch (ev.type) {
        case "connect":
          if (hooks.onConnect === undefined) return this.#answer(ev, null);
          r = hooks.onConnect(s);
          break;
        case "helo":
          if (hooks.onHelo === undefined) return this.#answer(ev, null);
          r = hooks.onHelo(ev.hostname, s);
          break;
        case "mail":
          if (hooks.onMailFrom === undefined) return this.#answer(ev, null);
          r = hooks.onMailFrom(ev.from.address, s, ev.params);
          break;
        case "rcpt":
          if (hooks.onRcptTo === undefined) return this.#answer(ev, null);
          r = hooks.onRcptTo(ev.to.address, s, ev.params);
          break;
        default:
          return assertNever(ev);
      }
    } catch (err) {
      return this.#answer(ev, this.#hookError(err, HOOK_OF[ev.type]), true);
    }
    if (!isThenable(r)) return this.#answer(ev, null, true);
    return this.#wait(r, false, HOOK_OF[ev.type]).then((w) =>
      this.#answer(ev, this.#hookReply(w), true)
    );
  }

  /** Answers the engine's decision; `hooked`: a hook was asked. */
  #answer(
    ev: DecisionEvent,
    error: SmtpError | null,
    hooked = false,
  ): undefined {
    if (error === null) {
      const s = this.session;
      if (ev.type === "helo") {
        s.heloName = ev.hostname;
        s.esmtp = ev.verb !== "HELO"; // EHLO, or LHLO in LMTP
      } else if (ev.type === "mail") s.transactions++;
      this.#engine.accept();
    } else this.#engine.reject(error);
    // The client's idle time starts when it has our answer, not when it
    // sent the command (a slow hook must not eat the client's timeout).
    if (hooked) this.#engine.receive(EMPTY, Date.now());
    return undefined;
  }

  /** AUTH: the "auth attempt → yes or no" event, answered by auth.verify. */
  async #authenticate(credentials: AuthCredentials): Promise<void> {
    const auth = this.#server.hooks.auth!;
    const s = this.session;
    const limits = this.#server.limits;
    const key = clientKey(s.remoteAddress);
    // Counted when it begins: guesses in flight at once cannot get more
    // checked than the budget. One that could use up the budget with those
    // in flight waits for them.
    const since = Date.now();
    let start: AuthStart;
    for (;;) {
      const r = limits.authStart(key);
      start = isThenable(r) ? await r : r;
      if (
        start.verdict !== "busy" || this.#closing ||
        Date.now() - since >= AUTH_QUEUE_MS
      ) break;
      await this.#pause(AUTH_QUEUE_POLL_MS);
    }
    if (start.verdict !== "ok") {
      // Locked out (or no room to count): the application is not asked;
      // slow, then 454.
      await this.#pause(failureDelay(start.failures));
      return this.#authDone(
        credentials,
        start.verdict === "locked" || start.verdict === "busy"
          ? AUTH_LOCKED
          : AUTH_TEMPORARY,
      );
    }
    let error: SmtpError | null = AUTH_TEMPORARY;
    try {
      const check = (async (): Promise<SmtpError | null> => {
        try {
          return (await checkAuth(auth, credentials, s)) ? null : AUTH_INVALID;
        } catch (err) {
          return this.#hookError(err, "auth", null, AUTH_TEMPORARY);
        }
      })();
      error = this.#hookReply(await this.#wait(check, true));
      if (error === TEMPORARY) error = AUTH_TEMPORARY;
    } finally {
      const failed = error !== null && error.code === 535;
      const ended = limits.authEnd(key, failed);
      const { failures, lockedOut } = isThenable(ended) ? await ended : ended;
      if (lockedOut) {
        this.#server.logger?.({
          type: "auth-lockout",
          session: s.id,
          remoteAddress: s.remoteAddress,
          failures,
        });
      }
      if (failed) await this.#pause(failureDelay(failures));
    }
    this.#authDone(credentials, error);
  }

  /** Logs an AUTH outcome and answers the engine. */
  #authDone(credentials: AuthCredentials, error: SmtpError | null): void {
    const s = this.session;
    this.#server.logger?.({
      type: "auth",
      session: s.id,
      mechanism: credentials.mechanism,
      username: credentials.username,
      success: error === null,
    });
    if (error === null) {
      s.user = credentials.username;
      this.#engine.accept();
    } else this.#engine.reject(error);
    this.#engine.receive(EMPTY, Date.now());
  }

  /**
   * Waits until the message's reader wants more body. A hook that stops
   * reading `raw` without settling would otherwise stop the loop for good
   * (no more reads, so no idle timeout, no disconnect seen, and `close()`
   * never resolving): after hookTimeout without a read, the message is
   * given up (the reader gets an error, the rest of the body is dropped,
   * the client gets 451 4.3.0 at its end).
   */
  async #backpressure(wait: Promise<void>): Promise<void> {
    if ((await this.#wait(wait, false)) !== HOOK_TIMEOUT) return;
    this.#server.logger?.({
      type: "error",
      session: this.session.id,
      message:
        `message hook did not read the body for ${this.#server.options.hookTimeout} ms`,
      error: null,
    });
    this.#stalled = TEMPORARY;
    this.#abortMessage(TEMPORARY);
  }

  /**
   * The body will not complete: the reader of `raw` gets `error`, and a
   * message still waiting for the `for await` loop is withdrawn (the loop
   * used to get it later, already failed: a loop body without try/catch
   * around its read then ended the application's loop).
   */
  #abortMessage(error: SmtpError): void {
    const msg = this.#message;
    if (msg === null) return;
    msg.abort(error);
    msg.giveUp(error);
    this.#server.withdraw(msg);
  }

  /**
   * The reply to a hook's error: an SmtpError is the reply; anything else
   * is logged and reported (onError) once, and answered 451 4.3.0 (or
   * `reply`). `message`: the message an onMessage hook was handling.
   */
  #hookError(
    err: unknown,
    hook: HookName,
    message: IncomingMessage | null = null,
    reply: SmtpError = TEMPORARY,
  ): SmtpError {
    const smtp = toSmtpError(err);
    if (smtp !== null) return smtp;
    this.#server.logger?.({
      type: "error",
      session: this.session.id,
      message: `${hook} failed`,
      error: err,
      hook,
    });
    // Given up after hookTimeout: what the hook throws then is the abort.
    if (message === null || !message.signal.aborted) {
      this.#server.reportError(err, {
        hook,
        session: this.session,
        message,
      });
    }
    return reply;
  }

  #startMessage(ev: Extract<SmtpEvent, { type: "message-start" }>): void {
    const env = this.#engine.envelope;
    const msg = new IncomingMessage(
      newId(),
      { mailbox: env.from!, params: env.mailParams! },
      env.recipients.slice(),
      this.session,
      {
        bodyType: ev.body,
        command: ev.command,
        lmtp: this.#engine.options.lmtp,
      },
    );
    this.#message = msg;
    this.#stalled = null;
    // The hook runs untimed while the body arrives (backpressure has its
    // own deadline); once it is done, nobody reads `raw`: drop the rest of
    // the body.
    let r: HookResult;
    try {
      r = this.#server.deliver(msg);
    } catch (err) {
      msg.drain();
      this.#messageResult = this.#hookError(err, "onMessage", msg);
      return;
    }
    if (!isThenable(r)) {
      msg.drain();
      this.#messageResult = null;
      return;
    }
    this.#messageResult = Promise.resolve(r).then(
      () => {
        msg.drain();
        return null;
      },
      (err) => {
        msg.drain();
        return this.#hookError(err, "onMessage", msg);
      },
    );
  }

  /** The body ended: answers with the hook's outcome (at once if known). */
  #endMessage(
    ev: Extract<SmtpEvent, { type: "message-end" }>,
  ): Promise<void> | undefined {
    const msg = this.#message!;
    const result = this.#messageResult;
    const stalled = this.#stalled;
    this.#message = null;
    this.#messageResult = null;
    this.#stalled = null;
    msg.end();
    // A hook that stopped reading already had its hookTimeout.
    if (stalled !== null) return this.#messageDone(msg, ev, stalled);
    if (!(result instanceof Promise)) {
      return this.#messageDone(msg, ev, result);
    }
    return this.#wait(result, true).then((w) => {
      const reply = this.#hookReply(w);
      if (w === HOOK_TIMEOUT || w === FORCED) {
        // The sender gets a failure and will retry: the application must
        // not keep this copy (signal), and the loop must never hand it out.
        msg.giveUp(reply!);
        this.#server.withdraw(msg);
      }
      return this.#messageDone(msg, ev, reply);
    });
  }

  #messageDone(
    msg: IncomingMessage,
    ev: Extract<SmtpEvent, { type: "message-end" }>,
    error: SmtpError | null,
  ): undefined {
    // LMTP: the recipients refused one by one (null: none, or SMTP).
    const each = msg.answer();
    if (error === null) {
      const to = each === null ? msg.to : msg.to.filter((_, i) => !each[i]);
      if (to.length > 0) {
        this.session.messages++;
        this.#server.logger?.({
          type: "message",
          session: this.session.id,
          id: msg.id,
          from: msg.from,
          to,
          size: ev.size,
        });
      }
      if (each === null) this.#engine.accept(`OK ${msg.id}`);
      else {
        this.#engine.acceptEach(
          each.map((e, i) =>
            e === null
              ? `OK ${msg.id} <${msg.to[i]}>`
              : (toSmtpError(e) ?? TEMPORARY)
          ),
        );
      }
    } else {
      this.#engine.reject(error);
    }
    return undefined;
  }

  async #startTls(): Promise<void> {
    const upgrade = this.#conn.startTls;
    if (upgrade === undefined) {
      this.#engine.reject(new SmtpError(454, "4.7.0", "TLS not available"));
      return;
    }
    this.#engine.accept();
    const reply = this.#engine.takeOutput()!;
    this.#server.logger?.({
      type: "reply",
      session: this.session.id,
      text: new TextDecoder().decode(reply),
    });
    this.#io.release?.();
    let conn: Connection;
    this.#upgrading = true;
    try {
      conn = await upgrade(reply);
    } catch (error) {
      this.#server.logger?.({
        type: "error",
        session: this.session.id,
        message: "TLS handshake failed",
        error,
      });
      this.#engine.end();
      return;
    } finally {
      this.#upgrading = false;
    }
    this.#conn = conn;
    this.#io = connectionIo(conn);
    this.session.secure = true;
    this.session.tls = conn.tls;
    this.session.heloName = null;
    this.session.esmtp = false;
    this.session.user = null;
    this.#engine.tlsStarted();
  }
}

function assertNever(x: never): never {
  throw new Error(`Unexpected event: ${JSON.stringify(x)}`);
}

/** Waiting deliveries and takers for the `for await` style. */
interface Delivery {
  message: LoopMessage;
  settle: (error: SmtpError | null) => void;
}

class SmtpServer implements Server {
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
  #drivers = new Set<ConnectionDriver>();
  #closing: Promise<void> | null = null;
  /** Where connections and AUTH failures per client address are counted. */
  readonly limits: ClientLimits;
  #inbox: Delivery[] = [];
  #takers: ((d: Delivery | null) => void)[] = [];
  #ended = false;

  constructor(
    listener: Listener,
    options: ServeOptions,
    resolved: ResolvedServeOptions,
    runtime: string,
  ) {
    this.options = resolved;
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
    return this.#drivers.size;
  }

  async #acceptLoop(): Promise<void> {
    // A listener whose iteration throws is iterated again after a pause,
    // and a connection that cannot be admitted is closed alone: the server
    // must never stop accepting in silence. It ends when the listener
    // does (close()).
    while (!this.#closing) {
      try {
        for await (const conn of this.#listener) {
          if (this.#closing) {
            conn.close();
            continue;
          }
          try {
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
    await Promise.all([...this.#drivers].map((d) => d.done));
    this.#ended = true;
    for (const taker of this.#takers.splice(0)) taker(null);
  }

  #admit(conn: Connection): void {
    const ip = conn.remoteAddr.hostname;
    const o = this.options;
    // PROXY protocol: a peer that may not send a header gets nothing at
    // all (a shim that read the header itself checked already). One with
    // no address left before it was accepted (a proxy's connect-only
    // health check): nothing to tell.
    if (
      o.proxyProtocol !== null && conn.proxy === undefined &&
      !proxyTrusts(o, ip)
    ) {
      if (ip === "") return conn.close(true);
      this.logger?.({
        type: "refused",
        remoteAddress: ip,
        reason: "PROXY header from an untrusted address",
      });
      conn.close();
      return;
    }
    if (this.#drivers.size >= o.maxConnections) {
      return this.refuse(conn, ip, "too many connections");
    }
    // Counted per IP address by the driver (#claimIp), by the client's
    // real address once a PROXY header has named it.
    // In the set before it runs: a session can end before its first await
    // (over maxConnectionsPerIp), and driverEnded() must find it.
    const driver = new ConnectionDriver(this, conn);
    this.#drivers.add(driver);
    driver.start();
  }

  /** A driver's connection is over (its last act, before `done` settles). */
  driverEnded(driver: ConnectionDriver): void {
    this.#drivers.delete(driver);
    const counted = driver.countedIp;
    if (counted !== null) this.limits.disconnect(counted);
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

  /**
   * Refuses a connection: 421 4.7.0, then close (see {@link replyAndClose}
   * for `write`).
   */
  refuse(
    conn: Connection,
    ip: string,
    reason: string,
    write?: (bytes: Uint8Array) => void | Promise<void>,
  ): void {
    this.logger?.({ type: "refused", remoteAddress: ip, reason });
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
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const loopMessage = Object.assign(message, {
        reject(error: SmtpError) {
          if (settled) return;
          settled = true;
          reject(error);
        },
      }) as IncomingMessage & LoopMessage;
      const delivery: Delivery = {
        message: loopMessage,
        settle: (error) => {
          if (settled) return;
          settled = true;
          if (error === null) resolve();
          else reject(error);
        },
      };
      const taker = this.#takers.shift();
      if (taker) taker(delivery);
      else this.#inbox.push(delivery);
    });
  }

  /** Takes a message out of the `for await` inbox, if it is still there. */
  withdraw(message: IncomingMessage): void {
    const i = this.#inbox.findIndex((d) => d.message === (message as Message));
    if (i >= 0) this.#inbox.splice(i, 1)[0].settle(TEMPORARY);
  }

  [Symbol.asyncIterator](): AsyncIterator<LoopMessage> {
    let current: Delivery | null = null;
    let ended = false;
    return {
      next: async () => {
        current?.settle(null);
        current = null;
        if (ended) return { done: true, value: undefined };
        const next = this.#inbox.shift() ??
          (this.#ended
            ? null
            : await new Promise<Delivery | null>((resolve) => {
              this.#takers.push(resolve);
            }));
        if (next === null) return { done: true, value: undefined };
        current = next;
        return { done: false, value: next.message };
      },
      return: () => {
        ended = true;
        current?.settle(TEMPORARY);
        current = null;
        return Promise.resolve({ done: true, value: undefined });
      },
    };
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
      for (const d of this.#drivers) d.shutdown(false);
      const ms = this.options.closeTimeout;
      let timer: ReturnType<typeof setTimeout> | undefined;
      if (ms !== Infinity) {
        timer = setTimeout(() => {
          for (const d of this.#drivers) d.shutdown(true);
        }, ms);
      }
      await this.finished;
      clearTimeout(timer);
      // Messages nobody took: the senders retry.
      for (const d of this.#inbox.splice(0)) d.settle(TEMPORARY);
    })();
    return this.#closing;
  }
}

/**
 * Starts a server on the listener of a runtime shim. `serve()` (in `mod.ts`
 * and in each `runtimes/*.ts`) calls this with its shim; call it directly
 * to bring your own {@link Listener}.
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
): Promise<Server> {
  // Validate everything before anything listens.
  const resolved = resolveServeOptions(options);
  const proxy = resolved.proxyProtocol;
  const logger = resolved.logger;
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
          onRefused: (remoteAddress: string, reason: string) =>
            logger?.({ type: "refused", remoteAddress, reason }),
        },
      }
      : {}),
    reusePort: resolved.reusePort,
  });
  return new SmtpServer(listener, options, resolved, runtime);
}
