// The bench servers' control channel (bench/server.mjs, bench/floor.mjs; and
// bench/bare.mjs loads it too, so that the bare runtime carries the same
// harness): `READY <port> [what it loaded]` on stdout once listening; each
// line `stats` on stdin answers one JSON line with the process's own CPU
// time (`process.cpuUsage()`, µs) and memory (VmHWM/VmRSS from
// /proc/self/status on Linux); `gc` runs a full collection first (where the
// runtime was started with one exposed) and answers the memory with the JS
// heap in use; the end of stdin exits the process.
import { readFileSync } from "node:fs";
import process from "node:process";

/** VmHWM and VmRSS in kB from /proc/self/status (Linux), else null. */
function procMemory() {
  try {
    const status = readFileSync("/proc/self/status", "utf8");
    const hwm = /VmHWM:\s+(\d+)/.exec(status);
    const rss = /VmRSS:\s+(\d+)/.exec(status);
    if (!hwm || !rss) return null;
    return { hwmKb: Number(hwm[1]), rssKb: Number(rss[1]) };
  } catch {
    return null;
  }
}

/** The `stats` answer: CPU µs and memory (and `extra`'s fields), as one JSON line. */
export function stats(extra) {
  const cpu = process.cpuUsage();
  return JSON.stringify({
    userUs: cpu.user,
    systemUs: cpu.system,
    rss: process.memoryUsage().rss,
    ...procMemory(),
    ...extra?.(),
  });
}

/**
 * A full garbage collection, where the runtime offers one: Bun.gc(true) on
 * Bun, `gc()` on Node (`--expose-gc`) and Deno (`--v8-flags=--expose-gc`).
 */
function fullGc() {
  const g = globalThis;
  if (g.Bun !== undefined) {
    g.Bun.gc(true);
    return true;
  }
  if (typeof g.gc !== "function") return false;
  g.gc();
  g.gc(); // a second pass frees what the first one's finalizers let go
  return true;
}

/**
 * The `gc` answer: a full collection, then the stats with the JS heap in
 * use and the memory held outside it (ArrayBuffers, on V8 and JSC).
 */
function gcStats() {
  const collected = fullGc();
  const m = process.memoryUsage();
  return JSON.stringify({
    collected,
    rss: m.rss,
    heapUsed: m.heapUsed,
    external: m.external,
    ...procMemory(),
  });
}

/**
 * Says READY (with `loaded`, if given) and serves `stats` (with the fields
 * `extra()` returns, if given) and `gc` until stdin ends.
 */
export function control(port, loaded, extra) {
  let pending = "";
  process.stdin.setEncoding("utf8");
  process.stdin.on("data", (d) => {
    pending += d;
    for (let nl = pending.indexOf("\n"); nl >= 0; nl = pending.indexOf("\n")) {
      const line = pending.slice(0, nl).trim();
      pending = pending.slice(nl + 1);
      if (line === "stats") process.stdout.write(stats(extra) + "\n");
      else if (line === "gc") process.stdout.write(gcStats() + "\n");
    }
  });
  process.stdin.on("end", () => process.exit(0));
  process.stdout.write(
    loaded === undefined ? `READY ${port}\n` : `READY ${port} ${loaded}\n`,
  );
}
