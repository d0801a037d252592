/**
 * smtpd: receive email over SMTP in your application, on Deno, Bun and Node.
 *
 * {@link serve} starts a server on whichever runtime runs it; hooks decide
 * at each step, and `onMessage` (or `for await (const message of server)`)
 * receives each message with its body streaming. A hook throws an
 * {@link SmtpError} to answer with that reply.
 *
 * The building blocks are on subpaths: `smtpd/engine` (the sans-IO
 * protocol engine, SASL, address parsers), `smtpd/transport` (the
 * connection and listener interfaces, `createServer` for your own
 * transport), `smtpd/deno`, `smtpd/bun`, `smtpd/node` (one runtime's
 * listener), `smtpd/maildir` (Maildir delivery) and `smtpd/testing` (an
 * in-process test inbox).
 *
 * @example
 * ```ts
 * import { serve, SmtpError } from "@smtpd/smtpd";
 *
 * const server = await serve({
 *   port: 2525,
 *   onRcptTo(address) {
 *     if (!address.toLowerCase().endsWith("@example.org")) {
 *       throw new SmtpError(550, "5.7.1", "Relaying denied");
 *     }
 *   },
 *   async onMessage(message) {
 *     const email = await message.parse();
 *     console.log(message.from, message.to, email.subject);
 *   },
 * });
 * ```
 *
 * @module
 */

import type { ServeOptions, Server } from "./src/server.ts";

export * from "./src/api.ts";

/**
 * Starts an SMTP server on the runtime that runs this code (Deno, Bun or
 * Node), with that runtime's native listener. Resolves once listening;
 * `server.addr.port` is the bound port (ask for port 0 to get a free one).
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd";
 *
 * const server = await serve({
 *   port: 0,
 *   async onMessage(message) {
 *     console.log(message.from, message.to, (await message.text()).length);
 *   },
 * });
 * console.log(`listening on ${server.addr.hostname}:${server.addr.port}`);
 * await server.close();
 * ```
 */
export async function serve(options: ServeOptions = {}): Promise<Server> {
  const g = globalThis as { Deno?: unknown; Bun?: unknown };
  const shim = g.Deno !== undefined
    ? await import("./runtimes/deno.ts")
    : g.Bun !== undefined
    ? await import("./runtimes/bun.ts")
    : await import("./runtimes/node.ts");
  return shim.serve(options);
}
