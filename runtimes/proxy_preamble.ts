/**
 * PROXY protocol in front of implicit TLS, for `node:net` sockets: the
 * header comes in plaintext before the TLS handshake, so the shim reads it
 * before it starts TLS. Used by the `node:net` listener (and so by Deno
 * and Bun, which run it for implicit TLS behind a proxy).
 *
 * Bytes that came with the header (the start of the ClientHello) are put
 * back with `socket.unshift()`: `new tls.TLSSocket(socket)` feeds a
 * socket's buffered bytes to the handshake before it reads on.
 *
 * @example
 * ```ts
 * import * as net from "node:net";
 * import { readProxyPreamble } from "./proxy_preamble.ts";
 *
 * net.createServer(async (sock) => {
 *   const header = await readProxyPreamble(sock, {
 *     trusted: (a) => a === "127.0.0.1",
 *     maxV2Length: 4096,
 *   }, 30000);
 *   if (header === null) return; // refused and destroyed
 *   // sock is paused; the bytes after the header are still to be read
 * });
 * ```
 *
 * @module
 */

import type * as net from "node:net";
import type { ProxyHeader } from "../src/proxy.ts";
import {
  PREAMBLE_CLOSED,
  preambleTimedOut,
  ProxyPreamble,
} from "../src/proxy_preamble.ts";
import type { ProxyListenOptions } from "../src/transport.ts";
import type { RefusalCode } from "../src/stats.ts";
import { stripMapped } from "../src/cidr.ts";

/**
 * Reads a PROXY header from the start of `sock` (a peer not trusted is
 * refused before anything is read; on a Unix socket, `unix`, the peer is
 * `"unix"`). Resolves with the header, the socket
 * paused and any bytes after the header unshifted back into it; or with
 * `null` once the socket is destroyed and `onRefused` told why (untrusted
 * peer, bad or missing header, not complete within `timeoutMs`, peer
 * gone).
 *
 * @example
 * ```ts
 * import * as net from "node:net";
 * import { readProxyPreamble } from "./proxy_preamble.ts";
 *
 * net.createServer(async (sock) => {
 *   const header = await readProxyPreamble(sock, {
 *     trusted: () => true,
 *     maxV2Length: 4096,
 *   }, 30000);
 *   console.log(header?.command);
 * });
 * ```
 */
export function readProxyPreamble(
  sock: net.Socket,
  options: ProxyListenOptions,
  timeoutMs: number,
  unix = false,
): Promise<ProxyHeader | null> {
  // A Unix socket's peer has no address: it is "unix" (see unix_path.ts).
  if (!unix && sock.remoteAddress === undefined) {
    // Gone before it was accepted (a proxy's connect-only health check
    // resets at once): nothing to refuse, nothing to tell.
    sock.destroy();
    return Promise.resolve(null);
  }
  const peer = unix ? "unix" : stripMapped(sock.remoteAddress ?? "");
  if (!options.trusted(peer)) {
    sock.destroy();
    options.onRefused?.(
      peer,
      "PROXY header from an untrusted address",
      "proxy_untrusted",
    );
    return Promise.resolve(null);
  }
  return new Promise((resolve) => {
    const reader = new ProxyPreamble({ maxV2Length: options.maxV2Length });
    let done = false;
    const finish = (
      header: ProxyHeader | null,
      reason?: string,
      code?: RefusalCode,
    ): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.off("data", onData);
      sock.off("end", onEnd);
      sock.off("close", onEnd);
      sock.off("error", onEnd);
      if (header === null) {
        sock.destroy();
        options.onRefused?.(peer, reason!, code!);
      }
      resolve(header);
    };
    const onData = (chunk: Uint8Array): void => {
      const r = reader.push(chunk);
      switch (r.status) {
        case "incomplete":
          return;
        case "error":
          return finish(null, r.reason, "proxy_bad_header");
        case "ok":
          // Synchronously, before the next chunk: no byte may be lost.
          sock.pause();
          if (r.rest.length > 0) sock.unshift(r.rest);
          return finish(r.header);
        default:
          return ((x: never) => x)(r);
      }
    };
    const onEnd = (): void =>
      finish(null, PREAMBLE_CLOSED, "closed_before_greeting");
    const timer = setTimeout(
      () => finish(null, preambleTimedOut(timeoutMs), "proxy_timeout"),
      timeoutMs,
    );
    sock.on("data", onData);
    sock.once("end", onEnd);
    sock.once("close", onEnd);
    sock.once("error", onEnd);
  });
}
