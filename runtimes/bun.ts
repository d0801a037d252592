/**
 * Bun shim: `Bun.listen` socket callbacks adapted to the driver's
 * {@link Listener}. TLS through `socket.upgradeTLS`, both for STARTTLS and
 * for implicit TLS (upgraded as the connection opens, handed to the driver
 * once the handshake is done, so that `tls` tells the negotiated version
 * and cipher). Each handshake takes the certificate in force when it
 * starts, so `setTls()` can replace it; `Bun.listen({ tls })` cannot. The
 * price, measured on Bun 1.4 (server CPU, echo server): a handshake costs
 * the same within noise, a round trip up to ~20% more (Bun also calls the
 * plaintext socket's `data` handler with each encrypted chunk).
 * `upgradeTLS` takes one certificate only: with `tls.sni` the listener is
 * `node:net` + `node:tls` (the Node shim), which Bun runs.
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd/bun";
 *
 * const server = await serve({ port: 2525, onMessage: (m) => console.log(m.from) });
 * ```
 *
 * @module
 */

import { createServer, type ServeOptions, type Server } from "../src/server.ts";
import { dnsResolver } from "./dns_lazy.ts";
import {
  type Connection,
  HANDSHAKE_TIMEOUT_MS,
  type Listener,
  type ListenOptions,
  type NetAddress,
  type TlsInfo,
  type TlsOptions,
} from "../src/transport.ts";
import {
  ACCEPT,
  ConnectionQueue,
  type DirectListener,
  fixedLocalAddr,
  InputBuffer,
  OWNED_CHUNKS,
  readableFrom,
  writableFrom,
} from "../src/shim_kit.ts";

export * from "../src/exports/runtime.ts";

/** The parts of Bun's socket API this shim uses. */
interface BunSocket {
  data: BunConnection;
  /** Missing once the peer has reset the connection (before it was accepted). */
  remoteAddress?: string;
  remotePort?: number;
  localAddress?: string;
  localPort?: number;
  write(data: Uint8Array): number;
  end(): void;
  terminate(): void;
  pause(): void;
  resume(): void;
  getTLSVersion?(): string | null;
  getCipher?(): { name: string } | null;
  getServername?(): string | null | undefined;
  upgradeTLS(options: {
    tls: BunTls;
    socket: Handlers;
    data?: BunConnection;
  }): [BunSocket, BunSocket];
}
/** Bun's TLS options (`minVersion` is not one of them: it fails every handshake). */
interface BunTls {
  key: string;
  cert: string;
  ca?: string;
  secureOptions?: number;
}
interface Handlers {
  open?(s: BunSocket): void;
  data?(s: BunSocket, chunk: Uint8Array): void;
  drain?(s: BunSocket): void;
  close?(s: BunSocket): void;
  error?(s: BunSocket, e: Error): void;
  end?(s: BunSocket): void;
  handshake?(s: BunSocket, ok: boolean, err: Error | null): void;
}
interface BunListener {
  hostname: string;
  port: number;
  stop(closeActive?: boolean): void;
}
interface BunApi {
  listen(
    o: ({ hostname: string; port: number } | { unix: string }) & {
      allowHalfOpen?: boolean;
      reusePort?: boolean;
      socket: Handlers;
    },
  ): BunListener;
}

const handlers: Handlers = {
  data(s, chunk) {
    s.data.push(chunk, true);
  },
  drain(s) {
    const st = s.data;
    if (st.rest === null) return;
    const n = s.write(st.rest);
    st.rest = n < st.rest.byteLength ? st.rest.subarray(Math.max(n, 0)) : null;
    if (st.rest === null) {
      const d = st.drained;
      st.drained = st.failed = null;
      st.pending = null;
      d?.();
    }
  },
  end(s) {
    // The client's FIN ends its input only: with `allowHalfOpen` the
    // replies to what it sent before still go out (a client may send its
    // last commands, QUIT included, and half-close at once).
    endInput(s.data);
  },
  close(s) {
    finish(s.data);
  },
  error(s) {
    finish(s.data);
  },
  handshake(s, ok, err) {
    s.data?.onHandshake?.(ok, err);
  },
};

function endInput(st: BunConnection | undefined): void {
  st?.end();
}

function finish(st: BunConnection | undefined): void {
  if (!st) return;
  // Closed during the handshake: fail it (it used to wait for ever, and
  // with it the connection's loop and server.close()).
  st.onHandshake?.(
    false,
    new Error("Connection closed during the TLS handshake"),
  );
  // Always end the input, also when close() came first: it used to mark
  // the socket closed without closing `readable`, the handlers that came
  // later returned early, and a pending read never settled (so the
  // connection's loop, and server.close(), waited forever).
  endInput(st);
  st.closed = true;
  st.failed?.(new Error("Connection closed"));
  st.drained = st.failed = null;
  st.pending = null;
  st.rest = null;
}

/**
 * `TlsOptions` as Bun wants them; `noTls12` is `node:crypto`'s
 * `constants.SSL_OP_NO_TLSv1_2` (node_net's noTls12Option()).
 */
function bunTls(o: TlsOptions, noTls12: number): BunTls {
  return {
    key: o.key,
    cert: o.cert,
    ...(o.ca !== undefined ? { ca: o.ca } : {}),
    // Bun refuses TLS 1.1 and older already; it has no minVersion option.
    ...(o.minVersion === "TLSv1.3" ? { secureOptions: noTls12 } : {}),
  };
}

/** The listener's TLS settings: the current ones, replaceable. */
interface TlsState {
  current: BunTls;
  handshakeTimeout: number;
}

/**
 * Runs the server side of a TLS handshake on `s` (which must not deliver
 * data any more); resolves with the encrypted socket's connection (its
 * `tls` told), or rejects (and closes the connection) if it fails, times
 * out or the client leaves.
 */
function handshake(
  s: BunSocket,
  tls: TlsState,
  localAddr: NetAddress | null,
  started?: (tlsSocket: BunSocket) => void,
): Promise<BunConnection> {
  return new Promise((resolve, reject) => {
    const next = new BunConnection(null, localAddr);
    const timer = setTimeout(() => {
      next.onHandshake?.(false, new Error("TLS handshake timed out"));
    }, tls.handshakeTimeout);
    next.onHandshake = (ok, err) => {
      next.onHandshake = null;
      clearTimeout(timer);
      // Bun passes an error on success too (the client sent no
      // certificate), and reports a version on failure ("TLSv1.2" before
      // any handshake): `ok`, or a negotiated cipher's name, tells success.
      if (ok || tlsSocket.getCipher?.()?.name) {
        next.tls = bunTlsInfo(tlsSocket);
        return resolve(next);
      }
      tlsSocket.terminate();
      reject(err ?? new Error("TLS handshake failed"));
    };
    let tlsSocket: BunSocket;
    try {
      [, tlsSocket] = s.upgradeTLS({
        tls: tls.current,
        socket: handlers,
        data: next,
      });
      next.socket = tlsSocket;
    } catch (err) {
      clearTimeout(timer);
      s.terminate();
      return reject(err);
    }
    started?.(tlsSocket);
  });
}

/**
 * Gives `conn` its `startTls`. Apart from the open handler: a function
 * whose variables a closure captures gets a scope object on the heap at
 * every call (JavaScriptCore), also when the closure is never made; the
 * open handler runs for every connection, TLS or not.
 */
function offerStartTls(conn: BunConnection, tls: TlsState): void {
  conn.startTls = (reply) => upgrade(conn, tls, reply);
}

/**
 * A Bun socket as a {@link Connection}, and the socket's state (its
 * `data`): one object per socket, not two. It is the socket's input queue
 * (ended by the peer's FIN, a close, or STARTTLS; Bun's `data` chunks are
 * fresh arrays: kept as they come, see `Connection`'s ownership rule) and
 * holds the pending write. Methods on the prototype; the addresses and
 * streams made when first asked (as `ShimConnection`'s are).
 */
class BunConnection extends InputBuffer implements Connection {
  /** The socket, once known (a TLS socket's connection exists before it). */
  socket: BunSocket | null;
  /** TLS details when the connection is encrypted, else `null`. */
  tls: TlsInfo | null = null;
  /** The socket is closed (by the peer, an error or `close()`): writes fail. */
  closed = false;
  rest: Uint8Array | null = null; // unwritten tail of the pending writes
  pending: Promise<void> | null = null;
  drained: (() => void) | null = null;
  failed: ((e: Error) => void) | null = null;
  /** Set while a TLS handshake runs on this socket. */
  onHandshake: ((ok: boolean, err: Error | null) => void) | null = null;
  /** The TLS socket while a STARTTLS handshake runs. */
  upgrading: BunSocket | null = null;
  /**
   * Set by offerStartTls() where STARTTLS is offered; declared only, so
   * that a plaintext connection has no field for it (one field more took
   * the next size of heap cell).
   */
  declare startTls?: (reply: Uint8Array) => Promise<Connection>;
  #readable: ReadableStream<Uint8Array> | null = null;
  #writable: WritableStream<Uint8Array> | null = null;
  #remoteAddr: NetAddress | null = null;
  #localAddr: NetAddress | null;

  /** `localAddr`, when known, spares asking Bun for it. */
  constructor(s: BunSocket | null, localAddr: NetAddress | null) {
    super();
    this.socket = s;
    this.#localAddr = localAddr;
  }

  /**
   * Bun's chunks are fresh arrays of their own (see OWNED_CHUNKS): on the
   * prototype, no field per connection.
   */
  get [OWNED_CHUNKS](): true {
    return true;
  }

  /** Stops reading from the socket (the input queued too much). */
  pause(): void {
    this.socket?.pause();
  }

  /** Reads from the socket again. */
  resume(): void {
    this.socket?.resume();
  }

  /** Bytes from the client, over `read()`; cancelling it closes. */
  get readable(): ReadableStream<Uint8Array> {
    return this.#readable ??= readableFrom(
      () => this.read(),
      () => this.close(),
    );
  }

  /** Bytes to the client, over `write()`. */
  get writable(): WritableStream<Uint8Array> {
    return this.#writable ??= writableFrom((chunk) => this.write(chunk));
  }

  /** The client's address (asked of Bun once). */
  get remoteAddr(): NetAddress {
    return this.#remoteAddr ??= {
      hostname: this.socket!.remoteAddress ?? "",
      port: this.socket!.remotePort ?? 0,
    };
  }

  /** The server's address on this connection (asked of Bun once). */
  get localAddr(): NetAddress {
    return this.#localAddr ??= {
      hostname: this.socket!.localAddress ?? "",
      port: this.socket!.localPort ?? 0,
    };
  }

  write(chunk: Uint8Array): void | Promise<void> {
    if (this.closed) throw new Error("Connection closed");
    if (this.rest !== null) {
      // A write still waits for the socket: queue behind it, in order.
      const rest = new Uint8Array(this.rest.byteLength + chunk.byteLength);
      rest.set(this.rest);
      rest.set(chunk, this.rest.byteLength);
      this.rest = rest;
      return this.pending!;
    }
    // Bun may take part of a chunk: keep the rest for the drain callback.
    const n = this.socket!.write(chunk);
    if (n >= chunk.byteLength) return;
    this.rest = chunk.subarray(Math.max(n, 0));
    return this.pending = drained(this);
  }

  close(abort?: boolean): void {
    // Closing during the STARTTLS handshake (server shutdown): the
    // plaintext socket is the TLS socket's now, so end that one (the
    // handshake then fails, and startTls() rejects).
    if (this.upgrading !== null) return this.upgrading.terminate();
    if (this.closed) return;
    finish(this);
    // Bun keeps no queue of its own (a write takes what the kernel
    // takes), so end() closes at once; terminate() also drops the
    // kernel's unsent bytes.
    if (abort) this.socket!.terminate();
    else this.socket!.end();
  }
}

/**
 * A promise of the drain callback's having written `st.rest`. Apart from
 * `write()` so that a write that needs none allocates no scope for the
 * closure's captured variables (see {@link offerStartTls}).
 */
function drained(st: BunConnection): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    st.drained = resolve;
    st.failed = reject;
  });
}

/** STARTTLS on a plaintext {@link BunConnection}: see {@link Connection.startTls}. */
async function upgrade(
  conn: BunConnection,
  tls: TlsState,
  reply: Uint8Array,
): Promise<Connection> {
  // RFC 3207 §4.2: stop handing plaintext to the engine before the 220
  // goes out, and drop what was received and not read yet. Bun delivers
  // data in callbacks only, so nothing can arrive between here and
  // upgradeTLS().
  conn.discard();
  if (conn.paused) conn.socket!.resume();
  // A 220 the kernel did not take at once goes out before the upgrade.
  await conn.write(reply);
  try {
    return await handshake(
      conn.socket!,
      tls,
      null,
      (t) => (conn.upgrading = t),
    );
  } finally {
    conn.upgrading = null;
  }
}

function bunTlsInfo(s: BunSocket): TlsInfo {
  const servername = s.getServername?.();
  return {
    version: s.getTLSVersion?.() ?? "unknown",
    cipher: s.getCipher?.()?.name ?? "unknown",
    ...(servername ? { servername } : {}),
  };
}

/**
 * Opens a {@link Listener} with `Bun.listen`.
 *
 * @example
 * ```ts
 * import { listen } from "@smtpd/smtpd/bun";
 *
 * const listener = await listen({ hostname: "127.0.0.1", port: 0 });
 * listener.close();
 * ```
 */
export async function listen(options: ListenOptions): Promise<Listener> {
  const Bun = (globalThis as unknown as { Bun?: BunApi }).Bun;
  if (!Bun) throw new Error("Cannot listen: not running on Bun");
  // node_net (node:net, and node:tls when a certificate is given) and
  // node:fs (a Unix socket's file) are loaded only when asked for: each
  // node: module costs Bun 2–5 MB of RSS that Bun.listen never needs.
  // Implicit TLS behind a proxy: the PROXY header comes in plaintext
  // before the handshake, and bytes of the ClientHello may come in the
  // same read. upgradeTLS() cannot be handed bytes already received, while
  // node:tls takes them back (socket.unshift): node:net + node:tls here.
  if (
    options.tls?.sni !== undefined ||
    (options.implicitTls && options.proxyProtocol)
  ) {
    return (await import("./node_net.ts")).listen(options);
  }
  const nodeNet = options.tls ? await import("./node_net.ts") : null;
  const path = options.path;
  const unix = path !== undefined
    ? await (await import("./unix_path.ts")).UnixSocketFile.prepare(path)
    : null;
  const noTls12 = nodeNet !== null ? nodeNet.noTls12Option() : 0;
  let current: BunTls | null;
  try {
    current = nodeNet !== null
      ? bunTls(nodeNet.loadTlsOptions(options.tls), noTls12)
      : null;
  } catch (err) {
    return Promise.reject(err);
  }
  const tls: TlsState | null = current && {
    current,
    handshakeTimeout: options.handshakeTimeout ?? HANDSHAKE_TIMEOUT_MS,
  };
  const queue = new ConnectionQueue();
  const push = unix === null
    ? (c: Connection) => queue.push(c)
    : (c: Connection) => queue.push(unix.wrap(c));
  const implicit = options.implicitTls === true && tls !== null;
  let local: NetAddress | null = null;
  const server = Bun.listen({
    ...(path !== undefined
      ? { unix: path }
      : { hostname: options.hostname, port: options.port }),
    allowHalfOpen: true,
    reusePort: options.reusePort ?? false,
    socket: {
      ...handlers,
      open(s) {
        if (!implicit) {
          const conn = s.data = new BunConnection(s, local);
          if (tls !== null) offerStartTls(conn, tls);
          return push(conn);
        }
        // Implicit TLS: the driver gets the connection once it is
        // encrypted (so that session.tls tells the negotiated version and
        // cipher); a failed handshake never reaches it.
        (s.data = new BunConnection(s, local)).end();
        handshake(s, tls, local).then(
          push,
          // A failed handshake: nothing to deliver.
          () => options.onTlsFailure?.(),
        );
      },
    },
  });
  unix?.bound();
  // Every connection's local address when bound to one IP: no getsockname
  // per connection (the open handler runs only after this).
  local = unix === null ? fixedLocalAddr(server.hostname, server.port) : null;
  const listener: DirectListener = {
    addr: unix !== null
      ? unix.addr
      : { hostname: server.hostname, port: server.port },
    close() {
      if (!queue.close()) return;
      server.stop(false);
      unix?.remove();
    },
    [Symbol.asyncIterator]: () => queue[Symbol.asyncIterator](),
    // The server takes each connection in the open callback (no promise
    // and resumed accept loop per connection).
    [ACCEPT]: (take) => queue[ACCEPT](take),
  };
  if (tls !== null && nodeNet !== null) {
    listener.setTls = (tlsOptions) => {
      const o = nodeNet.loadTlsOptions(tlsOptions);
      if (o.sni !== undefined) {
        throw new TypeError(
          "Cannot use option tls.sni: on Bun, give it when the server starts",
        );
      }
      tls.current = bunTls(o, noTls12);
    };
  }
  return listener;
}

/**
 * Starts an SMTP server on Bun's native `Bun.listen`.
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd/bun";
 *
 * const server = await serve({ port: 0 });
 * await server.close();
 * ```
 */
export function serve(options: ServeOptions = {}): Promise<Server> {
  return createServer(listen, "bun", options, { dnsResolver });
}
