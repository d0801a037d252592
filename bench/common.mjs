// Measurement helpers shared by the bench scripts (run.mjs and its parts,
// proxy.mjs): /proc readers, the machine-noise sampler, statistics,
// loopback ports, the progress log.
import { spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import net from "node:net";
import process from "node:process";

/** A line of progress on stderr (stdout is the report's). */
export const log = (s) => process.stderr.write(s + "\n");

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * A bench server as a child process (run.mjs's and proxy.mjs's servers):
 * its stdout read line by line (`nextLine`: the control channel's READY and
 * answers, bench/control.mjs), the first 4000 characters of its stderr kept
 * for error messages, `send` writes a line to its stdin; `stop` ends its
 * stdin (the bench servers then exit), after `signal` if given, and kills
 * it when it has not exited 5 s later.
 */
export class ServerChild {
  constructor(cmd, args, cwd) {
    this.lines = [];
    this.waiters = [];
    this.stderr = "";
    this.child = spawn(cmd, args, {
      cwd,
      stdio: ["pipe", "pipe", "pipe"],
      env: { ...process.env, NO_COLOR: "1" },
    });
    this.pid = this.child.pid;
    this.exited = new Promise((r) => this.child.once("exit", r));
    // A process that exits answers no more: whoever waits for a line gets null.
    this.child.stdout.once("end", () => {
      for (const w of this.waiters.splice(0)) w(null);
      this.ended = true;
    });
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
  }

  /** The next line on stdout, or null after `ms`. */
  nextLine(ms) {
    if (this.lines.length > 0) return Promise.resolve(this.lines.shift());
    if (this.ended) return Promise.resolve(null);
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

  /** Writes `line` and a newline to its stdin. */
  send(line) {
    this.child.stdin.write(line + "\n");
  }

  async stop(signal) {
    if (this.child.exitCode !== null) return;
    this.child.stdin.end();
    if (signal) this.child.kill(signal);
    const t = await Promise.race([this.exited.then(() => true), sleep(5000)]);
    if (!t) {
      this.child.kill("SIGKILL");
      await this.exited;
    }
  }
}

/** A free port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Whether something accepts connections on 127.0.0.1:port. */
export function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: "127.0.0.1" });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

export /** CPU µs of all live threads of `pid` (ns-precise, from /proc/<pid>/task/<tid>/sched). */
function schedCpuUs(pid) {
  let dir;
  try {
    dir = readdirSync(`/proc/${pid}/task`);
  } catch {
    return NaN;
  }
  let us = 0;
  for (const tid of dir) us += threadCpuUs(pid, tid) || 0;
  return us;
}

/**
 * CPU µs of thread `tid` of `pid` (the main thread when `tid` is `pid`),
 * from /proc/<pid>/task/<tid>/sched; NaN when it is gone.
 */
export function threadCpuUs(pid, tid = pid) {
  try {
    const s = readFileSync(`/proc/${pid}/task/${tid}/sched`, "utf8");
    const m = /se\.sum_exec_runtime\s*:\s*([\d.]+)/.exec(s);
    return m ? Number(m[1]) * 1000 : NaN;
  } catch {
    return NaN; // thread gone
  }
}

/**
 * CPU µs of each live thread of `pid`, keyed by thread id, with the
 * thread's name (`comm`: the runtime's main thread, "HeapHelper" for
 * JavaScriptCore's parallel GC, "JITWorker" for its compiler...); empty
 * when the process is gone.
 */
export function threadsCpuUs(pid) {
  const out = new Map();
  let dir;
  try {
    dir = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of dir) {
    const us = threadCpuUs(pid, tid);
    if (!Number.isFinite(us)) continue;
    let name = "?";
    try {
      name = readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8").trim();
    } catch { /* gone */ }
    out.set(tid, { name, us, main: tid === String(pid) });
  }
  return out;
}

/**
 * The CPU µs per message of `messages` between two readings of
 * threadsCpuUs(): the main thread's (`main`), and every thread's by name
 * (`byName`, threads of one name summed; "main" for the main thread; a
 * thread started meanwhile counts from 0, one gone meanwhile is lost, one
 * that used no CPU is left out).
 */
export function threadsDelta(before, after, messages) {
  let main = NaN;
  /** @type {Record<string, number>} */
  const byName = {};
  for (const [tid, t] of after) {
    const us = (t.us - (before.get(tid)?.us ?? 0)) / messages;
    if (t.main) main = us;
    const name = t.main ? "main" : t.name;
    byName[name] = (byName[name] ?? 0) + us;
  }
  for (const k of Object.keys(byName)) {
    byName[k] = Math.round(byName[k] * 1000) / 1000;
    // Idle threads (Bun's pools, a runtime's spare workers): left out.
    if (byName[k] === 0 && k !== "main") delete byName[k];
  }
  return { main, byName };
}

export /** utime and stime of `pid` in µs (clock-tick resolution, from /proc/<pid>/stat). */
function statCpuUs(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return {
      user: (Number(f[11]) * 1e6) / 100,
      system: (Number(f[12]) * 1e6) / 100,
    };
  } catch {
    return { user: NaN, system: NaN };
  }
}

export /** Median, min, max and every value (finite values only). */
function spread(xs) {
  const values = xs.filter((x) => Number.isFinite(x));
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return { median: NaN, min: NaN, max: NaN, values };
  const m = s.length >> 1;
  return {
    median: s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2,
    min: s[0],
    max: s[s.length - 1],
    values,
  };
}

/** The three load averages from /proc/loadavg. */
export function loadavg() {
  try {
    return readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).map(
      Number,
    );
  } catch {
    return [NaN, NaN, NaN];
  }
}

/** Busy clock ticks of the whole machine (/proc/stat, all CPUs). */
export function machineBusyTicks() {
  try {
    const f = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(
      /\s+/,
    ).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal
    return f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] || 0);
  } catch {
    return NaN;
  }
}

/**
 * This process's clock ticks from /proc/self/stat: utime, stime, and its
 * reaped children's cutime, cstime; null where there is no /proc.
 */
function selfTicks() {
  try {
    const s = readFileSync("/proc/self/stat", "utf8");
    return s.slice(s.lastIndexOf(")") + 2).split(" ").slice(11, 15).map(
      Number,
    );
  } catch {
    return null;
  }
}

/** Clock ticks of this process and its reaped children (servers and loads). */
export function ownTicks() {
  const t = selfTicks();
  return t ? t[0] + t[1] + t[2] + t[3] : NaN;
}

/**
 * Clock ticks of this process's reaped children (cutime + cstime): across
 * one load run, the load generator's CPU (the servers, still running, are
 * not reaped).
 */
export function reapedChildTicks() {
  const t = selfTicks();
  return t ? t[2] + t[3] : NaN;
}

/**
 * Samples the machine's load while a part of the bench runs: the 1-minute
 * load average before, every second during (max and mean) and after; and
 * the CPU the rest of the machine used meanwhile (all CPUs' busy time in
 * /proc/stat minus this process tree's, in cores). Call `stop()` after the
 * part's child processes have exited, so that their CPU is counted as ours.
 */
export class Noise {
  constructor() {
    this.before = loadavg();
    this.samples = [];
    this.t0 = performance.now();
    this.busy0 = machineBusyTicks();
    this.own0 = ownTicks();
    this.timer = setInterval(() => this.samples.push(loadavg()[0]), 1000);
    this.timer.unref();
  }
  stop() {
    clearInterval(this.timer);
    const after = loadavg();
    const seconds = (performance.now() - this.t0) / 1000;
    const foreign = (machineBusyTicks() - this.busy0 - ownTicks() +
      this.own0) / 100 / seconds;
    const during = this.samples.length > 0 ? this.samples : [after[0]];
    return {
      before: this.before,
      duringMax: Math.max(...during),
      duringMean: during.reduce((a, b) => a + b, 0) / during.length,
      after,
      seconds,
      otherCores: Math.max(0, foreign),
    };
  }
}

/**
 * The control channel of a child that answers one line per command
 * (bench/control.mjs): `nextLine()` resolves with its next line of stdout,
 * `ask(command)` writes a command and parses the JSON line it answers.
 */
export function lineChannel(child) {
  let pending = "";
  const waiters = [];
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (d) => {
    pending += d;
    for (let nl = pending.indexOf("\n"); nl >= 0; nl = pending.indexOf("\n")) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      waiters.shift()?.(line);
    }
  });
  const nextLine = () => new Promise((r) => waiters.push(r));
  const ask = async (command) => {
    child.stdin.write(command + "\n");
    return JSON.parse(await nextLine());
  };
  return { nextLine, ask };
}
