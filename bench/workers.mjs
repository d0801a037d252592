// One process vs `smtpd --workers N`: the CLI (delivering into a Maildir
// under /dev/shm, so that the disk does not set the pace) under each
// runtime, loaded by Postfix's smtp-source with bench/run.mjs's W1 and W4
// shapes (W4 with 50 sessions, the CLI's per-address limit). Reports throughput (messages/s, wall clock of smtp-source) and
// CPU per message: utime+stime from /proc/<pid>/stat summed over the
// parent and every worker, read before and after the load.
//
//   node bench/workers.mjs [--runtimes deno,bun,node24,node] [--workers 1,2]
//                          [--workloads W1,W4] [--scale 10] [--lib dist|src]
//
// The CLI each runtime runs is what its users install (bench/launch.mjs):
// the npm build's bin (dist/cli.js, built first when stale) on Node and
// Bun, src/cli/main.ts on Deno; `--lib src` runs the sources everywhere
// (Node 20 through tsx).
//
// --scale divides bench/run.mjs's message counts (default 10: W1 2000
// messages, W4 1000). Needs /usr/sbin/smtp-source. Loopback only.
import { spawn } from "node:child_process";
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
} from "node:fs";
import { cpus, loadavg } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import {
  ALL_RUNTIMES,
  BIN,
  defaultLib,
  ensureBuilt,
  tsArgv,
} from "./launch.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
};
const RUNTIMES = opt("runtimes", "deno,bun,node24,node").split(",");
const WORKERS = opt("workers", "1,2").split(",").map(Number);
const WORKLOADS = opt("workloads", "W1,W4").split(",");
const SCALE = Number(opt("scale", "10"));
const SMTP_SOURCE = "/usr/sbin/smtp-source";
const TICK_US = 1e6 / 100; // USER_HZ

const SHAPES = {
  W1: { sessions: 20, messages: 20000, size: 1024 },
  // bench/run.mjs's W4 has 100 sessions, but the CLI allows 50 connections
  // per client address (and under --workers, 50 per worker).
  W4: { sessions: 50, messages: 10000, size: 10 * 1024 },
};

/** bench/launch.mjs's name for a runtime ("node" is Node 20). */
const launchName = (runtime) => runtime === "node" ? "node20" : runtime;
/**
 * The CLI each runtime runs: what its users install (bench/launch.mjs):
 * the npm build's bin (dist/cli.js) on Node and Bun, the sources on Deno
 * (JSR); `--lib src|dist` for every runtime.
 */
const LIB = (runtime) => opt("lib", defaultLib(launchName(runtime)));

function command(runtime) {
  const rt = launchName(runtime);
  if (!ALL_RUNTIMES.includes(rt)) throw new Error(`unknown runtime ${runtime}`);
  const lib = LIB(runtime);
  const main = lib === "src" ? "src/cli/main.ts" : "dist/cli.js";
  const [cmd, ...pre] = lib === "src"
    ? tsArgv(rt)
    : rt === "deno"
    ? [BIN.deno, "run", "-A"]
    : [BIN[rt]];
  return [cmd, [...pre, ...(rt === "deno" ? ["--unstable-net"] : []), main]];
}

function statUs(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) * TICK_US; // utime, stime
  } catch {
    return 0;
  }
}

/** The pid and its descendants. */
function tree(pid) {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    try {
      for (const t of readdirSync(`/proc/${out[i]}/task`)) {
        const c = readFileSync(`/proc/${out[i]}/task/${t}/children`, "utf8");
        out.push(...c.split(" ").filter(Boolean).map(Number));
      }
    } catch { /* gone */ }
  }
  return out;
}

const cpuOf = (pids) => {
  const m = new Map();
  for (const p of pids) m.set(p, statUs(p));
  return m;
};

function startServer(runtime, workers, maildir) {
  const [cmd, base] = command(runtime);
  const child = spawn(cmd, [
    ...base,
    "--port",
    "0",
    "--workers",
    String(workers),
    "--maildir",
    maildir,
    "--quiet",
    "--max-connections",
    "2000",
  ], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (out += d));
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const poll = setInterval(() => {
      // --quiet hides the listening lines: find the port from /proc.
      const pids = tree(child.pid);
      const want = workers === 1 ? 1 : workers + 1;
      const port = listeningPort(pids);
      if (port && pids.length >= want) {
        clearInterval(poll);
        resolve({ child, port, output: () => out });
      } else if (Date.now() - started > 60000 || child.exitCode !== null) {
        clearInterval(poll);
        child.kill("SIGKILL");
        reject(new Error(`${runtime} did not start: ${out}`));
      }
    }, 200);
  });
}

/** A TCP port one of `pids` listens on (from /proc/net/tcp and their fds). */
function listeningPort(pids) {
  const inodes = new Set();
  for (const pid of pids) {
    try {
      for (const fd of readdirSync(`/proc/${pid}/fd`)) {
        try {
          const target = readlinkSafe(`/proc/${pid}/fd/${fd}`);
          const m = /^socket:\[(\d+)\]$/.exec(target);
          if (m) inodes.add(m[1]);
        } catch { /* gone */ }
      }
    } catch { /* gone */ }
  }
  for (const line of readFileSync("/proc/net/tcp", "utf8").split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f[3] === "0A" && inodes.has(f[9])) {
      return parseInt(f[1].split(":")[1], 16);
    }
  }
  return 0;
}

function readlinkSafe(p) {
  try {
    return readlinkSync(p);
  } catch {
    return "";
  }
}

function load(shape, port) {
  const m = Math.max(shape.sessions, Math.round(shape.messages / SCALE));
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const c = spawn(SMTP_SOURCE, [
      "-d",
      "-s",
      String(shape.sessions),
      "-m",
      String(m),
      "-l",
      String(shape.size),
      `127.0.0.1:${port}`,
    ], { stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    c.stderr.on("data", (d) => (err += d));
    c.on(
      "exit",
      (code) =>
        code === 0
          ? resolve({ messages: m, ms: performance.now() - t0 })
          : reject(new Error(`smtp-source exited ${code}: ${err}`)),
    );
  });
}

if (!existsSync(SMTP_SOURCE)) {
  console.error("needs /usr/sbin/smtp-source (Debian package postfix)");
  process.exit(2);
}
if (RUNTIMES.some((rt) => LIB(rt) === "dist")) ensureBuilt();
console.log(
  `code: ${
    RUNTIMES.map((rt) =>
      `${rt} ${command(rt)[1].filter((a) => /\.(ts|js)$/.test(a)).join(" ")}`
    ).join(", ")
  }`,
);
console.log(
  `load average before: ${
    loadavg().map((x) => x.toFixed(2)).join(" ")
  } (${cpus().length} cores)`,
);
console.log(
  "| workload | runtime | workers | messages | msgs/s | CPU µs/msg (all processes) | delivered |",
);
console.log("|---|---|---|---|---|---|---|");
for (const w of WORKLOADS) {
  for (const runtime of RUNTIMES) {
    for (const n of WORKERS) {
      const maildir = mkdtempSync("/dev/shm/smtpd-bench-workers-");
      let server;
      try {
        server = await startServer(runtime, n, maildir);
        const pids = tree(server.child.pid);
        const before = cpuOf(pids);
        const r = await load(SHAPES[w], server.port);
        const after = cpuOf(pids);
        let us = 0;
        for (const p of pids) us += after.get(p) - before.get(p);
        const delivered = readdirSync(`${maildir}/new`).length;
        console.log(
          `| ${w} | ${runtime} | ${n} | ${r.messages} | ${
            (r.messages / (r.ms / 1000)).toFixed(0)
          } | ${(us / r.messages).toFixed(0)} | ${delivered} |`,
        );
      } catch (e) {
        console.log(
          `| ${w} | ${runtime} | ${n} | failed: ${e.message.split("\n")[0]} |`,
        );
      } finally {
        if (server) {
          process.kill(server.child.pid, "SIGTERM");
          await new Promise((r) => server.child.once("exit", r));
        }
        rmSync(maildir, { recursive: true, force: true });
      }
    }
  }
}
console.log(
  `load average after: ${loadavg().map((x) => x.toFixed(2)).join(" ")}`,
);
