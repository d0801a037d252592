/**
 * The {@link Session} the hooks see, kept by the driver: its own fields
 * (addresses, counters, the PROXY header) and, written by the one place
 * that owns them, what the protocol decides (the HELO name, ESMTP, the
 * user, whether the connection is encrypted): the engine's state.
 *
 * @module
 */

import type { Session, SessionProxy } from "./session.ts";
import type { SessionView } from "./engine.ts";
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
const idBase = [
  Math.floor(Math.random() * 0x100000000).toString(16).padStart(8, "0"),
  Date.now().toString(36),
].join("");

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
  // join() makes one flat string; `+` a rope on JavaScriptCore (a cell
  // for the counter's digits besides, kept with every session) and a
  // cons string on V8 (its pieces kept: 36 bytes against 32 flat).
  return [idBase, (++idCounter).toString(36)].join("");
}

/**
 * {@link newId} for a message: joined with `+`, a third of join()'s cost
 * on JavaScriptCore (about 60 ns per message). The rope or cons string
 * is flattened when the 250 reply copies the id out character by
 * character (`SmtpEngine.acceptQueued`), and a message is not kept by an
 * idle session.
 *
 * @example
 * ```ts
 * import { newMessageId } from "./session_state.ts";
 *
 * newMessageId() !== newMessageId(); // true
 * ```
 */
export function newMessageId(): string {
  return idBase + (++idCounter).toString(36);
}

/**
 * The mutable side of a {@link Session}. What the protocol decides (the
 * HELO name, ESMTP, the user, whether the connection is encrypted) is the
 * engine's: the engine the session is given to as its view (the third
 * argument of `new SmtpEngine()`) writes it here whenever it changes.
 * Plain own data properties, not getters: a spread or `JSON.stringify` of
 * the session holds them, and opening a session defines no property (four
 * accessors per session cost Node 0.8 µs and JavaScriptCore four cells).
 *
 * @example
 * ```ts
 * import { SessionState } from "./session_state.ts";
 * import { SmtpEngine } from "./engine.ts";
 * import type { Connection } from "./transport.ts";
 *
 * declare const conn: Connection;
 * const session = new SessionState(conn, false);
 * const engine = new SmtpEngine({}, 0, session);
 * session.heloName; // the engine's: null before HELO
 * ```
 */
export class SessionState implements Session, SessionView {
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
  // The engine's (see SessionView), copied here as they change: a write
  // by the application changes this copy only, never what the engine decides.
  heloName: string | null = null;
  esmtp = false;
  readonly lmtp: boolean;
  secure = false;
  tls: Session["tls"];
  user: string | null = null;
  messages = 0;
  transactions = 0;
  readonly openedAt: number = Date.now();
  proxy: SessionProxy | null = null;

  /**
   * The session of `conn`; the engine it is then given to as its view
   * fills in the protocol state.
   */
  constructor(conn: Connection, lmtp: boolean) {
    this.id = newId();
    this.lmtp = lmtp;
    this.remoteAddress = conn.remoteAddr.hostname;
    this.remotePort = conn.remoteAddr.port;
    this.localAddress = conn.localAddr.hostname;
    this.localPort = conn.localAddr.port;
    this.tls = conn.tls;
  }
}
