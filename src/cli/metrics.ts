/**
 * `smtpd --metrics HOST:PORT`: the Prometheus endpoint of the command
 * line (`/metrics` and `/healthz`, the library's `metricsHandler` on
 * `node:http`, which Deno, Bun and Node all run), and under `--workers`
 * what the supervisor serves there: the workers' snapshots, asked for
 * over their IPC channel on each scrape ({@link WorkerMetrics}), summed,
 * and per worker.
 *
 * @module
 */

import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import {
  formatPrometheus,
  mergeSnapshots,
  metricsHandler,
  type Snapshot,
  toNodeListener,
  type WorkerSnapshot,
} from "../exports/metrics.ts";
import { CliError, type HostAndPort } from "./flag_kinds.ts";
import { errorText, hostPort } from "./log.ts";

/** How long a scrape waits for a worker's snapshot (then uses its last one). */
export const STATS_TIMEOUT_MS = 1000;

/** The supervisor asks a worker for its snapshot. */
export interface StatsRequest {
  /** What it is. */
  smtpd: "stats";
  /** Matches the reply to the request. */
  id: number;
}

/** A worker's answer to the {@link StatsRequest} with the same `id`. */
export interface StatsReply {
  /** What it is. */
  smtpd: "stats-reply";
  /** The request's id. */
  id: number;
  /** Its server's snapshot (`createMetrics({ server }).snapshot()`). */
  snapshot: Snapshot;
}

/**
 * Whether `m` is the supervisor's request for a snapshot.
 *
 * @example
 * ```ts
 * import { isStatsRequest } from "./metrics.ts";
 *
 * isStatsRequest({ smtpd: "stats", id: 1 }); // true
 * ```
 */
export function isStatsRequest(m: unknown): m is StatsRequest {
  return typeof m === "object" && m !== null &&
    (m as { smtpd?: unknown }).smtpd === "stats" &&
    typeof (m as { id?: unknown }).id === "number";
}

function isStatsReply(m: unknown): m is StatsReply {
  return typeof m === "object" && m !== null &&
    (m as { smtpd?: unknown }).smtpd === "stats-reply" &&
    typeof (m as { id?: unknown }).id === "number" &&
    Array.isArray((m as { snapshot?: unknown }).snapshot);
}

/** A running metrics endpoint. */
export interface MetricsEndpoint {
  /** The port it listens on (the one chosen for port 0). */
  readonly port: number;
  /** Stops listening and closes its connections. */
  close(): Promise<void>;
}

/**
 * Serves `render()` on `http://HOST:PORT/metrics` and `healthy()` on
 * `/healthz` (404 elsewhere, GET and HEAD only). A port in use, or an
 * address not on this machine, is a {@link CliError} naming `--metrics`.
 *
 * @param at where to listen
 * @param render the exposition text
 * @param healthy whether `/healthz` says 200 (else 503)
 *
 * @example
 * ```ts
 * import { serveMetrics } from "./metrics.ts";
 *
 * const endpoint = await serveMetrics(
 *   { host: "127.0.0.1", port: 0 },
 *   () => "",
 *   () => true,
 * );
 * await endpoint.close();
 * ```
 */
export async function serveMetrics(
  at: HostAndPort,
  render: () => string | Promise<string>,
  healthy: () => boolean,
): Promise<MetricsEndpoint> {
  const http = createServer(
    toNodeListener(metricsHandler({ render, healthy })),
  );
  try {
    await new Promise<void>((resolve, reject) => {
      http.once("error", reject);
      http.listen(at.port, at.host, () => {
        http.off("error", reject);
        resolve();
      });
    });
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    throw new CliError(
      "--metrics",
      `cannot listen on ${hostPort(at.host, at.port)}: ${
        code === "EADDRINUSE" ? "address in use" : errorText(error)
      }`,
    );
  }
  http.on("error", () => {/* a client's trouble, not the server's */});
  return {
    port: (http.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        http.close(() => resolve());
        (http as { closeAllConnections?: () => void }).closeAllConnections?.();
      }),
  };
}

/** One worker as {@link WorkerMetrics.render} asks it. */
export interface MetricsWorker {
  /** Its name: the value of the `worker` label. */
  readonly name: string;
  /** Sends it a request (it may never answer). */
  send(request: StatsRequest): void;
}

/** A family's per-worker name: `smtpd_x` becomes `smtpd_worker_x`. */
function perWorkerName(name: string): string {
  return `smtpd_worker_${name.replace(/^smtpd_/, "")}`;
}

/** `snapshot` with every gauge at 0 (what a worker that is gone holds open). */
function withoutGauges(snapshot: Snapshot): Snapshot {
  return snapshot.map((f) =>
    f.type !== "gauge"
      ? f
      : { ...f, series: f.series.map((s) => ({ ...s, value: 0 })) }
  );
}

/**
 * The supervisor's view of the workers' metrics. On each scrape it asks
 * every worker for its snapshot (a worker that does not answer within
 * {@link STATS_TIMEOUT_MS} counts with the last one it sent), and renders
 * the sum, then the same families per worker (`smtpd_worker_…{worker}`).
 * A worker that is gone leaves its last snapshot in the sum (its gauges
 * at 0), so that counters never go backwards when a worker is replaced.
 *
 * @example
 * ```ts
 * import { WorkerMetrics } from "./metrics.ts";
 *
 * const m = new WorkerMetrics();
 * const text = await m.render([]); // no worker yet: ""
 * ```
 */
export class WorkerMetrics {
  readonly #timeout: number;
  /** What the workers that are gone counted, summed. */
  #baseline: Snapshot = [];
  /** Each live worker's last snapshot, by name. */
  readonly #last = new Map<string, Snapshot>();
  readonly #waiting = new Map<
    number,
    { worker: string; done: () => void }
  >();
  #nextId = 1;

  /** @param timeout how long a scrape waits for a worker (ms) */
  constructor(timeout: number = STATS_TIMEOUT_MS) {
    this.#timeout = timeout;
  }

  /** Takes `m` if it is a worker's reply (true), else false. */
  handle(worker: string, m: unknown): boolean {
    if (!isStatsReply(m)) return false;
    const w = this.#waiting.get(m.id);
    // A late answer is newer all the same: keep it.
    if (this.#last.has(worker) || w !== undefined) {
      this.#last.set(worker, m.snapshot);
    }
    if (w !== undefined) {
      this.#waiting.delete(m.id);
      w.done();
    }
    return true;
  }

  /** Worker `worker` is gone: its last snapshot joins the baseline. */
  gone(worker: string): void {
    const last = this.#last.get(worker);
    this.#last.delete(worker);
    for (const [id, w] of this.#waiting) {
      if (w.worker !== worker) continue;
      this.#waiting.delete(id);
      w.done();
    }
    if (last === undefined) return;
    this.#baseline = mergeSnapshots([
      { worker: "", snapshot: this.#baseline },
      { worker: "", snapshot: withoutGauges(last) },
    ]);
  }

  /** Asks each of `workers` for its snapshot, then renders the sum and each. */
  async render(workers: readonly MetricsWorker[]): Promise<string> {
    await Promise.all(workers.map((w) => this.#ask(w)));
    const live: WorkerSnapshot[] = [];
    for (const w of workers) {
      const snapshot = this.#last.get(w.name);
      if (snapshot !== undefined) live.push({ worker: w.name, snapshot });
    }
    const sum = mergeSnapshots([
      { worker: "", snapshot: this.#baseline },
      ...live,
    ]);
    const each = mergeSnapshots(live, { byWorker: true }).map((f) => ({
      ...f,
      name: perWorkerName(f.name),
      help: `${f.help} Per worker.`,
    }));
    return formatPrometheus([...sum, ...each]);
  }

  #ask(w: MetricsWorker): Promise<void> {
    if (!this.#last.has(w.name)) this.#last.set(w.name, []);
    return new Promise<void>((resolve) => {
      const id = this.#nextId++;
      const timer = setTimeout(() => {
        this.#waiting.delete(id);
        resolve();
      }, this.#timeout);
      this.#waiting.set(id, {
        worker: w.name,
        done: () => {
          clearTimeout(timer);
          resolve();
        },
      });
      w.send({ smtpd: "stats", id });
    });
  }
}
