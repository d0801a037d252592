// Several processes on one port: serve({ reusePort: true }) in two child
// processes, and the CLI's --workers (replacement of a dead worker, one
// summary on SIGTERM, many workers delivering into one Maildir). Children
// run under the runtime that runs these tests; only loopback is used.
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { spawn } from "node:child_process";
import { EventEmitter } from "node:events";
import { existsSync, readFileSync } from "node:fs";
import * as fs from "node:fs/promises";
import * as net from "node:net";
import { availableParallelism, tmpdir } from "node:os";
import process from "node:process";
import { after, before, describe, it } from "node:test";
import { serve } from "../mod.ts";
import { parseCliArgs } from "../src/cli/args.ts";
import { hashPassword } from "../src/cli/password.ts";
import { watchWorker } from "../src/cli/workers.ts";
import { connect } from "./helpers/client.ts";
import { freePort, startCli, startTs } from "./helpers/cli.ts";
import { RUNTIME, tsCommand } from "./helpers/run.ts";

const [NODE_MAJOR, NODE_MINOR] = process.versions.node.split(".").map(Number);
/** Whether serve({ reusePort }) works here (Node 22.12+, 23.1+, Deno, Bun). */
const HAS_REUSE_PORT = RUNTIME !== "node" || NODE_MAJOR > 23 ||
  (NODE_MAJOR === 23 && NODE_MINOR >= 1) ||
  (NODE_MAJOR === 22 && NODE_MINOR >= 12);

let tmp = "";
before(async () => {
  tmp = await fs.mkdtemp(`${tmpdir()}/smtpd-workers-test-`);
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

/** Connects, reads the greeting, says QUIT; resolves to the greeting. */
function greeting(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1");
    let buf = "";
    s.setEncoding("latin1");
    s.on("data", (d: string) => {
      buf += d;
      if (buf.includes("\r\n")) {
        s.end("QUIT\r\n");
        s.destroy();
        resolve(buf.split("\r\n")[0]);
      }
    });
    s.on("error", reject);
  });
}

/** One message over a raw socket; resolves to the reply to the final dot. */
function sendMessage(port: number, id: string): Promise<string> {
  const steps = [
    "EHLO client.test\r\n",
    "MAIL FROM:<a@example.org>\r\n",
    "RCPT TO:<b@example.org>\r\n",
    "DATA\r\n",
    `Message-ID: <${id}@test>\r\nSubject: ${id}\r\n\r\nbody ${id}\r\n.\r\n`,
    "QUIT\r\n",
  ];
  return new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1");
    s.setEncoding("latin1");
    let buf = "";
    let step = -1; // waiting for the greeting
    let last = "";
    s.on("data", (d: string) => {
      buf += d;
      for (;;) {
        // A complete reply: its last line has a space after the code.
        const m = /^(?:\d{3}-[^\r\n]*\r\n)*\d{3}(?: [^\r\n]*)?\r\n/.exec(buf);
        if (!m) return;
        buf = buf.slice(m[0].length);
        const code = m[0].slice(0, 3);
        if (step === 4) last = m[0].trim();
        if (step >= 0 && step < 5 && !/^[23]/.test(code)) {
          s.destroy();
          return reject(new Error(`${id}: ${steps[step].trim()}: ${m[0]}`));
        }
        step++;
        if (step < steps.length) s.write(steps[step]);
        else {
          s.end();
          return resolve(last);
        }
      }
    });
    s.on("error", (e) => reject(new Error(`${id}: ${e.message}`)));
    s.on("close", () => {
      if (step < steps.length) reject(new Error(`${id}: closed at ${step}`));
    });
  });
}

/** Runs `tasks` with at most `width` at once. */
async function pool<T>(
  n: number,
  width: number,
  task: (i: number) => Promise<T>,
): Promise<T[]> {
  const out: T[] = new Array(n);
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < n) {
        const i = next++;
        out[i] = await task(i);
      }
    }),
  );
  return out;
}

/** Maildir file names in new/ by the PID in them (`sec.MusecPpidRrand.host`). */
async function filesByPid(maildir: string): Promise<Map<number, string[]>> {
  const by = new Map<number, string[]>();
  for (const name of await fs.readdir(`${maildir}/new`)) {
    const pid = Number(/P(\d+)R/.exec(name)?.[1]);
    by.set(pid, [...(by.get(pid) ?? []), name]);
  }
  return by;
}

describe("serve({ reusePort })", () => {
  it("refuses a value that is not a boolean", async () => {
    await assert.rejects(
      serve({ port: 0, reusePort: "yes" as unknown as boolean }),
      {
        name: "TypeError",
        message: "Cannot use option reusePort: value is not a boolean",
      },
    );
  });

  it("refuses reusePort on a Unix socket", async () => {
    await assert.rejects(
      serve({ path: `${tmp}/s.sock`, reusePort: true }),
      {
        name: "TypeError",
        message:
          "Cannot use option reusePort: path is given (it is for TCP ports)",
      },
    );
  });

  it(
    "rejects with a TypeError on a Node without SO_REUSEPORT",
    { skip: HAS_REUSE_PORT },
    async () => {
      await assert.rejects(serve({ port: 0, reusePort: true }), {
        name: "TypeError",
        message: /^Cannot use option reusePort: Node v20.*node:cluster/,
      });
    },
  );

  it(
    "lets two processes listen on one port, both receiving connections",
    { skip: !HAS_REUSE_PORT },
    async () => {
      const port = await freePort();
      const a = startTs("test/fixtures/reuse_port_server.ts", [String(port)]);
      await a.waitFor(/listening/);
      const b = startTs("test/fixtures/reuse_port_server.ts", [String(port)]);
      await b.waitFor(/listening/);
      const greetings = await pool(60, 10, () => greeting(port));
      const seen = new Set(greetings.map((l) => /^220 (pid\d+)/.exec(l)?.[1]));
      assert.deepEqual(
        [...seen].sort(),
        [`pid${a.child.pid}`, `pid${b.child.pid}`].sort(),
      );
      for (const c of [a, b]) c.signal("SIGTERM");
      assert.equal((await a.exited).code, 0);
      assert.equal((await b.exited).code, 0);
    },
  );
});

/** What {@link watchWorker} passed on, in order. */
function watched(
  worker: Pick<EventEmitter, "on" | "once">,
  graceMs?: number,
): { events: string[]; exited: Promise<void> } {
  const events: string[] = [];
  let exited: () => void = () => {};
  const done = new Promise<void>((r) => (exited = r));
  watchWorker(
    worker,
    (m) => events.push(`message ${(m as { smtpd: string }).smtpd}`),
    (code, signal) => {
      events.push(`exit ${signal ?? code}`);
      exited();
    },
    graceMs,
  );
  return { events, exited: done };
}

describe("smtpd --workers: a worker's exit", () => {
  const stopped = { smtpd: "stopped", messages: 3, bytes: 300, failed: 0 };

  it("is reported after its last message when the exit is seen first", async () => {
    const w = new EventEmitter();
    const { events, exited } = watched(w);
    w.emit("exit", 0, null);
    w.emit("message", stopped);
    assert.deepEqual(events, ["message stopped"]);
    w.emit("disconnect");
    await exited;
    assert.deepEqual(events, ["message stopped", "exit 0"]);
  });

  it("is reported at once when its channel has ended before", async () => {
    const w = new EventEmitter();
    const { events, exited } = watched(w);
    w.emit("message", stopped);
    w.emit("disconnect");
    w.emit("exit", null, "SIGKILL");
    await exited;
    assert.deepEqual(events, ["message stopped", "exit SIGKILL"]);
  });

  it("is reported, once, when the channel does not end", async () => {
    const w = new EventEmitter();
    const { events, exited } = watched(w, 10);
    w.emit("exit", 1, null);
    await exited;
    w.emit("disconnect");
    assert.deepEqual(events, ["exit 1"]);
  });

  it(
    "follows the stopped report of real children gone before the parent looked",
    // /proc tells when a child has exited (a zombie, or reaped).
    { skip: !existsSync("/proc/self/stat") },
    async () => {
      const { cmd, args } = tsCommand("test/fixtures/worker_last_words.ts");
      // Five children: on Deno each one's exit came before its message
      // about two times in three.
      const children = Array.from({ length: 5 }, () => {
        const child = spawn(cmd, args, {
          stdio: ["ignore", "inherit", "inherit", "ipc"],
        });
        return { pid: child.pid, ...watched(child) };
      });
      // Busy until every child has sent its report and exited: the parent
      // then learns of both at once.
      const exited = (pid: number | undefined) => {
        try {
          const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
          return /^[ZX]/.test(stat.replace(/^.*\) /s, ""));
        } catch {
          return true; // reaped
        }
      };
      const until = Date.now() + 30000;
      while (!children.every((c) => exited(c.pid)) && Date.now() < until) {
        /* busy */
      }
      for (const c of children) {
        await c.exited;
        assert.deepEqual(c.events, ["message stopped", "exit 0"]);
      }
    },
  );
});

describe("smtpd --workers", () => {
  it("shares the port, replaces a killed worker, delivers each message once, stops with one summary", async () => {
    const maildir = `${tmp}/md`;
    const cli = startCli([
      "--port",
      "0",
      "--workers",
      "2",
      "--maildir",
      maildir,
    ]);
    const m = await cli.waitFor(
      /2 workers on 127\.0\.0\.1:(\d+) \((SO_REUSEPORT|node:cluster)\), pids (\d+), (\d+)/,
    );
    const port = Number(m[1]);
    assert.equal(m[2], HAS_REUSE_PORT ? "SO_REUSEPORT" : "node:cluster");
    const workerPids = [Number(m[3]), Number(m[4])];
    for (const pid of workerPids) pids.add(pid);

    // 200 messages, 20 at a time: each lands exactly once, from both workers.
    const replies = await pool(200, 20, (i) => sendMessage(port, `m${i}`));
    for (const r of replies) assert.match(r, /^250 /);
    let by = await filesByPid(maildir);
    assert.deepEqual([...by.keys()].sort(), [...workerPids].sort());
    const subjects = async () => {
      const all: string[] = [];
      for (const names of by.values()) {
        for (const name of names) {
          const text = await fs.readFile(`${maildir}/new/${name}`, "utf8");
          all.push(/^Subject: (\S+)/m.exec(text)![1]);
        }
      }
      return all.sort();
    };
    assert.deepEqual(
      await subjects(),
      Array.from({ length: 200 }, (_, i) => `m${i}`).sort(),
    );

    // A killed worker is replaced; service goes on meanwhile.
    const killed = workerPids[0];
    process.kill(killed, "SIGKILL");
    await cli.waitFor(
      new RegExp(
        `worker ${killed} exited with signal SIGKILL; starting another`,
      ),
    );
    await cli.waitForAll(/listening on 127\.0\.0\.1:\d+ /, 3);
    const more = await pool(20, 5, (i) => sendMessage(port, `n${i}`));
    for (const r of more) assert.match(r, /^250 /);
    by = await filesByPid(maildir);
    const total = [...by.values()].reduce((n, v) => n + v.length, 0);
    assert.equal(total, 220);
    const lost = by.get(killed)?.length ?? 0; // counted by the dead worker

    // SIGTERM to the parent: every worker stops, one summary with the total.
    cli.signal("SIGTERM");
    const exit = await cli.exited;
    const out = cli.output();
    assert.equal(exit.code, 0, out);
    const summaries = [...out.matchAll(/stopped after \S+: (\d+) messages?/g)];
    assert.equal(summaries.length, 1, out);
    assert.equal(Number(summaries[0][1]), total - lost, out);
    assert.match(out, /\(2 workers, 1 restart\)/);
    for (const pid of new Set([...by.keys()])) {
      assert.throws(() => process.kill(pid, 0), { code: "ESRCH" });
    }
  });

  it("workers stop when the parent dies", async () => {
    const cli = startCli([
      "--port",
      "0",
      "--workers",
      "2",
      "--maildir",
      `${tmp}/orphans`,
    ]);
    const m = await cli.waitFor(
      /2 workers on \S+ \(\S+\), pids (\d+), (\d+)/,
    );
    const workerPids = [Number(m[1]), Number(m[2])];
    for (const pid of workerPids) pids.add(pid);
    cli.signal("SIGKILL");
    await cli.processExited; // its workers may live on
    const alive = () =>
      workerPids.filter((pid) => {
        try {
          process.kill(pid, 0);
          return true;
        } catch {
          return false;
        }
      });
    const deadline = Date.now() + 20000;
    while (alive().length > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.deepEqual(alive(), []);
  });

  it("reads --workers N and auto (one per core)", () => {
    const workers = (argv: string[]) => {
      const c = parseCliArgs(argv);
      return c.command === "serve" ? c.options.workers : null;
    };
    assert.equal(workers([]), 1);
    assert.equal(workers(["--workers", "4"]), 4);
    assert.equal(workers(["--workers", "auto"]), availableParallelism());
    assert.throws(() => workers(["--workers", "2", "--socket", "/tmp/x"]), {
      message:
        "--workers: cannot be used with --socket (processes share TCP ports only)",
    });
    for (const bad of ["0", "two", "1.5", "1025"]) {
      assert.throws(() => workers(["--workers", bad]), {
        message:
          `--workers: must be "auto" or a whole number from 1 to 1024, not "${bad}"`,
      });
    }
  });

  it("refuses a bad --workers value", async () => {
    const cli = startCli(["--workers", "0"]);
    const exit = await cli.exited;
    assert.equal(exit.code, 2);
    assert.match(cli.output(), /--workers: must be "auto" or a whole number/);
  });

  it("exits with the first worker's status when it cannot start", async () => {
    const cli = startCli([
      "--port",
      "0",
      "--workers",
      "2",
      "--tls-cert",
      `${tmp}/missing.pem`,
      "--tls-key",
      `${tmp}/missing.pem`,
    ]);
    const exit = await cli.exited;
    assert.equal(exit.code, 2, cli.output());
    // Said once (by the first worker), not once per worker.
    assert.equal(cli.output().match(/--tls-cert/g)?.length, 1, cli.output());
  });
});

/** Process ids whose environment holds `tag` (Linux: /proc). */
async function tagged(tag: string): Promise<number[]> {
  const found: number[] = [];
  for (const name of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const env = await fs.readFile(`/proc/${name}/environ`, "latin1");
      // A zombie (exited, not yet reaped) has an empty environment.
      if (env.includes(tag)) found.push(Number(name));
    } catch { /* gone, or not ours */ }
  }
  return found;
}

/** Waits until no process holds `tag`; resolves to those left after `ms`. */
async function noneLeft(tag: string, ms: number): Promise<string[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const left = await tagged(tag);
    if (left.length === 0) return [];
    if (Date.now() > deadline) {
      return await Promise.all(left.map(async (pid) => {
        pids.add(pid); // killed after the tests
        const cmd = await fs.readFile(`/proc/${pid}/cmdline`, "latin1")
          .catch(() => "");
        return `${pid} ${cmd.replaceAll("\0", " ")}`;
      }));
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

const b64 = (text: string) => Buffer.from(text, "utf8").toString("base64");

describe("smtpd --workers: limits shared by the workers", () => {
  it("--max-connections-per-ip counts across the workers", async () => {
    const cli = startCli([
      "--port",
      "0",
      "--workers",
      "2",
      "--maildir",
      `${tmp}/conn-md`,
      "--max-connections-per-ip",
      "4",
    ]);
    try {
      const m = await cli.waitFor(/2 workers on 127\.0\.0\.1:(\d+) /);
      const port = Number(m[1]);
      // 20 connections at once (the kernel spreads them over both workers).
      const clients = await Promise.all(
        Array.from({ length: 20 }, () => connect(port)),
      );
      const lines = await Promise.all(
        clients.map(async (c) => (await c.reply()).slice(0, 9)),
      );
      assert.equal(lines.filter((l) => l.startsWith("220 ")).length, 4);
      assert.equal(lines.filter((l) => l === "421 4.7.0").length, 16);
      await Promise.all(clients.map((c) => c.close()));
      // Freed when they leave.
      await new Promise((r) => setTimeout(r, 300));
      const again = await Promise.all(
        Array.from({ length: 4 }, () => connect(port)),
      );
      for (const c of again) assert.match(await c.reply(), /^220 /);
      await Promise.all(again.map((c) => c.close()));
    } finally {
      cli.signal("SIGTERM");
      assert.equal((await cli.exited).code, 0, cli.output());
    }
  });

  it("--max-auth-failures-per-ip counts across the workers: 3 means 3 passwords checked", async () => {
    const users = `${tmp}/users`;
    await fs.writeFile(users, `alice:${await hashPassword("right")}\n`);
    const cli = startCli([
      "--port",
      "0",
      "--workers",
      "2",
      "--maildir",
      `${tmp}/auth-md`,
      "--auth-file",
      users,
      "--allow-insecure-auth",
      "--max-auth-failures-per-ip",
      "3",
    ]);
    try {
      const m = await cli.waitFor(/2 workers on 127\.0\.0\.1:(\d+) /);
      const port = Number(m[1]);
      const attempt = async (password: string) => {
        const c = await connect(port);
        try {
          assert.match(await c.reply(), /^220 /);
          await c.send("EHLO client.test\r\n");
          assert.match(await c.reply(), /^250[ -]/);
          await c.send(`AUTH PLAIN ${b64(`\0alice\0${password}`)}\r\n`);
          return (await c.reply()).slice(0, 9);
        } finally {
          await c.close();
        }
      };
      // 16 guesses at once, on connections spread over both workers.
      const replies = await Promise.all(
        Array.from({ length: 16 }, (_, i) => attempt(`wrong${i}`)),
      );
      assert.equal(replies.filter((r) => r === "535 5.7.8").length, 3);
      assert.equal(replies.filter((r) => r === "454 4.7.0").length, 13);
      // Locked out on every worker: the right password gets 454 too.
      const right = await Promise.all(
        Array.from({ length: 6 }, () => attempt("right")),
      );
      assert.deepEqual(right, Array(6).fill("454 4.7.0"));
    } finally {
      cli.signal("SIGTERM");
      assert.equal((await cli.exited).code, 0, cli.output());
    }
  });
});

describe("smtpd --workers: supervisor killed", () => {
  it(
    "a worker whose supervisor dies finishes the message in transfer, then exits",
    // Under node:cluster (Node 20), cluster exits a worker at once when
    // its primary is gone.
    { skip: !HAS_REUSE_PORT },
    async () => {
      const tag = `smtpd-test-${process.pid}-graceful`;
      const maildir = `${tmp}/graceful`;
      const cli = startCli([
        "--port",
        "0",
        "--workers",
        "2",
        "--maildir",
        maildir,
      ], { env: { SMTPD_TEST_TAG: tag } });
      const m = await cli.waitFor(/2 workers on 127\.0\.0\.1:(\d+) /);
      const c = await connect(Number(m[1]));
      try {
        assert.match(await c.reply(), /^220 /);
        for (
          const line of [
            "EHLO client.test",
            "MAIL FROM:<a@example.org>",
            "RCPT TO:<b@example.org>",
            "DATA",
          ]
        ) {
          await c.send(`${line}\r\n`);
          assert.match(await c.reply(), /^[23]\d\d[ -]/);
        }
        await c.send("Subject: in-transfer\r\n\r\nfirst half\r\n");
        cli.signal("SIGKILL");
        await cli.processExited; // its workers may live on
        await new Promise((r) => setTimeout(r, 1500)); // the worker saw it
        await c.send("second half\r\n.\r\n");
        assert.match(await c.reply(), /^250 /);
      } finally {
        await c.close();
      }
      assert.deepEqual(await noneLeft(tag, 15000), [], cli.output());
      const [name] = await fs.readdir(`${maildir}/new`);
      assert.match(
        await fs.readFile(`${maildir}/new/${name}`, "utf8"),
        /Subject: in-transfer\r\n\r\nfirst half\r\nsecond half\r\n$/,
      );
    },
  );

  it("loses no acknowledged message and leaves no process when the supervisor is killed at random moments", async () => {
    const maildir = `${tmp}/durable`;
    const acked = new Set<string>();
    let n = 0;
    // Killed while the first worker starts, while the second starts, at a
    // random moment from start-up to full service, and under load.
    const moments = ["first worker", "second worker", "random", "serving"];
    for (let round = 0; round < moments.length; round++) {
      const tag = `smtpd-test-${process.pid}-r${round}`;
      const port = await freePort();
      const cli = startCli([
        "--port",
        String(port),
        "--workers",
        "2",
        "--maildir",
        maildir,
      ], { env: { SMTPD_TEST_TAG: tag } });
      // Senders keep sending until the supervisor has been dead a while;
      // the kill comes at a random moment from start-up to full service.
      let killed = 0;
      const senders = Array.from({ length: 4 }, async () => {
        while (killed === 0 || Date.now() - killed < 1500) {
          const id = `r${round}m${n++}`;
          try {
            if (/^250 /.test(await sendMessage(port, id))) acked.add(id);
          } catch {
            await new Promise((r) => setTimeout(r, 20)); // not up, or gone
          }
        }
      });
      if (moments[round] === "random") {
        await new Promise((r) => setTimeout(r, Math.random() * 2500));
      } else if (moments[round] === "serving") {
        const before = acked.size;
        const deadline = Date.now() + 20000;
        while (acked.size < before + 10 && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 10));
        }
        await new Promise((r) => setTimeout(r, Math.random() * 300));
      } else {
        // The supervisor and its workers share the tag: kill it as soon
        // as the first (second) worker exists, still loading.
        const want = moments[round] === "first worker" ? 2 : 3;
        const deadline = Date.now() + 20000;
        while ((await tagged(tag)).length < want && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 10));
        }
      }
      cli.signal("SIGKILL");
      killed = Date.now();
      await cli.processExited; // its workers may live on
      await Promise.all(senders);
      assert.deepEqual(await noneLeft(tag, 15000), [], cli.output());
    }
    const stored = new Set<string>();
    for (const name of await fs.readdir(`${maildir}/new`)) {
      const text = await fs.readFile(`${maildir}/new/${name}`, "utf8");
      stored.add(/^Subject: (\S+)/m.exec(text)![1]);
    }
    assert.ok(acked.size >= 10, `only ${acked.size} acknowledged`);
    for (const id of acked) {
      assert.ok(stored.has(id), `${id} acknowledged, not stored`);
    }
  });
});

describe(`examples/workers_${RUNTIME}.ts`, () => {
  it("runs two workers on one port, both receiving, and stops on SIGTERM", async () => {
    const port = await freePort();
    const ex = startTs(`examples/workers_${RUNTIME}.ts`, [String(port)], {
      env: { WORKERS: "2" },
    });
    await ex.waitForAll(/worker \d+ listening on/, 2);
    const replies = await pool(30, 6, (i) => sendMessage(port, `e${i}`));
    for (const r of replies) assert.match(r, /^250 /);
    const lines = await ex.waitForAll(
      /message from=<a@example\.org> worker=(\d+)/,
      30,
    );
    assert.equal(new Set(lines.map((m) => m[1])).size, 2, ex.output());
    // A deadline: a worker left running would hold the test (and CI) open.
    const exit = await ex.stop("SIGTERM", 20000);
    assert.equal(exit.code, 0, ex.output());
    assert.match(ex.output(), /^stopped$/m);
  });

  it("stops with status 0 on Ctrl-C (SIGINT to the whole process group), run after run", async () => {
    // The primary and the workers all get the signal at once, whatever
    // order they handle it in.
    for (let run = 1; run <= 6; run++) {
      const port = await freePort();
      const ex = startTs(`examples/workers_${RUNTIME}.ts`, [String(port)], {
        env: { WORKERS: "2" },
        group: true, // a Ctrl-C reaches the whole group
      });
      await ex.waitForAll(/worker \d+ listening on/, 2);
      // What a terminal's Ctrl-C does; within a deadline (a worker the
      // primary started again after the signal would keep it running).
      const exit = await ex.stop("SIGINT", 20000);
      assert.equal(exit.code, 0, `run ${run}: ${ex.output()}`);
      assert.match(ex.output(), /^stopped$/m, `run ${run}`);
    }
  });
});
