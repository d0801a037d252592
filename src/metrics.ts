/**
 * Numbers an operator can watch: a small registry of counters, gauges and
 * histograms with labels, rendered in the Prometheus text exposition
 * format 0.0.4 (as `server.stats()` is, see `stats.ts`), and
 * {@link createMetrics}: the server's metric set with `server.stats()`
 * first, or inferred from its structured log entries
 * (`serve({ logger: metrics.logger })`) for compatibility.
 *
 * Runtime-free: no timers, no I/O. Snapshots are plain data (JSON-safe), so
 * that worker processes can send theirs to the primary, which sums them
 * with {@link mergeSnapshots}.
 *
 * @module
 */

import type { LogEntry, Logger } from "./session.ts";
import {
  type FamilySnapshot,
  LATENCY_BUCKETS,
  type MetricType,
  refusalReason,
  type SeriesSnapshot,
  SESSION_OUTCOMES,
  SMTPD_FAMILIES,
  type Snapshot,
} from "./stats.ts";

export {
  type FamilySnapshot,
  LATENCY_BUCKETS,
  type MetricType,
  type RefusalCode,
  refusalReason,
  type SeriesSnapshot,
  type ServerStats,
  SMTPD_FAMILIES,
  type Snapshot,
} from "./stats.ts";

/**
 * Label name → value, as given to `inc`, `set` and `observe`: exactly the
 * label names the family was registered with.
 *
 * @example
 * ```ts
 * import type { Labels } from "@smtpd/smtpd/metrics";
 *
 * const labels: Labels = { hook: "onMessage" };
 * ```
 */
export type Labels = Readonly<Record<string, string>>;

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

interface Series {
  labels: Record<string, string>;
  value: number;
  counts: number[];
  sum: number;
  count: number;
}

/** The series key: label values in the family's label order. */
function seriesKey(
  name: string,
  labelNames: readonly string[],
  labels: Labels,
): string {
  const given = Object.keys(labels);
  if (
    given.length !== labelNames.length ||
    labelNames.some((l) => typeof labels[l] !== "string")
  ) {
    throw new TypeError(
      `Cannot update metric ${name}: labels must be exactly {${
        labelNames.join(", ")
      }}, got {${given.join(", ")}}`,
    );
  }
  return JSON.stringify(labelNames.map((l) => labels[l]));
}

/**
 * What counters, gauges and histograms share: one metric family (a name,
 * its help text, label names) and its series, one per set of label values.
 * Made by a {@link Registry}, never directly.
 *
 * @example
 * ```ts
 * import { type Metric, Registry } from "@smtpd/smtpd/metrics";
 *
 * const m: Metric = new Registry().gauge("app_open", "Open things.");
 * console.log(m.name, m.snapshot().series.length);
 * ```
 */
export class Metric {
  readonly #series = new Map<string, Series>();
  /** The metric name. */
  readonly name: string;
  /** The `# HELP` text. */
  readonly help: string;
  /** Counter, gauge or histogram. */
  readonly type: MetricType;
  /** The label names each series carries. */
  readonly labelNames: readonly string[];
  /** A histogram's bucket upper bounds (without `+Inf`). */
  readonly buckets: readonly number[] | undefined;
  /** Called by {@link Registry}, which checks the arguments. */
  constructor(
    name: string,
    help: string,
    type: MetricType,
    labelNames: readonly string[],
    buckets: readonly number[] | undefined,
  ) {
    this.name = name;
    this.help = help;
    this.type = type;
    this.labelNames = labelNames;
    this.buckets = buckets;
  }

  /** Adds `by` to the value of the series of `labels` (created at 0). */
  protected add(labels: Labels, by: number): void {
    this.#get(labels).value += by;
  }

  /** Sets the value of the series of `labels`. */
  protected assign(labels: Labels, value: number): void {
    this.#get(labels).value = value;
  }

  /** Counts `value` in the first bucket whose bound is ≥ it. */
  protected record(labels: Labels, value: number): void {
    const s = this.#get(labels);
    const bounds = this.buckets!;
    let i = 0;
    while (i < bounds.length && value > bounds[i]) i++;
    s.counts[i]++;
    s.sum += value;
    s.count++;
  }

  #get(labels: Labels): Series {
    const key = seriesKey(this.name, this.labelNames, labels);
    let s = this.#series.get(key);
    if (s === undefined) {
      const copy: Record<string, string> = {};
      for (const l of this.labelNames) copy[l] = labels[l];
      s = {
        labels: copy,
        value: 0,
        counts: this.buckets ? new Array(this.buckets.length + 1).fill(0) : [],
        sum: 0,
        count: 0,
      };
      this.#series.set(key, s);
    }
    return s;
  }

  /** This family's current state. */
  snapshot(): FamilySnapshot {
    const series: SeriesSnapshot[] = [];
    for (const s of this.#series.values()) {
      series.push(
        this.type === "histogram"
          ? {
            labels: { ...s.labels },
            counts: [...s.counts],
            sum: s.sum,
            count: s.count,
          }
          : { labels: { ...s.labels }, value: s.value },
      );
    }
    return {
      name: this.name,
      help: this.help,
      type: this.type,
      labelNames: [...this.labelNames],
      ...(this.buckets ? { buckets: [...this.buckets] } : {}),
      series,
    };
  }
}

/**
 * A counter: a value that only goes up (events, bytes). Made by
 * {@link Registry.counter}.
 *
 * @example
 * ```ts
 * import { Registry } from "@smtpd/smtpd/metrics";
 *
 * const c = new Registry().counter("app_jobs_total", "Jobs.", ["result"]);
 * c.inc({ result: "ok" });
 * c.inc({ result: "ok" }, 2);
 * ```
 */
export class Counter extends Metric {
  /** Adds `by` (default 1, never negative) to the series of `labels`. */
  inc(labels: Labels = {}, by = 1): void {
    if (!(by >= 0) || by === Infinity) {
      throw new TypeError(
        `Cannot increase counter ${this.name}: amount ${by} is not a finite non-negative number`,
      );
    }
    this.add(labels, by);
  }
}

/**
 * A gauge: a value that goes up and down (open connections). Made by
 * {@link Registry.gauge}.
 *
 * @example
 * ```ts
 * import { Registry } from "@smtpd/smtpd/metrics";
 *
 * const g = new Registry().gauge("app_open", "Open things.");
 * g.inc();
 * g.dec();
 * g.set({}, 4);
 * ```
 */
export class Gauge extends Metric {
  /** Adds `by` (default 1). */
  inc(labels: Labels = {}, by = 1): void {
    this.add(labels, by);
  }
  /** Subtracts `by` (default 1). */
  dec(labels: Labels = {}, by = 1): void {
    this.add(labels, -by);
  }
  /** Sets the value. */
  set(labels: Labels, value: number): void {
    this.assign(labels, value);
  }
}

/**
 * A histogram: observations (durations in seconds, sizes in bytes)
 * counted in buckets. Made by {@link Registry.histogram}.
 *
 * @example
 * ```ts
 * import { Registry } from "@smtpd/smtpd/metrics";
 *
 * const h = new Registry().histogram("app_wait_seconds", "Waits.", [], [0.1, 1]);
 * h.observe({}, 0.05);
 * ```
 */
export class Histogram extends Metric {
  /** Counts `value` in the first bucket whose bound is ≥ it. */
  observe(labels: Labels, value: number): void {
    if (Number.isNaN(value)) {
      throw new TypeError(
        `Cannot observe histogram ${this.name}: value is NaN`,
      );
    }
    this.record(labels, value);
  }
}

/**
 * A set of metric families: register them once, update them, then take a
 * {@link Snapshot} or the Prometheus text with {@link Registry.render}.
 * Names follow Prometheus' rules; counters must end with `_total`.
 *
 * @example
 * ```ts
 * import { Registry } from "@smtpd/smtpd/metrics";
 *
 * const registry = new Registry();
 * const jobs = registry.counter("app_jobs_total", "Jobs done.", ["result"]);
 * jobs.inc({ result: "ok" });
 * console.log(registry.render());
 * ```
 */
export class Registry {
  readonly #families: Metric[] = [];

  /** Registers a counter (`name` ends with `_total`). */
  counter(name: string, help: string, labelNames: string[] = []): Counter {
    if (!name.endsWith("_total")) {
      throw new TypeError(
        `Cannot register counter ${name}: a counter's name must end with _total`,
      );
    }
    return this.#add(
      new Counter(
        ...this.#check(name, help, labelNames),
        "counter",
        labelNames,
        undefined,
      ),
    );
  }

  /** Registers a gauge. */
  gauge(name: string, help: string, labelNames: string[] = []): Gauge {
    return this.#add(
      new Gauge(
        ...this.#check(name, help, labelNames),
        "gauge",
        labelNames,
        undefined,
      ),
    );
  }

  /** Registers a histogram with the given bucket bounds (ascending, finite). */
  histogram(
    name: string,
    help: string,
    labelNames: string[],
    buckets: readonly number[],
  ): Histogram {
    if (labelNames.includes("le")) {
      throw new TypeError(
        `Cannot register histogram ${name}: the label name "le" is reserved`,
      );
    }
    if (
      buckets.length === 0 ||
      buckets.some((b, i) =>
        !Number.isFinite(b) || (i > 0 && !(b > buckets[i - 1]))
      )
    ) {
      throw new TypeError(
        `Cannot register histogram ${name}: buckets must be finite and ascending`,
      );
    }
    return this.#add(
      new Histogram(
        ...this.#check(name, help, labelNames),
        "histogram",
        labelNames,
        [
          ...buckets,
        ],
      ),
    );
  }

  /** The families' current state, in registration order. */
  snapshot(): Snapshot {
    return this.#families.map((f) => f.snapshot());
  }

  /** The Prometheus text exposition (format 0.0.4) of {@link snapshot}. */
  render(): string {
    return formatPrometheus(this.snapshot());
  }

  #check(name: string, help: string, labelNames: string[]): [string, string] {
    if (!NAME.test(name)) {
      throw new TypeError(
        `Cannot register metric ${JSON.stringify(name)}: the name is invalid`,
      );
    }
    if (this.#families.some((f) => f.name === name)) {
      throw new TypeError(`Cannot register metric ${name}: the name is taken`);
    }
    for (const l of labelNames) {
      if (!LABEL.test(l) || l.startsWith("__")) {
        throw new TypeError(
          `Cannot register metric ${name}: label name ${
            JSON.stringify(l)
          } is invalid`,
        );
      }
    }
    if (new Set(labelNames).size !== labelNames.length) {
      throw new TypeError(
        `Cannot register metric ${name}: a label name repeats`,
      );
    }
    return [name, help];
  }

  #add<F extends Metric>(family: F): F {
    this.#families.push(family);
    return family;
  }
}

/** A sample value as the text format writes it. */
function formatValue(v: number): string {
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  if (Number.isNaN(v)) return "NaN";
  return String(v);
}

/** Escapes a label value: backslash, double quote and line feed. */
function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** Escapes HELP text: backslash and line feed. */
function escapeHelp(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

function formatLabels(pairs: [string, string][]): string {
  if (pairs.length === 0) return "";
  return `{${pairs.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",")}}`;
}

/** The family's series sorted by label values (a stable, diffable output). */
function sortedSeries(f: FamilySnapshot): SeriesSnapshot[] {
  const key = (s: SeriesSnapshot) =>
    JSON.stringify(f.labelNames.map((l) => s.labels[l] ?? ""));
  return [...f.series].sort((a, b) => {
    const ka = key(a), kb = key(b);
    return ka < kb ? -1 : ka > kb ? 1 : 0;
  });
}

/**
 * Renders a {@link Snapshot} in the Prometheus text exposition format
 * 0.0.4: per family a `# HELP` and a `# TYPE` line, then its series sorted
 * by label values; histograms as cumulative `_bucket{le="…"}` lines ending
 * with `le="+Inf"`, then `_sum` and `_count`. Label values are escaped
 * (`\\`, `\"`, `\n`), and so is HELP text (`\\`, `\n`).
 *
 * @example
 * ```ts
 * import { formatPrometheus, Registry } from "@smtpd/smtpd/metrics";
 *
 * const registry = new Registry();
 * registry.gauge("app_open", "Open things.").set({}, 2);
 * formatPrometheus(registry.snapshot());
 * // "# HELP app_open Open things.\n# TYPE app_open gauge\napp_open 2\n"
 * ```
 */
export function formatPrometheus(snapshot: Snapshot): string {
  let out = "";
  for (const f of snapshot) {
    out += `# HELP ${f.name} ${
      escapeHelp(f.help)
    }\n# TYPE ${f.name} ${f.type}\n`;
    for (const s of sortedSeries(f)) {
      const pairs: [string, string][] = f.labelNames.map((l) => [
        l,
        s.labels[l] ?? "",
      ]);
      if (f.type !== "histogram") {
        out += `${f.name}${formatLabels(pairs)} ${formatValue(s.value ?? 0)}\n`;
        continue;
      }
      const bounds = f.buckets ?? [];
      const counts = s.counts ?? [];
      let cumulative = 0;
      for (let i = 0; i <= bounds.length; i++) {
        cumulative += counts[i] ?? 0;
        const le = i < bounds.length ? formatValue(bounds[i]) : "+Inf";
        out += `${f.name}_bucket${
          formatLabels([...pairs, ["le", le]])
        } ${cumulative}\n`;
      }
      out += `${f.name}_sum${formatLabels(pairs)} ${formatValue(s.sum ?? 0)}\n`;
      out += `${f.name}_count${formatLabels(pairs)} ${s.count ?? 0}\n`;
    }
  }
  return out;
}

/**
 * One worker's snapshot, named, for {@link mergeSnapshots}.
 *
 * @example
 * ```ts
 * import { Registry, type WorkerSnapshot } from "@smtpd/smtpd/metrics";
 *
 * const w: WorkerSnapshot = { worker: "1", snapshot: new Registry().snapshot() };
 * ```
 */
export interface WorkerSnapshot {
  /** The worker's name (its number), the value of the `worker` label. */
  readonly worker: string;
  /** What its registry reported. */
  readonly snapshot: Snapshot;
}

/**
 * Options of {@link mergeSnapshots}.
 *
 * @example
 * ```ts
 * import type { MergeOptions } from "@smtpd/smtpd/metrics";
 *
 * const perWorker: MergeOptions = { byWorker: true };
 * ```
 */
export interface MergeOptions {
  /**
   * Keep one series per worker, with a `worker` label added (the
   * per-worker view), instead of summing them. Default false.
   */
  readonly byWorker?: boolean;
}

/**
 * Merges the snapshots of several processes (the workers of one server):
 * by default each series is the sum of the workers' series with the same
 * labels (counters, gauges such as open connections, and histogram
 * buckets, sums and counts); with `byWorker: true` the series are kept
 * apart, each with a `worker` label. Families are matched by name and must
 * agree on type, labels and buckets (TypeError otherwise); their order is
 * the first snapshot's, then any new ones in order of appearance.
 *
 * @example
 * ```ts
 * import { formatPrometheus, mergeSnapshots, Registry } from "@smtpd/smtpd/metrics";
 *
 * const a = new Registry(), b = new Registry();
 * a.counter("app_jobs_total", "Jobs.").inc({}, 2);
 * b.counter("app_jobs_total", "Jobs.").inc({}, 3);
 * const workers = [
 *   { worker: "1", snapshot: a.snapshot() },
 *   { worker: "2", snapshot: b.snapshot() },
 * ];
 * formatPrometheus(mergeSnapshots(workers)); // app_jobs_total 5
 * formatPrometheus(mergeSnapshots(workers, { byWorker: true })); // one line each
 * ```
 */
export function mergeSnapshots(
  workers: readonly WorkerSnapshot[],
  options: MergeOptions = {},
): Snapshot {
  const byWorker = options.byWorker ?? false;
  interface Acc {
    family: FamilySnapshot;
    labelNames: string[];
    series: Map<string, Series>;
  }
  const families = new Map<string, Acc>();
  for (const { worker, snapshot } of workers) {
    for (const f of snapshot) {
      let acc = families.get(f.name);
      if (acc === undefined) {
        if (byWorker && f.labelNames.includes("worker")) {
          throw new TypeError(
            `Cannot merge metric ${f.name}: it has a worker label already`,
          );
        }
        acc = {
          family: f,
          labelNames: byWorker
            ? [...f.labelNames, "worker"]
            : [...f.labelNames],
          series: new Map(),
        };
        families.set(f.name, acc);
      } else if (
        acc.family.type !== f.type ||
        acc.family.labelNames.join(",") !== f.labelNames.join(",") ||
        (acc.family.buckets ?? []).join(",") !== (f.buckets ?? []).join(",")
      ) {
        throw new TypeError(
          `Cannot merge metric ${f.name}: its type, labels or buckets differ between workers`,
        );
      }
      for (const s of f.series) {
        const labels: Record<string, string> = {};
        for (const l of f.labelNames) labels[l] = s.labels[l] ?? "";
        if (byWorker) labels.worker = worker;
        const key = JSON.stringify(acc.labelNames.map((l) => labels[l]));
        let m = acc.series.get(key);
        if (m === undefined) {
          m = {
            labels,
            value: 0,
            counts: new Array((f.buckets?.length ?? -1) + 1).fill(0),
            sum: 0,
            count: 0,
          };
          acc.series.set(key, m);
        }
        m.value += s.value ?? 0;
        s.counts?.forEach((c, i) => m!.counts[i] += c);
        m.sum += s.sum ?? 0;
        m.count += s.count ?? 0;
      }
    }
  }
  return [...families.values()].map(({ family: f, labelNames, series }) => ({
    name: f.name,
    help: f.help,
    type: f.type,
    labelNames,
    ...(f.buckets ? { buckets: [...f.buckets] } : {}),
    series: [...series.values()].map((s) =>
      f.type === "histogram"
        ? { labels: s.labels, counts: s.counts, sum: s.sum, count: s.count }
        : { labels: s.labels, value: s.value }
    ),
  }));
}

const OUTCOMES = new Set(SESSION_OUTCOMES);

/** The hooks whose latency {@link SmtpdMetrics.instrument} measures. */
const HOOKS = [
  "onConnect",
  "onHelo",
  "onMailFrom",
  "onRcptTo",
  "onMessage",
  "onClose",
] as const;
const AUTH_HOOKS = ["verify", "lookupPassword", "authorize"] as const;

/** The first code of each complete reply in a `reply` entry's text. */
function replyCodes(text: string): number[] {
  const codes: number[] = [];
  for (const line of text.split("\r\n")) {
    // "250-…" continues a reply; "250 …" or a bare "250" ends it.
    if (line.length >= 3 && line[3] !== "-") {
      const code = Number(line.slice(0, 3));
      if (Number.isInteger(code)) codes.push(code);
    }
  }
  return codes;
}

/** What the collector follows of one session between log entries. */
interface SessionState {
  /** A command whose reply tells an outcome, and commands logged after it. */
  watch: { kind: "data" | "bdat" | "starttls"; after: number } | null;
  /** DATA got 354: the next reply ends the message. */
  inData: boolean;
  /** The client greeted with LHLO: one reply per recipient after the data. */
  lmtp: boolean;
  /** STARTTLS got 220: the handshake's outcome is the next entry's. */
  tlsPending: boolean;
}

/**
 * Options of {@link createMetrics}.
 *
 * @example
 * ```ts
 * import { createMetrics } from "@smtpd/smtpd/metrics";
 *
 * let t = 0;
 * const metrics = createMetrics({ now: () => (t += 5) }); // a fake clock in ms
 * ```
 */
export interface MetricsOptions {
  /** A monotonic clock in milliseconds, for hook latencies. Default `performance.now()`. */
  readonly now?: () => number;
  /** Bucket bounds (seconds) of the latency histograms. Default {@link LATENCY_BUCKETS}. */
  readonly latencyBuckets?: readonly number[];
  /**
   * The server to count: its own counters (`server.stats()`, kept by the
   * driver where things happen) replace the families otherwise inferred
   * from log entries, so that neither {@link SmtpdMetrics.logger} nor
   * {@link SmtpdMetrics.instrument} is needed. The registry's other
   * families (the milter histogram, your own) follow them.
   */
  readonly server?: { stats(): Snapshot };
}

/**
 * The server's metric set, fed by its log entries ({@link SmtpdMetrics.logger})
 * and, for hook latencies, by hooks wrapped with {@link SmtpdMetrics.instrument}.
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd";
 * import { createMetrics } from "@smtpd/smtpd/metrics";
 *
 * const metrics = createMetrics();
 * const server = await serve(metrics.instrument({
 *   port: 0,
 *   logger: metrics.logger,
 *   async onMessage(message) {
 *     await message.bytes();
 *   },
 * }));
 * console.log(metrics.render());
 * await server.close();
 * ```
 */
export interface SmtpdMetrics {
  /** The registry holding the families (add your own to it if you like). */
  readonly registry: Registry;
  /** A `logger` for `serve()`: counts what the entries tell. */
  readonly logger: Logger;
  /**
   * Chains `logger` after the one already in `options` (if any), and wraps
   * the hooks (and the `auth` callbacks) to time them in
   * `smtpd_hook_duration_seconds`. Returns new options; the hooks'
   * results and errors pass through unchanged.
   */
  instrument<O extends object>(options: O): O;
  /** Records a hook's latency in seconds (for hooks timed elsewhere). */
  observeHook(hook: string, seconds: number): void;
  /** Records a milter filter's latency for one stage, in seconds. */
  observeMilter(milter: string, stage: string, seconds: number): void;
  /** The registry's {@link Snapshot} (for {@link mergeSnapshots}). */
  snapshot(): Snapshot;
  /** The Prometheus text exposition. */
  render(): string;
}

/**
 * Creates the server's metric set:
 *
 * - `smtpd_connections_open` (gauge), `smtpd_connections_total`,
 *   `smtpd_connections_refused_total{reason}`;
 * - `smtpd_sessions_total{outcome}` (quit, eof, timeout, rejected,
 *   too-many-errors, protocol-error, shutdown, error);
 * - `smtpd_messages_total{result,class}`: accepted (2xx) and rejected at
 *   the end of the data (4xx, 5xx); `smtpd_received_bytes_total`: the
 *   accepted messages' bytes;
 * - `smtpd_auth_attempts_total{mechanism,result}`, `smtpd_auth_lockouts_total`;
 * - `smtpd_tls_handshakes_total{result}` (STARTTLS);
 * - `smtpd_hook_errors_total{hook}`, `smtpd_hook_timeouts_total`,
 *   `smtpd_hook_duration_seconds{hook}`,
 *   `smtpd_milter_duration_seconds{milter,stage}`.
 *
 * With `server` (see {@link MetricsOptions.server}) those families are
 * the server's own counters (`server.stats()`, which also has
 * `smtpd_messages_aborted_total`, `smtpd_body_bytes_total` and implicit
 * TLS handshakes), followed by the registry's other families: nothing to
 * wire. Without it, pass {@link SmtpdMetrics.logger} as `serve()`'s
 * `logger` (or {@link SmtpdMetrics.instrument} the options): the counts
 * are then inferred from log entries (kept for compatibility). Serve
 * {@link SmtpdMetrics.render} on `/metrics` (see `metricsHandler`).
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd";
 * import { createMetrics } from "@smtpd/smtpd/metrics";
 *
 * const server = await serve({ port: 0 });
 * const metrics = createMetrics({ server });
 * metrics.observeMilter("rspamd", "eom", 0.012);
 * console.log(metrics.render());
 * await server.close();
 * ```
 */
export function createMetrics(options: MetricsOptions = {}): SmtpdMetrics {
  if (options.now !== undefined && typeof options.now !== "function") {
    throw new TypeError("Cannot create metrics: now is not a function");
  }
  if (
    options.server !== undefined &&
    typeof options.server?.stats !== "function"
  ) {
    throw new TypeError("Cannot create metrics: server has no stats()");
  }
  const now = options.now ?? (() => performance.now());
  const buckets = options.latencyBuckets ?? LATENCY_BUCKETS;
  const r = new Registry();
  const F = SMTPD_FAMILIES;
  const open = r.gauge(F.open.name, F.open.help);
  const connections = r.counter(
    F.connections.name,
    F.connections.help,
  );
  const refused = r.counter(
    F.refused.name,
    F.refused.help,
    ["reason"],
  );
  const sessions = r.counter(
    F.sessions.name,
    F.sessions.help,
    ["outcome"],
  );
  const messages = r.counter(
    F.messages.name,
    F.messages.help,
    ["result", "class"],
  );
  const bytes = r.counter(
    F.bytes.name,
    F.bytes.help,
  );
  const auth = r.counter(
    F.auth.name,
    F.auth.help,
    ["mechanism", "result"],
  );
  const lockouts = r.counter(
    F.lockouts.name,
    F.lockouts.help,
  );
  const tls = r.counter(
    F.tls.name,
    F.tls.help,
    ["result"],
  );
  const hookErrors = r.counter(
    F.hookErrors.name,
    F.hookErrors.help,
    ["hook"],
  );
  const hookTimeouts = r.counter(
    F.hookTimeouts.name,
    F.hookTimeouts.help,
  );
  const hookSeconds = r.histogram(
    F.hookSeconds.name,
    F.hookSeconds.help,
    ["hook"],
    buckets,
  );
  const milterSeconds = r.histogram(
    F.milterSeconds.name,
    F.milterSeconds.help,
    ["milter", "stage"],
    buckets,
  );
  // Series that exist from the start, so that a query finds a 0.
  open.set({}, 0);
  connections.inc({}, 0);
  messages.inc({ result: "accepted", class: "2xx" }, 0);
  messages.inc({ result: "rejected", class: "4xx" }, 0);
  messages.inc({ result: "rejected", class: "5xx" }, 0);
  bytes.inc({}, 0);
  lockouts.inc({}, 0);
  tls.inc({ result: "success" }, 0);
  tls.inc({ result: "failure" }, 0);
  hookTimeouts.inc({}, 0);

  const states = new Map<string, SessionState>();
  const rejected = (code: number) => {
    if (code >= 400 && code < 600) {
      messages.inc({
        result: "rejected",
        class: `${Math.floor(code / 100)}xx`,
      });
    }
  };
  const tlsDone = (st: SessionState, ok: boolean) => {
    if (!st.tlsPending) return;
    st.tlsPending = false;
    tls.inc({ result: ok ? "success" : "failure" });
  };

  const logger: Logger = (entry: LogEntry) => {
    switch (entry.type) {
      case "connect":
        open.inc();
        connections.inc();
        states.set(entry.session, {
          watch: null,
          inData: false,
          lmtp: false,
          tlsPending: false,
        });
        break;
      case "refused":
        refused.inc({ reason: refusalReason(entry.reason) });
        break;
      case "close": {
        const st = states.get(entry.session);
        if (st !== undefined) {
          tlsDone(st, true);
          states.delete(entry.session);
          open.dec();
        }
        sessions.inc({
          outcome: OUTCOMES.has(entry.reason) ? entry.reason : "other",
        });
        break;
      }
      case "message":
        messages.inc({ result: "accepted", class: "2xx" });
        bytes.inc({}, entry.size);
        break;
      case "auth":
        auth.inc({
          mechanism: entry.mechanism.toUpperCase(),
          result: entry.success ? "success" : "failure",
        });
        break;
      case "auth-lockout":
        lockouts.inc();
        break;
      case "error": {
        if (entry.hook !== undefined) hookErrors.inc({ hook: entry.hook });
        else if (entry.message.startsWith("hook did not settle")) {
          hookTimeouts.inc();
        }
        const st = entry.session === undefined
          ? undefined
          : states.get(entry.session);
        if (st !== undefined && entry.message === "TLS handshake failed") {
          tlsDone(st, false);
        }
        break;
      }
      case "command": {
        const st = states.get(entry.session);
        if (st === undefined) break;
        tlsDone(st, true);
        if (st.watch !== null) st.watch.after++;
        const line = entry.line;
        const sp = line.indexOf(" ");
        const verb = (sp < 0 ? line : line.slice(0, sp)).toUpperCase();
        if (verb === "LHLO") st.lmtp = true;
        else if (verb === "DATA") st.watch = { kind: "data", after: 0 };
        else if (verb === "STARTTLS") st.watch = { kind: "starttls", after: 0 };
        else if (verb === "BDAT" && /\sLAST\s*$/i.test(line)) {
          st.watch = { kind: "bdat", after: 0 };
        }
        break;
      }
      case "reply": {
        const st = states.get(entry.session);
        if (st === undefined) break;
        let codes = replyCodes(entry.text);
        if (st.inData) {
          // The reply (LMTP: one per recipient) at the end of the data.
          st.inData = false;
          const ends = st.lmtp ? codes : codes.slice(0, 1);
          if (ends.length > 0 && !ends.some((c) => c >= 200 && c < 300)) {
            rejected(ends[0]);
          }
          codes = codes.slice(ends.length);
        }
        const w = st.watch;
        if (w === null) break;
        // Commands pipelined after the watched one each have a reply after its.
        const at = codes.length - 1 - w.after;
        if (at < 0) break;
        st.watch = null;
        const code = codes[at];
        if (w.kind === "data") {
          if (code === 354) st.inData = true;
        } else if (w.kind === "bdat") {
          rejected(code);
        } else if (code === 220) st.tlsPending = true;
        break;
      }
    }
  };

  const timed = <F extends (...args: never[]) => unknown>(
    hook: string,
    fn: F,
  ): F =>
    function (this: unknown, ...args: Parameters<F>): ReturnType<F> {
      const start = now();
      const done = () => hookSeconds.observe({ hook }, (now() - start) / 1000);
      let result: ReturnType<F>;
      try {
        result = fn.apply(this, args) as ReturnType<F>;
      } catch (error) {
        done();
        throw error;
      }
      if (
        result !== null && typeof result === "object" &&
        typeof (result as { then?: unknown }).then === "function"
      ) {
        (result as unknown as PromiseLike<unknown>).then(done, done);
      } else done();
      return result;
    } as F;

  const instrument = <O extends object>(o: O): O => {
    const out: Record<string, unknown> = { ...o } as Record<string, unknown>;
    const given = out.logger as Logger | undefined;
    // The metrics' own logger given already is not chained twice.
    out.logger = given === undefined || given === logger
      ? logger
      : (entry: LogEntry) => {
        logger(entry);
        given(entry);
      };
    for (const name of HOOKS) {
      const fn = out[name];
      if (typeof fn === "function") {
        out[name] = timed(name, fn as () => unknown);
      }
    }
    const a = out.auth;
    if (a !== null && typeof a === "object") {
      const wrapped: Record<string, unknown> = { ...a };
      for (const name of AUTH_HOOKS) {
        const fn = wrapped[name];
        if (typeof fn === "function") {
          wrapped[name] = timed("auth", fn as () => unknown);
        }
      }
      out.auth = wrapped;
    }
    return out as O;
  };

  const server = options.server;
  // The server's own counts replace the families inferred from its log.
  const snapshot = (): Snapshot => {
    const own = r.snapshot();
    if (server === undefined) return own;
    const stats = server.stats();
    const names = new Set(stats.map((f) => f.name));
    return [...stats, ...own.filter((f) => !names.has(f.name))];
  };

  return {
    registry: r,
    logger,
    instrument,
    observeHook: (hook, seconds) => hookSeconds.observe({ hook }, seconds),
    observeMilter: (milter, stage, seconds) =>
      milterSeconds.observe({ milter, stage }, seconds),
    snapshot,
    render: () => formatPrometheus(snapshot()),
  };
}
