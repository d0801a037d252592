// Safe defaults and delivery guarantees of serve(): unknown option names
// are refused, and a message is delivered once or not at all (a hook or a
// loop that runs past hookTimeout sees its message's signal abort, and the
// for-await loop never hands out a message the sender was answered for).
import { setTimeout as sleep } from "node:timers/promises";
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type Message, serve, type ServeOptions, SmtpError } from "../mod.ts";
import { type Client, connect, withServerUsing } from "./helpers/client.ts";

async function greeted(open: () => Promise<Client>): Promise<Client> {
  const c = await open();
  assert.match(await c.reply(), /^220 /);
  await c.send("EHLO client.test\r\n");
  assert.match(await c.reply(), /^250-/);
  return c;
}

async function sendMessage(c: Client, from: string): Promise<string> {
  await c.send(
    `MAIL FROM:<${from}>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n`,
  );
  await c.replies(3);
  await c.send(`Subject: ${from}\r\n\r\nbody\r\n.\r\n`);
  return await c.reply();
}

const withServer = (
  options: ServeOptions,
  fn: Parameters<typeof withServerUsing<Client>>[2],
) => withServerUsing(options, (port) => connect(port), fn);

describe("option names", () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [
      { maxMesageSize: 10 },
      /option maxMesageSize: unknown option \(did you mean maxMessageSize\?\)/,
    ],
    [{ hookTimout: 10 }, /did you mean hookTimeout\?/],
    [{ HOSTNAME: "127.0.0.1" }, /did you mean hostname\?/],
    [
      { size: 1024 },
      /option size: unknown option \(smtpd's option is maxMessageSize\)/,
    ],
    [{ authOptional: true }, /smtpd's option is auth: \{ required: false \}/],
    [{ onData: () => {} }, /smtpd's option is onMessage/],
    [{ frobnicate: 1 }, /^Cannot use option frobnicate: unknown option$/],
    [
      { auth: { verify: () => true, requried: false } },
      /option auth\.requried: unknown option \(did you mean auth\.required\?\)/,
    ],
    [
      { tls: { key: "", cret: "" } },
      /option tls\.cret: unknown option \(did you mean tls\.cert\?\)/,
    ],
    [
      {
        tls: { key: "k", cert: "c", sni: { "a.test": { key: "k", crt: "c" } } },
      },
      /option tls\.sni\["a\.test"\]\.crt: unknown option \(did you mean tls\.sni\["a\.test"\]\.cert\?\)/,
    ],
  ];
  for (const [options, message] of cases) {
    it(`serve(${JSON.stringify(options)}) throws a TypeError naming the key`, async () => {
      await assert.rejects(
        serve({ hostname: "127.0.0.1", port: 0, ...options } as ServeOptions),
        (err: unknown) => {
          assert.ok(err instanceof TypeError, String(err));
          assert.match(err.message, message);
          return true;
        },
      );
    });
  }

  it("the engine refuses unknown option names too", async () => {
    const { SmtpEngine } = await import("../src/exports/engine.ts");
    assert.throws(
      () => new SmtpEngine({ maxRecipient: 5 } as Record<string, unknown>),
      /^TypeError: Cannot use option maxRecipient: unknown option \(did you mean maxRecipients\?\)$/,
    );
  });

  it("every documented option name is accepted", async () => {
    const server = await serve({
      hostname: "127.0.0.1",
      port: 0,
      serverName: "mx.test",
      greeting: "ESMTP test",
      maxLineLength: 1000,
      maxRecipients: 10,
      maxMessageSize: 1000,
      maxBadCommands: 5,
      bareLineEnding: "normalize",
      dsn: true,
      smtputf8: false,
      idleTimeout: 1000,
      dataTimeout: 1000,
      allowInsecureAuth: true,
      requireTls: false,
      maxAuthFailures: 2,
      maxConnections: 10,
      maxConnectionsPerIp: 5,
      hookTimeout: 1000,
      closeTimeout: 1000,
      handshakeTimeout: 1000,
      logger: () => {},
      auth: { verify: () => true, mechanisms: ["PLAIN"], required: false },
      onConnect: () => {},
      onHelo: () => {},
      onMailFrom: () => {},
      onRcptTo: () => {},
      onMessage: () => {},
      onClose: () => {},
    });
    await server.close();
  });
});

describe("delivered once or not at all", () => {
  it("aborts message.signal when onMessage runs past hookTimeout; the sender gets 451", async () => {
    let seen: Message | null = null;
    let abortedAt = 0;
    let stored = false;
    await withServer({
      hookTimeout: 200,
      async onMessage(m) {
        seen = m;
        m.signal.addEventListener("abort", () => (abortedAt = Date.now()));
        await m.bytes();
        await sleep(600); // a slow store
        if (!m.signal.aborted) stored = true;
      },
    }, async (_server, open) => {
      const c = await greeted(open);
      const t0 = Date.now();
      assert.equal(
        await sendMessage(c, "a@example.org"),
        "451 4.3.0 Temporary local problem, try again later\r\n",
      );
      assert.ok(seen !== null);
      const m = seen as Message;
      assert.ok(m.signal.aborted, "the signal aborted");
      assert.ok(abortedAt - t0 >= 150, `aborted after ${abortedAt - t0} ms`);
      assert.equal((m.signal.reason as { code?: number }).code, 451);
      await sleep(700);
      assert.equal(stored, false, "the hook saw the abort and kept nothing");
    });
  });

  it("leaves message.signal alone when the message is accepted", async () => {
    let signal: AbortSignal | null = null;
    await withServer({
      onMessage(m) {
        signal = m.signal;
      },
    }, async (_server, open) => {
      const c = await greeted(open);
      assert.match(await sendMessage(c, "a@example.org"), /^250 /);
      assert.equal((signal as AbortSignal | null)?.aborted, false);
    });
  });

  it("aborts message.signal when the client leaves in the middle of the body", async () => {
    let signal: AbortSignal | null = null;
    const aborted = new Promise<void>((resolve) => {
      void withServer({
        async onMessage(m) {
          signal = m.signal;
          m.signal.addEventListener("abort", () => resolve());
          await m.bytes().catch(() => {});
        },
      }, async (_server, open) => {
        const c = await greeted(open);
        await c.send(
          "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
        );
        await c.replies(3);
        await c.send("Subject: cut\r\n\r\npart of a bo");
        await sleep(100);
        await c.close();
        await sleep(100);
      });
    });
    await aborted;
    assert.equal((signal as AbortSignal | null)?.aborted, true);
  });

  it("never hands the for-await loop a message that already got 451", async () => {
    await withServer({ hookTimeout: 200 }, async (server, open) => {
      const c = await greeted(open);
      // Nobody takes messages yet: the sender gets 451 after hookTimeout.
      assert.equal(
        await sendMessage(c, "early@example.org"),
        "451 4.3.0 Temporary local problem, try again later\r\n",
      );
      const taken: string[] = [];
      const loop = (async () => {
        for await (const m of server) taken.push(m.from);
      })();
      assert.match(await sendMessage(c, "late@example.org"), /^250 /);
      await c.send("QUIT\r\n");
      await c.reply();
      await server.close();
      await loop;
      assert.deepEqual(taken, ["late@example.org"]);
    });
  });

  it("answers each message by its own hook when a hook given up on settles during a later message", async () => {
    // Gates the test opens: the first message's hook settles while the
    // second's still runs, and the second's after the first's.
    const gates = new Map<string, () => void>();
    const opened = (from: string) =>
      new Promise<void>((r) => gates.set(from, r));
    const reported: unknown[] = [];
    await withServer({
      hookTimeout: 200,
      onError: (e) => reported.push(e),
      async onMessage(m) {
        await m.bytes();
        if (m.from === "third@example.org") return;
        await opened(m.from);
        if (m.from === "first@example.org") throw new Error("late failure");
        throw new SmtpError(550, "5.7.1", `Refused ${m.from}`);
      },
    }, async (_server, open) => {
      const c = await greeted(open);
      assert.equal(
        await sendMessage(c, "first@example.org"),
        "451 4.3.0 Temporary local problem, try again later\r\n",
      );
      const second = sendMessage(c, "second@example.org");
      while (!gates.has("second@example.org")) await sleep(10);
      gates.get("first@example.org")!(); // the first hook fails now
      await sleep(50);
      // Failing once given up on is the abort itself: not an error to report.
      assert.deepEqual(reported, []);
      gates.get("second@example.org")!();
      assert.equal(
        await second,
        "550 5.7.1 Refused second@example.org\r\n",
      );
      assert.match(await sendMessage(c, "third@example.org"), /^250 /);
      await c.send("QUIT\r\n");
      await c.reply();
    });
  });

  it("aborts the signal of a loop message whose loop body runs past hookTimeout", async () => {
    await withServer({ hookTimeout: 200 }, async (server, open) => {
      const kept: string[] = [];
      const loop = (async () => {
        for await (const m of server) {
          await m.bytes();
          if (m.from === "slow@example.org") await sleep(500);
          if (!m.signal.aborted) kept.push(m.from);
        }
      })();
      const c = await greeted(open);
      assert.equal(
        await sendMessage(c, "slow@example.org"),
        "451 4.3.0 Temporary local problem, try again later\r\n",
      );
      await sleep(400);
      assert.match(await sendMessage(c, "next@example.org"), /^250 /);
      await c.send("QUIT\r\n");
      await c.reply();
      await server.close();
      await loop;
      assert.deepEqual(kept, ["next@example.org"]);
    });
  });
});

describe("Maildir and message.signal", () => {
  it("does not land a message whose signal aborted before the rename", async () => {
    const { mkdtempSync, readdirSync, rmSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const { join } = await import("node:path");
    const { Maildir } = await import("../src/maildir.ts");
    const dir = mkdtempSync(join(tmpdir(), "smtpd-signal-"));
    try {
      const maildir = new Maildir(dir);
      const controller = new AbortController();
      const body = new TextEncoder().encode("Subject: x\r\n\r\nbody\r\n");
      const message = {
        id: "m1",
        from: "a@example.org",
        to: ["b@example.org"],
        mailFrom: {
          mailbox: {
            address: "a@example.org",
            localPart: "a",
            domain: "example.org",
          },
          params: {},
        },
        session: {
          heloName: "client.test",
          remoteAddress: "127.0.0.1",
          esmtp: true,
          secure: false,
          tls: null,
          user: null,
        },
        raw: new ReadableStream<Uint8Array>({
          pull(c) {
            // The server gives up while the body is being written.
            controller.abort(new Error("hookTimeout"));
            c.enqueue(body);
            c.close();
          },
        }),
        signal: controller.signal,
      };
      await assert.rejects(
        // deno-lint-ignore no-explicit-any
        maildir.deliver(message as any),
        /hookTimeout/,
      );
      assert.deepEqual(readdirSync(join(dir, "new")), []);
      assert.deepEqual(readdirSync(join(dir, "tmp")), []);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("delivery objects", () => {
  it("a connection that ended with no message in transfer gives its delivery object to the next one, one with a message keeps it", async () => {
    const { MessageDelivery } = await import("../src/delivery.ts");
    type Owner = Parameters<typeof MessageDelivery.for>[0];
    const owner = () => ({}) as Owner;
    const a = MessageDelivery.for(owner());
    a.release();
    const b = MessageDelivery.for(owner());
    assert.equal(b, a);
    // A message in transfer (its hook may still use it): not given.
    b.message = {} as typeof b.message;
    b.release();
    const c = MessageDelivery.for(owner());
    assert.notEqual(c, b);
    assert.equal(c.message, null);
  });
});
