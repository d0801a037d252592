/**
 * The DNS resolver of the `reverseDns` option for the runtime shims:
 * `./dns.ts` (over `node:dns/promises`) loaded only by a server that
 * turns `reverseDns` on, so that the others load no DNS code.
 *
 * @example
 * ```ts
 * import { createServer } from "../src/server.ts";
 * import { dnsResolver } from "./dns_lazy.ts";
 * import { listen } from "./node_net.ts";
 *
 * const server = await createServer(listen, "node", { port: 0, reverseDns: true }, { dnsResolver });
 * await server.close();
 * ```
 *
 * @module
 */

import type { DnsResolverFactory } from "../src/rdns.ts";

/** `createResolver` of `./dns.ts`, imported on first use. */
export const dnsResolver: DnsResolverFactory = async (options) =>
  (await import("./dns.ts")).createResolver(options);
