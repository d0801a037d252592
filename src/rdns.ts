/**
 * Forward-confirmed reverse DNS (FCrDNS) of a client address, as Postfix
 * does it: the address's PTR names are looked up, and a name counts only
 * when one of its A (IPv4) or AAAA (IPv6) records is the client's address
 * again. The confirmed name is the client's name; otherwise the name is
 * `unknown`, as in Postfix's `client_name`, with the first PTR name kept
 * apart (Postfix's `reverse_client_name`) so that a PTR that does not
 * resolve back is told from no PTR at all.
 *
 * This module holds no runtime code: the DNS queries go through a
 * {@link DnsResolver} that the runtime supplies (`runtimes/dns.ts` makes
 * one on Deno, Bun and Node). {@link ReverseDns} adds an overall timeout,
 * a bounded cache with positive and negative entries, and one lookup per
 * address however many sessions ask for it at once.
 *
 * @example
 * ```ts
 * import { ReverseDns } from "./rdns.ts";
 *
 * const rdns = new ReverseDns({
 *   reverse: () => Promise.resolve(["mail.example.org"]),
 *   resolve4: () => Promise.resolve(["192.0.2.1"]),
 *   resolve6: () => Promise.resolve([]),
 * });
 * (await rdns.lookup("192.0.2.1")).name; // "mail.example.org"
 * ```
 *
 * @module
 */

import { checkKeys } from "./keys.ts";
import { limitOption } from "./options.ts";
import { formatIp, parseIp, stripMapped } from "./cidr.ts";

/**
 * The three DNS queries FCrDNS needs. Each resolves with the names or
 * addresses found, with `[]` when the name does not exist or has no record
 * of that type (NXDOMAIN, NODATA), and rejects on a temporary failure
 * (timeout, SERVFAIL, refused, unreachable server). When `signal` aborts,
 * the query should stop and reject.
 *
 * @example
 * ```ts
 * import type { DnsResolver } from "./rdns.ts";
 *
 * const none: DnsResolver = {
 *   reverse: () => Promise.resolve([]),
 *   resolve4: () => Promise.resolve([]),
 *   resolve6: () => Promise.resolve([]),
 * };
 * ```
 */
export interface DnsResolver {
  /** PTR names of an IPv4 or IPv6 address (text form). */
  reverse(address: string, signal: AbortSignal): Promise<string[]>;
  /** A records of a name, as dotted quads. */
  resolve4(name: string, signal: AbortSignal): Promise<string[]>;
  /** AAAA records of a name, as IPv6 text. */
  resolve6(name: string, signal: AbortSignal): Promise<string[]>;
}

/**
 * Makes the {@link DnsResolver} of a server's `reverseDns`, asking
 * `dnsServers` when given (else the system's servers): what a runtime
 * gives `createServer` (`runtimes/dns.ts`'s `createResolver` on Deno, Bun
 * and Node).
 *
 * @example
 * ```ts
 * import type { DnsResolverFactory } from "./rdns.ts";
 *
 * const nothing: DnsResolverFactory = () => ({
 *   reverse: () => Promise.resolve([]),
 *   resolve4: () => Promise.resolve([]),
 *   resolve6: () => Promise.resolve([]),
 * });
 * ```
 */
export type DnsResolverFactory = (
  options: { dnsServers?: readonly string[] },
) => DnsResolver | Promise<DnsResolver>;

/**
 * How the lookup of a client address ended:
 * - `confirmed`: a PTR name resolves back to the address (`name` is it);
 * - `unconfirmed`: PTR names exist but none resolves back to the address
 *   (forged or stale); `name` is `unknown`, `reverseName` the first PTR;
 * - `none`: the address has no PTR record;
 * - `tempfail`: a query failed or the lookup ran out of time; Postfix
 *   answers such clients with 4xx where it requires a name.
 *
 * @example
 * ```ts
 * import type { ReverseDnsStatus } from "./rdns.ts";
 *
 * const status: ReverseDnsStatus = "confirmed";
 * ```
 */
export type ReverseDnsStatus =
  | "confirmed"
  | "unconfirmed"
  | "none"
  | "tempfail";

/**
 * The outcome of a FCrDNS lookup.
 *
 * @example
 * ```ts
 * import type { ReverseDnsResult } from "./rdns.ts";
 *
 * const r: ReverseDnsResult = {
 *   address: "192.0.2.1",
 *   status: "unconfirmed",
 *   name: "unknown",
 *   reverseName: "forged.example.org",
 *   ptrNames: ["forged.example.org"],
 * };
 * ```
 */
export interface ReverseDnsResult {
  /** The client address, canonical (IPv4-mapped IPv6 as plain IPv4). */
  readonly address: string;
  /** How the lookup ended. */
  readonly status: ReverseDnsStatus;
  /** The forward-confirmed name (lower case, no final dot), else `unknown`. */
  readonly name: string;
  /** The first PTR name, confirmed or not, else `unknown`. */
  readonly reverseName: string;
  /** Every well-formed PTR name found (at most {@link MAX_PTR_NAMES}), also before a timeout. */
  readonly ptrNames: readonly string[];
}

/**
 * Options of {@link ReverseDns}. Times are in milliseconds.
 *
 * @example
 * ```ts
 * import type { ReverseDnsOptions } from "./rdns.ts";
 *
 * const options: ReverseDnsOptions = { timeout: 3000, cacheSize: 10000 };
 * ```
 */
export interface ReverseDnsOptions {
  /** Time for the whole lookup (PTR and forward queries). Default 5000. */
  timeout?: number;
  /** Most addresses kept in the cache; 0 switches it off. Default 1000. */
  cacheSize?: number;
  /** How long a `confirmed` or `unconfirmed` result is kept. Default 3600000 (1 h). */
  cacheTtl?: number;
  /** How long a `none` or `tempfail` result is kept. Default 60000. */
  negativeCacheTtl?: number;
  /** The clock the cache uses (tests replace it). Default `Date.now`. */
  now?: () => number;
}

/** The most PTR names of one address that are checked forward. */
export const MAX_PTR_NAMES = 10;

/** The defaults of {@link ReverseDnsOptions}. */
export const REVERSE_DNS_DEFAULTS: {
  readonly timeout: number;
  readonly cacheSize: number;
  readonly cacheTtl: number;
  readonly negativeCacheTtl: number;
} = Object.freeze({
  timeout: 5000,
  cacheSize: 1000,
  cacheTtl: 3_600_000,
  negativeCacheTtl: 60_000,
});

const OPTION_KEYS: ReadonlySet<string> = new Set([
  "timeout",
  "cacheSize",
  "cacheTtl",
  "negativeCacheTtl",
  "now",
]);

interface Entry {
  result: ReverseDnsResult;
  expires: number;
}

/**
 * FCrDNS lookups through a {@link DnsResolver}, with an overall timeout, a
 * cache bounded in size (least recently used out first) and in time, and
 * concurrent lookups of one address coalesced into one. A lookup never
 * rejects: a failure or the timeout gives `tempfail`.
 *
 * @example
 * ```ts
 * import { ReverseDns } from "./rdns.ts";
 *
 * const rdns = new ReverseDns({
 *   reverse: () => Promise.resolve(["forged.example.org"]),
 *   resolve4: () => Promise.resolve(["198.51.100.7"]),
 *   resolve6: () => Promise.resolve([]),
 * }, { timeout: 2000 });
 * const r = await rdns.lookup("192.0.2.1");
 * r.status; // "unconfirmed"
 * r.name; // "unknown"
 * r.reverseName; // "forged.example.org"
 * ```
 */
export class ReverseDns {
  readonly #resolver: DnsResolver;
  readonly #timeout: number;
  readonly #cacheSize: number;
  readonly #cacheTtl: number;
  readonly #negativeTtl: number;
  readonly #now: () => number;
  readonly #cache = new Map<string, Entry>();
  readonly #pending = new Map<string, Promise<ReverseDnsResult>>();

  /**
   * Throws a `TypeError` for a resolver that lacks a method and for an
   * option that is unknown or out of range.
   */
  constructor(resolver: DnsResolver, options: ReverseDnsOptions = {}) {
    if (
      resolver === null || typeof resolver !== "object" ||
      typeof resolver.reverse !== "function" ||
      typeof resolver.resolve4 !== "function" ||
      typeof resolver.resolve6 !== "function"
    ) {
      throw new TypeError(
        "Cannot use resolver: value lacks reverse, resolve4 or resolve6",
      );
    }
    if (options === null || typeof options !== "object") {
      throw new TypeError("Cannot use options: value is not an object");
    }
    checkKeys(options, OPTION_KEYS);
    const d = REVERSE_DNS_DEFAULTS;
    this.#resolver = resolver;
    this.#timeout = limitOption("timeout", options.timeout, d.timeout);
    this.#cacheSize = limitOption("cacheSize", options.cacheSize, d.cacheSize, {
      min: 0,
    });
    this.#cacheTtl = limitOption("cacheTtl", options.cacheTtl, d.cacheTtl, {
      min: 0,
    });
    this.#negativeTtl = limitOption(
      "negativeCacheTtl",
      options.negativeCacheTtl,
      d.negativeCacheTtl,
      { min: 0 },
    );
    if (options.now !== undefined && typeof options.now !== "function") {
      throw new TypeError("Cannot use option now: value is not a function");
    }
    this.#now = options.now ?? Date.now;
  }

  /** How many addresses the cache holds now. */
  get size(): number {
    return this.#cache.size;
  }

  /** Empties the cache (lookups under way still finish). */
  clear(): void {
    this.#cache.clear();
  }

  /**
   * Looks up `address` (IPv4, IPv6, or IPv4-mapped IPv6 text); resolves
   * within the timeout, from the cache when it may. Throws a `TypeError`
   * for text that is not an IP address.
   */
  lookup(address: string): Promise<ReverseDnsResult> {
    const bytes = typeof address === "string"
      ? parseIp(stripMapped(address))
      : null;
    if (bytes === null) {
      throw new TypeError(
        `Cannot look up reverse DNS: ${String(address)} is not an IP address`,
      );
    }
    const key = formatIp(bytes);
    const hit = this.#cache.get(key);
    if (hit !== undefined) {
      this.#cache.delete(key);
      if (hit.expires > this.#now()) {
        this.#cache.set(key, hit);
        return Promise.resolve(hit.result);
      }
    }
    const pending = this.#pending.get(key);
    if (pending !== undefined) return pending;
    const p = this.#run(key, bytes.length === 4).then((result) => {
      this.#pending.delete(key);
      this.#store(key, result);
      return result;
    });
    this.#pending.set(key, p);
    return p;
  }

  #store(key: string, result: ReverseDnsResult): void {
    const positive = result.status === "confirmed" ||
      result.status === "unconfirmed";
    const ttl = positive ? this.#cacheTtl : this.#negativeTtl;
    if (this.#cacheSize === 0 || ttl === 0) return;
    this.#cache.set(key, { result, expires: this.#now() + ttl });
    while (this.#cache.size > this.#cacheSize) {
      this.#cache.delete(this.#cache.keys().next().value!);
    }
  }

  async #run(address: string, v4: boolean): Promise<ReverseDnsResult> {
    const abort = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<null>((resolve) => {
      timer = setTimeout(() => {
        abort.abort();
        resolve(null);
      }, this.#timeout);
    });
    // The PTR names found before a timeout or a failure are kept.
    const names: string[] = [];
    try {
      const work = fcrdns(this.#resolver, address, v4, abort.signal, names);
      // A query that ignores the signal and rejects later is not unhandled.
      work.catch(() => {});
      return (await Promise.race([work, timedOut])) ??
        result(address, "tempfail", names);
    } catch {
      return result(address, "tempfail", names);
    } finally {
      clearTimeout(timer);
      abort.abort();
    }
  }
}

function result(
  address: string,
  status: ReverseDnsStatus,
  ptrNames: readonly string[],
  name = "unknown",
): ReverseDnsResult {
  return Object.freeze({
    address,
    status,
    name,
    reverseName: ptrNames[0] ?? "unknown",
    ptrNames: Object.freeze([...ptrNames]),
  });
}

async function fcrdns(
  resolver: DnsResolver,
  address: string,
  v4: boolean,
  signal: AbortSignal,
  names: string[],
): Promise<ReverseDnsResult> {
  for (const raw of await resolver.reverse(address, signal)) {
    const name = hostName(raw);
    if (name !== null && !names.includes(name)) names.push(name);
    if (names.length === MAX_PTR_NAMES) break;
  }
  if (names.length === 0) return result(address, "none", []);
  const forward = await Promise.allSettled(
    names.map((n) =>
      v4 ? resolver.resolve4(n, signal) : resolver.resolve6(n, signal)
    ),
  );
  let failed = false;
  for (let i = 0; i < names.length; i++) {
    const f = forward[i];
    if (f.status === "rejected") {
      failed = true;
      continue;
    }
    for (const a of f.value) {
      const b = parseIp(a);
      if (b !== null && formatIp(b) === address) {
        return result(address, "confirmed", names, names[i]);
      }
    }
  }
  return result(address, failed ? "tempfail" : "unconfirmed", names);
}

const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

/**
 * A PTR name as a host name: lower case, without the final dot; `null`
 * when it is malformed or looks like an address (Postfix ignores such
 * names too).
 */
function hostName(raw: string): string | null {
  if (typeof raw !== "string") return null;
  const name = raw.toLowerCase().replace(/\.$/, "");
  if (name.length === 0 || name.length > 253) return null;
  const labels = name.split(".");
  if (!labels.every((l) => LABEL.test(l))) return null;
  if (/^[0-9]+$/.test(labels[labels.length - 1])) return null;
  return name;
}

/**
 * The "from" part of the `Received` header as Postfix writes it:
 * `from HELO (NAME [ADDR])`, where NAME is the forward-confirmed name or
 * `unknown` ({@link ReverseDnsResult.name}), ADDR the address with `IPv6:`
 * before an IPv6 one, and the client's name stands for the HELO when the
 * client sent none. With `name` null (no reverse DNS lookup) it is
 * `from HELO ([ADDR])`, the Maildir's header today. Control characters
 * are removed (nothing can break the header line); a Unix socket client
 * (address `unix`) is `unix socket`, a missing address `unknown`.
 *
 * @example
 * ```ts
 * import { receivedFrom } from "./rdns.ts";
 *
 * receivedFrom("mx.example.org", "mx.example.org", "192.0.2.1");
 * // "from mx.example.org (mx.example.org [192.0.2.1])"
 * receivedFrom("pc", "unknown", "2001:db8::1");
 * // "from pc (unknown [IPv6:2001:db8::1])"
 * receivedFrom("pc", null, "192.0.2.1");
 * // "from pc ([192.0.2.1])"
 * ```
 */
export function receivedFrom(
  helo: string | null,
  name: string | null,
  address: string,
): string {
  const a = stripMapped(clean(address));
  const literal = a === ""
    ? "unknown"
    : a === "unix"
    ? "unix socket"
    : a.includes(":")
    ? `[IPv6:${a}]`
    : `[${a}]`;
  const n = name === null ? "" : clean(name);
  const from = clean(helo ?? "") || n || "unknown";
  return `from ${from} (${n === "" ? "" : `${n} `}${literal})`;
}

/**
 * Removes what could break a header line: control characters (CR, LF and
 * the others).
 *
 * @example
 * ```ts
 * import { clean } from "./rdns.ts";
 *
 * clean("evil\r\nBcc: x"); // "evilBcc: x"
 * ```
 */
export function clean(s: string): string {
  // deno-lint-ignore no-control-regex
  return s.replace(/[\x00-\x1f\x7f]/g, "");
}

/**
 * Parses the `dnsServers` option: each entry an IPv4 or IPv6 address with
 * an optional port (`192.0.2.53`, `192.0.2.53:5353`, `2001:db8::53`,
 * `[2001:db8::53]:5353`). Returns the servers in the form `node:dns`'s
 * `setServers` takes; throws a `TypeError` for anything else.
 *
 * @example
 * ```ts
 * import { dnsServersOption } from "@smtpd/smtpd/transport";
 *
 * dnsServersOption(["127.0.0.1:5353", "[::1]:53"]); // ["127.0.0.1:5353", "[::1]:53"]
 * dnsServersOption(["127.0.0.1:0"]); // throws TypeError
 * ```
 */
export function dnsServersOption(value: unknown): string[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw new TypeError(
      "Cannot use option dnsServers: value is not a non-empty array",
    );
  }
  return value.map((entry) => {
    const bad = (why: string) =>
      new TypeError(
        `Cannot use option dnsServers: ${String(entry)} ${why}`,
      );
    if (typeof entry !== "string") throw bad("is not a string");
    let host = entry;
    let port: string | null = null;
    const bracket = /^\[([^\]]*)\](?::([^:]*))?$/.exec(entry);
    if (bracket !== null) {
      host = bracket[1];
      port = bracket[2] ?? null;
      if (!host.includes(":")) throw bad("is not an IPv6 address in brackets");
    } else if (entry.split(":").length === 2) {
      [host, port] = entry.split(":");
    }
    const bytes = parseIp(host);
    if (bytes === null) throw bad("is not an IP address");
    if (port !== null) {
      const n = /^[0-9]{1,5}$/.test(port) ? Number(port) : NaN;
      if (!(n >= 1 && n <= 65535)) throw bad("has no port from 1 to 65535");
    }
    const ip = formatIp(bytes);
    if (port === null) return ip;
    return bytes.length === 16 ? `[${ip}]:${port}` : `${ip}:${port}`;
  });
}
