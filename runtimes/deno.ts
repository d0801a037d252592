/**
 * Deno shim: `Deno.listen` adapted to the driver's {@link Listener},
 * reading with `conn.read` into a reused buffer (much cheaper than the
 * default `conn.readable` reader).
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
import type { Connection, Listener, ListenOptions } from "../src/transport.ts";
import { listen as listenNode } from "./node_net.ts";
import {
  prepareSocketPath,
  removeSocketPath,
  socketFileId,
  unixAddr,
  unixConnection,
} from "./unix_path.ts";

export * from "../src/api.ts";
export type { Connection, Listener, ListenOptions } from "../src/transport.ts";

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
  close(): void;
}
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

const READ_SIZE = 64 * 1024;

function wrap(conn: DenoConn): Connection {
  conn.setNoDelay?.(true);
  let closed = false;
  const buf = new Uint8Array(READ_SIZE);
  const readable = new ReadableStream<Uint8Array>({
    async pull(c) {
      let n: number | null;
      try {
        n = await conn.read(buf);
      } catch {
        n = null;
      }
      if (n === null) {
        c.close();
        return;
      }
      // The buffer is reused: hand out a copy of just the bytes read.
      c.enqueue(buf.slice(0, n));
    },
    cancel() {
      close();
    },
  }, { highWaterMark: 0 });
  const writable = new WritableStream<Uint8Array>({
    async write(chunk) {
      let off = 0;
      while (off < chunk.byteLength) {
        off += await conn.write(chunk.subarray(off));
      }
    },
  });
  const close = () => {
    if (closed) return;
    closed = true;
    try {
      conn.close();
    } catch { /* already closed */ }
  };
  return {
    readable,
    writable,
    remoteAddr: {
      hostname: conn.remoteAddr.hostname,
      port: conn.remoteAddr.port,
    },
    localAddr: { hostname: conn.localAddr.hostname, port: conn.localAddr.port },
    tls: null,
    close,
  };
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
  const unstableNet = typeof Deno.listenDatagram === "function";
  if (options.tls || (options.reusePort && !unstableNet)) {
    return listenNode(options);
  }
  const path = options.path;
  if (path !== undefined) await prepareSocketPath(path);
  const l = Deno.listen(
    path !== undefined ? { path, transport: "unix" } : {
      hostname: options.hostname,
      port: options.port,
      transport: "tcp",
      ...(options.reusePort ? { reusePort: true } : {}),
    },
  );
  const fileId = path !== undefined ? socketFileId(path) : null;
  let closed = false;
  return {
    addr: path !== undefined
      ? unixAddr(path)
      : { hostname: l.addr.hostname, port: l.addr.port },
    close() {
      if (closed) return;
      closed = true;
      try {
        l.close();
      } catch { /* already closed */ }
      if (path !== undefined) removeSocketPath(path, fileId);
    },
    async *[Symbol.asyncIterator]() {
      try {
        for await (const conn of l) {
          yield path !== undefined
            ? unixConnection(wrap(conn), path)
            : wrap(conn);
        }
      } catch (err) {
        if (!closed) throw err;
      }
    },
  };
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
  return createServer(listen, "deno", options);
}
