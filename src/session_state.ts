/**
 * The {@link Session} the hooks see, kept by the driver: its own fields
 * (addresses, counters, the PROXY header) and, read from the one place
 * that owns them, what the protocol decides (the HELO name, ESMTP, the
 * user, whether the connection is encrypted): the engine's state.
 *
 * @module
 */

import type { Session, SessionProxy } from "./session.ts";
import type { Connection } from "./transport.ts";
import type { ReverseDnsResult } from "./rdns.ts";

let idCounter = 0;
/**
 * Random per process, then the time the process started: ids stay unique
 * across processes and restarts; a counter tells them apart within one.
 * (Formatting the clock for every id cost up to 0.9 µs per message.)
 * `Math.random`: ids need to be unique, not secret, and the Web Crypto
 * global costs Node 1.5–3 MB of RSS when first used.
 */
const idBase = Math.floor(Math.random() * 0x100000000).toString(16)
  .padStart(8, "0") + Date.now().toString(36);

/**
 * A new session or message id, unique across processes.
 *
 * @example
 * ```ts
 * import { newId } from "./session_state.ts";
 *
 * newId() !== newId(); // true
 * ```
 */
export function newId(): string {
  return idBase + (++idCounter).toString(36);
}

/** Where a session's protocol state lives: the connection's engine. */
export interface SessionSource {
  /** The name the client gave with HELO/EHLO/LHLO, or `null`. */
  readonly heloName: string | null;
  /** Whether the client greeted with EHLO (or LHLO). */
  readonly esmtp: boolean;
  /** Whether the connection is encrypted. */
  readonly secure: boolean;
  /** The authenticated user, or `null`. */
  readonly user: string | null;
}

/**
 * The mutable side of a {@link Session}.
 *
 * @example
 * ```ts
 * import { SessionState } from "./session_state.ts";
 * import { SmtpEngine } from "./engine.ts";
 * import type { Connection } from "./transport.ts";
 *
 * declare const conn: Connection;
 * const engine = new SmtpEngine();
 * const session = new SessionState(conn, engine, false);
 * session.heloName; // the engine's: null before HELO
 * ```
 */
export class SessionState implements Session {
  readonly id: string;
  // Own data properties, not getters on the prototype: applications may
  // spread or serialize the session. Behind a PROXY protocol proxy, the
  // driver sets the addresses from the header before the greeting.
  remoteAddress: string;
  remotePort: number;
  // Set by the driver before the greeting when reverseDns is on.
  clientHostname: string | null = null;
  reverseDns: ReverseDnsResult | null = null;
  readonly localAddress: string;
  readonly localPort: number;
  declare readonly heloName: string | null;
  declare readonly esmtp: boolean;
  readonly lmtp: boolean;
  declare readonly secure: boolean;
  tls: Session["tls"];
  declare readonly user: string | null;
  messages = 0;
  transactions = 0;
  readonly openedAt: number = Date.now();
  proxy: SessionProxy | null = null;
  #source: SessionSource;

  /**
   * The engine's part, as own enumerable properties (a spread or
   * `JSON.stringify` of the session still holds them) whose getters read
   * the engine: one owner, no copy to keep up to date. One descriptor per
   * key, made once: four defineProperty() calls cost half of one
   * defineProperties() with a descriptor map (0.3 µs a session on Node).
   */
  static readonly #fromSource: readonly [string, PropertyDescriptor][] =
    (["heloName", "esmtp", "secure", "user"] as const).map((key) => [key, {
      enumerable: true,
      get(this: SessionState) {
        return this.#source[key];
      },
    }]);

  /** The session of `conn`, whose protocol state `source` (its engine) owns. */
  constructor(conn: Connection, source: SessionSource, lmtp: boolean) {
    this.id = newId();
    this.#source = source;
    this.lmtp = lmtp;
    this.remoteAddress = conn.remoteAddr.hostname;
    this.remotePort = conn.remoteAddr.port;
    this.localAddress = conn.localAddr.hostname;
    this.localPort = conn.localAddr.port;
    this.tls = conn.tls;
    const d = SessionState.#fromSource;
    for (let i = 0; i < d.length; i++) {
      Object.defineProperty(this, d[i][0], d[i][1]);
    }
  }
}
