#!/usr/bin/env node
// The one benchmark command (`npm run bench`): the engine micro-benchmark on
// every runtime, then smtpd, nodemailer's smtp-server, the runtime floor
// (bench/floor.mjs: fixed replies on the runtime's own listener, for scale;
// each on Deno, Bun, Node 20 and Node 24) and Postfix's smtp-sink under the
// same loads, one
// server at a time, alternating A B A B; then the memory bench. Prints the
// report and writes it (bench/RESULTS.md for the default selection; raw
// figures next to it in .tmp/bench-results.json).
//
//   node bench/run.mjs            # quick: shorter loads, 5 measured rounds (≈8 min on 2 cores)
//   node bench/run.mjs --full     # the workloads at full size (7 rounds)
//
// Options:
//   --full                 full message counts (default: quick)
//   --runs N               measured rounds per workload (default 5 quick, 7 full);
//                          one more warm-up round runs first and is discarded
//   --only engine,load,memory     parts to run (default all); a runtime list
//                          (--only bun,node24) is taken as --runtimes
//   --runtimes deno,bun,node20,node24
//   --servers smtpd,smtp-server,floor,smtp-sink
//   --workloads W1,W2,W3,W4,W5,W6,W7,W8
//   --out PATH             where to write the report (default: bench/RESULTS.md
//                          for the default selection, else .tmp/bench-results.md)
//   --mem-runs N           fresh processes per server in the memory bench
//                          (default 1 quick, 3 full; the median is reported)
//   --no-write             do not write the report (JSON still goes to .tmp/)
//   --messages N           messages (W2: connections) per measured run, every
//                          server and selected workload (default: the mode's counts)
//   --lib src|dist         smtpd's code on every runtime (default: what its users
//                          install: the npm build on Node and Bun, the sources on
//                          Deno; see bench/launch.mjs)
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
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, isAbsolute, join } from "node:path";
import process from "node:process";
import {
  canConnect,
  freePort,
  loadavg,
  Noise,
  schedCpuUs,
  sleep,
  spread,
  statCpuUs,
} from "./common.mjs";
import {
  ALL_RUNTIMES,
  BIN,
  defaultLib,
  ensureBuilt,
  libraryFile,
  root,
  scriptArgv,
  tsArgv,
} from "./launch.mjs";

const argv = process.argv.slice(2);
const flag = (name) => argv.includes(`--${name}`);
const value = (name) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : undefined;
};
const ALL_PARTS = ["engine", "load", "memory"];
const ALL_SERVERS = ["smtpd", "smtp-server", "floor", "smtp-sink"];
const ALL_WORKLOADS = ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8"];
const pick = (text, all) =>
  text === undefined ? all : text.split(",").filter((x) => all.includes(x));
// `--only bun,node24` selects runtimes; `--only engine,load` selects parts.
const onlyRuntimes = (value("only") ?? "").split(",").some((x) =>
  ALL_RUNTIMES.includes(x)
);
const FULL = flag("full");
const RUNS = Math.max(1, Number(value("runs")) || (FULL ? 7 : 5));
const PARTS = onlyRuntimes ? ALL_PARTS : pick(value("only"), ALL_PARTS);
const RUNTIME_NAMES = pick(
  value("runtimes") ?? (onlyRuntimes ? value("only") : undefined),
  ALL_RUNTIMES,
);
const SERVER_KINDS = pick(value("servers"), ALL_SERVERS);
const WORKLOAD_NAMES = pick(value("workloads"), ALL_WORKLOADS);
const DEFAULT_SELECTION = PARTS.length === ALL_PARTS.length &&
  RUNTIME_NAMES.length === ALL_RUNTIMES.length &&
  SERVER_KINDS.length === ALL_SERVERS.length &&
  WORKLOAD_NAMES.length === ALL_WORKLOADS.length;
const LOAD_TIMEOUT = FULL ? 900_000 : 120_000;
const IDLE_CONNECTIONS = 1000;
/** Runtime flags that expose a full GC to bench/control.mjs (Bun has Bun.gc). */
const GC_FLAGS = {
  deno: ["--v8-flags=--expose-gc"],
  node20: ["--expose-gc"],
  node24: ["--expose-gc"],
};
/** Fresh server processes per server in the memory bench (median of them). */
const MEM_RUNS = Math.max(1, Number(value("mem-runs")) || (FULL ? 3 : 1));
/** Other processes' CPU (cores) above which a part is flagged noisy. */
const NOISY_CORES = 0.25;
const BIG_MB = 100;
const SMTP_SOURCE = "/usr/sbin/smtp-source";
const SMTP_SINK = "/usr/sbin/smtp-sink";
const HAVE_POSTFIX = existsSync(SMTP_SOURCE) && existsSync(SMTP_SINK);

const { deno, bun, node20, node24 } = BIN;
/**
 * The smtpd code each runtime's servers load: what its users install (the
 * npm build on Node and Bun, the sources on Deno: bench/launch.mjs), or
 * `--lib src|dist` for every runtime.
 */
const LIB = Object.fromEntries(
  ALL_RUNTIMES.map((rt) => [
    rt,
    ["src", "dist"].includes(value("lib")) ? value("lib") : defaultLib(rt),
  ]),
);
const RUNTIMES = Object.fromEntries(
  ALL_RUNTIMES.map((rt) => [rt, { ok: BIN[rt] !== null }]),
);
const clientNode = node24 ?? process.execPath;

// ------------------------------------------------------------------ helpers

/** "runtime\tfile" for each library file an smtpd server said it loaded. */
const loaded = new Set();

const log = (...a) => console.error(...a);

function version(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  return (r.stdout || r.stderr || "").split("\n")[0].trim();
}

/** VmHWM and VmRSS of `pid` in kB. */
function memKb(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/status`, "utf8");
    return {
      hwm: Number(/VmHWM:\s+(\d+)/.exec(s)?.[1]),
      rss: Number(/VmRSS:\s+(\d+)/.exec(s)?.[1]),
    };
  } catch {
    return { hwm: NaN, rss: NaN };
  }
}

// ------------------------------------------------------------------ servers

/** A server process: smtpd or smtp-server on a runtime, smtp-sink, or the bare runtime. */
class ServerProc {
  /** `gc`: start the runtime with a full GC exposed (the `gc` control command). */
  constructor(kind, runtime, { gc = false } = {}) {
    this.kind = kind;
    this.runtime = runtime;
    this.gc = gc;
    this.name = runtime ? `${kind}@${runtime}` : kind;
    this.lines = [];
    this.waiters = [];
    this.stderr = "";
  }

  async start() {
    let cmd;
    let args;
    if (this.kind === "smtp-sink") {
      this.port = await freePort();
      cmd = SMTP_SINK;
      args = [
        ...(process.getuid?.() === 0 ? ["-u", "nobody"] : []),
        `127.0.0.1:${this.port}`,
        "1000",
      ];
    } else {
      // The bare runtime is launched exactly as the servers are.
      const flags = this.gc ? GC_FLAGS[this.runtime] ?? [] : [];
      [cmd, ...args] = this.kind === "bare"
        ? scriptArgv(this.runtime, "bench/bare.mjs", [], {
          lib: LIB[this.runtime],
          flags,
        })
        : this.kind === "floor"
        ? scriptArgv(this.runtime, "bench/floor.mjs", [], { flags })
        : scriptArgv(this.runtime, "bench/server.mjs", [this.kind], {
          lib: LIB[this.runtime],
          flags,
        });
    }
    this.child = spawn(cmd, args, {
      cwd: root,
      stdio: ["pipe", "pipe", "pipe"],
      env: { ...process.env, NO_COLOR: "1" },
    });
    this.pid = this.child.pid;
    this.exited = new Promise((r) => this.child.once("exit", r));
    let buf = "";
    this.child.stdout.setEncoding("utf8");
    this.child.stdout.on("data", (d) => {
      buf += d;
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const w = this.waiters.shift();
        if (w) w(line);
        else this.lines.push(line);
      }
    });
    this.child.stderr.setEncoding("utf8");
    this.child.stderr.on("data", (d) => {
      if (this.stderr.length < 4000) this.stderr += d;
    });
    if (this.kind === "smtp-sink") {
      for (let i = 0; i < 100 && !(await canConnect(this.port)); i++) {
        await sleep(50);
      }
      if (!(await canConnect(this.port))) {
        throw new Error(`${this.name} did not start: ${this.stderr}`);
      }
    } else {
      const ready = await this.nextLine(30_000);
      const m = /^READY (\d+) ?(.*)/.exec(ready ?? "");
      if (!m) throw new Error(`${this.name} did not start: ${this.stderr}`);
      this.port = Number(m[1]);
      // What the server says it loaded (bench/server.mjs).
      if (this.kind === "smtpd") loaded.add(`${this.runtime}\t${m[2]}`);
    }
    return this;
  }

  nextLine(ms) {
    if (this.lines.length > 0) return Promise.resolve(this.lines.shift());
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== done);
        resolve(null);
      }, ms);
      const done = (line) => {
        clearTimeout(t);
        resolve(line);
      };
      this.waiters.push(done);
    });
  }

  /** CPU µs so far: the process's own figure (process.cpuUsage) when it has a control channel, and /proc's. */
  async cpu() {
    const ext = schedCpuUs(this.pid);
    const stat = statCpuUs(this.pid);
    if (this.kind === "smtp-sink" || this.kind === "bare") {
      return { own: NaN, ownUser: NaN, sched: ext, stat };
    }
    this.child.stdin.write("stats\n");
    const line = await this.nextLine(10_000);
    let own = NaN;
    let ownUser = NaN;
    try {
      const s = JSON.parse(line);
      own = s.userUs + s.systemUs;
      ownUser = s.userUs;
    } catch { /* no answer */ }
    return { own, ownUser, sched: ext, stat };
  }

  mem() {
    return memKb(this.pid);
  }

  /** A full GC in the server, then its memory (bench/control.mjs `gc`), or null. */
  async gcMem() {
    this.child.stdin.write("gc\n");
    const line = await this.nextLine(30_000);
    try {
      const m = JSON.parse(line);
      return m.collected ? m : null;
    } catch {
      return null;
    }
  }

  async stop() {
    if (!this.child || this.child.exitCode !== null) return;
    this.child.stdin.end();
    if (this.kind === "smtp-sink") this.child.kill("SIGTERM");
    const t = await Promise.race([this.exited.then(() => true), sleep(5000)]);
    if (!t) {
      this.child.kill("SIGKILL");
      await this.exited;
    }
  }
}

/**
 * CPU µs between two cpu() readings: own accounting if present, else /proc
 * sched; the user part from own accounting, else /proc/<pid>/stat's share.
 */
function cpuDelta(a, b) {
  const own = b.own - a.own;
  const us = Number.isFinite(own) ? own : b.sched - a.sched;
  const statUser = b.stat.user - a.stat.user;
  const statAll = statUser + b.stat.system - a.stat.system;
  const ownUser = b.ownUser - a.ownUser;
  return {
    us,
    userUs: Number.isFinite(ownUser)
      ? ownUser
      : statAll > 0
      ? (us * statUser) / statAll
      : NaN,
    schedUs: b.sched - a.sched,
    statUs: statAll,
  };
}

// -------------------------------------------------------------- statistics

// ------------------------------------------------------------ machine noise

// ---------------------------------------------------------------- workloads

const KB = 1024;
const MB = 1024 * KB;
/**
 * The workloads. `messages` is the full count, `quick` the quick mode's
 * (the quick mode shrinks counts, never the number of rounds). The quick
 * counts give a measured run about 0.3–1 s of server CPU (W1 and W4, the
 * goals' per-message workloads, the most) and keep the quick bench within
 * about 8 minutes on 2 cores. `quickSmtpServer`: smtp-server's quick count
 * where it differs (W2: its 100 ms wait before each greeting holds it near
 * 180 connections a second, so a run of it is long in wall time and short
 * in CPU). `unit` is what the CPU is reported per: a message, a connection
 * (W2 sends one message per connection), or a MiB of message (W3).
 */
const WORKLOADS = {
  W1: {
    desc: "20 sessions, 1 KB, many per connection (smtp-source -d)",
    sessions: 20,
    messages: 20000,
    quick: 5000,
    size: KB,
    tool: "source",
    reuse: true,
    unit: "msg",
  },
  W2: {
    desc: "20 sessions, 1 KB, one per connection (smtp-source)",
    sessions: 20,
    messages: 5000,
    quick: 1000,
    quickSmtpServer: 300,
    size: KB,
    tool: "source",
    reuse: false,
    unit: "conn",
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
    quick: 1800,
    size: 10 * KB,
    tool: "source",
    reuse: true,
    unit: "msg",
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
const BDAT_PAIRS = [
  { bdat: "W6", data: "W5", ref: "W1" },
  { bdat: "W7", data: "W8", ref: "W3" },
];

/**
 * The workload at the mode's size: `messages` per measured run, and
 * `warmup` for the warm-up round: two runs' worth (WARMUP_RUNS). JIT
 * tiering goes on for thousands of messages: on Node 24, smtpd's CPU per
 * 1,000 W2 connections in one process fell 54 → 40 → 29 → 28 → 27 ticks
 * batch after batch (the runtime floor's: 24 → 17 → 16 → 15), so a warm-up
 * of a quarter run left the first measured rounds still compiling, their
 * ratios drifting down round after round and favouring the smallest code.
 */
const WARMUP_RUNS = 2;

function sized(w) {
  const messages = Number(value("messages")) || (FULL ? w.messages : w.quick);
  const smtpServer = Number(value("messages")) || FULL
    ? messages
    : w.quickSmtpServer ?? messages;
  const warmup = (n) => Math.max(w.sessions, n * WARMUP_RUNS);
  return {
    ...w,
    messages,
    warmup: warmup(messages),
    smtpServer,
    smtpServerWarmup: warmup(smtpServer),
  };
}

/** CPU per unit from CPU per message. */
function perUnit(w, usPerMsg) {
  return w.unit === "MB" ? usPerMsg / (w.size / MB) : usPerMsg;
}

/** Runs one load against `port`; resolves {ok, skipped, ms, error}. */
function runLoad(w, port) {
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
    const child = spawn(cmd, args, {
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
function runClient(args) {
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

/** The EHLO keywords a server offers. */
async function ehloKeywords(port) {
  const r = await runClient(["--port", String(port), "--probe"]);
  try {
    return JSON.parse(r.stdout).ehlo;
  } catch {
    return [];
  }
}

/** The servers to run, as [kind, runtime] (smtp-sink's runtime is null). */
function serverList() {
  const out = [];
  for (const rt of RUNTIME_NAMES) {
    if (!RUNTIMES[rt].ok) continue;
    for (const k of ["smtpd", "smtp-server", "floor"]) {
      if (SERVER_KINDS.includes(k)) out.push([k, rt]);
    }
  }
  if (SERVER_KINDS.includes("smtp-sink") && HAVE_POSTFIX) {
    out.push(["smtp-sink", null]);
  }
  return out;
}

/** Starts a server process per `[kind, runtime]` (ServerProc `options`: `gc`); those that fail are logged and left out. */
async function startAll(specs, options = {}) {
  const servers = [];
  for (const [kind, rt] of specs) {
    const s = new ServerProc(kind, rt, options);
    try {
      await s.start();
      servers.push(s);
    } catch (e) {
      log(`  ${s.name}: ${e.message}`);
      await s.stop().catch(() => {});
    }
  }
  return servers;
}

/** Waits until the server's CPU time stops moving (closing sessions, GC), at most 300 ms. */
async function settle(s) {
  let prev = schedCpuUs(s.pid);
  for (let i = 0; i < 15; i++) {
    await sleep(20);
    const now = schedCpuUs(s.pid);
    if (!(now - prev > 200)) return;
    prev = now;
  }
}

/**
 * The workloads as the bench runs them: one at a time, except a BDAT
 * workload and its DATA counterpart (BDAT_PAIRS), which share their rounds
 * and server processes when both are selected: [DATA, BDAT].
 */
function workloadPlan() {
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

/**
 * One workload, or a DATA and a BDAT workload together (workloadPlan):
 * fresh server processes, then RUNS + 1 rounds (the first is the warm-up,
 * a shorter load, the same for every server, discarded). In each round
 * every runtime's group (smtpd, smtp-server, smtp-sink) runs back to back,
 * in the order A B C on even rounds and C B A on odd ones; the order of the
 * groups rotates every round. smtp-sink thus runs once per group, and the
 * ratios to it pair each run with the smtp-sink run of the same group.
 * With two workloads, each server runs both back to back on its turn, DATA
 * then BDAT on even rounds and BDAT then DATA on odd ones, so that a BDAT ÷
 * DATA ratio pairs two runs of one server process seconds apart; a server
 * without CHUNKING runs only the DATA one.
 */
async function benchWorkloads(names) {
  const ws = [];
  const results = [];
  for (const name of names) {
    const w = sized(WORKLOADS[name]);
    if (w.tool === "source" && !HAVE_POSTFIX) {
      log(`${name}: skipped (no smtp-source)`);
      results.push({
        name,
        w,
        rows: [],
        ratios: [],
        skipped: ["no smtp-source"],
      });
    } else ws.push({ name, w, skipped: [] });
  }
  if (ws.length === 0) return results;
  for (const { name, w } of ws) {
    log(
      `\n${name}: ${w.desc}: ${w.messages} messages of ${w.size} B` +
        (w.smtpServer !== w.messages ? ` (smtp-server ${w.smtpServer})` : "") +
        ` (warm-up: ${WARMUP_RUNS} runs' worth)` +
        (ws.length > 1
          ? `; run together with ${
            ws.filter((y) => y.name !== name).map((y) => y.name).join(", ")
          }`
          : ""),
    );
  }
  const noise = new Noise();
  let servers = await startAll(serverList());
  /** The servers each workload runs on (BDAT: those offering CHUNKING). */
  const runsOn = new Map();
  for (const x of ws) {
    // The runtime floor is for scale under smtp-source's loads only.
    const all = new Set(
      servers.filter((s) => s.kind !== "floor" || x.w.tool === "source"),
    );
    if (x.w.tool !== "bdat") {
      runsOn.set(x.name, all);
      continue;
    }
    const offer = new Set();
    for (const s of all) {
      if ((await ehloKeywords(s.port)).includes("CHUNKING")) offer.add(s);
      else {
        const line = `${s.name}: skipped, its EHLO reply has no CHUNKING`;
        log(`  ${x.name}: ${line}`);
        x.skipped.push(line);
      }
    }
    runsOn.set(x.name, offer);
  }
  const used = servers.filter((s) => ws.some((x) => runsOn.get(x.name).has(s)));
  for (const s of servers) if (!used.includes(s)) await s.stop();
  servers = used;
  const rows = new Map(
    ws.map((x) => [
      x.name,
      new Map(
        servers.filter((s) => runsOn.get(x.name).has(s)).map((s) => [s.name, {
          server: s.kind,
          runtime: s.runtime,
          runs: [],
          errors: [],
        }]),
      ),
    ]),
  );
  const sink = servers.find((s) => s.kind === "smtp-sink");
  const runtimes = [...new Set(servers.map((s) => s.runtime))].filter((r) =>
    r !== null
  );
  const groups = runtimes.length > 0
    ? runtimes.map((rt) => ({
      rt,
      seq: [
        ...servers.filter((s) => s.runtime === rt),
        ...(sink ? [sink] : []),
      ],
    }))
    : sink
    ? [{ rt: null, seq: [sink] }]
    : [];
  try {
    for (let round = 0; round <= RUNS; round++) {
      const warmup = round === 0;
      const order = round % 2 === 1 ? [...ws].reverse() : ws;
      for (let g = 0; g < groups.length; g++) {
        const group = groups[(g + round) % groups.length];
        const seq = round % 2 === 1 ? [...group.seq].reverse() : group.seq;
        for (const s of seq) {
          for (const x of order) {
            if (!runsOn.get(x.name).has(s)) continue;
            const row = rows.get(x.name).get(s.name);
            const run = await measure(s, x.w, warmup, round, group.rt);
            const tag = (warmup ? "warm-up" : `run ${round}`) +
              (ws.length > 1 ? ` ${x.name}` : "");
            if (!run.ok) {
              row.errors.push(`${tag}: ${run.error}`);
              if (!warmup) row.runs.push({ round, group: group.rt, ok: false });
              log(`  ${s.name.padEnd(20)} ${tag}: FAILED ${run.error}`);
              continue;
            }
            if (!warmup) row.runs.push(run);
            log(
              `  ${s.name.padEnd(20)} ${tag.padEnd(10)}: ${
                run.msgPerS.toFixed(0).padStart(6)
              } msg/s ${
                perUnit(x.w, run.cpuUsPerMsg).toFixed(1).padStart(8)
              } µs CPU/${x.w.unit} ${(run.cpuUs / 1e6).toFixed(2)} s CPU` +
                (s.kind === "smtp-sink" && group.rt
                  ? ` (with ${group.rt})`
                  : ""),
            );
          }
        }
      }
    }
    for (const x of ws) {
      for (const s of servers) {
        const row = rows.get(x.name).get(s.name);
        if (row) row.peakRssKb = s.mem().hwm;
      }
    }
  } finally {
    for (const s of servers) await s.stop();
  }
  const load = noise.stop();
  log(
    `  load average ${fmtLoad(load.before)} before, max ${
      load.duringMax.toFixed(2)
    } during, ${fmtLoad(load.after)} after; other work ${
      load.otherCores.toFixed(2)
    } cores`,
  );
  const together = ws.length > 1 ? ws.map((x) => x.name) : null;
  for (const x of ws) {
    results.push({
      name: x.name,
      w: x.w,
      load,
      skipped: x.skipped,
      together,
      ...summarize(x.w, [...rows.get(x.name).values()]),
    });
  }
  return results;
}

/**
 * One run of workload `w` against server `s`: CPU before, the load, a
 * pause until the server's CPU stops moving, CPU after. The warm-up run
 * sends `w.warmup` messages, a measured one `w.messages`.
 */
async function measure(s, w, warmup, round, group) {
  const peer = s.kind === "smtp-server";
  const messages = peer
    ? (warmup ? w.smtpServerWarmup : w.smtpServer)
    : (warmup ? w.warmup : w.messages);
  const a = await s.cpu();
  const r = await runLoad({ ...w, messages }, s.port);
  await settle(s);
  const b = await s.cpu();
  if (!r.ok) return { round, group, ok: false, error: r.error };
  const cpu = cpuDelta(a, b);
  return {
    round,
    group,
    ok: true,
    ms: r.ms,
    cpuUs: cpu.us,
    msgPerS: messages / (r.ms / 1000),
    cpuUsPerMsg: cpu.us / messages,
    userUsPerMsg: cpu.userUs / messages,
  };
}

/** Per-server medians and spreads, and per-runtime ratios taken round by round. */
function summarize(w, rows) {
  const byKey = (server, runtime) =>
    rows.find((r) => r.server === server && r.runtime === runtime);
  const sink = byKey("smtp-sink", null);
  /** Ratios of `row`'s runs to `peer`'s run of the same round (and group). */
  const paired = (row, peer, field) => {
    if (!row || !peer) return null;
    const xs = [];
    for (const run of row.runs) {
      const p = peer.runs.find((x) =>
        x.round === run.round && (peer !== sink || x.group === run.group)
      );
      xs.push(run.ok && p?.ok ? run[field] / p[field] : NaN);
    }
    return spread(xs);
  };
  const serverRows = rows.map((row) => {
    const ok = row.runs.filter((r) => r.ok);
    return {
      server: row.server,
      runtime: row.runtime,
      okRuns: ok.length,
      runs: row.runs.length,
      cpuS: spread(ok.map((r) => r.cpuUs / 1e6)),
      cpu: spread(ok.map((r) => perUnit(w, r.cpuUsPerMsg))),
      user: spread(ok.map((r) => perUnit(w, r.userUsPerMsg))),
      msgPerS: spread(ok.map((r) => r.msgPerS)),
      peakRssKb: row.peakRssKb,
      errors: row.errors,
      raw: row.runs,
    };
  });
  const ratios = [];
  for (const rt of RUNTIME_NAMES) {
    const smtpd = byKey("smtpd", rt);
    if (!smtpd) continue;
    const peer = byKey("smtp-server", rt);
    const floor = byKey("floor", rt);
    ratios.push({
      runtime: rt,
      cpuVsFloor: paired(smtpd, floor, "cpuUsPerMsg"),
      floorCpuVsSink: paired(floor, sink, "cpuUsPerMsg"),
      cpuVsSmtpServer: paired(smtpd, peer, "cpuUsPerMsg"),
      speedVsSmtpServer: paired(smtpd, peer, "msgPerS"),
      cpuVsSink: paired(smtpd, sink, "cpuUsPerMsg"),
      peerCpuVsSink: paired(peer, sink, "cpuUsPerMsg"),
    });
  }
  return { rows: serverRows, ratios };
}

// ------------------------------------------------------------------- memory

/** Holds `n` idle sessions open on `port` (bench/client.mjs --idle). */
async function holdIdle(port, n) {
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

/** Resets VmHWM of `pid` to its current RSS (Linux 4.0+), true if it worked. */
function resetPeak(pid) {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

/** The memory bench's warm-up: 20 messages of 1 KB on one session. */
async function warmUpMemory(s, row) {
  const warm = await runClient([
    "--port",
    String(s.port),
    "--sessions",
    "1",
    "--messages",
    "20",
    "--size",
    "1024",
  ]);
  if (!warm.ok) row.errors.push(`warm-up: ${warm.error}`);
}

/** One fresh server process through the memory measurements. */
async function memoryOnce(kind, rt) {
  const [s] = await startAll([[kind, rt]]);
  if (!s) return null;
  const row = { errors: [] };
  try {
    await sleep(1000);
    row.idleRssKb = s.mem().rss;
    await warmUpMemory(s, row);
    await sleep(500);
    row.beforeIdleKb = s.mem().rss;
    const h = await holdIdle(s.port, IDLE_CONNECTIONS);
    if (h.ok) {
      await sleep(1000);
      row.withIdleKb = s.mem().rss;
      row.perIdleKb = (row.withIdleKb - row.beforeIdleKb) / IDLE_CONNECTIONS;
    } else row.errors.push(`idle sessions: ${h.error}`);
    await h.release();
    await sleep(1000);
    row.peakReset = resetPeak(s.pid);
    const before = s.mem();
    row.beforeBigKb = before.rss;
    const big = await runClient([
      "--port",
      String(s.port),
      "--big",
      String(BIG_MB),
    ]);
    await sleep(200);
    const after = s.mem();
    if (big.ok) {
      row.bigPeakKb = after.hwm;
      row.bigGrowthKb = row.peakReset ? after.hwm - before.rss : NaN;
      row.bigSeconds = big.ms / 1000;
    } else row.errors.push(`${BIG_MB} MB message: ${big.error}`);
  } finally {
    await s.stop();
  }
  return row;
}

/**
 * What 1,000 idle sessions keep after a full GC, in a fresh process started
 * with the GC exposed (its own, so that the collections do not touch the
 * figures of memoryOnce): 20 warm-up messages, a full GC, the sessions held
 * open after EHLO, a full GC again; the RSS and JS heap deltas ÷ sessions.
 * RSS without a GC (memoryOnce) also counts garbage not yet collected and
 * the room the runtime grew its heap by; this is what the sessions hold.
 */
async function retainedOnce(kind, rt) {
  const [s] = await startAll([[kind, rt]], { gc: true });
  if (!s) return null;
  const row = { errors: [] };
  try {
    await warmUpMemory(s, row);
    await sleep(500);
    const before = await s.gcMem();
    if (before === null) {
      row.errors.push("no full GC on this runtime");
      return row;
    }
    const h = await holdIdle(s.port, IDLE_CONNECTIONS);
    if (h.ok) {
      await sleep(1000);
      const after = await s.gcMem();
      if (after !== null) {
        row.rssKb = (after.rss - before.rss) / 1024 / IDLE_CONNECTIONS;
        row.heapKb = (after.heapUsed - before.heapUsed) / 1024 /
          IDLE_CONNECTIONS;
        row.externalKb = (after.external - before.external) / 1024 /
          IDLE_CONNECTIONS;
      }
    } else row.errors.push(`idle sessions: ${h.error}`);
    await h.release();
  } finally {
    await s.stop();
  }
  return row;
}

/**
 * The memory bench: the bare runtime's RSS; then for every server a fresh
 * process: its idle RSS (1 s after READY), 20 warm-up messages, the RSS
 * delta with IDLE_CONNECTIONS idle sessions held open (after EHLO), and
 * the peak RSS growth while one BIG_MB MB message goes through. With
 * MEM_RUNS > 1 every figure is the median over that many fresh processes
 * (servers interleaved), and the bare runtime's too.
 */
async function benchMemory() {
  const noise = new Noise();
  const bare = {};
  log(`\nMemory`);
  for (const rt of RUNTIME_NAMES) {
    if (!RUNTIMES[rt].ok) continue;
    const xs = [];
    for (let rep = 0; rep < MEM_RUNS; rep++) {
      const b = new ServerProc("bare", rt);
      try {
        await b.start();
        await sleep(1000);
        xs.push(b.mem().rss);
      } catch (e) {
        log(`  bare@${rt}: ${e.message}`);
      } finally {
        await b.stop();
      }
    }
    bare[rt] = spread(xs).median;
    log(`  bare ${rt.padEnd(15)} RSS ${mb(bare[rt])} MB`);
  }
  // smtp-sink is left out: the goals compare smtpd with smtp-server and the
  // bare runtime, and smtp-sink stalls with 1,000 sessions held open. The
  // runtime floor is in, for scale: what a receiver that keeps nothing
  // costs per idle session and lets the runtime grow by with a big message.
  const specs = serverList().filter(([k]) => k !== "smtp-sink");
  const samples = new Map(specs.map(([k, rt]) => [`${k}@${rt}`, []]));
  for (let rep = 0; rep < MEM_RUNS; rep++) {
    for (const [kind, rt] of specs) {
      const one = await memoryOnce(kind, rt);
      if (!one) continue;
      samples.get(`${kind}@${rt}`).push(one);
      log(
        `  ${`${kind}@${rt}`.padEnd(20)} idle RSS ${mb(one.idleRssKb)} MB, ` +
          `${fmt(one.perIdleKb, 1)} KB per idle session, ` +
          `+${mb(one.bigGrowthKb)} MB peak with ${BIG_MB} MB` +
          (one.errors.length ? ` (${one.errors.join("; ")})` : ""),
      );
    }
  }
  const retained = new Map();
  for (const [kind, rt] of specs) {
    const r = await retainedOnce(kind, rt);
    if (!r) continue;
    retained.set(`${kind}@${rt}`, r);
    log(
      `  ${`${kind}@${rt}`.padEnd(20)} after a full GC: ${
        fmt(r.rssKb, 1)
      } KB RSS, ${fmt(r.heapKb, 2)} KB JS heap, ${
        fmt(r.externalKb, 2)
      } KB outside it per idle session` +
        (r.errors.length ? ` (${r.errors.join("; ")})` : ""),
    );
  }
  const rows = [];
  for (const [kind, rt] of specs) {
    const xs = samples.get(`${kind}@${rt}`);
    if (xs.length === 0) continue;
    const row = { server: kind, runtime: rt, errors: [], spreads: {} };
    row.retained = retained.get(`${kind}@${rt}`) ?? null;
    for (
      const f of [
        "idleRssKb",
        "perIdleKb",
        "beforeBigKb",
        "bigPeakKb",
        "bigGrowthKb",
        "bigSeconds",
      ]
    ) {
      row.spreads[f] = spread(xs.map((x) => x[f]));
      row[f] = row.spreads[f].median;
    }
    row.idleVsBare = spread(xs.map((x) => x.idleRssKb - bare[rt]));
    row.errors = xs.flatMap((x) => x.errors);
    row.samples = xs;
    rows.push(row);
  }
  const load = noise.stop();
  return { bare, rows, load };
}

// ------------------------------------------------------------------- engine

function benchEngine() {
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

// ------------------------------------------------------------------- report

const fmt = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : "–");
const mb = (kb) => (Number.isFinite(kb) ? (kb / 1024).toFixed(1) : "–");
const rtLabel = (rt) => rt ?? "C";
const fmtLoad = (l) => l.map((x) => fmt(x, 2)).join(" ");
/** "0.62 [0.58–0.66]": median and min–max. */
const ms = (s, d = 2) =>
  !s || !Number.isFinite(s.median)
    ? "–"
    : s.values.length === 1
    ? fmt(s.median, d)
    : `${fmt(s.median, d)} [${fmt(s.min, d)}–${fmt(s.max, d)}]`;
/** The same for a spread of kB, printed in MB. */
const mbs = (s) =>
  !s || !Number.isFinite(s.median)
    ? "–"
    : s.values.length === 1
    ? mb(s.median)
    : `${mb(s.median)} [${mb(s.min)}–${mb(s.max)}]`;
const raw = (s, d = 2) =>
  !s || s.values.length === 0 ? "–" : s.values.map((x) => fmt(x, d)).join(" ");
const loadLine = (l) =>
  `load average (1 min) ${fmt(l.before[0], 2)} before, ${
    fmt(l.duringMean, 2)
  } mean / ${fmt(l.duringMax, 2)} max during, ${
    fmt(l.after[0], 2)
  } after; CPU used by other processes: ${fmt(l.otherCores, 2)} cores; ${
    fmt(l.seconds, 0)
  } s`;

function tables(engine, workloads, memory) {
  const out = [];
  if (engine) {
    out.push("### Engine (no sockets)", "", loadLine(engine.load) + ".", "");
    out.push(
      "| runtime | µs per 1 KB message (with commands) | MB/s, 1 MB bodies | MB/s, 1 MB bodies, every 10th line dot-stuffed |",
    );
    out.push("|---|---:|---:|---:|");
    for (const e of engine.rows) {
      out.push(`| ${e.runtime} | ${e.us1k} | ${e.mbps1m} | ${e.mbps1mDots} |`);
    }
    out.push("");
  }
  for (const r of workloads) {
    const w = r.w;
    out.push(`### ${r.name}: ${w.desc}`, "");
    out.push(
      `${w.messages} messages of ${
        w.size >= MB ? `${w.size / MB} MB` : `${w.size / KB} KB`
      } per run${
        w.smtpServer !== w.messages
          ? ` (smtp-server: ${w.smtpServer}; its 100 ms wait before each greeting makes its runs long in wall time, short in CPU)`
          : ""
      }; ${RUNS} measured rounds after one warm-up round of ${WARMUP_RUNS} times that.` +
        (r.together
          ? ` Run together with ${
            r.together.filter((n) => n !== r.name).join(", ")
          }: same server processes, each server runs both back to back on its turn, the order flipping every round.`
          : "") +
        (r.load ? ` Machine: ${loadLine(r.load)}.` : ""),
      "",
    );
    for (const s of r.skipped) out.push(`- ${s}`);
    if (r.skipped.length > 0) out.push("");
    if (r.rows.length === 0) continue;
    out.push(
      `| server | runtime | ok runs | CPU s per run | CPU µs/${w.unit} median [min–max] | of which user | msg/s median [min–max] | peak RSS MB |`,
    );
    out.push("|---|---|---:|---:|---:|---:|---:|---:|");
    for (const s of r.rows) {
      out.push(
        `| ${s.server} | ${rtLabel(s.runtime)} | ${s.okRuns}/${s.runs} | ${
          fmt(s.cpuS.median, 2)
        } | ${ms(s.cpu, 1)} | ${fmt(s.user.median, 1)} | ${
          ms(s.msgPerS, 0)
        } | ${mb(s.peakRssKb)} |`,
      );
    }
    out.push("");
    if (r.ratios.length > 0) {
      out.push(
        `| runtime | CPU/${w.unit} smtpd ÷ smtp-server: median [min–max] | every round | CPU/${w.unit} smtpd ÷ smtp-sink: median [min–max] | every round | smtpd ÷ runtime floor | floor ÷ smtp-sink | smtp-server ÷ smtp-sink | msg/s smtpd ÷ smtp-server |`,
      );
      out.push("|---|---:|---|---:|---|---:|---:|---:|---:|");
      for (const x of r.ratios) {
        out.push(
          `| ${x.runtime} | ${ms(x.cpuVsSmtpServer)} | ${
            raw(x.cpuVsSmtpServer)
          } | ${ms(x.cpuVsSink)} | ${raw(x.cpuVsSink)} | ${
            ms(x.cpuVsFloor)
          } | ${ms(x.floorCpuVsSink)} | ${ms(x.peerCpuVsSink)} | ${
            ms(x.speedVsSmtpServer)
          } |`,
        );
      }
      out.push("");
    }
    const errors = r.rows.flatMap((s) =>
      s.errors.map((e) => `${s.server}@${rtLabel(s.runtime)}: ${e}`)
    );
    for (const e of errors.slice(0, 10)) out.push(`- failed: ${e}`);
    if (errors.length > 0) out.push("");
  }
  if (memory) {
    out.push(
      "### Memory",
      "",
      `Fresh process per server. Idle RSS: 1 s after it listens. Per idle session: RSS with ${IDLE_CONNECTIONS} sessions ` +
        `held open after EHLO, minus RSS before them, ÷ ${IDLE_CONNECTIONS}; the same after a full GC before and ` +
        `after (another fresh process, started with the GC exposed): RSS, the JS heap in use and the memory held ` +
        `outside it (ArrayBuffers), what the sessions keep rather than garbage and heap room. ${BIG_MB} MB message: peak RSS ` +
        `(VmHWM, reset just before) minus RSS before. ${
          MEM_RUNS === 1
            ? "One fresh process each (`--mem-runs N` for medians)"
            : `Median [min–max] over ${MEM_RUNS} fresh processes each`
        }. Machine: ${loadLine(memory.load)}.`,
      "",
    );
    out.push(
      `| server | runtime | bare runtime RSS MB | idle server RSS MB | idle − bare MB | KB per idle session | after a full GC: KB RSS / JS heap / outside the heap per idle session | RSS before ${BIG_MB} MB message | peak during | growth MB | seconds |`,
    );
    out.push("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (const r of memory.rows) {
      const bare = memory.bare[r.runtime];
      const sp = r.spreads;
      out.push(
        `| ${r.server} | ${rtLabel(r.runtime)} | ${mb(bare)} | ${
          mbs(sp.idleRssKb)
        } | ${mbs(r.idleVsBare)} | ${ms(sp.perIdleKb, 1)} | ${
          retainedCell(r.retained)
        } | ${mbs(sp.beforeBigKb)} | ${mbs(sp.bigPeakKb)} | ${
          mbs(sp.bigGrowthKb)
        } | ${ms(sp.bigSeconds, 2)} |` +
          (r.errors.length > 0 ? ` failed: ${r.errors.join("; ")}` : ""),
      );
    }
    out.push("");
  }
  return out;
}

/** The retained-memory cell of the memory table (retainedOnce), or "–". */
function retainedCell(r) {
  if (!r || r.rssKb === undefined) return r?.errors.join("; ") || "–";
  return `${fmt(r.rssKb, 1)} / ${fmt(r.heapKb, 2)} / ${fmt(r.externalKb, 2)}`;
}

/**
 * BDAT ÷ DATA for smtpd (issue 9), per runtime: CPU per unit of each BDAT
 * workload over its DATA counterpart sent by the same client, round by
 * round (round r of one workload ÷ round r of the other; run together,
 * they are two runs of one server process back to back: benchWorkloads),
 * as median [min–max] and every round; the smtp-source workload of the
 * same size for scale.
 */
function bdatVsData(workloads) {
  const byName = (n) => workloads.find((r) => r.name === n);
  const out = [];
  for (const pair of BDAT_PAIRS) {
    const b = byName(pair.bdat);
    const d = byName(pair.data);
    if (!b || !d) continue;
    const ref = byName(pair.ref);
    const w = b.w;
    for (const rt of RUNTIME_NAMES) {
      const row = (r) =>
        r?.rows.find((x) => x.server === "smtpd" && x.runtime === rt);
      const rb = row(b);
      const rd = row(d);
      if (!rb || !rd) continue;
      const xs = rb.raw.map((run) => {
        const p = rd.raw.find((x) => x.round === run.round);
        return run.ok && p?.ok ? run.cpuUsPerMsg / p.cpuUsPerMsg : NaN;
      });
      const ratio = spread(xs);
      out.push(
        `| ${w.size >= MB ? "1 MB" : "1 KB"} | ${rt} | ${ms(rd.cpu, 1)} | ${
          ms(rb.cpu, 1)
        } | ${ms(ratio)} | ${raw(ratio)} | ${
          Number.isFinite(ratio.median)
            ? `${fmt((1 - ratio.median) * 100, 0)} %`
            : "–"
        } | ${ms(row(ref)?.cpu, 1)} |`,
      );
    }
  }
  if (out.length === 0) return [];
  return [
    "### BDAT vs DATA, smtpd (issue 9)",
    "",
    "smtpd's CPU µs per unit: per message (1 KB) or per MB (1 MB). Same client for both " +
    "sides: bench/client.mjs, pipelined, same sessions, count and size " +
    `(1 KB: ${BDAT_PAIRS[0].bdat} ÷ ${BDAT_PAIRS[0].data}; 1 MB: ${
      BDAT_PAIRS[1].bdat
    } ÷ ${BDAT_PAIRS[1].data}). The ratio is taken round by round ` +
    "(round r of the BDAT workload ÷ round r of the DATA one). When both are " +
    "selected they share their rounds and server processes: on its turn each smtpd " +
    "server runs DATA then BDAT (even rounds) or BDAT then DATA (odd rounds), so " +
    "each ratio pairs two runs of one process seconds apart. " +
    `The smtp-source column (${BDAT_PAIRS[0].ref}, ${
      BDAT_PAIRS[1].ref
    }: no pipelining, a reply awaited per command) is for scale, not part of the ratio.`,
    "",
    "| size | runtime | DATA CPU µs/unit median [min–max] | BDAT CPU µs/unit median [min–max] | BDAT ÷ DATA median [min–max] | every round | 1 − BDAT ÷ DATA (median; > 0: BDAT cheaper) | smtp-source DATA CPU µs/unit |",
    "|---|---|---:|---:|---:|---|---:|---:|",
    ...out,
    "",
  ];
}

/** The goals of issue 12, judged on the medians; the spread is shown. */
function goals(workloads, memory) {
  const out = [];
  const ratio = (name, rt) =>
    workloads.find((r) => r.name === name)?.ratios.find((x) =>
      x.runtime === rt
    );
  /** "met", "**missed**", with a note when the spread crosses the line. */
  const judge = (s, limit) => {
    if (!s || !Number.isFinite(s.median)) return "n/a";
    const met = s.median <= limit;
    const crosses = s.min <= limit && s.max > limit;
    return (met ? "met" : "**missed**") +
      (crosses ? " (spread crosses the limit)" : "");
  };
  const sinkLimit = { bun: 1.15, deno: 1.15, node24: 1.3 };
  /** The runtime floor's own ratio to smtp-sink, for scale. */
  const floorNote = (x) =>
    x.floorCpuVsSink && Number.isFinite(x.floorCpuVsSink.median)
      ? ` (runtime floor: ${fmt(x.floorCpuVsSink.median, 2)}×)`
      : "";
  for (const name of ["W1", "W4"]) {
    for (const rt of RUNTIME_NAMES) {
      const x = ratio(name, rt);
      if (!x) continue;
      if (sinkLimit[rt]) {
        out.push(
          `| ${name} CPU/msg ≤ ${sinkLimit[rt]}× smtp-sink's | ${rt} | ${
            ms(x.cpuVsSink)
          }${floorNote(x)} | ${judge(x.cpuVsSink, sinkLimit[rt])} |`,
        );
      }
      out.push(
        `| ${name} CPU/msg ≤ 0.6× smtp-server's | ${rt} | ${
          ms(x.cpuVsSmtpServer)
        } | ${judge(x.cpuVsSmtpServer, 0.6)} |`,
      );
    }
  }
  for (const rt of RUNTIME_NAMES) {
    const x = ratio("W2", rt);
    if (x) {
      out.push(
        `| W2 CPU/connection ≤ 1.5× smtp-sink's | ${rt} | ${ms(x.cpuVsSink)}${
          floorNote(x)
        } | ${judge(x.cpuVsSink, 1.5)} |`,
      );
    }
  }
  for (const rt of RUNTIME_NAMES) {
    const x = ratio("W3", rt);
    if (x) {
      out.push(
        `| W3 CPU/MB ≤ 0.5× smtp-server's | ${rt} | ${
          ms(x.cpuVsSmtpServer)
        } | ${judge(x.cpuVsSmtpServer, 0.5)} |`,
      );
    }
  }
  if (memory) {
    const row = (server, rt) =>
      memory.rows.find((r) => r.server === server && r.runtime === rt);
    const one = (v, limit) =>
      Number.isFinite(v) && Number.isFinite(limit)
        ? v <= limit ? "met" : "**missed**"
        : "n/a";
    /** The runtime floor's figure, for scale (as for the CPU goals). */
    const floorOf = (rt, figure, unit) => {
      const f = row("floor", rt);
      return f ? ` (runtime floor: ${figure(f)}${unit})` : "";
    };
    for (const rt of RUNTIME_NAMES) {
      const a = row("smtpd", rt);
      if (!a) continue;
      const b = row("smtp-server", rt);
      const limit = Math.min(
        b?.perIdleKb ?? Infinity,
        rt === "bun" ? Infinity : 16,
      );
      out.push(
        `| KB per idle session ≤ smtp-server's${
          rt === "bun" ? "" : " and ≤ 16"
        } | ${rt} | ${ms(a.spreads.perIdleKb, 1)} (smtp-server ${
          ms(b?.spreads.perIdleKb, 1)
        }; after a full GC ${fmt(a.retained?.rssKb, 1)} vs ${
          fmt(b?.retained?.rssKb, 1)
        })${floorOf(rt, (f) => ms(f.spreads.perIdleKb, 1), " KB")} | ${
          one(a.perIdleKb, limit)
        } |`,
      );
      out.push(
        `| ${BIG_MB} MB message adds < 16 MB | ${rt} | ${
          mbs(a.spreads.bigGrowthKb)
        } MB${floorOf(rt, (f) => mbs(f.spreads.bigGrowthKb), " MB")} | ${
          one(a.bigGrowthKb, 16 * 1024 - 1)
        } |`,
      );
      const bare = memory.bare[rt];
      out.push(
        `| idle server ≤ 5 MB above the bare runtime | ${rt} | ${
          mbs(a.idleVsBare)
        } MB (${mb(a.idleRssKb)} vs ${mb(bare)})${
          floorOf(rt, (f) => mbs(f.idleVsBare), " MB")
        } | ${one(a.idleRssKb - bare, 5 * 1024)} |`,
      );
    }
  }
  if (out.length === 0) return [];
  const loads = [...workloads.map((r) => r.load), memory?.load].filter(
    Boolean,
  );
  const other = loads.map((l) => l.otherCores);
  const cores = os.cpus().length;
  const quiet = Math.max(...other) <= NOISY_CORES;
  return [
    "### Goals of issue 12 (reported, not asserted; judged on the median)",
    "",
    `Machine noise: other processes used ${fmt(Math.min(...other), 2)}–${
      fmt(Math.max(...other), 2)
    } of ${cores} cores during the parts below (1-minute load average up to ${
      fmt(Math.max(...loads.map((l) => l.duringMax)), 2)
    }). ` +
    (quiet
      ? "Quiet enough to compare."
      : `**Noisy** (more than ${NOISY_CORES} cores of other work): ratios wander by ` +
        "the spreads shown; rerun on a quiet machine before quoting them."),
    "",
    "| goal | runtime | measured: median [min–max] | |",
    "|---|---|---:|---|",
    ...out,
    "",
  ];
}

// --------------------------------------------------------------------- main

async function main() {
  const started = Date.now();
  const date = new Date().toISOString().slice(0, 16).replace("T", " ");
  const versions = {
    deno: RUNTIMES.deno.ok ? version(deno, ["--version"]) : null,
    bun: RUNTIMES.bun.ok ? `bun ${version(bun, ["--version"])}` : null,
    node20: node20 ? `node ${version(node20, ["--version"])}` : null,
    node24: RUNTIMES.node24.ok
      ? `node ${version(node24, ["--version"])}`
      : null,
    "smtp-server": JSON.parse(
      readFileSync(
        join(root, "node_modules/smtp-server/package.json"),
        "utf8",
      ),
    ).version,
    postfix: version("dpkg-query", ["-W", "-f", "${Version}", "postfix"]),
  };
  const mode = FULL ? "full" : "quick";
  log(
    `bench: ${mode}, ${RUNS} measured rounds + 1 warm-up, parts ${
      PARTS.join(",")
    }, runtimes ${RUNTIME_NAMES.join(",")}; load average ${fmtLoad(loadavg())}`,
  );
  const needsBuild = (PARTS.includes("load") || PARTS.includes("memory")) &&
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
  const elapsed = (Date.now() - started) / 1000;

  const command = `node bench/run.mjs ${argv.join(" ")}`.trim();
  const head = version("git", ["-C", root, "log", "-1", "--format=%h %s"]);
  const dirty = spawnSync("git", [
    "-C",
    root,
    "status",
    "--porcelain",
    "--",
    "mod.ts",
    "src",
    "runtimes",
    "bench",
  ], {
    encoding: "utf8",
  }).stdout?.split("\n").filter((l) => l.length > 3).map((l) => l.slice(3))
    .filter((f) => f !== "bench/RESULTS.md") ?? [];
  const cpuModel =
    (readFileSync("/proc/cpuinfo", "utf8").match(/model name\s*:\s*(.*)/) ??
      [])[1] ?? "unknown";
  const body = [
    ...goals(workloads, memory),
    ...bdatVsData(workloads),
    ...tables(engine, workloads, memory),
  ];
  const md = [
    "# Benchmark results",
    "",
    "Written by `node bench/run.mjs` (never by hand). How to read it: bench/README.md.",
    "",
    `Date: ${date} UTC. Mode: ${mode}, ${RUNS} measured rounds per workload ` +
    `after one warm-up round (discarded), servers alternating A B C / C B A. Took ${
      Math.round(elapsed)
    } s.`,
    "",
    "Command: `" + command + "`",
    "",
    `Machine: ${os.cpus().length} × ${cpuModel}, Linux ${os.release()}. ` +
    "The load average counts the bench itself (a server and a load " +
    'generator: about 1–2); "CPU used by other processes" is the machine\'s busy time minus ' +
    "the bench's own process tree.",
    "",
    `Code: commit ${head || "unknown"}` +
    (dirty.length > 0
      ? ` plus uncommitted changes to ${dirty.join(", ")}`
      : "") +
    ".",
    "",
    ...codeRan(build, engine !== null),
    "Versions: " +
    Object.entries(versions).filter(([, v]) => v).map(([k, v]) =>
      `${k} ${v.replace(/^(deno|bun|node) /, "")}`
    ).join(", ") +
    ".",
    "",
    ...workloadNotes(),
    ...body,
  ].join("\n");
  console.log(body.join("\n"));
  log(`\nbench: done in ${elapsed.toFixed(0)} s`);

  const out = value("out") ??
    (DEFAULT_SELECTION ? "bench/RESULTS.md" : ".tmp/bench-results.md");
  const outPath = isAbsolute(out) ? out : join(root, out);
  const jsonPath = out === "bench/RESULTS.md"
    ? join(root, ".tmp", "bench-results.json")
    : outPath.replace(/(\.md)?$/, ".json");
  mkdirSync(dirname(jsonPath), { recursive: true });
  writeFileSync(
    jsonPath,
    JSON.stringify(
      {
        date: new Date().toISOString(),
        command,
        versions,
        elapsed,
        engine,
        workloads,
        memory,
      },
      null,
      1,
    ),
  );
  if (flag("no-write")) return;
  mkdirSync(dirname(outPath), { recursive: true });
  // A quick run into RESULTS.md keeps the last full run below its own
  // tables, under its own heading, until the next full run.
  const kept = FULL || out !== "bench/RESULTS.md" ? null : lastFullRun(outPath);
  writeFileSync(outPath, kept === null ? md + "\n" : md + "\n\n" + kept);
  // `npm test` runs `deno fmt --check`, which covers bench/.
  if (RUNTIMES.deno.ok) {
    spawnSync(deno, ["fmt", outPath], { cwd: root, stdio: "ignore" });
  }
  log(`wrote ${out} and ${jsonPath.slice(root.length + 1)}`);
}

const LAST_FULL = "## Last full run";

/**
 * The full run recorded in RESULTS.md, as a section to append after a
 * quick run's tables: the file itself when it holds a full run, or the
 * full run a quick run kept in it before. `null` when there is none.
 */
function lastFullRun(path) {
  let old;
  try {
    old = readFileSync(path, "utf8");
  } catch {
    return null;
  }
  const at = old.indexOf(`\n${LAST_FULL}`);
  if (at >= 0) return old.slice(at + 1);
  if (!/^Date: [^]{0,80}?Mode: full\b/m.test(old)) return null;
  const text = old.replace(/^# Benchmark results\n+/, "");
  return `${LAST_FULL}\n\nKept from \`bench/RESULTS.md\` when a quick run replaced ` +
    "the tables above (the command below is the one that made it).\n\n" +
    text;
}

/**
 * Which smtpd code each runtime ran: the file the servers said they
 * loaded (bench/server.mjs prints it), else the one they were told to.
 */
function codeRan(build, engine) {
  const what = (file) =>
    file === "mod.ts"
      ? "`mod.ts` (the TypeScript sources, as JSR serves them)"
      : `\`${file}\` (the npm build)`;
  const per = RUNTIME_NAMES.filter((rt) => RUNTIMES[rt].ok).map((rt) => {
    const files = [...loaded].filter((x) => x.startsWith(`${rt}\t`)).map((
      x,
    ) => x.split("\t")[1]);
    const list = files.length > 0 ? files : [libraryFile(rt, LIB[rt])];
    return `${rt} ${list.map(what).join(" and ")}`;
  });
  if (per.length === 0) return [];
  const when = build
    ? ` dist/ was built by scripts/build.mjs ${
      build.built ? "at the start of this run" : "at " +
        new Date(build.mtime).toISOString().slice(0, 16).replace("T", " ") +
        " UTC (not older than the sources)"
    }.`
    : "";
  return [
    `Code each runtime ran (smtpd's servers, loaded by the plain-JavaScript bench/server.mjs: no tsx, no type stripping on Node): ${
      per.join("; ")
    }.${when} smtp-server's servers load only node_modules/smtp-server.` +
    (engine
      ? " The engine bench runs the .ts sources (Node 20 through tsx, Node 24 stripping types)."
      : ""),
    "",
  ];
}

function workloadNotes() {
  return [
    "Servers: `bench/server.mjs smtpd` (serve() from the code above; onMessage reads `message.raw` to the end), " +
    "`bench/server.mjs smtp-server` (authOptional, AUTH and STARTTLS disabled, no reverse DNS, onData drains the stream; " +
    "its default 100 ms wait before each greeting is left on), `floor` (bench/floor.mjs, W1–W4 and memory: fixed replies on the runtime's own " +
    "listener, no parsing, no hooks: what the runtime costs by itself), and `smtp-sink` (C, Postfix). " +
    "Server CPU is user + system time of the server process: the JS servers' own `process.cpuUsage()` " +
    "(all threads), smtp-sink's from /proc/<pid>/task/*/sched. Peak RSS is VmHWM of the workload's " +
    "server process (fresh per workload; W5 and W6, W8 and W7 share theirs). Ratios pair runs taken " +
    "back to back in the same round.",
    "",
    "smtp-source waits for every reply, so each message costs every server about 4 reads and 4 writes " +
    "on the socket: that system time is a floor shared by all servers, smtp-sink included.",
    "",
  ];
}

await main();
