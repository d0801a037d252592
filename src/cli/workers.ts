/**
 * `smtpd --workers N`: N server processes on one port, and the supervisor
 * that runs them.
 *
 * The parent re-executes the same program (the runtime's executable, its
 * flags and the script, with the same arguments) N times, marking each
 * child as a worker in the environment (`SMTPD_WORKER`). How the workers
 * share the port depends on the runtime:
 *
 * - Deno, Bun, Node 22.12 and later: each worker listens with
 *   `SO_REUSEPORT` (`serve({ reusePort: true })`) and the kernel spreads
 *   new connections among them. Deno workers run with `--unstable-net` (so
 *   that `Deno.listen` takes `reusePort`).
 * - Older Node: `node:cluster`; the primary (this process) owns the socket
 *   and hands connections to the workers in turn.
 *
 * The workers talk to the parent over the IPC channel of
 * `node:child_process` (or `node:cluster`, the same channel): each says
 * when it listens, the parent asks them to stop, and each reports its
 * counts when it has stopped, so that the parent prints one summary. With
 * `--port 0` the parent picks a free port first and gives it to every
 * worker. A worker that dies is replaced, at most one a second; after
 * {@link MAX_RAPID_FAILURES} workers in a row died within
 * {@link RAPID_FAILURE_MS} of starting, the parent stops them all and
 * exits with status 1.
 *
 * @module
 */

import type { EventEmitter } from "node:events";
import * as net from "node:net";
import process from "node:process";
import type { ChildProcess } from "node:child_process";
import { hasReusePort } from "../../runtimes/node.ts";
import type { CliOptions } from "./args.ts";
import type { ClientLimits } from "../limits.ts";
import type { Snapshot } from "../exports/metrics.ts";
import {
  isStatsRequest,
  type MetricsEndpoint,
  serveMetrics,
  type StatsReply,
  type StatsRequest,
  WorkerMetrics,
} from "./metrics.ts";
import {
  isLimitsReply,
  LimitsHolder,
  type LimitsReply,
  type LimitsRequest,
  SupervisorLimits,
} from "./worker_limits.ts";
import {
  count,
  duration,
  errorText,
  hostPort,
  Log,
  stoppedText,
  type Totals,
  watchReloadSignal,
  watchStopSignals,
} from "./log.ts";

/** The environment variable that marks a worker process (`reuseport` or `cluster`). */
export const WORKER_ENV = "SMTPD_WORKER";
/** The environment variable with the port every worker listens on. */
export const WORKER_PORT_ENV = "SMTPD_WORKER_PORT";
/** The environment variable with the supervisor's process id. */
export const WORKER_PARENT_ENV = "SMTPD_WORKER_PARENT";
/** How often a worker checks that its parent is still there. */
const PARENT_CHECK_MS = 1000;
/** A worker that dies within this many milliseconds of starting failed rapidly. */
export const RAPID_FAILURE_MS = 5000;
/** The parent gives up after this many rapid failures in a row. */
export const MAX_RAPID_FAILURES = 5;
/** At most one replacement per this many milliseconds. */
const RESTART_INTERVAL_MS = 1000;

/** What a worker reports when it has stopped: its totals. */
export type WorkerStats = Totals;

/** Messages between the parent and a worker. */
type WorkerMessage =
  | { smtpd: "listening"; port: number }
  | ({ smtpd: "stopped" } & WorkerStats)
  | { smtpd: "stop" }
  | LimitsReply
  | StatsRequest
  | StatsReply;

function isWorkerMessage(m: unknown): m is WorkerMessage {
  return typeof m === "object" && m !== null &&
    typeof (m as { smtpd?: unknown }).smtpd === "string";
}

/** The worker's side of the channel to the parent. */
export interface WorkerChannel {
  /** Listen with `SO_REUSEPORT` (false under `node:cluster`). */
  readonly reusePort: boolean;
  /** The port the parent chose for every worker. */
  readonly port: number | undefined;
  /** The per-address limits, counted by the parent for every worker. */
  readonly limits: ClientLimits;
  /** Tells the parent the server listens (and checks it is still there). */
  listening(port: number): void;
  /**
   * Calls `stop` when the parent asks to stop, or is gone (at once if it
   * is gone already).
   */
  onStop(stop: (why: string) => void): void;
  /** Answers the parent's requests for metrics with `snapshot()`. */
  onStats(snapshot: () => Snapshot): void;
  /** Reports the counts to the parent (instead of printing a summary). */
  stopped(stats: WorkerStats): Promise<void>;
}

/** Whether this process is a worker started by `--workers`. */
export function isWorker(): boolean {
  const mode = process.env[WORKER_ENV];
  return (mode === "reuseport" || mode === "cluster") &&
    typeof process.send === "function";
}

/**
 * Ends a worker's link to the parent once its work is done, so that the
 * process exits with `code`: the IPC channel would keep it alive (and under
 * `node:cluster`, disconnecting exits at once with status 0, so exit here).
 *
 * @param code the exit status
 */
export function leaveParent(code: number): void {
  if (!isWorker()) return;
  if (process.env[WORKER_ENV] === "cluster") process.exit(code);
  try {
    process.disconnect?.();
  } catch { /* already disconnected */ }
}

/**
 * The channel to the parent when this process is a worker, else `null`.
 * Call it first thing: from then on the worker watches its parent (the
 * IPC channel closing, and the parent process changing: a worker whose
 * supervisor died, even while it was starting, stops instead of serving
 * unsupervised).
 *
 * @param o the command line (for the limits when the parent does not answer)
 */
export function workerChannel(o: CliOptions): WorkerChannel | null {
  if (!isWorker()) return null;
  const send = (m: WorkerMessage | LimitsRequest) =>
    new Promise<void>((resolve) => {
      try {
        process.send!(m, undefined, {}, () => resolve());
      } catch {
        resolve(); // the parent is gone
      }
    });
  const portText = process.env[WORKER_PORT_ENV];
  const parentText = process.env[WORKER_PARENT_ENV];
  const parent = parentText !== undefined && /^\d+$/.test(parentText)
    ? Number(parentText)
    : process.ppid;
  let stopFn: ((why: string) => void) | null = null;
  let statsFn: (() => Snapshot) | null = null;
  let why: string | null = null;
  const stop = (reason: string) => {
    if (why !== null) return;
    why = reason;
    clearInterval(watch);
    if (reason === "parent gone") limits.close();
    stopFn?.(reason);
  };
  // The parent is gone when the channel closed, or when this process was
  // given another parent (the channel's close is not seen when it
  // happened before this ran: check both, now and every second).
  const gone = () => process.connected === false || process.ppid !== parent;
  const check = () => {
    if (gone()) stop("parent gone");
  };
  const limits = new SupervisorLimits(o, (m) => {
    if (process.connected === false) return false;
    void send(m);
    return true;
  });
  const onMessage = (m: unknown) => {
    if (isLimitsReply(m)) limits.handle(m);
    else if (isStatsRequest(m)) {
      void send({
        smtpd: "stats-reply",
        id: m.id,
        snapshot: statsFn?.() ?? [],
      });
    } else if (isWorkerMessage(m) && m.smtpd === "stop") stop("SIGTERM");
  };
  const onDisconnect = () => stop("parent gone");
  process.on("message", onMessage);
  process.once("disconnect", onDisconnect);
  const watch = setInterval(check, PARENT_CHECK_MS);
  (watch as { unref?: () => void }).unref?.();
  check();
  return {
    reusePort: process.env[WORKER_ENV] === "reuseport",
    port: portText !== undefined && /^\d+$/.test(portText)
      ? Number(portText)
      : undefined,
    limits,
    listening(port) {
      void send({ smtpd: "listening", port });
      check(); // the parent may have died while this one started
    },
    onStop(fn) {
      stopFn = fn;
      if (why !== null) fn(why);
    },
    onStats(fn) {
      statsFn = fn;
    },
    async stopped(stats) {
      clearInterval(watch);
      limits.close(); // the server is closed: nothing more to ask
      process.off("disconnect", onDisconnect);
      process.off("message", onMessage);
      await send({ smtpd: "stopped", ...stats });
    },
  };
}

/** The command that runs this program again: executable and arguments before the CLI's. */
function selfCommand(): { file: string; args: string[] } {
  const versions = process.versions as Record<string, string | undefined>;
  const script = process.argv[1];
  if (versions.deno !== undefined) {
    const mainModule = (globalThis as { Deno?: { mainModule?: string } })
      .Deno?.mainModule;
    return {
      file: process.execPath,
      args: ["run", "-A", "--unstable-net", mainModule ?? script],
    };
  }
  if (versions.bun !== undefined) {
    return { file: process.execPath, args: [script] };
  }
  return { file: process.execPath, args: [...process.execArgv, script] };
}

/** A free port on `host`, for every worker to share. */
function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen({ port: 0, host }, () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** One running worker, whichever way it was started. */
interface WorkerHandle {
  /** Its number, from 1 in order of starting (the `worker` label of its metrics). */
  id: number;
  pid: number;
  started: number;
  listening: boolean;
  stats: WorkerStats | null;
  send(m: WorkerMessage): void;
  /** Resolves to true once it listens, false if it exits before. */
  ready: Promise<boolean>;
}

/** Starts a worker; `onMessage` and `onExit` may be called before it resolves. */
type Spawner = (
  env: Record<string, string>,
  onMessage: (m: unknown) => void,
  onExit: (code: number | null, signal: string | null) => void,
) => Promise<{ pid: number; send(m: WorkerMessage): void }>;

/**
 * How long {@link watchWorker} waits, after a worker exited, for its IPC
 * channel to end before reporting the exit anyway.
 */
export const CHANNEL_END_MS = 2000;

/**
 * Passes a worker's messages to `onMessage` and its exit to `onExit`, the
 * exit only once its IPC channel has ended (`disconnect`), so after every
 * message it sent: the supervisor judges an exit by the `stopped` message
 * before it, and a runtime may report the exit first (Deno reads a child's
 * messages and waits for its exit independently). A channel that has not
 * ended `graceMs` after the exit does not hold the exit back longer.
 *
 * @param worker a `node:child_process` child or a `node:cluster` worker
 * @param onMessage called with each message
 * @param onExit called once, with the exit status or the signal
 * @param graceMs how long to wait for the channel's end after the exit
 *
 * @example
 * ```ts
 * import { fork } from "node:child_process";
 * import { watchWorker } from "./workers.ts";
 *
 * watchWorker(
 *   fork("worker.js"),
 *   (m) => console.log("message", m),
 *   (code, signal) => console.log("exited", signal ?? code), // after them all
 * );
 * ```
 */
export function watchWorker(
  worker: Pick<EventEmitter, "on" | "once">,
  onMessage: (m: unknown) => void,
  onExit: (code: number | null, signal: string | null) => void,
  graceMs: number = CHANNEL_END_MS,
): void {
  let ended = false;
  let status: [number | null, string | null] | null = null;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const report = () => {
    if (status === null) return;
    clearTimeout(timer);
    const [code, signal] = status;
    status = null;
    onExit(code, signal);
  };
  worker.on("message", onMessage);
  worker.once("disconnect", () => {
    ended = true;
    report();
  });
  worker.once("exit", (code: number | null, signal: string | null) => {
    status = [code, signal];
    if (ended) report();
    else timer = setTimeout(report, graceMs);
  });
}

/** Workers as child processes listening with SO_REUSEPORT. */
function childSpawner(): Spawner {
  const { file, args } = selfCommand();
  return async (env, onMessage, onExit) => {
    const { spawn } = await import("node:child_process");
    const child: ChildProcess = spawn(
      file,
      [...args, ...process.argv.slice(2)],
      {
        env: { ...process.env, ...env },
        stdio: ["ignore", "inherit", "inherit", "ipc"],
      },
    );
    let exited = false;
    const exit = (code: number | null, signal: string | null) => {
      if (exited) return;
      exited = true;
      onExit(code, signal);
    };
    watchWorker(child, onMessage, exit);
    child.once("error", () => exit(null, null));
    return {
      pid: child.pid ?? -1,
      send(m) {
        try {
          child.send(m, () => {/* a worker that left cannot be told */});
        } catch { /* gone */ }
      },
    };
  };
}

/** Workers under node:cluster (Node without reusePort). */
async function clusterSpawner(): Promise<Spawner> {
  const cluster = (await import("node:cluster")).default;
  return (env, onMessage, onExit) => {
    const worker = cluster.fork(env);
    watchWorker(worker, onMessage, onExit);
    worker.on("error", () => {/* surfaced as exit */});
    return Promise.resolve({
      pid: worker.process.pid ?? -1,
      send(m) {
        try {
          worker.send(m, undefined, () => {/* gone */});
        } catch { /* gone */ }
      },
    });
  };
}

/**
 * Runs `o.workers` server processes on one port until SIGINT or SIGTERM,
 * replacing those that die; resolves to the exit code (0 after a clean
 * stop). Prints one summary with every worker's counts.
 *
 * @param o the parsed command line (`o.workers` above 1)
 */
export async function superviseWorkers(o: CliOptions): Promise<number> {
  const log = new Log(o);
  const started = Date.now();
  const mode = hasReusePort() ? "reuseport" : "cluster";
  const spawner = mode === "reuseport"
    ? childSpawner()
    : await clusterSpawner();
  let port: number;
  try {
    port = o.port === 0 ? await freePort(o.host) : o.port;
  } catch (error) {
    log.error("listen-failed", `cannot find a free port: ${errorText(error)}`, {
      error: errorText(error),
    });
    return 1;
  }
  const env = {
    [WORKER_ENV]: mode,
    [WORKER_PORT_ENV]: String(port),
    [WORKER_PARENT_ENV]: String(process.pid),
  };
  // The per-address limits, counted here for every worker.
  const limits = new LimitsHolder(o);
  let serial = 0;
  const workers = new Set<WorkerHandle>();
  const total: WorkerStats = { messages: 0, bytes: 0, failed: 0 };
  let stopping = false;
  let restarts = 0;
  let rapidFailures = 0;
  let nextStart = 0;
  let exitCode = 0;
  let allGone: () => void = () => {};
  const gone = new Promise<void>((r) => (allGone = r));
  // Why the first worker died before it listened (bad flag, port taken).
  let firstCode = 1;
  // --metrics: served here, with what the workers count.
  const metrics = o.metrics === undefined ? null : new WorkerMetrics();
  let endpoint: MetricsEndpoint | null = null;
  if (o.metrics !== undefined) {
    endpoint = await serveMetrics(
      o.metrics,
      () =>
        metrics!.render(
          [...workers].filter((w) => w.listening).map((w) => ({
            name: String(w.id),
            send: (request) => w.send(request),
          })),
        ),
      () => !stopping && [...workers].some((w) => w.listening),
    );
    log.notice(
      "metrics",
      `metrics on http://${hostPort(o.metrics.host, endpoint.port)}/metrics`,
      { host: o.metrics.host, port: endpoint.port },
    );
  }

  const stopAll = () => {
    if (stopping) return;
    stopping = true;
    if (workers.size === 0) return allGone();
    for (const w of workers) w.send({ smtpd: "stop" });
  };

  const start = async (): Promise<WorkerHandle> => {
    let ready: (ok: boolean) => void = () => {};
    const id = ++serial;
    const h: WorkerHandle = {
      id,
      pid: -1,
      started: Date.now(),
      listening: false,
      stats: null,
      send: () => {},
      ready: new Promise<boolean>((r) => (ready = r)),
    };
    workers.add(h);
    const onMessage = (m: unknown) => {
      const reply = limits.handle(id, m);
      if (reply !== null) return h.send(reply);
      if (metrics?.handle(String(id), m)) return;
      if (!isWorkerMessage(m)) return;
      if (m.smtpd === "listening") {
        h.listening = true;
        ready(true);
        log.debug("worker-listening", `worker ${h.pid} listening`, {
          pid: h.pid,
        });
        if (stopping) h.send({ smtpd: "stop" });
      } else if (m.smtpd === "stopped") {
        h.stats = { messages: m.messages, bytes: m.bytes, failed: m.failed };
      }
    };
    const onExit = (code: number | null, signal: string | null) => {
      workers.delete(h);
      limits.release(id);
      metrics?.gone(String(id));
      if (h.stats) {
        total.messages += h.stats.messages;
        total.bytes += h.stats.bytes;
        total.failed += h.stats.failed;
      }
      const how = signal ? `signal ${signal}` : `code ${code}`;
      if (!h.listening) {
        firstCode = code === 0 || code === null ? 1 : code;
        ready(false);
      }
      if (stopping) {
        if (code !== 0 || !h.stats) {
          exitCode = 1;
          log.error("worker-exit", `worker ${h.pid} exited with ${how}`, {
            pid: h.pid,
            code,
            signal,
          });
        }
        if (workers.size === 0) allGone();
        return;
      }
      const rapid = Date.now() - h.started < RAPID_FAILURE_MS;
      rapidFailures = rapid ? rapidFailures + 1 : 0;
      if (rapidFailures >= MAX_RAPID_FAILURES) {
        log.error(
          "workers-failing",
          `worker ${h.pid} exited with ${how}; ${rapidFailures} workers in a row died within ${
            duration(RAPID_FAILURE_MS)
          } of starting: giving up`,
          { pid: h.pid, code, signal, failures: rapidFailures },
        );
        exitCode = 1;
        return stopAll();
      }
      log.error(
        "worker-exit",
        `worker ${h.pid} exited with ${how}; starting another`,
        { pid: h.pid, code, signal },
      );
      restarts++;
      // At most one start a second: a crash loop does not spin.
      const wait = Math.max(0, nextStart - Date.now());
      nextStart = Date.now() + wait + RESTART_INTERVAL_MS;
      setTimeout(() => {
        if (!stopping) start().catch(spawnFailed);
      }, wait);
    };
    try {
      const w = await spawner(env, onMessage, onExit);
      h.pid = w.pid;
      h.send = w.send;
    } catch (error) {
      workers.delete(h);
      throw error;
    }
    return h;
  };
  const spawnFailed = (error: unknown) => {
    log.error("worker-spawn", `cannot start a worker: ${errorText(error)}`, {
      error: errorText(error),
    });
    exitCode = 1;
    stopAll();
  };

  // Signals: the first stops the workers gracefully, a second kills them.
  let signals = 0;
  const onSignal = (signal: string) => {
    signals++;
    if (signals === 1) {
      log.info(
        "stopping",
        `${signal}: stopping ${count(workers.size, "worker")}`,
        { reason: signal, workers: workers.size },
      );
      return stopAll();
    }
    log.error("exit", `${signal} again: exiting without waiting`, { signal });
    for (const w of workers) {
      try {
        process.kill(w.pid, "SIGKILL");
      } catch { /* gone */ }
    }
    process.exit(1);
  };
  const unwatch = watchStopSignals(onSignal);
  // SIGHUP: every worker reloads its certificate and auth file.
  const unwatchReload = watchReloadSignal(() => {
    for (const w of workers) {
      try {
        process.kill(w.pid, "SIGHUP");
      } catch { /* gone */ }
    }
  });

  try {
    // One worker first: a bad flag or file, or a port in use, shows once.
    nextStart = Date.now() + RESTART_INTERVAL_MS;
    if (!await (await start()).ready) {
      stopping = true;
      return firstCode;
    }
    const rest: WorkerHandle[] = [];
    for (let i = 1; i < o.workers && !stopping; i++) rest.push(await start());
    await Promise.all(rest.map((h) => h.ready));
    if (!stopping) {
      const pids = [...workers].map((w) => w.pid);
      log.info(
        "workers",
        `${count(o.workers, "worker")} on ${hostPort(o.host, port)} (${
          mode === "reuseport" ? "SO_REUSEPORT" : "node:cluster"
        }), pids ${pids.join(", ")}`,
        { workers: o.workers, host: o.host, port, mode, pids },
      );
    }
    await gone;
  } catch (error) {
    spawnFailed(error);
    await gone;
  } finally {
    unwatch();
    unwatchReload();
    await endpoint?.close();
  }
  const uptime = Date.now() - started;
  log.info(
    "stopped",
    stoppedText(uptime, total) +
      ` (${count(o.workers, "worker")}${
        restarts > 0 ? `, ${count(restarts, "restart")}` : ""
      })`,
    {
      messages: total.messages,
      bytes: total.bytes,
      failed: total.failed,
      uptime: uptime / 1000,
      workers: o.workers,
      restarts,
    },
  );
  return exitCode;
}
