// Limits and deadlines of serve() over real TCP, on whichever runtime runs
// this file: maxConnections and maxConnectionsPerIp, idleTimeout and
// dataTimeout, close() and closeTimeout, a client that does not read its
// replies, and bad options refused before listening. Every server listens
// on 127.0.0.1 port 0 and is closed in a finally block, with its client
// sockets.
import { setTimeout as sleep } from "node:timers/promises";
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as net from "node:net";
import { type LogEntry, serve, type ServeOptions } from "../mod.ts";
import {
  type Client,
  collector,
  greeted,
  withServer,
} from "./helpers/client.ts";

describe("server", () => {
  it("refuses connections over maxConnections with 421 4.7.0", async () => {
    await withServer({ maxConnections: 2 }, async (server, open) => {
      const a = await open();
      const b = await open();
      assert.match(await a.reply(), /^220 /);
      assert.match(await b.reply(), /^220 /);
      const c = await open();
      assert.match(await c.reply(), /^421 4\.7\.0 /);
      await c.closed();
      assert.equal(server.connections, 2);
      // A freed slot is usable again.
      await a.send("QUIT\r\n");
      await a.reply();
      await a.closed();
      for (let i = 0; i < 50 && server.connections > 1; i++) await sleep(10);
      const d = await open();
      assert.match(await d.reply(), /^220 /);
    });
  });

  it("refuses connections over maxConnectionsPerIp with 421 4.7.0", async () => {
    await withServer({ maxConnectionsPerIp: 1 }, async (_server, open) => {
      const a = await open();
      assert.match(await a.reply(), /^220 /);
      const b = await open();
      assert.equal(
        await b.reply(),
        "421 4.7.0 mx.test Too many connections, try again later\r\n",
      );
      await b.closed();
    });
  });

  it("closes an idle session after idleTimeout with 421 4.4.2", async () => {
    await withServer({ idleTimeout: 300 }, async (_server, open) => {
      const c = await open();
      const t0 = Date.now();
      await c.reply();
      await c.send("EHLO client.test\r\n");
      await c.reply();
      assert.equal(
        await c.reply(),
        "421 4.4.2 mx.test Timeout, closing connection\r\n",
      );
      const waited = Date.now() - t0;
      assert.ok(waited >= 280 && waited < 3000, `waited ${waited} ms`);
      await c.closed();
    });
  });

  // The client's idle time starts when it has our answer: a hook that
  // takes longer than idleTimeout (but less than hookTimeout) must not
  // get the session closed for idleness right after its answer.
  for (const slow of ["onMailFrom", "onMessage"] as const) {
    it(`counts idleTimeout from the answer, not from the command, after a slow ${slow}`, async () => {
      const options: ServeOptions = {
        idleTimeout: 300,
        hookTimeout: 5000,
        async onMessage(m) {
          await m.bytes();
          if (slow === "onMessage") await sleep(600);
        },
      };
      if (slow === "onMailFrom") options.onMailFrom = () => sleep(600);
      await withServer(options, async (_server, open) => {
        const c = await greeted(open);
        await c.send("MAIL FROM:<a@example.org>\r\n");
        assert.equal(await c.reply(), "250 2.1.0 Sender OK\r\n");
        await c.send("RCPT TO:<b@example.org>\r\nDATA\r\n");
        await c.replies(2);
        await c.send("Subject: x\r\n\r\nhello\r\n.\r\n");
        assert.match(await c.reply(), /^250 2\.0\.0 OK /);
        // Answered at once, not with 421 4.4.2 Timeout.
        await c.send("NOOP\r\n");
        assert.equal(await c.reply(), "250 2.0.0 OK\r\n");
        await c.send("QUIT\r\n");
        assert.match(await c.reply(), /^221 /);
      });
    });
  }

  it("ends a DATA phase longer than dataTimeout with 421 4.4.2, on time", async () => {
    let failed: (message: string) => void;
    const hookError = new Promise<string>((r) => (failed = r));
    await withServer({
      idleTimeout: 5000,
      dataTimeout: 300,
      async onMessage(m) {
        try {
          await m.bytes();
        } catch (e) {
          failed((e as Error).message);
        }
      },
    }, async (_server, open) => {
      const c = await greeted(open);
      await c.send(
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
      );
      await c.replies(3);
      const t0 = Date.now();
      // A client that trickles: never idle for long, but the whole DATA
      // phase takes too long.
      const trickle = setInterval(() => {
        c.send("x\r\n").catch(() => {});
      }, 50);
      try {
        assert.equal(
          await c.reply(),
          "421 4.4.2 mx.test Timeout, closing connection\r\n",
        );
      } finally {
        clearInterval(trickle);
      }
      const waited = Date.now() - t0;
      assert.ok(waited >= 280 && waited < 1500, `waited ${waited} ms`);
      await c.closed();
      assert.match(await hookError, /Timeout/);
    });
  });

  it("close() ends an idle session with 421 4.3.2 and resolves", async () => {
    await withServer({}, async (server, open) => {
      const c = await greeted(open);
      await server.close();
      assert.equal(
        await c.reply(),
        "421 4.3.2 mx.test Service shutting down\r\n",
      );
      await c.closed();
      assert.equal(server.connections, 0);
    });
  });

  it("close() lets a message in transfer finish within closeTimeout", async () => {
    const sink = collector();
    await withServer(
      { closeTimeout: 5000, onMessage: sink.onMessage },
      async (server, open) => {
        const c = await greeted(open);
        await c.send(
          "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
        );
        await c.replies(3);
        await c.send("Subject: half\r\n\r\nfirst half\r\n");
        await sleep(50);
        let closed = false;
        const closing = server.close().then(() => (closed = true));
        await sleep(100);
        assert.equal(closed, false);
        await c.send("second half\r\n.\r\n");
        assert.match(await c.reply(), /^250 2\.0\.0 OK /);
        assert.equal(
          await c.reply(),
          "421 4.3.2 mx.test Service shutting down\r\n",
        );
        await c.closed();
        await closing;
        assert.equal(
          sink.got[0].body.toString(),
          "Subject: half\r\n\r\nfirst half\r\nsecond half\r\n",
        );
      },
    );
  });

  it("close() cuts a message in transfer after closeTimeout", async () => {
    let failed: (message: string) => void;
    const hookError = new Promise<string>((r) => (failed = r));
    await withServer({
      closeTimeout: 200,
      async onMessage(m) {
        try {
          await m.bytes();
        } catch (e) {
          failed((e as Error).message);
          throw e;
        }
      },
    }, async (server, open) => {
      const c = await greeted(open);
      await c.send(
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
      );
      await c.replies(3);
      await c.send("Subject: slow\r\n\r\n");
      const t0 = Date.now();
      await server.close();
      const waited = Date.now() - t0;
      assert.ok(waited >= 180 && waited < 3000, `close took ${waited} ms`);
      assert.equal(
        await c.reply(),
        "421 4.3.2 mx.test Service shutting down\r\n",
      );
      await c.closed();
      assert.match(await hookError, /shutting down/);
    });
  });

  /** Floods NOOPs without reading; resolves once the server's replies stall. */
  async function floodUnread(c: Client, replies: () => number): Promise<void> {
    c.socket.pause();
    // Far more replies than socket buffers hold: 4 Mi replies of 14 bytes.
    const noops = Buffer.from("NOOP\r\n".repeat(1 << 20));
    for (let i = 0; i < 4; i++) c.socket.write(noops);
    // The server's writes have stopped completing once no reply has gone
    // out for a while.
    let last = -1;
    while (replies() !== last) {
      last = replies();
      await sleep(100);
    }
  }

  it("close() ends a session whose client does not read its replies", async () => {
    let replies = 0;
    await withServer({
      closeTimeout: 200,
      logger: (e) => void (e.type === "reply" && replies++),
    }, async (server, open) => {
      const c = await greeted(open);
      await floodUnread(c, () => replies);
      const t0 = Date.now();
      await server.close();
      const waited = Date.now() - t0;
      assert.ok(waited >= 180 && waited < 3000, `close took ${waited} ms`);
      c.socket.resume();
      await c.closed();
    });
  });

  it("closes a session whose client stops reading its replies after idleTimeout", async () => {
    let replies = 0;
    const entries: LogEntry[] = [];
    await withServer({
      idleTimeout: 500,
      logger: (e) => {
        if (e.type === "reply") replies++;
        else entries.push(e);
      },
    }, async (server, open) => {
      const c = await greeted(open);
      await floodUnread(c, () => replies);
      for (let i = 0; i < 300 && server.connections > 0; i++) await sleep(10);
      assert.equal(server.connections, 0);
      const errors = entries.flatMap((e) =>
        e.type === "error" ? [e.message] : []
      );
      assert.ok(
        errors.some((m) => /did not read its replies/.test(m)),
        JSON.stringify(errors),
      );
      const close = entries.find((e) => e.type === "close");
      assert.ok(close?.type === "close" && close.reason === "timeout");
      c.socket.resume();
      await c.closed();
    });
  });

  it("rejects bad options with a TypeError before listening", async () => {
    // A port that is taken: a server that got as far as listening would
    // fail with EADDRINUSE instead of the TypeError.
    const taken = net.createServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
    const port = (taken.address() as net.AddressInfo).port;
    try {
      const bad: ServeOptions[] = [
        { maxConnections: 0 },
        { maxConnectionsPerIp: -1 },
        { port: -1 },
        { port: 70000 },
        { hookTimeout: NaN },
        { closeTimeout: 1.5 },
        { maxMessageSize: "10" as unknown as number },
        { idleTimeout: 0 },
        { onMessage: "nope" as unknown as () => void },
      ];
      for (const options of bad) {
        await assert.rejects(
          serve({ hostname: "127.0.0.1", port, ...options }),
          TypeError,
          JSON.stringify(options),
        );
      }
    } finally {
      await new Promise<void>((r) => taken.close(() => r()));
    }
  });
});
