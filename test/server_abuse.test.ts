// Abuse controls over real TCP (127.0.0.1 only): the AUTH failure budget
// per client address across connections, the delay of failed AUTH, the
// authorization identity of AUTH PLAIN, and commandTimeout against a client
// that dribbles a command line.
import { setTimeout as sleep } from "node:timers/promises";
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import type { LogEntry, ServeOptions, Server } from "../mod.ts";
import { type Client, connect, withServerUsing } from "./helpers/client.ts";

const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64");
const plain = (authzid: string, user: string, password: string) =>
  `AUTH PLAIN ${b64(`${authzid}\0${user}\0${password}`)}\r\n`;

function withServer(
  options: ServeOptions,
  fn: (server: Server, open: () => Promise<Client>) => Promise<void>,
): Promise<void> {
  return withServerUsing(
    { allowInsecureAuth: true, ...options },
    (port) => connect(port),
    fn,
  );
}

async function greeted(open: () => Promise<Client>): Promise<Client> {
  const c = await open();
  assert.match(await c.reply(), /^220 /);
  await c.send("EHLO client.test\r\n");
  assert.match(await c.reply(), /^250-/);
  return c;
}

const code = (reply: string) => reply.slice(0, 9);
const users = {
  lookupPassword: (u: string) => (u === "alice" ? "right" : null),
};

describe("AUTH failure budget per client address", () => {
  it("locks an address out across connections: 454 4.7.0 even with the right password", async () => {
    const log: LogEntry[] = [];
    await withServer({
      auth: users,
      maxAuthFailuresPerIp: 3,
      authFailureWindow: 60_000,
      logger: (e) => log.push(e),
    }, async (_server, open) => {
      // One wrong guess per connection: the per-connection limit never trips.
      const delays: number[] = [];
      for (let i = 0; i < 3; i++) {
        const c = await greeted(open);
        const t0 = Date.now();
        await c.send(plain("", "alice", `wrong${i}`));
        assert.equal(code(await c.reply()), "535 5.7.8");
        delays.push(Date.now() - t0);
        await c.close();
      }
      // Each failure is answered later than the last: 250 ms per failure.
      assert.ok(delays[0] >= 200, `delays ${delays}`);
      assert.ok(delays[2] >= 700, `delays ${delays}`);
      const c = await greeted(open);
      await c.send(plain("", "alice", "right"));
      assert.match(
        await c.reply(),
        /^454 4\.7\.0 Too many failed authentications from your address/,
      );
      const lockouts = log.filter((e) => e.type === "auth-lockout");
      assert.deepEqual(
        lockouts.map((e) =>
          e.type === "auth-lockout" && [e.remoteAddress, e.failures]
        ),
        [["127.0.0.1", 3]],
      );
    });
  });

  it("the right password works while the budget lasts", async () => {
    await withServer(
      { auth: users, maxAuthFailuresPerIp: 3 },
      async (_s, open) => {
        const c = await greeted(open);
        await c.send(plain("", "alice", "wrong"));
        assert.equal(code(await c.reply()), "535 5.7.8");
        await c.send(plain("", "alice", "right"));
        assert.equal(code(await c.reply()), "235 2.7.0");
      },
    );
  });

  it("Infinity turns it off: no delay, no lock-out", async () => {
    await withServer(
      { auth: users, maxAuthFailuresPerIp: Infinity, maxAuthFailures: 100 },
      async (_s, open) => {
        const c = await greeted(open);
        const t0 = Date.now();
        for (let i = 0; i < 20; i++) {
          await c.send(plain("", "alice", "wrong"));
          assert.equal(code(await c.reply()), "535 5.7.8");
        }
        assert.ok(Date.now() - t0 < 2000);
        await c.send(plain("", "alice", "right"));
        assert.equal(code(await c.reply()), "235 2.7.0");
      },
    );
  });

  it("delays do not hold up other connections, and close() cuts them short", async () => {
    const server = await import("../mod.ts").then((m) =>
      m.serve({
        hostname: "127.0.0.1",
        port: 0,
        allowInsecureAuth: true,
        auth: users,
        maxAuthFailuresPerIp: 100,
      })
    );
    const clients: Client[] = [];
    try {
      for (let i = 0; i < 12; i++) {
        const c = await connect(server.addr.port);
        clients.push(c);
        assert.match(await c.reply(), /^220 /);
        await c.send("EHLO client.test\r\n");
        await c.reply();
      }
      // 12 failures at once: delays of 250 ms up to 3 s, side by side.
      const answers = clients.map(async (c) => {
        await c.send(plain("", "alice", "wrong"));
        return c.reply();
      });
      await sleep(1200);
      // Another client is served at once meanwhile.
      const other = await connect(server.addr.port);
      clients.push(other);
      const t0 = Date.now();
      assert.match(await other.reply(), /^220 /);
      await other.send("NOOP\r\n");
      assert.match(await other.reply(), /^250 /);
      assert.ok(Date.now() - t0 < 500);
      const t1 = Date.now();
      await server.close();
      assert.ok(Date.now() - t1 < 1000, `close took ${Date.now() - t1} ms`);
      for (const r of await Promise.all(answers)) {
        assert.equal(code(r), "535 5.7.8");
      }
    } finally {
      await Promise.all(clients.map((c) => c.close()));
      await server.close();
    }
  });

  it("counts a guess when it begins: 30 guesses at once against a slow verify get exactly the budget checked", async () => {
    let checked = 0;
    await withServer({
      auth: {
        verify: async () => {
          checked++;
          await sleep(300);
          return false;
        },
      },
      maxAuthFailuresPerIp: 10,
    }, async (_s, open) => {
      const clients = await Promise.all(
        Array.from({ length: 30 }, () => greeted(open)),
      );
      const replies = await Promise.all(clients.map(async (c) => {
        await c.send(plain("", "alice", "guess"));
        return code(await c.reply());
      }));
      assert.equal(checked, 10);
      assert.equal(replies.filter((r) => r === "535 5.7.8").length, 10);
      assert.equal(replies.filter((r) => r === "454 4.7.0").length, 20);
    });
  });

  it("attempts at once from one address wait for those in flight, then go ahead", async () => {
    let checked = 0;
    await withServer({
      auth: {
        verify: async ({ password }) => {
          checked++;
          await sleep(100);
          return password === "right";
        },
      },
      maxAuthFailuresPerIp: 3,
    }, async (_s, open) => {
      // A busy client with 8 connections, every one with the right password.
      const clients = await Promise.all(
        Array.from({ length: 8 }, () => greeted(open)),
      );
      const replies = await Promise.all(clients.map(async (c) => {
        await c.send(plain("", "alice", "right"));
        return code(await c.reply());
      }));
      assert.deepEqual(replies, Array(8).fill("235 2.7.0"));
      assert.equal(checked, 8);
    });
  });

  it("a flood of other addresses cannot free a lock-out (the table refuses new ones while full)", async () => {
    const { LocalClientLimits } = await import("../src/limits.ts");
    const limits = new LocalClientLimits({
      maxConnectionsPerIp: Infinity,
      maxAuthFailuresPerIp: 2,
      authFailureWindow: 60_000,
      capacity: 20,
      now: () => Date.now(),
    });
    await withServer(
      { auth: users, proxyProtocol: true, limits },
      async (_s, open) => {
        const from = async (ip: string, port: number) => {
          const c = await open();
          await c.send(`PROXY TCP4 ${ip} 127.0.0.1 ${port} 25\r\n`);
          assert.match(await c.reply(), /^220 /);
          await c.send("EHLO client.test\r\n");
          assert.match(await c.reply(), /^250-/);
          return c;
        };
        const attacker = await from("192.0.2.1", 1000);
        for (const password of ["wrong1", "wrong2"]) {
          await attacker.send(plain("", "alice", password));
          assert.equal(code(await attacker.reply()), "535 5.7.8");
        }
        await attacker.send(plain("", "alice", "right"));
        assert.equal(code(await attacker.reply()), "454 4.7.0");
        // 25 other addresses fail once each: 19 are counted, then the
        // table is full and the others are refused without a check.
        const others = await Promise.all(
          Array.from({ length: 25 }, async (_, i) => {
            const c = await from(`198.51.100.${i + 1}`, 2000 + i);
            await c.send(plain("", "alice", "wrong"));
            return code(await c.reply());
          }),
        );
        assert.equal(others.filter((r) => r === "535 5.7.8").length, 19);
        assert.equal(others.filter((r) => r === "454 4.7.0").length, 6);
        // The lock-out holds, the right password still refused.
        const again = await from("192.0.2.1", 1001);
        await again.send(plain("", "alice", "right"));
        assert.equal(code(await again.reply()), "454 4.7.0");
      },
    );
  });

  it("limits that answer with promises are awaited; one that cannot count fails AUTH closed without a check", async () => {
    let checked = 0;
    const asked: string[] = [];
    await withServer({
      auth: {
        verify: () => {
          checked++;
          return true;
        },
      },
      limits: {
        connect: async (key) => {
          asked.push(`connect ${key}`);
          await sleep(10);
          return true;
        },
        disconnect: (key) => void asked.push(`disconnect ${key}`),
        authStart: async () => {
          await sleep(10);
          return { verdict: "unavailable", failures: 0 };
        },
        authEnd: () => ({ failures: 0, lockedOut: false }),
      },
    }, async (_s, open) => {
      const c = await greeted(open);
      await c.send(plain("", "alice", "right"));
      assert.match(
        await c.reply(),
        /^454 4\.7\.0 Temporary authentication failure/,
      );
      assert.equal(checked, 0);
      await c.close();
      for (let i = 0; i < 100 && asked.length < 2; i++) await sleep(10);
      assert.deepEqual(asked, ["connect 127.0.0.1", "disconnect 127.0.0.1"]);
    });
  });

  it("bad values throw a TypeError", async () => {
    const { serve } = await import("../mod.ts");
    for (
      const o of [
        { maxAuthFailuresPerIp: 0 },
        { maxAuthFailuresPerIp: -1 },
        { maxAuthFailuresPerIp: "10" },
        { authFailureWindow: 0 },
        { authFailureWindow: Infinity },
        { limits: {} },
        { limits: "shared" },
      ] as ServeOptions[]
    ) {
      await assert.rejects(
        serve({ port: 0, ...o }),
        (e: unknown) =>
          e instanceof TypeError && /^Cannot use option/.test(e.message),
      );
    }
  });
});

describe("AUTH PLAIN authorization identity", () => {
  it("a foreign authzid gets 535 5.7.8 by default (lookupPassword)", async () => {
    await withServer({ auth: users }, async (_s, open) => {
      const c = await greeted(open);
      await c.send(plain("bob", "alice", "right"));
      assert.equal(code(await c.reply()), "535 5.7.8");
    });
  });

  it("verify sees it, but its true accepts the login only: 535 without authorize", async () => {
    const seen: (string | undefined)[] = [];
    await withServer({
      auth: {
        verify: (c) => {
          seen.push(c.authorizationId);
          return c.password === "right";
        },
      },
    }, async (_s, open) => {
      const c = await greeted(open);
      await c.send(plain("bob", "alice", "right"));
      assert.equal(code(await c.reply()), "535 5.7.8");
    });
    assert.deepEqual(seen, ["bob"]);
  });

  it("accepted when authorize allows it; refused when it does not", async () => {
    const asked: string[] = [];
    await withServer({
      auth: {
        ...users,
        authorize: (authzid, credentials) => {
          asked.push(`${credentials.username} as ${authzid}`);
          return authzid === "bob";
        },
      },
    }, async (_s, open) => {
      const c = await greeted(open);
      await c.send(plain("carol", "alice", "right"));
      assert.equal(code(await c.reply()), "535 5.7.8");
      await c.send(plain("bob", "alice", "right"));
      assert.equal(code(await c.reply()), "235 2.7.0");
    });
    assert.deepEqual(asked, ["alice as carol", "alice as bob"]);
  });

  it("an authzid equal to the login is accepted without authorize", async () => {
    await withServer({ auth: users }, async (_s, open) => {
      const c = await greeted(open);
      await c.send(plain("alice", "alice", "right"));
      assert.equal(code(await c.reply()), "235 2.7.0");
    });
  });

  it("authorize is not asked when the password is wrong", async () => {
    let asked = 0;
    await withServer({
      auth: { ...users, authorize: () => (++asked, true) },
    }, async (_s, open) => {
      const c = await greeted(open);
      await c.send(plain("bob", "alice", "wrong"));
      assert.equal(code(await c.reply()), "535 5.7.8");
    });
    assert.equal(asked, 0);
  });
});

describe("commandTimeout over TCP", () => {
  it("a command dribbled one byte per 100 ms gets 421 4.4.2 at the deadline", async () => {
    await withServer({ commandTimeout: 500 }, async (_s, open) => {
      const c = await open();
      assert.match(await c.reply(), /^220 /);
      const t0 = Date.now();
      const line = "EHLO a-very-slow-client.example\r\n";
      let sent = 0;
      const reply = c.reply();
      // Keep dribbling until the server answers (or closes).
      let done = false;
      void reply.finally(() => (done = true)).catch(() => {});
      while (!done && sent < line.length) {
        await c.send(line[sent++]).catch(() => {});
        await sleep(100);
      }
      assert.match(
        await reply,
        /^421 4\.4\.2 mx\.test Command timeout, closing connection\r\n$/,
      );
      const took = Date.now() - t0;
      assert.ok(took >= 450 && took < 1500, `took ${took} ms`);
      assert.ok(sent < 10, `sent ${sent} bytes`);
      await c.closed();
    });
  });

  it("a slow but complete command within it passes", async () => {
    await withServer({ commandTimeout: 800 }, async (_s, open) => {
      const c = await open();
      assert.match(await c.reply(), /^220 /);
      for (let round = 0; round < 2; round++) {
        for (const ch of "NOOP\r\n") {
          await c.send(ch);
          await sleep(100);
        }
        assert.match(await c.reply(), /^250 /);
      }
    });
  });

  it("sessionTimeout ends a busy session", async () => {
    await withServer({ sessionTimeout: 600 }, async (_s, open) => {
      const c = await open();
      assert.match(await c.reply(), /^220 /);
      const t0 = Date.now();
      let last = "";
      while (Date.now() - t0 < 3000) {
        await c.send("NOOP\r\n").catch(() => {});
        last = await c.reply().catch(() => "closed");
        if (!last.startsWith("250")) break;
        await sleep(50);
      }
      assert.match(last, /^421 4\.4\.2 mx\.test Session too long/);
      assert.ok(Date.now() - t0 < 1500);
    });
  });
});
