// The read path of each runtime (node:net's `onread` into buffers of the
// connection's own on Node, `Deno.Conn.read` into one buffer on Deno, and
// the `data` path elsewhere or when turned off), and `message.raw` as a
// byte stream over a real server: chunks lent by the shim must never reach
// the application or outlive the read (pipelined commands and bodies that
// cross read boundaries, BDAT, BYOB and default readers, a reader that
// cancels mid-body). Deno's read and write ops: server_deno_ops.test.ts.
import assert from "node:assert/strict";
import * as net from "node:net";
import { after, describe, it } from "node:test";
import { type Message, serve, SmtpError } from "../mod.ts";
import { listen, useReusedReadBuffers } from "../runtimes/node_net.ts";
import { createServer } from "../src/server.ts";
import type { ReadWaiter } from "../src/shim_kit.ts";
import type { Connection } from "../src/transport.ts";
import { type Client, connect } from "./helpers/client.ts";
import {
  type Accepted,
  accepted,
  bodyOf,
  openData,
  readKept,
  receiveInOrder,
  sendInPieces,
} from "./helpers/read_path.ts";
import { RUNTIME } from "./helpers/run.ts";

const dec = new TextDecoder();

after(() => useReusedReadBuffers(true));

/** Reads `stream` with a BYOB reader into one buffer of `size` bytes. */
async function readByob(
  stream: ReadableStream<Uint8Array>,
  size: number,
): Promise<string> {
  const reader = stream.getReader({ mode: "byob" });
  let buf = new ArrayBuffer(size);
  let out = "";
  for (;;) {
    const { done, value } = await reader.read(new Uint8Array(buf));
    if (value !== undefined) buf = value.buffer as ArrayBuffer;
    if (done) return out;
    out += dec.decode(value, { stream: true });
  }
}

/** Reads until `want` bytes came; returns the chunks as read (views kept). */
async function readChunks(
  conn: Connection,
  client: net.Socket,
  pieces: readonly string[],
): Promise<Uint8Array[]> {
  const chunks: Uint8Array[] = [];
  for (const piece of pieces) {
    client.write(piece);
    const chunk = await conn.read!();
    assert.ok(chunk !== null);
    assert.equal(dec.decode(chunk), piece);
    chunks.push(chunk);
  }
  return chunks;
}

/** Ids of the ArrayBuffers seen by memoryOf(). */
const bufferIds = new Map<ArrayBufferLike, number>();

/**
 * Where a chunk's bytes are: its ArrayBuffer and offset (small read
 * buffers are views of shared slabs, so the ArrayBuffer alone does not
 * tell two buffers apart).
 */
function memoryOf(c: Uint8Array): string {
  let id = bufferIds.get(c.buffer);
  if (id === undefined) bufferIds.set(c.buffer, id = bufferIds.size);
  return `${id}@${c.byteOffset}`;
}

/** A 1–4 KiB DATA body with its end. */
const BODY = bodyOf(40).wire + ".\r\n";

/**
 * `c` reads DATA, is told a body is coming (expectBody()) and reads
 * `body`, sent whole: returns the chunk (one read) and the DATA chunk.
 */
async function readBody(
  c: Accepted,
  body = BODY,
): Promise<{ chunk: Uint8Array; data: Uint8Array }> {
  const [data] = await readChunks(c.conn, c.client, ["DATA\r\n"]);
  c.conn.expectBody?.();
  c.client.write(body);
  const chunk = await c.conn.read!();
  assert.ok(chunk !== null);
  assert.equal(dec.decode(chunk), body);
  return { chunk, data };
}

/**
 * A body announced with expectBody() comes in one read, into a buffer
 * other than the chunk lent before, which stays as it was; commands after
 * it still come through.
 */
async function bodyInOneRead(open: () => Promise<Accepted>): Promise<void> {
  const a = await open();
  try {
    assert.ok(BODY.length > 1024 && BODY.length < 4096);
    const { chunk, data } = await readBody(a);
    assert.equal(dec.decode(data), "DATA\r\n", "the lent chunk stays");
    assert.notEqual(memoryOf(chunk), memoryOf(data));
    await readChunks(a.conn, a.client, ["QUIT\r\n", "NOOP\r\n"]);
  } finally {
    a.close();
  }
}

/**
 * Connection `a` reads a body and waits for a command; connection `b`'s
 * body then goes into the buffer of `a`'s body. Returns `a`'s pending
 * read and its body chunk, for the caller's checks; closes both after.
 */
async function bodyBufferPassesOn(
  open: () => Promise<Accepted>,
  then: (
    a: Accepted,
    next: Promise<Uint8Array | null>,
    chunk: Uint8Array,
  ) => Promise<void>,
  body = BODY,
): Promise<void> {
  const a = await open();
  const b = await open();
  try {
    const { chunk } = await readBody(a, body);
    // The driver is done with the body and waits for a command.
    const next = Promise.resolve(a.conn.read!());
    const { chunk: other } = await readBody(b, body);
    assert.equal(memoryOf(other), memoryOf(chunk), "the body's buffer");
    await then(a, next, chunk);
  } finally {
    a.close();
    b.close();
  }
}

describe("read path", () => {
  const onNode = RUNTIME === "node";

  it(`accepted node:net sockets read with ${onNode ? "onread" : "the data path"} here, and with the data path when turned off`, async () => {
    for (const on of [true, false]) {
      useReusedReadBuffers(on);
      const a = await accepted();
      try {
        const path = (a.conn as Connection & { readPath?: string }).readPath;
        assert.equal(path, on && onNode ? "onread" : "data", `turned ${on}`);
        // Either way the bytes come through, read after read.
        await readChunks(a.conn, a.client, ["EHLO a\r\n", "NOOP\r\n"]);
      } finally {
        a.close();
        useReusedReadBuffers(true);
      }
    }
  });

  it("onread reads go into two buffers of the connection's own, taking turns", {
    skip: !onNode,
  }, async () => {
    const a = await accepted();
    try {
      const chunks = await readChunks(a.conn, a.client, [
        "EHLO a\r\n",
        "MAIL FROM:<a@b.test>\r\n",
        "RCPT TO:<c@d.test>\r\n",
        "NOOP\r\n",
      ]);
      const buffers = new Set(chunks.map(memoryOf));
      assert.equal(buffers.size, 2);
      assert.notEqual(memoryOf(chunks[0]), memoryOf(chunks[1]));
      assert.equal(memoryOf(chunks[0]), memoryOf(chunks[2]));
    } finally {
      a.close();
    }
  });

  it(
    "onread: a waiter that takes each read in node:net's callback and asks for the next there gets every read in one buffer, and a body it announces there in one read",
    {
      skip: !onNode,
    },
    async () => {
      const a = await accepted();
      try {
        const conn = a.conn as Connection & {
          readOr(waiter: ReadWaiter): Uint8Array | null | undefined;
        };
        const reads: { text: string; memory: string }[] = [];
        let came: (() => void) | null = null;
        let announce = false;
        let later = 0;
        const waiter: ReadWaiter = {
          // The end of input (the client gone) comes this way, a read never.
          onRead: (chunk) => void (chunk !== null && later++),
          onReadInTask(chunk) {
            assert.ok(chunk !== null);
            reads.push({ text: dec.decode(chunk), memory: memoryOf(chunk) });
            if (announce) conn.expectBody?.();
            announce = false;
            // Done with the chunk: asks for the next read before returning.
            assert.equal(conn.readOr(waiter), undefined);
            came?.();
          },
        };
        assert.equal(conn.readOr(waiter), undefined);
        /** Sends `piece`; resolves with the reads it came in. */
        const send = async (piece: string) => {
          const from = reads.length;
          a.client.write(piece);
          while (reads.slice(from).map((r) => r.text).join("") !== piece) {
            await new Promise<void>((r) => came = r);
          }
          return reads.slice(from);
        };
        const ehlo = await send("EHLO a\r\n");
        const mail = await send("MAIL FROM:<a@b.test>\r\n");
        announce = true;
        const noop = await send("NOOP\r\n");
        const body = await send(BODY);
        const rset = await send("RSET\r\n");
        // The socket reads into the buffer just read from again.
        assert.equal(mail[0].memory, ehlo[0].memory);
        assert.equal(noop[0].memory, ehlo[0].memory);
        // Told of a body in the callback: the whole body in one read.
        assert.equal(body.length, 1);
        assert.notEqual(body[0].memory, ehlo[0].memory);
        assert.equal(rset.length, 1);
        assert.equal(later, 0);
      } finally {
        a.close();
      }
    },
  );

  it(
    "onread: a connection keeps its input, buffers and addresses in itself: the socket keeps no address object and one end listener",
    {
      skip: !onNode,
    },
    async () => {
      const a = await accepted();
      try {
        await readChunks(a.conn, a.client, ["EHLO a\r\n"]);
        assert.equal(a.conn.remoteAddr.hostname, "127.0.0.1");
        assert.equal(a.conn.remoteAddr.port, a.client.localPort);
        assert.equal(a.conn.localAddr.port, a.client.remotePort);
        const sock = (a.conn as Connection & { sock: net.Socket }).sock;
        // Asked from the handle: node:net's remoteAddress keeps `_peername`.
        assert.equal(
          (sock as net.Socket & { _peername?: object })._peername,
          undefined,
        );
        // node:net's own "end" listener (a no-op with allowHalfOpen) is
        // replaced: one listener, not an array of two.
        assert.equal(sock.listenerCount("end"), 1);
        // No input, sizer or address object of its own besides the socket.
        for (const value of Object.values(a.conn)) {
          assert.ok(
            value === null || typeof value !== "object" || value === sock,
            `a field holds ${value?.constructor?.name}`,
          );
        }
        // A client's FIN still ends the input (the replaced listener).
        a.client.end();
        assert.equal(await a.conn.read!(), null);
      } finally {
        a.close();
      }
    },
  );

  it(
    "onread: every connection asks node:net for its next buffer through one shared function",
    {
      skip: !onNode,
    },
    async () => {
      const a = await accepted();
      const b = await accepted();
      try {
        await readChunks(a.conn, a.client, ["EHLO a\r\n", "NOOP\r\n"]);
        await readChunks(b.conn, b.client, ["EHLO b\r\n"]);
        const gen = (c: Connection) => {
          const sock = (c as Connection & { sock: object }).sock;
          const slot = Object.getOwnPropertySymbols(sock).find((s) =>
            s.description === "kBufferGen"
          )!;
          return (sock as Record<symbol, unknown>)[slot];
        };
        assert.equal(typeof gen(a.conn), "function");
        // No closure per connection (an idle session keeps it).
        assert.equal(gen(a.conn), gen(b.conn));
        // Each still reads into buffers of its own.
        await readChunks(a.conn, a.client, ["MAIL FROM:<a@b.test>\r\n"]);
        await readChunks(b.conn, b.client, ["NOOP\r\n", "RSET\r\n"]);
      } finally {
        a.close();
        b.close();
      }
    },
  );

  it("close() destroys the socket once its replies went out, through one listener every connection shares", async () => {
    const a = await accepted();
    const b = await accepted();
    try {
      const closed = (c: Connection) => {
        const sock = (c as Connection & { sock: net.Socket }).sock;
        return new Promise<net.Socket>((resolve) =>
          sock.once("close", () => resolve(sock))
        );
      };
      const gone = [closed(a.conn), closed(b.conn)];
      const got: string[] = [];
      a.client.on("data", (d) => got.push(dec.decode(d)));
      a.conn.write!(new TextEncoder().encode("221 bye\r\n"));
      a.conn.close();
      b.conn.close();
      const finish = (c: Connection) =>
        (c as Connection & { sock: net.Socket }).sock.listeners("finish");
      // No closure per connection: the same function on both sockets.
      assert.equal(finish(a.conn).length, 1);
      assert.equal(finish(a.conn)[0], finish(b.conn)[0]);
      // Both sockets are destroyed without the clients closing theirs.
      for (const sock of await Promise.all(gone)) {
        assert.equal(sock.destroyed, true);
      }
      await new Promise((r) => a.client.once("end", r));
      assert.equal(got.join(""), "221 bye\r\n");
    } finally {
      a.close();
      b.close();
    }
  });

  it(
    "idle connections' small read buffers are views of one shared slab, not an ArrayBuffer each",
    {
      skip: !onNode && RUNTIME !== "deno",
    },
    async () => {
      const open = onNode
        ? listen
        : (await import("../runtimes/deno.ts")).listen;
      const listener = await open({ hostname: "127.0.0.1", port: 0 });
      const it = listener[Symbol.asyncIterator]();
      const clients: net.Socket[] = [];
      const conns: Connection[] = [];
      try {
        for (let i = 0; i < 2; i++) {
          clients.push(
            net.connect({ port: listener.addr.port, host: "127.0.0.1" }),
          );
          conns.push((await it.next()).value as Connection);
        }
        const [a] = await readChunks(conns[0], clients[0], ["EHLO a\r\n"]);
        const [b] = await readChunks(conns[1], clients[1], ["EHLO b\r\n"]);
        assert.equal(a.buffer, b.buffer);
        assert.notEqual(a.byteOffset, b.byteOffset);
      } finally {
        for (const c of clients) c.destroy();
        for (const c of conns) c.close(true);
        listener.close();
      }
    },
  );

  it(
    "Deno's read buffer grows after a read that fills it and shrinks back after 8 small reads",
    {
      skip: RUNTIME !== "deno",
    },
    async () => {
      const { listen: denoListen } = await import("../runtimes/deno.ts");
      const listener = await denoListen({ hostname: "127.0.0.1", port: 0 });
      const client = net.connect({
        port: listener.addr.port,
        host: "127.0.0.1",
      });
      const { value: conn } = await listener[Symbol.asyncIterator]().next();
      try {
        const line = (n: number) => "x".repeat(n - 2) + "\r\n";
        const chunks = await readChunks(conn as Connection, client, [
          line(256), // fills the 256-byte buffer: the next one is 1024
          line(300), // more than 256: no small read
          ...Array.from({ length: 8 }, () => "NOOP\r\n"), // 8 small reads
          "NOOP\r\n",
        ]);
        // The buffer each chunk was read into: a small one is a MIN_READ
        // view of a shared slab (its ArrayBuffer is the slab), a larger one
        // an ArrayBuffer of its own.
        const capacity = (c: Uint8Array) =>
          c.byteOffset % 256 === 0 && c.buffer.byteLength > 1024
            ? 256
            : c.buffer.byteLength;
        assert.deepEqual(
          chunks.map(capacity),
          [256, 1024, 1024, 1024, 1024, 1024, 1024, 1024, 1024, 1024, 256],
        );
      } finally {
        client.destroy();
        (conn as Connection).close(true);
        listener.close();
      }
    },
  );

  it(
    "Deno writes run one after the other, whole, while the client does not read, and leave the chunks as they were",
    {
      skip: RUNTIME !== "deno",
      timeout: 20_000,
    },
    async () => {
      const { listen: denoListen } = await import("../runtimes/deno.ts");
      const listener = await denoListen({ hostname: "127.0.0.1", port: 0 });
      const client = net.connect({
        port: listener.addr.port,
        host: "127.0.0.1",
      });
      client.pause();
      const { value: conn } = await listener[Symbol.asyncIterator]().next();
      try {
        // More than the sockets' buffers hold: conn.write takes part of a
        // chunk, and the writes after it wait.
        // The first larger than the sockets' buffers hold at once.
        const sizes = [16 * 1024 * 1024, ...Array(7).fill(512 * 1024)];
        const chunks = sizes.map((n, i) => new Uint8Array(n).fill(i + 1));
        const writes = chunks.map((c) => (conn as Connection).write!(c));
        await receiveInOrder(client, sizes, writes);
        for (let i = 0; i < chunks.length; i++) {
          assert.ok(
            chunks[i].every((b) => b === i + 1),
            `chunk ${i} unchanged`,
          );
          assert.equal(chunks[i].byteLength, sizes[i]);
        }
        // A write after the others ended goes out alone.
        await (conn as Connection).write!(new Uint8Array([10]));
      } finally {
        client.destroy();
        (conn as Connection).close(true);
        listener.close();
      }
    },
  );

  it(
    "Deno: a connection's read buffers go to the next connection once the driver is done with its chunks and its read ended",
    {
      skip: RUNTIME !== "deno",
    },
    async () => {
      const a = await denoAccepted();
      const b = await denoAccepted();
      try {
        // The body and the next command in one read: the read after it
        // goes into the same (body-sized) buffer.
        const { chunk } = await readBody(a, BODY + "QUIT\r\n");
        const last = a.conn.read!();
        (a.conn as Connection & { readDone(): void }).readDone();
        a.conn.close();
        assert.equal(await last, null);
        const { chunk: other } = await readBody(b);
        assert.equal(memoryOf(other), memoryOf(chunk));
      } finally {
        a.close();
        b.close();
      }
    },
  );

  it(
    "Deno: a write with none pending needs no promise, the next one waits for it, and close() lets them go out first",
    { skip: RUNTIME !== "deno", timeout: 20_000 },
    async () => {
      const a = await denoAccepted();
      a.client.pause();
      try {
        // More than the sockets' buffers hold: still pending at close().
        const big = new Uint8Array(16 * 1024 * 1024).fill(1);
        assert.equal(a.conn.write!(big), undefined);
        const next = a.conn.write!(new Uint8Array([2, 2, 2]));
        assert.ok(next instanceof Promise);
        a.conn.close();
        const got: Buffer[] = [];
        const ended = new Promise<void>((resolve) => {
          a.client.on("data", (d: Buffer) => got.push(d));
          a.client.once("end", resolve);
        });
        a.client.resume();
        await ended;
        await next;
        const data = Buffer.concat(got);
        assert.equal(data.length, big.byteLength + 3);
        assert.ok(data.subarray(0, big.byteLength).every((b) => b === 1));
        assert.deepEqual([...data.subarray(big.byteLength)], [2, 2, 2]);
      } finally {
        a.close();
      }
    },
  );

  it("Deno reads into one buffer of the connection's own", {
    skip: RUNTIME !== "deno",
  }, async () => {
    const { listen: denoListen } = await import("../runtimes/deno.ts");
    const listener = await denoListen({ hostname: "127.0.0.1", port: 0 });
    const client = net.connect({
      port: listener.addr.port,
      host: "127.0.0.1",
    });
    const { value: conn } = await listener[Symbol.asyncIterator]().next();
    try {
      const chunks = await readChunks(conn as Connection, client, [
        "EHLO a\r\n",
        "NOOP\r\n",
        "NOOP\r\n",
      ]);
      assert.equal(new Set(chunks.map(memoryOf)).size, 1);
    } finally {
      client.destroy();
      (conn as Connection).close(true);
      listener.close();
    }
  });

  /** accepted() on Deno's own listener (runtimes/deno.ts). */
  async function denoAccepted(): Promise<Accepted> {
    const { listen: denoListen } = await import("../runtimes/deno.ts");
    return accepted(denoListen);
  }

  it(
    "Deno: a body announced with expectBody() comes in one read, into a buffer other than the chunk lent before",
    {
      skip: RUNTIME !== "deno",
    },
    () => bodyInOneRead(denoAccepted),
  );

  it(
    "Deno: after a body's end the next read goes into a small buffer, and the body's to the next connection's body",
    {
      skip: RUNTIME !== "deno",
    },
    () =>
      bodyBufferPassesOn(denoAccepted, async (a, next, chunk) => {
        // The session waited for a command (idle, say): a small buffer.
        a.client.write("x".repeat(300) + "\r\n");
        const line = await next;
        assert.ok(line !== null);
        assert.equal(line.byteLength, 256, "a small buffer");
        assert.notEqual(memoryOf(line), memoryOf(chunk));
      }),
  );

  it(
    "Deno: a 4–16 KiB body announced with expectBody() comes in one read, and its buffer goes to the next connection's body",
    {
      skip: RUNTIME !== "deno",
    },
    () => {
      const body = bodyOf(200).wire + ".\r\n";
      assert.ok(body.length > 4096 && body.length < 16384);
      return bodyBufferPassesOn(denoAccepted, async (a, next, chunk) => {
        assert.equal(chunk.buffer.byteLength, 16384, "a 16 KiB buffer");
        a.client.write("QUIT\r\n");
        const line = await next;
        assert.ok(line !== null);
        assert.equal(line.byteLength, 6);
        assert.notEqual(memoryOf(line), memoryOf(chunk));
      }, body);
    },
  );

  it(
    "onread: a connection's read buffers go to the next connections once it is done with its chunks and its socket closed, not before",
    { skip: !onNode },
    async () => {
      const listener = await listen({ hostname: "127.0.0.1", port: 0 });
      const it = listener[Symbol.asyncIterator]();
      const open = async () => {
        const client = net.connect({
          port: listener.addr.port,
          host: "127.0.0.1",
        });
        const conn = (await it.next()).value as Connection & {
          sock: net.Socket;
          readDone(): void;
        };
        return { client, conn };
      };
      const line = (n: number) => "x".repeat(n - 2) + "\r\n";
      /** The memory of the 1 KiB buffers a connection reads into. */
      const kib = async (c: { client: net.Socket; conn: Connection }) =>
        (await readChunks(c.conn, c.client, [
          line(256), // fills the small buffer: the next one is 1 KiB
          line(300), // more than a small one: the other one is 1 KiB too
          "NOOP\r\n",
        ])).slice(1).map(memoryOf);
      const all: { client: net.Socket; conn: Connection }[] = [];
      try {
        const a = await open();
        all.push(a);
        const aKib = await kib(a);
        assert.equal(new Set(aKib).size, 2);
        // Done with its chunks, its socket still open (it may still read
        // into one of them): nobody gets them yet.
        a.conn.readDone();
        const b = await open();
        all.push(b);
        const bKib = await kib(b);
        assert.ok(bKib.every((m) => !aKib.includes(m)), "not reused yet");
        const closed = new Promise((r) => a.conn.sock.once("close", r));
        a.client.destroy();
        a.conn.close();
        await closed;
        // Now the next connection reads into them.
        const c = await open();
        all.push(c);
        assert.deepEqual((await kib(c)).sort(), [...aKib].sort());
        // A closed connection whose reader did not say it is done keeps
        // them (its last chunk may still be in use).
        const closedB = new Promise((r) => b.conn.sock.once("close", r));
        b.client.destroy();
        b.conn.close();
        await closedB;
        const d = await open();
        all.push(d);
        const dKib = await kib(d);
        assert.ok(dKib.every((m) => !bKib.includes(m)), "b's not reused");
      } finally {
        for (const { client, conn } of all) {
          client.destroy();
          conn.close(true);
        }
        listener.close();
      }
    },
  );

  it(
    "onread: a body announced with expectBody() comes in one read, into a buffer other than the chunk lent before",
    { skip: !onNode },
    () => bodyInOneRead(accepted),
  );

  it(
    "onread: after a read that ends with DATA the body's buffer is in place, so expectBody() gives the handle no new buffer (each useUserBuffer() leaves the handle a listener until the socket closes)",
    { skip: !onNode },
    async () => {
      const a = await accepted();
      try {
        const handle = (a.conn as unknown as {
          sock: { _handle: { useUserBuffer(b: Uint8Array): void } };
        }).sock._handle;
        const own = handle.useUserBuffer;
        let calls = 0;
        handle.useUserBuffer = function (b) {
          calls++;
          own.call(this, b);
        };
        for (let i = 0; i < 3; i++) {
          // Ten small reads: the read buffers shrink back to the smallest.
          const rcpts = Array.from(
            { length: 10 },
            (_, j) => `RCPT TO:<r${j}@y.test>\r\n`,
          );
          await readChunks(a.conn, a.client, [
            "MAIL FROM:<a@b.test>\r\n",
            ...rcpts,
          ]);
          const { chunk } = await readBody(a);
          assert.equal(dec.decode(chunk), BODY, "the body in one read");
        }
        // A DATA line sent in two reads: expectBody() replaces the buffer.
        await readChunks(a.conn, a.client, [
          "MAIL FROM:<a@b.test>\r\n",
          ...Array.from({ length: 10 }, () => "NOOP\r\n"),
          "DA",
          "TA\r\n",
        ]);
        a.conn.expectBody?.();
        assert.equal(calls, 1);
        a.client.write(BODY);
        const body = await a.conn.read!();
        assert.ok(body !== null);
        assert.equal(dec.decode(body), BODY);
      } finally {
        a.close();
      }
    },
  );

  it(
    "onread: while the driver waits for a command after a body, the body's buffer goes to the spares (an idle session holds one buffer)",
    { skip: !onNode },
    () =>
      bodyBufferPassesOn(accepted, async (a, next) => {
        a.client.write("QUIT\r\n");
        const quit = await next;
        assert.ok(quit !== null);
        assert.equal(dec.decode(quit), "QUIT\r\n");
      }),
  );

  it("a session tells its connection that a body is coming when DATA or BDAT is accepted", async () => {
    const calls: string[] = [];
    const spied: typeof listen = async (options) => {
      const inner = await listen(options);
      return {
        addr: inner.addr,
        close: () => inner.close(),
        async *[Symbol.asyncIterator]() {
          for await (const conn of inner) {
            const c = conn as Connection;
            const { expectBody } = c;
            c.expectBody = () => {
              calls.push("expectBody");
              expectBody?.call(c);
            };
            yield c;
          }
        },
      };
    };
    const server = await createServer(spied, "node", {
      hostname: "127.0.0.1",
      port: 0,
      serverName: "mx.test",
      onMessage: async (m) => void await readKept(m.raw),
    });
    try {
      const c = await connect(server.addr.port);
      await c.reply();
      await c.send("EHLO c.test\r\n");
      await c.replies(1);
      const { text, wire } = bodyOf(40);
      await c.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\n");
      await c.replies(2);
      assert.deepEqual(calls, []);
      await c.send("DATA\r\n");
      assert.match(await c.reply(), /^354 /);
      assert.deepEqual(calls, ["expectBody"]);
      await c.send(`${wire}.\r\n`);
      assert.match(await c.reply(), /^250 2\.0\.0 OK /);
      await c.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\n");
      await c.replies(2);
      await c.send(`BDAT ${text.length} LAST\r\n${text}`);
      assert.match(await c.reply(), /^250 2\.0\.0 OK /);
      assert.deepEqual(calls, ["expectBody", "expectBody"]);
      await c.send("QUIT\r\n");
      assert.match(await c.reply(), /^221 /);
      await c.close();
    } finally {
      await server.close();
    }
  });

  it("a session tells its connection it is done with the chunks read before closing it", async () => {
    const calls: string[] = [];
    const spied: typeof listen = async (options) => {
      const inner = await listen(options);
      return {
        addr: inner.addr,
        close: () => inner.close(),
        async *[Symbol.asyncIterator]() {
          for await (const conn of inner) {
            const c = conn as Connection & { readDone?(): void };
            const { readDone, close } = c;
            c.readDone = () => {
              calls.push("readDone");
              readDone?.call(c);
            };
            c.close = (abort) => {
              calls.push("close");
              close.call(c, abort);
            };
            yield c;
          }
        },
      };
    };
    const server = await createServer(spied, "node", {
      hostname: "127.0.0.1",
      port: 0,
      serverName: "mx.test",
      onMessage: async (m) => void await readKept(m.raw),
    });
    try {
      const c = await openData(server.addr.port);
      await c.send(`${bodyOf(40).wire}.\r\nQUIT\r\n`);
      assert.match(await c.reply(), /^250 2\.0\.0 OK /);
      assert.match(await c.reply(), /^221 /);
      await c.close();
    } finally {
      await server.close();
    }
    assert.deepEqual(calls.slice(0, 2), ["readDone", "close"]);
  });
});

// On Node both read paths; elsewhere the runtime's own.
for (const reuse of RUNTIME === "node" ? [true, false] : [true]) {
  const label = RUNTIME === "node"
    ? (reuse ? " (onread)" : " (data path)")
    : "";

  describe(`message.raw as a byte stream over a real server${label}`, () => {
    async function withServer(
      onMessage: (m: Message) => Promise<void>,
      fn: (c: Client) => Promise<void>,
    ): Promise<void> {
      useReusedReadBuffers(reuse);
      const server = await serve({
        hostname: "127.0.0.1",
        port: 0,
        serverName: "mx.test",
        onMessage,
      });
      useReusedReadBuffers(true);
      const c = await connect(server.addr.port);
      try {
        await fn(c);
      } finally {
        await c.close();
        await server.close();
      }
    }

    it("pipelined transactions, DATA and BDAT bodies crossing read boundaries, BYOB and default readers", async () => {
      const one = bodyOf(3000);
      const two = bodyOf(500);
      const got: string[] = [];
      let n = 0;
      await withServer(async (m) => {
        got.push(
          n++ % 2 === 0 ? await readByob(m.raw, 1000) : await readKept(m.raw),
        );
      }, async (c) => {
        await c.reply(); // greeting
        await sendInPieces(
          c,
          "EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n",
          [7, 13],
        );
        const head = await c.replies(4);
        assert.match(head[3], /^354 /);
        // The body, its end and the next transaction (BDAT) pipelined
        // behind it, in pieces of odd sizes.
        const bdat = two.text;
        await sendInPieces(
          c,
          `${one.wire}.\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\n` +
            `BDAT ${bdat.length} LAST\r\n${bdat}NOOP\r\n`,
          [1, 7, 1000, 65537, 3, 4096],
        );
        const rest = await c.replies(5);
        assert.match(rest[0], /^250 2\.0\.0 OK /);
        assert.match(rest[1], /^250 /);
        assert.match(rest[2], /^250 /);
        assert.match(rest[3], /^250 2\.0\.0 OK /);
        assert.match(rest[4], /^250 /);
      });
      assert.equal(got.length, 2);
      assert.equal(got[0], one.text);
      assert.equal(got[1], two.text);
    });

    it("a BYOB reader with a 1-byte buffer gets the body exact", async () => {
      const body = bodyOf(40);
      let got = "";
      await withServer(async (m) => {
        got = await readByob(m.raw, 1);
      }, async (c) => {
        await c.reply();
        await c.send(
          "EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n",
        );
        await c.replies(4);
        await sendInPieces(c, `${body.wire}.\r\n`, [5, 11]);
        assert.match(await c.reply(), /^250 2\.0\.0 OK /);
      });
      assert.equal(got, body.text);
    });

    it("a reader that cancels mid-body: the client gets the hook's refusal after the body, and the session goes on", async () => {
      const body = bodyOf(20000); // a few hundred KB
      await withServer(async (m) => {
        const reader = m.raw.getReader({ mode: "byob" });
        await reader.read(new Uint8Array(10));
        await reader.cancel();
        throw new SmtpError(552, "5.3.4", "Not this one");
      }, async (c) => {
        await c.reply();
        await c.send(
          "EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n",
        );
        await c.replies(4);
        await sendInPieces(c, `${body.wire}.\r\n`, [65536, 1000]);
        assert.match(await c.reply(), /^552 5\.3\.4 Not this one/);
        await c.send("MAIL FROM:<a@b.test>\r\nRSET\r\nQUIT\r\n");
        const r = await c.replies(3);
        assert.match(r[0], /^250 /);
        assert.match(r[1], /^250 /);
        assert.match(r[2], /^221 /);
      });
    });

    it("a default reader that reads after the body ended leaves the pipelined QUIT whole", async () => {
      // The copies it gets are enqueued in a byte stream, which takes over
      // their memory: a view of the read chunk (a Buffer's slice()) would
      // have taken the QUIT behind the body with it.
      let got = "";
      await withServer(async (m) => {
        await new Promise((r) => setTimeout(r, 20));
        got = await readKept(m.raw);
        throw new SmtpError(451, "4.3.0", "Try later");
      }, async (c) => {
        await c.reply();
        await c.send(
          "EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n",
        );
        await c.replies(4);
        await c.send("Subject: 1\r\n\r\nx\r\n.\r\nQUIT\r\n");
        assert.match(await c.reply(), /^451 4\.3\.0 Try later/);
        assert.match(await c.reply(), /^221 /);
      });
      assert.equal(got, "Subject: 1\r\n\r\nx\r\n");
    });

    it("a default reader keeps whole body reads that the server gave away (Bun: no copy), and the reads it shares with commands are copied", async () => {
      // Bun's reads are fresh arrays: a read the engine is done with goes
      // to the reader as it is, its memory taken over by the stream. The
      // session goes on with the reads after it, and a read that also
      // holds the next commands (or, in BDAT, the next chunk) is copied.
      const body = bodyOf(400);
      const kept: Uint8Array[][] = [];
      await withServer(async (m) => {
        const chunks: Uint8Array[] = [];
        for await (const chunk of m.raw) chunks.push(chunk);
        kept.push(chunks);
      }, async (c) => {
        await c.reply();
        await c.send("EHLO c.test\r\n");
        await c.reply();
        const tx = "MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\n";
        // DATA: the body in reads of its own, the last one ending with the
        // terminator; the body is read whole before the reply.
        await c.send(tx + "DATA\r\n");
        await c.replies(3);
        await sendInPieces(c, body.wire + ".\r\n", [4096, 1500, 7000]);
        assert.match(await c.reply(), /^250 /);
        // The terminator and the next transaction in one read.
        await c.send(tx + "DATA\r\n");
        await c.replies(3);
        await sendInPieces(c, body.wire, [3000]);
        await c.send(".\r\n" + tx + "BDAT 5\r\nHello");
        await c.replies(4);
        // BDAT: a chunk in reads of its own, then one shared with the next.
        const bin = "x".repeat(9000);
        await c.send(`BDAT ${bin.length}\r\n`);
        await sendInPieces(c, bin, [4000]);
        assert.match(await c.reply(), /^250 /);
        await c.send("BDAT 3 LAST\r\nEndQUIT\r\n");
        assert.match(await c.reply(), /^250 /);
        assert.match(await c.reply(), /^221 /);
      });
      const text = (chunks: Uint8Array[]) =>
        chunks.map((x) => dec.decode(x)).join("");
      assert.equal(kept.length, 3);
      assert.equal(text(kept[0]), body.text);
      assert.equal(text(kept[1]), body.text);
      assert.equal(text(kept[2]), "Hello" + "x".repeat(9000) + "End");
      // Nothing the reader kept was written into or taken back.
      for (const chunks of kept) {
        for (const x of chunks) assert.ok(x.byteLength > 0);
      }
      if (RUNTIME === "bun") {
        // The first body's last read ended with ".\r\n": given away as it
        // was (not copied), its memory holds more than the chunk (the
        // terminator, or the room of the dots unstuffed).
        const last = kept[0][kept[0].length - 1];
        assert.ok(last.buffer.byteLength > last.byteLength);
      }
    });
  });
}
