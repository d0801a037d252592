/**
 * Node shim: `node:net` (and `node:tls` for STARTTLS and implicit TLS)
 * adapted to the driver's {@link Listener}. Also used by the Deno shim when
 * STARTTLS is configured, since Deno has no server-side TLS upgrade.
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd/node";
 *
 * const server = await serve({ port: 2525, onMessage: (m) => console.log(m.from) });
 * ```
 *
 * @module
 */

import * as net from "node:net";
import * as tls from "node:tls";
import { createServer, type ServeOptions, type Server } from "../src/server.ts";
import type {
  Connection,
  Listener,
  ListenOptions,
  TlsInfo,
  TlsOptions,
} from "../src/transport.ts";

export * from "../mod.ts";

const HIGH_WATER_MARK = 64 * 1024;
/** How long a closed socket may take to deliver its last bytes. */
const CLOSE_GRACE_MS = 5000;

function secureContext(o: TlsOptions): tls.SecureContext {
  return tls.createSecureContext({
    key: o.key,
    cert: o.cert,
    ca: o.ca,
    minVersion: o.minVersion ?? "TLSv1.2",
  });
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

/** Adapts a connected `net.Socket` (or `tls.TLSSocket`) to a {@link Connection}. */
export function wrapSocket(
  sock: net.Socket,
  info: TlsInfo | null,
  tlsOptions: TlsOptions | undefined,
): Connection {
  sock.setNoDelay(true);
  let closing = false;
  let onData: ((d: Uint8Array) => void) | null = null;
  const readable = new ReadableStream<Uint8Array>({
    start(c) {
      onData = (d) => {
        c.enqueue(d);
        if ((c.desiredSize ?? 1) <= 0) sock.pause();
      };
      sock.on("data", onData);
      sock.once("end", () => {
        try {
          c.close();
        } catch { /* already closed */ }
      });
      sock.once("close", () => {
        try {
          c.close();
        } catch { /* already closed */ }
      });
    },
    pull() {
      sock.resume();
    },
    cancel() {
      sock.destroy();
    },
  }, { highWaterMark: HIGH_WATER_MARK, size: (c) => c.byteLength });
  sock.on("error", () => {/* surfaced as end of stream / failed write */});
  const writable = new WritableStream<Uint8Array>({
    write(chunk) {
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
    },
  });
  const conn: Connection = {
    readable,
    writable,
    remoteAddr: {
      hostname: stripMapped(sock.remoteAddress ?? ""),
      port: sock.remotePort ?? 0,
    },
    localAddr: {
      hostname: stripMapped(sock.localAddress ?? ""),
      port: sock.localPort ?? 0,
    },
    tls: info,
    close(abort) {
      if (sock.destroyed) return;
      if (abort) return void sock.destroy();
      if (closing) return;
      closing = true;
      sock.end(() => sock.destroy());
      // end() sends FIN only once Node's queue is written: a peer that does
      // not read would keep the socket (and its descriptor) for ever.
      const timer = setTimeout(() => sock.destroy(), CLOSE_GRACE_MS);
      sock.once("close", () => clearTimeout(timer));
    },
  };
  if (tlsOptions && info === null) {
    conn.startTls = (reply) =>
      new Promise<Connection>((resolve, reject) => {
        // Stop reading plaintext before the 220 goes out (RFC 3207 §4.2).
        if (onData) sock.off("data", onData);
        sock.pause();
        sock.removeAllListeners("end");
        sock.removeAllListeners("close");
        sock.write(reply, () => {
          // Plaintext sent after STARTTLS and before the handshake is dropped.
          while (sock.read() !== null) { /* discard */ }
          const secure = new tls.TLSSocket(sock, {
            isServer: true,
            secureContext: secureContext(tlsOptions),
          });
          secure.once("secure", () => {
            secure.off("error", reject);
            resolve(wrapSocket(secure, tlsInfo(secure), undefined));
          });
          secure.once("error", (err) => {
            secure.destroy();
            reject(err);
          });
        });
      });
  }
  return conn;
}

/** `::ffff:127.0.0.1` → `127.0.0.1`. */
function stripMapped(ip: string): string {
  return ip.startsWith("::ffff:") && ip.includes(".") ? ip.slice(7) : ip;
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
export function listen(options: ListenOptions): Promise<Listener> {
  const pending: Connection[] = [];
  let waiter: ((c: Connection | null) => void) | null = null;
  let closed = false;
  const push = (c: Connection) => {
    if (closed) return c.close();
    if (waiter) {
      const w = waiter;
      waiter = null;
      w(c);
    } else pending.push(c);
  };
  // allowHalfOpen: a client's FIN ends its input only, so the replies to
  // what it sent before (QUIT included) still go out. Without it Node ended
  // the socket on the FIN and every later reply was lost.
  const server = options.implicitTls && options.tls
    ? tls.createServer(
      {
        allowHalfOpen: true,
        key: options.tls.key,
        cert: options.tls.cert,
        ca: options.tls.ca,
        minVersion: options.tls.minVersion ?? "TLSv1.2",
      },
      (s) => push(wrapSocket(s, tlsInfo(s), undefined)),
    )
    : net.createServer(
      { allowHalfOpen: true },
      (s) => push(wrapSocket(s, null, options.tls)),
    );
  server.on(
    "tlsClientError",
    () => {/* failed handshake: nothing to deliver */},
  );
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.hostname, () => {
      server.off("error", reject);
      server.on("error", () => {});
      const a = server.address() as net.AddressInfo;
      resolve({
        addr: { hostname: a.address, port: a.port },
        close() {
          if (closed) return;
          closed = true;
          server.close();
          waiter?.(null);
          waiter = null;
        },
        async *[Symbol.asyncIterator]() {
          for (;;) {
            const c = pending.shift() ?? (closed ? null : await new Promise<
              Connection | null
            >((r) => (waiter = r)));
            if (c === null) return;
            yield c;
          }
        },
      });
    });
  });
}

/**
 * Starts an SMTP server on Node's `node:net` / `node:tls`.
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd/node";
 *
 * const server = await serve({ port: 0 });
 * console.log(server.addr.port);
 * await server.close();
 * ```
 */
export function serve(options: ServeOptions = {}): Promise<Server> {
  return createServer(listen, "node", options);
}
