// Several receivers sharing one port on Node, with node:cluster (any Node
// version): the primary forks the workers (one per core, or $WORKERS),
// replaces one that dies, and on SIGINT/SIGTERM stops them all gracefully.
// Each worker is an ordinary serve(); the primary owns the socket and hands
// the connections round. From a checkout (port from argv, $PORT, or 2525):
//   node --import tsx examples/workers_node.ts 2525  # Node 24: node examples/...
// On Node 22.12 and later, separate processes each calling
// serve({ port, reusePort: true }) share a port too, without a primary
// (SO_REUSEPORT: the kernel spreads the connections); see workers_deno.ts.
import cluster from "node:cluster";
import { availableParallelism } from "node:os";
import process from "node:process";
import { serve } from "../runtimes/node.ts";

const port = Number(process.argv[2] ?? process.env.PORT ?? 2525);

if (cluster.isPrimary) {
  const count = Number(process.env.WORKERS ?? availableParallelism());
  let alive = 0;
  let stopping = false;
  let stopped = false;
  const fork = () => {
    alive++;
    cluster.fork();
  };
  const done = () => {
    if (stopping && alive === 0 && !stopped) {
      stopped = true;
      console.log("stopped");
    }
  };
  cluster.on("exit", (worker, code, signal) => {
    alive--;
    // A worker that stopped on purpose (status 0: it exits so only on
    // SIGINT, SIGTERM or "stop") is not replaced. Ctrl-C reaches every
    // process of the group, and the worker may be gone before this process
    // has run its own handler.
    if (stopping || code === 0 || worker.exitedAfterDisconnect) return done();
    console.log(`worker ${worker.process.pid} died (${signal ?? code})`);
    // At most one a second: no crash loop. A stop in that second wins.
    setTimeout(() => stopping ? done() : fork(), 1000);
  });
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      stopping = true;
      for (const worker of Object.values(cluster.workers ?? {})) {
        // A worker may be leaving already: a send that finds its channel
        // closed reports to the callback (without one, the error would
        // end this process).
        if (worker?.isConnected()) worker.send("stop", () => {});
      }
      done();
    });
  }
  for (let i = 0; i < count; i++) fork();
} else {
  const server = await serve({
    port,
    onMessage(message) {
      console.log(`message from=<${message.from}> worker=${process.pid}`);
    },
  });
  let closing = false;
  const stop = async () => {
    if (closing) return;
    closing = true;
    await server.close(); // messages in transfer finish first
    if (process.connected) process.disconnect();
  };
  process.on("message", (m) => m === "stop" && stop());
  // Ctrl-C reaches every process of the group: the workers stop on it too.
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  console.log(`worker ${process.pid} listening on 127.0.0.1:${port}`);
}
