/**
 * Node shim: the `node:net` / `node:tls` listener (`./node_net.ts`) with
 * the SMTP server on it. The root API is re-exported, so
 * `import { serve } from "smtpd/node"` is all an application needs.
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd/node";
 *
 * const server = await serve({ port: 2525, onMessage: (m) => console.log(m.from) });
 * ```
 *
 * @module
 */

import { createServer, type ServeOptions, type Server } from "../src/server.ts";
import { dnsResolver } from "./dns_lazy.ts";
import { listen } from "./node_net.ts";

export * from "../src/exports/runtime.ts";
export {
  hasReusePort,
  listen,
  loadTlsOptions,
  TlsConfig,
  wrapSocket,
} from "./node_net.ts";

/**
 * Starts an SMTP server on Node's `node:net` / `node:tls`.
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd/node";
 *
 * const server = await serve({ port: 0 });
 * console.log(server.addr.port);
 * await server.close();
 * ```
 */
export function serve(options: ServeOptions = {}): Promise<Server> {
  return createServer(listen, "node", options, { dnsResolver });
}
