// Deno only, for measuring (bench/idle_probe.mjs): the floor's replies
// (bench/floor_feed.mjs) served through runtimes/deno.ts's listen() and
// connection (its accept iterator, DenoConnection, readOr, its write
// path, the addresses asked as the server asks them), without the driver
// or the engine: what the shim itself costs an idle session over
// bench/floor.mjs.
//
//   node bench/idle_probe.mjs deno bench/floor_shim.mjs [--no-addr]
import process from "node:process";
import { control } from "./control.mjs";
import { feed, GREETING, state } from "./floor_feed.mjs";
import { listen } from "../runtimes/deno.ts";

const addr = !process.argv.includes("--no-addr");
// A connection's write returns a promise only while an earlier one is
// pending (undefined otherwise).
const swallow = (p) => {
  if (p) p.catch(() => {});
};
const listener = await listen({ hostname: "127.0.0.1", port: 0 });

function session(conn) {
  if (addr) {
    conn.remoteAddr.hostname;
    conn.localAddr.hostname;
  }
  const s = state();
  const waiter = {
    onRead(chunk) {
      if (chunk === null) return conn.close();
      const out = feed(s, chunk);
      if (out !== null) swallow(conn.write(out));
      conn.readOr(waiter);
    },
  };
  swallow(conn.write(GREETING));
  conn.readOr(waiter);
}

(async () => {
  for await (const conn of listener) session(conn);
})();
control(listener.addr.port);
