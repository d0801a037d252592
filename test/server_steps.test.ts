// How many promise steps the driver takes between the application's answer
// and the reply it writes: a decision (RCPT) and the end of data are
// answered within a few microtask turns of their hook settling, and the end
// of data at once when onMessage settled before the body ended. Connections are in memory (the shims' read()/write() fast
// path), so that nothing but promise reactions runs in between; the counts
// are turns of the microtask queue, not time.
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
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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

describe("server: promise steps to a decision's reply", () => {
  it("answers RCPT within 2 microtask turns of onRcptTo settling", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    await withConnection({ onRcptTo: () => gate }, async (conn) => {
      conn.send(
        "HELO client.test\r\nMAIL FROM:<a@example.org>\r\n" +
          "RCPT TO:<b@example.org>\r\n",
      );
      // The driver now waits for onRcptTo.
      await sleep(5);
      assert.doesNotMatch(conn.replies, / 2\.1\.5 /);
      release();
      const turns = await turnsUntil(() => / 2\.1\.5 /.test(conn.replies));
      assert.ok(turns <= 2, `the 250 came ${turns} turns after onRcptTo`);
    });
  });
});

describe("server: promise steps to the end-of-data reply", () => {
  it("answers within 2 microtask turns of onMessage settling", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    await withMessage({ onMessage: () => gate }, async (conn) => {
      conn.send("Subject: steps\r\n\r\nbody\r\n.\r\n");
      // The driver now waits at the end of data.
      await sleep(5);
      assert.equal(accepted(conn), false);
      release();
      const turns = await turnsUntil(() => accepted(conn));
      assert.ok(turns <= 2, `the 250 came ${turns} turns after onMessage`);
    });
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
