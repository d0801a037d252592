// The workloads W1–W8 of run.mjs: their loads and sizes in each mode, the
// BDAT/DATA pairs, and the order the bench runs them in.
import { FULL, MESSAGES, WORKLOAD_NAMES } from "./flags.mjs";

export const KB = 1024;
export const MB = 1024 * KB;
/**
 * The workloads. `messages` is the full count, `quick` the quick mode's
 * (the quick mode shrinks counts, never the number of rounds). The quick
 * counts give a measured run about 0.1–0.5 s of server CPU (W1 and W4, the
 * goals' per-message workloads, the most) and keep the quick bench within
 * about 14 minutes on 2 cores (the warm-up runs until steady state).
 * Every server gets the same count in a round. `unit` is what the CPU is
 * reported per: a message, a connection (W2 sends one message per
 * connection), or a MiB of message (W3). `pin` (W1, W4): the load part
 * pins each server process to one CPU and the load generator to another
 * (bench/placement.mjs; the others are left to the scheduler: on W2
 * pinning did not narrow the spread). `warmupMin` (W2): the warm-up
 * runs at least that many units in each server process (WARMUP);
 * `warmupConnections` (W1): and opens at least that many connections
 * (`sessions` a batch). W1 opens only 20 connections a batch, and on Bun
 * the floors' per-connection code reached JavaScriptCore's top tier only
 * after about 140: both stopped warming up after 4 batches with their
 * compiler idle for two, then compiled in measured rounds 2–4 (batches
 * 6–8), the floor 0.35 and 1.25–1.28 µs per message, the contract floor
 * 0.56–0.62 and 3.11–3.26 (15 % of that round), in both bench runs of
 * 62d22d2; W4's 100 a batch got there in its third.
 * `sideWarmup` (W2): smtp-server's warm-up is that many batches, no more.
 * `rewarm` (W2): before each measured run, unmeasured batches of the
 * run's load against the same server until one is back at the level its
 * warm-up ended at (REWARM; every server but smtp-server).
 *
 * W2 (one 1 KB message per connection, 20 sessions) is bounded by
 * smtp-server: its 100 ms wait before each greeting holds it near 200
 * connections a second, so a run of 2,400 connections takes it about 12 s.
 * At 1,200 (the quick count before) a run was 0.08–0.23 s of server CPU and
 * Node 24 smtpd's ÷ floor median moved 1.38–1.91 between two bench runs of
 * the same code; at 400 it moved 0.9–2.5×. Most of that was compilation,
 * not noise: the runtimes' compiler threads keep working until 15,000–
 * 19,000 W2 connections (per thread, /proc/<pid>/task/*: Node 24 smtpd's
 * other threads took ~85 µs per connection in one 1,200-connection batch
 * at about 10,000 connections while its main thread stayed at ~128; Deno
 * ~77 at about 16,000; Bun's 10–40 per connection until about 15,000),
 * after the main thread's cost had flattened, so the warm-up's stopping
 * rule (no new low twice) ended at 8,000–10,000 connections and a measured
 * round took the compile. Hence `warmupMin` 20,000 for every server, and
 * smtp-server (a side column, not a goal's headline) warmed up by one
 * batch only, which keeps W2's wall time about where it was with twice
 * the connections per run.
 *
 * W4 (100 sessions × 10 KB) ran 1,800 messages per run in the quick mode:
 * 0.05–0.1 s of server CPU on a 2-core Xeon, and a warm-up of 3 batches
 * was 5,400 messages, while JavaScriptCore compiles smtpd's largest
 * functions until about 16,000: Bun smtpd's warm-up stopped at 7,200 on a
 * plateau (94 → 75 → 78 → 79 µs/msg) and its measured rounds went on
 * falling (60 → 70 → 55 → 47 → 46), so its median moved 42–55 µs/msg
 * between bench runs. At 5,400 per run (3 batches: 16,200), three bench
 * runs of the same code, pinned (bench/placement.mjs): Bun smtpd ÷ floor
 * moved x1.11 within a run (max ÷ min of its rounds, mean of the three)
 * against x1.40 at 1,800, smtpd ÷ contract floor x1.09 against x1.44, and
 * Bun smtpd's CPU per message x1.10 against x1.44.
 */
export const WORKLOADS = {
  W1: {
    desc: "20 sessions, 1 KB, many per connection (smtp-source -d)",
    sessions: 20,
    messages: 20000,
    quick: 5000,
    size: KB,
    tool: "source",
    reuse: true,
    unit: "msg",
    pin: true,
    warmupConnections: 200,
  },
  W2: {
    desc: "20 sessions, 1 KB, one per connection (smtp-source)",
    sessions: 20,
    messages: 5000,
    quick: 2400,
    size: KB,
    tool: "source",
    reuse: false,
    unit: "conn",
    warmupMin: 20000,
    sideWarmup: 1,
    rewarm: true,
  },
  W3: {
    desc: "4 sessions, 1 MB (smtp-source -d)",
    sessions: 4,
    messages: 200,
    quick: 100,
    size: MB,
    tool: "source",
    reuse: true,
    unit: "MB",
  },
  W4: {
    desc: "100 sessions, 10 KB (smtp-source -d)",
    sessions: 100,
    messages: 10000,
    quick: 5400,
    size: 10 * KB,
    tool: "source",
    reuse: true,
    unit: "msg",
    pin: true,
  },
  W5: {
    desc: "20 sessions, 1 KB, pipelined DATA (bench/client.mjs)",
    sessions: 20,
    messages: 20000,
    quick: 2500,
    size: KB,
    tool: "client",
    reuse: true,
    unit: "msg",
  },
  W6: {
    desc:
      "20 sessions, 1 KB, pipelined BDAT n LAST (bench/client.mjs --bdat; only servers that offer CHUNKING)",
    sessions: 20,
    messages: 20000,
    quick: 2500,
    size: KB,
    tool: "bdat",
    reuse: true,
    unit: "msg",
  },
  W7: {
    desc:
      "4 sessions, 1 MB, pipelined BDAT n LAST (bench/client.mjs --bdat; only servers that offer CHUNKING)",
    sessions: 4,
    messages: 200,
    quick: 80,
    size: MB,
    tool: "bdat",
    reuse: true,
    unit: "MB",
  },
  W8: {
    desc: "4 sessions, 1 MB, pipelined DATA (bench/client.mjs)",
    sessions: 4,
    messages: 200,
    quick: 80,
    size: MB,
    tool: "client",
    reuse: true,
    unit: "MB",
  },
};

/**
 * BDAT ÷ DATA (issue 9): each BDAT workload and its DATA counterpart with
 * the same client (bench/client.mjs, pipelined), sessions, count and size;
 * `ref` is the smtp-source workload of that size, shown for scale only
 * (another client: no pipelining, HELO, a reply awaited per command).
 */
export const BDAT_PAIRS = [
  { bdat: "W6", data: "W5", ref: "W1" },
  { bdat: "W7", data: "W8", ref: "W3" },
];

/**
 * The warm-up before the measured rounds, per server process: batches of
 * one measured run's load, back to back, until the CPU per message stops
 * falling — the last two batches each within `settle` (3 %) of the
 * cheapest batch before them, or above it: two batches in a row set no new
 * low — after at least `min` batches and at most `max` (warmupLimits: W2
 * sets a larger minimum, and smtp-server's there). JIT tiering goes on
 * for thousands of messages: on Node 24, smtpd's CPU per 1,000 W2
 * connections in one process fell 54 → 40 → 29 → 28 → 27 ticks batch after
 * batch (the runtime floor's: 24 → 17 → 16 → 15), and on Bun,
 * JavaScriptCore still compiled smtpd's largest functions to its top tier
 * (and again after throwing a first build away) until about 16,000 W4
 * messages. A short warm-up (at most 3 batches, stopped by one batch that
 * came out dearer than the one before) left the measured rounds compiling,
 * their ratios drifting down round after round and favouring the smallest
 * code. The report gives each server's batches and its last ones beside
 * the measured median.
 */
export const WARMUP = {
  min: 3,
  max: FULL ? 12 : 10,
  settle: 0.03,
  compiling: 0.02,
  compilingMore: 10,
};

/**
 * Threads whose CPU is the runtime compiling code (by `comm` name; see
 * threadsCpuUs() in common.mjs): JavaScriptCore's `JITWorker` (Bun). V8's
 * helper threads (Node, Deno) compile and mark the heap alike, so they are
 * not told apart.
 */
export const COMPILER_THREADS = ["JITWorker"];

/** A run's compiler-thread CPU per message (COMPILER_THREADS; 0 where none is named). */
export function compilingUsPerMsg(run) {
  let us = 0;
  for (const name of COMPILER_THREADS) us += run.threadsUsPerMsg?.[name] ?? 0;
  return us;
}

/**
 * The re-warm before each measured run of a workload with `rewarm` (W2):
 * unmeasured batches of the run's load against the server, until one
 * costs at most `within` (15 %) above the level its warm-up ended at (the
 * median of its last three batches), at most `max` batches. A Bun server
 * drops its compiled code at a full collection that comes a minute or more
 * after the code last ran (JavaScriptCore keeps a code block past its time
 * to live only if the collection finds it live) and compiles it all again
 * from the interpreter up: dropped at collections 55 s (two bench runs)
 * and 115 s (a probe) after its last batch, kept at collections 1–24 s
 * after it. In a quick bench run of every runtime, Bun smtpd's round 2
 * came 106 s after its round 1 (the rotation of the groups), and during it
 * its process compiled 119 functions with the baseline JIT, 177 with the
 * DFG and 31 with the FTL (its first warm-up batch: 187, 178, 28), then 24
 * with the FTL in each of rounds 3, 4 and 5: 57, 116, 83, 76 and 87 µs per
 * connection against 59–61 at the end of its warm-up. One process on its
 * own did the same after 150 s idle (115, 90, 77, 87 µs in four batches
 * 10 s apart, against 56), and nothing with
 * BUN_JSC_forceCodeBlockLiveness=1 on the same schedule (52–56). It is not
 * a fixed age: idle time drops the code, which the bench's schedule makes
 * (W2's rounds are long: smtp-server's runs) and a server under steady load
 * never has. Bun's floors drop theirs too, but it is small (6–7 baseline,
 * 3–6 DFG, 3–4 FTL compilations: a few µs in one batch). Deno's servers
 * drop theirs too (cause not found; V8's --no-flush-bytecode did not stop
 * it): Deno smtpd's rounds cost 152–159 µs per connection in round 1
 * against 70–74 at the end of its warm-up. One unmeasured
 * batch before each run, no more, left rounds recompiling: the FTL comes
 * back over four to five batches. `within` is above the spread of single
 * W2 batches at the end of a warm-up (Bun's floor: 40.9–46.7 µs per
 * connection).
 */
export const REWARM = { max: 8, within: 0.15 };

/**
 * The warm-up's batch limits for server `kind` under workload `w` (sized):
 * WARMUP's, with at least `w.warmupMin` units and `w.warmupConnections`
 * connections (then up to 3 batches more
 * than that minimum, if more than WARMUP.max), and exactly `w.sideWarmup`
 * batches for smtp-server where the workload sets it (W2; see WORKLOADS).
 */
export function warmupLimits(w, kind) {
  if (kind === "smtp-server" && w.sideWarmup) {
    return { ...WARMUP, min: w.sideWarmup, max: w.sideWarmup };
  }
  const min = Math.max(
    WARMUP.min,
    Math.ceil((w.warmupMin ?? 0) / w.messages),
    Math.ceil((w.warmupConnections ?? 0) / w.sessions),
  );
  return { ...WARMUP, min, max: Math.max(WARMUP.max, min + 3) };
}

/**
 * Whether warm-up batches `xs` (CPU µs per message, in order) stopped
 * falling, within `limits` (WARMUP, or warmupLimits()). `compiling` (the
 * same batches' compiler-thread CPU per message, compilingUsPerMsg()): the
 * warm-up also goes on while either of the last two batches spent more
 * than `limits.compiling` (2 %) of its CPU compiling, up to
 * `limits.compilingMore` batches past `max`. On Bun the CPU criterion
 * alone ended W1's warm-up with JavaScriptCore still compiling: smtpd,
 * the floor and the contract floor alike spent 0.6–3.6 µs per message (3–15
 * % of a round) in its JITWorker in one of the first three measured rounds,
 * in every run, and 0–0.4 from the fourth on (20 rounds of 5,000 messages,
 * after 4–10 warm-up batches).
 */
export function warmedUp(xs, limits = WARMUP, compiling = []) {
  const n = xs.length;
  const still = compiling.length === n && n >= 2 &&
    (compiling[n - 1] > limits.compiling * xs[n - 1] ||
      compiling[n - 2] > limits.compiling * xs[n - 2]);
  if (still && n < limits.max + limits.compilingMore) return false;
  if (n >= limits.max) return true;
  if (n < limits.min) return false;
  const floor = (end) => Math.min(...xs.slice(0, end)) * (1 - limits.settle);
  return xs[n - 1] >= floor(n - 2) && xs[n - 2] >= floor(n - 2);
}

/** The workload at the mode's size: `messages` per run (warm-up batch or measured), every server. */
export function sized(w) {
  return { ...w, messages: MESSAGES || (FULL ? w.messages : w.quick) };
}

/** CPU per unit from CPU per message. */
export function perUnit(w, usPerMsg) {
  return w.unit === "MB" ? usPerMsg / (w.size / MB) : usPerMsg;
}

/**
 * The workloads as the bench runs them: one at a time, except a BDAT
 * workload and its DATA counterpart (BDAT_PAIRS), which share their rounds
 * and server processes when both are selected: [DATA, BDAT].
 */
export function workloadPlan() {
  const plan = [];
  const done = new Set();
  for (const name of WORKLOAD_NAMES) {
    if (done.has(name)) continue;
    const pair = BDAT_PAIRS.find((p) => p.bdat === name || p.data === name);
    const names = pair && WORKLOAD_NAMES.includes(pair.bdat) &&
        WORKLOAD_NAMES.includes(pair.data)
      ? [pair.data, pair.bdat]
      : [name];
    for (const n of names) done.add(n);
    plan.push(names);
  }
  return plan;
}
