/**
 * The `node:net` / `node:tls` listener: plain TCP, STARTTLS (a
 * `tls.TLSSocket({ isServer: true })` over the plaintext socket) and
 * implicit TLS (`tls.createServer`), with certificate replacement and SNI.
 * The Node shim is this; the Deno shim uses it whenever a certificate is
 * configured (Deno has no server-side TLS upgrade, and its
 * `Deno.listenTls` lacks what `node:tls` has), and the Bun shim for
 * certificates per server name (SNI).
 *
 * Each secure context is made once per certificate and replaced by
 * `setTls()`: STARTTLS upgrades take the one in force when they start;
 * implicit TLS gets it through `server.setSecureContext()`.
 *
 * @example
 * ```ts
 * import { listen } from "@smtpd/smtpd/node";
 *
 * const listener = await listen({ hostname: "127.0.0.1", port: 0 });
 * console.log(listener.addr.port);
 * listener.close();
 * ```
 *
 * @module
 */

import type * as nodeCrypto from "node:crypto";
import * as net from "node:net";
import type * as tls from "node:tls";
import {
  checkTlsOptions,
  type Connection,
  HANDSHAKE_TIMEOUT_MS,
  type Listener,
  type ListenOptions,
  matchServerName,
  type NetAddress,
  type TlsCertificate,
  type TlsInfo,
  type TlsOptions,
} from "../src/transport.ts";
import {
  ACCEPT,
  BODY_READ,
  ConnectionQueue,
  type DirectListener,
  fixedLocalAddr,
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
import { readProxyPreamble } from "./proxy_preamble.ts";
import { stripMapped } from "../src/cidr.ts";

/** How long a closed socket may take to deliver its last bytes. */
const CLOSE_GRACE_MS = 5000;

/**
 * `node:tls` and `node:crypto` are loaded when a certificate is first
 * used, not at start-up: a server without TLS never needs them, and
 * loading them costs 4 MB (Node 20) to 9 MB (Node 24) of RSS.
 * `process.getBuiltinModule` loads them synchronously (Node 20.16+, Deno,
 * Bun); older Node loads them as this module is evaluated, as before.
 */
interface Builtins {
  tls: typeof tls;
  crypto: typeof nodeCrypto;
}
const getBuiltin = (globalThis as {
  process?: { getBuiltinModule?: (id: string) => unknown };
}).process?.getBuiltinModule;
let builtins: Builtins | null = null;
const preloaded: Promise<void> | null = getBuiltin
  ? null
  : Promise.all([import("node:tls"), import("node:crypto")]).then(
    ([t, c]) => void (builtins ??= { tls: t, crypto: c }),
  );
function nodeTls(): Builtins {
  if (builtins === null) {
    if (!getBuiltin) throw new Error("node:tls is still loading");
    builtins = {
      tls: getBuiltin("node:tls") as typeof tls,
      crypto: getBuiltin("node:crypto") as typeof nodeCrypto,
    };
  }
  return builtins;
}

/**
 * `SSL_OP_NO_TLSv1_2`, the secure option that makes TLS 1.3 the minimum
 * (for the Bun shim, whose TLS has no minVersion). Not a public API.
 *
 * @example
 * ```ts
 * import { noTls12Option } from "./node_net.ts";
 *
 * const secureOptions = noTls12Option();
 * ```
 */
export function noTls12Option(): number {
  return nodeTls().crypto.constants.SSL_OP_NO_TLSv1_2;
}

function checkKeyPair(c: TlsCertificate, what: string): void {
  const { createPrivateKey, X509Certificate } = nodeTls().crypto;
  let cert: nodeCrypto.X509Certificate;
  try {
    cert = new X509Certificate(c.cert);
  } catch (err) {
    throw new TypeError(
      `Cannot use option ${what}.cert: ${(err as Error).message}`,
    );
  }
  let matches: boolean;
  try {
    matches = cert.checkPrivateKey(createPrivateKey(c.key));
  } catch (err) {
    throw new TypeError(
      `Cannot use option ${what}.key: ${(err as Error).message}`,
    );
  }
  if (!matches) {
    throw new TypeError(
      `Cannot use option ${what}.key: it does not match the certificate`,
    );
  }
}

/**
 * Validates {@link TlsOptions} down to the PEM: each key must parse and
 * match its certificate. Throws a `TypeError` naming the bad option (some
 * runtimes' TLS libraries accept anything when the context is made and
 * fail every handshake later).
 *
 * @example
 * ```ts
 * import { loadTlsOptions } from "@smtpd/smtpd/node";
 *
 * declare const key: string, cert: string;
 * const tls = loadTlsOptions({ key, cert, minVersion: "TLSv1.3" });
 * ```
 */
export function loadTlsOptions(options: unknown): TlsOptions {
  const o = checkTlsOptions(options);
  checkKeyPair(o, "tls");
  for (const [name, c] of Object.entries(o.sni ?? {})) {
    checkKeyPair(c, `tls.sni[${JSON.stringify(name)}]`);
  }
  return o;
}

/**
 * The listener's TLS configuration as `node:tls` wants it, replaceable
 * while the listener runs: STARTTLS upgrades take `context` (and the SNI
 * callback) at the moment they start.
 *
 * @example
 * ```ts
 * import { TlsConfig } from "@smtpd/smtpd/node";
 *
 * declare const key: string, cert: string;
 * const config = new TlsConfig({ key, cert });
 * console.log(config.options.minVersion); // "TLSv1.2"
 * ```
 */
export class TlsConfig {
  #context!: tls.SecureContext;
  #sni = new Map<string, tls.SecureContext>();
  #options!: tls.SecureContextOptions;

  /** Validates `options` and builds the secure contexts (throws on bad PEM). */
  constructor(options: TlsOptions) {
    this.set(options);
  }

  /** Replaces everything; on any error nothing changes. */
  set(options: TlsOptions): void {
    const o = loadTlsOptions(options);
    const base: tls.SecureContextOptions = {
      key: o.key,
      cert: o.cert,
      ca: o.ca,
      minVersion: o.minVersion ?? "TLSv1.2",
    };
    const { createSecureContext } = nodeTls().tls;
    const context = createSecureContext(base);
    const sni = new Map<string, tls.SecureContext>();
    for (const [name, c] of Object.entries(o.sni ?? {})) {
      sni.set(name, createSecureContext({ ...base, ...c }));
    }
    this.#options = base;
    this.#context = context;
    this.#sni = sni;
  }

  /** The default context (no SNI, or a name without its own certificate). */
  get context(): tls.SecureContext {
    return this.#context;
  }

  /** The options behind {@link TlsConfig.context} (for `tls.Server#setSecureContext`). */
  get options(): tls.SecureContextOptions {
    return this.#options;
  }

  /**
   * `SNICallback` for `node:tls`: the context for the name the client
   * asked for; `null` lets the default context answer.
   */
  readonly sniCallback = (
    name: string,
    cb: (err: Error | null, ctx?: tls.SecureContext) => void,
  ): void => {
    const ctx = matchServerName(this.#sni, name);
    // Node documents (err, ctx); a missing ctx keeps the default one.
    (cb as (err: null, ctx: tls.SecureContext | null) => void)(
      null,
      ctx ?? null,
    );
  };
}

function tlsInfo(sock: tls.TLSSocket): TlsInfo {
  const servername = (sock as tls.TLSSocket & { servername?: string | false })
    .servername;
  return {
    version: sock.getProtocol() ?? "unknown",
    cipher: sock.getCipher()?.name ?? "unknown",
    ...(servername ? { servername } : {}),
  };
}

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
 * import { useReusedReadBuffers } from "./node_net.ts";
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
function canReuseReadBuffers(): boolean {
  if (!reuseReadBuffers) return false;
  const v = (globalThis as { process?: { versions?: Record<string, string> } })
    .process?.versions;
  return v !== undefined && typeof v.node === "string" &&
    v.deno === undefined && v.bun === undefined;
}

/** wrapSocket(), with the listener's address when it is every connection's. */
function wrapAccepted(
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
function wrapPaused(
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
/** Above these bits: the count of small reads in a row (see nextReadSize). */
const SMALL_SHIFT = 6;
const FLAGS = ENDED | STOPPED | READ_DONE | CLOSING | CLOSED;

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

  /** The buffer for the next read (the other one); see nextLentBuffer(). */
  nextBuffer(): Uint8Array {
    const state = this.#state;
    const next = (state & SLOT1) ^ SLOT1;
    let size = MIN_READ;
    let small = state >>> SMALL_SHIFT;
    if (this.#last >= 0) {
      // nextReadSize's answer: size * 16 + small reads in a row.
      const r = nextReadSize(
        (next === 0 ? this.#buf1 : this.#buf0)!.byteLength,
        this.#last,
        small,
      );
      size = r >>> 4;
      small = r & 15;
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
   * lent last is in the other one).
   */
  expectBody(): void {
    const slots = onreadSlots;
    const state = this.#state;
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

  /** A read of `n` bytes into `buf`: lent, or held (false stops reading). */
  took(n: number, buf: Uint8Array): boolean {
    this.#last = n;
    // A full read is lent as the buffer itself: no view to make.
    const chunk = n === buf.byteLength ? buf : buf.subarray(0, n);
    const w = this.#waiter;
    if (w !== null) {
      this.#waiter = null;
      w.onRead(chunk);
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
 * The server side of a TLS handshake over `sock` (plaintext that must not
 * be read any more: its buffered bytes are the handshake's), with the
 * listener's certificates: STARTTLS, and implicit TLS behind a proxy.
 * Resolves with what `secured` makes of the TLS socket, called as the
 * handshake completes (so that the socket's listeners are in place before
 * any of its events); rejects, with both sockets destroyed, when the
 * handshake fails, does not complete within `handshakeTimeout`, or the
 * client leaves.
 */
function serverHandshake<T>(
  sock: net.Socket,
  config: TlsConfig,
  handshakeTimeout: number,
  secured: (secure: tls.TLSSocket) => T,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const secure = new (nodeTls().tls.TLSSocket)(sock, {
      isServer: true,
      secureContext: config.context,
      SNICallback: config.sniCallback,
    });
    let settled = false;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      secure.destroy();
      sock.destroy();
      reject(err);
    };
    // A client that never completes the handshake (or leaves in the
    // middle of it) must not hold the connection for ever.
    const timer = setTimeout(
      () => fail(new Error("TLS handshake timed out")),
      handshakeTimeout,
    );
    secure.once("secure", () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      secure.off("error", fail);
      secure.off("end", onClose);
      secure.off("close", onClose);
      resolve(secured(secure));
    });
    // The client left: with allowHalfOpen (inherited from the
    // listener) its FIN gives "end" and no "close".
    const onClose = () =>
      fail(new Error("Connection closed during the TLS handshake"));
    secure.once("error", fail);
    secure.once("end", onClose);
    secure.once("close", onClose);
  });
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

/**
 * Whether `net.Server#listen` takes `reusePort`: Node 22.12 and 23.1 on;
 * Deno and Bun have it in their `node:net`. Older Node ignores it.
 *
 * @example
 * ```ts
 * import { hasReusePort } from "./node_net.ts";
 *
 * if (!hasReusePort()) console.log("use node:cluster");
 * ```
 */
export function hasReusePort(): boolean {
  const v = (globalThis as { process?: { versions?: Record<string, string> } })
    .process?.versions ?? {};
  if (v.deno !== undefined || v.bun !== undefined) return true;
  const [major, minor] = (v.node ?? "0.0").split(".").map(Number);
  return major > 23 || (major === 23 && minor >= 1) ||
    (major === 22 && minor >= 12);
}

/**
 * Implicit TLS behind a proxy: reads the PROXY header in plaintext, then
 * runs the TLS handshake on the rest (within `handshakeTimeout` for each
 * of the two). Resolves with the connection, or `null` (closed; for a bad
 * header `onRefused` was told).
 */
async function secureBehindProxy(
  sock: net.Socket,
  config: TlsConfig,
  handshakeTimeout: number,
  proxyProtocol: NonNullable<ListenOptions["proxyProtocol"]>,
  unix: boolean,
  onTlsFailure: (() => void) | undefined,
): Promise<Connection | null> {
  sock.on("error", () => {/* surfaced by the steps below */});
  // The addresses as accepted: a peer that leaves right after the
  // handshake (a proxy's health check) has none by the time it is wrapped.
  const remoteAddr = {
    hostname: stripMapped(sock.remoteAddress ?? ""),
    port: sock.remotePort ?? 0,
  };
  const localAddr = {
    hostname: stripMapped(sock.localAddress ?? ""),
    port: sock.localPort ?? 0,
  };
  const header = await readProxyPreamble(
    sock,
    proxyProtocol,
    handshakeTimeout,
    unix,
  );
  if (header === null) return null;
  return serverHandshake(sock, config, handshakeTimeout, (secure) => {
    const conn = wrapSocket(secure, tlsInfo(secure), undefined, header);
    // Own properties over the connection's address getters (a Unix
    // socket's are set by the listener).
    if (unix) return conn;
    return Object.defineProperties(conn, {
      remoteAddr: { value: remoteAddr, enumerable: true },
      localAddr: { value: localAddr, enumerable: true },
    });
  }).catch(() => {
    onTlsFailure?.();
    return null;
  });
}

/**
 * Opens a {@link Listener} with `node:net` (plain or STARTTLS) or
 * `node:tls` (implicit TLS).
 *
 * @example
 * ```ts
 * import { listen } from "@smtpd/smtpd/node";
 *
 * const listener = await listen({ hostname: "127.0.0.1", port: 0 });
 * console.log(listener.addr.port);
 * listener.close();
 * ```
 */
export async function listen(options: ListenOptions): Promise<Listener> {
  const path = options.path;
  // A Unix socket's file handling (node:fs) is loaded when one is asked for.
  const unix = path !== undefined
    ? await (await import("./unix_path.ts")).UnixSocketFile.prepare(path)
    : null;
  if (options.tls && preloaded !== null) await preloaded;
  if (options.reusePort && !hasReusePort()) {
    throw new TypeError(
      `Cannot use option reusePort: Node ${
        (globalThis as { process?: { version?: string } }).process?.version
      } has no SO_REUSEPORT (Node 22.12 or later has); use node:cluster to run several processes on one port`,
    );
  }
  let config: TlsConfig | null;
  try {
    config = options.tls ? new TlsConfig(options.tls) : null;
  } catch (err) {
    return Promise.reject(err);
  }
  const handshakeTimeout = options.handshakeTimeout ?? HANDSHAKE_TIMEOUT_MS;
  /** STARTTLS for plaintext sockets, one for every connection (setTls() replaces the config's contents). */
  const starttls = config ? { config, handshakeTimeout } : undefined;
  const queue = new ConnectionQueue();
  /** Every connection's local address when bound to one IP (set on listening). */
  let local: NetAddress | null = null;
  const push = unix === null
    ? (c: Connection) => queue.push(c)
    : (c: Connection) => queue.push(unix.wrap(c));
  // allowHalfOpen: a client's FIN ends its input only, so the replies to
  // what it sent before (QUIT included) still go out. Without it Node ended
  // the socket on the FIN and every later reply was lost.
  const proxyProtocol = options.proxyProtocol;
  const tlsServer = options.implicitTls && config && !proxyProtocol
    ? nodeTls().tls.createServer(
      {
        allowHalfOpen: true,
        noDelay: true,
        ...config.options,
        SNICallback: config.sniCallback,
        handshakeTimeout,
      },
      (s) => push(wrapAccepted(s, tlsInfo(s), undefined, undefined, local)),
    )
    : null;
  const behindProxy = !!(options.implicitTls && config && proxyProtocol);
  const lend = !behindProxy && canReuseReadBuffers();
  const server = tlsServer ?? net.createServer(
    { allowHalfOpen: true, noDelay: true, pauseOnConnect: lend },
    behindProxy
      ? (s) =>
        void secureBehindProxy(
          s,
          config!,
          handshakeTimeout,
          proxyProtocol!,
          unix !== null,
          options.onTlsFailure,
        )
          .then((c) => c && push(c))
      : lend
      ? (s) =>
        push(
          wrapPaused(
            s,
            starttls,
            local,
          ),
        )
      : (s) =>
        push(
          wrapAccepted(
            s,
            null,
            starttls,
            undefined,
            local,
          ),
        ),
  );
  server.on(
    "tlsClientError",
    (_err: Error, s: tls.TLSSocket | undefined) => {
      // A failed (or timed out) handshake: nothing reached the engine.
      s?.destroy();
      options.onTlsFailure?.();
    },
  );
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    const listening = () => {
      server.off("error", reject);
      server.on("error", () => {});
      const a = server.address() as net.AddressInfo;
      unix?.bound();
      if (unix === null) local = fixedLocalAddr(a.address, a.port);
      const listener: DirectListener = {
        addr: unix !== null ? unix.addr : { hostname: a.address, port: a.port },
        close() {
          if (!queue.close()) return;
          server.close();
          unix?.remove();
        },
        [Symbol.asyncIterator]: () => queue[Symbol.asyncIterator](),
        // The server takes each connection in the accept callback: no
        // promise, iterator result and resumed loop per connection.
        [ACCEPT]: (take) => queue[ACCEPT](take),
      };
      if (config) {
        listener.setTls = (tlsOptions) => {
          config.set(tlsOptions);
          tlsServer?.setSecureContext(config.options);
        };
      }
      resolve(listener);
    };
    if (path !== undefined) server.listen(path, listening);
    else {
      const where: net.ListenOptions & { reusePort?: boolean } = {
        port: options.port,
        host: options.hostname,
        ...(options.reusePort ? { reusePort: true } : {}),
      };
      server.listen(where, listening);
    }
  });
}
