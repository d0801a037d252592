/**
 * The server's own counters ({@link ServerCounters}), kept by the driver
 * where things happen (a connection admitted or refused, the reply at the
 * end of a message's data, an AUTH verdict, a TLS handshake, a wait for a
 * hook) and read by `server.stats()` as a {@link ServerStats} snapshot in
 * the shape of `smtpd/metrics` (`formatPrometheus`, `mergeSnapshots`).
 *
 * Per event: an integer increment on an object made once per server; no
 * allocation, no text decoding. The snapshot is built only when asked for.
 *
 * Runtime-free: no timers, no I/O (the driver gives the durations).
 *
 * @module
 */

import type { HookName } from "./session.ts";
import type { AuthMechanism } from "./sasl.ts";
import { SUPPORTED_AUTH_MECHANISMS } from "./sasl.ts";

/** The kind of a metric family, as its `# TYPE` line says. */
export type MetricType = "counter" | "gauge" | "histogram";

/**
 * One time series of a family in a {@link Snapshot}: its label values and,
 * for a counter or gauge, its value; for a histogram, the count of
 * observations per bucket (not cumulative, one more than the bounds: the
 * last is the `+Inf` bucket), their sum and their count.
 *
 * @example
 * ```ts
 * import type { SeriesSnapshot } from "@smtpd/smtpd/metrics";
 *
 * const series: SeriesSnapshot = { labels: { hook: "onMessage" }, value: 3 };
 * ```
 */
export interface SeriesSnapshot {
  /** Label name → value (the family's label names, every one of them). */
  readonly labels: Readonly<Record<string, string>>;
  /** A counter's or gauge's value. */
  readonly value?: number;
  /** A histogram's observations per bucket (not cumulative; last: `+Inf`). */
  readonly counts?: readonly number[];
  /** A histogram's sum of observations. */
  readonly sum?: number;
  /** A histogram's number of observations. */
  readonly count?: number;
}

/**
 * One metric family in a {@link Snapshot}.
 *
 * @example
 * ```ts
 * import type { FamilySnapshot } from "@smtpd/smtpd/metrics";
 *
 * const family: FamilySnapshot = {
 *   name: "smtpd_connections_total",
 *   help: "Connections admitted.",
 *   type: "counter",
 *   labelNames: [],
 *   series: [{ labels: {}, value: 12 }],
 * };
 * ```
 */
export interface FamilySnapshot {
  /** The metric name (counters end with `_total`). */
  readonly name: string;
  /** The `# HELP` text. */
  readonly help: string;
  /** Counter, gauge or histogram. */
  readonly type: MetricType;
  /** The label names every series carries, in order. */
  readonly labelNames: readonly string[];
  /** A histogram's bucket upper bounds, ascending, without `+Inf`. */
  readonly buckets?: readonly number[];
  /** The family's series. */
  readonly series: readonly SeriesSnapshot[];
}

/**
 * The state of a set of metric families at one moment, in order. Plain
 * data: it survives `JSON.stringify` and `postMessage`.
 *
 * @example
 * ```ts
 * import { Registry, type Snapshot } from "@smtpd/smtpd/metrics";
 *
 * const registry = new Registry();
 * registry.counter("app_jobs_total", "Jobs done.").inc();
 * const snapshot: Snapshot = registry.snapshot();
 * console.log(JSON.stringify(snapshot));
 * ```
 */
export type Snapshot = readonly FamilySnapshot[];

/**
 * What `server.stats()` returns: the server's counters as a
 * {@link Snapshot} (plain, JSON-safe data), ready for `formatPrometheus`
 * and `mergeSnapshots` of `smtpd/metrics`.
 *
 * @example
 * ```ts
 * import { serve, type ServerStats } from "@smtpd/smtpd";
 *
 * const stats: ServerStats = (await serve({ port: 0 })).stats();
 * ```
 */
export type ServerStats = Snapshot;

/**
 * Bucket bounds in seconds for hook and filter latencies: 1 ms to 30 s.
 *
 * @example
 * ```ts
 * import { LATENCY_BUCKETS, Registry } from "@smtpd/smtpd/metrics";
 *
 * const h = new Registry().histogram("app_wait_seconds", "Waits.", [], LATENCY_BUCKETS);
 * h.observe({}, 0.2);
 * ```
 */
export const LATENCY_BUCKETS: readonly number[] = Object.freeze([
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
]);

/**
 * Why a connection was refused before its greeting: the `reason` label of
 * `smtpd_connections_refused_total`, and the `code` of the `refused` log
 * entry.
 *
 * @example
 * ```ts
 * import type { RefusalCode } from "@smtpd/smtpd";
 *
 * const code: RefusalCode = "too_many_connections_per_ip";
 * ```
 */
export type RefusalCode =
  | "too_many_connections"
  | "too_many_connections_per_ip"
  | "early_talker"
  | "proxy_timeout"
  | "proxy_bad_header"
  | "proxy_untrusted"
  | "closed_before_greeting"
  | "shutdown"
  | "other";

/** Every {@link RefusalCode}, in the order a snapshot lists them. */
const REFUSAL_CODES: readonly RefusalCode[] = [
  "too_many_connections",
  "too_many_connections_per_ip",
  "early_talker",
  "proxy_timeout",
  "proxy_bad_header",
  "proxy_untrusted",
  "closed_before_greeting",
  "shutdown",
  "other",
];

/**
 * How sessions end: the `outcome` label of `smtpd_sessions_total` (the
 * `close` log entry's reasons; `other` for any new one).
 */
const SESSION_OUTCOMES: readonly string[] = [
  "quit",
  "eof",
  "timeout",
  "rejected",
  "too-many-errors",
  "protocol-error",
  "shutdown",
  "error",
];

/** The hooks whose waits are timed (`onClose` is not waited for). */
const TIMED_HOOKS: readonly HookName[] = [
  "onConnect",
  "onHelo",
  "onMailFrom",
  "onRcptTo",
  "onMessage",
  "auth",
];

/** Names and help texts of the server's metric families (`stats()`, `createMetrics()`). */
export const SMTPD_FAMILIES = {
  open: {
    name: "smtpd_connections_open",
    help: "Connections open now.",
  },
  connections: {
    name: "smtpd_connections_total",
    help:
      "Connections admitted (past the connection limits and the PROXY header).",
  },
  refused: {
    name: "smtpd_connections_refused_total",
    help: "Connections refused before the greeting, by reason.",
  },
  sessions: {
    name: "smtpd_sessions_total",
    help: "Sessions ended, by how they ended.",
  },
  messages: {
    name: "smtpd_messages_total",
    help: "Replies at the end of a message's data, by result and class.",
  },
  aborted: {
    name: "smtpd_messages_aborted_total",
    help: "Message bodies that did not complete.",
  },
  bytes: {
    name: "smtpd_received_bytes_total",
    help: "Bytes of the accepted messages, as received.",
  },
  bodyBytes: {
    name: "smtpd_body_bytes_total",
    help: "Body bytes read, accepted or not.",
  },
  auth: {
    name: "smtpd_auth_attempts_total",
    help: "AUTH exchanges that reached a verdict, by mechanism and result.",
  },
  lockouts: {
    name: "smtpd_auth_lockouts_total",
    help: "Client addresses locked out of AUTH after too many failures.",
  },
  tls: {
    name: "smtpd_tls_handshakes_total",
    help: "TLS handshakes, by mode and result.",
  },
  hookErrors: {
    name: "smtpd_hook_errors_total",
    help: "Application hooks that threw or rejected, by hook.",
  },
  hookTimeouts: {
    name: "smtpd_hook_timeouts_total",
    help: "Hooks that did not settle within hookTimeout.",
  },
  hookSeconds: {
    name: "smtpd_hook_duration_seconds",
    help: "Time the application's hooks took, by hook.",
  },
  milterSeconds: {
    name: "smtpd_milter_duration_seconds",
    help: "Time milter filters took to answer, by filter and stage.",
  },
} as const;

/** One latency histogram: counts per bucket (last: +Inf), sum, count. */
class Latency {
  readonly counts: number[] = new Array(LATENCY_BUCKETS.length + 1).fill(0);
  sum = 0;
  count = 0;

  observe(seconds: number): void {
    let i = 0;
    while (i < LATENCY_BUCKETS.length && seconds > LATENCY_BUCKETS[i]) i++;
    this.counts[i]++;
    this.sum += seconds;
    this.count++;
  }
}

/** A record with a 0 for each key. */
function zeros<K extends string>(keys: readonly K[]): Record<K, number> {
  const out = {} as Record<K, number>;
  for (const k of keys) out[k] = 0;
  return out;
}

/**
 * A server's counters: plain numbers on objects made once, incremented by
 * the driver; {@link ServerCounters.snapshot} turns them into
 * {@link ServerStats}.
 *
 * @example
 * ```ts
 * import { ServerCounters } from "./stats.ts";
 *
 * const c = new ServerCounters();
 * c.connections++;
 * c.endOfData(250, 1);
 * c.snapshot();
 * ```
 */
export class ServerCounters {
  /** Connections admitted (a `connect` log entry). */
  connections = 0;
  /** Connections refused before the greeting, by reason. */
  readonly refused: Record<RefusalCode, number> = zeros(REFUSAL_CODES);
  /** Sessions ended, by outcome (`other`: a reason not in the list). */
  readonly sessions: Record<string, number> = zeros([
    ...SESSION_OUTCOMES,
    "other",
  ]);
  /** End-of-data replies: 2xx, 4xx, 5xx. */
  accepted = 0;
  rejected4xx = 0;
  rejected5xx = 0;
  /** Message bodies that did not complete (`message-abort`). */
  aborted = 0;
  /** Body bytes read, and the sizes of the accepted messages. */
  bodyBytes = 0;
  acceptedBytes = 0;
  /** AUTH verdicts by mechanism. */
  readonly authSuccess: Record<string, number> = zeros(
    SUPPORTED_AUTH_MECHANISMS,
  );
  readonly authFailure: Record<string, number> = zeros(
    SUPPORTED_AUTH_MECHANISMS,
  );
  lockouts = 0;
  /** TLS handshakes. */
  starttlsSuccess = 0;
  starttlsFailure = 0;
  implicitSuccess = 0;
  implicitFailure = 0;
  /** Hook errors (not SmtpErrors) and hook waits past hookTimeout. */
  readonly hookErrors: Record<string, number> = zeros<string>([
    ...TIMED_HOOKS,
    "onClose",
  ]);
  hookTimeouts = 0;
  readonly #latency: Record<string, Latency> = {};
  /** Milter latencies by filter and stage (`milters`). */
  readonly #milter = new Map<
    string,
    { milter: string; stage: string; latency: Latency }
  >();

  constructor() {
    for (const h of TIMED_HOOKS) this.#latency[h] = new Latency();
  }

  /** A connection refused before its greeting. */
  refuse(code: RefusalCode): void {
    this.refused[code]++;
  }

  /** A session ended with the `close` entry's `reason`. */
  sessionEnded(reason: string): void {
    if (this.sessions[reason] !== undefined) this.sessions[reason]++;
    else this.sessions.other++;
  }

  /** `n` end-of-data replies (LMTP: one per recipient) with reply `code`. */
  endOfData(code: number, n: number): void {
    if (code < 300) this.accepted += n;
    else if (code < 500) this.rejected4xx += n;
    else this.rejected5xx += n;
  }

  /** An AUTH verdict. */
  auth(mechanism: AuthMechanism, success: boolean): void {
    const m = success ? this.authSuccess : this.authFailure;
    m[mechanism] = (m[mechanism] ?? 0) + 1;
  }

  /** A wait for `hook` that took `ms` milliseconds. */
  hook(hook: HookName, ms: number): void {
    this.#latency[hook]?.observe(ms / 1000);
  }

  /** A milter filter's answer at `stage` that took `ms` milliseconds. */
  milter(milter: string, stage: string, ms: number): void {
    const key = `${milter}\0${stage}`;
    let m = this.#milter.get(key);
    if (m === undefined) {
      m = { milter, stage, latency: new Latency() };
      this.#milter.set(key, m);
    }
    m.latency.observe(ms / 1000);
  }

  /** The counters as {@link ServerStats}. */
  snapshot(): ServerStats {
    const F = SMTPD_FAMILIES;
    /** A counter family: one series per [labels, value]. */
    const counter = (
      f: { name: string; help: string },
      labelNames: string[],
      series: [Record<string, string>, number][],
    ): FamilySnapshot => ({
      ...f,
      type: "counter",
      labelNames,
      series: series.map(([labels, value]) => ({ labels, value })),
    });
    /** A series per key of `counts`, labelled `label`. */
    const each = (label: string, counts: Record<string, number>) =>
      Object.keys(counts).map((k): [Record<string, string>, number] => [
        { [label]: k },
        counts[k],
      ]);
    let ended = 0;
    for (const k in this.sessions) ended += this.sessions[k];
    const tls = (mode: string, ok: number, failed: number) =>
      [[{ mode, result: "success" }, ok], [
        { mode, result: "failure" },
        failed,
      ]] as [Record<string, string>, number][];
    return [
      {
        ...counter(F.open, [], [[{}, this.connections - ended]]),
        type: "gauge",
      },
      counter(F.connections, [], [[{}, this.connections]]),
      counter(F.refused, ["reason"], each("reason", this.refused)),
      counter(F.sessions, ["outcome"], each("outcome", this.sessions)),
      counter(F.messages, ["result", "class"], [
        [{ result: "accepted", class: "2xx" }, this.accepted],
        [{ result: "rejected", class: "4xx" }, this.rejected4xx],
        [{ result: "rejected", class: "5xx" }, this.rejected5xx],
      ]),
      counter(F.aborted, [], [[{}, this.aborted]]),
      counter(F.bytes, [], [[{}, this.acceptedBytes]]),
      counter(F.bodyBytes, [], [[{}, this.bodyBytes]]),
      counter(
        F.auth,
        ["mechanism", "result"],
        Object.keys(this.authSuccess).flatMap((mechanism) => [
          [{ mechanism, result: "success" }, this.authSuccess[mechanism]],
          [{ mechanism, result: "failure" }, this.authFailure[mechanism] ?? 0],
        ]),
      ),
      counter(F.lockouts, [], [[{}, this.lockouts]]),
      counter(F.tls, ["mode", "result"], [
        ...tls("starttls", this.starttlsSuccess, this.starttlsFailure),
        ...tls("implicit", this.implicitSuccess, this.implicitFailure),
      ]),
      counter(F.hookErrors, ["hook"], each("hook", this.hookErrors)),
      counter(F.hookTimeouts, [], [[{}, this.hookTimeouts]]),
      {
        ...F.hookSeconds,
        type: "histogram",
        labelNames: ["hook"],
        buckets: [...LATENCY_BUCKETS],
        series: TIMED_HOOKS.map((hook) => {
          const l = this.#latency[hook];
          return {
            labels: { hook },
            counts: [...l.counts],
            sum: l.sum,
            count: l.count,
          };
        }),
      },
      // Only once a filter answered (`milters`): a server without filters
      // leaves the family to createMetrics().
      ...(this.#milter.size === 0 ? [] : [{
        ...F.milterSeconds,
        type: "histogram",
        labelNames: ["milter", "stage"],
        buckets: [...LATENCY_BUCKETS],
        series: [...this.#milter.values()].map((
          { milter, stage, latency },
        ) => ({
          labels: { milter, stage },
          counts: [...latency.counts],
          sum: latency.sum,
          count: latency.count,
        })),
      } as FamilySnapshot]),
    ];
  }
}
