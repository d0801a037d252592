/**
 * The shims' toolkit: what the runtime shims in `runtimes/` share to
 * implement the contract of `transport.ts` (the accept queue, the input
 * queue with backpressure, Web Streams over `read()`/`write()`, the local
 * address of a listener bound to one IP). Not a public API, except
 * {@link ConnectionQueue} (exported by `smtpd/transport`). Nothing here
 * knows a runtime.
 *
 * @module
 */

import { formatIp, parseIp, stripMapped } from "./cidr.ts";
import type { Connection, Listener, NetAddress, TlsInfo } from "./transport.ts";

/**
 * The key of a listener's direct accept: `listener[ACCEPT](take)` hands
 * each connection to `take` from the runtime's accept callback, instead of
 * to the listener's async iteration, and resolves when the listener
 * closes (see `ConnectionQueue[ACCEPT]`). Optional: the server uses it
 * where a listener has it, else iterates. Not a public API: the shims and
 * the server share it.
 *
 * @example
 * ```ts
 * import { ACCEPT, ConnectionQueue } from "./shim_kit.ts";
 *
 * const queue = new ConnectionQueue();
 * const closed = queue[ACCEPT]((conn) => conn.close());
 * queue.close();
 * await closed;
 * ```
 */
export const ACCEPT: unique symbol = Symbol("smtpd.accept");

/**
 * The key of a connection's promise that the chunks `read()` returns are
 * its reader's to keep, with all of their memory: each a fresh array of
 * its own (its whole `ArrayBuffer`), never written into again, which
 * nothing else refers to (Bun's data callback hands out such chunks).
 * Where `conn[OWNED_CHUNKS]` is `true`, the driver hands the body bytes of
 * such a chunk to the message's byte stream as they are once the engine
 * is done with the chunk (a byte stream takes over the memory of what is
 * enqueued), instead of a copy: on Bun 1.4 about 7 % less CPU per message
 * with 1 KB and 10 KB messages (one copy and its garbage fewer per read).
 * Optional; not a public API: the shims and the driver share it.
 *
 * @example
 * ```ts
 * import { OWNED_CHUNKS } from "./shim_kit.ts";
 * import type { Connection } from "./transport.ts";
 *
 * declare const conn: Connection;
 * const owned = (conn as { [OWNED_CHUNKS]?: true })[OWNED_CHUNKS] === true;
 * ```
 */
export const OWNED_CHUNKS: unique symbol = Symbol("smtpd.ownedChunks");

/**
 * A listener that may hand its connections to a callback (see
 * {@link ACCEPT}). Not a public API.
 *
 * @example
 * ```ts
 * import { ACCEPT, type DirectListener } from "./shim_kit.ts";
 * import type { Listener } from "./transport.ts";
 *
 * declare const listener: Listener;
 * const direct = (listener as DirectListener)[ACCEPT];
 * ```
 */
export interface DirectListener extends Listener {
  /** See {@link ACCEPT}. */
  [ACCEPT]?: (take: (conn: Connection) => void) => Promise<void>;
}

/**
 * The accept side the shims share: the runtime's callbacks `push()`
 * connections, the driver pulls them with `for await`. After `close()`,
 * pushed connections are closed and the iteration ends.
 *
 * @example
 * ```ts
 * import { ConnectionQueue } from "@smtpd/smtpd/transport";
 *
 * const queue = new ConnectionQueue();
 * queue.close();
 * for await (const _conn of queue) { } // ends at once
 * ```
 */
export class ConnectionQueue implements AsyncIterable<Connection> {
  #pending: Connection[] = [];
  /** Who takes each connection as it is pushed (see [ACCEPT]), or null. */
  #take: ((conn: Connection) => void) | null = null;
  /** Settles the promise of [ACCEPT] when the queue closes. */
  #taken: (() => void) | null = null;
  /** The iteration's next() calls waiting for a connection, in order. */
  #waiters: ((r: IteratorResult<Connection, undefined>) => void)[] = [];
  #closed = false;
  /**
   * The waiting next()'s promise executor, made once: one made per call
   * cost each accepted connection a closure and a scope for `this`
   * (JavaScriptCore).
   */
  readonly #wait = (
    resolve: (r: IteratorResult<Connection, undefined>) => void,
  ): void => void this.#waiters.push(resolve);

  /** Whether `close()` was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Hands a new connection to the iteration (or closes it once closed). */
  push(conn: Connection): void {
    if (this.#closed) return conn.close();
    const take = this.#take;
    if (take !== null) return take(conn);
    const w = this.#waiters.shift();
    if (w !== undefined) w({ value: conn, done: false });
    else this.#pending.push(conn);
  }

  /** Ends the iteration; returns false when it was already closed. */
  close(): boolean {
    if (this.#closed) return false;
    this.#closed = true;
    for (const w of this.#waiters.splice(0)) w(DONE);
    this.#taken?.();
    return true;
  }

  /**
   * Hands every connection to `take` as it is pushed, in the runtime's
   * callback, instead of to the iteration (the ones pushed before first):
   * no promise, iterator result and resumed `for await` per connection.
   * Resolves when the queue closes. Use one way or the other, not both.
   * Not a public API: a shim's listener offers it as its `[ACCEPT]`.
   */
  [ACCEPT](take: (conn: Connection) => void): Promise<void> {
    this.#take = take;
    for (const c of this.#pending.splice(0)) take(c);
    if (this.#closed) return Promise.resolve();
    return new Promise((resolve) => (this.#taken = resolve));
  }

  /**
   * Yields connections as they are pushed, until `close()`. A plain
   * iterator, not an async generator: a connection pushed while the loop
   * waits resolves the promise its `for await` awaits, with no generator
   * to resume in between (one promise per connection, one microtask turn
   * to the loop).
   */
  [Symbol.asyncIterator](): AsyncIterableIterator<Connection, undefined> {
    const it: AsyncIterableIterator<Connection, undefined> = {
      next: () => this.#next(),
      return: () => Promise.resolve(DONE),
      // Iterable itself, as the async generator it replaces was.
      [Symbol.asyncIterator]: () => it,
    };
    return it;
  }

  #next(): Promise<IteratorResult<Connection, undefined>> {
    const c = this.#pending.shift();
    if (c !== undefined) return Promise.resolve({ value: c, done: false });
    if (this.#closed) return Promise.resolve(DONE);
    return new Promise(this.#wait);
  }
}

/** The end of a {@link ConnectionQueue}'s iteration. */
const DONE: IteratorReturnResult<undefined> = Object.freeze({
  value: undefined,
  done: true,
});

/** What {@link InputBuffer} stops and restarts: the socket's reading. */
export interface Pausable {
  /** Stop delivering data. */
  pause(): void;
  /** Deliver data again. */
  resume(): void;
}

/**
 * The local address of every TCP connection accepted by a listener bound
 * to one IP address: that address, so that a shim need not ask the kernel
 * (getsockname) for each connection; written as the kernel's answer would
 * be (canonical IPv6 text, IPv4-mapped addresses as IPv4). `null` for a
 * wildcard (`0.0.0.0`, `::`, `::ffff:0.0.0.0`) or a name, where each
 * connection's own address must be asked. Not a public API: the shims
 * share it.
 *
 * @example
 * ```ts
 * import { fixedLocalAddr } from "./shim_kit.ts";
 *
 * fixedLocalAddr("127.0.0.1", 2525); // { hostname: "127.0.0.1", port: 2525 }
 * fixedLocalAddr("0:0:0:0:0:0:0:1", 2525); // { hostname: "::1", port: 2525 }
 * fixedLocalAddr("0.0.0.0", 2525); // null
 * ```
 */
export function fixedLocalAddr(
  hostname: string,
  port: number,
): NetAddress | null {
  const ip = parseIp(hostname);
  if (ip === null) return null;
  const text = stripMapped(formatIp(ip));
  if (text === "0.0.0.0" || text === "::") return null;
  return Object.freeze({ hostname: text, port });
}

/**
 * Who waits for a connection's next read without a promise (the driver):
 * see {@link InputBuffer.readOr}. Not a public API: the shims share it.
 *
 * @example
 * ```ts
 * import { InputQueue, type ReadWaiter } from "./shim_kit.ts";
 *
 * const waiter: ReadWaiter = { onRead: (chunk) => console.log(chunk) };
 * const q = new InputQueue({ pause() {}, resume() {} });
 * q.readOr(waiter); // undefined: nothing queued, the waiter is told later
 * q.push(new Uint8Array([1])); // logs Uint8Array [1]
 * ```
 */
export interface ReadWaiter {
  /**
   * The next chunk (lent as {@link Connection.read}'s are), or `null` at
   * the end of input. Called from the runtime's data or close callback:
   * take the chunk and go on later (in a microtask), not in the callback.
   */
  onRead(chunk: Uint8Array | null): void;
  /**
   * {@link ReadWaiter.onRead} for a shim that calls it where nothing of
   * the waiter's is on the stack: in a promise's reaction (Deno's
   * `conn.read`), a microtask already, or in the runtime's own read
   * callback (node:net's `onread`, Bun's `data`, which nothing but the
   * event loop calls): the waiter may go on at once, with no microtask of
   * its own. Optional: where it is absent, the shim calls onRead() (see
   * {@link handInTask}).
   */
  onReadInTask?(chunk: Uint8Array | null): void;
}

/**
 * Tells `w` of a read (a chunk, or `null` at the end) from where nothing
 * of the waiter's is on the stack: its `onReadInTask` where it has one,
 * else `onRead`.
 *
 * @example
 * ```ts
 * import { handInTask } from "./shim_kit.ts";
 *
 * handInTask({ onRead: (c) => console.log(c) }, null); // logs null
 * ```
 */
export function handInTask(w: ReadWaiter, chunk: Uint8Array | null): void {
  if (w.onReadInTask !== undefined) w.onReadInTask(chunk);
  else w.onRead(chunk);
}

/** The queued bytes above which an input's source is paused. */
const INPUT_HIGH_WATER_MARK = 64 * 1024;
/** {@link InputBuffer}'s flag: no more input (`end()` or `discard()`). */
const ENDED = 1;
/** {@link InputBuffer}'s flag: it paused its source. */
const PAUSED = 2;

/**
 * Received bytes waiting for {@link Connection.read}: a shim's data
 * callback `push()`es each chunk (kept as is, never copied), `read()` takes
 * them one at a time, synchronously while some are queued. Past a
 * high-water mark (64 KiB) the source is paused until `read()` brings the
 * queue below it again. The subclass is the source (its `pause()` and
 * `resume()`): a shim's per-socket state can be its input, one object per
 * socket instead of two; {@link InputQueue} is one over a given source.
 * Not a public API: the shims share it.
 *
 * @example
 * ```ts
 * import { InputBuffer } from "./shim_kit.ts";
 *
 * class Input extends InputBuffer {
 *   pause(): void {}
 *   resume(): void {}
 * }
 * const q = new Input();
 * q.push(new Uint8Array([1]));
 * q.read(); // Uint8Array [1], no promise
 * ```
 */
export abstract class InputBuffer implements Pausable {
  /**
   * What is queued, made when a chunk first comes with no read waiting:
   * an idle session's reads wait (see {@link InputBuffer.readOr}) and
   * never queue, so its connection keeps no array.
   */
  #chunks: Uint8Array[] | null = null;
  #head = 0;
  #bytes = 0;
  /**
   * {@link ENDED} and {@link PAUSED}: one field for both (a shim's state
   * object with one field more took the next size of heap cell on Bun).
   */
  #flags = 0;
  #waiter: ReadWaiter | null = null;

  /** Stops the source's delivering data (above the high-water mark). */
  abstract pause(): void;
  /** Lets the source deliver data again. */
  abstract resume(): void;

  /** Whether `end()` or `discard()` was called. */
  get ended(): boolean {
    return (this.#flags & ENDED) !== 0;
  }

  /** Whether the queue paused its source (and has not resumed it). */
  get paused(): boolean {
    return (this.#flags & PAUSED) !== 0;
  }

  /**
   * Adds received bytes (ignored once ended). `inTask`: the caller is the
   * runtime's own data callback, with nothing of the reader's on the
   * stack: a waiting reader may go on at once (ReadWaiter.onReadInTask).
   */
  push(chunk: Uint8Array, inTask = false): void {
    if ((this.#flags & ENDED) !== 0 || chunk.byteLength === 0) return;
    const w = this.#waiter;
    if (w !== null) {
      this.#waiter = null;
      return inTask ? handInTask(w, chunk) : w.onRead(chunk);
    }
    (this.#chunks ??= []).push(chunk);
    this.#bytes += chunk.byteLength;
    if (this.#bytes >= INPUT_HIGH_WATER_MARK && (this.#flags & PAUSED) === 0) {
      this.#flags |= PAUSED;
      this.pause();
    }
  }

  /** No more input: reads return what is queued, then `null`. */
  end(): void {
    if ((this.#flags & ENDED) !== 0) return;
    this.#flags |= ENDED;
    const w = this.#waiter;
    this.#waiter = null;
    w?.onRead(null);
  }

  /**
   * Drops what is queued and ends (STARTTLS: plaintext that came after the
   * command is never read). Leaves the source paused if it was: see
   * {@link InputBuffer.paused}.
   */
  discard(): void {
    this.#chunks = null;
    this.#head = 0;
    this.#bytes = 0;
    this.end();
  }

  /** The next chunk: at once when one is queued; `null` at the end. */
  read(): Uint8Array | null | Promise<Uint8Array | null> {
    const chunk = this.poll();
    if (chunk !== undefined) return chunk;
    return new Promise((resolve) => (this.#waiter = { onRead: resolve }));
  }

  /**
   * {@link InputBuffer.read} without a promise: the next chunk when one is
   * queued, `null` at the end; else `undefined`, and `waiter` gets the
   * next chunk (or `null`) when it comes. An idle connection then keeps
   * no promise, no resolving functions and no suspended reader.
   */
  readOr(waiter: ReadWaiter): Uint8Array | null | undefined {
    const chunk = this.poll();
    if (chunk === undefined) this.#waiter = waiter;
    return chunk;
  }

  /**
   * The next queued chunk, `null` at the end, `undefined` when none (and
   * nothing waits for one). A method, not a private one: a private method
   * costs every instance a field (V8's brand).
   */
  poll(): Uint8Array | null | undefined {
    const chunks = this.#chunks;
    if (chunks !== null && this.#head < chunks.length) {
      const chunk = chunks[this.#head];
      if (++this.#head === chunks.length) {
        chunks.length = 0;
        this.#head = 0;
      }
      this.#bytes -= chunk.byteLength;
      if ((this.#flags & PAUSED) !== 0 && this.#bytes < INPUT_HIGH_WATER_MARK) {
        this.#flags &= ~PAUSED;
        this.resume();
      }
      return chunk;
    }
    return (this.#flags & ENDED) !== 0 ? null : undefined;
  }
}

/**
 * An {@link InputBuffer} that pauses and resumes a given source (a
 * runtime's socket). Not a public API: the shims share it.
 *
 * @example
 * ```ts
 * import { InputQueue } from "./shim_kit.ts";
 *
 * const q = new InputQueue({ pause() {}, resume() {} });
 * q.push(new Uint8Array([1]));
 * q.read(); // Uint8Array [1], no promise
 * q.end();
 * q.read(); // null
 * ```
 */
export class InputQueue extends InputBuffer {
  readonly #source: Pausable;

  /** `source` is paused above the high-water mark (64 KiB queued). */
  constructor(source: Pausable) {
    super();
    this.#source = source;
  }

  /** Pauses the source. */
  pause(): void {
    this.#source.pause();
  }

  /** Resumes the source. */
  resume(): void {
    this.#source.resume();
  }
}

/** The read buffer of a new or idle connection (see {@link ReadSizer}). */
export const MIN_READ = 256;
/** The largest read buffer (a body arriving). */
export const MAX_READ = 64 * 1024;
/** After this many reads in a row that fit MIN_READ, the buffer shrinks back. */
const SHRINK_AFTER = 8;

/** How many {@link MIN_READ} buffers a slab of {@link smallReadBuffer} holds. */
const SLAB_BUFFERS = 32;
let readSlab: ArrayBuffer | null = null;
let readSlabAt = 0;

/**
 * A new read buffer of {@link MIN_READ} bytes (an idle connection's): a
 * view of a slab shared with up to 31 others, as Node's Buffer pool
 * does, not an ArrayBuffer of its own, which cost an idle session about
 * 250 bytes more on Node (the ArrayBuffer object and the runtime's record
 * of its memory). A slab lives as long as one of its views: the shims
 * keep the views they let go of as spares. Not a public API.
 *
 * @example
 * ```ts
 * import { MIN_READ, smallReadBuffer } from "./shim_kit.ts";
 *
 * smallReadBuffer().byteLength === MIN_READ; // true
 * ```
 */
export function smallReadBuffer(): Uint8Array {
  if (readSlab === null || readSlabAt === readSlab.byteLength) {
    readSlab = new ArrayBuffer(SLAB_BUFFERS * MIN_READ);
    readSlabAt = 0;
  }
  const b = new Uint8Array(readSlab, readSlabAt, MIN_READ);
  readSlabAt += MIN_READ;
  return b;
}

/** The read buffer for a body's first read (see `Connection.expectBody`). */
export const BODY_READ = MIN_READ * 16;
/**
 * A body's read after a full {@link BODY_READ} one (4 times larger); the
 * Deno shim's first read of a body (see `Connection.expectBody`).
 */
export const BODY_READ_GROWN = BODY_READ * 4;
/** Most spares kept per size. */
const SPARE_MAX = 64;
/**
 * Read buffers no connection holds, shared by every connection of the
 * shims that read into memory of their own (node:net's `onread`,
 * `Deno.Conn.read`): those of {@link MIN_READ}, 1 KiB (a command grown
 * past the small buffer), {@link BODY_READ} (a small message's body) and
 * 16 KiB (a body of 4–16 KiB: the read after a full BODY_READ one), at
 * most SPARE_MAX of each (1 MiB of the 16 KiB ones). A connection gives a
 * buffer back once no chunk lent from it is in use, so a session that
 * carries messages of up to 16 KiB allocates none (on Deno a 10 KB
 * message's 16 KiB buffer, new each time, was a fresh ArrayBuffer per
 * message for V8 to zero, fault in and collect).
 */
const spare: Uint8Array[][] = [[], [], [], []];

/** The spares for buffers of `size` bytes, or undefined for other sizes. */
function sparesOf(size: number): Uint8Array[] | undefined {
  return size === MIN_READ
    ? spare[0]
    : size === MIN_READ * 4
    ? spare[1]
    : size === BODY_READ
    ? spare[2]
    : size === BODY_READ_GROWN
    ? spare[3]
    : undefined;
}

/**
 * A read buffer of `size` bytes: a spare (see {@link giveReadBuffer}),
 * else a new one ({@link smallReadBuffer} for {@link MIN_READ}). Not a
 * public API.
 *
 * @example
 * ```ts
 * import { BODY_READ, giveReadBuffer, takeReadBuffer } from "./shim_kit.ts";
 *
 * const buf = takeReadBuffer(BODY_READ);
 * giveReadBuffer(buf); // true: the next takeReadBuffer(BODY_READ) returns it
 * ```
 */
export function takeReadBuffer(size: number): Uint8Array {
  return sparesOf(size)?.pop() ??
    (size === MIN_READ ? smallReadBuffer() : new Uint8Array(size));
}

/**
 * Gives `buf`, which nothing uses any more, to the spares of its size;
 * false when it has none (another size, no room, or `buf` null). Not a
 * public API.
 *
 * @example
 * ```ts
 * import { giveReadBuffer, MIN_READ, takeReadBuffer } from "./shim_kit.ts";
 *
 * giveReadBuffer(takeReadBuffer(MIN_READ)); // true
 * giveReadBuffer(new Uint8Array(100)); // false: no spares of that size
 * ```
 */
export function giveReadBuffer(buf: Uint8Array | null): boolean {
  if (buf === null) return false;
  const spares = sparesOf(buf.byteLength);
  if (spares === undefined || spares.length >= SPARE_MAX) return false;
  spares.push(buf);
  return true;
}

/**
 * The size of a connection's reused read buffer, for shims that read into
 * memory of their own: small while the client sends commands (a command
 * line, or a pipelined group of a few, fits in {@link MIN_READ}; an idle
 * session's pending read holds its buffer, and 1 KiB cost 1.3 KB more RSS
 * per idle session than 256 bytes on Deno), 4 times larger after a read
 * that filled it (up to {@link MAX_READ}: a body arrives), small again
 * after SHRINK_AFTER small reads in a row. Not a public API: the shims
 * share it.
 *
 * @example
 * ```ts
 * import { MIN_READ, ReadSizer } from "./shim_kit.ts";
 *
 * const sizer = new ReadSizer();
 * sizer.next(MIN_READ, MIN_READ); // 1024: the read filled the buffer
 * sizer.next(1024, 10); // 1024: one small read does not shrink it
 * ```
 */
export class ReadSizer {
  #small = 0;

  /** The size for the next read, after `n` bytes were read into `size`. */
  next(size: number, n: number): number {
    const next = nextReadSize(size, n, this.#small);
    this.#small = next & SMALL_MASK;
    return next >>> SMALL_BITS;
  }
}

/** The bits of {@link nextReadSize}'s result that hold the count of small reads. */
const SMALL_BITS = 4;
const SMALL_MASK = (1 << SMALL_BITS) - 1;

/**
 * {@link ReadSizer}'s rule for a shim that keeps the state in a number
 * field of its connection (no object per connection): `small` is the
 * count of small reads in a row (0 at first); returns the next size and
 * the new count as one number, `size * 16 + count` (sizes are multiples
 * of 16). Not a public API: the shims share it.
 *
 * @example
 * ```ts
 * import { MIN_READ, nextReadSize } from "./shim_kit.ts";
 *
 * const next = nextReadSize(MIN_READ, MIN_READ, 0);
 * next >>> 4; // 1024: the read filled the buffer
 * next & 15; // 0 small reads in a row
 * ```
 */
export function nextReadSize(size: number, n: number, small: number): number {
  if (n >= size) return Math.min(size * 4, MAX_READ) << SMALL_BITS;
  if (n > MIN_READ) return size << SMALL_BITS;
  if (size > MIN_READ && ++small >= SHRINK_AFTER) return MIN_READ << SMALL_BITS;
  return (size << SMALL_BITS) | small;
}

/**
 * A `ReadableStream` over a {@link Connection.read} function, for shims
 * that build `readable` only when asked; cancelling it calls `cancel`.
 * `read()` lends its chunks (valid until the next call): the stream hands
 * out copies, which its reader owns (`new Uint8Array(chunk)`: a Buffer's
 * `slice()` is a view).
 *
 * @example
 * ```ts
 * import { readableFrom } from "./shim_kit.ts";
 *
 * const stream = readableFrom(() => null, () => {});
 * await stream.getReader().read(); // { done: true, value: undefined }
 * ```
 */
export function readableFrom(
  read: () => Uint8Array | null | Promise<Uint8Array | null>,
  cancel: () => void,
): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    async pull(c) {
      let chunk: Uint8Array | null;
      try {
        chunk = await read();
      } catch {
        chunk = null;
      }
      if (chunk === null) c.close();
      else c.enqueue(new Uint8Array(chunk));
    },
    cancel,
  }, { highWaterMark: 0 });
}

/**
 * A `WritableStream` over a {@link Connection.write} function, for shims
 * that build `writable` only when asked.
 *
 * @example
 * ```ts
 * import { writableFrom } from "./shim_kit.ts";
 *
 * const sent: Uint8Array[] = [];
 * const writer = writableFrom((b) => void sent.push(b)).getWriter();
 * await writer.write(new Uint8Array([1]));
 * ```
 */
export function writableFrom(
  write: (bytes: Uint8Array) => void | Promise<void>,
): WritableStream<Uint8Array> {
  return new WritableStream<Uint8Array>({ write: (chunk) => write(chunk) });
}

/**
 * What the shims' connection classes share: `readable` and `writable`
 * made on first use over `read()`/`write()`, and the addresses asked of
 * the runtime on first use (the local one given up front when the
 * listener knows it: see {@link fixedLocalAddr}). A subclass has `read()`,
 * `write()` and `close()` on its own prototype (the hot path goes through
 * nothing here) and says where its addresses come from. Not a public
 * API: the shims share it.
 *
 * @example
 * ```ts
 * import { ShimConnection } from "./shim_kit.ts";
 * import type { NetAddress } from "./transport.ts";
 *
 * class Silent extends ShimConnection {
 *   read(): null {
 *     return null;
 *   }
 *   write(_bytes: Uint8Array): void {}
 *   close(): void {}
 *   protected peerAddr(): NetAddress {
 *     return { hostname: "127.0.0.1", port: 40000 };
 *   }
 *   protected ownAddr(): NetAddress {
 *     return { hostname: "127.0.0.1", port: 25 };
 *   }
 * }
 *
 * const conn = new Silent(null);
 * conn.remoteAddr; // { hostname: "127.0.0.1", port: 40000 }, asked once
 * await conn.readable.getReader().read(); // { done: true, value: undefined }
 * ```
 */
export abstract class ShimConnection implements Connection {
  /** TLS details when the connection is encrypted, else `null`. */
  readonly tls: TlsInfo | null;
  #readable: ReadableStream<Uint8Array> | null = null;
  #writable: WritableStream<Uint8Array> | null = null;
  #remoteAddr: NetAddress | null = null;
  #localAddr: NetAddress | null;

  /** `localAddr`, when known, spares asking the runtime for it. */
  constructor(tls: TlsInfo | null, localAddr: NetAddress | null = null) {
    this.tls = tls;
    this.#localAddr = localAddr;
  }

  /** Bytes from the client, over `read()`; cancelling it calls `cancel()`. */
  get readable(): ReadableStream<Uint8Array> {
    return this.#readable ??= readableFrom(
      () => this.read(),
      () => this.cancel(),
    );
  }

  /** Bytes to the client, over `write()`. */
  get writable(): WritableStream<Uint8Array> {
    return this.#writable ??= writableFrom((chunk) => this.write(chunk));
  }

  /** The client's address (`peerAddr()`, asked once). */
  get remoteAddr(): NetAddress {
    return this.#remoteAddr ??= this.peerAddr();
  }

  /** The server's address on this connection (`ownAddr()`, asked once). */
  get localAddr(): NetAddress {
    return this.#localAddr ??= this.ownAddr();
  }

  /** See {@link Connection.read}. */
  abstract read(): Uint8Array | null | Promise<Uint8Array | null>;
  /** See {@link Connection.write}. */
  abstract write(bytes: Uint8Array): void | Promise<void>;
  /** See {@link Connection.close}. */
  abstract close(abort?: boolean): void;
  /** The client's address as the runtime tells it. */
  protected abstract peerAddr(): NetAddress;
  /** The server's address on this connection as the runtime tells it. */
  protected abstract ownAddr(): NetAddress;

  /** What cancelling `readable` does: `close()`. */
  protected cancel(): void {
    this.close();
  }
}
