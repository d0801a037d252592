#!/usr/bin/env node
// The one benchmark command (`npm run bench`): the engine micro-benchmark on
// every runtime, then smtpd, nodemailer's smtp-server, the runtime floors
// (bench/floor.mjs: fixed replies on the runtime's own listener, for scale;
// `--reuse` reading into one reused buffer, `--contract` adding only what
// smtpd's contract demands; each on Deno, Bun, Node 20 and Node 24) and Postfix's smtp-sink under the
// same loads, one
// server at a time, alternating A B A B; then the memory bench. Prints the
// report and writes it (bench/RESULTS.md for the default selection; raw
// figures next to it in .tmp/bench-results.json).
//
//   node bench/run.mjs            # quick: shorter loads, 5 measured rounds (≈14 min on 2 cores)
//   node bench/run.mjs --full     # the workloads at full size (7 rounds)
//
// Options:
//   --full                 full message counts (default: quick)
//   --runs N               measured rounds per workload (default 5 quick, 7 full);
//                          after each server's warm-up to steady state (discarded)
//   --only engine,load,memory,milter  parts to run (default engine,load,memory;
//                          milter: smtpd with rspamd / OpenDKIM); a runtime list
//                          (--only bun,node24) is taken as --runtimes
//   --runtimes deno,bun,node20,node24
//   --servers smtpd,smtpd-byob,smtpd-cli,smtp-server,floor,floor-reuse,floor-contract,smtp-sink
//   --workloads W1,W2,W3,W4,W5,W6,W7,W8
//   --out PATH             where to write the report (default: bench/RESULTS.md
//                          for the default selection, else .tmp/bench-results.md)
//   --mem-runs N           fresh processes per server in the memory bench
//                          (default 1 quick, 3 full; the median is reported)
//   --big-runs N           fresh processes per goal server (the floors, smtpd-cli,
//                          smtpd-byob) through the 100 MB message (default 3
//                          quick, 5 full, at least --mem-runs; the median is reported)
//   --no-write             do not write the report (JSON still goes to .tmp/)
//   --messages N           messages (W2: connections) per measured run, every
//                          server and selected workload (default: the mode's counts)
//   --lib src|dist         smtpd's code on every runtime (default: what its users
//                          install: the npm build on Node and Bun, the sources on
//                          Deno; see bench/launch.mjs)
//   --no-pin               leave the load part's servers and load generator to the
//                          scheduler (default: each server process on one CPU, the
//                          load generator on another; bench/placement.mjs)
//   --interleave K         each server's measured round in K sub-batches taken in
//                          turn with the other servers of its group (one workload
//                          per run; default 1: one run per server and round)
//
// Ratios are computed round by round between runs taken back to back (the
// servers of one runtime and smtp-sink form a group; the group runs in
// alternating order, A B C then C B A; the groups rotate every round) and
// reported as every round's value, the median and the min–max spread.
//
// Loopback only (127.0.0.1). Every load run is bounded by its message count
// and by a timeout. Needs /usr/sbin/smtp-source and smtp-sink (Debian
// `postfix`) for W1–W4 and the smtp-sink rows; without them those are
// skipped.
//
// This file reads no flag itself and measures nothing: it runs the parts in
// order and hands their figures to the report. The command line is
// bench/flags.mjs; the parts are bench/engine_part.mjs, load_part.mjs
// (workloads.mjs: W1–W8) and memory_part.mjs, with their server processes
// in server_proc.mjs and their load generators in load_gen.mjs; the report
// is bench/report.mjs (the tables) and results.mjs (its head and the files).
import process from "node:process";
import { loadavg, log, Noise } from "./common.mjs";
import { benchEngine } from "./engine_part.mjs";
import {
  ALL_WORKLOADS,
  argvProblem,
  LIB,
  MODE,
  PARTS,
  RUNS,
  RUNTIME_NAMES,
  RUNTIMES,
} from "./flags.mjs";
import { fmtLoad } from "./format.mjs";
import { ensureBuilt } from "./launch.mjs";
import { benchWorkloads } from "./load_part.mjs";
import { benchMemory } from "./memory_part.mjs";
import { benchMilter } from "./milter_part.mjs";
import { toolVersions, writeResults } from "./results.mjs";
import { workloadPlan } from "./workloads.mjs";

/** Runs the selected parts, then prints and writes the report. */
async function main() {
  const problem = argvProblem();
  if (problem !== null) {
    console.error(`${problem}\nusage: the comment at the top of bench/run.mjs`);
    process.exit(2);
  }
  const started = Date.now();
  const date = new Date().toISOString().slice(0, 16).replace("T", " ");
  const versions = toolVersions();
  log(
    `bench: ${MODE}, ${RUNS} measured rounds after a warm-up to steady state, parts ${
      PARTS.join(",")
    }, runtimes ${RUNTIME_NAMES.join(",")}; load average ${fmtLoad(loadavg())}`,
  );
  const needsBuild = PARTS.some((p) => p !== "engine") &&
    RUNTIME_NAMES.some((rt) => RUNTIMES[rt].ok && LIB[rt] === "dist");
  const build = needsBuild ? ensureBuilt(log) : null;
  let engine = null;
  if (PARTS.includes("engine")) {
    const noise = new Noise();
    const rows = benchEngine();
    engine = { rows, load: noise.stop() };
  }
  const workloads = [];
  if (PARTS.includes("load")) {
    for (const names of workloadPlan()) {
      workloads.push(...(await benchWorkloads(names)));
    }
    workloads.sort((a, b) =>
      ALL_WORKLOADS.indexOf(a.name) - ALL_WORKLOADS.indexOf(b.name)
    );
  }
  const memory = PARTS.includes("memory") ? await benchMemory() : null;
  const milter = PARTS.includes("milter") ? await benchMilter() : null;
  const elapsed = (Date.now() - started) / 1000;
  writeResults({
    date,
    elapsed,
    versions,
    build,
    engine,
    workloads,
    memory,
    milter,
  });
}

await main();
