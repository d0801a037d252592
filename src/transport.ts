/**
 * The structural interface between the driver and the runtime shims: a
 * listener yielding connections, each a pair of Web Streams plus addresses,
 * what a shim's `listen` is asked for, and the TLS options with their
 * validation. The shims in `runtimes/` implement it (with the toolkit in
 * `shim_kit.ts`); nothing here knows a runtime.
 *
 * @module
 */

import type { ProxyHeader } from "./proxy.ts";
import type { RefusalCode } from "./stats.ts";

/** A network address. */
export interface NetAddress {
  /** IP address (or host name) as text, such as `"127.0.0.1"` or `"::1"`. */
  hostname: string;
  /** TCP port (0 on a Unix domain socket). */
  port: number;
  /**
   * The socket file of a Unix domain socket listener (`serve({ path })`);
   * then `hostname` is `"unix"` and `port` is 0. Absent on TCP.
   */
  path?: string;
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
 * - `readable` yields the bytes received; `writable` applies backpressure
 *   (`write()` resolves when the runtime has taken the bytes).
 * - `read()` and `write()`, optional, are the same two directions without
 *   Web Streams: the driver uses them when both are present, and the
 *   streams otherwise. A shim that has them builds `readable`/`writable`
 *   only when someone asks (over `read()`/`write()`). Use one side or the
 *   other on a connection, never both.
 *
 * Ownership of chunks: a chunk handed out by `read()` is lent: it stays
 * valid until the next `read()` call (or `readDone()`), and the shim may
 * then read into the same memory again (node:net's `onread`,
 * `Deno.Conn.read` into a buffer of the connection's own). The driver
 * copies what it keeps past that point (the part of a command line still
 * waiting for its CRLF, body bytes the application has not taken yet). A
 * chunk of `readable` belongs to its reader (a copy). A chunk given to
 * `write()` or `writable` must not be changed by the caller until the
 * write has settled (the runtime may still be sending it); the shim must
 * neither change nor transfer it (no `enqueue()` into a byte stream, no
 * `postMessage` transfer): the driver writes the bytes of frequent fixed
 * replies from one array that every session shares.
 *
 * @example
 * ```ts
 * import type { Connection } from "@smtpd/smtpd/transport";
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
   * The PROXY protocol header, when the shim read it itself (implicit TLS
   * with {@link ListenOptions.proxyProtocol}: the header comes before the
   * handshake). `remoteAddr` stays the real peer (the proxy). Absent when
   * the shim did not read one: with PROXY protocol on, the driver then
   * reads the header from `readable` before the greeting.
   */
  readonly proxy?: ProxyHeader;
  /**
   * Upgrades the connection to TLS in place (server side of STARTTLS), when
   * the listener was given a certificate: stops reading plaintext, writes
   * `reply` (the 220), discards any plaintext that arrived after the
   * STARTTLS line, and runs the handshake. The old `readable`/`writable`
   * must not be used afterwards; the returned connection carries new ones.
   * Rejects, with the connection closed, when the handshake fails, does
   * not complete within the listener's `handshakeTimeout`, the client
   * leaves, or `close()` is called on this connection meanwhile.
   */
  startTls?: (reply: Uint8Array) => Promise<Connection>;
  /**
   * The next bytes received, optional (see above): the chunk itself when
   * some are already buffered (no promise), else a promise of it; `null`
   * at the end of input (the client's FIN, an error, `close()`). One read
   * at a time. The chunk is lent until the next call (see above).
   */
  read?(): Uint8Array | null | Promise<Uint8Array | null>;
  /**
   * Optional: the caller is done with every chunk `read()` lent and will
   * read no more (the driver, as a session ends). A shim may then reuse
   * the memory of those chunks (give its read buffers to other
   * connections) once the socket can no longer read into it.
   */
  readDone?(): void;
  /**
   * Optional hint: a message body is coming (DATA or BDAT was accepted),
   * so the next reads may be larger than commands are. A shim that reads
   * into buffers of its own may size its next read buffer for a body
   * (a small message's body then comes in one read, not two). Changes
   * nothing else: `read()` behaves as before.
   */
  expectBody?(): void;
  /**
   * Sends `bytes`, optional (see above): `undefined` when the runtime took
   * them at once, else a promise that resolves once it has (backpressure)
   * or rejects when the connection is closed. Writes go out in call order.
   * Throws when the connection is already closed.
   */
  write?(bytes: Uint8Array): void | Promise<void>;
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
 * import type { Listener } from "@smtpd/smtpd/transport";
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
  /**
   * Replaces the TLS options (certificate, key, CA, minimum version, SNI
   * certificates) for every handshake from now on: new implicit-TLS
   * connections and STARTTLS upgrades. Sessions already encrypted keep
   * theirs. Validates first: on a bad option it throws a `TypeError` (or
   * the TLS library's error for unusable PEM) and keeps the old ones.
   * Present only on a listener opened with `tls`.
   */
  setTls?(tls: TlsOptions): void;
}

/** A certificate and its key, in PEM. */
export interface TlsCertificate {
  /** PEM private key. */
  key: string;
  /** PEM certificate chain (the server's certificate first). */
  cert: string;
}

/**
 * PEM material for TLS.
 *
 * @example
 * ```ts
 * import type { TlsOptions } from "@smtpd/smtpd";
 *
 * declare function readPem(path: string): string;
 * const tls: TlsOptions = {
 *   key: readPem("/etc/ssl/private/mx.key"),
 *   cert: readPem("/etc/ssl/certs/mx.pem"),
 *   minVersion: "TLSv1.2",
 *   sni: {
 *     "mx.example.net": {
 *       key: readPem("/etc/ssl/private/net.key"),
 *       cert: readPem("/etc/ssl/certs/net.pem"),
 *     },
 *   },
 * };
 * ```
 */
export interface TlsOptions extends TlsCertificate {
  /**
   * PEM CA certificates, optional: the TLS library's trusted CAs. The
   * server does not ask clients for certificates (no mutual TLS).
   */
  ca?: string;
  /** Lowest TLS version accepted. Default `"TLSv1.2"`. */
  minVersion?: "TLSv1.2" | "TLSv1.3";
  /**
   * Certificates per server name (SNI): a client asking for one of these
   * names gets its certificate, any other client gets `key`/`cert`. A name
   * may start with `*.` to match one more label (`*.example.org` matches
   * `mx.example.org`). Matching ignores case.
   */
  sni?: Record<string, TlsCertificate>;
}

/** What a runtime shim's `listen` is asked for. */
export interface ListenOptions {
  /** Interface to bind. */
  hostname: string;
  /** Port to bind; 0 picks a free one. */
  port: number;
  /**
   * Listen on a Unix domain socket at this path instead (`hostname` and
   * `port` are then ignored): a stale socket file is replaced, a live
   * one or a file that is not a socket is refused, and the listener's
   * `close()` removes the file.
   */
  path?: string;
  /** Certificate for STARTTLS (and for `implicitTls`). */
  tls?: TlsOptions;
  /** TLS from the first byte (RFC 8314, port 465 style). */
  implicitTls?: boolean;
  /**
   * Milliseconds a client may take to complete a TLS handshake (implicit
   * TLS or after STARTTLS) before the connection is closed. Default 30000.
   */
  handshakeTimeout?: number;
  /**
   * PROXY protocol in front of implicit TLS: each connection must start
   * with a PROXY header (plaintext) before the TLS handshake. The shim
   * reads it (within `handshakeTimeout`), runs the handshake on the bytes
   * after it, and hands out the connection with `proxy` set. Shims ignore
   * this for plaintext listeners: the driver reads the header there.
   */
  proxyProtocol?: ProxyListenOptions;
  /**
   * Sets `SO_REUSEPORT` on the listening socket (Linux; also FreeBSD on
   * Node), so that several processes can listen on the same port and the
   * kernel spreads new connections among them. Default `false`.
   */
  reusePort?: boolean;
  /** Told about each failed implicit-TLS handshake (for the counts). */
  onTlsFailure?(): void;
}

/**
 * What a shim needs to read PROXY headers (see
 * {@link ListenOptions.proxyProtocol}).
 *
 * @example
 * ```ts
 * import type { ProxyListenOptions } from "@smtpd/smtpd/transport";
 *
 * const proxyProtocol: ProxyListenOptions = {
 *   trusted: (address) => address === "127.0.0.1",
 *   maxV2Length: 4096,
 *   onRefused: (address, reason, code) => console.warn(address, reason, code),
 * };
 * ```
 */
export interface ProxyListenOptions {
  /** Whether the peer at this address may send a header (others are closed at once). */
  trusted(address: string): boolean;
  /** Largest v2 header accepted, in bytes. */
  maxV2Length: number;
  /**
   * Told about each connection closed before the handshake (untrusted,
   * bad header, timeout, closed): why in prose for the log, and the code
   * it is counted under.
   */
  onRefused?(remoteAddress: string, reason: string, code: RefusalCode): void;
}

/** Default of {@link ListenOptions.handshakeTimeout}. */
export const HANDSHAKE_TIMEOUT_MS = 30000;

const PEM = /-----BEGIN [A-Z0-9 ]+-----/;

function checkPem(value: unknown, what: string, label: string): string {
  if (typeof value !== "string") {
    throw new TypeError(`Cannot use option ${what}: value is not a string`);
  }
  if (!PEM.test(value)) {
    throw new TypeError(`Cannot use option ${what}: value is not PEM ${label}`);
  }
  return value;
}

/**
 * Validates {@link TlsOptions} (types and PEM framing; whether the PEM
 * parses is for the TLS library to say) and returns a copy holding only
 * the known fields. Throws a `TypeError` naming the bad option.
 *
 * @example
 * ```ts
 * import { checkTlsOptions } from "@smtpd/smtpd/transport";
 *
 * try {
 *   checkTlsOptions({ key: "", cert: "" });
 * } catch (err) {
 *   console.log((err as TypeError).message); // Cannot use option tls.key: value is not PEM text
 * }
 * ```
 */
export function checkTlsOptions(tls: unknown, what = "tls"): TlsOptions {
  if (typeof tls !== "object" || tls === null) {
    throw new TypeError(`Cannot use option ${what}: value is not an object`);
  }
  const o = tls as Record<string, unknown>;
  const out: TlsOptions = {
    key: checkPem(o.key, `${what}.key`, "text"),
    cert: checkPem(o.cert, `${what}.cert`, "text"),
  };
  if (o.ca !== undefined) out.ca = checkPem(o.ca, `${what}.ca`, "text");
  if (o.minVersion !== undefined) {
    if (o.minVersion !== "TLSv1.2" && o.minVersion !== "TLSv1.3") {
      throw new TypeError(
        `Cannot use option ${what}.minVersion: value is not "TLSv1.2" or "TLSv1.3"`,
      );
    }
    out.minVersion = o.minVersion;
  }
  if (o.sni !== undefined) {
    if (typeof o.sni !== "object" || o.sni === null || Array.isArray(o.sni)) {
      throw new TypeError(
        `Cannot use option ${what}.sni: value is not an object`,
      );
    }
    const sni: Record<string, TlsCertificate> = {};
    for (const [name, entry] of Object.entries(o.sni)) {
      if (!/^(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$/.test(name)) {
        throw new TypeError(
          `Cannot use option ${what}.sni: ${
            JSON.stringify(name)
          } is not a host name`,
        );
      }
      const w = `${what}.sni[${JSON.stringify(name)}]`;
      if (typeof entry !== "object" || entry === null) {
        throw new TypeError(`Cannot use option ${w}: value is not an object`);
      }
      const e = entry as Record<string, unknown>;
      sni[name.toLowerCase()] = {
        key: checkPem(e.key, `${w}.key`, "text"),
        cert: checkPem(e.cert, `${w}.cert`, "text"),
      };
    }
    out.sni = sni;
  }
  return out;
}

/**
 * Finds the entry for a server name in a table keyed by lower-case names
 * and `*.` wildcards (as in {@link TlsOptions.sni}): the exact name first,
 * then the wildcard one label up. `undefined` when nothing matches.
 *
 * @example
 * ```ts
 * import { matchServerName } from "@smtpd/smtpd/transport";
 *
 * const table = new Map([["*.example.org", 1], ["example.org", 2]]);
 * matchServerName(table, "MX.example.org"); // 1
 * matchServerName(table, "a.b.example.org"); // undefined
 * ```
 */
export function matchServerName<T>(
  table: ReadonlyMap<string, T>,
  name: string | null | undefined,
): T | undefined {
  if (!name) return undefined;
  const n = name.toLowerCase().replace(/\.$/, "");
  const exact = table.get(n);
  if (exact !== undefined) return exact;
  const dot = n.indexOf(".");
  return dot > 0 ? table.get(`*${n.slice(dot)}`) : undefined;
}

/** A runtime shim: opens a {@link Listener}. */
export type ListenFn = (options: ListenOptions) => Promise<Listener>;
