/**
 * The {@link DnsResolver} of Deno, Bun and Node: `node:dns/promises`'s
 * `Resolver`, which all three run. Measured on Deno 2.9, Bun 1.4 and
 * Node 20 and 24 against a local dnsmasq: `setServers(["127.0.0.1:PORT"])`
 * is honoured, `reverse`, `resolve4` and `resolve6` answer alike, and
 * `cancel()` ends the queries under way at once. Deno's native
 * `Deno.resolveDns` (with `nameServer: {ipAddr, port}`) would add nothing:
 * both use the same resolver inside Deno, which answers PTR queries for
 * `127.0.0.0/8` itself (`localhost`) without asking any server.
 *
 * A server that never answers: unless cancelled, Node's and Bun's resolver
 * retries (after 2 s and 3 s) and gives up after about 24 s with
 * `ENOTFOUND`, which reads as "no such name"; Deno's retries every second
 * and gives up after 8 s with `ETIMEOUT`. {@link ReverseDns}'s own timeout
 * (default 5 s) ends the lookup first and cancels its queries: keep it
 * under 20 s, or a dead server may look like an address without PTR.
 *
 * Each query has a `Resolver` of its own, so that a lookup that runs out of
 * time cancels its own queries and no other (`cancel()` acts on all the
 * queries of a `Resolver`) and leaves no timer behind.
 *
 * @example
 * ```ts
 * import { createReverseDns } from "./dns.ts";
 *
 * const rdns = createReverseDns({ dnsServers: ["127.0.0.1:5353"], timeout: 3000 });
 * const { name } = await rdns.lookup("192.0.2.1"); // "unknown" without a PTR
 * ```
 *
 * @module
 */

import { Resolver } from "node:dns/promises";
import {
  type DnsResolver,
  dnsServersOption,
  ReverseDns,
  type ReverseDnsOptions,
} from "../src/rdns.ts";

export {
  type DnsResolver,
  receivedFrom,
  ReverseDns,
  type ReverseDnsOptions,
  type ReverseDnsResult,
  type ReverseDnsStatus,
} from "../src/rdns.ts";

/** Codes of `node:dns` that mean "no such name" or "no such record". */
const ABSENT: ReadonlySet<string> = new Set(["ENOTFOUND", "ENODATA"]);

/**
 * Options of {@link createResolver}.
 *
 * @example
 * ```ts
 * import type { ResolverOptions } from "./dns.ts";
 *
 * const options: ResolverOptions = { dnsServers: ["[::1]:5353"] };
 * ```
 */
export interface ResolverOptions {
  /**
   * The DNS servers to ask, `IP` or `IP:port` (`[IPv6]:port`); default the
   * system's (`/etc/resolv.conf`).
   */
  dnsServers?: readonly string[];
}

/**
 * A {@link DnsResolver} over `node:dns/promises`. Throws a `TypeError` for
 * a malformed `dnsServers`.
 *
 * @example
 * ```ts
 * import { createResolver } from "./dns.ts";
 *
 * const resolver = createResolver({ dnsServers: ["127.0.0.1:5353"] });
 * await resolver.resolve4("mail.example.org", new AbortController().signal);
 * ```
 */
export function createResolver(options: ResolverOptions = {}): DnsResolver {
  const servers = options.dnsServers === undefined
    ? null
    : dnsServersOption(options.dnsServers);
  const query = async (
    method: "reverse" | "resolve4" | "resolve6",
    arg: string,
    signal: AbortSignal,
  ): Promise<string[]> => {
    signal.throwIfAborted();
    const resolver = new Resolver();
    if (servers !== null) resolver.setServers(servers);
    const cancel = () => resolver.cancel();
    signal.addEventListener("abort", cancel, { once: true });
    try {
      return await resolver[method](arg);
    } catch (e) {
      if (ABSENT.has((e as { code?: string }).code ?? "")) return [];
      throw e;
    } finally {
      signal.removeEventListener("abort", cancel);
    }
  };
  return {
    reverse: (address, signal) => query("reverse", address, signal),
    resolve4: (name, signal) => query("resolve4", name, signal),
    resolve6: (name, signal) => query("resolve6", name, signal),
  };
}

/**
 * A {@link ReverseDns} over {@link createResolver}: the options of both.
 *
 * @example
 * ```ts
 * import { createReverseDns, receivedFrom } from "./dns.ts";
 *
 * const rdns = createReverseDns({ dnsServers: ["127.0.0.1:5353"] });
 * const r = await rdns.lookup("2001:db8::25");
 * receivedFrom("client.example", r.name, r.address);
 * ```
 */
export function createReverseDns(
  options: ReverseDnsOptions & ResolverOptions = {},
): ReverseDns {
  if (options === null || typeof options !== "object") {
    throw new TypeError("Cannot use options: value is not an object");
  }
  const { dnsServers, ...rest } = options;
  return new ReverseDns(createResolver({ dnsServers }), rest);
}
