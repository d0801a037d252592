/**
 * Prometheus metrics for an smtpd server: the metric set built from the
 * server's log entries ({@link createMetrics}), a small registry of
 * counters, gauges and histograms, the text exposition format 0.0.4
 * ({@link formatPrometheus}), the sum of several workers' snapshots
 * ({@link mergeSnapshots}), and a Web-standard handler for `/metrics` and
 * `/healthz` ({@link metricsHandler}, {@link toNodeListener} for node:http).
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd";
 * import { createMetrics, metricsHandler } from "@smtpd/smtpd/metrics";
 *
 * const metrics = createMetrics();
 * const server = await serve({ port: 0, logger: metrics.logger });
 * const handler = metricsHandler({ render: () => metrics.render() });
 * const response = await handler(new Request("http://localhost/metrics"));
 * console.log(await response.text());
 * await server.close();
 * ```
 *
 * @module
 */

export * from "../metrics.ts";
// The types the metric set's logger takes, for this entry point's docs.
export type { HookName, LogEntry, Logger } from "../session.ts";
export * from "../metrics_http.ts";
