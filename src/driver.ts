/**
 * The driver: one loop per connection that reads bytes, feeds the engine,
 * awaits the application's hooks, writes replies with backpressure and
 * keeps the deadlines. Its helpers each own a piece: the preamble
 * (`preamble.ts`), the waits for hooks (`hooks.ts`), the message in
 * transfer (`delivery.ts`) and AUTH (`auth_flow.ts`).
 *
 * Runtime-free: the shim (`runtimes/*.ts`) supplies the connection.
 *
 * @module
 */

import { SmtpEngine, type SmtpEvent } from "./engine.ts";
import { SmtpError } from "./errors.ts";
import type { HookName } from "./session.ts";
import type { Connection } from "./transport.ts";
import { OWNED_CHUNKS, type ReadWaiter } from "./shim_kit.ts";
import { type Deadline, deadlines, now } from "./deadlines.ts";
import type { HookResult } from "./serve_options.ts";
import type { DriverHost } from "./host.ts";
import { HookCalls, isThenable, SHUTDOWN, TEMPORARY } from "./hooks.ts";
import { MessageDelivery } from "./delivery.ts";
import { authenticate } from "./auth_flow.ts";
import { claimIp, preamble } from "./preamble.ts";
import { SessionState } from "./session_state.ts";
import type { MilterSession } from "./milter/session.ts";
import type { AuthCredentials } from "./sasl.ts";

const EMPTY = new Uint8Array(0);

/** A connection that may say its chunks are its reader's (see OWNED_CHUNKS). */
interface OwnedChunks {
  readonly [OWNED_CHUNKS]?: true;
}

/** What goes on with a session after a wait (see ConnectionDriver.#loop). */
interface Continuations {
  /** On with the session. */
  readonly goOn: () => void;
  /** The wait failed: the session ends with the error. */
  readonly fail: (error: unknown) => void;
}
/** Replies as text for the logger: one decoder (not streaming, so shared). */
const DECODER = new TextDecoder();
/** A driver's `done` after the session. */
const SETTLED: Promise<void> = Promise.resolve();
/** How long a forced close (after closeTimeout) waits for the 421 to go out. */
const FORCED_FLUSH_MS = 500;

/**
 * A driver's write watchdog, as a heap entry (its read/hook deadline is
 * the driver itself: no object more per idle session).
 */
class WriteDeadline implements Deadline {
  /** Meaningful while set (index >= 0); a small integer, as the driver's. */
  at = 0;
  index = -1;
  readonly driver: ConnectionDriver;
  /** Writes pending, and since when the oldest waits (see #writing). */
  writes = 0;
  since = 0;

  constructor(driver: ConnectionDriver) {
    this.driver = driver;
  }

  fire(): void {
    this.driver.onWriteTimer();
  }
}

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

/** A connection's read and write, from its fast path or its streams. */
export interface Io {
  read(): Uint8Array | null | Promise<Uint8Array | null>;
  /**
   * read() without a promise, where the shim has it (`InputQueue.readOr`):
   * `undefined` when nothing is buffered, and `waiter` is told later.
   */
  readOr?(waiter: ReadWaiter): Uint8Array | null | undefined;
  write(bytes: Uint8Array): void | Promise<void>;
  /** Lets go of the streams (STARTTLS); absent on the fast path. */
  release?(): void;
}

/**
 * `conn.read`/`conn.write` when the shim has them (no stream machinery,
 * no promise when bytes are buffered or the kernel takes a write), else
 * a reader and a writer of its streams.
 */
export function connectionIo(conn: Connection): Io {
  // The connection itself: no object or bound functions per connection.
  if (conn.read !== undefined && conn.write !== undefined) {
    return conn as Connection & Io;
  }
  return streamIo(conn);
}

/**
 * {@link connectionIo} over the connection's streams. A function of its
 * own: one whose variables closures capture gets a scope object at every
 * call on JavaScriptCore (Bun), also when it returns before making them.
 */
function streamIo(conn: Connection): Io {
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

/**
 * What only some sessions use: a preamble (PROXY header, greetingDelay,
 * reverse DNS), a pause, STARTTLS, a client that stops reading, a server
 * close that waits for the session. Made when first needed: fields of the
 * driver itself cost every idle session (past 18 of them JavaScriptCore
 * takes the next size of heap cell, 224 bytes instead of 160).
 */
class DriverExtras {
  /** The connection's streams as an Io, when it has no read/write of its own. */
  streams: Io | null = null;
  /** `done` and what settles it (made when first asked for). */
  done: Awaitable | null = null;
  /** Ends a pause (pause()) early. */
  wake: (() => void) | null = null;
  /** Reading the PROXY header or waiting out greetingDelay. */
  inPreamble = false;
  /** A read started during greetingDelay, for the loop to take over. */
  pendingRead: Promise<Uint8Array | null> | null = null;
  /** Waiting for a STARTTLS handshake. */
  upgrading = false;
  /** The client stopped taking our replies. */
  writeStalled = false;
}

/** A promise and the function that settles it (see `ConnectionDriver.done`). */
interface Awaitable {
  readonly promise: Promise<void>;
  settle: () => void;
}

/** A new {@link Awaitable}. */
function awaitable(): Awaitable {
  const a = { promise: SETTLED, settle: () => {} };
  a.promise = new Promise((resolve) => (a.settle = resolve));
  return a;
}

/**
 * Runs one connection.
 *
 * @example
 * ```ts
 * import { ConnectionDriver } from "./driver.ts";
 * import type { DriverHost } from "./host.ts";
 * import type { Connection } from "./transport.ts";
 *
 * declare const host: DriverHost;
 * declare const conn: Connection;
 * const driver = new ConnectionDriver(host, conn);
 * driver.start();
 * await driver.done;
 * ```
 */
export class ConnectionDriver implements ReadWaiter, Deadline {
  readonly session: SessionState;
  /**
   * Settles when the session is over (see start()); made when first
   * asked (server.close()), not kept by every session.
   */
  get done(): Promise<void> {
    if (this.#ended) return SETTLED;
    return (this.#x().done ??= awaitable()).promise;
  }
  /** What only some sessions use (see DriverExtras), or null. */
  #extras: DriverExtras | null = null;
  #x(): DriverExtras {
    return this.#extras ??= new DriverExtras();
  }
  /** The connection (replaced by its TLS one after STARTTLS). */
  conn: Connection;
  readonly engine: SmtpEngine;
  /**
   * The connection's read and write: the connection itself on the fast
   * path (no field for it in every driver), else its streams.
   */
  get io(): Io {
    const x = this.#extras;
    return x !== null && x.streams !== null
      ? x.streams
      : this.conn as Connection & Io;
  }
  /** Reads and writes `conn` from now on (see connectionIo()). */
  #useIo(conn: Connection): void {
    const io = connectionIo(conn);
    if (io !== conn) this.#x().streams = io;
    else if (this.#extras !== null) this.#extras.streams = null;
  }
  readonly host: DriverHost;
  /** The application's hooks as this connection waits for them (made when first waited for). */
  get hooks(): HookCalls {
    return this.#hooks ??= new HookCalls(this);
  }
  #hooks: HookCalls | null = null;
  /** The message in transfer, if any (made with the first message). */
  get delivery(): MessageDelivery {
    return this.#delivery ??= MessageDelivery.for(this);
  }
  #delivery: MessageDelivery | null = null;
  /** The session's `milters` filters; null when there are none. */
  readonly milter: MilterSession | null;
  /**
   * When the connection's deadline in {@link deadlines} fires (the driver
   * is that entry: see armTimer()); meaningful while set. A small integer
   * (see `now` in deadlines.ts), not Infinity: a field that ever holds a
   * fraction or Infinity is a boxed number in every driver.
   */
  at = 0;
  /** The deadline's place in {@link deadlines} (-1: not set). */
  index = -1;
  #reading = false;
  /** The server is closing. */
  closing = false;
  /**
   * The watchdog of pending writes, with their count and since when the
   * oldest waits (in {@link deadlines}: a runtime timer per connection
   * cost Deno about 5 KB per idle connection, and on Deno every write is
   * a promise); made with the first write that has to be waited for.
   */
  #writeTimer: WriteDeadline | null = null;
  /** The loop has ended: no timer may be armed any more, `done` is settled. */
  #ended = false;
  /** The key counted for maxConnectionsPerIp (null: not counted). */
  countedIp: string | null = null;
  /** The driver's place among its server's open connections (-1: none). */
  slot = -1;
  /** Reading the PROXY header or waiting out greetingDelay (see preamble()). */
  get inPreamble(): boolean {
    return this.#extras !== null && this.#extras.inPreamble;
  }
  set inPreamble(on: boolean) {
    if (on || this.#extras !== null) this.#x().inPreamble = on;
  }
  /** A read started during greetingDelay, for the loop to take over. */
  get pendingRead(): Promise<Uint8Array | null> | null {
    return this.#extras === null ? null : this.#extras.pendingRead;
  }
  set pendingRead(read: Promise<Uint8Array | null> | null) {
    if (read !== null || this.#extras !== null) this.#x().pendingRead = read;
  }
  /** The client stopped taking our replies. */
  #writeStalled(): boolean {
    return this.#extras !== null && this.#extras.writeStalled;
  }

  /** The driver of `conn`, accepted by `host`. */
  constructor(host: DriverHost, conn: Connection) {
    this.host = host;
    this.conn = conn;
    const options = host.engineOptionsFor(
      conn.startTls !== undefined,
      conn.tls !== null,
    );
    this.session = new SessionState(conn, options.lmtp === true);
    // The engine writes its protocol state (HELO name, user...) into the session.
    this.engine = new SmtpEngine(options, now(), this.session);
    this.#useIo(conn);
    this.milter = host.milters === null ? null : host.milters(this.session);
  }

  /** Runs the session (once; `done` settles when it is over). */
  start(): void {
    let admitted: boolean | Promise<boolean>;
    try {
      admitted = this.#admit();
    } catch (error) {
      return this.#refused(error);
    }
    if (isThenable(admitted)) this.#admitLater(admitted);
    else if (admitted) this.#loop(undefined);
    else this.#over();
  }

  /** Goes on when the admission settles (see start()). */
  #admitLater(admitted: Promise<boolean>): void {
    admitted.then(
      (ok) => ok ? this.#loop(undefined) : this.#over(),
      (error) => this.#refused(error),
    );
  }

  /**
   * The read the session waits for came (see the `need-data` case of
   * #read): the session goes on in a microtask, after the runtime's
   * callback that brought it.
   */
  onRead(chunk: Uint8Array | null): void {
    if (pushReady(this, chunk)) queueMicrotask(resumeReady);
  }

  /**
   * The read the session waits for came, in a promise's reaction or the
   * runtime's own read callback (see ReadWaiter.onReadInTask): the
   * session goes on at once (no microtask more per read).
   */
  onReadInTask(chunk: Uint8Array | null): void {
    this.#loop(chunk);
  }

  /** Goes on with the session with the chunk that onRead() brought. */
  resume(chunk: Uint8Array | null): void {
    this.#loop(chunk);
  }

  /** The answer to a message that the loop left waiting was given (see MessageDelivery.end()). */
  goOn(): void {
    this.#loop(undefined);
  }

  /** Giving the answer to a message failed: the session ends with `error`. */
  fail(error: unknown): void {
    this.#failed(error);
  }

  /** Waits `ms`, or less when the server closes (no timer left behind). */
  pause(ms: number): Promise<void> {
    if (ms <= 0 || this.closing) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const x = this.#x();
      const timer = setTimeout(() => x.wake?.(), ms);
      x.wake = () => {
        x.wake = null;
        clearTimeout(timer);
        resolve();
      };
    });
  }

  /** Server shutdown: idle sessions end now, a message in transfer soon. */
  shutdown(force: boolean): void {
    this.closing = true;
    const x = this.#extras;
    x?.wake?.();
    if (x !== null && x.inPreamble) {
      // No greeting yet: nothing to say; the preamble's read ends.
      this.conn.close(true);
      return;
    }
    if (x !== null && x.upgrading && !force) {
      // Mid-handshake: nothing to say in plaintext; the shim fails the
      // pending startTls() and the loop ends.
      this.conn.close();
      return;
    }
    // Between two BDAT chunks the message is open but nothing is in
    // transfer: the engine aborts it (the client gets 421, `raw` errors).
    if (force || (this.#reading && this.#idleOrBetweenChunks())) {
      this.engine.shutdown();
      if (force) {
        // Wake the loop wherever it waits: a hook, or a reader of `raw`
        // that stopped reading. The engine is closed, so their answers
        // no longer matter.
        this.#delivery?.abort(SHUTDOWN);
        this.hooks.force();
        // A filter's answer no longer matters either.
        if (this.milter !== null) void this.milter.close();
      }
      void this.#flushAndClose(force);
    }
  }

  /** No body in transfer: no message, or between two BDAT chunks. */
  #idleOrBetweenChunks(): boolean {
    return this.#delivery === null || this.#delivery.message === null ||
      !this.engine.inBody;
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
    this.conn.close(this.#writeStalled());
  }

  /** Closes at once, dropping unsent replies: a pending write fails. */
  #abort(): void {
    this.#x().writeStalled = true;
    this.conn.close(true);
  }

  /**
   * The session until it must wait: from a start (`resumed` undefined)
   * or after a wait, or going on with the chunk (null: the end of input)
   * of a read it waited for without a promise (see #read). A plain
   * method, not an async function: a read that parks, a hook or a write
   * that has to be waited for ends this call, and what ends the wait
   * calls it again (goOn(), onRead()). No promise or suspended frame per
   * resumed read, and an idle session keeps none. A wait that ends after
   * the session did (a hook as the session timed out, a read's end of
   * input after the close) goes on with nothing: the engine's input is no
   * longer the session's.
   */
  #loop(resumed: Uint8Array | null | undefined): void {
    if (this.#ended) return;
    const engine = this.engine;
    const t = resumed ? now() : undefined; // this run's time, read once (see MessageDelivery.end)
    try {
      if (resumed !== undefined) {
        this.#reading = false;
        if (resumed === null) engine.end();
        else engine.receive(resumed, t!);
      }
      for (;;) {
        const ev = engine.nextEvent();
        let wait: Promise<unknown> | undefined;
        switch (ev.type) {
          case "need-data": {
            const flushed = this.#flush();
            if (flushed !== undefined) {
              // The replies first, then the read: on from here, where
              // nothing is left to write (no third continuation kept).
              const k = this.#continuations();
              flushed.then(k.goOn, k.fail);
              return;
            }
            if (this.#read()) return;
            break;
          }
          case "connect":
          case "helo":
          case "mail":
          case "rcpt": {
            // Synchronous when there is no hook, or when it returns no
            // promise: no wait per command. A hook's promise goes on
            // with the session itself (true).
            const later = this.#decide(ev);
            if (later === true) return;
            wait = later;
            break;
          }
          case "message-start":
            // Before the 354 goes out: the body's first read can be larger.
            this.conn.expectBody?.();
            this.delivery.start(ev);
            break;
          case "data": {
            const chunk = ev.chunk;
            this.host.counters.bodyBytes += chunk.length;
            // A chunk the connection's reader owns (OWNED_CHUNKS) goes to
            // the message's reader without a copy once the engine has let
            // go of it.
            const pushed = this.delivery.push(
              chunk,
              (this.conn as OwnedChunks)[OWNED_CHUNKS] === true &&
                engine.releaseInput(),
            );
            if (pushed !== undefined) {
              wait = this.delivery.backpressure(pushed);
            }
            break;
          }
          case "message-end":
            // The hook's answer goes on with the session (goOn()).
            if (this.delivery.end(ev, t)) return;
            break;
          case "message-abort":
            this.host.counters.aborted++;
            this.delivery.aborted(ev.error);
            break;
          case "reset":
            if (this.milter !== null) wait = this.milter.reset();
            break;
          case "starttls":
            wait = this.#startTls();
            break;
          case "auth":
            wait = this.#authenticate(ev.credentials);
            break;
          case "command":
            // The engine already replaced AUTH credentials with "***".
            this.host.logger?.({
              type: "command",
              session: this.session.id,
              line: ev.line,
            });
            break;
          case "close": {
            const flushed = this.#flush();
            if (flushed === undefined) return this.#finish(ev.reason);
            return this.#finishAfter(flushed, ev.reason);
          }
          default:
            assertNever(ev);
        }
        if (wait !== undefined) {
          const k = this.#continuations();
          wait.then(k.goOn, k.fail);
          return;
        }
      }
    } catch (error) {
      this.#failed(error);
    }
  }

  /** The continuations of the session's waits (see #loop); null until its first wait. */
  #then: Continuations | null = null;

  /** The session's continuations (see #then). */
  #continuations(): Continuations {
    return this.#then ??= this.#makeContinuations();
  }

  /**
   * Makes the session's continuations, once: goOn() and fail() bound (on
   * Deno, where every session waits for its greeting's write, two bound
   * functions are kept, 96 bytes, where three arrows and their context
   * were 208).
   */
  #makeContinuations(): Continuations {
    return { goOn: this.goOn.bind(this), fail: this.fail.bind(this) };
  }

  /** Ends the session (`reason`) once the last replies went out. */
  #finishAfter(flushed: Promise<void>, reason: string): void {
    flushed.then(() => this.#finish(reason), this.#continuations().fail);
  }

  /**
   * Gives the engine the next chunk at `need-data`, if one is buffered;
   * true when the session waits for it instead: onRead() (or the read's
   * promise, on a connection without readOr) goes on with it.
   */
  #read(): boolean {
    const engine = this.engine;
    if (this.closing && this.#idleOrBetweenChunks()) {
      engine.shutdown();
      return false;
    }
    let chunk: Uint8Array | null | undefined | Promise<Uint8Array | null>;
    try {
      const x = this.#extras;
      const pending = x !== null ? x.pendingRead : null;
      if (pending !== null) x!.pendingRead = null;
      const io = this.io;
      chunk = pending !== null
        ? pending
        : io.readOr !== undefined
        ? io.readOr(this)
        : io.read();
    } catch {
      chunk = null;
    }
    if (chunk === undefined || isThenable(chunk)) {
      // Nothing buffered: the client's silence counts from here.
      this.armTimer(engine.deadline());
      this.#reading = true;
      if (chunk !== undefined) this.#readLater(chunk);
      return true;
    }
    if (chunk === null) engine.end();
    else engine.receive(chunk, now());
    return false;
  }

  /**
   * Goes on with the chunk of a read's promise (a connection without
   * readOr); a failed read is the end of input.
   */
  #readLater(chunk: Promise<Uint8Array | null>): void {
    chunk.then((c) => this.#loop(c), () => this.#loop(null));
  }

  /** AUTH (see #loop), and the filters' {auth_type} macro. */
  async #authenticate(credentials: AuthCredentials): Promise<void> {
    await authenticate(this, credentials);
    if (this.milter !== null && this.session.user !== null) {
      this.milter.authType = credentials.mechanism;
    }
  }

  /** The session failed with `error` (a wait rejected, or the loop threw). */
  #failed(error: unknown): void {
    if (this.#ended) return;
    const reason = this.#hooks?.forced === true
      ? "shutdown"
      : this.#writeStalled()
      ? "timeout"
      : "error";
    try {
      this.host.logger?.({
        type: "error",
        session: this.session.id,
        message: "connection failed",
        error,
      });
    } finally {
      this.#finish(reason);
    }
  }

  /** The session is over (`reason`): its bookkeeping, once. */
  #finish(reason: string): void {
    if (this.#ended) return;
    this.#ended = true;
    const server = this.host;
    const s = this.session;
    try {
      deadlines.remove(this);
      if (this.#writeTimer !== null) deadlines.remove(this.#writeTimer);
      const delivery = this.#delivery;
      if (delivery !== null) {
        delivery.abort(TEMPORARY);
        // Unused from here on: to the next connection, if idle.
        this.#delivery = null;
        delivery.release();
      }
      if (this.milter !== null) void this.milter.close();
      // No chunk read is used from here on (the loop does not run again):
      // the shim may give its read buffers to other connections.
      this.conn.readDone?.();
      this.conn.close(this.#writeStalled());
      server.counters.sessionEnded(reason);
      server.logger?.({
        type: "close",
        session: s.id,
        reason,
        messages: s.messages,
      });
      try {
        server.hooks.onClose?.(s);
      } catch (error) {
        this.hooks.error(error, "onClose");
      }
    } catch (error) {
      this.#refused(error);
      return;
    }
    this.#over();
  }

  /**
   * A connection that could not be admitted (or whose bookkeeping failed)
   * is closed alone, and `done` never rejects (a peer gone before it was
   * accepted has no address on some runtimes).
   */
  #refused(error: unknown): void {
    try {
      this.host.logger?.({
        type: "error",
        message: "could not admit a connection",
        error,
      });
      try {
        this.conn.close(true);
      } catch { /* gone already */ }
    } finally {
      this.#over();
    }
  }

  /** The driver is done: the server forgets it, `done` settles. */
  #over(): void {
    this.#ended = true;
    // The server forgets the connection here, not in a callback on
    // `done`: no closure, promise and reaction kept per idle session.
    this.host.driverEnded(this);
    this.#extras?.done?.settle();
  }

  /**
   * Admits the connection (the preamble, or the count per address) and
   * logs it; false: it was refused (and closed). A promise only when
   * something is waited for (a preamble, a shared count): opening a plain
   * session makes none.
   */
  #admit(): boolean | Promise<boolean> {
    const o = this.host.options;
    const admitted = o.proxyProtocol !== null || o.greetingDelay > 0 ||
        this.host.reverseDns !== null
      ? preamble(this)
      : claimIp(this);
    return isThenable(admitted)
      ? this.#connectedLater(admitted)
      : admitted && this.#connected();
  }

  /** #admit once `admitted` settles (apart: no closure context per session). */
  #connectedLater(admitted: Promise<boolean>): Promise<boolean> {
    return admitted.then((ok) => ok && this.#connected());
  }

  /** An admitted connection: counted and logged (see #admit); true. */
  #connected(): true {
    const server = this.host;
    const s = this.session;
    server.counters.connections++;
    server.logger?.({
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
      ...(s.reverseDns !== null ? { reverseDns: s.reverseDns } : {}),
    });
    return true;
  }

  /** Writes the engine's replies; `undefined` when it has none. */
  #flush(): Promise<void> | undefined {
    const out = this.engine.takeOutput();
    if (out === null) return undefined;
    if (this.host.logger) {
      this.host.logger({
        type: "reply",
        session: this.session.id,
        text: DECODER.decode(out),
      });
    }
    return this.#write(out);
  }

  /** Writes `out`; a promise only while the client has not taken it. */
  #write(out: Uint8Array): Promise<void> | undefined {
    const pending = this.io.write(out);
    if (!isThenable(pending)) return undefined;
    return this.#writing(pending);
  }

  /**
   * A write the client has not taken yet (see #write), watched. Apart
   * from #write: its closure's context would be made with every write.
   */
  #writing(pending: Promise<void>): Promise<void> {
    const w = this.#writeTimer ??= new WriteDeadline(this);
    if (w.writes++ === 0) w.since = now();
    this.#watchWrites(this.engine.options.idleTimeout);
    const done = () => {
      // Progress: the oldest pending write (if any) is younger now.
      w.since = --w.writes === 0 ? 0 : now();
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
    const d = this.#writeTimer ??= new WriteDeadline(this);
    if (!deadlines.has(d)) deadlines.set(d, now() + delay);
  }

  /** The write watchdog fired (see #watchWrites). */
  onWriteTimer(): void {
    const w = this.#writeTimer;
    if (w === null || w.writes === 0) return;
    const ms = this.engine.options.idleTimeout;
    const left = w.since + ms - now();
    if (left > 0) return this.#watchWrites(left);
    this.host.logger?.({
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
   * while reading and the hook deadline while waiting (HookCalls.wait). Re-armed
   * only when a deadline comes earlier than the one it is set for, or when
   * it fires early: with the default timeouts it is set about once a
   * minute, not once per command or message.
   */
  armTimer(deadline: number): void {
    if (deadline === Infinity || this.#ended) return;
    // Set already for an earlier time: it fires first and re-arms. A later
    // one moves earlier (DATA started with a dataTimeout shorter than what
    // was left of idleTimeout, or a hook wait began): set() moves it.
    if (deadlines.has(this) && this.at <= deadline) return;
    deadlines.set(this, deadline);
  }

  /** The connection's deadline fired (see armTimer()). */
  fire(): void {
    const t = now();
    // A wait past its deadline ends with HOOK_TIMEOUT.
    this.#hooks?.onTimer(t);
    // Only the client's silence counts: not our own backpressure or hooks.
    if (!this.#reading) return;
    const deadline = this.engine.deadline();
    if (t < deadline) return this.armTimer(deadline);
    this.engine.tick(t);
    if (this.engine.closed) void this.#flushAndClose();
  }

  /**
   * Calls the hook of a connect/helo/mail/rcpt decision (with the hook
   * deadline) and answers the engine: at once when there is no hook or it
   * returns no promise; a promise when the filters decide; true when the
   * hook's promise goes on with the session once it settles (#waitHook).
   */
  #decide(ev: DecisionEvent): Promise<void> | undefined | true {
    const hooks = this.host.hooks;
    const s = this.session;
    // A switch, not a lookup by name: hooks[HOOK_OF[ev.type]] made two
    // megamorphic keyed loads per command.
    let name: HookName;
    let r: HookResult;
    // Timed only when there is a hook (see #timed).
    let since = 0;
    try {
      switch (ev.type) {
        case "connect": {
          const hook = hooks.onConnect;
          if (hook === undefined) return this.#answer(ev, null);
          name = "onConnect";
          since = performance.now();
          r = hook(s);
          break;
        }
        case "helo": {
          const hook = hooks.onHelo;
          if (hook === undefined) return this.#answer(ev, null);
          name = "onHelo";
          since = performance.now();
          r = hook(ev.hostname, s);
          break;
        }
        case "mail": {
          const hook = hooks.onMailFrom;
          if (hook === undefined) return this.#answer(ev, null);
          name = "onMailFrom";
          since = performance.now();
          r = hook(ev.from.address, s, ev.params);
          break;
        }
        case "rcpt": {
          const hook = hooks.onRcptTo;
          if (hook === undefined) return this.#answer(ev, null);
          name = "onRcptTo";
          since = performance.now();
          r = hook(ev.to.address, s, ev.params);
          break;
        }
        default:
          return assertNever(ev);
      }
    } catch (err) {
      const hook = HOOK_OF[ev.type];
      this.#timed(hook, since);
      return this.#answer(ev, this.hooks.error(err, hook), true);
    }
    if (!isThenable(r)) {
      this.#timed(name, since);
      return this.#answer(ev, null, true);
    }
    return this.#waitHook(ev, r, name, since);
  }

  /**
   * Waits for a hook's promise `r` (see #decide), then answers, and the
   * session goes on (true: the loop returns meanwhile). Apart from
   * #decide: the closure's variables would be allocated with every call of
   * it, a hook or not (V8 makes a function's context on entry).
   */
  #waitHook(
    ev: DecisionEvent,
    r: PromiseLike<unknown>,
    name: HookName,
    since: number,
  ): true {
    const k = this.#continuations();
    this.hooks.waitThen(r, name, (w) => {
      // Up to its end, or to hookTimeout.
      this.#timed(name, since);
      const later = this.#answer(ev, this.hooks.reply(w), true);
      if (later === undefined) k.goOn();
      else later.then(k.goOn, k.fail);
    }, k.fail);
    return true;
  }

  /** Counts the time a decision's hook took, from `since`. */
  #timed(hook: HookName, since: number): void {
    this.host.counters.hook(hook, performance.now() - since);
  }

  /**
   * Answers the engine's decision; `hooked`: a hook was asked. What the
   * hook accepted goes to the `milters` filters first.
   */
  #answer(
    ev: DecisionEvent,
    error: SmtpError | null,
    hooked = false,
  ): Promise<void> | undefined {
    if (error === null && this.milter !== null) return this.#filter(ev);
    return this.#reply(ev, error, hooked);
  }

  /** The filters' answer on `ev` (see #answer; apart for the same reason as #waitHook). */
  #filter(ev: DecisionEvent): Promise<void> {
    return this.milter!.decide(ev).then((e) => this.#reply(ev, e, true));
  }

  /** Gives the engine the decision's answer. */
  #reply(
    ev: DecisionEvent,
    error: SmtpError | null,
    hooked: boolean,
  ): undefined {
    if (error === null) {
      // The engine keeps the HELO name and ESMTP (the session reads them).
      if (ev.type === "mail") this.session.transactions++;
      this.engine.accept();
    } else this.engine.reject(error);
    // The client's idle time starts when it has our answer, not when it
    // sent the command (a slow hook must not eat the client's timeout).
    if (hooked) this.engine.receive(EMPTY, now());
    return undefined;
  }

  async #startTls(): Promise<void> {
    const upgrade = this.conn.startTls;
    if (upgrade === undefined) {
      this.engine.reject(new SmtpError(454, "4.7.0", "TLS not available"));
      return;
    }
    this.engine.accept();
    const reply = this.engine.takeOutput()!;
    this.host.logger?.({
      type: "reply",
      session: this.session.id,
      text: DECODER.decode(reply),
    });
    this.io.release?.();
    let conn: Connection;
    const x = this.#x();
    x.upgrading = true;
    try {
      conn = await upgrade(reply);
    } catch (error) {
      this.host.counters.starttlsFailure++;
      this.host.logger?.({
        type: "error",
        session: this.session.id,
        message: "TLS handshake failed",
        error,
      });
      this.engine.end();
      return;
    } finally {
      x.upgrading = false;
    }
    this.host.counters.starttlsSuccess++;
    this.conn = conn;
    this.#useIo(conn);
    // The engine forgets HELO, ESMTP and the user, and is secure now (the
    // session reads them from it).
    this.session.tls = conn.tls;
    this.engine.tlsStarted();
  }
}

/**
 * Drivers whose read came, each followed by its chunk: resumed together
 * in one microtask (see ConnectionDriver.onRead()).
 */
const ready: (ConnectionDriver | Uint8Array | null)[] = [];
/**
 * How many entries of {@link ready} are in use. The array keeps its
 * length (its entries emptied) between turns: `length = 0` let go of its
 * backing store, and each turn's first push then allocated a new one.
 */
let readyCount = 0;
/** The most entries {@link ready} keeps between turns. */
const READY_KEPT = 64;

/** Queues `driver` to go on with `chunk`; true when it is the turn's first. */
function pushReady(
  driver: ConnectionDriver,
  chunk: Uint8Array | null,
): boolean {
  const at = readyCount;
  ready[at] = driver;
  ready[at + 1] = chunk;
  readyCount = at + 2;
  return at === 0;
}

function resumeReady(): void {
  // A driver that reads again in the same turn is appended and resumed here.
  for (let i = 0; i < readyCount; i += 2) {
    (ready[i] as ConnectionDriver).resume(ready[i + 1] as Uint8Array | null);
  }
  // No reference to a driver or a lent chunk stays behind; after a burst
  // (many connections opening at once) the array itself goes.
  if (readyCount > READY_KEPT) ready.length = 0;
  else ready.fill(null, 0, readyCount);
  readyCount = 0;
}

function assertNever(x: never): never {
  throw new Error(`Unexpected event: ${JSON.stringify(x)}`);
}
