// The server processes of run.mjs: smtpd, smtp-server or the runtime floor
// on a runtime (bench/server.mjs, bench/floor.mjs), Postfix's smtp-sink, or
// the bare runtime (bench/bare.mjs); their CPU time and memory, read through
// the control channel (bench/control.mjs) and /proc; which servers a run
// starts.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
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
import { BIN, HAVE_POSTFIX, root, scriptArgv, SMTP_SINK } from "./launch.mjs";
import { LIB, RUNTIME_NAMES, RUNTIMES, SERVER_KINDS } from "./flags.mjs";

/** Runtime flags that expose a full GC to bench/control.mjs (Bun has Bun.gc). */
const GC_FLAGS = {
  deno: ["--v8-flags=--expose-gc"],
  node20: ["--expose-gc"],
  node24: ["--expose-gc"],
};

/**
 * The reused-read-buffer floor (`bench/floor.mjs --reuse`) where it is not
 * a process of its own: why, per runtime. On Deno the plain floor already
 * reads into a buffer of its own per connection, so its figures stand for
 * both; on Bun there is none.
 */
export const REUSE_FLOOR_NOTE = {
  bun: "not possible: Bun.listen hands a fresh copy of every read",
};

/**
 * bench/floor.mjs's arguments per floor kind: the runtime floor, the
 * reused-read-buffer floor and the contract floor.
 */
const FLOOR_ARGS = {
  floor: [],
  "floor-reuse": ["--reuse"],
  "floor-contract": ["--contract"],
};

/** The kinds whose process is one of smtpd's (their `loaded` line counts). */
const SMTPD_KINDS = ["smtpd", "smtpd-byob"];

/**
 * The CLI on `rt` (src/cli/main.ts on Deno and with `--lib src`, else the
 * npm bin, dist/cli.js), listening on a free port and delivering into
 * `maildir`, quiet, with the bench server's limits.
 */
function cliArgv(rt, maildir, lib) {
  const flags = [
    "--host",
    "127.0.0.1",
    "--port",
    "0",
    "--maildir",
    maildir,
    "--size",
    String(200 * 1024 * 1024),
    "--max-connections",
    "10000",
    "--max-connections-per-ip",
    "10000",
    "--server-name",
    "bench.smtpd",
    "--quiet",
  ];
  const bin = BIN[rt];
  if (!bin) throw new Error(`${rt} is not installed`);
  if (lib !== "src") return [bin, "dist/cli.js", ...flags];
  if (rt === "deno") return [bin, "run", "-A", "src/cli/main.ts", ...flags];
  if (rt === "node20") {
    return [bin, "--import", "tsx", "src/cli/main.ts", ...flags];
  }
  return [bin, "src/cli/main.ts", ...flags];
}

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
  /**
   * `gc`: start the runtime with a full GC exposed (the `gc` control
   * command); `args`: more arguments for bench/server.mjs (smtpd's
   * `--milter ADDRESS`), `label` the name then shown instead of the kind.
   */
  constructor(kind, runtime, { gc = false, args = [], label = kind } = {}) {
    this.kind = kind;
    this.runtime = runtime;
    this.gc = gc;
    this.args = args;
    this.name = runtime ? `${label}@${runtime}` : label;
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
        : this.kind.startsWith("floor")
        ? scriptArgv(
          this.runtime,
          "bench/floor.mjs",
          FLOOR_ARGS[this.kind],
          { flags },
        )
        : this.kind === "smtpd-cli"
        ? cliArgv(
          this.runtime,
          this.maildir = mkdtempSync(join(tmpdir(), "smtpd-bench-maildir-")),
          LIB[this.runtime] === "src" || this.runtime === "deno"
            ? "src"
            : "dist",
        )
        : scriptArgv(
          this.runtime,
          "bench/server.mjs",
          [
            ...(this.kind === "smtpd-byob" ? ["smtpd", "--byob"] : [this.kind]),
            ...this.args,
          ],
          { lib: LIB[this.runtime], flags },
        );
    }
    this.child = new ServerChild(cmd, args, root);
    this.pid = this.child.pid;
    if (this.kind === "smtpd-cli") {
      // The CLI's listening line names the port it chose (--port 0).
      for (let i = 0; i < 50 && this.port === undefined; i++) {
        const line = await this.child.nextLine(30_000);
        if (line === null) break;
        const m = /listening on 127\.0\.0\.1:(\d+)/.exec(line);
        if (m) this.port = Number(m[1]);
      }
      if (this.port === undefined) {
        throw new Error(`${this.name} did not start: ${this.child.stderr}`);
      }
    } else if (this.kind === "smtp-sink") {
      for (let i = 0; i < 100 && !(await canConnect(this.port)); i++) {
        await sleep(50);
      }
      if (!(await canConnect(this.port))) {
        throw new Error(`${this.name} did not start: ${this.child.stderr}`);
      }
    } else {
      const ready = await this.child.nextLine(30_000);
      const m = /^READY (\d+) ?(.*)/.exec(ready ?? "");
      const no = /^UNSUPPORTED (.*)/.exec(ready ?? "");
      if (no) {
        const e = new Error(`${this.name}: ${no[1]}`);
        e.unsupported = no[1];
        throw e;
      }
      if (!m) {
        throw new Error(`${this.name} did not start: ${this.child.stderr}`);
      }
      this.port = Number(m[1]);
      // What the server says it loaded (bench/server.mjs).
      if (SMTPD_KINDS.includes(this.kind)) {
        loaded.add(`${this.runtime}\t${m[2]}`);
      }
    }
    return this;
  }

  /** CPU µs so far: the process's own figure (process.cpuUsage) when it has a control channel, and /proc's. */
  async cpu() {
    const ext = schedCpuUs(this.pid);
    const stat = statCpuUs(this.pid);
    if (
      this.kind === "smtp-sink" || this.kind === "bare" ||
      this.kind === "smtpd-cli"
    ) {
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

  /**
   * What the server's own stats say beyond CPU and memory (bench/server.mjs
   * --byob: `reader`, the reader its hook got), or {}.
   */
  async notes() {
    if (!["smtpd", "smtpd-byob"].includes(this.kind)) return {};
    this.child.send("stats");
    try {
      const { reader } = JSON.parse(await this.child.nextLine(10_000));
      return reader === undefined ? {} : { reader };
    } catch {
      return {};
    }
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
    await this.child?.stop(
      this.kind === "smtp-sink" || this.kind === "smtpd-cli"
        ? "SIGTERM"
        : undefined,
    );
    if (this.maildir) rmSync(this.maildir, { recursive: true, force: true });
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

/**
 * The servers to run, as [kind, runtime] (smtp-sink's runtime is null):
 * for the load part (`part` "load": smtpd, smtp-server, the floors,
 * smtp-sink) or the memory part ("memory": also smtpd with a BYOB reader
 * and smtpd's CLI; not the contract floor, which is for the CPU goals).
 * The reused-buffer floor runs where it is a process of its own (not on
 * Deno or Bun: REUSE_FLOOR_NOTE).
 */
export function serverList(part = "load") {
  const out = [];
  const kinds = part === "memory"
    ? [
      "smtpd",
      "smtpd-byob",
      "smtpd-cli",
      "smtp-server",
      "floor",
      "floor-reuse",
    ]
    : ["smtpd", "smtp-server", "floor", "floor-reuse", "floor-contract"];
  for (const rt of RUNTIME_NAMES) {
    if (!RUNTIMES[rt].ok) continue;
    for (const k of kinds) {
      if (k === "floor-reuse" && REUSE_FLOOR_NOTE[rt]) continue;
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
      log(`  ${e.unsupported ? "" : `${s.name}: `}${e.message}`);
      await s.stop().catch(() => {});
    }
  }
  return servers;
}

/**
 * Waits until the server's CPU time stops moving (closing sessions, GC), at
 * most 300 ms; resolves the ms it waited.
 */
export async function settle(s) {
  let prev = schedCpuUs(s.pid);
  for (let i = 0; i < 15; i++) {
    await sleep(20);
    const now = schedCpuUs(s.pid);
    if (!(now - prev > 200)) return (i + 1) * 20;
    prev = now;
  }
  return 300;
}
