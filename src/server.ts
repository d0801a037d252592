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

import type { MailParams, RcptParams } from "./engine.ts";
import { SmtpEngine, type SmtpEvent } from "./engine.ts";
import { SmtpError } from "./errors.ts";
import { IncomingMessage, type Message } from "./message.ts";
import { type EngineOptions, limitOption } from "./options.ts";
import type { Logger, Session } from "./session.ts";
import type {
  Connection,
  Listener,
  ListenFn,
  NetAddress,
  TlsOptions,
} from "./transport.ts";

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
export interface ServeOptions
  extends Omit<EngineOptions, "startTls" | "secure" | "traceCommands"> {
  /** Interface to listen on. Default `"127.0.0.1"` (pass `"0.0.0.0"` or `"::"` to accept from the network). */
  hostname?: string;
  /** Port to listen on; 0 picks a free port (see `server.addr`). Default 2525. */
  port?: number;
  /** Certificate and key: enables STARTTLS (or implicit TLS with `implicitTls`). */
  tls?: TlsOptions;
  /** TLS from the first byte (RFC 8314, port 465 style). Needs `tls`. Default `false`. */
  implicitTls?: boolean;
  /** Open connections at most; more get 421 4.7.0 and are closed. Default 1000. */
  maxConnections?: number;
  /** Open connections per client IP address at most; more get 421 4.7.0. Default 50. */
  maxConnectionsPerIp?: number;
  /** Milliseconds a hook may take before the client gets 451 4.3.0. Default 60000. */
  hookTimeout?: number;
  /** Milliseconds `close()` lets a message in transfer finish before closing it. Default 30000. */
  closeTimeout?: number;
  /** Receives structured log entries (AUTH payloads are redacted). */
  logger?: Logger;
  /** A client connected (before the greeting). Throw to refuse it (its reply, then close). */
  onConnect?: (session: Session) => HookResult;
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
   * A message: called when DATA starts, with `message.raw` streaming the
   * body. The client gets 250 only after this resolves and the body has
   * ended; a thrown {@link SmtpError} is sent as the reply, any other error
   * sends 451 4.3.0. Without this hook, messages go to `for await (const m
   * of server)`.
   */
  onMessage?: (message: Message, session: Session) => HookResult;
  /** The connection closed. */
  onClose?: (session: Session) => void;
}

/**
 * A running SMTP server.
 *
 * Also an async iterable of messages, the "run it in your own loop" style:
 * each message is acknowledged (250) when the loop body has handled it and
 * asks for the next one. Leaving the loop (break or throw) sends 451 4.3.0
 * for the message in hand; `message.reject(error)` chooses the reply.
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
}

/** A message as the `for await` loop gets it: it can also be refused explicitly. */
export interface LoopMessage extends Message {
  /** Refuses the message with this reply instead of accepting it when the loop moves on. */
  reject(error: SmtpError): void;
}

interface ResolvedServeOptions {
  hostname: string;
  port: number;
  maxConnections: number;
  maxConnectionsPerIp: number;
  hookTimeout: number;
  closeTimeout: number;
}

function resolveServeOptions(o: ServeOptions): ResolvedServeOptions {
  if (o.hostname !== undefined && typeof o.hostname !== "string") {
    throw new TypeError("Cannot use option hostname: value is not a string");
  }
  const port = limitOption("port", o.port, 2525, { min: 0 });
  if (port > 65535) {
    throw new TypeError("Cannot use option port: value is greater than 65535");
  }
  if (o.implicitTls && !o.tls) {
    throw new TypeError(
      "Cannot use option implicitTls: no tls certificate given",
    );
  }
  for (
    const hook of [
      "onConnect",
      "onHelo",
      "onMailFrom",
      "onRcptTo",
      "onMessage",
      "onClose",
      "logger",
    ] as const
  ) {
    if (o[hook] !== undefined && typeof o[hook] !== "function") {
      throw new TypeError(`Cannot use option ${hook}: value is not a function`);
    }
  }
  return {
    hostname: o.hostname ?? "127.0.0.1",
    port,
    maxConnections: limitOption("maxConnections", o.maxConnections, 1000, {
      allowInfinity: true,
    }),
    maxConnectionsPerIp: limitOption(
      "maxConnectionsPerIp",
      o.maxConnectionsPerIp,
      50,
      { allowInfinity: true },
    ),
    hookTimeout: limitOption("hookTimeout", o.hookTimeout, 60000, {
      allowInfinity: true,
    }),
    closeTimeout: limitOption("closeTimeout", o.closeTimeout, 30000, {
      allowInfinity: true,
    }),
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
const HOOK_TIMEOUT = Symbol("timeout");

let idCounter = 0;
const idPrefix = (() => {
  const b = new Uint8Array(4);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
})();
function newId(): string {
  return `${idPrefix}${Date.now().toString(36)}${(++idCounter).toString(36)}`;
}

/** The mutable side of a {@link Session}. */
class SessionState implements Session {
  readonly id: string;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly localAddress: string;
  readonly localPort: number;
  heloName: string | null = null;
  esmtp = false;
  secure: boolean;
  tls: Session["tls"];
  user: string | null = null;
  messages = 0;
  transactions = 0;
  readonly openedAt: number = Date.now();

  constructor(conn: Connection) {
    this.id = newId();
    this.remoteAddress = conn.remoteAddr.hostname;
    this.remotePort = conn.remoteAddr.port;
    this.localAddress = conn.localAddr.hostname;
    this.localPort = conn.localAddr.port;
    this.tls = conn.tls;
    this.secure = conn.tls !== null;
  }
}

/** Runs one connection. */
class ConnectionDriver {
  readonly session: SessionState;
  readonly done: Promise<void>;
  #conn: Connection;
  #engine: SmtpEngine;
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #server: SmtpServer;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #reading = false;
  #closing = false;
  #message: IncomingMessage | null = null;
  #messageResult: Promise<SmtpError | null> | null = null;

  constructor(server: SmtpServer, conn: Connection) {
    this.#server = server;
    this.#conn = conn;
    this.session = new SessionState(conn);
    this.#engine = new SmtpEngine(
      {
        ...server.engineOptions,
        startTls: conn.startTls !== undefined,
        secure: conn.tls !== null,
        traceCommands: server.logger !== undefined,
      },
      Date.now(),
    );
    this.#reader = conn.readable.getReader();
    this.#writer = conn.writable.getWriter();
    this.done = this.#run();
  }

  /** Server shutdown: idle sessions end now, a message in transfer soon. */
  shutdown(force: boolean): void {
    this.#closing = true;
    if (force || (this.#reading && this.#message === null)) {
      this.#engine.shutdown();
      void this.#flushAndClose();
    }
  }

  async #flushAndClose(): Promise<void> {
    try {
      await this.#flush();
    } catch { /* peer gone */ }
    this.#conn.close();
  }

  async #run(): Promise<void> {
    const server = this.#server;
    const engine = this.#engine;
    const log = server.logger;
    const s = this.session;
    log?.({
      type: "connect",
      session: s.id,
      remoteAddress: s.remoteAddress,
      remotePort: s.remotePort,
    });
    let reason = "eof";
    try {
      for (;;) {
        const ev = engine.nextEvent();
        switch (ev.type) {
          case "need-data": {
            await this.#flush();
            if (this.#closing && this.#message === null) {
              engine.shutdown();
              break;
            }
            this.#armTimer();
            this.#reading = true;
            let r: ReadableStreamReadResult<Uint8Array>;
            try {
              r = await this.#reader.read();
            } catch {
              r = { done: true, value: undefined };
            } finally {
              this.#reading = false;
            }
            if (r.done) engine.end();
            else engine.receive(r.value, Date.now());
            break;
          }
          case "connect":
            await this.#decide(
              server.hooks.onConnect,
              () => server.hooks.onConnect!(s),
            );
            break;
          case "helo":
            await this.#decide(
              server.hooks.onHelo,
              () => server.hooks.onHelo!(ev.hostname, s),
              () => {
                s.heloName = ev.hostname;
                s.esmtp = ev.verb === "EHLO";
              },
            );
            break;
          case "mail":
            await this.#decide(
              server.hooks.onMailFrom,
              () => server.hooks.onMailFrom!(ev.from.address, s, ev.params),
              () => s.transactions++,
            );
            break;
          case "rcpt":
            await this.#decide(
              server.hooks.onRcptTo,
              () => server.hooks.onRcptTo!(ev.to.address, s, ev.params),
            );
            break;
          case "message-start":
            this.#startMessage();
            break;
          case "data": {
            const wait = this.#message!.push(ev.chunk);
            if (wait !== undefined) await wait;
            break;
          }
          case "message-end":
            await this.#endMessage(ev);
            break;
          case "message-abort":
            this.#message?.abort(ev.error);
            this.#message = null;
            this.#messageResult = null;
            break;
          case "reset":
            break;
          case "starttls":
            await this.#startTls();
            break;
          case "command":
            log?.({ type: "command", session: s.id, line: redact(ev.line) });
            break;
          case "close":
            reason = ev.reason;
            await this.#flush();
            return;
          default:
            assertNever(ev);
        }
      }
    } catch (error) {
      reason = "error";
      log?.({
        type: "error",
        session: s.id,
        message: "connection failed",
        error,
      });
    } finally {
      if (this.#timer !== null) clearTimeout(this.#timer);
      this.#message?.abort(TEMPORARY);
      this.#conn.close();
      log?.({ type: "close", session: s.id, reason, messages: s.messages });
      try {
        server.hooks.onClose?.(s);
      } catch (error) {
        log?.({
          type: "error",
          session: s.id,
          message: "onClose failed",
          error,
        });
      }
    }
  }

  async #flush(): Promise<void> {
    const out = this.#engine.takeOutput();
    if (out === null) return;
    if (this.#server.logger) {
      this.#server.logger({
        type: "reply",
        session: this.session.id,
        text: new TextDecoder().decode(out),
      });
    }
    await this.#writer.write(out);
  }

  /** Idle/DATA deadline: one timer, re-armed only when it fires early. */
  #armTimer(): void {
    if (this.#timer !== null) return;
    const wait = this.#engine.deadline() - Date.now();
    if (wait === Infinity) return;
    this.#timer = setTimeout(() => this.#onTimer(), Math.max(0, wait));
  }

  #onTimer(): void {
    this.#timer = null;
    // Only the client's silence counts: not our own backpressure or hooks.
    if (!this.#reading) return;
    const now = Date.now();
    if (now < this.#engine.deadline()) return this.#armTimer();
    this.#engine.tick(now);
    if (this.#engine.closed) void this.#flushAndClose();
  }

  /** Calls a hook (with the hook deadline) and answers the engine. */
  async #decide(
    hook: unknown,
    call: () => HookResult,
    onAccept?: () => void,
  ): Promise<void> {
    const error = hook === undefined ? null : await this.#callHook(call, true);
    if (error === null) {
      onAccept?.();
      this.#engine.accept();
    } else this.#engine.reject(error);
  }

  /** Runs a hook; resolves to null (accepted) or the reply to send. */
  async #callHook(
    call: () => HookResult,
    timed: boolean,
  ): Promise<SmtpError | null> {
    try {
      const r = call();
      if (r === undefined || typeof (r as Promise<void>)?.then !== "function") {
        return null;
      }
      if (!timed) {
        await r;
        return null;
      }
      return await this.#withTimeout(r.then(() => null));
    } catch (err) {
      return this.#hookError(err);
    }
  }

  async #withTimeout(p: Promise<SmtpError | null>): Promise<SmtpError | null> {
    const ms = this.#server.options.hookTimeout;
    if (ms === Infinity) return await p;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<typeof HOOK_TIMEOUT>((resolve) => {
      timer = setTimeout(() => resolve(HOOK_TIMEOUT), ms);
    });
    try {
      const r = await Promise.race([p, timeout]);
      if (r === HOOK_TIMEOUT) {
        this.#server.logger?.({
          type: "error",
          session: this.session.id,
          message: `hook did not settle within ${ms} ms`,
          error: null,
        });
        return TEMPORARY;
      }
      return r;
    } finally {
      clearTimeout(timer);
    }
  }

  #hookError(err: unknown): SmtpError {
    const smtp = toSmtpError(err);
    if (smtp !== null) return smtp;
    this.#server.logger?.({
      type: "error",
      session: this.session.id,
      message: "hook failed",
      error: err,
    });
    return TEMPORARY;
  }

  #startMessage(): void {
    const env = this.#engine.envelope;
    const msg = new IncomingMessage(
      newId(),
      { mailbox: env.from!, params: env.mailParams! },
      env.recipients.slice(),
      this.session,
    );
    this.#message = msg;
    const result = this.#callHook(() => this.#server.deliver(msg), false);
    // Once the hook is done, nobody reads `raw`: drop the rest of the body.
    void result.then(() => msg.drain());
    this.#messageResult = result;
  }

  async #endMessage(
    ev: Extract<SmtpEvent, { type: "message-end" }>,
  ): Promise<void> {
    const msg = this.#message!;
    const result = this.#messageResult!;
    this.#message = null;
    this.#messageResult = null;
    msg.end();
    const error = await this.#withTimeout(result);
    if (error === null) {
      this.session.messages++;
      this.#server.logger?.({
        type: "message",
        session: this.session.id,
        id: msg.id,
        from: msg.from,
        to: msg.to,
        size: ev.size,
      });
      this.#engine.accept(`OK ${msg.id}`);
    } else {
      this.#engine.reject(error);
    }
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
    this.#reader.releaseLock();
    this.#writer.releaseLock();
    let conn: Connection;
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
    }
    this.#conn = conn;
    this.#reader = conn.readable.getReader();
    this.#writer = conn.writable.getWriter();
    this.session.secure = true;
    this.session.tls = conn.tls;
    this.session.heloName = null;
    this.session.esmtp = false;
    this.session.user = null;
    this.#engine.tlsStarted();
  }
}

function redact(line: string): string {
  return /^AUTH\b/i.test(line)
    ? line.replace(/^(AUTH\s+\S+).*/i, "$1 ***")
    : line;
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
  readonly hooks: ServeOptions;
  readonly logger: Logger | undefined;
  readonly finished: Promise<void>;
  #listener: Listener;
  #drivers = new Set<ConnectionDriver>();
  #perIp = new Map<string, number>();
  #closing: Promise<void> | null = null;
  #inbox: Delivery[] = [];
  #takers: ((d: Delivery | null) => void)[] = [];
  #ended = false;

  constructor(listener: Listener, options: ServeOptions, runtime: string) {
    this.options = resolveServeOptions(options);
    const {
      hostname: _h,
      port: _p,
      tls: _t,
      implicitTls: _i,
      maxConnections: _mc,
      maxConnectionsPerIp: _mi,
      hookTimeout: _ht,
      closeTimeout: _ct,
      logger: _l,
      onConnect: _oc,
      onHelo: _oh,
      onMailFrom: _om,
      onRcptTo: _or,
      onMessage: _omsg,
      onClose: _ocl,
      ...engineOptions
    } = options;
    this.engineOptions = engineOptions;
    this.hooks = options;
    this.logger = options.logger;
    this.#listener = listener;
    this.logger?.({
      type: "listen",
      hostname: listener.addr.hostname,
      port: listener.addr.port,
      runtime,
    });
    this.finished = this.#acceptLoop();
  }

  get addr(): NetAddress {
    return this.#listener.addr;
  }

  get connections(): number {
    return this.#drivers.size;
  }

  async #acceptLoop(): Promise<void> {
    try {
      for await (const conn of this.#listener) {
        if (this.#closing) {
          conn.close();
          continue;
        }
        this.#admit(conn);
      }
    } catch (error) {
      if (!this.#closing) {
        this.logger?.({ type: "error", message: "listener failed", error });
      }
    }
    await Promise.all([...this.#drivers].map((d) => d.done));
    this.#ended = true;
    for (const taker of this.#takers.splice(0)) taker(null);
  }

  #admit(conn: Connection): void {
    const ip = conn.remoteAddr.hostname;
    const perIp = this.#perIp.get(ip) ?? 0;
    const o = this.options;
    if (
      this.#drivers.size >= o.maxConnections || perIp >= o.maxConnectionsPerIp
    ) {
      const reason = this.#drivers.size >= o.maxConnections
        ? "too many connections"
        : "too many connections from this address";
      this.logger?.({ type: "refused", remoteAddress: ip, reason });
      const writer = conn.writable.getWriter();
      const name = this.engineOptions.serverName ?? "localhost";
      writer.write(
        new TextEncoder().encode(
          `421 4.7.0 ${name} Too many connections, try again later\r\n`,
        ),
      ).catch(() => {}).finally(() => conn.close());
      return;
    }
    this.#perIp.set(ip, perIp + 1);
    const driver = new ConnectionDriver(this, conn);
    this.#drivers.add(driver);
    void driver.done.finally(() => {
      this.#drivers.delete(driver);
      const n = (this.#perIp.get(ip) ?? 1) - 1;
      if (n <= 0) this.#perIp.delete(ip);
      else this.#perIp.set(ip, n);
    });
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
 * import { createServer } from "@smtpd/smtpd";
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
  new SmtpEngine(options); // throws TypeError on a bad engine option
  const listener = await listen({
    hostname: resolved.hostname,
    port: resolved.port,
    tls: options.tls,
    implicitTls: options.implicitTls ?? false,
  });
  return new SmtpServer(listener, options, runtime);
}
