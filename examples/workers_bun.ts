// Several receivers sharing one port on Bun, with SO_REUSEPORT: the first
// process starts copies of itself (one per core, or $WORKERS), each an
// ordinary serve({ reusePort: true }); the kernel spreads the connections
// among them. It replaces a copy that dies and on SIGINT/SIGTERM stops
// them all gracefully. From a checkout (port from argv, $PORT, or 2525;
// not 0, or each copy would get a port of its own):
//   bun examples/workers_bun.ts 2525
import { availableParallelism } from "node:os";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { serve } from "../runtimes/bun.ts";

/** The part of Bun's API used here (bun-types has all of it). */
interface Subprocess {
  readonly pid: number;
  readonly exited: Promise<number>;
  readonly exitCode: number | null;
  readonly signalCode: string | null;
  kill(signal?: string): void;
}
declare const Bun: {
  spawn(
    cmd: string[],
    o: { env: Record<string, string | undefined>; stdio: string[] },
  ): Subprocess;
};

const port = Number(process.argv[2] ?? process.env.PORT ?? 2525);

if (process.env.SMTPD_EXAMPLE_WORKER === undefined) {
  const count = Number(process.env.WORKERS ?? availableParallelism());
  const children = new Set<Subprocess>();
  let stopping = false;
  const run = async (): Promise<void> => {
    const child = Bun.spawn([
      process.execPath,
      fileURLToPath(import.meta.url),
      `${port}`,
    ], {
      env: { ...process.env, SMTPD_EXAMPLE_WORKER: "1" },
      stdio: ["ignore", "inherit", "inherit"],
    });
    children.add(child);
    await child.exited;
    children.delete(child);
    // Status 0: it stopped on purpose (a worker exits 0 only on SIGINT or
    // SIGTERM). Ctrl-C reaches every process of the group, and the worker
    // may be gone before this process has run its own handler.
    if (stopping || child.exitCode === 0) return;
    console.log(
      `worker ${child.pid} died (${child.signalCode ?? child.exitCode})`,
    );
    await new Promise((r) => setTimeout(r, 1000)); // no crash loop
    if (!stopping) return run(); // a stop in that second wins
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      stopping = true;
      for (const child of children) child.kill("SIGTERM");
    });
  }
  await Promise.all(Array.from({ length: count }, run));
  console.log("stopped");
  process.exit(0);
} else {
  const server = await serve({
    port,
    reusePort: true,
    onMessage(message) {
      console.log(`message from=<${message.from}> worker=${process.pid}`);
    },
  });
  let closing = false;
  const stop = async () => {
    if (closing) return;
    closing = true;
    await server.close(); // messages in transfer finish first
    process.exit(0);
  };
  // Ctrl-C reaches every process of the group: the copies stop on it too.
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  console.log(`worker ${process.pid} listening on 127.0.0.1:${port}`);
}
