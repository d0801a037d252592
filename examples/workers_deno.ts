// Several receivers sharing one port on Deno, with SO_REUSEPORT: the first
// process starts copies of itself (one per core, or $WORKERS), each an
// ordinary serve({ reusePort: true }); the kernel spreads the connections
// among them. It replaces a copy that dies and on SIGINT/SIGTERM stops
// them all gracefully. From a checkout (port from argv, $PORT, or 2525;
// not 0, or each copy would get a port of its own):
//   deno run -A --unstable-net examples/workers_deno.ts 2525
// (--unstable-net lets Deno.listen take reusePort; without it serve()
// listens through node:net, which has it, at some CPU cost.)
import { serve } from "../runtimes/deno.ts";

const port = Number(Deno.args[0] ?? Deno.env.get("PORT") ?? 2525);

if (Deno.env.get("SMTPD_EXAMPLE_WORKER") === undefined) {
  const count = Number(
    Deno.env.get("WORKERS") ?? navigator.hardwareConcurrency,
  );
  const children = new Set<Deno.ChildProcess>();
  let stopping = false;
  const run = async (): Promise<void> => {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--unstable-net", import.meta.filename!, `${port}`],
      env: { SMTPD_EXAMPLE_WORKER: "1" },
    }).spawn();
    children.add(child);
    const status = await child.status;
    children.delete(child);
    // Status 0: it stopped on purpose (a worker exits 0 only on SIGINT or
    // SIGTERM). Ctrl-C reaches every process of the group, and the worker
    // may be gone before this process has run its own handler.
    if (stopping || status.code === 0) return;
    console.log(`worker ${child.pid} died (${status.signal ?? status.code})`);
    await new Promise((r) => setTimeout(r, 1000)); // no crash loop
    if (!stopping) return run(); // a stop in that second wins
  };
  const stop = () => {
    stopping = true;
    for (const child of children) {
      try {
        child.kill("SIGTERM");
      } catch (error) {
        // Ctrl-C reaches the whole group: a worker may have exited already,
        // its status not yet seen above ("Child process has already
        // terminated").
        if (!(error instanceof TypeError)) throw error;
      }
    }
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  await Promise.all(Array.from({ length: count }, run));
  console.log("stopped");
  Deno.exit(0);
} else {
  const server = await serve({
    port,
    reusePort: true,
    onMessage(message) {
      console.log(`message from=<${message.from}> worker=${Deno.pid}`);
    },
  });
  let closing = false;
  const stop = async () => {
    if (closing) return;
    closing = true;
    await server.close(); // messages in transfer finish first
    Deno.exit(0);
  };
  // Ctrl-C reaches every process of the group: the copies stop on it too.
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  console.log(`worker ${Deno.pid} listening on 127.0.0.1:${port}`);
}
