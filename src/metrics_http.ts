/**
 * The HTTP side of the metrics: a Web-standard `(Request) => Response`
 * handler serving `/metrics` (Prometheus text format 0.0.4) and `/healthz`,
 * usable as is with `Deno.serve` and `Bun.serve`, and through
 * {@link toNodeListener} with `node:http`.
 *
 * @module
 */

/**
 * What {@link toNodeListener} reads of a `node:http` request (an
 * `IncomingMessage`), written out so that the types need no `@types/node`.
 *
 * @example
 * ```ts
 * import type { NodeRequest } from "@smtpd/smtpd/metrics";
 *
 * const req: NodeRequest = { method: "GET", url: "/metrics", headers: {} };
 * ```
 */
export interface NodeRequest {
  /** The request method. */
  readonly method?: string;
  /** The request target (path and query). */
  readonly url?: string;
  /** The request headers, names in lower case. */
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
}

/**
 * What {@link toNodeListener} uses of a `node:http` response (a
 * `ServerResponse`).
 *
 * @example
 * ```ts
 * import type { NodeResponse } from "@smtpd/smtpd/metrics";
 *
 * const res: NodeResponse = {
 *   headersSent: false,
 *   writeHead: (status, headers) => console.log(status, headers),
 *   end: () => {},
 * };
 * ```
 */
export interface NodeResponse {
  /** Whether the status line and headers are out already. */
  readonly headersSent: boolean;
  /** Sends the status and headers. */
  writeHead(status: number, headers: Record<string, string>): unknown;
  /** Sends the body (if any) and ends the response. */
  end(body?: string | Uint8Array): unknown;
}

/**
 * The content type of the Prometheus text exposition format 0.0.4.
 *
 * @example
 * ```ts
 * import { PROMETHEUS_CONTENT_TYPE } from "@smtpd/smtpd/metrics";
 *
 * new Response("", { headers: { "content-type": PROMETHEUS_CONTENT_TYPE } });
 * ```
 */
export const PROMETHEUS_CONTENT_TYPE =
  "text/plain; version=0.0.4; charset=utf-8";

/**
 * Options of {@link metricsHandler}.
 *
 * @example
 * ```ts
 * import { createMetrics, type MetricsHandlerOptions } from "@smtpd/smtpd/metrics";
 *
 * const metrics = createMetrics();
 * const options: MetricsHandlerOptions = { render: () => metrics.render() };
 * ```
 */
export interface MetricsHandlerOptions {
  /** The exposition text to serve on `/metrics` (e.g. `metrics.render`). */
  readonly render: () => string | Promise<string>;
  /** Whether the server is healthy (`/healthz` 200, else 503). Default: always. */
  readonly healthy?: () => boolean | Promise<boolean>;
}

/**
 * A Web-standard request handler: `GET`/`HEAD /metrics` answers 200 with
 * the text of `render()` (500 if it throws), `/healthz` 200 `ok` (503
 * `unhealthy` when `healthy()` says so), any other path 404, any other
 * method 405. Query strings are ignored.
 *
 * @example
 * ```ts
 * import { createMetrics, metricsHandler } from "@smtpd/smtpd/metrics";
 *
 * const metrics = createMetrics();
 * const handler = metricsHandler({ render: () => metrics.render() });
 * // Deno.serve({ hostname: "127.0.0.1", port: 9465 }, handler);
 * // Bun.serve({ hostname: "127.0.0.1", port: 9465, fetch: handler });
 * const response = await handler(new Request("http://localhost/metrics"));
 * console.log(await response.text());
 * ```
 */
export function metricsHandler(
  options: MetricsHandlerOptions,
): (request: Request) => Promise<Response> {
  if (typeof options?.render !== "function") {
    throw new TypeError(
      "Cannot create metrics handler: render is not a function",
    );
  }
  const healthy = options.healthy ?? (() => true);
  const text = (
    status: number,
    body: string,
    type = "text/plain; charset=utf-8",
  ) =>
    new Response(body, {
      status,
      headers: { "content-type": type, "cache-control": "no-store" },
    });
  return async (request: Request): Promise<Response> => {
    const path = new URL(request.url).pathname;
    if (path !== "/metrics" && path !== "/healthz") {
      return text(404, "not found\n");
    }
    if (request.method !== "GET" && request.method !== "HEAD") {
      const r = text(405, "method not allowed\n");
      r.headers.set("allow", "GET, HEAD");
      return r;
    }
    try {
      if (path === "/healthz") {
        return (await healthy()) ? text(200, "ok\n") : text(503, "unhealthy\n");
      }
      return text(200, await options.render(), PROMETHEUS_CONTENT_TYPE);
    } catch {
      return text(500, "internal error\n");
    }
  };
}

/**
 * Adapts a `(Request) => Response` handler (such as {@link metricsHandler}'s)
 * to a `node:http` request listener. The request body is not read (the
 * metrics endpoints take none).
 *
 * @example
 * ```ts
 * import { createServer } from "node:http";
 * import { createMetrics, metricsHandler, toNodeListener } from "@smtpd/smtpd/metrics";
 *
 * const metrics = createMetrics();
 * const http = createServer(
 *   toNodeListener(metricsHandler({ render: () => metrics.render() })),
 * );
 * http.listen(9465, "127.0.0.1");
 * ```
 */
export function toNodeListener(
  handler: (request: Request) => Response | Promise<Response>,
): (req: NodeRequest, res: NodeResponse) => void {
  return (req, res) => {
    let url: URL;
    try {
      url = new URL(
        req.url ?? "/",
        `http://${req.headers.host ?? "localhost"}`,
      );
    } catch {
      // A Host header or path that makes no URL is the client's mistake.
      res.writeHead(400, { "content-type": "text/plain" });
      res.end();
      return;
    }
    const headers = new Headers();
    for (const [k, v] of Object.entries(req.headers)) {
      if (typeof v === "string") headers.set(k, v);
      else if (Array.isArray(v)) { for (const x of v) headers.append(k, x); }
    }
    Promise.resolve()
      .then(() => handler(new Request(url, { method: req.method, headers })))
      .then(async (response) => {
        const body = req.method === "HEAD"
          ? ""
          : new Uint8Array(await response.arrayBuffer());
        const out: Record<string, string> = {};
        response.headers.forEach((v, k) => out[k] = v);
        if (typeof body !== "string") {
          out["content-length"] = String(body.length);
        }
        res.writeHead(response.status, out);
        res.end(body);
      })
      .catch(() => {
        if (!res.headersSent) {
          res.writeHead(500, { "content-type": "text/plain" });
        }
        res.end();
      });
  };
}
