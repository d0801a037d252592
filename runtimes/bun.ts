/**
 * Bun shim: `Bun.listen` socket callbacks adapted to the driver's
 * {@link Listener}; STARTTLS through `socket.upgradeTLS`, implicit TLS
 * through `Bun.listen({ tls })`.
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
import type {
  Connection,
  Listener,
  ListenOptions,
  TlsInfo,
} from "../src/transport.ts";

export * from "../mod.ts";

/** The parts of Bun's socket API this shim uses. */
interface BunSocket {
  data: SocketState;
  remoteAddress: string;
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
  upgradeTLS(options: {
    tls: { key: string; cert: string; ca?: string };
    socket: Handlers;
    data?: SocketState;
  }): [BunSocket, BunSocket];
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
  listen(o: {
    hostname: string;
    port: number;
    tls?: { key: string; cert: string; ca?: string };
    allowHalfOpen?: boolean;
    socket: Handlers;
  }): BunListener;
}

const HIGH_WATER_MARK = 64 * 1024;

/** Per-socket state: the stream controller and the pending write. */
class SocketState {
  controller!: ReadableStreamDefaultController<Uint8Array>;
  /** No more input goes to `readable` (peer's FIN, closed, or STARTTLS took over). */
  inputDone = false;
  /** The socket is closed (by the peer, an error or `close()`): writes fail. */
  closed = false;
  paused = false;
  rest: Uint8Array | null = null; // unwritten tail of the current write
  drained: (() => void) | null = null;
  failed: ((e: Error) => void) | null = null;
  onHandshake: ((ok: boolean, err: Error | null) => void) | null = null;
}

const handlers: Handlers = {
  data(s, chunk) {
    const st = s.data;
    if (st.inputDone) return;
    st.controller.enqueue(chunk);
    if ((st.controller.desiredSize ?? 1) <= 0 && !st.paused) {
      st.paused = true;
      s.pause();
    }
  },
  drain(s) {
    const st = s.data;
    if (st.rest === null) return;
    const n = s.write(st.rest);
    st.rest = n < st.rest.byteLength ? st.rest.subarray(Math.max(n, 0)) : null;
    if (st.rest === null) {
      const d = st.drained;
      st.drained = st.failed = null;
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

function endInput(st: SocketState | undefined): void {
  if (!st || st.inputDone) return;
  st.inputDone = true;
  try {
    st.controller.close();
  } catch { /* already closed */ }
}

function finish(st: SocketState | undefined): void {
  if (!st) return;
  // Always end the input, also when close() came first: it used to mark
  // the socket closed without closing `readable`, the handlers that came
  // later returned early, and a pending read never settled (so the
  // connection's loop, and server.close(), waited forever).
  endInput(st);
  st.closed = true;
  st.failed?.(new Error("Connection closed"));
  st.drained = st.failed = null;
}

function wrap(
  s: BunSocket,
  info: TlsInfo | null,
  tlsOptions: ListenOptions["tls"],
): Connection {
  const st = s.data;
  const readable = new ReadableStream<Uint8Array>({
    start(c) {
      st.controller = c;
    },
    pull() {
      if (st.paused) {
        st.paused = false;
        s.resume();
      }
    },
    cancel() {
      conn.close();
    },
  }, { highWaterMark: HIGH_WATER_MARK, size: (c) => c.byteLength });
  const writable = new WritableStream<Uint8Array>({
    write(chunk) {
      if (st.closed) throw new Error("Connection closed");
      // Bun may take part of a chunk: keep the rest for the drain callback.
      const n = s.write(chunk);
      if (n >= chunk.byteLength) return;
      st.rest = chunk.subarray(Math.max(n, 0));
      return new Promise<void>((resolve, reject) => {
        st.drained = resolve;
        st.failed = reject;
      });
    },
  });
  const conn: Connection = {
    readable,
    writable,
    remoteAddr: { hostname: s.remoteAddress, port: s.remotePort ?? 0 },
    localAddr: { hostname: s.localAddress ?? "", port: s.localPort ?? 0 },
    tls: info,
    close(abort) {
      if (st.closed) return;
      finish(st);
      // Bun keeps no queue of its own (a write takes what the kernel
      // takes), so end() closes at once; terminate() also drops the
      // kernel's unsent bytes.
      if (abort) s.terminate();
      else s.end();
    },
  };
  if (tlsOptions && info === null) {
    conn.startTls = (reply) =>
      new Promise<Connection>((resolve, reject) => {
        // Stop handing plaintext to the engine before the 220 goes out.
        st.inputDone = true;
        s.write(reply);
        const next = new SocketState();
        next.onHandshake = (ok, err) => {
          next.onHandshake = null;
          // Bun reports a client-certificate error even on success; the
          // negotiated version tells whether the handshake worked.
          const version = tlsSocket.getTLSVersion?.() ?? null;
          if (!ok && !version) reject(err ?? new Error("TLS handshake failed"));
          else resolve(wrap(tlsSocket, bunTlsInfo(tlsSocket), undefined));
        };
        const [, tlsSocket] = s.upgradeTLS({
          tls: tlsOptions,
          socket: handlers,
          data: next,
        });
      });
  }
  return conn;
}

function bunTlsInfo(s: BunSocket): TlsInfo {
  return {
    version: s.getTLSVersion?.() ?? "unknown",
    cipher: s.getCipher?.()?.name ?? "unknown",
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
export function listen(options: ListenOptions): Promise<Listener> {
  const Bun = (globalThis as unknown as { Bun?: BunApi }).Bun;
  if (!Bun) throw new Error("Cannot listen: not running on Bun");
  const pending: Connection[] = [];
  let waiter: ((c: Connection | null) => void) | null = null;
  let closed = false;
  const implicit = options.implicitTls === true && options.tls !== undefined;
  const server = Bun.listen({
    hostname: options.hostname,
    port: options.port,
    ...(implicit ? { tls: options.tls } : {}),
    allowHalfOpen: true,
    socket: {
      ...handlers,
      open(s) {
        s.data = new SocketState();
        const c = wrap(
          s,
          implicit ? bunTlsInfo(s) : null,
          implicit ? undefined : options.tls,
        );
        if (closed) return c.close();
        if (waiter) {
          const w = waiter;
          waiter = null;
          w(c);
        } else pending.push(c);
      },
    },
  });
  return Promise.resolve({
    addr: { hostname: server.hostname, port: server.port },
    close() {
      if (closed) return;
      closed = true;
      server.stop(false);
      waiter?.(null);
      waiter = null;
    },
    async *[Symbol.asyncIterator]() {
      for (;;) {
        const c = pending.shift() ??
          (closed
            ? null
            : await new Promise<Connection | null>((r) => (waiter = r)));
        if (c === null) return;
        yield c;
      }
    },
  });
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
  return createServer(listen, "bun", options);
}
