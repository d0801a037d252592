#!/usr/bin/env node
// The cost of PROXY protocol v2 per connection (issue 10): W2 (one 1 KB
// message per connection, Postfix's smtp-source, 20 sessions) against smtpd
// directly (A) and against smtpd with `proxyProtocol: true` behind HAProxy
// (`send-proxy-v2`, TCP mode, one thread) (B), on the same runtime, in the
// order A B on even rounds and B A on odd rounds; round 0 is a warm-up and
// is discarded. Per runtime it reports smtpd's CPU per connection direct and
// behind HAProxy (the difference is the PROXY header's cost to smtpd),
// HAProxy's own CPU per connection, and smtpd + HAProxy against direct.
//
//   node bench/proxy.mjs [--runtimes deno,bun,node20,node24] [--runs 5]
//                        [--connections 1000] [--out .tmp/proxy-results.md]
//                        [--haproxy-log]   # HAProxy logs abnormal sessions (costs CPU)
//                        [--lib src|dist]  # smtpd's code on every runtime (default: what
//                                          # its users install, bench/launch.mjs)
//
// CPU: smtpd's is its own process.cpuUsage() (the `stats` line of
// bench/server.mjs); HAProxy's is the sum of se.sum_exec_runtime over
// /proc/<pid>/task/*/sched (ns resolution), with utime+stime from
// /proc/<pid>/stat (10 ms ticks) beside it as a check. After each load the
// bench waits until both processes' CPU stops moving (at most 300 ms).
// Needs /usr/sbin/haproxy and /usr/sbin/smtp-source. Loopback only.
import { execFileSync, spawn } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import { dirname, isAbsolute, join } from "node:path";
import process from "node:process";
import {
  canConnect,
  freePort,
  loadavg,
  log,
  Noise,
  schedCpuUs,
  ServerChild,
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
  SMTP_SOURCE,
} from "./launch.mjs";

/** user + system µs. */
const cpuTotal = (t) => t.user + t.system;

const argv = process.argv.slice(2);
const value = (name) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : undefined;
};
const RUNTIME_NAMES = (value("runtimes") ?? ALL_RUNTIMES.join(",")).split(",")
  .filter((x) => ALL_RUNTIMES.includes(x));
const RUNS = Math.max(1, Number(value("runs")) || 5);
const CONNECTIONS = Math.max(20, Number(value("connections")) || 1000);
const OUT = value("out") ?? ".tmp/proxy-results.md";
const HAPROXY_LOG = argv.includes("--haproxy-log");
const SESSIONS = 20;
const SIZE = 1024;
const LOAD_TIMEOUT = 120_000;
const HAPROXY = "/usr/sbin/haproxy";

/**
 * The smtpd code each runtime loads (bench/launch.mjs): what its users
 * install (the npm build on Node and Bun, mod.ts on Deno), or `--lib
 * src|dist` for all.
 */
const LIB = (rt) =>
  ["src", "dist"].includes(value("lib")) ? value("lib") : defaultLib(rt);
/** The runtimes that are installed. */
const RUNTIMES = Object.fromEntries(
  ALL_RUNTIMES.map((rt) => [rt, { ok: BIN[rt] !== null }]),
);

// ------------------------------------------------------------------ servers

/** bench/server.ts smtpd on a runtime, with or without --proxy-protocol. */
class Smtpd {
  constructor(runtime, proxy) {
    this.runtime = runtime;
    this.proxy = proxy;
  }
  async start() {
    const [cmd, ...args] = scriptArgv(this.runtime, "bench/server.mjs", [
      "smtpd",
      ...(this.proxy ? ["--proxy-protocol"] : []),
    ], { lib: LIB(this.runtime) });
    this.child = new ServerChild(cmd, args, root);
    this.pid = this.child.pid;
    const m = /^READY (\d+)/.exec((await this.child.nextLine(30_000)) ?? "");
    if (!m) {
      throw new Error(
        `smtpd@${this.runtime} did not start: ${this.child.stderr}`,
      );
    }
    this.port = Number(m[1]);
  }
  /** Own CPU µs (process.cpuUsage(), all threads). */
  async cpu() {
    this.child.send("stats");
    try {
      const s = JSON.parse(await this.child.nextLine(10_000));
      return s.userUs + s.systemUs;
    } catch {
      return NaN;
    }
  }
  async stop() {
    await this.child?.stop();
  }
}

/** HAProxy in TCP mode in front of `backendPort`, with send-proxy-v2. */
class Haproxy {
  constructor(backendPort) {
    this.backendPort = backendPort;
    this.stderr = "";
  }
  async start() {
    this.port = await freePort();
    this.dir = mkdtempSync(join(os.tmpdir(), "smtpd-bench-haproxy-"));
    const cfg = join(this.dir, "haproxy.cfg");
    writeFileSync(
      cfg,
      [
        "global",
        "  nbthread 1",
        "  maxconn 4096",
        // --haproxy-log: sessions that do not end normally are logged to
        // stderr and quoted with a failed run. smtp-source's sessions all
        // end "CD" (client abort), so this logs every session and adds to
        // HAProxy's CPU: off for measurements.
        ...(HAPROXY_LOG ? ["  log stderr format raw local0"] : []),
        "defaults",
        "  mode tcp",
        ...(HAPROXY_LOG
          ? ["  log global", "  option tcplog", "  option dontlog-normal"]
          : []),
        "  timeout connect 5s",
        "  timeout client 10s",
        "  timeout server 10s",
        "listen smtp",
        `  bind 127.0.0.1:${this.port}`,
        `  server s 127.0.0.1:${this.backendPort} send-proxy-v2`,
        "",
      ].join("\n"),
    );
    this.child = spawn(HAPROXY, ["-f", cfg, "-db"], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    this.pid = this.child.pid;
    this.exited = new Promise((r) => this.child.once("exit", r));
    this.child.stderr.setEncoding("utf8");
    this.child.stderr.on("data", (d) => {
      this.stderr = (this.stderr + d).slice(-4000);
    });
    for (let i = 0; i < 100 && !(await canConnect(this.port)); i++) {
      if (this.child.exitCode !== null) break;
      await sleep(50);
    }
    if (!(await canConnect(this.port))) {
      throw new Error(`haproxy did not start: ${this.stderr}`);
    }
  }
  /** What HAProxy logged since the last call (abnormal sessions). */
  takeLog() {
    const t = this.stderr;
    this.stderr = "";
    return t;
  }
  cpu() {
    return { sched: schedCpuUs(this.pid), stat: cpuTotal(statCpuUs(this.pid)) };
  }
  async stop() {
    if (this.child && this.child.exitCode === null) {
      process.kill(this.pid, "SIGTERM");
      const t = await Promise.race([
        this.exited.then(() => true),
        sleep(5000),
      ]);
      if (!t) {
        process.kill(this.pid, "SIGKILL");
        await this.exited;
      }
    }
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }
}

/** W2's load: smtp-source, one message per connection. */
function runLoad(port) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(SMTP_SOURCE, [
      "-s",
      String(SESSIONS),
      "-m",
      String(CONNECTIONS),
      "-l",
      String(SIZE),
      `127.0.0.1:${port}`,
    ], { stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    child.stderr.on("data", (d) => {
      if (err.length < 2000) err += d;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), LOAD_TIMEOUT);
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      const ok = code === 0 && err.trim() === "";
      resolve({
        ok,
        ms: performance.now() - t0,
        error: ok ? null : `${signal ?? `exit ${code}`}: ${err.trim()}`,
      });
    });
  });
}

/** Waits until every pid's CPU time stops moving, at most 300 ms. */
async function settle(pids) {
  let prev = pids.map(schedCpuUs);
  for (let i = 0; i < 15; i++) {
    await sleep(20);
    const now = pids.map(schedCpuUs);
    if (now.every((x, j) => !(x - prev[j] > 200))) return;
    prev = now;
  }
}

// --------------------------------------------------------------------- main

const fmt = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : "–");
const ms = (s, d = 1) =>
  !s || !Number.isFinite(s.median)
    ? "–"
    : s.values.length === 1
    ? fmt(s.median, d)
    : `${fmt(s.median, d)} [${fmt(s.min, d)}–${fmt(s.max, d)}]`;
const raw = (s, d = 2) => s.values.map((x) => fmt(x, d)).join(" ");

async function main() {
  for (const p of [HAPROXY, SMTP_SOURCE]) {
    if (!existsSync(p)) {
      console.error(`needs ${p}`);
      process.exit(2);
    }
  }
  const runtimes = RUNTIME_NAMES.filter((rt) => RUNTIMES[rt].ok);
  if (runtimes.some((rt) => LIB(rt) === "dist")) ensureBuilt(log);
  const noise = new Noise();
  log(
    `proxy: W2 (${CONNECTIONS} connections, ${SESSIONS} sessions) direct vs behind HAProxy, ` +
      `${RUNS} rounds + 1 warm-up, runtimes ${
        runtimes.join(",")
      }; load average ${loadavg().join(" ")}`,
  );
  const setups = [];
  try {
    for (const rt of runtimes) {
      const direct = new Smtpd(rt, false);
      const behind = new Smtpd(rt, true);
      await direct.start();
      await behind.start();
      const haproxy = new Haproxy(behind.port);
      setups.push({ rt, direct, behind, haproxy, runs: [], errors: [] });
      await haproxy.start();
    }
    for (let round = 0; round <= RUNS; round++) {
      for (let g = 0; g < setups.length; g++) {
        const s = setups[(g + round) % setups.length];
        const order = round % 2 === 0 ? ["A", "B"] : ["B", "A"];
        const run = { round };
        for (const which of order) {
          const smtpd = which === "A" ? s.direct : s.behind;
          const port = which === "A" ? s.direct.port : s.haproxy.port;
          const a = await smtpd.cpu();
          const ha = s.haproxy.cpu();
          const r = await runLoad(port);
          await settle(
            which === "A" ? [smtpd.pid] : [smtpd.pid, s.haproxy.pid],
          );
          const b = await smtpd.cpu();
          const hb = s.haproxy.cpu();
          if (!r.ok) {
            const tail = which === "B"
              ? s.haproxy.takeLog().trim().split("\n").slice(-3).join(" / ")
              : "";
            s.errors.push(
              `round ${round} ${which} after ${
                fmt(r.ms / 1000, 1)
              } s: ${r.error}` +
                (tail ? ` (HAProxy: ${tail})` : ""),
            );
            run.failed = true;
            log(`  smtpd@${s.rt} ${which}: FAILED ${r.error}`);
            continue;
          }
          const x = {
            smtpdUs: (b - a) / CONNECTIONS,
            connPerS: CONNECTIONS / (r.ms / 1000),
          };
          if (which === "B") {
            x.haproxyUs = (hb.sched - ha.sched) / CONNECTIONS;
            x.haproxyStatUs = (hb.stat - ha.stat) / CONNECTIONS;
          }
          run[which] = x;
          log(
            `  ${`smtpd@${s.rt}`.padEnd(14)} ${
              round === 0 ? "warm-up" : `run ${round}  `
            } ${which === "A" ? "direct " : "haproxy"}: ${
              fmt(x.connPerS).padStart(5)
            } conn/s, smtpd ${fmt(x.smtpdUs, 1).padStart(7)} µs/conn` +
              (which === "B"
                ? `, haproxy ${fmt(x.haproxyUs, 1)} µs/conn (stat ${
                  fmt(x.haproxyStatUs, 0)
                })`
                : ""),
          );
        }
        if (round > 0 && !run.failed) s.runs.push(run);
      }
    }
  } finally {
    for (const s of setups) {
      await s.haproxy.stop().catch(() => {});
      await s.direct.stop();
      await s.behind.stop();
    }
  }
  const load = noise.stop();

  const rows = setups.map((s) => {
    const r = s.runs;
    return {
      runtime: s.rt,
      ok: r.length,
      direct: spread(r.map((x) => x.A.smtpdUs)),
      behind: spread(r.map((x) => x.B.smtpdUs)),
      parse: spread(r.map((x) => x.B.smtpdUs - x.A.smtpdUs)),
      parseRatio: spread(r.map((x) => x.B.smtpdUs / x.A.smtpdUs)),
      haproxy: spread(r.map((x) => x.B.haproxyUs)),
      haproxyStat: spread(r.map((x) => x.B.haproxyStatUs)),
      total: spread(r.map((x) => x.B.smtpdUs + x.B.haproxyUs)),
      totalRatio: spread(
        r.map((x) => (x.B.smtpdUs + x.B.haproxyUs) / x.A.smtpdUs),
      ),
      connDirect: spread(r.map((x) => x.A.connPerS)),
      connBehind: spread(r.map((x) => x.B.connPerS)),
      errors: s.errors,
    };
  });
  const date = new Date().toISOString().slice(0, 16).replace("T", " ");
  const head = spawnText("git", ["-C", root, "log", "-1", "--format=%h %s"]);
  const md = [
    "# PROXY v2 cost per connection (bench/proxy.mjs)",
    "",
    `Date: ${date} UTC. Command: \`node bench/proxy.mjs ${
      argv.join(" ")
    }\`. Code: ${head}; smtpd loaded from ${
      runtimes.map((rt) => `${libraryFile(rt, LIB(rt))} on ${rt}`).join(", ")
    } (bench/server.mjs).`,
    "",
    `W2: smtp-source -s ${SESSIONS} -m ${CONNECTIONS} -l ${SIZE} (one 1 KB message per connection). ` +
    "A: smtpd direct; B: smtpd with `proxyProtocol: true` behind HAProxy " +
    `(${
      spawnText(HAPROXY, ["-v"]).split("\n")[0] || "haproxy"
    }; TCP mode, nbthread 1, ` +
    "`send-proxy-v2`). Both smtpd processes and HAProxy run for the whole bench; " +
    `each round runs A B (even) or B A (odd) per runtime, runtimes rotating; ${RUNS} rounds after one warm-up. ` +
    "smtpd CPU: its own process.cpuUsage(); HAProxy CPU: /proc/<pid>/task/*/sched " +
    "(the stat column: utime+stime from /proc/<pid>/stat, 10 ms ticks, as a check). " +
    "Differences and ratios are paired round by round; all cells are median [min–max] in µs per connection.",
    "",
    `Machine: ${os.cpus().length} cores; load average (1 min) ${
      fmt(load.before[0], 2)
    } before, ${fmt(load.duringMean, 2)} mean / ${
      fmt(load.duringMax, 2)
    } max during, ${
      fmt(load.after[0], 2)
    } after; CPU used by other processes: ${fmt(load.otherCores, 2)} cores; ${
      fmt(load.seconds)
    } s. The load average counts the bench itself ` +
    "(smtpd, smtp-source, HAProxy).",
    "",
    "| runtime | ok rounds | smtpd direct | smtpd behind HAProxy | PROXY cost to smtpd (B − A) | B ÷ A (smtpd) | HAProxy | HAProxy (stat) | smtpd + HAProxy | (smtpd + HAProxy) ÷ direct | conn/s direct | conn/s via HAProxy |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ...rows.map((r) =>
      `| ${r.runtime} | ${r.ok}/${RUNS} | ${ms(r.direct)} | ${ms(r.behind)} | ${
        ms(r.parse)
      } | ${ms(r.parseRatio, 2)} | ${ms(r.haproxy)} | ${
        ms(r.haproxyStat, 0)
      } | ${ms(r.total)} | ${ms(r.totalRatio, 2)} | ${ms(r.connDirect, 0)} | ${
        ms(r.connBehind, 0)
      } |`
    ),
    "",
    "Every round, B ÷ A (smtpd): " +
    rows.map((r) => `${r.runtime} ${raw(r.parseRatio)}`).join("; ") + ".",
    "",
    ...rows.flatMap((r) =>
      r.errors.slice(0, 5).map((e) => `- failed: smtpd@${r.runtime} ${e}`)
    ),
  ].join("\n");
  console.log(md);
  const outPath = isAbsolute(OUT) ? OUT : join(root, OUT);
  mkdirSync(dirname(outPath), { recursive: true });
  writeFileSync(outPath, md + "\n");
  writeFileSync(
    outPath.replace(/(\.md)?$/, ".json"),
    JSON.stringify(
      {
        date,
        argv,
        load,
        rows,
        setups: setups.map((s) => ({ rt: s.rt, runs: s.runs })),
      },
      null,
      1,
    ),
  );
  log(`wrote ${OUT}`);
}

function spawnText(cmd, args) {
  try {
    return execFileSync(cmd, args, { encoding: "utf8" }).trim();
  } catch {
    return "";
  }
}

await main();
