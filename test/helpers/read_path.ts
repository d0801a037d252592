// Helpers of the read path's tests (test/server_read_path.test.ts, and
// test/server_deno_ops.test.ts for Deno's ops): clients past DATA, bodies
// with dot-stuffed lines, a connection a listener accepted, and readers.
import assert from "node:assert/strict";
import * as net from "node:net";
import { listen } from "../../runtimes/node_net.ts";
import type { Connection } from "../../src/transport.ts";
import { type Client, connect } from "./client.ts";

const dec = new TextDecoder();

/**
 * Resumes the paused `client` and reads until the chunks of `sizes` came,
 * once `writes` settled: each in place, chunk i all bytes i + 1.
 */
export async function receiveInOrder(
  client: net.Socket,
  sizes: number[],
  writes: (void | Promise<void>)[],
): Promise<void> {
  const total = sizes.reduce((a, b) => a + b, 0);
  const got: Buffer[] = [];
  let bytes = 0;
  const all = new Promise<void>((resolve) => {
    client.on("data", (d: Buffer) => {
      got.push(d);
      if ((bytes += d.length) >= total) resolve();
    });
  });
  client.resume();
  await Promise.all(writes);
  await all;
  const data = Buffer.concat(got);
  assert.equal(data.length, total);
  let at = 0;
  for (let i = 0; i < sizes.length; i++) {
    const part = data.subarray(at, at += sizes[i]);
    assert.ok(part.every((b) => b === i + 1), `chunk ${i} in place`);
  }
}

/** Reads `stream` with a default reader, keeping every chunk until the end. */
export async function readKept(
  stream: ReadableStream<Uint8Array>,
): Promise<string> {
  const kept: Uint8Array[] = [];
  for await (const chunk of stream) kept.push(chunk);
  return kept.map((c) => dec.decode(c)).join("");
}

/** A body of `lines` numbered lines (some dot-stuffed on the wire). */
export function bodyOf(lines: number): { text: string; wire: string } {
  const out: string[] = ["Subject: read path\r\n", "\r\n"];
  for (let i = 0; i < lines; i++) {
    out.push(`${i % 7 === 0 ? "." : ""}line ${i} ${"x".repeat(i % 97)}\r\n`);
  }
  const text = out.join("");
  return { text, wire: text.replace(/^\./gm, "..") };
}

/** A client past the greeting, EHLO, MAIL, RCPT and DATA's 354. */
export async function openData(port: number): Promise<Client> {
  const c = await connect(port);
  await c.reply();
  await c.send(
    "EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n",
  );
  await c.replies(4);
  return c;
}

/** Sends `data` in pieces of the given sizes (cycling), each flushed. */
export async function sendInPieces(
  c: Client,
  data: string,
  sizes: readonly number[],
): Promise<void> {
  let at = 0;
  for (let i = 0; at < data.length; i++) {
    const n = sizes[i % sizes.length];
    await c.send(data.slice(at, at + n));
    at += n;
  }
}

/** A connection a listener accepted, with its connected client socket. */
export type Accepted = { conn: Connection; client: net.Socket; close(): void };

/**
 * The first connection `listenOn()` accepts (node:net's listen() by
 * default), with a connected client socket.
 */
export async function accepted(
  listenOn: typeof listen = listen,
): Promise<Accepted> {
  const listener = await listenOn({ hostname: "127.0.0.1", port: 0 });
  const client = net.connect({ port: listener.addr.port, host: "127.0.0.1" });
  const it = listener[Symbol.asyncIterator]();
  const { value: conn } = await it.next();
  return {
    conn: conn as Connection,
    client,
    close() {
      client.destroy();
      (conn as Connection).close(true);
      listener.close();
    },
  };
}
