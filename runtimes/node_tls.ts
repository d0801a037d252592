// `node:tls` for the listeners: the TLS options checked down to the PEM,
// the secure contexts (TlsConfig, replaceable while a listener runs), and
// the server side of a handshake over an accepted socket (STARTTLS,
// implicit TLS behind a proxy). Used by the Node shim (node_net.ts), and
// by the Deno and Bun shims for what their own TLS lacks.

import type * as nodeCrypto from "node:crypto";
import type * as net from "node:net";
import type * as tls from "node:tls";
import {
  checkTlsOptions,
  matchServerName,
  type TlsCertificate,
  type TlsInfo,
  type TlsOptions,
} from "../src/transport.ts";

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
export const preloaded: Promise<void> | null = getBuiltin
  ? null
  : Promise.all([import("node:tls"), import("node:crypto")]).then(
    ([t, c]) => void (builtins ??= { tls: t, crypto: c }),
  );
export function nodeTls(): Builtins {
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

/** What a secured socket tells of its TLS (the connection's `tls`). */
export function tlsInfo(sock: tls.TLSSocket): TlsInfo {
  const servername = (sock as tls.TLSSocket & { servername?: string | false })
    .servername;
  return {
    version: sock.getProtocol() ?? "unknown",
    cipher: sock.getCipher()?.name ?? "unknown",
    ...(servername ? { servername } : {}),
  };
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
export function serverHandshake<T>(
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
