// Where the load part places its processes on the CPUs, for the workloads
// that say `pin` (bench/workloads.mjs: W1 and W4): each server process (all
// its threads) on one core, the load generator (smtp-source) on another,
// through util-linux's `taskset`. `--no-pin`, a machine without `taskset` or
// with fewer than two CPUs this process may use leave both to the scheduler,
// as are the other workloads. Every server is placed the same way.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import process from "node:process";
import { NO_PIN } from "./flags.mjs";

const TASKSET = "/usr/bin/taskset";

/** The CPUs this process may run on, from `taskset -c -p` ("0,1", "0-3,6"). */
function allowedCpus() {
  const r = spawnSync(TASKSET, ["-c", "-p", String(process.pid)], {
    encoding: "utf8",
  });
  const list = /list:\s*([\d,\s-]+)$/m.exec(r.stdout ?? "")?.[1];
  if (r.status !== 0 || !list) return [];
  const cpus = [];
  for (const part of list.trim().split(",")) {
    const [a, b = a] = part.split("-").map(Number);
    for (let c = a; c <= b; c++) cpus.push(c);
  }
  return cpus;
}

/**
 * The placement: `{ pinned: true, server, load }` (CPU numbers: the last
 * and the first this process may use), or `{ pinned: false, why }`.
 */
export const PLACEMENT = (() => {
  if (NO_PIN) return { pinned: false, why: "--no-pin" };
  if (!existsSync(TASKSET)) {
    return { pinned: false, why: `no ${TASKSET}` };
  }
  const cpus = allowedCpus();
  if (cpus.length < 2) {
    return { pinned: false, why: `${cpus.length} CPU(s) available` };
  }
  return { pinned: true, server: cpus[cpus.length - 1], load: cpus[0] };
})();

/**
 * Pins every thread of server process `pid` to the server's CPU (the
 * threads it starts later inherit it); true when done or not pinning.
 * Pinning after the start leaves the runtime sizing its thread pools for
 * the machine, as it does unpinned.
 */
export function pinServer(pid) {
  if (!PLACEMENT.pinned) return true;
  const r = spawnSync(TASKSET, [
    "-a",
    "-p",
    "-c",
    String(PLACEMENT.server),
    String(pid),
  ], { stdio: "ignore" });
  return r.status === 0;
}

/** `[cmd, args]` that run the load generator `cmd args` on the load's CPU. */
export function onLoadCpu(cmd, args) {
  return PLACEMENT.pinned
    ? [TASKSET, ["-c", String(PLACEMENT.load), cmd, ...args]]
    : [cmd, args];
}

/**
 * How the load part placed its processes, in words, for the report's head:
 * `pinned` the workloads that ran pinned, `unpinned` those that did not.
 */
export function placementText(pinned, unpinned) {
  const how = PLACEMENT.pinned
    ? `each server process (all its threads) pinned to CPU ${PLACEMENT.server} and the load generator to CPU ${PLACEMENT.load} (taskset)`
    : `nothing pinned (${PLACEMENT.why})`;
  if (!PLACEMENT.pinned || pinned.length === 0) {
    return `${how}: servers and load generator left to the scheduler`;
  }
  return `${pinned.join(", ")}: ${how}` +
    (unpinned.length > 0
      ? `; ${unpinned.join(", ")}: left to the scheduler`
      : "") +
    " (`--no-pin`: nothing pinned)";
}
