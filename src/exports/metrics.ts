/**
 * Prometheus metrics for an smtpd server: the text exposition format 0.0.4
 * ({@link formatPrometheus}) of `server.stats()`, the sum of several
 * workers' snapshots ({@link mergeSnapshots}), a small registry of
 * counters, gauges and histograms for metrics of your own
 * ({@link createMetrics}), and a Web-standard handler for `/metrics` and
 * `/healthz` ({@link metricsHandler}, {@link toNodeListener} for node:http).
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd";
 * import { formatPrometheus, metricsHandler } from "@smtpd/smtpd/metrics";
 *
 * const server = await serve({ port: 0 });
 * const handler = metricsHandler({ render: () => formatPrometheus(server.stats()) });
 * const response = await handler(new Request("http://localhost/metrics"));
 * console.log(await response.text());
 * await server.close();
 * ```
 *
 * @module
 */

export * from "../metrics.ts";
export * from "../metrics_http.ts";
