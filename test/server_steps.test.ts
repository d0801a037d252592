// How many promise steps the driver takes between the application's answer
// and the reply it writes: a decision (RCPT) and the end of data are
// answered within a few microtask turns of their hook settling, and the end
// of data at once when onMessage settled before the body ended. Connections are in memory (the shims' read()/write() fast
// path), so that nothing but promise reactions runs in between; the counts
// are turns of the microtask queue, not time.
import { setTimeout as sleep } from "node:timers/promises";
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createServer } from "../src/server.ts";
import {
  ConnectionQueue,
  InputQueue,
  ShimConnection,
} from "../src/shim_kit.ts";
import type { NetAddress } from "../src/transport.ts";
import type { ServeOptions } from "../mod.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A connection whose input the test pushes and whose replies it keeps. */
class MemoryConnection extends ShimConnection {
  readonly input = new InputQueue({ pause() {}, resume() {} });
  replies = "";
  read(): Uint8Array | null | Promise<Uint8Array | null> {
    return this.input.read();
  }
  write(bytes: Uint8Array): void {
    this.replies += dec.decode(bytes);
  }
  close(): void {
    this.input.end();
  }
  send(text: string): void {
    this.input.push(enc.encode(text));
  }
  protected peerAddr(): NetAddress {
    return { hostname: "127.0.0.1", port: 40000 };
  }
  protected ownAddr(): NetAddress {
    return { hostname: "127.0.0.1", port: 25 };
  }
}

/** Runs `fn` with one in-memory connection to a server made with `options`. */
async function withConnection(
  options: ServeOptions,
  fn: (conn: MemoryConnection) => Promise<void>,
): Promise<void> {
  const queue = new ConnectionQueue();
  const server = await createServer(
    () =>
      Promise.resolve({
        addr: { hostname: "127.0.0.1", port: 25 },
        close: () => void queue.close(),
        [Symbol.asyncIterator]: () => queue[Symbol.asyncIterator](),
      }),
    "memory",
    { serverName: "steps.test", ...options },
  );
  const conn = new MemoryConnection(null);
  try {
    queue.push(conn);
    await fn(conn);
  } finally {
    conn.close();
    await server.close();
  }
}

/**
 * Runs `fn` with one in-memory connection to a server made with `options`,
 * greeted and past its transaction's DATA (354 received).
 */
function withMessage(
  options: ServeOptions,
  fn: (conn: MemoryConnection) => Promise<void>,
): Promise<void> {
  return withConnection(options, async (conn) => {
    conn.send(
      "HELO client.test\r\nMAIL FROM:<a@example.org>\r\n" +
        "RCPT TO:<b@example.org>\r\nDATA\r\n",
    );
    for (let i = 0; i < 100 && !conn.replies.includes("354 "); i++) {
      await sleep(1);
    }
    assert.match(conn.replies, /354 /);
    await fn(conn);
  });
}

/** Microtask turns until `done()` (at most 50). */
async function turnsUntil(done: () => boolean): Promise<number> {
  let turns = 0;
  while (!done() && turns < 50) {
    await Promise.resolve();
    turns++;
  }
  return turns;
}

const accepted = (conn: MemoryConnection) =>
  / OK [0-9a-z]+\r\n/.test(conn.replies);

/**
 * Microtask turns from the moment onRcptTo's promise settles to the
 * moment the RCPT reply is written (the driver waits for the hook first).
 */
function rcptTurns(): Promise<number> {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let turns = -1;
  return withConnection({ onRcptTo: () => gate }, async (conn) => {
    conn.send(
      "HELO client.test\r\nMAIL FROM:<a@example.org>\r\n" +
        "RCPT TO:<b@example.org>\r\n",
    );
    // The driver now waits for onRcptTo.
    await sleep(5);
    assert.doesNotMatch(conn.replies, / 2\.1\.5 /);
    release();
    turns = await turnsUntil(() => / 2\.1\.5 /.test(conn.replies));
  }).then(() => turns);
}

/**
 * Microtask turns from the moment onMessage's promise settles to the
 * moment the end-of-data reply is written (the driver waits at the end
 * of data first).
 */
function messageTurns(): Promise<number> {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let turns = -1;
  return withMessage({ onMessage: () => gate }, async (conn) => {
    conn.send("Subject: steps\r\n\r\nbody\r\n.\r\n");
    await sleep(5);
    assert.equal(accepted(conn), false);
    release();
    turns = await turnsUntil(() => accepted(conn));
  }).then(() => turns);
}

describe("server: promise steps to a decision's reply", () => {
  it("answers RCPT within 2 microtask turns of onRcptTo settling", async () => {
    const turns = await rcptTurns();
    assert.ok(turns <= 2, `the 250 came ${turns} turns after onRcptTo`);
  });

  it("answers RCPT in the turn after onRcptTo's promise settles", async () => {
    // The driver's reaction on the hook's promise writes the reply.
    const turns = await rcptTurns();
    assert.equal(turns, 1, `the 250 came ${turns} turns after onRcptTo`);
  });
});

describe("server: promise steps to the end-of-data reply", () => {
  it("answers within 2 microtask turns of onMessage settling", async () => {
    const turns = await messageTurns();
    assert.ok(turns <= 2, `the 250 came ${turns} turns after onMessage`);
  });

  it("answers in the turn after onMessage's promise settles (no wait of the driver's own in between)", async () => {
    // The driver's reaction on the hook's promise runs in the first
    // turn, and writes the 250 there.
    const turns = await messageTurns();
    assert.equal(turns, 1, `the 250 came ${turns} turns after onMessage`);
  });

  it("answers in the turn the body ends when onMessage settled before", async () => {
    await withMessage({ onMessage: () => Promise.resolve() }, async (conn) => {
      // onMessage has settled long before the body ends.
      await sleep(5);
      conn.send("Subject: steps\r\n\r\nbody\r\n.\r\n");
      const turns = await turnsUntil(() => accepted(conn));
      assert.ok(turns <= 2, `the 250 came ${turns} turns after the body`);
    });
  });
});

describe("server: the clock at the end of data", () => {
  it("is read once for the chunk that ends the body, the hook deadline taken from that reading", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let reads = -1;
    await withMessage(
      { onMessage: () => gate, hookTimeout: 60_000 },
      async (conn) => {
        const clock = Date.now;
        let n = 0;
        Date.now = () => (n++, clock());
        try {
          conn.send("Subject: clock\r\n\r\nbody\r\n.\r\n");
          // The driver takes the chunk and waits for onMessage, its hook
          // deadline set (the shared timer armed for it).
          await turnsUntil(() => false);
        } finally {
          Date.now = clock;
        }
        reads = n;
        assert.equal(accepted(conn), false);
        release();
        await turnsUntil(() => accepted(conn));
        assert.equal(accepted(conn), true);
      },
    );
    // One for the chunk (the engine's time), one to arm the shared timer.
    assert.equal(reads, 2);
  });
});

/** A connection whose writes fail once `failAfter` replies went out. */
class FailingConnection extends MemoryConnection {
  failAfter = Infinity;
  override write(bytes: Uint8Array): void {
    if (this.failAfter-- <= 0) throw new Error("peer gone");
    super.write(bytes);
  }
}

describe("server: a session that waited for reads and hooks ends once", () => {
  const cases: {
    name: string;
    reason: string;
    run: (conn: FailingConnection) => Promise<void>;
  }[] = [
    {
      name: "QUIT in a read it waited for",
      reason: "quit",
      run: async (conn) => {
        await exchange(conn);
        conn.send("QUIT\r\n");
      },
    },
    {
      name: "the end of input while it waits for a read",
      reason: "eof",
      run: async (conn) => {
        await exchange(conn);
        conn.close();
      },
    },
    {
      name: "a write that fails after a message",
      reason: "error",
      run: async (conn) => {
        await exchange(conn);
        conn.failAfter = 0;
        conn.send("NOOP\r\n");
      },
    },
  ];
  for (const { name, reason, run } of cases) {
    it(name, async () => {
      const closes: string[] = [];
      let onClose = 0;
      const queue = new ConnectionQueue();
      const server = await createServer(
        () =>
          Promise.resolve({
            addr: { hostname: "127.0.0.1", port: 25 },
            close: () => void queue.close(),
            [Symbol.asyncIterator]: () => queue[Symbol.asyncIterator](),
          }),
        "memory",
        {
          serverName: "steps.test",
          // A promise per decision and message: the loop waits for each.
          onMailFrom: () => Promise.resolve(),
          async onMessage(message) {
            await message.text();
          },
          onClose: () => void onClose++,
          logger: (e) => {
            if (e.type === "close") closes.push(e.reason);
          },
        },
      );
      const conn = new FailingConnection(null);
      try {
        queue.push(conn);
        await run(conn);
        for (let i = 0; i < 100 && closes.length === 0; i++) await sleep(1);
        // Anything late would come within these turns.
        await sleep(5);
        assert.deepEqual(closes, [reason]);
        assert.equal(onClose, 1);
        // One session ended, counted once, by how it ended.
        const ended = server.stats().find((f) =>
          f.name === "smtpd_sessions_total"
        )!.series.filter((x) => x.value !== 0);
        assert.deepEqual(
          ended.map((x) => [x.labels.outcome, x.value]),
          [[reason, 1]],
        );
      } finally {
        conn.close();
        await server.close();
      }
    });
  }
});

/**
 * Two messages, each command sent in a read of its own after the reply
 * to the one before: the session waits for every read.
 */
async function exchange(conn: MemoryConnection): Promise<void> {
  const lines = ["HELO client.test\r\n"];
  for (let i = 0; i < 2; i++) {
    lines.push(
      "MAIL FROM:<a@example.org>\r\n",
      "RCPT TO:<b@example.org>\r\n",
      "DATA\r\n",
      "Subject: once\r\n\r\nbody\r\n.\r\n",
    );
  }
  let seen = 0;
  for (const line of lines) {
    // The greeting, then one reply per line.
    await waitFor(() => replyCount(conn.replies) > seen);
    seen++;
    conn.send(line);
  }
  await waitFor(() => replyCount(conn.replies) > seen);
}

/** Final replies so far (a space after the code). */
function replyCount(replies: string): number {
  return replies.split("\r\n").filter((l) => /^\d{3} /.test(l)).length;
}

async function waitFor(ok: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !ok(); i++) await sleep(1);
  assert.ok(ok(), "no reply");
}
