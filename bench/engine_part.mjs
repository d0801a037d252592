// run.mjs's engine part: bench/engine.bench.ts (the sans-IO engine, no
// sockets) on each runtime, from the TypeScript sources.
import { spawnSync } from "node:child_process";
import { log } from "./common.mjs";
import { root, tsArgv } from "./launch.mjs";
import { FULL, RUNTIME_NAMES, RUNTIMES } from "./flags.mjs";

/** The engine bench's figures per runtime (failures are logged and left out). */
export function benchEngine() {
  log("\nEngine (no sockets)");
  const out = [];
  for (const rt of RUNTIME_NAMES) {
    if (!RUNTIMES[rt].ok) continue;
    const [cmd, ...pre] = tsArgv(rt);
    const r = spawnSync(cmd, [
      ...pre,
      "bench/engine.bench.ts",
      "--json",
      ...(FULL ? [] : ["--quick"]),
    ], {
      cwd: root,
      encoding: "utf8",
      timeout: 300_000,
    });
    const line = (r.stdout ?? "").trim().split("\n").reverse().find((l) =>
      l.startsWith("{")
    );
    if (!line) {
      log(`  ${rt}: failed: ${(r.stderr ?? "").slice(0, 300)}`);
      continue;
    }
    const res = { rt, ...JSON.parse(line) };
    log(
      `  ${
        res.runtime.padEnd(14)
      } ${res.us1k} µs/msg  ${res.mbps1m} MB/s  ${res.mbps1mDots} MB/s (dot lines)`,
    );
    out.push(res);
  }
  return out;
}
