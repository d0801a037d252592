// server.stats(): the counters the driver keeps where things happen, on a
// real server under a known load from real clients (nodemailer, Python's
// smtplib) and a raw one: messages accepted and rejected at the end of
// DATA and BDAT (4xx and 5xx), STARTTLS that succeeds and fails, a refusal
// by maxConnections, AUTH failures and a lock-out, a hook past hookTimeout;
// an LMTP session answered per recipient; implicit TLS handshakes that
// succeed and fail. The snapshot must equal the expected counts exactly,
// and its exposition must pass `promtool check metrics` (Debian's
// `prometheus` package; skipped with a message without it).
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { type LogEntry, serve, type ServerStats, SmtpError } from "../mod.ts";
import {
  connectPlain,
  connectTls,
  ehlo,
  starttls,
  TLS,
  Wire,
} from "./helpers/tls.ts";
import {
  createMetrics,
  formatPrometheus,
  LATENCY_BUCKETS,
  mergeSnapshots,
} from "../src/exports/metrics.ts";
import { sendWithNodemailer, SHORT_MESSAGE } from "./helpers/client.ts";

const here = dirname(fileURLToPath(import.meta.url));
const PROMTOOL = ["/usr/bin/promtool", "/usr/local/bin/promtool"].find((p) =>
  existsSync(p)
);

/** Runs a program with `input` on stdin: its exit code and output. */
function run(
  file: string,
  args: string[],
  input = "",
): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { timeout: 60000 }, (error, o, e) => {
      const code = error === null ? 0 : (error as { code?: unknown }).code;
      if (typeof code !== "number") reject(error);
      else resolve({ code, out: String(o) + String(e) });
    });
    child.stdin!.end(input);
  });
}

/** Counter and gauge values as `name{k="v",…}` → value, zeros left out. */
function values(stats: ServerStats): Record<string, number> {
  const out: Record<string, number> = {};
  for (const f of stats) {
    if (f.type === "histogram") continue;
    for (const s of f.series) {
      if (!s.value) continue;
      const labels = f.labelNames.map((l) => `${l}="${s.labels[l]}"`);
      out[labels.length ? `${f.name}{${labels.join(",")}}` : f.name] = s.value;
    }
  }
  return out;
}

/** A histogram series of `stats`: its counts per bucket, sum and count. */
function histogram(stats: ServerStats, name: string, hook: string) {
  const s = stats.find((f) => f.name === name)!.series.find((s) =>
    s.labels.hook === hook
  );
  assert.ok(s, `no ${name} series for ${hook}`);
  return { counts: s.counts!, sum: s.sum!, count: s.count! };
}

/** Waits until the server has no session open. */
async function idle(server: { connections: number }): Promise<void> {
  for (let i = 0; server.connections > 0; i++) {
    if (i > 500) assert.fail("sessions still open");
    await new Promise((r) => setTimeout(r, 10));
  }
}

const RAW = SHORT_MESSAGE;

/** An AUTH PLAIN command line. */
const plain = (user: string, pass: string) =>
  `AUTH PLAIN ${btoa(`\0${user}\0${pass}`)}`;

describe("server.stats() under a known load", () => {
  it("counts connections, refusals, sessions, messages by class, bytes, AUTH, STARTTLS and hook waits exactly", async () => {
    const server = await serve({
      hostname: "127.0.0.1",
      port: 0,
      tls: TLS,
      maxConnections: 2,
      hookTimeout: 1000,
      allowInsecureAuth: true,
      maxAuthFailuresPerIp: 2,
      auth: { required: false, verify: ({ password }) => password === "right" },
      onMailFrom(from) {
        // Never settles: 451 after hookTimeout.
        if (from === "slow@example.org") return new Promise(() => {});
      },
      async onMessage(message) {
        await message.bytes();
        if (message.from === "spam@example.org") {
          throw new SmtpError(554, "5.7.1", "Looks like spam");
        }
        if (message.from === "later@example.org") {
          throw new SmtpError(451, "4.7.1", "Try again later");
        }
      },
    });
    const port = server.addr.port;
    try {
      const empty = values(server.stats());
      assert.deepEqual(empty, {}, "a new server counted nothing");

      // 3 messages with nodemailer (a connection each), 2 with smtplib.
      await sendWithNodemailer(port, 3, "nm@example.org");
      const py = await run("python3", [
        join(here, "fixtures", "smtplib_send.py"),
        String(port),
        JSON.stringify([[
          { from: "py@example.org", to: ["b@example.org"], data: RAW },
          { from: "py@example.org", to: ["c@example.org"], data: RAW },
        ]]),
      ]);
      assert.equal(py.code, 0, py.out);

      // STARTTLS, then: DATA rejected 5xx, DATA rejected 4xx, BDAT
      // accepted, a MAIL whose hook times out.
      const open = () => connectPlain(port);
      const a = await starttls(open);
      await a.send(
        "MAIL FROM:<spam@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
      );
      assert.match(await a.reply(), /^250 /);
      assert.match(await a.reply(), /^250 /);
      assert.match(await a.reply(), /^354 /);
      assert.match(await a.command("hi\r\n."), /^554 5\.7\.1 /);
      await a.send(
        "MAIL FROM:<later@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
      );
      for (const re of [/^250 /, /^250 /, /^354 /]) {
        assert.match(await a.reply(), re);
      }
      assert.match(await a.command("hi\r\n."), /^451 4\.7\.1 /);
      await a.send(
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nBDAT 3\r\nabcBDAT 2 LAST\r\nde",
      );
      for (let i = 0; i < 4; i++) assert.match(await a.reply(), /^250 /);
      assert.match(
        await a.command("MAIL FROM:<slow@example.org>"),
        /^451 4\.3\.0 /,
      );

      // A second session, and a third over maxConnections: refused.
      const b = await open();
      assert.match(await ehlo(b), /STARTTLS/);
      const c = await open();
      assert.match(await c.reply(), /^421 4\.7\.0 /);
      await c.waitClosed();
      // STARTTLS, then no TLS at all: the handshake fails.
      assert.match(await b.command("STARTTLS"), /^220 /);
      await b.send("this is not a TLS ClientHello\r\n".repeat(4));
      await b.waitClosed();
      assert.match(await a.command("QUIT"), /^221 /);
      await a.waitClosed();

      // AUTH: two wrong passwords use up the address's budget (a
      // lock-out); the right one is then refused without asking.
      const d = await open();
      await ehlo(d);
      assert.match(await d.command(plain("u", "wrong")), /^535 5\.7\.8 /);
      assert.match(await d.command(plain("u", "wrong")), /^535 5\.7\.8 /);
      assert.match(await d.command(plain("u", "right")), /^454 4\.7\.0 /);
      // The third failure of the session ends it (maxAuthFailures 3).
      assert.match(await d.reply(), /^421 4\.7\.0 /);
      await d.waitClosed();
      await idle(server);

      const stats = server.stats();
      const bytes = 5 * RAW.length + 5;
      assert.deepEqual(values(stats), {
        // nodemailer 3, smtplib 1, raw 3 (a, b, d); c refused.
        smtpd_connections_total: 7,
        'smtpd_connections_refused_total{reason="too_many_connections"}': 1,
        // smtplib and a say QUIT; nodemailer hangs up after its message,
        // b after its failed handshake.
        'smtpd_sessions_total{outcome="quit"}': 2,
        'smtpd_sessions_total{outcome="eof"}': 4,
        'smtpd_sessions_total{outcome="too-many-errors"}': 1,
        'smtpd_messages_total{result="accepted",class="2xx"}': 6,
        'smtpd_messages_total{result="rejected",class="4xx"}': 1,
        'smtpd_messages_total{result="rejected",class="5xx"}': 1,
        smtpd_received_bytes_total: bytes,
        // The rejected bodies too: "hi\r\n" twice.
        smtpd_body_bytes_total: bytes + 8,
        'smtpd_auth_attempts_total{mechanism="PLAIN",result="failure"}': 3,
        smtpd_auth_lockouts_total: 1,
        'smtpd_tls_handshakes_total{mode="starttls",result="success"}': 1,
        'smtpd_tls_handshakes_total{mode="starttls",result="failure"}': 1,
        smtpd_hook_timeouts_total: 1,
      });
      // Every wait timed: 8 onMessage, 2 auth (the locked-out attempt
      // asks nobody), 9 MAIL (one of them until hookTimeout).
      const seconds = "smtpd_hook_duration_seconds";
      assert.equal(histogram(stats, seconds, "onMessage").count, 8);
      assert.equal(histogram(stats, seconds, "auth").count, 2);
      const mail = histogram(stats, seconds, "onMailFrom");
      assert.equal(mail.count, 9);
      assert.equal(mail.counts.reduce((x, y) => x + y), 9);
      // The deadline is kept by the wall clock, the wait timed by the
      // monotonic one: about 1 s, not exactly.
      assert.ok(mail.sum >= 0.9, `the timed-out wait counts: ${mail.sum}`);
      const oneSecond = LATENCY_BUCKETS.indexOf(1);
      assert.ok(
        mail.counts.slice(oneSecond).reduce((x, y) => x + y) >= 1,
        "the timed-out wait is in a bucket of 1 s or more",
      );
      assert.equal(histogram(stats, seconds, "onConnect").count, 0);
      // Plain data: the same after a JSON round trip.
      assert.deepEqual(JSON.parse(JSON.stringify(stats)), stats);
      // A fresh snapshot, not a view of the counters.
      assert.notEqual(server.stats(), stats);
    } finally {
      await server.close();
    }
  });

  it("counts LMTP replies per recipient, at the end of the data", async () => {
    const server = await serve({
      hostname: "127.0.0.1",
      port: 0,
      lmtp: true,
      async onMessage(message) {
        await message.bytes();
        if (message.from === "later@example.org") {
          throw new SmtpError(451, "4.3.0", "Try again later");
        }
        message.rejectRecipient(
          "full@example.org",
          new SmtpError(552, "5.2.2", "Mailbox full"),
        );
      },
    });
    try {
      const w = await connectPlain(server.addr.port);
      assert.match(await w.reply(), /^220 /);
      assert.match(await w.command("LHLO client.test"), /^250 /m);
      for (const from of ["a@example.org", "later@example.org"]) {
        await w.send(
          `MAIL FROM:<${from}>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<full@example.org>\r\nDATA\r\n`,
        );
        for (const re of [/^250 /, /^250 /, /^250 /, /^354 /]) {
          assert.match(await w.reply(), re);
        }
        await w.send("Subject: x\r\n\r\nbody\r\n.\r\n");
        const first = await w.reply(), second = await w.reply();
        if (from === "a@example.org") {
          assert.match(first, /^250 /);
          assert.match(second, /^552 5\.2\.2 /);
        } else {
          assert.match(first, /^451 /);
          assert.match(second, /^451 /);
        }
      }
      assert.match(await w.command("QUIT"), /^221 /);
      await w.waitClosed();
      await idle(server);
      const size = "Subject: x\r\n\r\nbody\r\n".length;
      assert.deepEqual(values(server.stats()), {
        smtpd_connections_total: 1,
        'smtpd_sessions_total{outcome="quit"}': 1,
        'smtpd_messages_total{result="accepted",class="2xx"}': 1,
        'smtpd_messages_total{result="rejected",class="4xx"}': 2,
        'smtpd_messages_total{result="rejected",class="5xx"}': 1,
        smtpd_received_bytes_total: size,
        smtpd_body_bytes_total: 2 * size,
      });
    } finally {
      await server.close();
    }
  });

  it("counts implicit TLS handshakes that succeed and fail", async () => {
    const server = await serve({
      hostname: "127.0.0.1",
      port: 0,
      tls: TLS,
      implicitTls: true,
    });
    try {
      const port = server.addr.port;
      const ok = new Wire(await connectTls(port));
      assert.match(await ok.reply(), /^220 /);
      assert.match(await ok.command("QUIT"), /^221 /);
      await ok.waitClosed();
      const bad = await connectPlain(port);
      await bad.send("this is not a TLS ClientHello\r\n".repeat(4));
      await bad.waitClosed();
      await idle(server);
      // The shim tells the failure when it has given up on the handshake.
      const failure =
        'smtpd_tls_handshakes_total{mode="implicit",result="failure"}';
      for (let i = 0; values(server.stats())[failure] === undefined; i++) {
        if (i > 500) assert.fail("the failed handshake was not counted");
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.deepEqual(values(server.stats()), {
        smtpd_connections_total: 1,
        'smtpd_sessions_total{outcome="quit"}': 1,
        'smtpd_tls_handshakes_total{mode="implicit",result="success"}': 1,
        'smtpd_tls_handshakes_total{mode="implicit",result="failure"}': 1,
      });
    } finally {
      await server.close();
    }
  });
});

describe("refusals: counted and logged in one place, under one code", () => {
  it("logs each refusal with the code it is counted under", async () => {
    const log: LogEntry[] = [];
    const server = await serve({
      hostname: "127.0.0.1",
      port: 0,
      maxConnections: 1,
      greetingDelay: 300,
      logger: (e) => log.push(e),
    });
    const untrusted = await serve({
      hostname: "127.0.0.1",
      port: 0,
      proxyProtocol: { trusted: ["192.0.2.0/24"] },
      logger: (e) => log.push(e),
    });
    try {
      const port = server.addr.port;
      // Talks before the greeting: 554, early_talker.
      const early = await connectPlain(port);
      await early.send("EHLO early\r\n");
      assert.match(await early.reply(), /^554 5\.7\.1 /);
      await early.waitClosed();
      await idle(server);
      // One session open, a second over maxConnections: 421.
      const first = await connectPlain(port);
      assert.match(await first.reply(), /^220 /);
      const second = await connectPlain(port);
      assert.match(await second.reply(), /^421 4\.7\.0 /);
      await second.waitClosed();
      assert.match(await first.command("QUIT"), /^221 /);
      await first.waitClosed();
      // A PROXY header from a peer not trusted: closed, proxy_untrusted.
      const proxied = await connectPlain(untrusted.addr.port);
      await proxied.waitClosed();
      await idle(server);
      await idle(untrusted);
      const refused = log.filter((e) => e.type === "refused");
      assert.deepEqual(
        refused.map((e) => e.type === "refused" && [e.code, e.reason]),
        [
          ["early_talker", "sent data before the greeting"],
          ["too_many_connections", "too many connections"],
          ["proxy_untrusted", "PROXY header from an untrusted address"],
        ],
      );
      const counted = {
        ...values(server.stats()),
        ...values(untrusted.stats()),
      };
      for (const e of refused) {
        if (e.type !== "refused") continue;
        assert.equal(
          counted[`smtpd_connections_refused_total{reason="${e.code}"}`],
          1,
          e.code,
        );
      }
    } finally {
      await server.close();
      await untrusted.close();
    }
  });
});

describe("server.stats() in the shape of smtpd/metrics", () => {
  it("renders with formatPrometheus, passes promtool, sums across servers, and feeds createMetrics({ server })", async () => {
    const options = {
      hostname: "127.0.0.1",
      port: 0,
      onMessage: async (m: { bytes(): Promise<Uint8Array> }) => {
        await m.bytes();
      },
    };
    const one = await serve(options);
    const two = await serve(options);
    try {
      await sendWithNodemailer(one.addr.port, 2, "nm@example.org");
      await sendWithNodemailer(two.addr.port, 1, "nm@example.org");
      await idle(one);
      await idle(two);
      const merged = mergeSnapshots([
        { worker: "1", snapshot: one.stats() },
        { worker: "2", snapshot: two.stats() },
      ]);
      const v = values(merged);
      assert.equal(
        v['smtpd_messages_total{result="accepted",class="2xx"}'],
        3,
      );
      assert.equal(v.smtpd_connections_total, 3);
      const text = formatPrometheus(merged);
      assert.match(text, /^# TYPE smtpd_connections_open gauge$/m);
      assert.match(
        text,
        /^smtpd_hook_duration_seconds_count\{hook="onMessage"\} 3$/m,
      );
      const metrics = createMetrics({ server: one });
      metrics.observeMilter("rspamd", "eom", 0.01);
      const m = metrics.snapshot();
      assert.deepEqual(m.slice(0, one.stats().length), one.stats());
      assert.ok(m.some((f) => f.name === "smtpd_milter_duration_seconds"));
      assert.equal(
        m.filter((f) => f.name === "smtpd_messages_total").length,
        1,
        "the server's family replaces the inferred one",
      );
      assert.throws(
        () => createMetrics({ server: {} as never }),
        /Cannot create metrics: server has no stats\(\)/,
      );
      if (PROMTOOL === undefined) {
        console.log("# promtool not installed (Debian package prometheus)");
        return;
      }
      for (const t of [formatPrometheus(one.stats()), text, metrics.render()]) {
        const r = await run(PROMTOOL, ["check", "metrics"], t);
        assert.equal(r.out, "");
        assert.equal(r.code, 0);
      }
    } finally {
      await one.close();
      await two.close();
    }
  });
});
