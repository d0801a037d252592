// The application's hooks in serve() over real TCP, on whichever runtime
// runs this file: an SmtpError is the reply, a plain Error is 451 4.3.0
// without its text, hookTimeout bounds a hook that never settles, a hook
// may return no promise, and an application's errors go to console.error
// or to onError. Every server listens on 127.0.0.1 port 0 and is closed in
// a finally block, with its client sockets.
import { setTimeout as sleep } from "node:timers/promises";
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { type ErrorContext, type LogEntry, serve, SmtpError } from "../mod.ts";
import {
  type Client,
  collector,
  greeted,
  withServer,
} from "./helpers/client.ts";

describe("server", () => {
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
});

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
