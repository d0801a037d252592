/**
 * A connection's preamble, before the greeting: the PROXY protocol
 * header (fed to the sans-IO {@link ProxyPreamble} reader), the count
 * per client address (maxConnectionsPerIp), the reverse DNS lookup, and
 * greetingDelay with its early-talker check; and the refusals that end a
 * connection before a session.
 *
 * @module
 */

import type { SmtpEngine } from "./engine.ts";
import { clientKey } from "./limits.ts";
import { stripMapped } from "./cidr.ts";
import type { ProxyHeader } from "./proxy.ts";
import {
  PREAMBLE_CLOSED,
  preambleTimedOut,
  ProxyPreamble,
} from "./proxy_preamble.ts";
import type { SessionProxy } from "./session.ts";
import type { ReverseDnsResult } from "./rdns.ts";
import type { Connection } from "./transport.ts";
import type { DriverHost } from "./host.ts";
import type { RefusalCode } from "./stats.ts";
import { isThenable } from "./hooks.ts";
import { now } from "./deadlines.ts";

const EMPTY = new Uint8Array(0);

/**
 * What the preamble needs of a connection's driver.
 *
 * @example
 * ```ts
 * import { preamble, type PreambleDriver } from "./preamble.ts";
 *
 * declare const driver: PreambleDriver;
 * if (!(await preamble(driver))) console.log("refused");
 * ```
 */
export interface PreambleDriver {
  readonly host: DriverHost;
  readonly conn: Connection;
  readonly io: {
    read(): Uint8Array | null | Promise<Uint8Array | null>;
    write(bytes: Uint8Array): void | Promise<void>;
  };
  readonly engine: SmtpEngine;
  readonly session: {
    remoteAddress: string;
    remotePort: number;
    proxy: SessionProxy | null;
    clientHostname: string | null;
    reverseDns: ReverseDnsResult | null;
  };
  /** The server is closing. */
  readonly closing: boolean;
  /** Set while the preamble runs (a shutdown then closes at once). */
  inPreamble: boolean;
  /** A read started before the greeting, for the loop to take over. */
  pendingRead: Promise<Uint8Array | null> | null;
  /** The key counted for maxConnectionsPerIp (null: not counted). */
  countedIp: string | null;
}

/**
 * Sends one last reply line, then closes: the refusals before a session
 * (421 too many connections, 554 early talker). `write` is the driver's
 * when it already holds the connection, else the shim's (or its
 * stream's); a closed socket throws or rejects, and either way the
 * connection is closed.
 *
 * @example
 * ```ts
 * import { replyAndClose } from "./preamble.ts";
 * import type { Connection } from "./transport.ts";
 *
 * declare const conn: Connection;
 * replyAndClose(conn, "421 4.7.0 mx Too many connections, try again later");
 * ```
 */
export function replyAndClose(
  conn: Connection,
  line: string,
  write?: (bytes: Uint8Array) => void | Promise<void>,
): void {
  const bytes = new TextEncoder().encode(`${line}\r\n`);
  new Promise<void>((resolve) =>
    resolve(
      write !== undefined
        ? write(bytes)
        : conn.write !== undefined
        ? conn.write(bytes)
        : conn.writable.getWriter().write(bytes),
    )
  ).catch(() => {}).finally(() => conn.close());
}

/**
 * Before the greeting: the PROXY header (read here for plaintext, or
 * taken from the shim for implicit TLS), the per-IP count by the
 * client's real address, then the reverse DNS lookup and greetingDelay
 * side by side (the greeting waits for both). Returns false when the
 * connection was refused (a `refused` log entry; no session hooks, no
 * connect/close entries) and is closed.
 *
 * @example
 * ```ts
 * import { preamble, type PreambleDriver } from "./preamble.ts";
 *
 * declare const driver: PreambleDriver;
 * await preamble(driver);
 * ```
 */
export async function preamble(d: PreambleDriver): Promise<boolean> {
  const o = d.host.options;
  d.inPreamble = true;
  let rest: Uint8Array = EMPTY;
  try {
    if (o.proxyProtocol !== null) {
      if (d.conn.proxy !== undefined) useProxy(d, d.conn.proxy);
      else {
        const r = await readProxyHeader(d, o.proxyProtocol.maxV2Length);
        if (r === null) return false;
        rest = r;
      }
    }
    if (!(await claimIp(d))) return false;
    const lookup = reverseDns(d);
    if (o.greetingDelay > 0 || lookup !== null) {
      if (!(await holdGreeting(d, o.greetingDelay, lookup, rest))) {
        return false;
      }
    }
  } finally {
    d.inPreamble = false;
  }
  if (d.closing) {
    refused(d, "shutdown", "server shutting down");
    d.conn.close();
    return false;
  }
  // The client's idle time starts now; bytes after the header are its.
  d.engine.receive(rest, now());
  return true;
}

/** A refusal of this connection: counted and logged by the server. */
function refused(d: PreambleDriver, code: RefusalCode, reason: string): void {
  d.host.refused(d.session.remoteAddress, code, reason);
}

/** Reads the PROXY header; returns the bytes after it, or null (refused, closed). */
async function readProxyHeader(
  d: PreambleDriver,
  maxV2Length: number,
): Promise<Uint8Array | null> {
  const ms = d.host.options.handshakeTimeout;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    d.conn.close(true);
  }, ms);
  const reader = new ProxyPreamble({ maxV2Length });
  try {
    for (;;) {
      let chunk: Uint8Array | null;
      try {
        chunk = await d.io.read();
      } catch {
        chunk = null;
      }
      if (chunk === null) {
        if (timedOut) refused(d, "proxy_timeout", preambleTimedOut(ms));
        else if (d.closing) refused(d, "shutdown", "server shutting down");
        else refused(d, "closed_before_greeting", PREAMBLE_CLOSED);
        d.conn.close(true);
        return null;
      }
      const p = reader.push(chunk);
      switch (p.status) {
        case "incomplete":
          continue;
        case "error":
          refused(d, "proxy_bad_header", p.reason);
          d.conn.close(true);
          return null;
        case "ok":
          useProxy(d, p.header);
          // Kept while the greeting waits (reads may come meanwhile): a
          // copy, see `Connection`'s ownership rule.
          return p.rest.length > 0 ? new Uint8Array(p.rest) : EMPTY;
        default:
          return ((x: never): never => x)(p);
      }
    }
  } finally {
    clearTimeout(timer);
  }
}

/** The session as the header tells it: the original client's address. */
function useProxy(d: PreambleDriver, h: ProxyHeader): void {
  const s = d.session;
  const peer = d.conn.remoteAddr;
  const relayed = h.command === "proxy" && h.family !== "unknown";
  s.proxy = {
    version: h.version,
    command: h.command,
    family: h.command === "local" ? "unknown" : h.family,
    address: peer.hostname,
    port: peer.port,
    source: relayed ? h.source : null,
    destination: relayed ? h.destination : null,
    // HAProxy's v1 checks name the check's own connection as the client.
    healthCheck: h.command === "local" ||
      (relayed && h.family !== "unix" &&
        stripMapped(h.source.address) === peer.hostname &&
        h.source.port === peer.port),
    tlvs: h.tlvs,
  };
  if (relayed && h.family !== "unix") {
    s.remoteAddress = stripMapped(h.source.address);
    s.remotePort = h.source.port;
  }
}

/**
 * Counts the connection for maxConnectionsPerIp; false: refused (421, closed).
 * A promise only when the host counts with one (a shared store): with the
 * local count, opening a session makes no promise here.
 *
 * @example
 * ```ts
 * import { claimIp, type PreambleDriver } from "./preamble.ts";
 *
 * declare const driver: PreambleDriver;
 * if (!(await claimIp(driver))) console.log("over the limit");
 * ```
 */
export function claimIp(d: PreambleDriver): boolean | Promise<boolean> {
  const key = clientKey(d.session.remoteAddress);
  const claimed = d.host.claimIp(key);
  return isThenable(claimed)
    ? claimLater(d, key, claimed)
    : claimedIp(d, key, claimed);
}

/**
 * claimIp with a count that is a promise. Apart from claimIp: a closure's
 * variables are allocated whenever the function that holds them runs.
 */
function claimLater(
  d: PreambleDriver,
  key: string,
  claimed: Promise<boolean>,
): Promise<boolean> {
  return claimed.then((ok) => claimedIp(d, key, ok));
}

/** The answer of the count per address (see claimIp). */
function claimedIp(d: PreambleDriver, key: string, claimed: boolean): boolean {
  if (!claimed) return overIpLimit(d);
  if (d.host.options.path === null) d.countedIp = key;
  return true;
}

/**
 * Refuses a connection over maxConnectionsPerIp. Apart from claimedIp: a
 * function whose variables a closure captures gets a scope object on the
 * heap at every call (JavaScriptCore), also when the closure is never
 * made; claimedIp runs for every connection.
 */
function overIpLimit(d: PreambleDriver): false {
  d.host.refuse(
    d.conn,
    d.session.remoteAddress,
    "too_many_connections_per_ip",
    "too many connections from this address",
    (bytes) => d.io.write(bytes),
  );
  return false;
}

/**
 * Starts the reverse DNS lookup of the client, which fills in the
 * session's `reverseDns` and `clientHostname` when it settles (it never
 * rejects, and settles by its timeout); null when reverseDns is off
 * (as on a Unix socket: see reverseDnsOf in server.ts), for a proxy's
 * health check or a header without the client's address.
 */
function reverseDns(d: PreambleDriver): Promise<void> | null {
  const rdns = d.host.reverseDns;
  const s = d.session;
  const proxy = s.proxy;
  if (
    rdns === null ||
    (proxy !== null && (proxy.healthCheck || proxy.source === null ||
      proxy.family === "unix"))
  ) return null;
  let lookup: Promise<ReverseDnsResult>;
  try {
    lookup = rdns.lookup(s.remoteAddress);
  } catch {
    return null; // no IP address (a peer gone before it was accepted)
  }
  return lookup.then((r) => {
    s.reverseDns = r;
    s.clientHostname = r.name;
  });
}

/**
 * Holds the greeting until `ms` have passed and `lookup` (if any) has
 * settled. With `ms` > 0, a client that sends anything first (`early`:
 * bytes that came after the PROXY header) gets 554 5.7.1 and is closed;
 * without, what it sends is read after the greeting, as it would be
 * without the wait. A client that leaves (or a shutdown, which closes
 * the connection) ends the wait. A read still pending when the wait ends
 * is the loop's.
 */
async function holdGreeting(
  d: PreambleDriver,
  ms: number,
  lookup: Promise<void> | null,
  early: Uint8Array,
): Promise<boolean> {
  // A chunk, null (the client left), or undefined (it kept quiet).
  let r: Uint8Array | null | undefined = ms > 0 && early.length > 0
    ? early
    : undefined;
  if (r === undefined) {
    const read = new Promise<Uint8Array | null>((resolve) =>
      resolve(d.io.read())
    ).catch(() => null);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const waits: Promise<unknown>[] = lookup === null ? [] : [lookup];
    if (ms > 0) {
      waits.push(
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, ms);
        }),
      );
    }
    const waited = Promise.all(waits).then(() => undefined);
    r = await Promise.race([read, waited]);
    // Without greetingDelay, talking first is no offence: its bytes wait
    // for the loop, after the greeting.
    if (r != null && ms === 0) r = await waited;
    clearTimeout(timer);
    if (r === undefined) {
      d.pendingRead = read;
      return true;
    }
  }
  if (r === null) {
    if (d.closing) refused(d, "shutdown", "server shutting down");
    else {
      refused(
        d,
        "closed_before_greeting",
        "connection closed before the greeting",
      );
    }
    d.conn.close(true);
    return false;
  }
  refused(d, "early_talker", "sent data before the greeting");
  replyAndClose(
    d.conn,
    `554 5.7.1 ${d.engine.options.serverName} Protocol error: talked before the greeting`,
    (bytes) => d.io.write(bytes),
  );
  return false;
}
