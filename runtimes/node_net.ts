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

import * as net from "node:net";
import type * as tls from "node:tls";
import {
  type Connection,
  HANDSHAKE_TIMEOUT_MS,
  type Listener,
  type ListenOptions,
  type NetAddress,
} from "../src/transport.ts";
import {
  ACCEPT,
  ConnectionQueue,
  type DirectListener,
  fixedLocalAddr,
} from "../src/shim_kit.ts";
import { readProxyPreamble } from "./proxy_preamble.ts";
import { stripMapped } from "../src/cidr.ts";
import {
  nodeTls,
  preloaded,
  serverHandshake,
  TlsConfig,
  tlsInfo,
} from "./node_tls.ts";
import {
  canReuseReadBuffers,
  wrapAccepted,
  wrapPaused,
  wrapSocket,
} from "./node_connection.ts";

export { loadTlsOptions, noTls12Option, TlsConfig } from "./node_tls.ts";
export { useReusedReadBuffers, wrapSocket } from "./node_connection.ts";

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
