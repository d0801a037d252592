// Conformance of the server over real TCP, on whichever runtime runs this
// file: serve() picks that runtime's shim (Deno.listen, Bun.listen or
// node:net). Every server listens on 127.0.0.1 port 0 and is closed in a
// finally block, with its client sockets.
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import * as net from "node:net";
import process from "node:process";
import v8 from "node:v8";
import vm from "node:vm";
import {
  type ErrorContext,
  type LogEntry,
  type Message,
  serve,
  type ServeOptions,
  type Server,
  type Session,
  SmtpError,
} from "../mod.ts";
import { type Client, connect, withServerUsing } from "./helpers/client.ts";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Starts a server, runs `fn`, then closes every client and the server. */
function withServer(
  options: ServeOptions,
  fn: (server: Server, open: () => Promise<Client>) => Promise<void>,
): Promise<void> {
  return withServerUsing(options, (port) => connect(port), fn);
}

/** Connects, reads the greeting and sends EHLO. */
async function greeted(
  open: () => Promise<Client>,
  name = "client.test",
): Promise<Client> {
  const c = await open();
  assert.match(await c.reply(), /^220 /);
  await c.send(`EHLO ${name}\r\n`);
  assert.match(await c.reply(), /^250 HELP\r\n$|^250-/);
  return c;
}

/** A message sink for onMessage: every body read in full, in order. */
function collector() {
  const got: {
    from: string;
    to: readonly string[];
    size: number;
    body: Buffer;
    session: Session;
  }[] = [];
  let wake: (() => void) | null = null;
  return {
    got,
    async onMessage(m: Message) {
      const body = Buffer.from(await m.bytes());
      got.push({
        from: m.from,
        to: m.to,
        size: m.size,
        body,
        session: m.session,
      });
      wake?.();
    },
    async waitFor(n: number) {
      while (got.length < n) await new Promise<void>((r) => (wake = r));
    },
  };
}

const BODY = "From: a@example.org\r\nTo: b@example.org\r\nSubject: Hi\r\n\r\n" +
  "..a line that starts with a dot\r\n" +
  "8-bit \xe9\xff\x00 bytes\r\n" +
  "\r\n" +
  "last line\r\n";
// What the client sends: BODY is already dot-stuffed above; the server
// hands out the line with one dot.
const UNSTUFFED = BODY.replace("\r\n..a line", "\r\n.a line");

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

  it("delivers a whole transaction byte-exact to onMessage", async () => {
    const sink = collector();
    await withServer({ onMessage: sink.onMessage }, async (_server, open) => {
      const c = await greeted(open);
      await c.send("MAIL FROM:<a@example.org> SIZE=100\r\n");
      assert.equal(await c.reply(), "250 2.1.0 Sender OK\r\n");
      await c.send("RCPT TO:<b@example.org>\r\n");
      assert.equal(await c.reply(), "250 2.1.5 Recipient OK\r\n");
      await c.send("RCPT TO:<c@example.org>\r\n");
      assert.equal(await c.reply(), "250 2.1.5 Recipient OK\r\n");
      await c.send("DATA\r\n");
      assert.equal(
        await c.reply(),
        "354 2.0.0 End data with <CR><LF>.<CR><LF>\r\n",
      );
      await c.send(BODY + ".\r\n");
      assert.match(await c.reply(), /^250 2\.0\.0 OK \S+\r\n$/);
      assert.equal(sink.got.length, 1);
      const m = sink.got[0];
      assert.equal(m.from, "a@example.org");
      assert.deepEqual(m.to, ["b@example.org", "c@example.org"]);
      assert.equal(m.body.toString("latin1"), UNSTUFFED);
      assert.equal(m.size, Buffer.byteLength(UNSTUFFED, "latin1"));
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

  it("refuses a body over maxMessageSize with 552 and errors the hook's stream", async () => {
    let failed: (e: unknown) => void;
    const hookError = new Promise<unknown>((r) => (failed = r));
    const sink = collector();
    await withServer({
      maxMessageSize: 1000,
      async onMessage(m) {
        if (m.from === "ok@example.org") return sink.onMessage(m);
        try {
          await m.bytes();
        } catch (e) {
          failed(e);
        }
      },
    }, async (_server, open) => {
      const c = await greeted(open);
      await c.send(
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
      );
      await c.replies(3);
      await c.send(
        "y".repeat(100) + "\r\n".repeat(50) + "z".repeat(5000) + "\r\n.\r\n",
      );
      assert.equal(
        await c.reply(),
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n",
      );
      const e = await hookError;
      assert.ok(e instanceof SmtpError && e.code === 552);
      await c.send(
        "MAIL FROM:<ok@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
      );
      await c.replies(3);
      await c.send("small\r\n.\r\n");
      assert.match(await c.reply(), /^250 /);
      assert.equal(sink.got[0].body.toString(), "small\r\n");
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

  it("accepts a message whose hook read the start of raw and cancelled the rest", async () => {
    let head = "";
    await withServer({
      async onMessage(m) {
        const reader = m.raw.getReader();
        const { value } = await reader.read();
        head = new TextDecoder().decode(value!.subarray(0, 10));
        await reader.cancel();
      },
    }, async (_server, open) => {
      const c = await greeted(open);
      for (let i = 0; i < 2; i++) {
        await c.send(
          "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
        );
        await c.replies(3);
        await c.send("Subject: head\r\n\r\n" + "x\r\n".repeat(100000));
        await sleep(20);
        await c.send(".\r\n");
        assert.match(await c.reply(), /^250 2\.0\.0 OK /);
      }
      assert.equal(head, "Subject: h");
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

  it("answers a hook's plain Error with 451 4.3.0 without its text, and goes on", async () => {
    let calls = 0;
    const errors: LogEntry[] = [];
    const reported: unknown[] = [];
    const sink = collector();
    await withServer({
      onMailFrom() {
        if (++calls === 1) throw new Error("db password is hunter2");
      },
      onMessage: sink.onMessage,
      logger: (e) => e.type === "error" && errors.push(e),
      onError: (e) => reported.push(e),
    }, async (_server, open) => {
      const c = await greeted(open);
      await c.send("MAIL FROM:<a@example.org>\r\n");
      const reply = await c.reply();
      assert.equal(
        reply,
        "451 4.3.0 Temporary local problem, try again later\r\n",
      );
      assert.doesNotMatch(reply, /hunter2/);
      await c.send(
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
      );
      assert.deepEqual((await c.replies(3)).map((r) => r.slice(0, 3)), [
        "250",
        "250",
        "354",
      ]);
      await c.send("hi\r\n.\r\n");
      assert.match(await c.reply(), /^250 /);
      assert.equal(sink.got.length, 1);
      // The error goes to the logger and to onError, not to the client.
      assert.equal(errors.length, 1);
      assert.equal((reported[0] as Error).message, "db password is hunter2");
      assert.equal(reported.length, 1);
    });
  });

  it("sends the SmtpError that onMessage throws, before or after reading the body", async () => {
    let n = 0;
    await withServer({
      async onMessage(m) {
        if (++n === 2) await m.bytes();
        throw new SmtpError(554, "5.7.1", "Spam");
      },
    }, async (_server, open) => {
      const c = await greeted(open);
      for (let i = 0; i < 2; i++) {
        await c.send(
          "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
        );
        await c.replies(3);
        await c.send(
          "Subject: buy now\r\n\r\n" + "x".repeat(5000) + "\r\n.\r\n",
        );
        assert.equal(await c.reply(), "554 5.7.1 Spam\r\n");
      }
      await c.send("RSET\r\n");
      assert.equal(await c.reply(), "250 2.0.0 OK\r\n");
    });
  });

  it("sends onConnect's error and closes the connection", async () => {
    await withServer({
      onConnect() {
        throw new SmtpError(554, "5.7.1", "Go away");
      },
    }, async (_server, open) => {
      const c = await open();
      assert.equal(await c.reply(), "554 5.7.1 Go away\r\n");
      await c.closed();
      assert.equal(c.pending(), "");
    });
  });

  it("bounds a hook that never settles with hookTimeout (451 4.3.0)", async () => {
    await withServer({
      hookTimeout: 200,
      onRcptTo: () => new Promise<void>(() => {}),
    }, async (_server, open) => {
      const c = await greeted(open);
      await c.send("MAIL FROM:<a@example.org>\r\n");
      await c.reply();
      const t0 = Date.now();
      await c.send("RCPT TO:<b@example.org>\r\n");
      assert.equal(
        await c.reply(),
        "451 4.3.0 Temporary local problem, try again later\r\n",
      );
      const waited = Date.now() - t0;
      assert.ok(waited >= 180 && waited < 2000, `waited ${waited} ms`);
      // The session goes on.
      await c.send("NOOP\r\n");
      assert.equal(await c.reply(), "250 2.0.0 OK\r\n");
    });
  });

  it("bounds an onMessage that never settles with hookTimeout after the body", async () => {
    await withServer({
      hookTimeout: 200,
      onMessage: () => new Promise<void>(() => {}),
    }, async (_server, open) => {
      const c = await greeted(open);
      // A small body (the hook could have read it all) and one larger than
      // the stream's queue (the hook stops the reading from the client).
      for (const lines of [10, 100000]) {
        await c.send(
          "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
        );
        await c.replies(3);
        await c.send("x\r\n".repeat(lines) + ".\r\n");
        assert.equal(
          await c.reply(),
          "451 4.3.0 Temporary local problem, try again later\r\n",
        );
      }
      await c.send("NOOP\r\n");
      assert.equal(await c.reply(), "250 2.0.0 OK\r\n");
    });
  });

  it("times every hook from its own start, not from an earlier hook's", async () => {
    let slow = true;
    await withServer({
      hookTimeout: 200,
      onRcptTo: () => slow ? sleep(120) : new Promise<void>(() => {}),
    }, async (_server, open) => {
      const c = await greeted(open);
      await c.send("MAIL FROM:<a@example.org>\r\n");
      await c.reply();
      // Three hooks of 120 ms in a row: each within its own 200 ms.
      for (let i = 0; i < 3; i++) {
        await c.send(`RCPT TO:<b${i}@example.org>\r\n`);
        assert.equal(await c.reply(), "250 2.1.5 Recipient OK\r\n");
      }
      slow = false;
      const t0 = Date.now();
      await c.send("RCPT TO:<never@example.org>\r\n");
      assert.equal(
        await c.reply(),
        "451 4.3.0 Temporary local problem, try again later\r\n",
      );
      const waited = Date.now() - t0;
      assert.ok(waited >= 180 && waited < 2000, `waited ${waited} ms`);
    });
  });

  it("answers hooks that return no promise at once: accepted, or their SmtpError", async () => {
    let n = 0;
    await withServer({
      onRcptTo(address) {
        if (address.startsWith("no@")) {
          throw new SmtpError(550, "5.1.1", "No such user");
        }
      },
      onMessage(m) {
        if (++n === 1) throw new SmtpError(554, "5.7.1", `Refused ${m.from}`);
      },
    }, async (_server, open) => {
      const c = await greeted(open);
      for (let i = 0; i < 2; i++) {
        await c.send(
          "MAIL FROM:<a@example.org>\r\nRCPT TO:<no@example.org>\r\n" +
            "RCPT TO:<b@example.org>\r\nDATA\r\n",
        );
        assert.deepEqual((await c.replies(4)).map((r) => r.slice(0, 9)), [
          "250 2.1.0",
          "550 5.1.1",
          "250 2.1.5",
          "354 2.0.0",
        ]);
        await c.send("x".repeat(400000) + "\r\n.\r\n");
        if (i === 0) {
          assert.equal(await c.reply(), "554 5.7.1 Refused a@example.org\r\n");
        } else assert.match(await c.reply(), /^250 2\.0\.0 OK /);
      }
    });
  });

  it("calls onMessage with the first bytes of the body (an empty body at its end), not for a body that never began", async () => {
    const calls: { from: string; size: number; body: string }[] = [];
    await withServer({
      async onMessage(m) {
        const call = { from: m.from, size: m.size, body: "" };
        calls.push(call);
        call.body = new TextDecoder().decode(await m.bytes());
      },
    }, async (_server, open) => {
      const c = await greeted(open);
      const data = (from: string) =>
        `MAIL FROM:<${from}>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n`;
      await c.send(data("one@example.org"));
      assert.deepEqual((await c.replies(3)).map((r) => r.slice(0, 3)), [
        "250",
        "250",
        "354",
      ]);
      await sleep(50);
      assert.equal(calls.length, 0, "called before any body byte came");
      await c.send("Subject: one\r\n");
      for (let i = 0; i < 100 && calls.length === 0; i++) await sleep(5);
      assert.equal(calls.length, 1);
      assert.equal(calls[0].size, 14, "the first bytes are the message's");
      await c.send("\r\nbody\r\n.\r\n");
      assert.match(await c.reply(), /^250 2\.0\.0 OK /);
      assert.equal(calls[0].body, "Subject: one\r\n\r\nbody\r\n");
      // An empty body: the hook gets the message ended.
      await c.send(data("two@example.org") + ".\r\n");
      assert.deepEqual((await c.replies(4)).map((r) => r.slice(0, 3)), [
        "250",
        "250",
        "354",
        "250",
      ]);
      assert.deepEqual(calls[1], {
        from: "two@example.org",
        size: 0,
        body: "",
      });
      // The client leaves after the 354: no message, no call.
      await c.send(data("three@example.org"));
      assert.equal((await c.replies(3))[2].slice(0, 3), "354");
      await c.close();
      await sleep(50);
      assert.equal(calls.length, 2);
    });
  });

  it("delivers nothing when the client disconnects in the middle of DATA, and keeps serving", async () => {
    const results: string[] = [];
    const closedSessions: Session[] = [];
    let logged = 0;
    let hookDone: () => void;
    const hookFinished = new Promise<void>((r) => (hookDone = r));
    const sink = collector();
    await withServer({
      async onMessage(m) {
        if (m.from === "second@example.org") return sink.onMessage(m);
        try {
          await m.bytes();
          results.push("read");
        } catch (e) {
          results.push(`error: ${(e as Error).message}`);
          throw e;
        } finally {
          hookDone();
        }
      },
      onClose: (s) => closedSessions.push(s),
      logger: (e) => {
        if (e.type === "message") logged++;
      },
    }, async (_server, open) => {
      const c = await greeted(open);
      await c.send(
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
      );
      await c.replies(3);
      await c.send("Subject: cut short\r\n\r\n" + "y".repeat(100000));
      await sleep(50);
      await c.close();
      await hookFinished;
      assert.equal(results.length, 1);
      assert.match(results[0], /^error: /);
      // The server goes on serving.
      const d = await greeted(open);
      await d.send(
        "MAIL FROM:<second@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
      );
      await d.replies(3);
      await d.send("ok\r\n.\r\n");
      assert.match(await d.reply(), /^250 /);
      assert.equal(sink.got.length, 1);
      assert.equal(logged, 1);
      assert.equal(closedSessions[0].messages, 0);
    });
  });

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

  it("acknowledges a message of the for-await loop only when the loop moves on", async () => {
    await withServer({}, async (server, open) => {
      const bodies: string[] = [];
      let releasedAt = 0;
      const loop = (async () => {
        for await (const m of server) {
          bodies.push(await m.text());
          await sleep(200);
          releasedAt = Date.now();
        }
      })();
      const c = await greeted(open);
      await c.send(
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
      );
      await c.replies(3);
      const t0 = Date.now();
      await c.send("Subject: loop\r\n\r\nbody\r\n.\r\n");
      assert.match(await c.reply(), /^250 2\.0\.0 OK /);
      const t1 = Date.now();
      assert.ok(t1 - t0 >= 180, `250 after ${t1 - t0} ms`);
      assert.ok(releasedAt > 0 && t1 >= releasedAt);
      assert.deepEqual(bodies, ["Subject: loop\r\n\r\nbody\r\n"]);
      await c.send("QUIT\r\n");
      await c.reply();
      await server.close();
      await loop; // the loop ends when the server has closed
    });
  });

  it("does not hand the for-await loop a message whose client left while it waited", async () => {
    await withServer({}, async (server, open) => {
      const taken: string[] = [];
      const failed: string[] = [];
      const loop = (async () => {
        for await (const m of server) {
          taken.push(m.from);
          try {
            await m.bytes();
          } catch {
            failed.push(m.from);
          }
          if (m.from === "first@example.org") await sleep(300);
        }
      })();
      const send = async (c: Client, from: string, body: string) => {
        await c.send(
          `MAIL FROM:<${from}>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n`,
        );
        await c.replies(3);
        await c.send(body);
      };
      const a = await greeted(open);
      const b = await greeted(open);
      await send(a, "first@example.org", "one\r\n.\r\n");
      await sleep(50); // the loop holds the first message now
      await send(b, "second@example.org", "cut short");
      await sleep(50);
      await b.close();
      assert.match(await a.reply(), /^250 /);
      const c = await greeted(open);
      await send(c, "third@example.org", "three\r\n.\r\n");
      assert.match(await c.reply(), /^250 /);
      assert.deepEqual(taken, ["first@example.org", "third@example.org"]);
      assert.deepEqual(failed, []);
      await server.close();
      await loop;
    });
  });

  it("sends the reply given to message.reject() in the for-await loop", async () => {
    await withServer({}, async (server, open) => {
      const loop = (async () => {
        for await (const m of server) {
          await m.bytes();
          m.reject(new SmtpError(550, "5.7.1", "Rejected by policy"));
        }
      })();
      const c = await greeted(open);
      await c.send(
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
      );
      await c.replies(3);
      await c.send("x\r\n.\r\n");
      assert.equal(await c.reply(), "550 5.7.1 Rejected by policy\r\n");
      await server.close();
      await loop;
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

// ---------------------------------------------------------------- large

/** Runs `fn` with console.error captured; resolves with its calls. */
async function capturingConsoleError(
  fn: () => Promise<void>,
): Promise<unknown[][]> {
  const calls: unknown[][] = [];
  const original = console.error;
  console.error = (...args: unknown[]) => {
    calls.push(args);
  };
  try {
    await fn();
  } finally {
    console.error = original;
  }
  return calls;
}

/** Sends one message on a greeted client; resolves with the final reply. */
async function sendOne(c: Client, to = "b@example.org"): Promise<string> {
  await c.send(`MAIL FROM:<a@example.org>\r\nRCPT TO:<${to}>\r\nDATA\r\n`);
  const replies = await c.replies(3);
  if (!replies[2].startsWith("354")) return replies.join("");
  await c.send("Subject: x\r\n\r\nhi\r\n.\r\n");
  return await c.reply();
}

const TEMPORARY_REPLY =
  "451 4.3.0 Temporary local problem, try again later\r\n";

describe("server: application errors in hooks", () => {
  it("prints a hook's plain Error with console.error by default, once, with the hook's name and its stack", async () => {
    const bug = new Error("cannot store: database down");
    let id = "";
    const printed = await capturingConsoleError(() =>
      withServer({
        async onMessage(m) {
          id = m.session.id;
          await m.bytes();
          throw bug;
        },
      }, async (_server, open) => {
        const c = await greeted(open);
        const reply = await sendOne(c);
        assert.equal(reply, TEMPORARY_REPLY);
        assert.doesNotMatch(reply, /database/);
      })
    );
    assert.equal(printed.length, 1, String(printed));
    const [text, error] = printed[0];
    assert.equal(
      text,
      `smtpd: error in onMessage (session ${id}, client 127.0.0.1):`,
    );
    // The error itself: console.error prints it with its stack.
    assert.equal(error, bug);
    assert.match(String((error as Error).stack), /database down\n\s+at /);
  });

  it("gives every hook's error to onError with the hook's name, the session and the message; an SmtpError is a reply, not an error", async () => {
    const seen: { error: unknown; context: ErrorContext }[] = [];
    const boom = (hook: string) => new Error(`${hook} broke`);
    let closed = false;
    const printed = await capturingConsoleError(() =>
      withServer({
        allowInsecureAuth: true,
        auth: {
          required: false,
          verify({ username }) {
            if (username === "bug") throw boom("auth");
            return true;
          },
        },
        onHelo(name) {
          if (name === "bug.test") throw boom("onHelo");
        },
        onMailFrom(address) {
          if (address === "bug@example.org") {
            return Promise.reject(boom("onMailFrom"));
          }
          if (address === "no@example.org") {
            throw new SmtpError(550, "5.7.1", "Not you");
          }
        },
        onRcptTo(address) {
          if (address === "bug@example.org") throw boom("onRcptTo");
        },
        onMessage(m) {
          if (m.to.includes("sync@example.org")) throw boom("onMessage");
          return m.bytes().then(() => {
            if (m.to.includes("async@example.org")) {
              throw boom("onMessage async");
            }
          });
        },
        onClose() {
          if (!closed) {
            closed = true;
            throw boom("onClose");
          }
        },
        onError(error, context) {
          seen.push({ error, context });
        },
      }, async (_server, open) => {
        const c = await open();
        await c.reply();
        await c.send("EHLO bug.test\r\n");
        assert.equal(await c.reply(), TEMPORARY_REPLY);
        await c.send("EHLO c.test\r\n");
        await c.reply();
        await c.send(
          `AUTH PLAIN ${Buffer.from("\0bug\0pw").toString("base64")}\r\n`,
        );
        assert.match(await c.reply(), /^454 4\.7\.0 /);
        await c.send("MAIL FROM:<bug@example.org>\r\n");
        assert.equal(await c.reply(), TEMPORARY_REPLY);
        await c.send("MAIL FROM:<no@example.org>\r\n");
        assert.match(await c.reply(), /^550 5\.7\.1 Not you/);
        await c.send(
          "MAIL FROM:<a@example.org>\r\nRCPT TO:<bug@example.org>\r\nRSET\r\n",
        );
        assert.equal((await c.replies(3))[1], TEMPORARY_REPLY);
        assert.equal(await sendOne(c, "sync@example.org"), TEMPORARY_REPLY);
        await c.send("RSET\r\n");
        await c.reply();
        assert.equal(await sendOne(c, "async@example.org"), TEMPORARY_REPLY);
        await c.send("RSET\r\n");
        await c.reply();
        assert.match(await sendOne(c), /^250 /);
        await c.send("QUIT\r\n");
        await c.closed();
      })
    );
    assert.deepEqual(printed, []);
    assert.deepEqual(
      seen.map((e) => [e.context.hook, (e.error as Error).message]),
      [
        ["onHelo", "onHelo broke"],
        ["auth", "auth broke"],
        ["onMailFrom", "onMailFrom broke"],
        ["onRcptTo", "onRcptTo broke"],
        ["onMessage", "onMessage broke"],
        ["onMessage", "onMessage async broke"],
        ["onClose", "onClose broke"],
      ],
    );
    const session = seen[0].context.session;
    for (const { context } of seen) {
      assert.equal(context.session, session);
      assert.equal(context.session.remoteAddress, "127.0.0.1");
    }
    assert.deepEqual(
      seen.map((e) => e.context.message?.to ?? null),
      [
        null,
        null,
        null,
        null,
        ["sync@example.org"],
        ["async@example.org"],
        null,
      ],
    );
  });

  it("an onError that throws or rejects does not stop the server; what it threw is printed", async () => {
    let calls = 0;
    const printed = await capturingConsoleError(() =>
      withServer({
        onMailFrom() {
          throw new Error("hook bug");
        },
        onError() {
          if (++calls === 1) throw new Error("onError bug");
          return Promise.reject(new Error("onError async bug")) as never;
        },
      }, async (_server, open) => {
        const c = await greeted(open);
        for (let i = 0; i < 2; i++) {
          await c.send("MAIL FROM:<a@example.org>\r\n");
          assert.equal(await c.reply(), TEMPORARY_REPLY);
        }
        await c.send("NOOP\r\n");
        assert.match(await c.reply(), /^250 /);
      })
    );
    assert.equal(calls, 2);
    assert.deepEqual(
      printed.map((p) => [p[0], (p[1] as Error).message]),
      [
        ["smtpd: onError failed:", "onError bug"],
        ["smtpd: onError failed:", "onError async bug"],
      ],
    );
  });

  it("onError must be a function", async () => {
    await assert.rejects(
      serve({ port: 0, onError: "log" as never }),
      (e: unknown) =>
        e instanceof TypeError &&
        e.message === "Cannot use option onError: value is not a function",
    );
  });
});

const MiB = 1024 * 1024;
const LARGE = 50 * MiB;
const CHUNK = 64 * 1024;
const LINE = 64; // bytes per body line, CRLF included

/** Chunk `i` of the large body: 64-byte lines numbered across the body. */
function largeChunk(i: number): Buffer {
  const b = Buffer.allocUnsafe(CHUNK);
  const lines = CHUNK / LINE;
  for (let j = 0; j < lines; j++) {
    const n = i * lines + j;
    const at = j * LINE;
    b.write(String(n).padStart(10, "0"), at, "latin1");
    b.fill(97 + (n % 26), at + 10, at + LINE - 2);
    b[at + LINE - 2] = 13;
    b[at + LINE - 1] = 10;
  }
  return b;
}

/** A function that runs a full garbage collection, on Deno, Bun or Node. */
function findGc(): () => void {
  const g = globalThis as {
    gc?: () => void;
    Bun?: { gc(force: boolean): void };
  };
  if (g.Bun) return () => g.Bun!.gc(true);
  if (g.gc) return g.gc;
  v8.setFlagsFromString("--expose-gc");
  return vm.runInNewContext("gc") as () => void;
}

describe("server with a large message", () => {
  let server: Server | null = null;
  let client: Client | null = null;
  after(async () => {
    await client?.close();
    await server?.close();
  });

  it("streams a 50 MB body to a slow reader with bounded memory", async () => {
    let seen = 0;
    let digest = "";
    server = await serve({
      hostname: "127.0.0.1",
      port: 0,
      maxMessageSize: 64 * MiB,
      async onMessage(m) {
        const hash = createHash("sha256");
        const reader = m.raw.getReader();
        let pauses = 0;
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          hash.update(value);
          seen += value.byteLength;
          // A slow consumer (about 12 MB/s, slower than the client on
          // every runtime): 80 ms of pause per MiB read.
          if (seen >= (pauses + 1) * MiB) {
            pauses++;
            await sleep(80);
          }
        }
        digest = hash.digest("hex");
      },
    });
    const c = client = await connect(server.addr.port);
    await c.reply();
    await c.send("EHLO client.test\r\n");
    await c.reply();
    await c.send(
      "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
    );
    await c.replies(3);

    // Every byte that comes in is a fresh buffer on all three runtimes, so
    // garbage alone can add some 40 MiB of RSS before a lazy collection:
    // collect every few MiB so that what is measured is what the server
    // keeps, which must stay far below the message size.
    const gc = findGc();
    gc();
    const base = process.memoryUsage().rss;
    let peak = base;
    const sampler = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss);
    }, 20);
    const expected = createHash("sha256");
    let ahead = 0;
    const t0 = Date.now();
    try {
      for (let i = 0; i < LARGE / CHUNK; i++) {
        const chunk = largeChunk(i);
        expected.update(chunk);
        if (i % 64 === 63) {
          peak = Math.max(peak, process.memoryUsage().rss);
          gc();
        }
        const flushed = c.socket.write(chunk);
        if (!flushed) {
          await new Promise<void>((r) => c.socket.once("drain", () => r()));
        }
      }
      // With backpressure, the client can only be this far ahead of the
      // reader: socket buffers and the stream queues, not the message.
      ahead = LARGE - seen;
      await c.send(".\r\n");
      assert.match(await c.reply(), /^250 2\.0\.0 OK /);
    } finally {
      clearInterval(sampler);
    }
    peak = Math.max(peak, process.memoryUsage().rss);
    const seconds = (Date.now() - t0) / 1000;
    const growth = (peak - base) / MiB;
    assert.equal(seen, LARGE);
    assert.ok(ahead < 16 * MiB, `the client was ${ahead} bytes ahead`);
    assert.equal(digest, expected.digest("hex"));
    assert.ok(growth < 40, `RSS grew by ${growth.toFixed(1)} MiB`);
    assert.ok(seconds < 20, `took ${seconds.toFixed(1)} s`);
  });
});
