/**
 * The seam between the driver and the runtimes: the {@link Connection} and
 * {@link Listener} interfaces a runtime shim implements, the helpers the
 * shims share, and {@link createServer}, which runs the SMTP server on any
 * listener. For those who bring their own transport (a custom socket, an
 * in-memory pipe for tests); an application wants `serve()` from the
 * package root.
 *
 * @example
 * ```ts
 * import { createServer } from "@smtpd/smtpd/transport";
 * import { listen } from "@smtpd/smtpd/node";
 *
 * const server = await createServer(listen, "node", { port: 0 });
 * await server.close();
 * ```
 *
 * @module
 */

export { createServer } from "../server.ts";
export { CidrSet } from "../cidr.ts";
// The `milters` option's address syntax (the CLI's --milter checks with it).
export { type MilterAddress, parseMilterAddress } from "../milter/options.ts";
// The types createServer takes and returns, for this entry point's docs.
export type * from "../api.ts";
export { ConnectionQueue } from "../shim_kit.ts";
// What createServer's runtimeServices.dnsResolver makes (reverseDns).
export type { DnsResolver, DnsResolverFactory } from "../rdns.ts";
// How serve() checks its dnsServers option (for a resolver's own, the CLI's).
export { dnsServersOption } from "../rdns.ts";
export {
  checkTlsOptions,
  type Connection,
  HANDSHAKE_TIMEOUT_MS,
  type Listener,
  type ListenFn,
  type ListenOptions,
  matchServerName,
  type NetAddress,
  type ProxyListenOptions,
  type TlsCertificate,
  type TlsInfo,
  type TlsOptions,
} from "../transport.ts";
export type {
  ProxyEndpoint,
  ProxyHeader,
  ProxyHeaderLocal,
  ProxyHeaderTcp,
  ProxyHeaderUnix,
  ProxyHeaderUnknown,
  ProxyRawTlv,
  ProxySslInfo,
  ProxyTlvs,
} from "../proxy.ts";
