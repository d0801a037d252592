// The CLI's --metrics endpoint under a known load sent by a real client
// (nodemailer): one process, and --workers 2, whose supervisor asks each
// worker for its counts on every scrape and serves the sum and each
// worker's; a worker killed with SIGKILL and replaced does not make the
// sum go backwards. promtool checks the text, a real Prometheus scrapes
// it (Debian's prometheus package; skipped without). And --reverse-dns
// against a local dnsmasq: the client's name in the Received header of
// the Maildir file and in the log line. Only loopback is used.
import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import * as net from "node:net";
import { tmpdir } from "node:os";
import process from "node:process";
import { after, before, describe, it } from "node:test";
import { type MetricsWorker, WorkerMetrics } from "../src/cli/metrics.ts";
import { Registry } from "../src/exports/metrics.ts";
import {
  connect,
  sendWithNodemailer,
  SHORT_MESSAGE,
} from "./helpers/client.ts";
import { freePort, listening, startCli } from "./helpers/cli.ts";
import {
  DNSMASQ,
  type Dnsmasq,
  dnsmasqInstalled,
  startDnsmasq,
} from "./helpers/dnsmasq.ts";
import {
  PROMETHEUS,
  PROMTOOL,
  promtoolCheck,
  startPrometheus,
} from "./helpers/prometheus.ts";

let tmp = "";
before(async () => {
  tmp = await fs.mkdtemp(`${tmpdir()}/smtpd-cli-metrics-`);
});
after(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

/** Worker pids a test learnt: killed at the end, whatever is left. */
const pids = new Set<number>();
after(() => {
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch { /* gone */ }
  }
});

const RAW = SHORT_MESSAGE;

/** GETs (or HEADs) a path of the metrics endpoint. */
async function get(
  port: number,
  path: string,
  method = "GET",
): Promise<{ status: number; type: string | null; text: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method });
  return {
    status: res.status,
    type: res.headers.get("content-type"),
    text: await res.text(),
  };
}

/** The value of the series `name{labels}` in exposition `text` (null: absent). */
function sample(text: string, series: string): number | null {
  for (const line of text.split("\n")) {
    if (line.startsWith(`${series} `)) {
      return Number(line.slice(series.length + 1));
    }
  }
  return null;
}

const ACCEPTED = 'smtpd_messages_total{result="accepted",class="2xx"}';

/** Scrapes until every session is closed (a message's counts are final then). */
async function settled(port: number): Promise<string> {
  for (let i = 0;; i++) {
    const { text } = await get(port, "/metrics");
    if (sample(text, "smtpd_connections_open") === 0 || i === 200) return text;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The per-worker series of `family` with `labels` (worker label last), by worker. */
function perWorker(
  text: string,
  family: string,
  labels: string,
): Map<string, number> {
  const out = new Map<string, number>();
  const re = new RegExp(
    `^${family}\\{${labels},worker="(\\d+)"\\} (\\d+)$`,
    "gm",
  );
  for (const m of text.matchAll(re)) out.set(m[1], Number(m[2]));
  return out;
}

describe("smtpd --metrics", () => {
  it("counts N messages on /metrics (promtool passes), answers /healthz, 404 elsewhere", async () => {
    const metricsPort = await freePort();
    const cli = await listening(startCli([
      "--port",
      "0",
      "--maildir",
      `${tmp}/one`,
      "--metrics",
      `127.0.0.1:${metricsPort}`,
    ]));
    await cli.waitFor(
      new RegExp(`metrics on http://127\\.0\\.0\\.1:${metricsPort}/metrics`),
    );
    const N = 4;
    await sendWithNodemailer(cli.port, N);
    const text = await settled(metricsPort);
    assert.equal(sample(text, ACCEPTED), N, text);
    assert.equal(sample(text, "smtpd_connections_total"), N, text);
    assert.equal(
      sample(text, "smtpd_received_bytes_total"),
      N * RAW.length,
      text,
    );
    const res = await get(metricsPort, "/metrics");
    assert.equal(res.type, "text/plain; version=0.0.4; charset=utf-8");
    if (PROMTOOL) {
      const r = await promtoolCheck(text);
      assert.equal(r.out, "");
      assert.equal(r.code, 0);
    }
    assert.deepEqual(
      [
        (await get(metricsPort, "/healthz")).status,
        (await get(
          metricsPort,
          "/metrics",
          "HEAD",
        )).status,
        (await get(metricsPort, "/")).status,
        (await get(
          metricsPort,
          "/metrics",
          "POST",
        )).status,
      ],
      [200, 200, 404, 405],
    );
    const exit = await cli.stop();
    assert.equal(exit.code, 0, cli.output());
    // The endpoint closed with the server.
    await assert.rejects(get(metricsPort, "/healthz"));
  });

  it("refuses a port in use at start-up, naming --metrics", async () => {
    const taken = net.createServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
    const port = (taken.address() as net.AddressInfo).port;
    try {
      for (const workers of ["1", "2"]) {
        const cli = startCli([
          "--port",
          "0",
          "--workers",
          workers,
          "--maildir",
          `${tmp}/clash`,
          "--metrics",
          `127.0.0.1:${port}`,
        ]);
        const exit = await cli.exited;
        assert.equal(exit.code, 2, cli.output());
        assert.match(
          cli.stderr(),
          new RegExp(
            `^smtpd: --metrics: cannot listen on 127\\.0\\.0\\.1:${port}: address in use\\n$`,
          ),
        );
        assert.doesNotMatch(cli.output(), /listening on/);
      }
    } finally {
      await new Promise((r) => taken.close(r));
    }
  });

  it("refuses a value that is not HOST:PORT", async () => {
    for (const bad of ["9465", "127.0.0.1", "127.0.0.1:70000", "::1:9465"]) {
      const cli = startCli(["--metrics", bad]);
      const exit = await cli.exited;
      assert.equal(exit.code, 2, cli.output());
      assert.match(cli.stderr(), /^smtpd: --metrics: must be HOST:PORT/);
    }
  });
});

describe("smtpd --workers 2 --metrics", () => {
  it(
    "serves the sum and each worker's counts; a worker killed with SIGKILL does not make the sum go backwards; Prometheus scrapes it",
    {
      timeout: 180000,
    },
    async () => {
      const metricsPort = await freePort();
      const cli = startCli([
        "--port",
        "0",
        "--workers",
        "2",
        "--maildir",
        `${tmp}/workers`,
        "--metrics",
        `127.0.0.1:${metricsPort}`,
      ]);
      const m = await cli.waitFor(
        /2 workers on 127\.0\.0\.1:(\d+) \([^)]+\), pids (\d+), (\d+)/,
      );
      const port = Number(m[1]);
      const workerPids = [Number(m[2]), Number(m[3])];
      for (const pid of workerPids) pids.add(pid);

      const N = 12;
      await sendWithNodemailer(port, N);
      let text = await settled(metricsPort);
      assert.equal(sample(text, ACCEPTED), N, text);
      // Per worker: both are there, and they add up to the sum, whichever
      // worker took each message.
      const each = perWorker(
        text,
        "smtpd_worker_messages_total",
        'result="accepted",class="2xx"',
      );
      assert.deepEqual([...each.keys()].sort(), ["1", "2"], text);
      assert.equal([...each.values()].reduce((a, b) => a + b, 0), N, text);
      assert.match(
        text,
        /^smtpd_worker_hook_duration_seconds_count\{hook="onMessage",worker="1"\} \d+$/m,
      );
      if (PROMTOOL) {
        const r = await promtoolCheck(text);
        assert.equal(r.out, "");
        assert.equal(r.code, 0);
      }
      assert.equal((await get(metricsPort, "/healthz")).status, 200);

      // Worker 1 (the first pid) killed: its counts stay in the sum.
      process.kill(workerPids[0], "SIGKILL");
      await cli.waitFor(
        new RegExp(`worker ${workerPids[0]} exited with signal SIGKILL`),
      );
      text = (await get(metricsPort, "/metrics")).text;
      assert.equal(sample(text, ACCEPTED), N, text);
      await cli.waitForAll(/listening on 127\.0\.0\.1:\d+ /, 3);
      // The replacement is worker 3 once the supervisor knows it listens;
      // worker 1's series are gone, its counts stay in the sum.
      const workersIn = (text: string) =>
        [
          ...perWorker(
            text,
            "smtpd_worker_messages_total",
            'result="accepted",class="2xx"',
          ).keys(),
        ].sort();
      for (let i = 0; i < 200; i++) {
        text = (await get(metricsPort, "/metrics")).text;
        assert.equal(sample(text, ACCEPTED), N, text);
        if (workersIn(text).length === 2) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.deepEqual(workersIn(text), ["2", "3"], text);
      const M = 3;
      await sendWithNodemailer(port, M);
      text = await settled(metricsPort);
      assert.equal(sample(text, ACCEPTED), N + M, text);

      if (PROMETHEUS) {
        const prom = await startPrometheus(metricsPort);
        try {
          assert.equal(
            await prom.waitFor(
              'smtpd_messages_total{result="accepted"}',
              String(N + M),
            ),
            String(N + M),
            `Prometheus' value; its log:\n${prom.log()}`,
          );
          assert.equal(await prom.query('up{job="smtpd"}'), "1");
        } finally {
          await prom.stop();
        }
      }
      const exit = await cli.stop();
      assert.equal(exit.code, 0, cli.output());
    },
  );
});

describe("smtpd --reverse-dns against dnsmasq", {
  skip: !dnsmasqInstalled && `${DNSMASQ} is not installed`,
}, () => {
  let dnsmasq: Dnsmasq | null = null;
  before(async () => {
    dnsmasq = await startDnsmasq([
      "--host-record=mx4.example.test,192.0.2.10",
      "--local=/test/",
      "--local=/in-addr.arpa/",
    ]);
  });
  after(async () => {
    await dnsmasq?.stop();
  });

  it("names the client in the Received header of the Maildir file and in the log line", async () => {
    const maildir = `${tmp}/rdns`;
    // dnsmasq cannot give 127.0.0.1 a PTR: a PROXY header names the
    // client instead (from 127.0.0.1, trusted by default).
    const cli = await listening(startCli([
      "--port",
      "0",
      "--maildir",
      maildir,
      "--server-name",
      "mx.test",
      "--proxy-protocol",
      "--reverse-dns",
      "--dns-server",
      dnsmasq!.server,
      "--verbose",
    ]));
    const c = await connect(cli.port);
    await c.send("PROXY TCP4 192.0.2.10 198.51.100.25 40000 25\r\n");
    assert.match(await c.reply(), /^220 /);
    for (
      const [line, code] of [
        ["EHLO client.example", /^250/],
        ["MAIL FROM:<a@example.org>", /^250/],
        ["RCPT TO:<b@example.net>", /^250/],
        ["DATA", /^354/],
        ["Subject: hi\r\n\r\nhello\r\n.", /^250/],
        ["QUIT", /^221/],
      ] as const
    ) {
      await c.send(`${line}\r\n`);
      assert.match(await c.reply(), code);
    }
    await cli.waitFor(/message id=\S+ .* client=mx4\.example\.test /);
    assert.match(
      cli.output(),
      /connect from 192\.0\.2\.10:40000 \(mx4\.example\.test\) via proxy/,
    );
    const [name] = await fs.readdir(`${maildir}/new`);
    const text = await fs.readFile(`${maildir}/new/${name}`, "latin1");
    assert.match(
      text,
      /^Received: from client\.example \(mx4\.example\.test \[192\.0\.2\.10\]\)/m,
    );
    const exit = await cli.stop();
    assert.equal(exit.code, 0, cli.output());
  });

  it("refuses --dns-server without --reverse-dns, and one that is not IP[:PORT]", async () => {
    for (
      const [args, re] of [
        [["--dns-server", "127.0.0.1"], /--dns-server: needs --reverse-dns/],
        [
          ["--reverse-dns", "--dns-server", "dns.example:53"],
          /--dns-server: dns\.example:53 is not an IP address/,
        ],
        [
          ["--reverse-dns", "--dns-server", "127.0.0.1:0"],
          /--dns-server: 127\.0\.0\.1:0 has no port from 1 to 65535/,
        ],
      ] as const
    ) {
      const cli = startCli(args);
      const exit = await cli.exited;
      assert.equal(exit.code, 2, cli.output());
      assert.match(cli.stderr(), re);
    }
  });
});

describe("WorkerMetrics (the supervisor's side)", () => {
  /** A worker whose server counted `accepted` messages (or never answers). */
  function worker(
    m: WorkerMetrics,
    name: string,
    accepted: () => number | null,
  ): MetricsWorker {
    return {
      name,
      send(request) {
        const n = accepted();
        if (n === null) return; // stuck
        const r = new Registry();
        r.counter("smtpd_messages_total", "Messages.").inc({}, n);
        r.gauge("smtpd_connections_open", "Open.").set({}, 1);
        queueMicrotask(() =>
          m.handle(name, {
            smtpd: "stats-reply",
            id: request.id,
            snapshot: JSON.parse(JSON.stringify(r.snapshot())),
          })
        );
      },
    };
  }

  it("a worker that does not answer cannot hang a scrape: its last counts are used", async () => {
    const m = new WorkerMetrics(50);
    let stuck = false;
    const a = worker(m, "1", () => stuck ? null : 5);
    const b = worker(m, "2", () => 2);
    assert.equal(sample(await m.render([a, b]), "smtpd_messages_total"), 7);
    stuck = true;
    const text = await m.render([a, b]);
    assert.equal(sample(text, "smtpd_messages_total"), 7);
    assert.equal(sample(text, 'smtpd_worker_messages_total{worker="1"}'), 5);
  });

  it("keeps a gone worker's counts in the sum, its gauges at 0", async () => {
    const m = new WorkerMetrics(50);
    const a = worker(m, "1", () => 5);
    const b = worker(m, "2", () => 2);
    let text = await m.render([a, b]);
    assert.equal(sample(text, "smtpd_connections_open"), 2);
    m.gone("1");
    const c = worker(m, "3", () => 1);
    text = await m.render([b, c]);
    assert.equal(sample(text, "smtpd_messages_total"), 8);
    assert.equal(sample(text, "smtpd_connections_open"), 2);
    assert.equal(sample(text, 'smtpd_worker_messages_total{worker="1"}'), null);
    assert.equal(sample(text, 'smtpd_worker_messages_total{worker="3"}'), 1);
  });
});
