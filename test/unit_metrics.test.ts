// The metrics module on its own: the registry, the Prometheus text format
// 0.0.4 (escaping, histogram buckets, ordering), the sum of workers'
// snapshots, the metric set built from log entries (fed here by hand, in
// the order the driver logs them), hook timing, and the HTTP handler with
// its node:http adapter. test/server_metrics.test.ts runs it on a real
// server, through promtool and a real Prometheus.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import {
  createMetrics,
  formatPrometheus,
  LATENCY_BUCKETS,
  mergeSnapshots,
  metricsHandler,
  PROMETHEUS_CONTENT_TYPE,
  refusalReason,
  Registry,
  type Snapshot,
  toNodeListener,
} from "../src/exports/metrics.ts";
import type { LogEntry } from "../mod.ts";

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

/** A session's entries as the driver logs them. */
function session(
  id: string,
  ...rest: Array<["c", string] | ["r", string] | LogEntry>
): LogEntry[] {
  const out: LogEntry[] = [{
    type: "connect",
    session: id,
    remoteAddress: "127.0.0.1",
    remotePort: 40000,
  }, { type: "reply", session: id, text: "220 mx.test ESMTP\r\n" }];
  for (const e of rest) {
    if (Array.isArray(e)) {
      out.push(
        e[0] === "c"
          ? { type: "command", session: id, line: e[1] }
          : { type: "reply", session: id, text: e[1] },
      );
    } else out.push(e);
  }
  return out;
}

const message = (id: string, size: number): LogEntry => ({
  type: "message",
  session: id,
  id: "m",
  from: "a@example.org",
  to: ["b@example.org"],
  size,
});

const text0 = (m: { render(): string }) => m.render();

describe("createMetrics: the metric set from log entries", () => {
  it("counts connections, refusals and session outcomes, and the open gauge goes back to 0", () => {
    const m = createMetrics();
    const log = (entries: LogEntry[]) => entries.forEach(m.logger);
    log(session("s1"));
    log(session("s2"));
    assert.equal(value(m.snapshot(), "smtpd_connections_open"), 2);
    m.logger({ type: "close", session: "s1", reason: "quit", messages: 0 });
    m.logger({ type: "close", session: "s2", reason: "timeout", messages: 0 });
    m.logger({
      type: "refused",
      remoteAddress: "::1",
      reason: "too many connections",
    });
    m.logger({
      type: "refused",
      remoteAddress: "::1",
      reason: "no PROXY header within 5000 ms",
    });
    const s = m.snapshot();
    assert.equal(value(s, "smtpd_connections_open"), 0);
    assert.equal(value(s, "smtpd_connections_total"), 2);
    assert.equal(
      value(s, "smtpd_connections_refused_total", {
        reason: "too_many_connections",
      }),
      1,
    );
    assert.equal(
      value(s, "smtpd_connections_refused_total", { reason: "proxy_timeout" }),
      1,
    );
    assert.equal(value(s, "smtpd_sessions_total", { outcome: "quit" }), 1);
    assert.equal(value(s, "smtpd_sessions_total", { outcome: "timeout" }), 1);
  });

  it("maps every refusal prose of the driver to a fixed reason", () => {
    assert.equal(
      refusalReason("too many connections from this address"),
      "too_many_connections_per_ip",
    );
    assert.equal(refusalReason("server shutting down"), "shutdown");
    assert.equal(
      refusalReason("connection closed before the greeting"),
      "closed_before_greeting",
    );
    assert.equal(
      refusalReason("sent data before the greeting"),
      "early_talker",
    );
    assert.equal(
      refusalReason("bad PROXY header: no CRLF"),
      "proxy_bad_header",
    );
    assert.equal(
      refusalReason("PROXY header from an untrusted address"),
      "proxy_untrusted",
    );
    assert.equal(refusalReason("something new"), "other");
  });

  it("counts messages accepted and rejected at the end of DATA, pipelined or not, and their bytes", () => {
    const m = createMetrics();
    for (
      const e of session(
        "s",
        ["c", "EHLO c"],
        ["r", "250-mx.test\r\n250 PIPELINING\r\n"],
        // Pipelined: MAIL, RCPT, DATA in one flush of replies.
        ["c", "MAIL FROM:<a@example.org>"],
        ["c", "RCPT TO:<b@example.org>"],
        ["c", "DATA"],
        ["r", "250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 Go ahead\r\n"],
        message("s", 100),
        ["r", "250 2.0.0 OK m\r\n"],
        // DATA refused (no recipients): no message.
        ["c", "MAIL FROM:<a@example.org>"],
        ["r", "250 2.1.0 OK\r\n"],
        ["c", "RCPT TO:<nobody@example.org>"],
        ["r", "550 5.1.1 No such user\r\n"],
        ["c", "DATA"],
        ["r", "554 5.5.1 No valid recipients\r\n"],
        // The application says 550 at the end of the data.
        ["c", "MAIL FROM:<a@example.org>"],
        ["r", "250 2.1.0 OK\r\n"],
        ["c", "RCPT TO:<b@example.org>"],
        ["r", "250 2.1.5 OK\r\n"],
        ["c", "DATA"],
        ["r", "354 Go ahead\r\n"],
        ["r", "550 5.7.1 Spam\r\n"],
        // 451 at the end, then QUIT pipelined nowhere near it.
        ["c", "MAIL FROM:<a@example.org>"],
        ["c", "RCPT TO:<b@example.org>"],
        ["c", "DATA"],
        ["r", "250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 Go ahead\r\n"],
        ["r", "451 4.3.0 Try later\r\n"],
        ["c", "QUIT"],
        ["r", "221 2.0.0 Bye\r\n"],
        { type: "close", session: "s", reason: "quit", messages: 1 },
      )
    ) m.logger(e);
    const s = m.snapshot();
    assert.equal(
      value(s, "smtpd_messages_total", { result: "accepted", class: "2xx" }),
      1,
    );
    assert.equal(
      value(s, "smtpd_messages_total", { result: "rejected", class: "5xx" }),
      1,
    );
    assert.equal(
      value(s, "smtpd_messages_total", { result: "rejected", class: "4xx" }),
      1,
    );
    assert.equal(value(s, "smtpd_received_bytes_total"), 100);
  });

  it("counts a message rejected at BDAT LAST, with commands pipelined after it", () => {
    const m = createMetrics();
    for (
      const e of session(
        "s",
        ["c", "MAIL FROM:<a@example.org>"],
        ["c", "RCPT TO:<b@example.org>"],
        ["c", "BDAT 10"],
        ["c", "BDAT 5 LAST"],
        ["c", "NOOP"],
        ["r", "250 OK\r\n250 OK\r\n250 OK\r\n552 5.3.4 Too big\r\n250 OK\r\n"],
      )
    ) m.logger(e);
    assert.equal(
      value(m.snapshot(), "smtpd_messages_total", {
        result: "rejected",
        class: "5xx",
      }),
      1,
    );
  });

  it("counts an LMTP message rejected only when every recipient's reply is", () => {
    const m = createMetrics();
    for (
      const e of session(
        "s",
        ["c", "LHLO c"],
        ["r", "250 mx.test\r\n"],
        ["c", "DATA"],
        ["r", "354 Go\r\n"],
        ["r", "452 4.2.2 Full\r\n550 5.1.1 Gone\r\n"],
        ["c", "DATA"],
        ["r", "354 Go\r\n"],
        message("s", 5),
        ["r", "250 OK\r\n550 5.1.1 Gone\r\n"],
      )
    ) m.logger(e);
    const s = m.snapshot();
    assert.equal(
      value(s, "smtpd_messages_total", { result: "rejected", class: "4xx" }),
      1,
    );
    assert.equal(
      value(s, "smtpd_messages_total", { result: "rejected", class: "5xx" }),
      0,
    );
    assert.equal(
      value(s, "smtpd_messages_total", { result: "accepted", class: "2xx" }),
      1,
    );
  });

  it("counts STARTTLS handshakes that succeed and fail, AUTH results, lock-outs and hook errors", () => {
    const m = createMetrics();
    for (
      const e of [
        ...session("ok", ["c", "STARTTLS"], ["r", "220 2.0.0 Ready\r\n"], [
          "c",
          "EHLO c",
        ]),
        ...session("bad", ["c", "STARTTLS"], ["r", "220 2.0.0 Ready\r\n"], {
          type: "error",
          session: "bad",
          message: "TLS handshake failed",
          error: new Error("x"),
        }, { type: "close", session: "bad", reason: "eof", messages: 0 }),
        ...session("no", ["c", "STARTTLS"], [
          "r",
          "454 4.7.0 TLS not available\r\n",
        ], ["c", "QUIT"]),
        ...session(
          "a",
          {
            type: "auth",
            session: "a",
            mechanism: "PLAIN",
            username: "u",
            success: true,
          },
          {
            type: "auth",
            session: "a",
            mechanism: "login",
            username: "u",
            success: false,
          },
          {
            type: "auth-lockout",
            session: "a",
            remoteAddress: "127.0.0.1",
            failures: 5,
          },
          {
            type: "error",
            session: "a",
            message: "onMessage failed",
            error: null,
            hook: "onMessage",
          },
          {
            type: "error",
            session: "a",
            message: "hook did not settle within 30000 ms",
            error: null,
          },
        ),
      ]
    ) m.logger(e);
    const s = m.snapshot();
    assert.equal(
      value(s, "smtpd_tls_handshakes_total", { result: "success" }),
      1,
    );
    assert.equal(
      value(s, "smtpd_tls_handshakes_total", { result: "failure" }),
      1,
    );
    assert.equal(
      value(s, "smtpd_auth_attempts_total", {
        mechanism: "PLAIN",
        result: "success",
      }),
      1,
    );
    assert.equal(
      value(s, "smtpd_auth_attempts_total", {
        mechanism: "LOGIN",
        result: "failure",
      }),
      1,
    );
    assert.equal(value(s, "smtpd_auth_lockouts_total"), 1);
    assert.equal(value(s, "smtpd_hook_errors_total", { hook: "onMessage" }), 1);
    assert.equal(value(s, "smtpd_hook_timeouts_total"), 1);
  });

  it("names every family smtpd_*, counters *_total, durations in seconds", () => {
    const names = createMetrics().snapshot().map((f) => `${f.type} ${f.name}`);
    assert.deepEqual(names, [
      "gauge smtpd_connections_open",
      "counter smtpd_connections_total",
      "counter smtpd_connections_refused_total",
      "counter smtpd_sessions_total",
      "counter smtpd_messages_total",
      "counter smtpd_received_bytes_total",
      "counter smtpd_auth_attempts_total",
      "counter smtpd_auth_lockouts_total",
      "counter smtpd_tls_handshakes_total",
      "counter smtpd_hook_errors_total",
      "counter smtpd_hook_timeouts_total",
      "histogram smtpd_hook_duration_seconds",
      "histogram smtpd_milter_duration_seconds",
    ]);
  });

  it("instrument() times hooks (sync, async, throwing, auth) and chains the application's logger", async () => {
    let t = 0;
    const m = createMetrics({ now: () => t });
    const seen: string[] = [];
    const options = m.instrument({
      logger: (e: LogEntry) => seen.push(e.type),
      onHelo: () => {
        t += 2; // ms
      },
      onMessage: async () => {
        t += 300;
        await Promise.resolve();
        return "kept";
      },
      onRcptTo: () => {
        t += 20;
        throw new Error("no");
      },
      auth: { verify: () => (t += 1, true), mechanisms: ["PLAIN"] as const },
    });
    options.onHelo();
    assert.equal(await options.onMessage(), "kept");
    assert.throws(() => options.onRcptTo(), /no/);
    assert.equal(options.auth.verify(), true);
    assert.deepEqual(options.auth.mechanisms, ["PLAIN"]);
    options.logger({ type: "refused", remoteAddress: "x", reason: "y" });
    assert.deepEqual(seen, ["refused"]);
    // Its own logger given already is taken once, not twice.
    const again = m.instrument({ logger: m.logger });
    assert.equal(again.logger, m.logger);
    again.logger({ type: "refused", remoteAddress: "x", reason: "z" });
    assert.match(
      text0(m),
      /^smtpd_connections_refused_total\{reason="other"\} 2$/m,
    );
    m.observeMilter("inet:127.0.0.1:11332", "eom", 0.02);
    const text = m.render();
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
    assert.match(
      text,
      /^smtpd_hook_duration_seconds_count\{hook="onRcptTo"\} 1$/m,
    );
    assert.match(text, /^smtpd_hook_duration_seconds_count\{hook="auth"\} 1$/m);
    assert.match(
      text,
      /^smtpd_milter_duration_seconds_bucket\{milter="inet:127.0.0.1:11332",stage="eom",le="0.025"\} 1$/m,
    );
    assert.equal(LATENCY_BUCKETS.at(-1), 30);
    assert.throws(
      () => createMetrics({ now: 5 as never }),
      /now is not a function/,
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
    } finally {
      http.closeAllConnections?.();
      await new Promise((r) => http.close(r));
    }
  });
});
