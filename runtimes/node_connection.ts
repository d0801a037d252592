// A `node:net` socket as a Connection (node_net.ts's listener makes them):
// plaintext sockets read into buffers of the connection's own where Node's
// node:net allows it (`onread`, the "lent" path), Node's `data` chunks
// otherwise (TLS sockets, Deno's and Bun's node:net); STARTTLS on a
// plaintext socket.

import type * as net from "node:net";
import type { Connection, NetAddress, TlsInfo } from "../src/transport.ts";
import {
  BODY_READ,
  giveReadBuffer,
  InputQueue,
  MIN_READ,
  nextReadSize,
  readableFrom,
  type ReadWaiter,
  takeReadBuffer,
  writableFrom,
} from "../src/shim_kit.ts";
import type { ProxyHeader } from "../src/proxy.ts";
import { stripMapped } from "../src/cidr.ts";
import { serverHandshake, type TlsConfig, tlsInfo } from "./node_tls.ts";

/** How long a closed socket may take to deliver its last bytes. */
const CLOSE_GRACE_MS = 5000;

/**
 * Adapts a connected `net.Socket` (or `tls.TLSSocket`) to a
 * {@link Connection}. With `starttls` (a plaintext socket of a listener
 * that has a certificate) the connection gets `startTls()`.
 *
 * @example
 * ```ts
 * import * as net from "node:net";
 * import { wrapSocket } from "@smtpd/smtpd/node";
 *
 * net.createServer((sock) => {
 *   const conn = wrapSocket(sock, null);
 *   conn.close();
 * });
 * ```
 */
export function wrapSocket(
  sock: net.Socket,
  info: TlsInfo | null,
  starttls?: { config: TlsConfig; handshakeTimeout: number },
  proxy?: ProxyHeader,
): Connection {
  return wrapAccepted(sock, info, starttls, proxy, null);
}

/**
 * Whether accepted plaintext sockets read into buffers of their own
 * (node:net's `onread`) where the runtime allows it; see
 * {@link useReusedReadBuffers}.
 */
let reuseReadBuffers = true;

/**
 * Turns the reused read buffers of accepted sockets on (the default) or
 * off (each read then allocates its own buffer, the `data` path), for the
 * listeners opened from now on. Not a public API: for tests and the bench.
 *
 * @example
 * ```ts
 * import { useReusedReadBuffers } from "./node_connection.ts";
 *
 * useReusedReadBuffers(false);
 * ```
 */
export function useReusedReadBuffers(on: boolean): void {
  reuseReadBuffers = on;
}

/** The part of a libuv stream handle (`sock._handle`) that `onread` needs. */
interface StreamHandle {
  reading?: boolean;
  useUserBuffer?: unknown;
  readStart(): number;
  readStop(): number;
}

/**
 * Whether this runtime's accepted sockets can read into buffers of their
 * own: Node's node:net (`onread`, public for client sockets, takes an
 * accepted socket's handle through `new net.Socket({ handle })`). Deno's
 * and Bun's node:net are other implementations: they keep the `data` path.
 */
export function canReuseReadBuffers(): boolean {
  if (!reuseReadBuffers) return false;
  const v = (globalThis as { process?: { versions?: Record<string, string> } })
    .process?.versions;
  return v !== undefined && typeof v.node === "string" &&
    v.deno === undefined && v.bun === undefined;
}

/** wrapSocket(), with the listener's address when it is every connection's. */
export function wrapAccepted(
  sock: net.Socket,
  info: TlsInfo | null,
  starttls: { config: TlsConfig; handshakeTimeout: number } | undefined,
  proxy: ProxyHeader | undefined,
  localAddr: NetAddress | null,
): Connection {
  // A no-op on Node for the listener's sockets (`noDelay` below did it).
  sock.setNoDelay(true);
  const conn = info === null && starttls !== undefined
    ? new StartTlsConnection(sock, null, localAddr, false, starttls)
    : new NodeConnection(sock, info, localAddr, false);
  if (proxy !== undefined) conn.proxy = proxy;
  return conn;
}

/** node:net's own `onread` slots on a socket (`kBuffer`, `kBufferCb`, `kBufferGen`). */
interface OnreadSlots {
  buffer: symbol;
  callback: symbol;
  generator: symbol;
}
/** Found on the first socket accepted (null: this node:net has none). */
let onreadSlots: OnreadSlots | null | undefined;

/**
 * The `onread` slots of `sock`, found by their names once: what
 * `new net.Socket({ onread })` sets, for a socket the server made. Null
 * when this node:net has not got them, or they are in use.
 */
function slotsOf(sock: net.Socket): OnreadSlots | null {
  if (onreadSlots === undefined) {
    const named = new Map<string | undefined, symbol>();
    for (const s of Object.getOwnPropertySymbols(sock)) {
      named.set(s.description, s);
    }
    const buffer = named.get("kBuffer");
    const callback = named.get("kBufferCb");
    const generator = named.get("kBufferGen");
    onreadSlots = buffer && callback && generator
      ? { buffer, callback, generator }
      : null;
  }
  const slots = onreadSlots;
  if (slots === null) return null;
  const own = sock as unknown as Record<symbol, unknown>;
  return own[slots.buffer] === null && own[slots.callback] === null &&
      own[slots.generator] === null
    ? slots
    : null;
}

/**
 * A plaintext socket accepted paused (`pauseOnConnect`) as a
 * {@link Connection} that reads into buffers of its own (see
 * {@link NodeConnection}): node:net's `onread` (public for the sockets
 * `net.connect` makes) set up on it as `net.Socket`'s constructor does —
 * its three slots, and the handle told to read into the first buffer —
 * before reading starts. Falls back to the `data` path (and resumes the
 * socket) when the socket or its handle is not what that needs.
 */
export function wrapPaused(
  sock: net.Socket,
  starttls: { config: TlsConfig; handshakeTimeout: number } | undefined,
  localAddr: NetAddress | null,
): Connection {
  const handle = (sock as net.Socket & { _handle?: StreamHandle | null })
    ._handle;
  const slots = slotsOf(sock);
  if (
    slots === null || handle == null ||
    typeof handle.useUserBuffer !== "function" || handle.reading === true
  ) {
    sock.resume();
    return wrapAccepted(sock, null, starttls, undefined, localAddr);
  }
  const conn = starttls !== undefined
    ? new StartTlsConnection(sock, null, localAddr, true, starttls)
    : new NodeConnection(sock, null, localAddr, true);
  const first = conn.nextBuffer();
  const own = sock as unknown as Record<symbol, unknown>;
  own[slots.buffer] = first;
  own[slots.callback] = onLentRead;
  own[slots.generator] = nextLentBuffer;
  (handle.useUserBuffer as (buf: Uint8Array) => void).call(handle, first);
  sock.resume();
  return conn;
}

/**
 * The connection whose socket read last: node:net asks for the next buffer
 * (`onread.buffer` as a function, called with no `this`) right after the
 * callback, in the same turn. One function for every connection instead
 * of a closure (and its context) per connection.
 */
let lastRead: NodeConnection | null = null;

/** The connection whose read its waiter is taking in took(), or null. */
let handing: NodeConnection | null = null;

/** `onread.callback` (`this` is the socket): see {@link NodeConnection.took}. */
function onLentRead(this: WithInput, n: number, buf: Uint8Array): boolean {
  const conn = this[INPUT] as NodeConnection;
  lastRead = conn;
  return conn.took(n, buf);
}

/** `onread.buffer`: the next buffer of the connection that just read. */
function nextLentBuffer(): Uint8Array {
  const conn = lastRead!;
  lastRead = null;
  return conn.nextBuffer();
}

/** The received bytes of a socket that a {@link NodeConnection} reads. */
const INPUT = Symbol("input");
type WithInput = net.Socket & { [INPUT]: InputQueue | NodeConnection };

// Shared listeners (`this` is the socket): no closures per connection.
function onData(this: WithInput, d: Uint8Array): void {
  (this[INPUT] as InputQueue).push(d);
}
function onEnd(this: WithInput): void {
  this[INPUT].end();
}
function onLentClose(this: WithInput): void {
  (this[INPUT] as NodeConnection).closed();
}
function onError(): void {/* surfaced as end of input / failed write */}
/** Destroys the socket once what was written went out (see close()). */
function destroyOnFinish(this: net.Socket): void {
  this.destroy();
}

// NodeConnection's #state bits (one number field for what were six).
/** The socket reads into `#buf1` (else `#buf0`). */
const SLOT1 = 1;
const ENDED = 2;
/** A read is held: the socket stopped reading until the driver takes it. */
const STOPPED = 4;
const READ_DONE = 8;
const CLOSING = 16;
/** The socket closed (its handle reads no more). */
const CLOSED = 32;
/**
 * The driver took the read in node:net's callback and asked for the next
 * one there (see took()): the socket reads into the same buffer again.
 * Cleared by nextBuffer().
 */
const SAME_SLOT = 64;
/**
 * A body is coming (expectBody() during took()): the next buffer is one
 * of BODY_READ bytes at least. Cleared by nextBuffer().
 */
const BODY_NEXT = 128;
/** Above these bits: the count of small reads in a row (see nextReadSize). */
const SMALL_SHIFT = 8;
const FLAGS = ENDED | STOPPED | READ_DONE | CLOSING | CLOSED;

/**
 * Whether the `n` bytes read into `b` end with the line `DATA` (any case):
 * the last command of a pipelined group (RFC 2920), the body follows.
 */
function endsWithData(b: Uint8Array, n: number): boolean {
  return n >= 6 && b[n - 1] === 10 && b[n - 2] === 13 &&
    (b[n - 3] | 0x20) === 0x61 && (b[n - 4] | 0x20) === 0x74 &&
    (b[n - 5] | 0x20) === 0x61 && (b[n - 6] | 0x20) === 0x64 &&
    (n === 6 || b[n - 7] === 10);
}

/** The libuv handle's address calls, which fill in the object they are given. */
interface AddressHandle {
  getpeername?(out: { address?: string; port?: number }): number;
  getsockname?(out: { address?: string; port?: number }): number;
}
/** What the handle's address calls fill in, shared: read at once, never kept. */
const scratch: { address?: string; port?: number; family?: string } = {};

/**
 * The client's (`peer`) or the server's address as the socket tells
 * it. With `fromHandle` (the lent path: Node's own node:net) from the
 * handle, into a shared object: the socket's `remoteAddress` would keep
 * one of its own (`_peername`) for as long as the session lasts.
 */
function addressOf(
  sock: net.Socket,
  fromHandle: boolean,
  peer: boolean,
): NetAddress {
  const handle = fromHandle
    ? (sock as net.Socket & { _handle?: AddressHandle | null })._handle
    : null;
  const ask = peer ? handle?.getpeername : handle?.getsockname;
  if (typeof ask === "function" && ask.call(handle, scratch) === 0) {
    const a = {
      hostname: stripMapped(scratch.address ?? ""),
      port: scratch.port ?? 0,
    };
    scratch.address = scratch.port = scratch.family = undefined;
    return a;
  }
  return peer
    ? {
      hostname: stripMapped(sock.remoteAddress ?? ""),
      port: sock.remotePort ?? 0,
    }
    : {
      hostname: stripMapped(sock.localAddress ?? ""),
      port: sock.localPort ?? 0,
    };
}

/**
 * A connection's `readable` and `writable`, made when first asked (few
 * applications ask): kept here, not in two fields of every connection.
 */
const readables = new WeakMap<NodeConnection, ReadableStream<Uint8Array>>();
const writables = new WeakMap<NodeConnection, WritableStream<Uint8Array>>();

/**
 * A `net.Socket` as a {@link Connection}, in one object: its input, its
 * read buffers and its addresses are fields of its own, not objects of
 * their own (an idle session keeps it).
 *
 * On Node a plaintext socket reads into buffers of the connection's own
 * (node:net's `onread`; the "lent" path): two, taking turns, each sized
 * by {@link nextReadSize} (256 bytes while idle). A read is lent to the
 * driver (`read()`; see `Connection`'s ownership rule) until its next
 * `read()`; the socket goes on reading into the other buffer meanwhile.
 * The driver takes each read in node:net's callback (`onReadInTask`, no
 * microtask per read); when it asks for the next one there, the chunk is
 * done with and the socket reads into the same buffer again.
 * When a read arrives before the driver asked for it, it is held and the
 * socket stops reading until the driver takes it and asks again (both
 * buffers are then free): at most two reads are out, and nothing is
 * copied. While the driver waits for a read, the buffer of the chunk lent
 * before goes to a few spares that every connection shares: an idle
 * session holds one buffer.
 *
 * Otherwise (TLS sockets, Deno's and Bun's node:net) Node's `data`
 * chunks, fresh Buffers, go to an {@link InputQueue}: above its
 * high-water mark the socket is paused until the driver reads.
 */
class NodeConnection implements Connection {
  /** TLS details when the connection is encrypted, else `null`. */
  readonly tls: TlsInfo | null;
  readonly sock: net.Socket;
  /** The PROXY header the shim read (implicit TLS behind a proxy). */
  declare proxy?: ProxyHeader;
  /** The `data` path's input; null when reading into buffers of its own. */
  readonly #queue: InputQueue | null;
  // The lent path's two buffers (fields, not an array).
  #buf0: Uint8Array | null = null;
  #buf1: Uint8Array | null = null;
  #held: Uint8Array | null = null;
  #waiter: ReadWaiter | null = null;
  /** Bytes of the last read (-1 before the first). */
  #last = -1;
  /** SLOT1, ENDED, STOPPED, READ_DONE, CLOSING, small reads (see above). */
  #state = SLOT1;
  /** The client's address, asked once. */
  #remote: NetAddress | null = null;
  #local: NetAddress | null;

  constructor(
    sock: net.Socket,
    info: TlsInfo | null,
    localAddr: NetAddress | null,
    lent: boolean,
  ) {
    this.tls = info;
    this.sock = sock;
    this.#local = localAddr;
    if (lent) {
      this.#queue = null;
      (sock as WithInput)[INPUT] = this;
    } else {
      const queue = this.#queue = new InputQueue(sock);
      (sock as WithInput)[INPUT] = queue;
      sock.on("data", onData);
    }
    // on(), not once(): once() wraps the listener in a closure and a state
    // object per socket, kept while the session idles; end() is idempotent.
    // node:net's own "end" listener does nothing with allowHalfOpen (it
    // stops writes after the client's FIN otherwise): ours replaces it,
    // so that the socket keeps one listener, not an array of two.
    if (lent && sock.allowHalfOpen) {
      const own = (sock as net.Socket & { _events?: { end?: unknown } })
        ._events?.end;
      if (
        typeof own === "function" && own.name === "onReadableStreamEnd"
      ) sock.off("end", own as () => void);
    }
    sock.on("end", onEnd);
    sock.on("close", lent ? onLentClose : onEnd);
    sock.on("error", onError);
  }

  /** Bytes from the client, over `read()`; cancelling it destroys the socket. */
  get readable(): ReadableStream<Uint8Array> {
    let r = readables.get(this);
    if (r === undefined) {
      r = readableFrom(() => this.read(), () => this.sock.destroy());
      readables.set(this, r);
    }
    return r;
  }

  /** Bytes to the client, over `write()`. */
  get writable(): WritableStream<Uint8Array> {
    let w = writables.get(this);
    if (w === undefined) {
      w = writableFrom((chunk) => this.write(chunk));
      writables.set(this, w);
    }
    return w;
  }

  /**
   * The client's address, asked once. On the lent path (Node's own
   * node:net) from the handle into a shared object: `remoteAddress` keeps
   * one of its own on the socket.
   */
  get remoteAddr(): NetAddress {
    return this.#remote ??= addressOf(this.sock, this.#queue === null, true);
  }

  /** The server's address on this connection (the listener's when it is every connection's). */
  get localAddr(): NetAddress {
    return this.#local ??= addressOf(this.sock, this.#queue === null, false);
  }

  /** How this connection reads: `"onread"` (buffers of its own) or `"data"`. */
  get readPath(): "onread" | "data" {
    return this.#queue === null ? "onread" : "data";
  }

  /**
   * The buffer for the next read: the other one, or the same one when the
   * driver is done with its chunk already (SAME_SLOT); see nextLentBuffer().
   */
  nextBuffer(): Uint8Array {
    const state = this.#state;
    const slot = state & SLOT1;
    // The other buffer (the chunk just read stays lent in this one), or
    // this one again when the driver is done with that chunk already.
    const next = (state & SAME_SLOT) !== 0 ? slot : slot ^ SLOT1;
    let size = MIN_READ;
    let small = state >>> SMALL_SHIFT;
    const last = this.#last;
    // The buffer read into: null only when the driver gave the buffers up
    // (readDone()) in took() on a closed socket.
    const read = slot === 0 ? this.#buf0 : this.#buf1;
    if (last >= 0 && read !== null) {
      // nextReadSize's answer: size * 16 + small reads in a row.
      const r = nextReadSize(read.byteLength, last, small);
      size = r >>> 4;
      small = r & 15;
      // A read that ends with a DATA command: the body comes next, into a
      // buffer of BODY_READ chosen here, where the next buffer is given
      // anyway; expectBody() would have to replace it through the handle.
      if (
        size < BODY_READ &&
        ((state & BODY_NEXT) !== 0 || endsWithData(read, last))
      ) size = BODY_READ;
    }
    let b = next === 0 ? this.#buf0 : this.#buf1;
    if (b === null || b.byteLength !== size) {
      // The one replaced goes to the spares when nothing holds it: its
      // chunk was given back when the driver asked for the read just
      // done (a read held instead leaves the driver holding it).
      if (this.#held === null && (state & ENDED) === 0) giveReadBuffer(b);
      b = takeReadBuffer(size);
      if (next === 0) this.#buf0 = b;
      else this.#buf1 = b;
    }
    this.#state = (state & FLAGS) | next | (small << SMALL_SHIFT);
    return b;
  }

  /**
   * A body is coming (see `Connection.expectBody`): the buffer the socket
   * reads into next becomes one of {@link BODY_READ} bytes when it is
   * smaller, so that a small message's body comes in one read, not a full
   * small one and then another. Only while the socket reads (nothing held,
   * not stopped): that buffer then holds nothing anyone uses (the chunk
   * lent last is in the other one). After a read that ended with DATA,
   * nextBuffer() gave one of that size already: each `useUserBuffer()`
   * adds a native listener to the handle (about 60 bytes) that it keeps
   * until the socket closes, so this replacement is for the other cases
   * (BDAT, a DATA line split over two reads).
   */
  expectBody(): void {
    const slots = onreadSlots;
    const state = this.#state;
    if (handing === this) {
      // In took(): the buffer for the next read is chosen when it returns.
      this.#state = state | BODY_NEXT;
      return;
    }
    if (
      this.#queue !== null || slots == null || this.#held !== null ||
      (state & (STOPPED | ENDED | CLOSED)) !== 0
    ) return;
    const sock = this.sock;
    const slot = state & SLOT1;
    const cur = slot === 0 ? this.#buf0 : this.#buf1;
    if (cur === null || cur.byteLength >= BODY_READ) return;
    const handle = (sock as net.Socket & { _handle?: StreamHandle | null })
      ._handle;
    if (handle == null || typeof handle.useUserBuffer !== "function") return;
    const b = takeReadBuffer(BODY_READ);
    (sock as unknown as Record<symbol, unknown>)[slots.buffer] = b;
    (handle.useUserBuffer as (buf: Uint8Array) => void).call(handle, b);
    if (slot === 0) this.#buf0 = b;
    else this.#buf1 = b;
    giveReadBuffer(cur);
  }

  /**
   * A read of `n` bytes into `buf`: lent, or held (false stops reading).
   * A waiter that may go on at once (`onReadInTask`: the driver) takes it
   * here, in node:net's callback, where nothing of the driver is on the
   * stack: no microtask per read. When it asks for the next read before
   * returning, the chunk is done with, and the socket reads into the same
   * buffer again (see nextBuffer()).
   */
  took(n: number, buf: Uint8Array): boolean {
    this.#last = n;
    // A full read is lent as the buffer itself: no view to make.
    const chunk = n === buf.byteLength ? buf : buf.subarray(0, n);
    const w = this.#waiter;
    if (w !== null) {
      this.#waiter = null;
      if (w.onReadInTask === undefined) {
        w.onRead(chunk);
        return true;
      }
      handing = this;
      try {
        w.onReadInTask(chunk);
      } finally {
        handing = null;
      }
      if (this.#waiter !== null) this.#state |= SAME_SLOT;
      return true;
    }
    if ((this.#state & ENDED) !== 0) return true;
    this.#held = chunk;
    this.#state |= STOPPED;
    return false;
  }

  read(): Uint8Array | null | Promise<Uint8Array | null> {
    const queue = this.#queue;
    if (queue !== null) return queue.read();
    const chunk = this.poll();
    if (chunk !== undefined) return chunk;
    return new Promise((resolve) => (this.#waiter = { onRead: resolve }));
  }

  /** read() without a promise (see `InputQueue.readOr`). */
  readOr(waiter: ReadWaiter): Uint8Array | null | undefined {
    const queue = this.#queue;
    if (queue !== null) return queue.readOr(waiter);
    const chunk = this.poll();
    if (chunk === undefined) this.#waiter = waiter;
    return chunk;
  }

  /**
   * The lent path's held chunk, `null` at the end, `undefined` when none
   * (nothing waits for one). Not a private method: that costs each
   * connection a field.
   */
  poll(): Uint8Array | null | undefined {
    const held = this.#held;
    if (held !== null) {
      this.#held = null;
      return held;
    }
    const state = this.#state;
    if ((state & ENDED) !== 0) return null;
    // The chunk lent last is given back: the buffer it was read into (of
    // a size the spares keep: 256 B, 1 or 4 KiB) goes to the spares while
    // this connection waits (an idle session holds one buffer, the one the
    // socket reads into, also after a message; the next read's buffer
    // comes back from the spares).
    const slot = state & SLOT1;
    if (giveReadBuffer(slot === 0 ? this.#buf1 : this.#buf0)) {
      if (slot === 0) this.#buf1 = null;
      else this.#buf0 = null;
    }
    if ((state & STOPPED) !== 0) {
      this.#state = state & ~STOPPED;
      const sock = this.sock;
      const handle = (sock as net.Socket & { _handle?: StreamHandle | null })
        ._handle;
      if (handle != null && handle.reading !== true) {
        handle.reading = true;
        const err = handle.readStart();
        if (err) sock.destroy();
      }
    }
    return undefined;
  }

  /** The input ended (the client's FIN, the socket closed). */
  end(): void {
    const queue = this.#queue;
    if (queue !== null) return queue.end();
    const state = this.#state;
    if ((state & ENDED) !== 0) return;
    this.#state = state | ENDED;
    const w = this.#waiter;
    this.#waiter = null;
    w?.onRead(null);
  }

  /** Drops what was received and not read; the input ends. */
  discard(): void {
    const queue = this.#queue;
    if (queue !== null) return queue.discard();
    this.#held = null;
    this.end();
  }

  /**
   * See {@link Connection.readDone}: the driver is done with the chunks,
   * no more reads. The read buffers go to the spares once the socket
   * cannot read into them either: now if it is closed, else when it
   * closes (see closed()).
   */
  readDone(): void {
    const state = this.#state;
    if (this.#queue !== null || (state & READ_DONE) !== 0) return;
    this.#state = state | READ_DONE;
    this.discard();
    if ((state & CLOSED) === 0) return;
    giveReadBuffer(this.#buf0);
    giveReadBuffer(this.#buf1);
    this.#buf0 = this.#buf1 = null;
  }

  /** The socket closed (its handle reads no more); see readDone(). */
  closed(): void {
    this.end();
    const state = this.#state;
    if ((state & CLOSED) !== 0) return;
    this.#state = state | CLOSED;
    if ((state & READ_DONE) === 0) return;
    giveReadBuffer(this.#buf0);
    giveReadBuffer(this.#buf1);
    this.#buf0 = this.#buf1 = null;
  }

  write(chunk: Uint8Array): void | Promise<void> {
    const sock = this.sock;
    if (sock.destroyed) throw new Error("Connection closed");
    if (sock.write(chunk)) return;
    return new Promise<void>((resolve, reject) => {
      const done = () => {
        sock.off("close", fail);
        resolve();
      };
      const fail = () => {
        sock.off("drain", done);
        reject(new Error("Connection closed"));
      };
      sock.once("drain", done);
      sock.once("close", fail);
    });
  }

  close(abort?: boolean): void {
    const sock = this.sock;
    if (sock.destroyed) return;
    if (abort) return void sock.destroy();
    const state = this.#state;
    if ((state & CLOSING) !== 0) return;
    this.#state = state | CLOSING;
    // end() sends FIN only once Node's queue is written: a peer that does
    // not read would keep the socket (and its descriptor) for ever. With
    // nothing queued the FIN goes now: no timer (one per connection). A
    // TLS socket's own queue can be empty while the socket under it still
    // holds bytes: it always gets the timer.
    const queued = sock.writableLength > 0 || this.tls !== null ||
      (sock as net.Socket & { encrypted?: boolean }).encrypted === true;
    // A shared listener, not end()'s callback: that is a closure per
    // connection, and an array of callbacks in the socket's state.
    if (sock.writableFinished) sock.destroy();
    else {
      sock.on("finish", destroyOnFinish);
      sock.end();
    }
    if (!queued) return;
    const timer = setTimeout(() => sock.destroy(), CLOSE_GRACE_MS);
    sock.once("close", () => clearTimeout(timer));
  }
}

/** How a listener's plaintext connections upgrade (one for all of them). */
interface StartTls {
  config: TlsConfig;
  handshakeTimeout: number;
}

/**
 * A plaintext connection of a listener that has a certificate: with
 * `startTls` (from the prototype, not a closure kept per connection).
 */
class StartTlsConnection extends NodeConnection {
  readonly #starttls: StartTls;

  constructor(
    sock: net.Socket,
    info: null,
    localAddr: NetAddress | null,
    lent: boolean,
    starttls: StartTls,
  ) {
    super(sock, info, localAddr, lent);
    this.#starttls = starttls;
  }

  /**
   * See {@link Connection.startTls}: a function made when asked (callers
   * may call it detached), not kept by every connection.
   */
  get startTls(): (reply: Uint8Array) => Promise<Connection> {
    const starttls = this.#starttls;
    return (reply) => upgrade(this, starttls, reply);
  }
}

/**
 * STARTTLS on a plaintext {@link NodeConnection}: see
 * {@link Connection.startTls}.
 */
// deno-lint-ignore require-await -- a throw before the handshake rejects
async function upgrade(
  conn: NodeConnection,
  starttls: { config: TlsConfig; handshakeTimeout: number },
  reply: Uint8Array,
): Promise<Connection> {
  const sock = conn.sock;
  // RFC 3207 §4.2: stop reading plaintext before the 220 goes out, and
  // drop what the client sent before it saw the 220 (command injection,
  // CVE-2011-0411). What arrives after the 220 is the handshake: the TLS
  // socket takes it from the socket's buffer.
  sock.off("data", onData);
  sock.pause();
  sock.off("end", onEnd);
  sock.off("close", onEnd);
  sock.off("close", onLentClose);
  conn.discard();
  while (sock.read() !== null) { /* discard */ }
  sock.write(reply);
  return serverHandshake(
    sock,
    starttls.config,
    starttls.handshakeTimeout,
    (secure) => wrapSocket(secure, tlsInfo(secure)),
  );
}
