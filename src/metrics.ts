/**
 * Numbers an operator can watch: a small registry of counters, gauges and
 * histograms with labels, rendered in the Prometheus text exposition
 * format 0.0.4 (as `server.stats()` is, see `stats.ts`), and
 * {@link createMetrics}: the server's stats followed by families of the
 * registry (the milter histogram, your own).
 *
 * Runtime-free: no timers, no I/O. Snapshots are plain data (JSON-safe), so
 * that worker processes can send theirs to the primary, which sums them
 * with {@link mergeSnapshots}.
 *
 * @module
 */

import {
  type FamilySnapshot,
  LATENCY_BUCKETS,
  type MetricType,
  type SeriesSnapshot,
  SMTPD_FAMILIES,
  type Snapshot,
} from "./stats.ts";

export {
  type FamilySnapshot,
  LATENCY_BUCKETS,
  type MetricType,
  type SeriesSnapshot,
  type ServerStats,
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

/**
 * Options of {@link createMetrics}.
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd";
 * import { createMetrics, type MetricsOptions } from "@smtpd/smtpd/metrics";
 *
 * const server = await serve({ port: 0 });
 * const options: MetricsOptions = { server, latencyBuckets: [0.01, 0.1, 1] };
 * await server.close();
 * ```
 */
export interface MetricsOptions {
  /**
   * The server to count: its counters (`server.stats()`, kept by the
   * driver where things happen) come first in every snapshot.
   */
  readonly server?: { stats(): Snapshot };
  /**
   * Bucket bounds (seconds) of the milter latency histogram. Default
   * {@link LATENCY_BUCKETS}. A server with `milters` times its filters
   * itself, with the default buckets; what `observeMilter()` records is
   * added to its series when the buckets are the same (else only the
   * server's are shown).
   */
  readonly latencyBuckets?: readonly number[];
}

/**
 * A server's metric set: its counters (`server.stats()`), then the
 * families of {@link SmtpdMetrics.registry} (the milter latency histogram,
 * and any of your own).
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd";
 * import { createMetrics } from "@smtpd/smtpd/metrics";
 *
 * const server = await serve({ port: 0 });
 * const metrics = createMetrics({ server });
 * metrics.registry.counter("app_spam_total", "Spam seen.").inc();
 * console.log(metrics.render());
 * await server.close();
 * ```
 */
export interface SmtpdMetrics {
  /** The registry holding the families besides the server's (add your own to it). */
  readonly registry: Registry;
  /** Records a milter filter's latency for one stage, in seconds. */
  observeMilter(milter: string, stage: string, seconds: number): void;
  /** The server's stats, then the registry's families (for {@link mergeSnapshots}). */
  snapshot(): Snapshot;
  /** The Prometheus text exposition of {@link SmtpdMetrics.snapshot}. */
  render(): string;
}

/**
 * Creates a server's metric set: `server.stats()` (connections, refusals,
 * sessions, messages by reply class, bytes, AUTH, TLS handshakes, hook
 * errors, timeouts and latencies: see the README's list), followed by
 * `smtpd_milter_duration_seconds{milter,stage}` and the families you add
 * to {@link SmtpdMetrics.registry}. Serve {@link SmtpdMetrics.render} on
 * `/metrics` (see `metricsHandler`). Without `server`, only the registry's
 * families.
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
  const server = options.server;
  if (server !== undefined && typeof server?.stats !== "function") {
    throw new TypeError("Cannot create metrics: server has no stats()");
  }
  const r = new Registry();
  const F = SMTPD_FAMILIES.milterSeconds;
  const milterSeconds = r.histogram(
    F.name,
    F.help,
    ["milter", "stage"],
    options.latencyBuckets ?? LATENCY_BUCKETS,
  );
  const snapshot = (): Snapshot => {
    const own = r.snapshot();
    if (server === undefined) return own;
    const stats = server.stats();
    const theirs = stats.find((f) => f.name === F.name);
    if (theirs === undefined) return [...stats, ...own];
    // The server times its filters (`milters`) itself: one family, with
    // the series observeMilter() added when the buckets agree.
    const mine = own.find((f) => f.name === F.name)!;
    const rest = own.filter((f) => f !== mine);
    const same = (theirs.buckets ?? []).join() === (mine.buckets ?? []).join();
    return [
      ...(same && mine.series.length > 0
        ? mergeSnapshots([{ worker: "server", snapshot: stats }, {
          worker: "metrics",
          snapshot: [mine],
        }])
        : stats),
      ...rest,
    ];
  };
  return {
    registry: r,
    observeMilter: (milter, stage, seconds) =>
      milterSeconds.observe({ milter, stage }, seconds),
    snapshot,
    render: () => formatPrometheus(snapshot()),
  };
}
