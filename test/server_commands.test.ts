// The SMTP conversation of serve() over real TCP, on whichever runtime runs
// this file (serve() picks that runtime's shim: Deno.listen, Bun.listen or
// node:net): the greeting and EHLO, pipelined commands, many clients at
// once, a client that half-closes, the log, and the session's fields as
// hooks see them. Every server listens on 127.0.0.1 port 0 and is closed
// in a finally block, with its client sockets.
import { setTimeout as sleep } from "node:timers/promises";
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { type LogEntry, type Session, SmtpError } from "../mod.ts";
import { collector, greeted, withServer } from "./helpers/client.ts";

describe("server", () => {
  it("greets with 220 and the server name", async () => {
    await withServer({}, async (_server, open) => {
      const c = await open();
      assert.equal(await c.reply(), "220 mx.test ESMTP smtpd\r\n");
    });
  });

  it("answers EHLO with its capabilities", async () => {
    await withServer({ maxMessageSize: 1000000 }, async (_server, open) => {
      const c = await open();
      await c.reply();
      await c.send("EHLO client.test\r\n");
      assert.equal(
        await c.reply(),
        "250-mx.test greets client.test\r\n" +
          "250-PIPELINING\r\n" +
          "250-8BITMIME\r\n" +
          "250-SIZE 1000000\r\n" +
          "250-ENHANCEDSTATUSCODES\r\n" +
          "250-SMTPUTF8\r\n" +
          "250-CHUNKING\r\n" +
          "250-BINARYMIME\r\n" +
          "250 HELP\r\n",
      );
      await c.send("QUIT\r\n");
      assert.equal(await c.reply(), "221 2.0.0 mx.test Bye\r\n");
      await c.closed();
    });
  });

  it("answers pipelined commands in order, with a rejected recipient among them", async () => {
    const sink = collector();
    await withServer({
      onRcptTo(address) {
        if (address === "nobody@example.org") {
          throw new SmtpError(550, "5.1.1", "No such user");
        }
      },
      onMessage: sink.onMessage,
    }, async (_server, open) => {
      const c = await greeted(open);
      await c.send(
        "MAIL FROM:<a@example.org>\r\n" +
          "RCPT TO:<b@example.org>\r\n" +
          "RCPT TO:<nobody@example.org>\r\n" +
          "RCPT TO:<c@example.org>\r\n" +
          "DATA\r\n",
      );
      assert.deepEqual(await c.replies(5), [
        "250 2.1.0 Sender OK\r\n",
        "250 2.1.5 Recipient OK\r\n",
        "550 5.1.1 No such user\r\n",
        "250 2.1.5 Recipient OK\r\n",
        "354 2.0.0 End data with <CR><LF>.<CR><LF>\r\n",
      ]);
      // The body, its end and the next commands in one write as well.
      await c.send("Subject: x\r\n\r\nhello\r\n.\r\nNOOP\r\nQUIT\r\n");
      const [ok, noop, bye] = await c.replies(3);
      assert.match(ok, /^250 2\.0\.0 OK /);
      assert.equal(noop, "250 2.0.0 OK\r\n");
      assert.equal(bye, "221 2.0.0 mx.test Bye\r\n");
      await c.closed();
      assert.deepEqual(sink.got[0].to, ["b@example.org", "c@example.org"]);
      assert.equal(sink.got[0].body.toString(), "Subject: x\r\n\r\nhello\r\n");
    });
  });

  it("serves many clients at once, each message to its own sender", async () => {
    const sink = collector();
    await withServer({ onMessage: sink.onMessage }, async (_server, open) => {
      const n = 40;
      await Promise.all(
        Array.from({ length: n }, async (_, i) => {
          const c = await greeted(open, `client${i}.test`);
          await c.send(
            `MAIL FROM:<s${i}@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n`,
          );
          await c.replies(3);
          await c.send(
            `Subject: ${i}\r\n\r\n${"x".repeat(i * 1000)}\r\n.\r\nQUIT\r\n`,
          );
          assert.match(await c.reply(), /^250 /);
          assert.match(await c.reply(), /^221 /);
          await c.closed();
        }),
      );
      assert.equal(sink.got.length, n);
      for (const m of sink.got) {
        const i = Number(/^s(\d+)@/.exec(m.from)![1]);
        assert.equal(m.session.heloName, `client${i}.test`);
        assert.equal(m.session.lmtp, false);
        assert.equal(
          m.body.toString(),
          `Subject: ${i}\r\n\r\n${"x".repeat(i * 1000)}\r\n`,
        );
      }
    });
  });

  it("answers every command of a client that half-closes after sending them", async () => {
    const sink = collector();
    await withServer({
      // Slow hooks: the replies are written after the client's FIN arrived.
      onHelo: () => sleep(50),
      onMessage: async (m) => {
        await sleep(50);
        await sink.onMessage(m);
      },
    }, async (_server, open) => {
      const c = await open();
      await c.send(
        "EHLO client.test\r\nMAIL FROM:<a@example.org>\r\n" +
          "RCPT TO:<b@example.org>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
      );
      c.end();
      const replies = await c.replies(7);
      assert.deepEqual(replies.map((r) => r.slice(0, 4)), [
        "220 ",
        "250-",
        "250 ",
        "250 ",
        "354 ",
        "250 ",
        "221 ",
      ]);
      await c.closed();
      assert.equal(sink.got.length, 1);
      // Without QUIT: the replies go out, then the server closes.
      const d = await open();
      await d.send("EHLO client.test\r\nNOOP\r\n");
      d.end();
      assert.deepEqual((await d.replies(3)).map((r) => r.slice(0, 4)), [
        "220 ",
        "250-",
        "250 ",
      ]);
      await d.closed();
    });
  });

  it("logs connect, command, reply, message and close entries", async () => {
    const entries: LogEntry[] = [];
    await withServer({
      logger: (e) => entries.push(e),
      onMessage: async (m) => void await m.bytes(),
    }, async (server, open) => {
      const c = await greeted(open);
      await c.send(
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
      );
      await c.replies(3);
      await c.send("hello\r\n.\r\nQUIT\r\n");
      await c.replies(2);
      await c.closed();
      for (let i = 0; i < 50 && server.connections > 0; i++) await sleep(10);
      const types = new Set(entries.map((e) => e.type));
      for (
        const t of ["listen", "connect", "command", "reply", "message", "close"]
      ) {
        assert.ok(types.has(t as LogEntry["type"]), `no ${t} entry`);
      }
      const commands = entries.flatMap((e) =>
        e.type === "command" ? [e.line] : []
      );
      assert.deepEqual(commands, [
        "EHLO client.test",
        "MAIL FROM:<a@example.org>",
        "RCPT TO:<b@example.org>",
        "DATA",
        "QUIT",
      ]);
      const message = entries.find((e) => e.type === "message");
      assert.ok(message?.type === "message");
      assert.equal(message.size, 7);
      assert.deepEqual(message.to, ["b@example.org"]);
      const close = entries.find((e) => e.type === "close");
      assert.ok(close?.type === "close");
      assert.equal(close.reason, "quit");
      assert.equal(close.messages, 1);
      const connect = entries.find((e) => e.type === "connect");
      assert.ok(connect?.type === "connect");
      assert.equal(connect.session, close.session);
      assert.equal(connect.remoteAddress, "127.0.0.1");
    });
  });

  it("serves on when the logger throws", async () => {
    const sink = collector();
    await withServer({
      logger: () => {
        throw new Error("logger broken");
      },
      onMessage: sink.onMessage,
    }, async (server, open) => {
      const c = await greeted(open);
      await c.send(
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
      );
      await c.replies(3);
      await c.send("x\r\n.\r\nQUIT\r\n");
      assert.match(await c.reply(), /^250 /);
      assert.match(await c.reply(), /^221 /);
      await c.closed();
      for (let i = 0; i < 50 && server.connections > 0; i++) await sleep(10);
      assert.equal(server.connections, 0);
      assert.equal(sink.got.length, 1);
    });
  });

  it("gives each session its local address on a wildcard listener", async () => {
    // Bound to one address, the shims take it from the listener; bound to
    // 0.0.0.0 they ask each connection (the address the client dialled).
    const seen: [string, number][] = [];
    await withServer({
      hostname: "0.0.0.0",
      onConnect: (s) => void seen.push([s.localAddress, s.localPort]),
    }, async (server, open) => {
      assert.equal(server.addr.hostname, "0.0.0.0");
      const c = await greeted(open);
      await c.send("QUIT\r\n");
      assert.match(await c.reply(), /^221 /);
      assert.deepEqual(seen, [["127.0.0.1", server.addr.port]]);
    });
  });

  it("shows the session's fields to hooks", async () => {
    const seen: Record<string, unknown>[] = [];
    const snap = (where: string, s: Session) =>
      seen.push({
        where,
        remoteAddress: s.remoteAddress,
        remotePort: s.remotePort,
        localAddress: s.localAddress,
        localPort: s.localPort,
        heloName: s.heloName,
        esmtp: s.esmtp,
        secure: s.secure,
        tls: s.tls,
        messages: s.messages,
        transactions: s.transactions,
        id: s.id,
      });
    await withServer({
      onConnect: (s) => void snap("connect", s),
      onMailFrom: (_a, s) => void snap("mail", s),
      onMessage: async (m, s) => {
        assert.equal(m.session, s);
        snap("message", s);
        await m.bytes();
      },
    }, async (server, open) => {
      const c = await greeted(open, "client.test");
      for (let i = 0; i < 2; i++) {
        await c.send(
          "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
        );
        await c.replies(3);
        await c.send("x\r\n.\r\n");
        assert.match(await c.reply(), /^250 /);
      }
      const port = server.addr.port;
      const common = {
        remoteAddress: "127.0.0.1",
        remotePort: c.socket.localPort,
        localAddress: "127.0.0.1",
        localPort: port,
        secure: false,
        tls: null,
        id: seen[0].id,
      };
      assert.deepEqual(seen, [
        {
          where: "connect",
          ...common,
          heloName: null,
          esmtp: false,
          messages: 0,
          transactions: 0,
        },
        {
          where: "mail",
          ...common,
          heloName: "client.test",
          esmtp: true,
          messages: 0,
          transactions: 0,
        },
        {
          where: "message",
          ...common,
          heloName: "client.test",
          esmtp: true,
          messages: 0,
          transactions: 1,
        },
        {
          where: "mail",
          ...common,
          heloName: "client.test",
          esmtp: true,
          messages: 1,
          transactions: 1,
        },
        {
          where: "message",
          ...common,
          heloName: "client.test",
          esmtp: true,
          messages: 1,
          transactions: 2,
        },
      ]);
    });
  });
});
