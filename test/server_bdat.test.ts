// CHUNKING/BDAT and BINARYMIME (RFC 3030) through the driver, over real
// TCP on whichever runtime runs this file: Perl's core Net::SMTP sends
// multi-chunk and binary messages (compared byte for byte with what the
// application got), RSET/QUIT/shutdown between chunks drop the message,
// and a 100 MB chunk streams to a slow reader with bounded memory.
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Message, serve, type ServeOptions, type Server } from "../mod.ts";
import { type Client, connect, withServerUsing } from "./helpers/client.ts";
import { findGc, RssPeak, SlowReader } from "./helpers/gc.ts";

const here = dirname(fileURLToPath(import.meta.url));
const MiB = 1024 * 1024;

function withServer(
  options: ServeOptions,
  fn: (server: Server, open: () => Promise<Client>) => Promise<void>,
): Promise<void> {
  return withServerUsing(options, (port) => connect(port), fn);
}

/** Connects, reads the greeting and sends EHLO; returns the EHLO reply too. */
async function greeted(
  open: () => Promise<Client>,
): Promise<{ c: Client; ehlo: string }> {
  const c = await open();
  assert.match(await c.reply(), /^220 /);
  await c.send("EHLO client.test\r\n");
  const ehlo = await c.reply();
  assert.match(ehlo, /^250-/);
  return { c, ehlo };
}

interface Got {
  body: Buffer;
  bodyType: string;
  command: string;
  size: number;
}

/** An onMessage that keeps each body, or the error reading it gave. */
function collector() {
  const got: Got[] = [];
  const errors: unknown[] = [];
  let wake: (() => void) | null = null;
  return {
    got,
    errors,
    async onMessage(m: Message) {
      try {
        const body = Buffer.from(await m.bytes());
        got.push({
          body,
          bodyType: m.bodyType,
          command: m.command,
          size: m.size,
        });
      } catch (error) {
        errors.push(error);
        throw error;
      } finally {
        wake?.();
      }
    },
    async waitFor(n: number) {
      while (got.length + errors.length < n) {
        await new Promise<void>((r) => (wake = r));
      }
    },
  };
}

/** Runs a program; resolves with its output, rejects (with stderr) on failure. */
function run(file: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      { timeout: 60000, maxBuffer: 16 * MiB },
      (error, stdout, stderr) => {
        if (error) {
          reject(new Error(`${file} failed: ${error.message}\n${stderr}`));
        } else resolve(String(stdout));
      },
    );
  });
}

describe("BDAT from Perl's Net::SMTP", () => {
  it("a multi-chunk 8-bit message arrives byte for byte, no dot-unstuffing", async () => {
    const c = collector();
    await withServer({ onMessage: c.onMessage }, async (server) => {
      const chunks = [
        "From: perl@example.org\r\nSubject: chunks\r\n\r\nfirst li",
        "ne\r\n.a line with a dot\r\n..two dots\r\n.\r\nnot the end\r\n",
        "caf\xe9 \xff\xfe 8-bit\r\nQUIT\r\nRSET\r\n",
        "last line\r\n",
      ].map((s) => Buffer.from(s, "latin1"));
      const out = await run("perl", [
        join(here, "fixtures", "bdat_send.pl"),
        String(server.addr.port),
        "8",
        ...chunks.map((b) => b.toString("hex")),
      ]);
      const lines = out.trim().split("\n");
      assert.equal(lines.length, 4);
      assert.match(lines[0], /^250 2\.0\.0 \d+ octets received$/);
      assert.match(lines[3], /^250 2\.0\.0 OK /);
      await c.waitFor(1);
      assert.equal(c.errors.length, 0);
      assert.deepEqual(c.got[0].body, Buffer.concat(chunks));
      assert.equal(c.got[0].bodyType, "8BITMIME");
      assert.equal(c.got[0].command, "BDAT");
      assert.equal(c.got[0].size, Buffer.concat(chunks).length);
    });
  });

  it("a BINARYMIME message with every octet, bare CR and LF, arrives untouched", async () => {
    const c = collector();
    await withServer({ onMessage: c.onMessage }, async (server) => {
      const all = Buffer.alloc(256 * 4);
      for (let i = 0; i < all.length; i++) all[i] = i % 256;
      const chunks = [
        Buffer.from(
          "Content-Type: application/octet-stream\r\n" +
            "Content-Transfer-Encoding: binary\r\n\r\n",
          "latin1",
        ),
        all.subarray(0, 300),
        Buffer.from("\r\r\n\n\r.\r\n.\r\n\x00\r", "latin1"),
        all.subarray(300),
        Buffer.alloc(0), // BDAT 0 LAST
      ];
      const out = await run("perl", [
        join(here, "fixtures", "bdat_send.pl"),
        String(server.addr.port),
        "binary",
        ...chunks.map((b) => b.toString("hex")),
      ]);
      const lines = out.trim().split("\n");
      assert.equal(lines.length, 5);
      assert.match(lines[4], /^250 2\.0\.0 OK /);
      await c.waitFor(1);
      assert.equal(c.errors.length, 0);
      assert.deepEqual(c.got[0].body, Buffer.concat(chunks));
      assert.equal(c.got[0].bodyType, "BINARYMIME");
      assert.equal(c.got[0].command, "BDAT");
    });
  });
});

describe("BDAT through the driver", () => {
  it("CHUNKING and BINARYMIME are offered by default, and not with chunking: false", async () => {
    await withServer({}, async (_server, open) => {
      const { ehlo } = await greeted(open);
      assert.match(ehlo, /^250-CHUNKING\r$/m);
      assert.match(ehlo, /^250-BINARYMIME\r$/m);
    });
    await withServer({ chunking: false }, async (_server, open) => {
      const { ehlo } = await greeted(open);
      assert.doesNotMatch(ehlo, /CHUNKING|BINARYMIME/);
    });
  });

  it("DATA messages carry their body type and command", async () => {
    const c = collector();
    await withServer({ onMessage: c.onMessage }, async (_server, open) => {
      const { c: client } = await greeted(open);
      await client.send(
        "MAIL FROM:<a@example.org> BODY=8BITMIME\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
      );
      await client.replies(3);
      await client.send("Subject: x\r\n\r\n..dot\r\n.\r\n");
      assert.match(await client.reply(), /^250 2\.0\.0 OK /);
      await client.send(
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nBDAT 3 LAST\r\nabc",
      );
      const r = await client.replies(3);
      assert.match(r[2], /^250 2\.0\.0 OK /);
      await c.waitFor(2);
      assert.deepEqual(
        c.got.map((g) => [g.command, g.bodyType, g.body.toString("latin1")]),
        [
          ["DATA", "8BITMIME", "Subject: x\r\n\r\n.dot\r\n"],
          ["BDAT", "7BIT", "abc"],
        ],
      );
    });
  });

  for (const verb of ["RSET", "QUIT"]) {
    it(`${verb} between chunks errors the raw stream and delivers nothing`, async () => {
      let raw: Error | null = null;
      const reads: number[] = [];
      let delivered = 0;
      let wake: () => void = () => {};
      const failed = new Promise<void>((r) => (wake = r));
      await withServer({
        async onMessage(m) {
          const reader = m.raw.getReader();
          const at = reads.push(0) - 1;
          try {
            for (;;) {
              const { done, value } = await reader.read();
              if (done) break;
              reads[at] += value.byteLength;
            }
            delivered++;
          } catch (error) {
            raw = error as Error;
            wake();
            throw error;
          }
        },
      }, async (_server, open) => {
        const { c } = await greeted(open);
        await c.send(
          "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nBDAT 5\r\nhello",
        );
        const r = await c.replies(3);
        assert.match(r[2], /^250 2\.0\.0 5 octets received/);
        await c.send(`${verb}\r\n`);
        assert.match(await c.reply(), verb === "RSET" ? /^250 / : /^221 /);
        await failed;
        if (verb === "RSET") {
          // The session goes on: a new transaction works.
          await c.send(
            "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nBDAT 2 LAST\r\nok",
          );
          const r2 = await c.replies(3);
          assert.match(r2[2], /^250 2\.0\.0 OK /);
        } else await c.closed();
      });
      assert.ok(raw !== null, "raw did not error");
      assert.equal(reads[0], 5);
      assert.equal(delivered, verb === "RSET" ? 1 : 0);
    });
  }

  it("close() between chunks ends the session at once: 421, raw errors", async () => {
    let rawError: unknown = null;
    let started: () => void = () => {};
    const inMessage = new Promise<void>((r) => (started = r));
    const server = await serve({
      hostname: "127.0.0.1",
      port: 0,
      closeTimeout: 30000,
      async onMessage(m) {
        started();
        try {
          await m.bytes();
        } catch (error) {
          rawError = error;
          throw error;
        }
      },
    });
    const c = await connect(server.addr.port);
    try {
      await c.reply();
      await c.send("EHLO client.test\r\n");
      await c.reply();
      await c.send(
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nBDAT 5\r\nhello",
      );
      await c.replies(3);
      await inMessage;
      const t0 = Date.now();
      const closed = server.close();
      assert.match(await c.reply(), /^421 4\.3\.2 /);
      await closed;
      // Not closeTimeout (30 s): the message was between chunks.
      assert.ok(Date.now() - t0 < 10000, `close took ${Date.now() - t0} ms`);
      assert.ok(rawError !== null, "raw did not error");
    } finally {
      await c.close();
      await server.close();
    }
  });
});

const LARGE = 100 * MiB;
const CHUNK = 64 * 1024;

/** Piece `i` of the large body: pseudo-random binary (every octet value). */
function largePiece(i: number): Buffer {
  const b = Buffer.allocUnsafe(CHUNK);
  let x = (i + 1) * 2654435761;
  for (let j = 0; j < CHUNK; j += 4) {
    x = (x * 1103515245 + 12345) >>> 0;
    b.writeUInt32LE(x, j);
  }
  return b;
}

describe("server with a 100 MB BDAT chunk", () => {
  let server: Server | null = null;
  let client: Client | null = null;
  after(async () => {
    await client?.close();
    await server?.close();
  });

  it("streams one 100 MB BINARYMIME chunk to a slow reader with bounded memory", async () => {
    // A slow consumer: 25 ms of pause per MiB read (at most 40 MB/s).
    const reader = new SlowReader(25);
    server = await serve({
      hostname: "127.0.0.1",
      port: 0,
      maxMessageSize: 128 * MiB,
      onMessage: (m) => reader.read(m.raw),
    });
    const c = client = await connect(server.addr.port);
    await c.reply();
    await c.send("EHLO client.test\r\n");
    await c.reply();
    await c.send(
      "MAIL FROM:<a@example.org> BODY=BINARYMIME\r\nRCPT TO:<b@example.org>\r\n" +
        `BDAT ${LARGE} LAST\r\n`,
    );
    await c.replies(2);

    // Collect every few MiB so that what is measured is what the server
    // keeps (see the 50 MB DATA test in server_messages.test.ts).
    const gc = findGc();
    gc();
    const rss = new RssPeak();
    const expected = createHash("sha256");
    let ahead = 0;
    let maxAhead = 0;
    let growth = 0;
    const t0 = Date.now();
    try {
      for (let i = 0; i < LARGE / CHUNK; i++) {
        const piece = largePiece(i);
        expected.update(piece);
        if (i % 64 === 63) {
          rss.sample();
          maxAhead = Math.max(maxAhead, (i + 1) * CHUNK - reader.seen);
          gc();
        }
        if (!c.socket.write(piece)) {
          await new Promise<void>((r) => c.socket.once("drain", () => r()));
        }
      }
      ahead = LARGE - reader.seen;
      assert.match(await c.reply(), /^250 2\.0\.0 OK /);
    } finally {
      growth = rss.stop();
    }
    const seconds = (Date.now() - t0) / 1000;
    assert.equal(reader.seen, LARGE);
    // Backpressure: the client is never far ahead of the slow reader.
    assert.ok(ahead < 16 * MiB, `the client was ${ahead} bytes ahead`);
    assert.ok(maxAhead < 16 * MiB, `the client got ${maxAhead} bytes ahead`);
    assert.equal(reader.digest, expected.digest("hex"));
    assert.ok(growth < 40, `RSS grew by ${growth.toFixed(1)} MiB`);
    assert.ok(seconds < 60, `took ${seconds.toFixed(1)} s`);
  });
});
