// The CLI under abuse, as a child process under the runtime that runs the
// tests (127.0.0.1 only): --max-connections-per-ip, --quiet under a
// connection flood and a TLS-garbage flood (summary lines only), the sweep
// of the Maildir's tmp/ at start-up, and the new flags' parsing.
import { setTimeout as sleep } from "node:timers/promises";
import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { CliError, parseCliArgs } from "../src/cli/args.ts";
import { oneLine } from "../src/cli/log.ts";
import { connect } from "./helpers/client.ts";
import { startListeningCli } from "./helpers/cli.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const CERT = `${ROOT}test/fixtures/tls/cert.pem`;
const KEY = `${ROOT}test/fixtures/tls/key.pem`;

let tmp = "";
let counter = 0;
before(async () => {
  tmp = await fs.mkdtemp(`${tmpdir()}/smtpd-cli-abuse-`);
});
after(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});
const freshPath = () => `${tmp}/md${++counter}`;

/** Connects and reads the first reply line (or "" if the peer closes first). */
function firstLine(
  port: number,
): Promise<{ line: string; socket: net.Socket }> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: "127.0.0.1" });
    let buf = "";
    const done = () => resolve({ line: buf.split("\r\n")[0], socket });
    socket.on("data", (d) => {
      buf += d.toString("latin1");
      if (buf.includes("\r\n")) done();
    });
    socket.on("error", done);
    socket.on("close", done);
  });
}

describe("cli: --max-connections-per-ip", () => {
  it("with --max-connections-per-ip 200, 150 sessions from 127.0.0.1 all get 220", async () => {
    const cli = await startListeningCli([
      "--maildir",
      freshPath(),
      "--max-connections-per-ip",
      "200",
      "--quiet",
    ]);
    const sockets: net.Socket[] = [];
    try {
      const lines: string[] = [];
      // Opened 25 at a time; all 150 stay open together.
      for (let i = 0; i < 150; i += 25) {
        const batch = await Promise.all(
          Array.from({ length: 25 }, () => firstLine(cli.port)),
        );
        for (const b of batch) {
          lines.push(b.line);
          sockets.push(b.socket);
        }
      }
      assert.equal(lines.length, 150);
      assert.deepEqual(lines.filter((l) => !l.startsWith("220 ")), []);
      // The 151st from the same address is still within 200.
      const one = await firstLine(cli.port);
      sockets.push(one.socket);
      assert.match(one.line, /^220 /);
    } finally {
      for (const s of sockets) s.destroy();
      assert.equal((await cli.stop()).code, 0);
    }
  });

  it("without it, the library default (50) refuses the 51st", async () => {
    const cli = await startListeningCli(["--maildir", freshPath(), "--quiet"]);
    const sockets: net.Socket[] = [];
    try {
      const batch = await Promise.all(
        Array.from({ length: 50 }, () => firstLine(cli.port)),
      );
      for (const b of batch) sockets.push(b.socket);
      assert.deepEqual(
        batch.map((b) => b.line).filter((l) => !l.startsWith("220 ")),
        [],
      );
      const extra = await firstLine(cli.port);
      sockets.push(extra.socket);
      assert.match(extra.line, /^421 4\.7\.0 /);
    } finally {
      for (const s of sockets) s.destroy();
      await cli.stop();
    }
  });
});

/** Connects, says EHLO and STARTTLS, then sends bytes that are no TLS. */
function tlsGarbage(port: number): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: "127.0.0.1" });
    let buf = "";
    let step = 0;
    socket.on("data", (d) => {
      buf += d.toString("latin1");
      if (step === 0 && buf.includes("220 ")) {
        step = 1;
        buf = "";
        socket.write("EHLO flood.test\r\n");
      } else if (step === 1 && /^250 /m.test(buf)) {
        step = 2;
        buf = "";
        socket.write("STARTTLS\r\n");
      } else if (step === 2 && buf.includes("220 ")) {
        step = 3;
        socket.write(
          "GET / HTTP/1.1\r\nHost: x\r\n\r\n" + "\x16\x03\x01garbage",
        );
      }
    });
    socket.on("error", () => {});
    socket.on("close", () => resolve());
    setTimeout(() => socket.destroy(), 5000);
  });
}

/** Opens `n` connections at once and resets each as soon as it is open. */
async function connectionFlood(port: number, n: number): Promise<void> {
  await Promise.all(
    Array.from({ length: n }, () =>
      new Promise<void>((resolve) => {
        const s = net.connect({ port, host: "127.0.0.1" });
        s.on("error", () => {});
        s.on("close", () => resolve());
        s.once("connect", () => {
          // Hold some while the flood goes on (refusals), reset others.
          setTimeout(() => s.resetAndDestroy?.() ?? s.destroy(), 200);
        });
      })),
  );
}

describe("cli: --quiet under attack", () => {
  for (const format of ["text", "json"] as const) {
    it(`prints only summary lines, none blank, under connection and TLS-garbage floods (--log ${format})`, async () => {
      const cli = await startListeningCli([
        "--maildir",
        freshPath(),
        "--quiet",
        "--log",
        format,
        "--tls-cert",
        CERT,
        "--tls-key",
        KEY,
        "--max-connections-per-ip",
        "5",
      ], { env: { SMTPD_LOG_SUMMARY_MS: "400" } });
      try {
        await connectionFlood(cli.port, 60);
        for (let round = 0; round < 3; round++) {
          await Promise.all(
            Array.from({ length: 5 }, () => tlsGarbage(cli.port)),
          );
        }
        await sleep(600);
      } finally {
        assert.equal((await cli.stop()).code, 0);
      }
      // Standard output: the listening line only (printed even when quiet).
      assert.equal(cli.stdout().split("\n").length, 2, cli.stdout());
      assert.match(cli.stdout(), /listening/);
      const lines = cli.stderr().split("\n");
      assert.equal(lines.pop(), "", "ends with a newline");
      assert.ok(lines.length >= 1, "at least one summary");
      // Several intervals passed, but the summaries are few.
      assert.ok(lines.length <= 8, `${lines.length} lines`);
      const totals: Record<string, number> = {};
      for (const line of lines) {
        assert.notEqual(line.trim(), "");
        let counts: Record<string, number>;
        if (format === "json") {
          const entry = JSON.parse(line);
          assert.equal(entry.event, "client-failures");
          counts = entry.counts;
        } else {
          const m = /^\S+ warning: client failures in the last \d+ s: (.+)$/
            .exec(line);
          assert.ok(m, `not a summary: ${JSON.stringify(line)}`);
          counts = Object.fromEntries(
            m[1].split(", ").map((p) => {
              const [n, kind] = p.split(" ");
              return [kind, Number(n)];
            }),
          );
        }
        for (const [k, n] of Object.entries(counts)) {
          totals[k] = (totals[k] ?? 0) + n;
        }
      }
      assert.ok(totals.refused >= 10, JSON.stringify(totals));
      assert.ok(totals.tls >= 10, JSON.stringify(totals));
    });
  }

  it("a log line never holds a line break from an error message", () => {
    assert.equal(
      oneLine("error:0A00010B:SSL routines::wrong version number\n"),
      "error:0A00010B:SSL routines::wrong version number",
    );
    assert.equal(oneLine("a\r\n\r\nb\x00c"), "a b?c");
  });
});

describe("cli: Maildir tmp/ sweep", () => {
  it("removes an orphan older than 36 hours at start-up and keeps a fresh one", async () => {
    const maildir = freshPath();
    await fs.mkdir(`${maildir}/tmp`, { recursive: true });
    const old = `${maildir}/tmp/1700000000.M1P4242R00.host`;
    const fresh = `${maildir}/tmp/1700000001.M1P4243R00.host`;
    const oldish = `${maildir}/tmp/1700000002.M1P4244R00.host`;
    await fs.writeFile(old, "orphan");
    await fs.writeFile(fresh, "in progress");
    await fs.writeFile(oldish, "35 hours");
    const hours = (h: number) => new Date(Date.now() - h * 3600_000);
    await fs.utimes(old, hours(40), hours(40));
    await fs.utimes(oldish, hours(35), hours(35));
    const cli = await startListeningCli(["--maildir", maildir]);
    try {
      // The sweep runs once the server listens.
      await cli.waitFor(/removed \d+ orphan/, "stdout");
      assert.deepEqual(
        (await fs.readdir(`${maildir}/tmp`)).sort(),
        [fresh, oldish].map((p) => p.slice(p.lastIndexOf("/") + 1)).sort(),
      );
      assert.match(cli.stdout(), /removed 1 orphan file older than 36 hours/);
    } finally {
      assert.equal((await cli.stop()).code, 0);
    }
  });
});

describe("cli: a large tmp/ sweep does not hold up start-up", () => {
  it("listens, then sweeps in the background, and takes mail meanwhile", async () => {
    const maildir = freshPath();
    await fs.mkdir(`${maildir}/tmp`, { recursive: true });
    const old = new Date(Date.now() - 40 * 3600_000);
    const ORPHANS = 3000;
    for (let i = 0; i < ORPHANS; i += 100) {
      await Promise.all(
        Array.from({ length: 100 }, async (_, j) => {
          const file = `${maildir}/tmp/1700000000.M${i + j}P4242R00.host`;
          await fs.writeFile(file, "orphan");
          await fs.utimes(file, old, old);
        }),
      );
    }
    const cli = await startListeningCli(["--maildir", maildir]);
    try {
      const c = await connect(cli.port);
      await c.reply();
      await c.send(
        "EHLO c.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
      );
      await c.replies(4);
      await c.send("Subject: during the sweep\r\n\r\nhi\r\n.\r\nQUIT\r\n");
      assert.match(await c.reply(), /^250 /);
      await c.closed();
      const removed = `removed ${ORPHANS} orphan files older than 36 hours`;
      await cli.waitFor(new RegExp(removed), "stdout");
      const listening = cli.stdout().indexOf("listening on");
      assert.ok(listening >= 0 && listening < cli.stdout().indexOf(removed));
      assert.deepEqual(await fs.readdir(`${maildir}/tmp`), []);
      assert.equal((await fs.readdir(`${maildir}/new`)).length, 1);
    } finally {
      assert.equal((await cli.stop()).code, 0);
    }
  });
});

describe("cli: abuse flags", () => {
  it("reads them (seconds for timeouts; 0 turns off where allowed)", () => {
    const c = parseCliArgs([
      "--max-connections-per-ip",
      "200",
      "--max-auth-failures-per-ip",
      "5",
      "--command-timeout",
      "30",
      "--session-timeout",
      "600",
    ]);
    assert.equal(c.command, "serve");
    if (c.command !== "serve") return;
    assert.equal(c.options.maxConnectionsPerIp, 200);
    assert.equal(c.options.maxAuthFailuresPerIp, 5);
    assert.equal(c.options.commandTimeout, 30_000);
    assert.equal(c.options.sessionTimeout, 600_000);
    const off = parseCliArgs([
      "--max-auth-failures-per-ip",
      "0",
      "--session-timeout",
      "0",
    ]);
    if (off.command !== "serve") throw new Error("not serve");
    assert.equal(off.options.maxAuthFailuresPerIp, Infinity);
    assert.equal(off.options.sessionTimeout, Infinity);
    const none = parseCliArgs([]);
    if (none.command !== "serve") throw new Error("not serve");
    assert.equal(none.options.maxConnectionsPerIp, undefined);
    assert.equal(none.options.commandTimeout, undefined);
  });

  it("refuses bad values naming the flag", () => {
    for (
      const [args, flag] of [
        [["--max-connections-per-ip", "0"], "--max-connections-per-ip"],
        [["--max-connections-per-ip", "x"], "--max-connections-per-ip"],
        [["--max-auth-failures-per-ip", "-1"], "--max-auth-failures-per-ip"],
        [["--command-timeout", "0"], "--command-timeout"],
        [["--command-timeout", "1.5"], "--command-timeout"],
        [["--session-timeout", "ten"], "--session-timeout"],
      ] as const
    ) {
      assert.throws(
        () => parseCliArgs([...args]),
        (e: unknown) => e instanceof CliError && e.flag === flag,
      );
    }
  });
});
