// The metric set on a real server (`createMetrics({ server })`: its
// stats, then the registry's families) takes a known load from real
// clients (nodemailer, Python's smtplib): messages accepted, one rejected at the end of the
// data, a refused recipient, an AUTH failure. The counters must match the
// load; the exposition must pass `promtool check metrics`; a real
// Prometheus, started here on a loopback port of its own, must scrape the
// same numbers. Two servers stand for two workers: their snapshots summed
// match the load split between them. promtool and prometheus come from
// Debian's `prometheus` package (.ci/run installs it); without them those
// tests are skipped with a message.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server as HttpServer } from "node:http";
import type { AddressInfo } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import nodemailer from "nodemailer";
import { serve, type Server, SmtpError } from "../mod.ts";
import {
  createMetrics,
  formatPrometheus,
  mergeSnapshots,
  metricsHandler,
  type SmtpdMetrics,
  type Snapshot,
  toNodeListener,
} from "../src/exports/metrics.ts";
import {
  PROMETHEUS,
  PROMTOOL,
  run,
  startPrometheus,
} from "./helpers/prometheus.ts";

const here = dirname(fileURLToPath(import.meta.url));

/** Waits until `check()` is true (polling every 20 ms, up to `ms`). */
async function until(
  check: () => boolean,
  what: string,
  ms = 10000,
): Promise<void> {
  for (let waited = 0; !check(); waited += 20) {
    if (waited >= ms) assert.fail(`gave up waiting: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The value of one counter or gauge series (0 when absent). */
function value(
  snapshot: Snapshot,
  name: string,
  labels: Record<string, string> = {},
): number {
  const f = snapshot.find((f) => f.name === name);
  assert.ok(f, `no family ${name}`);
  const s = f.series.find((s) =>
    Object.entries(labels).every(([k, v]) => s.labels[k] === v) &&
    Object.keys(labels).length === Object.keys(s.labels).length
  );
  return s?.value ?? 0;
}

/** A server on 127.0.0.1 whose metrics count what it sees. */
async function startServer(): Promise<
  { server: Server; metrics: SmtpdMetrics }
> {
  const server = await serve({
    hostname: "127.0.0.1",
    port: 0,
    serverName: "mx.test",
    allowInsecureAuth: true,
    auth: {
      required: false,
      verify: ({ password }) => password === "right",
    },
    onRcptTo(address) {
      if (address.startsWith("nobody@")) {
        throw new SmtpError(550, "5.1.1", "No such user");
      }
    },
    async onMessage(message) {
      await message.bytes();
      if (message.from === "spam@example.org") {
        throw new SmtpError(554, "5.7.1", "Looks like spam");
      }
    },
  });
  return { server, metrics: createMetrics({ server }) };
}

const RAW =
  "From: a@example.org\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nHello.\r\n";

/** Sends `count` messages with nodemailer, one connection each; resolves with the errors. */
async function nodemailerSend(
  port: number,
  count: number,
  from = "nm@example.org",
  auth?: { user: string; pass: string },
): Promise<unknown[]> {
  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    port,
    secure: false,
    ignoreTLS: true,
    name: "nodemailer.test",
    ...(auth ? { auth } : {}),
  });
  const errors: unknown[] = [];
  try {
    for (let i = 0; i < count; i++) {
      try {
        await transport.sendMail({
          envelope: { from, to: ["b@example.org"] },
          raw: RAW,
        });
      } catch (error) {
        errors.push(error);
      }
    }
  } finally {
    transport.close();
  }
  return errors;
}

/** Sends the messages on one connection with smtplib. */
async function smtplibSend(
  port: number,
  messages: { from: string; to: string[] }[],
) {
  const r = await run("python3", [
    join(here, "fixtures", "smtplib_send.py"),
    String(port),
    JSON.stringify([messages.map((m) => ({ ...m, data: RAW }))]),
  ]);
  assert.equal(r.code, 0, r.out);
}

describe("metrics of a real server under a known load", () => {
  let server: Server;
  let metrics: SmtpdMetrics;
  let http: HttpServer;
  let httpPort: number;
  /** Messages the load gets accepted. */
  const N = 6;

  before(async () => {
    ({ server, metrics } = await startServer());
    const port = server.addr.port;
    // 3 messages, one connection each.
    assert.deepEqual(await nodemailerSend(port, 3), []);
    // 2 messages on one connection, one with a refused recipient.
    await smtplibSend(port, [
      { from: "py@example.org", to: ["b@example.org"] },
      { from: "py@example.org", to: ["b@example.org", "nobody@example.org"] },
    ]);
    // Rejected at the end of the data: 554.
    const spam = await nodemailerSend(port, 1, "spam@example.org");
    assert.match(String(spam[0]), /554/);
    // A wrong password, then a good one (and its message).
    const bad = await nodemailerSend(port, 1, "u@example.org", {
      user: "u",
      pass: "wrong",
    });
    assert.match(String(bad[0]), /535/);
    assert.deepEqual(
      await nodemailerSend(port, 1, "u@example.org", {
        user: "u",
        pass: "right",
      }),
      [],
    );
    await until(
      () => value(metrics.snapshot(), "smtpd_connections_open") === 0,
      "every session closed",
    );
    http = createServer(
      toNodeListener(metricsHandler({ render: metrics.render })),
    );
    await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
    httpPort = (http.address() as AddressInfo).port;
  });

  after(async () => {
    http?.closeAllConnections?.();
    await new Promise((r) => http ? http.close(r) : r(undefined));
    await server?.close();
  });

  it("counts N messages accepted, the rejected one by class, bytes, connections, sessions and AUTH", () => {
    const s = metrics.snapshot();
    assert.equal(
      value(s, "smtpd_messages_total", { result: "accepted", class: "2xx" }),
      N,
    );
    assert.equal(
      value(s, "smtpd_messages_total", { result: "rejected", class: "5xx" }),
      1,
    );
    assert.equal(
      value(s, "smtpd_messages_total", { result: "rejected", class: "4xx" }),
      0,
    );
    assert.equal(value(s, "smtpd_received_bytes_total"), N * RAW.length);
    // 3 + 1 (smtplib) + 1 (spam) + 2 (AUTH) connections.
    assert.equal(value(s, "smtpd_connections_total"), 7);
    assert.equal(value(s, "smtpd_connections_open"), 0);
    const sessions = s.find((f) => f.name === "smtpd_sessions_total")!.series
      .reduce((n, x) => n + (x.value ?? 0), 0);
    assert.equal(sessions, 7);
    // nodemailer hangs up without QUIT, smtplib says QUIT: no session
    // timed out or failed.
    assert.equal(
      value(s, "smtpd_sessions_total", { outcome: "quit" }) +
        value(s, "smtpd_sessions_total", { outcome: "eof" }),
      7,
    );
    assert.equal(
      value(s, "smtpd_auth_attempts_total", {
        mechanism: "PLAIN",
        result: "failure",
      }),
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
      value(s, "smtpd_connections_refused_total", {
        reason: "too_many_connections",
      }),
      0,
    );
  });

  it("times the hooks the load ran", () => {
    const text = metrics.render();
    // onMessage ran for the 6 accepted and the rejected message.
    assert.match(
      text,
      /^smtpd_hook_duration_seconds_count\{hook="onMessage"\} 7$/m,
    );
    assert.match(text, /^smtpd_hook_duration_seconds_count\{hook="auth"\} 2$/m);
    assert.match(
      text,
      /^smtpd_hook_duration_seconds_bucket\{hook="onRcptTo",le="\+Inf"\} \d+$/m,
    );
  });

  it("passes promtool check metrics", {
    skip: PROMTOOL
      ? false
      : "promtool not installed (Debian package prometheus)",
  }, async () => {
    const res = await fetch(`http://127.0.0.1:${httpPort}/metrics`);
    assert.equal(
      res.headers.get("content-type"),
      "text/plain; version=0.0.4; charset=utf-8",
    );
    const text = await res.text();
    const r = await run(PROMTOOL!, ["check", "metrics"], text);
    assert.equal(r.out, "");
    assert.equal(r.code, 0);
    // promtool does find faults: a counter without _total, as a control.
    const bad = await run(
      PROMTOOL!,
      ["check", "metrics"],
      "# HELP x X.\n# TYPE x counter\nx 1\n",
    );
    assert.match(bad.out, /_total/);
  });

  it("is scraped by a real Prometheus, whose query finds N", {
    skip: PROMETHEUS
      ? false
      : "prometheus not installed (Debian package prometheus)",
    timeout: 120000,
  }, async () => {
    const prom = await startPrometheus(httpPort);
    try {
      const query = prom.query;
      const got = await prom.waitFor(
        'smtpd_messages_total{result="accepted"}',
        String(N),
      );
      assert.equal(
        got,
        String(N),
        `Prometheus' value; its log:\n${prom.log()}`,
      );
      assert.equal(
        // A series per mechanism, from the start: their sum.
        await query('sum(smtpd_auth_attempts_total{result="failure"})'),
        "1",
      );
      assert.equal(await query('up{job="smtpd"}'), "1");
    } finally {
      await prom.stop();
    }
  });
});

describe("metrics summed across workers", () => {
  it("two servers' snapshots sum to the load split between them, and keep it apart per worker", async () => {
    const a = await startServer();
    const b = await startServer();
    try {
      assert.deepEqual(await nodemailerSend(a.server.addr.port, 2), []);
      assert.deepEqual(await nodemailerSend(b.server.addr.port, 3), []);
      for (const w of [a, b]) {
        await until(
          () => value(w.metrics.snapshot(), "smtpd_connections_open") === 0,
          "every session closed",
        );
      }
      // Snapshots cross a process boundary as JSON.
      const workers = [
        {
          worker: "1",
          snapshot: JSON.parse(JSON.stringify(a.metrics.snapshot())),
        },
        {
          worker: "2",
          snapshot: JSON.parse(JSON.stringify(b.metrics.snapshot())),
        },
      ];
      const sum = mergeSnapshots(workers);
      assert.equal(
        value(sum, "smtpd_messages_total", {
          result: "accepted",
          class: "2xx",
        }),
        5,
      );
      assert.equal(value(sum, "smtpd_connections_total"), 5);
      const text = formatPrometheus(
        mergeSnapshots(workers, { byWorker: true }),
      );
      assert.match(
        text,
        /^smtpd_messages_total\{result="accepted",class="2xx",worker="1"\} 2$/m,
      );
      assert.match(
        text,
        /^smtpd_messages_total\{result="accepted",class="2xx",worker="2"\} 3$/m,
      );
      assert.match(
        text,
        /^smtpd_hook_duration_seconds_count\{hook="onMessage",worker="2"\} 3$/m,
      );
      if (PROMTOOL) {
        for (const t of [formatPrometheus(sum), text]) {
          const r = await run(PROMTOOL, ["check", "metrics"], t);
          assert.equal(r.out + r.code, "0");
        }
      }
    } finally {
      await a.server.close();
      await b.server.close();
    }
  });
});
