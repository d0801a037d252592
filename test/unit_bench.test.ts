// The bench's own modules in process (nothing measured, nothing on the
// wire): the contract floor's replies and hooks (bench/floor_feed.mjs, what
// `bench/floor.mjs --contract` runs per read) and the report's contract
// floor columns (bench/report.mjs).
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { describe, it } from "node:test";
import {
  contractFeed,
  contractRead,
  contractState,
  feed,
  state,
} from "../bench/floor_feed.mjs";
import { spread, threadsCpuUs, threadsDelta } from "../bench/common.mjs";
import { argvProblem } from "../bench/flags.mjs";
import { AB_WORKLOADS, abArgs } from "../bench/ab_flags.mjs";
import { goals, tables } from "../bench/report.mjs";
import {
  compilingUsPerMsg,
  warmedUp,
  WARMUP,
  warmupLimits,
} from "../bench/workloads.mjs";

const enc = new TextEncoder();
const dec = new TextDecoder();
const BODY = "Subject: hi\r\n\r\nline one\r\nline two\r\n";
const SESSION = "EHLO client\r\nMAIL FROM:<a@example.com>\r\n" +
  "RCPT TO:<b@example.com>\r\nRSET\r\nMAIL FROM:<a@example.com>\r\n" +
  "RCPT TO:<b@example.com>\r\nDATA\r\n" + BODY + ".\r\nQUIT\r\n";

/** Resolves on the next macrotask: every microtask before it has run. */
const settle = () => new Promise<void>((r) => setTimeout(r, 0));

/** A gate: a promise and its resolver. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => open = r);
  return { promise, open };
}

/**
 * A contract floor connection whose replies and hook calls are recorded
 * in `events` ("reply: ..." per write, "mail/rcpt hook", "message hook
 * done"), and the bodies its message hook read (each chunk kept).
 */
function recorder(hooks: { command?: () => Promise<void> } = {}) {
  const events: string[] = [];
  const bodies: Uint8Array[][] = [];
  const byteStreams: boolean[] = [];
  const s = contractState(
    (out: Uint8Array) => events.push(`reply: ${dec.decode(out)}`),
    {
      onCommand: async () => {
        events.push("mail/rcpt hook");
        await hooks.command?.();
      },
      onMessage: async (raw: ReadableStream<Uint8Array>) => {
        // A byte stream: a BYOB reader can be had (then let go).
        let byob = true;
        try {
          raw.getReader({ mode: "byob" }).releaseLock();
        } catch {
          byob = false;
        }
        byteStreams.push(byob);
        const chunks: Uint8Array[] = [];
        bodies.push(chunks);
        const reader = raw.getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          chunks.push(value);
        }
        events.push("message hook done");
      },
    },
  );
  return { s, events, bodies, byteStreams };
}

const text = (chunks: Uint8Array[]) =>
  chunks.map((c) => dec.decode(c)).join("");
const replies = (events: string[]) =>
  events.filter((e) => e.startsWith("reply: ")).map((e) => e.slice(7)).join(
    "",
  );

describe("bench/floor.mjs --contract (floor_feed.mjs's contractFeed)", () => {
  it("answers what the floor answers, with a hook awaited per MAIL and RCPT and the body read by the message hook", async () => {
    const bytes = enc.encode(SESSION);
    const floorReplies = dec.decode(feed(state(), bytes));
    const r = recorder();
    await contractFeed(r.s, bytes);
    assert.equal(replies(r.events), floorReplies);
    assert.equal(
      r.events.filter((e) => e === "mail/rcpt hook").length,
      4,
      "MAIL, RCPT, MAIL, RCPT; not RSET",
    );
    assert.deepEqual(r.byteStreams, [true]);
    assert.equal(r.bodies.length, 1);
    assert.equal(text(r.bodies[0]), BODY);
    // One write per read, after the message hook.
    assert.deepEqual(r.events.slice(-2), [
      "message hook done",
      `reply: ${floorReplies}`,
    ]);
  });

  it("gives the same replies and body when reads cut the session anywhere (but in the final dot line)", async () => {
    const bytes = enc.encode(SESSION);
    const floorReplies = dec.decode(feed(state(), bytes));
    const dot = SESSION.indexOf("\r\n.\r\n") + 2;
    for (let at = 1; at < bytes.length; at++) {
      const r = recorder();
      // Deno's loop: one read buffer, read into again once the feed is done.
      const buf = new Uint8Array(bytes.length);
      for (const part of [bytes.subarray(0, at), bytes.subarray(at)]) {
        buf.set(part);
        await contractFeed(r.s, buf.subarray(0, part.length));
        buf.fill(0x58); // what the next read would overwrite
      }
      assert.equal(replies(r.events), floorReplies, `cut at ${at}`);
      // The body's chunks are copies: overwriting the read buffer left them.
      const body = text(r.bodies[0]);
      if (at <= dot || at > dot + 3) assert.equal(body, BODY, `cut at ${at}`);
      else assert.ok(body.startsWith(BODY), `cut at ${at}`);
    }
  });

  it("sends the 250 after a MAIL only once the hook's promise resolves, and queues the reads that come meanwhile", async () => {
    const g = gate();
    const r = recorder({ command: () => g.promise });
    contractRead(r.s, enc.encode("EHLO client\r\n"));
    contractRead(r.s, enc.encode("MAIL FROM:<a@example.com>\r\n"));
    contractRead(r.s, enc.encode("NOOP\r\n"));
    await settle();
    assert.deepEqual(r.events, [
      `reply: 250-floor\r\n250-PIPELINING\r\n250 8BITMIME\r\n`,
      "mail/rcpt hook",
    ]);
    g.open();
    await settle();
    assert.deepEqual(r.events.slice(2), [
      "reply: 250 2.0.0 OK\r\n",
      "reply: 250 2.0.0 OK\r\n",
    ]);
    assert.equal(r.s.busy, false);
  });

  it("sends the 250 after the body only once the message hook has read it to the end", async () => {
    const g = gate();
    let read = "";
    const events: string[] = [];
    const s = contractState(
      (out: Uint8Array) => events.push(dec.decode(out)),
      {
        onMessage: async (raw: ReadableStream<Uint8Array>) => {
          const reader = raw.getReader();
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            read += dec.decode(value);
          }
          await g.promise;
        },
      },
    );
    contractRead(s, enc.encode("DATA\r\n"));
    contractRead(s, enc.encode("Subject: x\r\n\r\n"));
    contractRead(s, enc.encode("more\r\n.\r\n"));
    await settle();
    assert.deepEqual(events, ["354 Go ahead\r\n"]);
    assert.equal(read, "Subject: x\r\n\r\nmore\r\n");
    g.open();
    await settle();
    assert.deepEqual(events, ["354 Go ahead\r\n", "250 2.0.0 OK\r\n"]);
  });
});

/** A spread of these values, as the bench gives it. */
const sp = (...values: number[]) => spread(values);

const LOAD = {
  before: [1, 1, 1],
  after: [1, 1, 1],
  duringMean: 1,
  duringMax: 1,
  otherCores: 0.1,
  seconds: 10,
};

/** A workload result as bench/load_part.mjs's benchWorkloads() returns it, for node24. */
function workload(
  name: string,
  unit: string,
  ratios: Record<string, unknown>,
) {
  return {
    name,
    w: { desc: `${name} load`, messages: 100, size: 1024, unit },
    load: LOAD,
    skipped: [],
    together: null,
    rows: [{
      server: "smtpd",
      runtime: "node24",
      okRuns: 3,
      runs: 3,
      cpuS: sp(0.5),
      cpu: sp(50),
      user: sp(40),
      msgPerS: sp(9000),
      peakRssKb: 60_000,
      warmup: [60, 50],
      warmupVsMeasured: 1,
      errors: [],
    }],
    ratios: [{ runtime: "node24", reuseFloorNote: null, ...ratios }],
  };
}

describe("bench/common.mjs: CPU per thread (threadsCpuUs, threadsDelta)", () => {
  it("reads this process's threads, the main one marked, and gives the main thread's CPU per message apart", () => {
    const before = threadsCpuUs(process.pid);
    const main = [...before.values()].filter((t) => t.main);
    assert.equal(main.length, 1);
    assert.ok(main[0].us > 0);
    // Some CPU on the thread that runs this test: the main thread, except
    // under `deno test` (a runtime worker thread; `deno run` uses the main
    // one, as the bench does).
    let x = 0;
    const until = performance.now() + 20;
    while (performance.now() < until) x += Math.sqrt(x + 1);
    assert.ok(x > 0);
    const d = threadsDelta(before, threadsCpuUs(process.pid), 10);
    assert.ok(d.main >= 0, `main ${d.main}`);
    // Rounded to the nanosecond per message.
    assert.equal(d.byName.main, Math.round(d.main * 1000) / 1000);
    const sum = Object.values(d.byName).reduce((a, b) => a + b, 0);
    assert.ok(sum > 0, `all threads ${sum} µs per message`);
  });

  it("counts a thread that started between the readings from 0, leaves out idle ones, and has nothing for a process that is gone", () => {
    const t = (name: string, us: number, main = false) => ({ name, us, main });
    const before = new Map([["1", t("bun", 1000, true)]]);
    const after = new Map([
      ["1", t("bun", 3000, true)],
      ["2", t("HeapHelper", 400)],
      ["3", t("HeapHelper", 600)],
      ["4", t("JITWorker", 0)],
    ]);
    assert.deepEqual(threadsDelta(before, after, 100), {
      main: 20,
      byName: { main: 20, HeapHelper: 10 },
    });
    assert.equal(threadsCpuUs(2 ** 30).size, 0);
  });
});

describe("bench/workloads.mjs: when a server's warm-up ends (warmedUp)", () => {
  const flat = [40, 30, 25, 25, 25];
  it("ends once two batches in a row set no new low, within max", () => {
    assert.equal(warmedUp([40, 30]), false);
    assert.equal(warmedUp([40, 30, 25]), false);
    assert.equal(warmedUp(flat), true);
    const falling = Array.from(
      { length: WARMUP.max },
      (_, i) => 100 * 0.9 ** i,
    );
    assert.equal(warmedUp(falling.slice(0, -1)), false);
    assert.equal(warmedUp(falling), true);
  });

  it("goes on while either of the last two batches spent over 2 % of its CPU compiling, up to compilingMore batches past max", () => {
    // 25 µs a message: 0.5 µs (2 %) is still settled, 0.6 is not.
    assert.equal(warmedUp(flat, WARMUP, [5, 3, 1, 0.5, 0.5]), true);
    assert.equal(warmedUp(flat, WARMUP, [5, 3, 1, 0.6, 0]), false);
    assert.equal(warmedUp(flat, WARMUP, [5, 3, 1, 0, 0.6]), false);
    // Where no compiler thread is named, every batch reads 0.
    assert.equal(warmedUp(flat, WARMUP, [0, 0, 0, 0, 0]), true);
    // Without a figure per batch, the CPU criterion alone.
    assert.equal(warmedUp(flat, WARMUP, [1]), true);
    const n = WARMUP.max + WARMUP.compilingMore;
    const busy = Array.from({ length: n }, () => 3);
    assert.equal(
      warmedUp(Array(WARMUP.max).fill(25), WARMUP, busy.slice(0, WARMUP.max)),
      false,
    );
    assert.equal(warmedUp(Array(n - 1).fill(25), WARMUP, busy.slice(1)), false);
    assert.equal(warmedUp(Array(n).fill(25), WARMUP, busy), true);
  });

  it("warms W1 through at least 200 connections (10 batches of its 20 sessions), and W2 through 20,000 connections", () => {
    const w1 = { messages: 5000, sessions: 20, warmupConnections: 200 };
    assert.deepEqual(
      [warmupLimits(w1, "smtpd").min, warmupLimits(w1, "smtpd").max],
      [10, 13],
    );
    const w4 = { messages: 5400, sessions: 100 };
    assert.deepEqual(
      [warmupLimits(w4, "floor").min, warmupLimits(w4, "floor").max],
      [WARMUP.min, WARMUP.max],
    );
    const w2 = { messages: 2400, sessions: 20, warmupMin: 20000 };
    assert.equal(warmupLimits(w2, "smtpd").min, 9);
  });

  it("reads the compiler threads' CPU from a run's threads by name (Bun's JITWorker only)", () => {
    assert.equal(
      compilingUsPerMsg({
        threadsUsPerMsg: { main: 20, JITWorker: 1.5, HeapHelper: 0.9 },
      }),
      1.5,
    );
    assert.equal(
      compilingUsPerMsg({ threadsUsPerMsg: { main: 40, V8Worker: 4 } }),
      0,
    );
    assert.equal(compilingUsPerMsg({}), 0);
  });
});

describe("bench/report.mjs: the contract floor", () => {
  const w1 = workload("W1", "msg", {
    cpuVsFloor: sp(1.5, 1.4, 1.6),
    cpuVsContractFloor: sp(1.2, 1.1, 1.3),
    contractFloorVsFloor: sp(1.1, 1.05, 1.15),
  });
  const w3 = workload("W3", "MB", {
    cpuVsFloor: sp(1.3),
    cpuVsContractFloor: sp(1.2),
    contractFloorVsFloor: sp(1.08),
  });

  it("shows smtpd ÷ contract floor and contract floor ÷ floor (its share of the allowance) in the goal table", () => {
    const lines = goals([w1, w3], null);
    const header = lines.find((l) => l.startsWith("| goal |"));
    assert.ok(header?.includes("| smtpd ÷ contract floor |"), header);
    assert.ok(header?.includes("| contract floor ÷ floor |"), header);
    const row = lines.find((l) => l.startsWith("| W1 CPU/msg"));
    assert.ok(row, lines.join("\n"));
    const cells = row.split(" | ");
    assert.equal(cells[3], "1.20 [1.10–1.30]");
    assert.equal(cells[4], "1.10 [1.05–1.15]: 40 % of the 0.25 allowance");
    assert.equal(cells[5], "**missed** |");
  });

  it("says so when the contract floor alone misses a goal", () => {
    const row = goals([w1, w3], null).find((l) => l.startsWith("| W3 CPU/MB"));
    assert.ok(row);
    const cells = row.split(" | ");
    assert.equal(cells[4], "1.08: no allowance above the floor");
    assert.match(
      cells[5],
      /^\*\*missed\*\*; the contract floor alone is above the limit \(1\.08×\): the goal is below what the contract allows on this runtime \|$/,
    );
  });

  it("has the contract floor's columns in each workload's ratio table", () => {
    const lines = tables(null, [w1], null);
    const header = lines.find((l) => l.startsWith("| runtime | CPU/msg"));
    assert.ok(header, lines.join("\n"));
    const names = header.split(" | ");
    const row = lines.find((l) => l.startsWith("| node24 |"));
    assert.ok(row);
    const cells = row.split(" | ");
    assert.equal(cells.length, names.length);
    assert.equal(
      cells[names.indexOf("smtpd ÷ contract floor")],
      "1.20 [1.10–1.30]",
    );
    assert.equal(
      cells[names.indexOf("contract floor ÷ floor")],
      "1.10 [1.05–1.15]",
    );
  });
});

describe("bench/report.mjs: W2's re-warm", () => {
  const w2 = workload("W2", "conn", {
    cpuVsFloor: sp(1.3),
    cpuVsContractFloor: sp(1.2),
    contractFloorVsFloor: sp(1.08),
  });

  it("gives each server's re-warm batches per round after its warm-up batches", () => {
    const x = {
      ...w2,
      w: { ...w2.w, rewarm: true },
      rows: [{ ...w2.rows[0], rewarm: [1, 5, 1] }],
    };
    const lines = tables(null, [x], null);
    assert.ok(
      lines.some((l) =>
        l.includes("Before each measured run, unmeasured batches of 100")
      ),
      lines.join("\n"),
    );
    const row = lines.find((l) => l.startsWith("| smtpd | node24 |"));
    assert.ok(row, lines.join("\n"));
    assert.ok(
      row.includes(
        "| 60.0 → 50.0; re-warm before each round: 1, 5, 1 batches | 1.00 |",
      ),
      row,
    );
  });

  it("says nothing of a re-warm where the workload has none", () => {
    const lines = tables(null, [w2], null);
    assert.ok(!lines.some((l) => l.includes("re-warm")), lines.join("\n"));
    assert.ok(!lines.some((l) => l.includes("Before each measured run")));
  });
});

describe("bench/run.mjs's command line (flags.mjs argvProblem)", () => {
  it("takes every documented option", () => {
    assert.equal(argvProblem([]), null);
    assert.equal(
      argvProblem([
        "--full",
        "--runs",
        "3",
        "--only",
        "load,memory",
        "--runtimes",
        "deno,bun,node20,node24",
        "--servers",
        "smtpd,floor-contract,smtp-sink",
        "--workloads",
        "W1,W8",
        "--out",
        "/tmp/r.md",
        "--mem-runs",
        "2",
        "--big-runs",
        "4",
        "--no-write",
        "--messages",
        "100",
        "--lib",
        "dist",
        "--no-pin",
        "--interleave",
        "2",
      ]),
      null,
    );
    assert.equal(argvProblem(["--only", "bun,node24"]), null);
  });

  it("refuses an unknown option or name instead of running the default bench", () => {
    assert.match(argvProblem(["--help"])!, /unknown argument --help/);
    assert.match(argvProblem(["W2"])!, /unknown argument W2/);
    assert.match(argvProblem(["--runs"])!, /--runs needs a value/);
    assert.match(argvProblem(["--out", "--full"])!, /--out needs a value/);
    assert.match(
      argvProblem(["--runtimes", "bun,node"])!,
      /--runtimes: unknown "node"/,
    );
    assert.match(argvProblem(["--workloads", "W9"])!, /unknown "W9"/);
    assert.match(argvProblem(["--only", "load,speed"])!, /unknown "speed"/);
    assert.match(argvProblem(["--lib", "npm"])!, /--lib takes src or dist/);
  });
});

describe("bench/ab.mjs's command line (ab_flags.mjs abArgs)", () => {
  /** A tree with `files` (empty), removed by `done()`. */
  function tree(files: string[]): { dir: string; done: () => void } {
    const dir = mkdtempSync(join(tmpdir(), "smtpd-ab-"));
    for (const f of files) {
      mkdirSync(join(dir, f, ".."), { recursive: true });
      writeFileSync(join(dir, f), "");
    }
    return { dir, done: () => rmSync(dir, { recursive: true, force: true }) };
  }

  it("takes every documented option, with the workload's defaults", () => {
    const a = tree(["bench/server.mjs", "dist/mod.js"]);
    const b = tree(["bench/server.mjs", "dist/mod.js", "mod.ts"]);
    try {
      assert.deepEqual(abArgs(["--a", a.dir, "--b", b.dir]).options, {
        a: a.dir,
        b: b.dir,
        runtime: "bun",
        workload: "W1",
        rounds: 4,
        warm: AB_WORKLOADS.W1.warm,
        msgs: AB_WORKLOADS.W1.messages,
        pin: true,
      });
      assert.deepEqual(
        abArgs([
          "--a",
          a.dir,
          "--b",
          b.dir,
          "--runtime",
          "node24",
          "--workload",
          "W4",
          "--rounds",
          "2",
          "--warm",
          "0",
          "--msgs",
          "100",
          "--no-pin",
        ]).options,
        {
          a: a.dir,
          b: b.dir,
          runtime: "node24",
          workload: "W4",
          rounds: 2,
          warm: 0,
          msgs: 100,
          pin: false,
        },
      );
      assert.equal(
        abArgs(["--a", b.dir, "--b", b.dir, "--runtime", "deno"]).problem,
        undefined,
      );
    } finally {
      a.done();
      b.done();
    }
  });

  it("refuses an unknown option, a missing value, a bad name or count, a tree without its build", () => {
    const ok = tree(["bench/server.mjs", "dist/mod.js"]);
    const bare = tree(["bench/server.mjs", "mod.ts"]);
    const both = ["--a", ok.dir, "--b", ok.dir];
    const problem = (args: string[]) => abArgs(args).problem ?? "";
    try {
      assert.match(problem([...both, "--help"]), /unknown argument --help/);
      assert.match(problem([...both, "W4"]), /unknown argument W4/);
      assert.match(problem([...both, "--rounds"]), /--rounds needs a value/);
      assert.match(problem(["--a", "--b", ok.dir]), /--a needs a value/);
      assert.match(
        problem([...both, "--runtime", "node"]),
        /--runtime: unknown "node"/,
      );
      assert.match(
        problem([...both, "--workload", "W3"]),
        /--workload: unknown "W3"/,
      );
      assert.match(problem([...both, "--rounds", "0"]), /--rounds takes/);
      assert.match(problem([...both, "--msgs", "1e3x"]), /--msgs takes/);
      assert.match(problem([...both, "--warm", "-1"]), /--warm takes/);
      assert.match(problem(["--a", ok.dir]), /--b DIR is required/);
      assert.match(
        problem(["--a", ok.dir, "--b", bare.dir]),
        /--b .*: no dist\/mod\.js \(build it there/,
      );
      assert.match(
        problem(["--a", ok.dir, "--b", join(ok.dir, "nothing")]),
        /no bench\/server\.mjs/,
      );
    } finally {
      ok.done();
      bare.done();
    }
  });
});
