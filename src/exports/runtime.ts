/**
 * What each runtime's module (`smtpd/deno`, `smtpd/bun`, `smtpd/node`)
 * exports besides its own `serve` and `listen`: the root API, and the
 * transport types its `listen` takes and returns. Not an entry point.
 *
 * @module
 */

export * from "../api.ts";
export type {
  Connection,
  Listener,
  ListenOptions,
  ProxyEndpoint,
  ProxyHeader,
  ProxyHeaderLocal,
  ProxyHeaderTcp,
  ProxyHeaderUnix,
  ProxyHeaderUnknown,
  ProxyListenOptions,
  ProxyRawTlv,
  ProxySslInfo,
  ProxyTlvs,
} from "./transport.ts";
