// The load generators of run.mjs as child processes: Postfix's smtp-source
// and bench/client.mjs (pipelined DATA and BDAT loads, the EHLO probe, idle
// sessions, the big message), each bounded by a timeout.
import { spawn } from "node:child_process";
import process from "node:process";
import { sleep } from "./common.mjs";
import { BIN, root, SMTP_SOURCE } from "./launch.mjs";
import { LOAD_TIMEOUT } from "./flags.mjs";
import { onLoadCpu } from "./placement.mjs";

/** The runtime that runs bench/client.mjs. */
const clientNode = BIN.node24 ?? process.execPath;

/**
 * Runs one load against `port` (`w.sourceArgs`: more smtp-source
 * arguments), with `pin` on the load generator's CPU (bench/placement.mjs:
 * the load part's servers are pinned to another); resolves {ok, skipped,
 * ms, error}.
 */
export function runLoad(w, port, { pin = false } = {}) {
  let cmd;
  let args;
  if (w.tool === "source") {
    cmd = SMTP_SOURCE;
    args = [
      ...(w.reuse ? ["-d"] : []),
      "-s",
      String(w.sessions),
      "-m",
      String(w.messages),
      "-l",
      String(w.size),
      ...(w.sourceArgs ?? []),
      `127.0.0.1:${port}`,
    ];
  } else {
    cmd = clientNode;
    args = [
      "bench/client.mjs",
      "--port",
      String(port),
      "--sessions",
      String(w.sessions),
      "--messages",
      String(w.messages),
      "--size",
      String(w.size),
      "--timeout",
      String(LOAD_TIMEOUT),
      ...(w.tool === "bdat" ? ["--bdat"] : []),
    ];
  }
  return new Promise((resolve) => {
    const t0 = performance.now();
    const [bin, argv] = pin ? onLoadCpu(cmd, args) : [cmd, args];
    const child = spawn(bin, argv, {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let err = "";
    child.stderr.on("data", (d) => {
      if (err.length < 2000) err += d;
    });
    child.stdout.resume();
    const timer = setTimeout(() => child.kill("SIGKILL"), LOAD_TIMEOUT);
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      const ms = performance.now() - t0;
      const ok = code === 0 && err.trim() === "";
      resolve({
        ok,
        skipped: code === 3,
        ms,
        error: ok
          ? null
          : `${signal ?? `exit ${code}`}: ${err.trim().slice(0, 300)}`,
      });
    });
  });
}

/** Runs bench/client.mjs with `args`; resolves {ok, ms, error, stdout}. */
export function runClient(args) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(clientNode, [
      "bench/client.mjs",
      ...args,
      "--timeout",
      "120000",
    ], {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let err = "";
    let out = "";
    child.stderr.on("data", (d) => (err += d));
    child.stdout.on("data", (d) => (out += d));
    child.once(
      "exit",
      (code) =>
        resolve({
          ok: code === 0,
          ms: performance.now() - t0,
          error: code === 0 ? null : err.trim(),
          stdout: out,
        }),
    );
  });
}

/**
 * The memory probes' warm-up (memory_part, idle_probe, alloc_probe): 20
 * messages of 1 KB on one session; resolves as runClient().
 */
export function warmUpClient(port) {
  return runClient([
    "--port",
    String(port),
    "--sessions",
    "1",
    "--messages",
    "20",
    "--size",
    "1024",
  ]);
}

/** The EHLO keywords a server offers. */
export async function ehloKeywords(port) {
  const r = await runClient(["--port", String(port), "--probe"]);
  try {
    return JSON.parse(r.stdout).ehlo;
  } catch {
    return [];
  }
}

/** Holds `n` idle sessions open on `port` (bench/client.mjs --idle). */
export async function holdIdle(port, n) {
  const child = spawn(clientNode, [
    "bench/client.mjs",
    "--port",
    String(port),
    "--idle",
    String(n),
    "--timeout",
    "60000",
  ], { cwd: root, stdio: ["pipe", "pipe", "pipe"] });
  const exited = new Promise((r) => child.once("exit", r));
  let out = "";
  let err = "";
  child.stderr.on("data", (d) => (err += d));
  const held = await new Promise((resolve) => {
    child.stdout.on("data", (d) => {
      out += d;
      if (out.includes("\n")) resolve(true);
    });
    child.once("exit", () => resolve(false));
  });
  return {
    ok: held,
    error: held ? null : err.trim().slice(0, 300),
    release: async () => {
      child.stdin.end();
      await Promise.race([exited, sleep(10_000)]);
      if (child.exitCode === null) child.kill("SIGKILL");
    },
  };
}
