// The metrics module on its own: the registry, the Prometheus text format
// 0.0.4 (escaping, histogram buckets, ordering), the sum of workers'
// snapshots, the server's families as its counters build them, and the
// HTTP handler with its node:http adapter. test/server_metrics.test.ts runs it on a real
// server, through promtool and a real Prometheus.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { type AddressInfo, connect } from "node:net";
import {
  createMetrics,
  formatPrometheus,
  LATENCY_BUCKETS,
  mergeSnapshots,
  metricsHandler,
  PROMETHEUS_CONTENT_TYPE,
  Registry,
  type Snapshot,
  toNodeListener,
} from "../src/exports/metrics.ts";
import { ServerCounters } from "../src/stats.ts";
import type { LogEntry } from "../mod.ts";
import {
  createServer as createSmtpServer,
  type ListenFn,
  type ProxyListenOptions,
} from "../src/exports/transport.ts";

/** The value of one counter or gauge series (undefined: no such series). */
function value(
  snapshot: Snapshot,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  const f = snapshot.find((f) => f.name === name);
  assert.ok(f, `no family ${name}`);
  const s = f.series.find((s) =>
    Object.keys(labels).length === Object.keys(s.labels).length &&
    Object.entries(labels).every(([k, v]) => s.labels[k] === v)
  );
  return s?.value;
}

describe("Prometheus text format", () => {
  it("writes HELP and TYPE per family, then its series; escapes label values and HELP", () => {
    const r = new Registry();
    r.counter("app_a_total", 'Back\\slash and\nnewline "quoted".', ["path"])
      .inc({ path: 'C:\\dir "x"\nnext' }, 2);
    r.gauge("app_b", "A gauge.").set({}, -1.5);
    assert.equal(
      r.render(),
      '# HELP app_a_total Back\\\\slash and\\nnewline "quoted".\n' +
        "# TYPE app_a_total counter\n" +
        'app_a_total{path="C:\\\\dir \\"x\\"\\nnext"} 2\n' +
        "# HELP app_b A gauge.\n" +
        "# TYPE app_b gauge\n" +
        "app_b -1.5\n",
    );
  });

  it("writes histograms as cumulative _bucket lines up to +Inf, then _sum and _count", () => {
    const r = new Registry();
    const h = r.histogram("app_wait_seconds", "Waits.", ["hook"], [
      0.005,
      0.1,
      1,
    ]);
    for (const v of [0.001, 0.005, 0.05, 0.5, 7]) h.observe({ hook: "x" }, v);
    assert.equal(
      r.render(),
      "# HELP app_wait_seconds Waits.\n" +
        "# TYPE app_wait_seconds histogram\n" +
        'app_wait_seconds_bucket{hook="x",le="0.005"} 2\n' +
        'app_wait_seconds_bucket{hook="x",le="0.1"} 3\n' +
        'app_wait_seconds_bucket{hook="x",le="1"} 4\n' +
        'app_wait_seconds_bucket{hook="x",le="+Inf"} 5\n' +
        'app_wait_seconds_sum{hook="x"} 7.556\n' +
        'app_wait_seconds_count{hook="x"} 5\n',
    );
  });

  it("keeps families in registration order and sorts series by label values", () => {
    const r = new Registry();
    const z = r.counter("z_total", "Z.", ["k", "j"]);
    r.counter("a_total", "A.").inc();
    z.inc({ k: "b", j: "1" });
    z.inc({ k: "a", j: "2" });
    z.inc({ k: "a", j: "1" });
    const lines = r.render().split("\n").filter((l) => !l.startsWith("#"));
    assert.deepEqual(lines, [
      'z_total{k="a",j="1"} 1',
      'z_total{k="a",j="2"} 1',
      'z_total{k="b",j="1"} 1',
      "a_total 1",
      "",
    ]);
  });

  it("writes special values as +Inf, -Inf and NaN", () => {
    const r = new Registry();
    const g = r.gauge("g", "G.", ["v"]);
    g.set({ v: "p" }, Infinity);
    g.set({ v: "n" }, -Infinity);
    g.set({ v: "x" }, NaN);
    assert.match(
      r.render(),
      /g\{v="n"\} -Inf\ng\{v="p"\} \+Inf\ng\{v="x"\} NaN\n/,
    );
  });

  it("refuses bad names, a counter without _total, le on a histogram, wrong labels and negative increments", () => {
    const r = new Registry();
    assert.throws(() => r.counter("app-x_total", "x"), TypeError);
    assert.throws(() => r.counter("app_x", "x"), /must end with _total/);
    assert.throws(() => r.gauge("g", "x", ["__reserved"]), TypeError);
    assert.throws(() => r.gauge("g", "x", ["a", "a"]), /repeats/);
    assert.throws(() => r.histogram("h", "x", ["le"], [1]), /reserved/);
    assert.throws(() => r.histogram("h", "x", [], [1, 1]), /ascending/);
    assert.throws(() => r.histogram("h", "x", [], []), /ascending/);
    const c = r.counter("c_total", "x", ["a"]);
    assert.throws(() => r.counter("c_total", "x"), /taken/);
    assert.throws(() => c.inc({}), /labels must be exactly \{a\}/);
    assert.throws(() => c.inc({ a: "1", b: "2" }), TypeError);
    assert.throws(() => c.inc({ a: "1" }, -1), /non-negative/);
    assert.throws(() => c.inc({ a: "1" }, NaN), /non-negative/);
  });
});

describe("mergeSnapshots", () => {
  function worker(connections: number, open: number, waits: number[]) {
    const r = new Registry();
    r.counter("c_total", "C.", ["reason"]).inc({ reason: "x" }, connections);
    r.gauge("open", "Open.").set({}, open);
    const h = r.histogram("h_seconds", "H.", [], [0.1, 1]);
    for (const w of waits) h.observe({}, w);
    return r.snapshot();
  }
  const workers = [
    { worker: "1", snapshot: worker(3, 1, [0.05, 2]) },
    { worker: "2", snapshot: worker(4, 2, [0.5]) },
  ];

  it("sums counters, gauges and histogram buckets across workers", () => {
    assert.equal(
      formatPrometheus(mergeSnapshots(workers)),
      "# HELP c_total C.\n# TYPE c_total counter\n" +
        'c_total{reason="x"} 7\n' +
        "# HELP open Open.\n# TYPE open gauge\nopen 3\n" +
        "# HELP h_seconds H.\n# TYPE h_seconds histogram\n" +
        'h_seconds_bucket{le="0.1"} 1\n' +
        'h_seconds_bucket{le="1"} 2\n' +
        'h_seconds_bucket{le="+Inf"} 3\n' +
        "h_seconds_sum 2.55\nh_seconds_count 3\n",
    );
  });

  it("keeps one series per worker with a worker label when asked", () => {
    const text = formatPrometheus(mergeSnapshots(workers, { byWorker: true }));
    assert.match(text, /^c_total\{reason="x",worker="1"\} 3$/m);
    assert.match(text, /^c_total\{reason="x",worker="2"\} 4$/m);
    assert.match(text, /^open\{worker="2"\} 2$/m);
    assert.match(text, /^h_seconds_bucket\{worker="1",le="\+Inf"\} 2$/m);
    assert.match(text, /^h_seconds_count\{worker="2"\} 1$/m);
  });

  it("survives JSON (snapshots cross process boundaries) and refuses families that disagree", () => {
    const viaJson = workers.map((w) => JSON.parse(JSON.stringify(w)));
    assert.deepEqual(mergeSnapshots(viaJson), mergeSnapshots(workers));
    const other = new Registry();
    other.gauge("c_total", "C.", ["reason"]);
    assert.throws(
      () =>
        mergeSnapshots([...workers, {
          worker: "3",
          snapshot: other.snapshot(),
        }]),
      /Cannot merge metric c_total/,
    );
  });
});

describe("createMetrics and the server's families", () => {
  it("names every family smtpd_*, counters *_total, durations in seconds", () => {
    const counters = new ServerCounters();
    const m = createMetrics({ server: { stats: () => counters.snapshot() } });
    const names = m.snapshot().map((f) => `${f.type} ${f.name}`);
    assert.deepEqual(names, [
      "gauge smtpd_connections_open",
      "counter smtpd_connections_total",
      "counter smtpd_connections_refused_total",
      "counter smtpd_sessions_total",
      "counter smtpd_messages_total",
      "counter smtpd_messages_aborted_total",
      "counter smtpd_received_bytes_total",
      "counter smtpd_body_bytes_total",
      "counter smtpd_auth_attempts_total",
      "counter smtpd_auth_lockouts_total",
      "counter smtpd_tls_handshakes_total",
      "counter smtpd_hook_errors_total",
      "counter smtpd_hook_timeouts_total",
      "histogram smtpd_hook_duration_seconds",
      "histogram smtpd_milter_duration_seconds",
    ]);
  });

  it("counts what the driver tells the counters, and open is admitted minus ended", () => {
    const c = new ServerCounters();
    c.connections += 3;
    c.sessionEnded("quit");
    c.sessionEnded("something new");
    c.refuse("too_many_connections");
    c.endOfData(250, 2);
    c.endOfData(452, 1);
    c.endOfData(554, 1);
    c.auth("PLAIN", false);
    c.hook("onHelo", 2); // ms
    c.hook("onMessage", 300);
    const s = c.snapshot();
    assert.equal(value(s, "smtpd_connections_open"), 1);
    assert.equal(value(s, "smtpd_sessions_total", { outcome: "other" }), 1);
    assert.equal(
      value(s, "smtpd_messages_total", { result: "accepted", class: "2xx" }),
      2,
    );
    assert.equal(
      value(s, "smtpd_messages_total", { result: "rejected", class: "4xx" }),
      1,
    );
    assert.equal(
      value(s, "smtpd_auth_attempts_total", {
        mechanism: "PLAIN",
        result: "failure",
      }),
      1,
    );
    const text = formatPrometheus(s);
    assert.match(
      text,
      /^smtpd_hook_duration_seconds_bucket\{hook="onHelo",le="0.0025"\} 1$/m,
    );
    assert.match(
      text,
      /^smtpd_hook_duration_seconds_bucket\{hook="onHelo",le="0.001"\} 0$/m,
    );
    assert.match(
      text,
      /^smtpd_hook_duration_seconds_sum\{hook="onMessage"\} 0.3$/m,
    );
  });

  it("counts a shim's refusal under the code it gives (its prose is for the log only)", async () => {
    let shim: ProxyListenOptions | undefined;
    let stop = () => {};
    const stopped = new Promise<void>((r) => stop = r);
    const listen: ListenFn = (o) => {
      shim = o.proxyProtocol;
      return Promise.resolve({
        addr: { hostname: "127.0.0.1", port: 2525 },
        close: stop,
        // No connection comes; the loop ends when the server closes.
        [Symbol.asyncIterator]: () => ({
          next: () =>
            stopped.then(() => ({ done: true as const, value: undefined })),
        }),
      });
    };
    const log: LogEntry[] = [];
    const server = await createSmtpServer(listen, "test", {
      proxyProtocol: true,
      logger: (e) => log.push(e),
    });
    try {
      // Prose that reads like another refusal: the code decides.
      shim!.onRefused!(
        "192.0.2.1",
        "connection closed before the PROXY header",
        "proxy_timeout",
      );
      const refused = (reason: string) =>
        value(server.stats(), "smtpd_connections_refused_total", { reason });
      assert.equal(refused("proxy_timeout"), 1);
      assert.equal(refused("closed_before_greeting"), 0);
      assert.deepEqual(log.filter((e) => e.type === "refused"), [{
        type: "refused",
        remoteAddress: "192.0.2.1",
        reason: "connection closed before the PROXY header",
        code: "proxy_timeout",
      }]);
    } finally {
      await server.close();
    }
  });

  it("observes milter latencies, and checks its options", () => {
    const m = createMetrics();
    m.observeMilter("inet:127.0.0.1:11332", "eom", 0.02);
    assert.match(
      m.render(),
      /^smtpd_milter_duration_seconds_bucket\{milter="inet:127.0.0.1:11332",stage="eom",le="0.025"\} 1$/m,
    );
    assert.equal(LATENCY_BUCKETS.at(-1), 30);
    assert.throws(
      () => createMetrics({ server: 5 as never }),
      /server has no stats\(\)/,
    );
    assert.throws(
      () => createMetrics({ latencyBuckets: [1, 0.5] }),
      /buckets must be finite and ascending/,
    );
  });
});

describe("metricsHandler", () => {
  const handler = metricsHandler({
    render: () => "# HELP x X.\n# TYPE x gauge\nx 1\n",
    healthy: () => false,
  });

  it("serves /metrics in format 0.0.4, /healthz, 404 elsewhere and 405 for other methods", async () => {
    const ok = await handler(new Request("http://h/metrics?x=1"));
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get("content-type"), PROMETHEUS_CONTENT_TYPE);
    assert.equal(await ok.text(), "# HELP x X.\n# TYPE x gauge\nx 1\n");
    const health = await handler(new Request("http://h/healthz"));
    assert.equal(health.status, 503);
    await health.body?.cancel();
    const up = await metricsHandler({ render: () => "" })(
      new Request("http://h/healthz"),
    );
    assert.equal([up.status, await up.text()].join(" "), "200 ok\n");
    const missing = await handler(new Request("http://h/"));
    assert.equal(missing.status, 404);
    await missing.body?.cancel();
    const post = await handler(
      new Request("http://h/metrics", { method: "POST", body: "x" }),
    );
    assert.equal(post.status, 405);
    assert.equal(post.headers.get("allow"), "GET, HEAD");
    await post.body?.cancel();
    const broken = await metricsHandler({
      render: () => {
        throw new Error("x");
      },
    })(new Request("http://h/metrics"));
    assert.equal(broken.status, 500);
    await broken.body?.cancel();
    assert.throws(() => metricsHandler({} as never), TypeError);
  });

  it("serves through node:http with toNodeListener", async () => {
    const http = createServer(toNodeListener(handler));
    await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
    try {
      const { port } = http.address() as AddressInfo;
      const res = await fetch(`http://127.0.0.1:${port}/metrics`);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("content-type"), PROMETHEUS_CONTENT_TYPE);
      assert.equal(await res.text(), "# HELP x X.\n# TYPE x gauge\nx 1\n");
      const head = await fetch(`http://127.0.0.1:${port}/metrics`, {
        method: "HEAD",
      });
      assert.equal(head.status, 200);
      assert.equal(await head.text(), "");
      const health = await fetch(`http://127.0.0.1:${port}/healthz`);
      assert.equal(health.status, 503);
      assert.equal(await health.text(), "unhealthy\n");
      // A Host header that makes no URL: 400, and the server goes on.
      const bad = await new Promise<string>((resolve, reject) => {
        const s = connect(port, "127.0.0.1");
        let got = "";
        s.setEncoding("latin1");
        s.on("data", (d: string) => got += d);
        s.on("end", () => resolve(got));
        s.on("error", reject);
        s.end("GET /metrics HTTP/1.1\r\nHost: [\r\nConnection: close\r\n\r\n");
      });
      assert.match(bad, /^HTTP\/1\.1 400 /);
      assert.equal(
        (await fetch(`http://127.0.0.1:${port}/metrics`)).status,
        200,
      );
    } finally {
      http.closeAllConnections?.();
      await new Promise((r) => http.close(r));
    }
  });
});
