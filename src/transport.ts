/**
 * The structural interface between the driver and the runtime shims: a
 * listener yielding connections, each a pair of Web Streams plus addresses.
 * The shims in `runtimes/` implement it; nothing here knows a runtime.
 *
 * @module
 */

/** A network address. */
export interface NetAddress {
  /** IP address (or host name) as text, such as `"127.0.0.1"` or `"::1"`. */
  hostname: string;
  /** TCP port. */
  port: number;
}

/** What TLS negotiated on a connection. */
export interface TlsInfo {
  /** Protocol version, such as `"TLSv1.3"`. */
  version: string;
  /** Cipher suite name. */
  cipher: string;
  /** The server name the client asked for (SNI), if any. */
  servername?: string;
}

/**
 * One accepted connection, as a runtime shim hands it to the driver.
 *
 * - `readable` yields the bytes received; chunks are never reused by the
 *   shim (the engine keeps views of them).
 * - `writable` applies backpressure: `write()` resolves when the runtime has
 *   taken the bytes.
 *
 * @example
 * ```ts
 * import type { Connection } from "@smtpd/smtpd";
 *
 * async function echoOnce(conn: Connection): Promise<void> {
 *   const reader = conn.readable.getReader();
 *   const writer = conn.writable.getWriter();
 *   const { value } = await reader.read();
 *   if (value) await writer.write(value);
 *   conn.close();
 * }
 * ```
 */
export interface Connection {
  /** Bytes from the client. */
  readonly readable: ReadableStream<Uint8Array>;
  /** Bytes to the client. */
  readonly writable: WritableStream<Uint8Array>;
  /** The client's address. */
  readonly remoteAddr: NetAddress;
  /** The server's address on this connection. */
  readonly localAddr: NetAddress;
  /** TLS details when the connection is encrypted, else `null`. */
  readonly tls: TlsInfo | null;
  /**
   * Upgrades the connection to TLS in place (server side of STARTTLS), when
   * the listener was given a certificate: stops reading plaintext, writes
   * `reply` (the 220), discards any plaintext that arrived after the
   * STARTTLS line, and runs the handshake. The old `readable`/`writable`
   * must not be used afterwards; the returned connection carries new ones.
   */
  startTls?: (reply: Uint8Array) => Promise<Connection>;
  /**
   * Closes the connection (both directions). Idempotent. Bytes already
   * written still go out, within a bounded time (a peer that does not read
   * them cannot keep the socket open); with `abort`, they are dropped and
   * the socket closes at once.
   */
  close(abort?: boolean): void;
}

/**
 * A listening socket that yields connections.
 *
 * @example
 * ```ts
 * import type { Listener } from "@smtpd/smtpd";
 *
 * async function acceptAll(listener: Listener): Promise<void> {
 *   for await (const conn of listener) conn.close();
 * }
 * ```
 */
export interface Listener extends AsyncIterable<Connection> {
  /** The bound address (the real port when port 0 was asked for). */
  readonly addr: NetAddress;
  /** Stops accepting; open connections are not touched. */
  close(): void;
}

/** PEM material for TLS. */
export interface TlsOptions {
  /** PEM private key. */
  key: string;
  /** PEM certificate chain. */
  cert: string;
  /** PEM CA certificates (to verify client certificates), optional. */
  ca?: string;
  /** Lowest TLS version accepted. Default `"TLSv1.2"`. */
  minVersion?: "TLSv1.2" | "TLSv1.3";
}

/** What a runtime shim's `listen` is asked for. */
export interface ListenOptions {
  /** Interface to bind. */
  hostname: string;
  /** Port to bind; 0 picks a free one. */
  port: number;
  /** Certificate for STARTTLS (and for `implicitTls`). */
  tls?: TlsOptions;
  /** TLS from the first byte (RFC 8314, port 465 style). */
  implicitTls?: boolean;
}

/** A runtime shim: opens a {@link Listener}. */
export type ListenFn = (options: ListenOptions) => Promise<Listener>;
