/**
 * Deno shim: `Deno.listen` adapted to the driver's {@link Listener},
 * writing with `conn.write` and reading with `conn.read` (or the ops
 * under them: see directOps) into a reused buffer (much cheaper than the
 * default `conn.readable` reader) that is small while the client sends
 * commands and grows while a body arrives: an idle connection holds 256
 * bytes, not 64 KiB.
 *
 * With a certificate the listener is `node:net` + `node:tls` (the Node
 * shim), which Deno runs: Deno has no server-side TLS upgrade (STARTTLS),
 * and its native `Deno.listenTls` (implicit TLS) tells neither the
 * negotiated version nor the cipher, cannot replace its certificate, has
 * no SNI and no minimum version. The price, measured on Deno 2.9 (server
 * CPU, client in another process, an echo server without this library):
 * `node:tls` takes 25–30% more than `Deno.listenTls` per handshake and
 * 25–60% more per request/response round trip.
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd/deno";
 *
 * const server = await serve({ port: 2525, onMessage: (m) => console.log(m.from) });
 * ```
 *
 * @module
 */

import { createServer, type ServeOptions, type Server } from "../src/server.ts";
import { type Deadline, deadlines, now } from "../src/deadlines.ts";
import { dnsResolver } from "./dns_lazy.ts";
import type { UnixSocketFile } from "./unix_path.ts";
import type {
  Connection,
  Listener,
  ListenOptions,
  NetAddress,
} from "../src/transport.ts";
import {
  ACCEPT,
  BODY_READ_GROWN,
  type DirectListener,
  giveReadBuffer,
  handInTask,
  MIN_READ,
  nextReadSize,
  type ReadWaiter,
  ShimConnection,
  takeReadBuffer,
} from "../src/shim_kit.ts";

export * from "../src/exports/runtime.ts";

/** The parts of Deno's API this shim uses. */
interface DenoConn {
  readonly remoteAddr: { hostname: string; port: number };
  readonly localAddr: { hostname: string; port: number };
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  close(): void;
  setNoDelay?(noDelay?: boolean): void;
}
interface DenoListener extends AsyncIterable<DenoConn> {
  readonly addr: { hostname: string; port: number };
  accept(): Promise<DenoConn>;
  close(): void;
}

/**
 * Errors of one connection that `accept()` reports (it was reset or closed
 * before Deno could ask its address): the listener goes on at once.
 */
const CONNECTION_GONE = new Set([
  "NotConnected",
  "ConnectionReset",
  "ConnectionAborted",
  "Interrupted",
]);
/**
 * How long close() lets a pending write go on (a client that does not read
 * its replies cannot keep the connection open longer).
 */
const CLOSE_GRACE_MS = 5000;
/** After any other accept error (EMFILE, say), wait this long, then go on. */
const ACCEPT_RETRY_MS = 100;
interface DenoApi {
  listen(
    o: { hostname: string; port: number; transport: "tcp" } | {
      path: string;
      transport: "unix";
    },
  ): DenoListener;
  /** Present only with `--unstable-net` (as is `reusePort` in `listen`). */
  listenDatagram?: unknown;
}

/** {@link DenoConnection}'s state bit for "a body arrives" (see expectBody). */
const BODY = 16;
/** {@link DenoConnection}'s state bit for "the driver reads no more" (see readDone). */
const READ_DONE = 32;
/** {@link DenoConnection}'s state bit for "a read is in progress". */
const READING = 64;
/**
 * Whether the `n` bytes read into `buf` end a DATA body (its last line,
 * `.` CRLF, after a CRLF), in a read that did not fill the buffer (a full
 * one is followed by more). A body's bytes cannot end so before its end
 * (dot-stuffing); a BDAT chunk may, which only makes its next read start
 * small.
 */
function bodyEnded(buf: Uint8Array, n: number): boolean {
  return n < buf.byteLength && n >= 3 && buf[n - 1] === 10 &&
    buf[n - 2] === 13 && buf[n - 3] === 46 &&
    (n === 3 || (buf[n - 4] === 10 && buf[n - 5] === 13));
}

/** Deno's own read and write ops (see {@link directOps}). */
interface DenoCore {
  read(rid: number, buf: Uint8Array): Promise<number>;
  write(rid: number, buf: Uint8Array): Promise<number>;
}

/**
 * Deno's own read op and the key of a connection's resource id, when this
 * Deno has them (`Deno[Deno.internal].core.read`, the op that
 * `Deno.Conn.read` awaits), and whether its write op is there too
 * (`core.write`, the op `Deno.Conn.write` calls through a function of
 * its own): null until the first connection asks, false when there are
 * none (then `conn.read` and `conn.write`).
 */
let direct: { core: DenoCore; rid: symbol; write: boolean } | null | false =
  null;

/**
 * The resource id to read (and write) `conn` with through Deno's own ops,
 * or -1 (then `conn.read` and `conn.write`). `conn.read` is an async
 * function around the read op that also keeps each pending read's promise
 * in a set (for unref()): per read one async frame, an await, and a set
 * insert and delete more, which this shim, reading one chunk at a time
 * and never unref()ing a connection, does not need. `conn.write` is a
 * call of a function around the write op, which returns the bytes taken,
 * as `conn.write` does.
 * Feature-checked: anything missing or not as expected, and every read
 * goes through `conn.read` (a missing write op: every write through
 * `conn.write`).
 */
function directOps(conn: DenoConn): number {
  if (direct === null) {
    direct = false;
    try {
      const d = (globalThis as {
        Deno?: { internal?: unknown } & Record<symbol, unknown>;
      }).Deno;
      const key = d?.internal;
      const core = typeof key === "symbol"
        ? (d![key] as { core?: DenoCore } | undefined)?.core
        : undefined;
      const rid = Object.getOwnPropertySymbols(conn).find((s) =>
        s.description === "Deno.internal.rid"
      );
      if (typeof core?.read === "function" && rid !== undefined) {
        direct = { core, rid, write: typeof core.write === "function" };
      }
    } catch { /* conn.read, then */ }
  }
  if (direct === false) return -1;
  const rid = (conn as unknown as Record<symbol, unknown>)[direct.rid];
  return typeof rid === "number" ? rid : -1;
}

function wrap(conn: DenoConn): Connection {
  try {
    conn.setNoDelay?.(true);
  } catch { /* the client left already: its first read ends the session */ }
  return new DenoConnection(conn);
}

/**
 * A `Deno.Conn` as a {@link Connection}: methods on the prototype, the
 * streams made when first asked (see {@link ShimConnection}).
 *
 * One read buffer per connection, reused: a chunk read is lent (a view of
 * the buffer, valid until the next read: see `Connection`), and the next
 * read goes into the same memory. The buffer's size follows the input
 * ({@link nextReadSize}): small while idle (the pending read keeps it),
 * 16 KiB for a body's first read (expectBody()), larger while a big body
 * arrives, small again after a DATA body's end. A buffer replaced goes to
 * spares that every connection shares once its chunk is no longer lent
 * (at the next read, or readDone()).
 *
 * What an idle session keeps here is small on purpose (on Deno every byte
 * of it that survives counts about twice toward growing V8's young
 * generation, which 1000 idle sessions push from 4 to 8 MB): the sizer's
 * and the read's state are one number field, the read handler one per
 * connection, the idle read buffer a view of a shared slab, and a write
 * with none pending gives the driver no promise to watch.
 */
class DenoConnection extends ShimConnection {
  #conn: DenoConn;
  /** Writes started (the last one to end forgets #tail); -1 once closed. */
  #writes = 0;
  #buf = takeReadBuffer(MIN_READ);
  /**
   * Bits: the count of small reads in a row (the low 4; see
   * nextReadSize), {@link BODY} while a body arrives (from expectBody() to
   * its end), {@link READ_DONE} after readDone(), {@link READING} while a
   * read is in progress (it reads into #buf). One number field, not four.
   */
  #state = 0;
  /** The buffer of the chunk lent last when the next read goes into another. */
  #lent: Uint8Array | null = null;
  /** The last write while writes are pending (they run one after another). */
  #tail: Promise<void> | null = null;

  /** The resource id for Deno's own ops, or -1 (see {@link directOps}). */
  #rid: number;

  constructor(conn: DenoConn) {
    super(null);
    this.#conn = conn;
    this.#rid = directOps(conn);
  }

  /**
   * `conn.read(buf)`, or Deno's op under it (0 then means the end); a
   * failure as a rejection, as from `conn.read` (an async function).
   */
  #readInto(buf: Uint8Array): Promise<number | null> {
    const rid = this.#rid;
    if (rid < 0 || !direct) return this.#conn.read(buf);
    try {
      return direct.core.read(rid, buf);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  protected peerAddr(): NetAddress {
    return this.#conn.remoteAddr;
  }

  protected ownAddr(): NetAddress {
    return this.#conn.localAddr;
  }

  /** Who waits for the read in progress (readOr()), if anyone. */
  #waiter: ReadWaiter | null = null;

  /**
   * One handler per connection, not two closures per read (one is pending
   * while idle), bound (48 bytes kept; an arrow and its context were 96).
   */
  #onRead = this.#settled.bind(this);

  /**
   * The chunk read, or null at the end or when the read failed (`n` is
   * then null or the error); readOr()'s waiter is told.
   */
  #settled(n: unknown): Uint8Array | null {
    this.#state &= ~READING;
    if (this.#state & READ_DONE) {
      // Nobody uses what it read (see readDone()).
      this.#giveBuffers();
      n = null;
    }
    const chunk = typeof n === "number" && n !== 0 ? this.#took(n) : null;
    const w = this.#waiter;
    if (w === null) return chunk;
    this.#waiter = null;
    // This is the read's reaction, a microtask: the waiter may go on now.
    handInTask(w, chunk);
    return null;
  }

  read(): Promise<Uint8Array | null> {
    return this.#readInto(this.#lend()).then(this.#onRead, this.#onRead);
  }

  /** read() without a promise to wait for (see `InputQueue.readOr`): always waits. */
  readOr(waiter: ReadWaiter): undefined {
    this.#waiter = waiter;
    this.#readInto(this.#lend()).then(this.#onRead, this.#onRead);
    return undefined;
  }

  #took(n: number): Uint8Array {
    const buf = this.#buf;
    let state = this.#state;
    let size: number;
    if (state & BODY && bodyEnded(buf, n)) {
      // The end of a DATA body: what comes next are commands (or nothing,
      // an idle session), so the next read goes into a small buffer and
      // the body's goes to the spares (see #lend).
      size = MIN_READ;
      state = 0;
    } else {
      const next = nextReadSize(buf.byteLength, n, state & 15);
      size = next >>> 4;
      state = (next & 15) | (state & BODY);
    }
    this.#state = state;
    // A new buffer for the next read when the size changes: the chunk lent
    // now keeps the old one until the next read (then a spare).
    if (size !== buf.byteLength) {
      this.#lent = buf;
      this.#buf = takeReadBuffer(size);
    }
    return buf.subarray(0, n);
  }

  /**
   * The chunk lent last is no longer used (a read is starting): the buffer
   * it was in, when not the one read into next, goes to the spares.
   */
  #lend(): Uint8Array {
    const lent = this.#lent;
    if (lent !== null) {
      this.#lent = null;
      giveReadBuffer(lent);
    }
    this.#state |= READING;
    return this.#buf;
  }

  /**
   * See {@link Connection.readDone}: the driver reads no more and uses no
   * chunk lent: the read buffers go to the spares, now or, while a read is
   * in progress (it reads into one), once it ends (close() ends it).
   */
  readDone(): void {
    if (this.#state & READ_DONE) return;
    this.#state |= READ_DONE;
    if (!(this.#state & READING)) this.#giveBuffers();
  }

  #giveBuffers(): void {
    giveReadBuffer(this.#buf);
    const lent = this.#lent;
    if (lent !== null) {
      this.#lent = null;
      giveReadBuffer(lent);
    }
  }

  /**
   * See {@link Connection.expectBody}: a body is coming, so the next read
   * goes into a buffer of {@link BODY_READ_GROWN} bytes (16 KiB, a spare
   * once the first body is done) when the current one is smaller: a body
   * of up to 16 KiB then comes in one read when it has all arrived, not a
   * full small one and then another (one read per 10 KB message less than
   * with 4 KiB). The buffer is held only while the body arrives: at its
   * end the next read is small again (see #took). The chunk lent last
   * stays where it is (its buffer goes to the spares at the next read).
   * Nothing while a read is in progress: it reads into the current buffer.
   */
  expectBody(): void {
    if (this.#writes < 0 || this.#state & (READING | READ_DONE)) return;
    this.#state = BODY;
    const buf = this.#buf;
    if (buf.byteLength >= BODY_READ_GROWN) return;
    // The current buffer holds the chunk lent last unless #took replaced it.
    if (this.#lent === null) this.#lent = buf;
    else giveReadBuffer(buf);
    this.#buf = takeReadBuffer(BODY_READ_GROWN);
  }

  /**
   * See {@link Connection.write}: `undefined` when no write is pending
   * (the usual case: Deno takes the bytes, and a failure closes the
   * connection, which ends its read), else a promise once the writes
   * before it are done. The driver then watches only writes that queue up
   * behind one the client has not taken: an idle session keeps no write
   * watchdog, and a reply costs no promise of the driver's.
   */
  write(chunk: Uint8Array): Promise<void> | undefined {
    if (this.#writes < 0) throw new Error("Connection closed");
    // conn.write may take part of a chunk: writes run one after the other.
    const seq = ++this.#writes;
    const prev = this.#tail;
    if (prev !== null) return this.#tail = this.#after(prev, chunk, seq);
    // Nothing pending: the write and one reaction, the connection's own
    // (no async function, whose frame and awaits were the largest
    // allocation per connection here, and no closures per write).
    this.#first = chunk;
    this.#firstSeq = seq;
    this.#tail = this.#start(chunk).then(this.#onWritten, this.#onWritten);
    return undefined;
  }

  /**
   * The chunk of the write that started with none pending (see write()),
   * while it is in progress, and its number: at most one at a time (the
   * writes after it wait for #tail).
   */
  #first: Uint8Array | null = null;
  #firstSeq = 0;
  /** That write's end, taken or failed: one handler per connection. */
  #onWritten = this.#written.bind(this);

  /**
   * The write in #first ended: `n` bytes taken, or the error (a write
   * nobody waits for failed: see #writeFailed).
   */
  #written(n: unknown): Promise<void> | undefined {
    const chunk = this.#first!;
    this.#first = null;
    if (typeof n !== "number") return this.#writeFailed();
    if (n < chunk.byteLength) return this.#restOrFail(chunk, n, this.#firstSeq);
    this.#wrote(this.#firstSeq);
    return undefined;
  }

  /** What is left of `chunk` from `off` on (write `seq`); a failure as in #written. */
  async #restOrFail(
    chunk: Uint8Array,
    off: number,
    seq: number,
  ): Promise<void> {
    try {
      await this.#rest(chunk, off, seq);
    } catch {
      this.#writeFailed();
    }
  }

  /**
   * A write nobody waits for failed (the client left, say): the connection
   * closes, so its pending read ends and the session with it.
   */
  #writeFailed(): undefined {
    this.#tail = null;
    this.close(true);
    return undefined;
  }

  /**
   * `conn.write(chunk)`, or Deno's op under it (see {@link directOps}):
   * the bytes taken, maybe fewer than the chunk's; a failure as a
   * rejection, as from `conn.write`.
   */
  #start(chunk: Uint8Array): Promise<number> {
    const rid = this.#rid;
    try {
      return rid >= 0 && direct && direct.write
        ? direct.core.write(rid, chunk)
        : this.#conn.write(chunk);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Write number `seq` is done: the last one forgets the tail. */
  #wrote(seq: number): void {
    if (this.#writes === seq) this.#tail = null;
  }

  /** Writes what is left of `chunk` from `off` on. */
  async #rest(chunk: Uint8Array, off: number, seq: number): Promise<void> {
    try {
      while (off < chunk.byteLength) {
        off += await this.#start(chunk.subarray(off));
      }
    } finally {
      this.#wrote(seq);
    }
  }

  /** Writes all of `chunk` once `prev` (the write before) is done. */
  async #after(
    prev: Promise<void>,
    chunk: Uint8Array,
    seq: number,
  ): Promise<void> {
    try {
      await prev;
    } catch { /* its caller has the error */ }
    return this.#rest(chunk, 0, seq);
  }

  /**
   * See {@link Connection.close}: a write still pending goes out first,
   * within {@link CLOSE_GRACE_MS} (closing the conn would cancel it);
   * with `abort` the conn closes now.
   */
  close(abort?: boolean): void {
    const tail = this.#tail;
    if (this.#writes < 0) {
      if (abort && tail !== null) this.#closeNow();
      return;
    }
    this.#writes = -1;
    if (tail === null || abort) return this.#closeNow();
    // The grace in the shared deadlines (one runtime timer for all), not
    // a timer of its own: on Deno 2.9 setTimeout makes a Node Timeout,
    // about 1.3 KB allocated per connection that closes after its 221.
    const grace: Deadline = {
      at: 0,
      index: -1,
      fire: () => this.#closeNow(),
    };
    deadlines.set(grace, now() + CLOSE_GRACE_MS);
    const done = () => {
      deadlines.remove(grace);
      this.#closeNow();
    };
    tail.then(done, done);
  }

  #closeNow(): void {
    this.#tail = null;
    try {
      this.#conn.close();
    } catch { /* already closed */ }
  }
}

/**
 * Opens a {@link Listener} with `Deno.listen`, or with `node:net` +
 * `node:tls` when a certificate is given (STARTTLS and implicit TLS).
 *
 * @example
 * ```ts
 * import { listen } from "@smtpd/smtpd/deno";
 *
 * const listener = await listen({ hostname: "127.0.0.1", port: 0 });
 * listener.close();
 * ```
 */
export async function listen(options: ListenOptions): Promise<Listener> {
  const Deno = (globalThis as unknown as { Deno?: DenoApi }).Deno;
  if (!Deno) throw new Error("Cannot listen: not running on Deno");
  // Deno.listen's reusePort is unstable: without --unstable-net, using it
  // ends the process, so node:net (which has it) listens instead.
  // node:net and node:fs are loaded only when asked for: any node: module
  // costs Deno 2–4 MB of RSS (its Node layer) that Deno.listen never needs.
  const unstableNet = typeof Deno.listenDatagram === "function";
  if (options.tls || (options.reusePort && !unstableNet)) {
    return (await import("./node_net.ts")).listen(options);
  }
  const path = options.path;
  const unix = path !== undefined
    ? await (await import("./unix_path.ts")).UnixSocketFile.prepare(path)
    : null;
  const l = Deno.listen(
    path !== undefined ? { path, transport: "unix" } : {
      hostname: options.hostname,
      port: options.port,
      transport: "tcp",
      ...(options.reusePort ? { reusePort: true } : {}),
    },
  );
  unix?.bound();
  let closed = false;
  const isClosed = () => closed;
  const listener: DirectListener = {
    addr: unix !== null
      ? unix.addr
      : { hostname: l.addr.hostname, port: l.addr.port },
    close() {
      if (closed) return;
      closed = true;
      try {
        l.close();
      } catch { /* already closed */ }
      unix?.remove();
    },
    [Symbol.asyncIterator]: () => new Accepts(l, unix, isClosed),
    [ACCEPT]: (take) => acceptInto(l, unix, isClosed, take),
  };
  return listener;
}

/**
 * The listener's `[ACCEPT]` (what serve() uses): each connection handed
 * to `take` from its accept's reaction, with the iteration's care for
 * errors (see {@link Accepts}), but no iterator result, no promise of
 * next() and no `for await` resumed per connection; resolves when the
 * listener closes.
 */
function acceptInto(
  l: DenoListener,
  unix: UnixSocketFile | null,
  closed: () => boolean,
  take: (conn: Connection) => void,
): Promise<void> {
  return new Promise((resolve) => {
    const next = (): void => {
      if (closed()) return resolve();
      let accepted: Promise<DenoConn>;
      try {
        accepted = l.accept();
      } catch (err) {
        accepted = Promise.reject(err);
      }
      accepted.then(onConn, onFail);
    };
    const onConn = (conn: DenoConn): void => {
      let c: Connection | null = null;
      try {
        c = unix !== null ? unix.wrap(wrap(conn)) : wrap(conn);
      } catch {
        try {
          conn.close();
        } catch { /* gone already */ }
      }
      next();
      if (c !== null) take(c);
    };
    const onFail = (err: unknown): void => {
      const name = (err as Error)?.name;
      if (closed() || name === "BadResource") resolve();
      else if (CONNECTION_GONE.has(name)) next();
      else setTimeout(next, ACCEPT_RETRY_MS);
    };
    next();
  });
}

/** The end of the accepted connections. */
const DONE: IteratorResult<Connection> = Object.freeze({
  done: true,
  value: undefined,
});

/**
 * The iteration of a listener's connections: one accept at a time; an
 * error of one connection (a client that reset before the accept: Deno
 * then fails to read its address), or running out of descriptors, must
 * not end it: that stopped the server accepting for good. An iterator of
 * its own rather than an async generator: each connection costs one
 * promise and its reaction, not a generator's awaits and yield (less to
 * allocate and collect per connection).
 */
class Accepts implements AsyncIterator<Connection> {
  readonly #l: DenoListener;
  readonly #unix: UnixSocketFile | null;
  readonly #closed: () => boolean;
  /** return() was called (a `for await` left early). */
  #done = false;
  readonly #accepted = (conn: DenoConn) => this.#wrap(conn);
  readonly #failed = (err: unknown) => this.#retry(err);

  constructor(
    l: DenoListener,
    unix: UnixSocketFile | null,
    closed: () => boolean,
  ) {
    this.#l = l;
    this.#unix = unix;
    this.#closed = closed;
  }

  next(): Promise<IteratorResult<Connection>> {
    if (this.#done || this.#closed()) return Promise.resolve(DONE);
    let accepted: Promise<DenoConn>;
    try {
      accepted = this.#l.accept();
    } catch (err) {
      accepted = Promise.reject(err);
    }
    return accepted.then(this.#accepted, this.#failed);
  }

  return(): Promise<IteratorResult<Connection>> {
    this.#done = true;
    return Promise.resolve(DONE);
  }

  #wrap(
    conn: DenoConn,
  ): IteratorResult<Connection> | Promise<IteratorResult<Connection>> {
    try {
      const unix = this.#unix;
      return {
        done: false,
        value: unix !== null ? unix.wrap(wrap(conn)) : wrap(conn),
      };
    } catch {
      try {
        conn.close();
      } catch { /* gone already */ }
      return this.next();
    }
  }

  async #retry(err: unknown): Promise<IteratorResult<Connection>> {
    if (
      this.#done || this.#closed() || (err as Error)?.name === "BadResource"
    ) return DONE;
    if (!CONNECTION_GONE.has((err as Error)?.name)) {
      await new Promise((r) => setTimeout(r, ACCEPT_RETRY_MS));
    }
    return this.next();
  }
}

/**
 * Starts an SMTP server on Deno's native `Deno.listen`.
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd/deno";
 *
 * const server = await serve({ port: 0 });
 * await server.close();
 * ```
 */
export function serve(options: ServeOptions = {}): Promise<Server> {
  return createServer(listen, "deno", options, { dnsResolver });
}
