// Real daemons started by the tests (rspamd, OpenDKIM): free loopback
// ports, waiting until a port listens, and a child process stopped by PID.
import { setTimeout as sleep } from "node:timers/promises";
import { spawn } from "node:child_process";
import * as net from "node:net";
import process from "node:process";

/** A TCP port on 127.0.0.1 that nothing listened on a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Resolves once 127.0.0.1:`port` accepts a connection; throws after `ms`. */
export async function waitListening(
  port: number,
  ms: number,
  alive: () => boolean = () => true,
): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ port, host: "127.0.0.1" });
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    if (!alive()) {
      throw new Error(`the daemon exited before listening on ${port}`);
    }
    if (Date.now() > until) throw new Error(`nothing listens on ${port}`);
    await sleep(100);
  }
}

/** A running daemon and what it printed. */
export interface Daemon {
  /** Its standard output and error so far. */
  output(): string;
  /** True until it exits. */
  alive(): boolean;
  /** Sends SIGTERM, then SIGKILL after `graceMs`; waits for the exit. */
  stop(graceMs?: number): Promise<void>;
}

/** Starts `cmd` with `args` in the foreground, output captured. */
export function startDaemon(cmd: string, args: string[]): Daemon {
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  let exited = false;
  child.stdout!.on("data", (x) => (output += x));
  child.stderr!.on("data", (x) => (output += x));
  const exit = new Promise<void>((r) =>
    child.once("exit", () => {
      exited = true;
      r();
    })
  );
  return {
    output: () => output,
    alive: () => !exited,
    async stop(graceMs = 10_000) {
      if (exited || child.pid === undefined) return;
      process.kill(child.pid, "SIGTERM");
      const timer = setTimeout(() => {
        if (!exited) process.kill(child.pid!, "SIGKILL");
      }, graceMs);
      await exit;
      clearTimeout(timer);
    },
  };
}
