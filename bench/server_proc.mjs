// The server processes of run.mjs: smtpd, smtp-server or the runtime floor
// on a runtime (bench/server.mjs, bench/floor.mjs), Postfix's smtp-sink, or
// the bare runtime (bench/bare.mjs); their CPU time and memory, read through
// the control channel (bench/control.mjs) and /proc; which servers a run
// starts.
import { readFileSync } from "node:fs";
import process from "node:process";
import {
  canConnect,
  freePort,
  log,
  schedCpuUs,
  ServerChild,
  sleep,
  statCpuUs,
} from "./common.mjs";
import { HAVE_POSTFIX, root, scriptArgv, SMTP_SINK } from "./launch.mjs";
import { LIB, RUNTIME_NAMES, RUNTIMES, SERVER_KINDS } from "./flags.mjs";

/** Runtime flags that expose a full GC to bench/control.mjs (Bun has Bun.gc). */
const GC_FLAGS = {
  deno: ["--v8-flags=--expose-gc"],
  node20: ["--expose-gc"],
  node24: ["--expose-gc"],
};

/** "runtime\tfile" for each library file an smtpd server said it loaded. */
export const loaded = new Set();

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

/** A server process: smtpd or smtp-server on a runtime, smtp-sink, or the bare runtime. */
export class ServerProc {
  /** `gc`: start the runtime with a full GC exposed (the `gc` control command). */
  constructor(kind, runtime, { gc = false } = {}) {
    this.kind = kind;
    this.runtime = runtime;
    this.gc = gc;
    this.name = runtime ? `${kind}@${runtime}` : kind;
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
    this.child = new ServerChild(cmd, args, root);
    this.pid = this.child.pid;
    if (this.kind === "smtp-sink") {
      for (let i = 0; i < 100 && !(await canConnect(this.port)); i++) {
        await sleep(50);
      }
      if (!(await canConnect(this.port))) {
        throw new Error(`${this.name} did not start: ${this.child.stderr}`);
      }
    } else {
      const ready = await this.child.nextLine(30_000);
      const m = /^READY (\d+) ?(.*)/.exec(ready ?? "");
      if (!m) {
        throw new Error(`${this.name} did not start: ${this.child.stderr}`);
      }
      this.port = Number(m[1]);
      // What the server says it loaded (bench/server.mjs).
      if (this.kind === "smtpd") loaded.add(`${this.runtime}\t${m[2]}`);
    }
    return this;
  }

  /** CPU µs so far: the process's own figure (process.cpuUsage) when it has a control channel, and /proc's. */
  async cpu() {
    const ext = schedCpuUs(this.pid);
    const stat = statCpuUs(this.pid);
    if (this.kind === "smtp-sink" || this.kind === "bare") {
      return { own: NaN, ownUser: NaN, sched: ext, stat };
    }
    this.child.send("stats");
    const line = await this.child.nextLine(10_000);
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
    this.child.send("gc");
    const line = await this.child.nextLine(30_000);
    try {
      const m = JSON.parse(line);
      return m.collected ? m : null;
    } catch {
      return null;
    }
  }

  async stop() {
    await this.child?.stop(this.kind === "smtp-sink" ? "SIGTERM" : undefined);
  }
}

/**
 * CPU µs between two cpu() readings: own accounting if present, else /proc
 * sched; the user part from own accounting, else /proc/<pid>/stat's share.
 */
export function cpuDelta(a, b) {
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

/** The servers to run, as [kind, runtime] (smtp-sink's runtime is null). */
export function serverList() {
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
export async function startAll(specs, options = {}) {
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
export async function settle(s) {
  let prev = schedCpuUs(s.pid);
  for (let i = 0; i < 15; i++) {
    await sleep(20);
    const now = schedCpuUs(s.pid);
    if (!(now - prev > 200)) return;
    prev = now;
  }
}
