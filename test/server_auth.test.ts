// SMTP AUTH (RFC 4954) over real TCP, on the runtime that runs this file:
// swaks with PLAIN, LOGIN and CRAM-MD5 over STARTTLS, and a raw client for
// the rules (AUTH only over TLS unless allowed, requireTls, auth.required,
// the failure limit, session.user and STARTTLS, what the log may show).
// Every server listens on 127.0.0.1 port 0 and is closed in after/finally.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHmac } from "node:crypto";
import {
  type AuthCredentials,
  type LogEntry,
  serve,
  type ServeOptions,
  type Server,
  SmtpError,
} from "../mod.ts";
import {
  ehlo,
  idle,
  run,
  starttls,
  TLS,
  upgrade,
  type Wire,
  withServer,
} from "./helpers/tls.ts";

const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64");
const unb64 = (s: string) => Buffer.from(s, "base64").toString("utf8");

const USERS: Record<string, string> = {
  alice: "c0rrect-h0rse",
  "bob@example.org": "b4ttery st@ple",
};

/** Every log entry as one string (errors by message and stack). */
function logText(entries: LogEntry[]): string {
  return JSON.stringify(
    entries,
    (_k, v) => v instanceof Error ? { message: v.message, stack: v.stack } : v,
  );
}

/** What a logged-in client may have sent that must never be logged. */
function secrets(user: string, password: string): string[] {
  return [
    password,
    b64(password),
    b64(`\0${user}\0${password}`),
    b64(`${user}\0${user}\0${password}`),
  ];
}

describe("swaks AUTH over STARTTLS", () => {
  let server: Server;
  const log: LogEntry[] = [];
  const users: (string | null)[] = [];
  /** Base64 lines swaks sent in answer to a 334 (must not be logged). */
  const sent: string[] = [];

  const start = () =>
    serve({
      hostname: "127.0.0.1",
      port: 0,
      serverName: "mx.test",
      tls: TLS,
      auth: {
        required: true,
        lookupPassword: (user) => USERS[user] ?? null,
      },
      logger: (e) => log.push(e),
      async onMessage(m) {
        await m.bytes();
        users.push(m.session.user);
      },
    });

  before(async () => {
    server = await start();
  });

  after(async () => {
    await server?.close();
  });

  async function swaks(
    mechanism: string,
    user: string,
    password: string,
    to: Server = server,
  ) {
    const r = await run("swaks", [
      "--server",
      `127.0.0.1:${to.addr.port}`,
      "--tls",
      "--from",
      "a@example.org",
      "--to",
      "b@example.org",
      "--auth",
      mechanism,
      "--auth-user",
      user,
      "--auth-password",
      password,
    ]);
    // " ~> <base64>" lines after a 334 are SASL responses.
    const lines = r.stdout.split("\n");
    for (let i = 1; i < lines.length; i++) {
      if (/^<~ {2}334 /.test(lines[i - 1]) && lines[i].startsWith(" ~> ")) {
        sent.push(lines[i].slice(4).trim());
      }
      const initial = /^ ~> AUTH \S+ (\S+)/.exec(lines[i]);
      if (initial) sent.push(initial[1]);
    }
    return r;
  }

  for (const mechanism of ["PLAIN", "LOGIN", "CRAM-MD5"]) {
    it(`swaks --auth ${mechanism} with the right password delivers as that user`, async () => {
      const mark = users.length;
      for (const [user, password] of Object.entries(USERS)) {
        const r = await swaks(mechanism, user, password);
        assert.equal(r.code, 0, r.stdout + r.stderr);
        assert.match(r.stdout, /<~ {2}235 2\.7\.0 Authentication successful/);
        assert.match(r.stdout, /<~ {2}250 2\.0\.0 OK /);
      }
      assert.deepEqual(users.slice(mark), Object.keys(USERS));
    });

    it(`swaks --auth ${mechanism} with a wrong password gets 535 5.7.8`, async () => {
      // A server of its own per mechanism: each failure from 127.0.0.1 is
      // answered 250 ms later than the last, so the three mechanisms'
      // failures on one server would wait 11 s where 4.5 s test the same.
      const own = await start();
      const mark = users.length;
      try {
        for (
          const [user, password] of [
            ["alice", "wrong"],
            ["alice", `${USERS.alice}x`],
            ["nobody", USERS.alice],
          ]
        ) {
          const r = await swaks(mechanism, user, password, own);
          assert.notEqual(r.code, 0);
          assert.match(
            r.stdout,
            /<~\* 535 5\.7\.8 Authentication credentials invalid/,
          );
          assert.doesNotMatch(r.stdout, /MAIL FROM/);
        }
      } finally {
        await own.close();
      }
      assert.equal(users.length, mark);
    });
  }

  it("credentials never appear in the log entries", async () => {
    // The tests above ran swaks through every mechanism; add a LOGIN by
    // hand with a failure, and one with a cancel.
    await withServer(
      {
        tls: TLS,
        auth: { lookupPassword: (user) => USERS[user] ?? null },
        logger: (e) => log.push(e),
      },
      async (_server, open) => {
        const s = await starttls(open);
        for (const password of ["not-it", USERS.alice]) {
          assert.match(await s.command("AUTH LOGIN"), /^334 /);
          assert.match(await s.command(b64("alice")), /^334 /);
          sent.push(b64(password));
          assert.match(await s.command(b64(password)), /^(235|535) /);
        }
        await s.close();
      },
    );
    assert.ok(sent.length >= 12, `only ${sent.length} responses seen`);
    const text = logText(log);
    assert.ok(log.some((e) => e.type === "auth" && e.success));
    assert.ok(log.some((e) => e.type === "auth" && !e.success));
    for (
      const secret of [
        ...Object.entries(USERS).flatMap(([u, p]) => secrets(u, p)),
        ...sent.filter((s) => s.length > 8 && s !== b64("alice")),
      ]
    ) {
      assert.ok(!text.includes(secret), `the log shows ${secret}`);
    }
    // The AUTH command lines are logged with the mechanism only.
    const authLines = log.flatMap((e) =>
      e.type === "command" && /^AUTH/i.test(e.line) ? [e.line] : []
    );
    assert.ok(authLines.length > 0);
    for (const line of authLines) {
      assert.match(line, /^AUTH (PLAIN|LOGIN|CRAM-MD5)( \*\*\*)?$/);
    }
  });
});

describe("AUTH rules", () => {
  const verified: AuthCredentials[] = [];
  // Optional AUTH, so that the rules below can be tried one by one; the
  // default (required) has its own test.
  const auth: NonNullable<ServeOptions["auth"]> = {
    required: false,
    verify(credentials) {
      verified.push(credentials);
      const { username, password } = credentials;
      if (username === "boom") throw new Error(`boom ${password}`);
      if (username === "locked") {
        throw new SmtpError(535, "5.7.8", "Account locked");
      }
      if (credentials.mechanism === "XOAUTH2") {
        return username === "alice" && credentials.token === "tok3n";
      }
      return USERS[username] !== undefined && USERS[username] === password;
    },
    mechanisms: ["PLAIN", "LOGIN", "XOAUTH2"],
  };
  const plain = (user: string, password: string) =>
    `AUTH PLAIN ${b64(`\0${user}\0${password}`)}`;

  it("AUTH is not offered before TLS and gets 538 5.7.11; after STARTTLS it is", async () => {
    await withServer({ tls: TLS, auth }, async (_server, open) => {
      const w = await open();
      assert.doesNotMatch(await ehlo(w), /AUTH/);
      assert.match(
        await w.command(plain("alice", USERS.alice)),
        /^538 5\.7\.11 /,
      );
      assert.match(await w.command("STARTTLS"), /^220 /);
      const s = await upgrade(w);
      assert.match(
        await s.command("EHLO client.test"),
        /^250-AUTH PLAIN LOGIN XOAUTH2\r\n/m,
      );
      assert.match(await s.command(plain("alice", USERS.alice)), /^235 /);
      await s.close();
    });
  });

  it("auth without `required` requires AUTH: MAIL before it gets 530 5.7.0", async () => {
    const { required: _optional, ...byDefault } = auth;
    await withServer(
      { tls: TLS, auth: byDefault },
      async (_server, open) => {
        const w = await open();
        await ehlo(w);
        assert.match(await w.command("STARTTLS"), /^220 /);
        const s = await upgrade(w);
        assert.match(await s.command("EHLO client.test"), /AUTH PLAIN LOGIN/);
        assert.match(
          await s.command("MAIL FROM:<a@example.org>"),
          /^530 5\.7\.0 /,
        );
        assert.match(await s.command(plain("alice", USERS.alice)), /^235 /);
        assert.match(await s.command("MAIL FROM:<a@example.org>"), /^250 /);
        await s.close();
      },
    );
  });

  it("with requireTls, MAIL and AUTH before STARTTLS get 530 5.7.0", async () => {
    await withServer(
      { tls: TLS, auth, requireTls: true, allowInsecureAuth: true },
      async (_server, open) => {
        const w = await open();
        const caps = await ehlo(w);
        assert.match(caps, /STARTTLS/);
        assert.doesNotMatch(caps, /AUTH/);
        assert.match(
          await w.command("MAIL FROM:<a@example.org>"),
          /^530 5\.7\.0 /,
        );
        assert.match(
          await w.command(plain("alice", USERS.alice)),
          /^530 5\.7\.0 /,
        );
        assert.match(await w.command("STARTTLS"), /^220 /);
        const s = await upgrade(w);
        assert.match(await s.command("EHLO client.test"), /AUTH PLAIN/);
        assert.match(await s.command("MAIL FROM:<a@example.org>"), /^250 /);
        await s.close();
      },
    );
  });

  it("with allowInsecureAuth, AUTH is offered and works in plaintext", async () => {
    await withServer(
      { auth, allowInsecureAuth: true },
      async (_server, open) => {
        const w = await open();
        assert.match(await ehlo(w), /^250-AUTH PLAIN LOGIN XOAUTH2\r\n/m);
        assert.match(await w.command("AUTH LOGIN"), /^334 VXNlcm5hbWU6\r\n/);
        assert.match(await w.command(b64("alice")), /^334 UGFzc3dvcmQ6\r\n/);
        assert.match(await w.command(b64(USERS.alice)), /^235 2\.7\.0 /);
      },
    );
  });

  it("auth.required: MAIL without AUTH gets 530 5.7.0, after AUTH the hook sees session.user", async () => {
    const seen: (string | null)[] = [];
    await withServer(
      {
        tls: TLS,
        auth: { ...auth, required: true },
        onMailFrom(_address, session) {
          seen.push(session.user);
        },
      },
      async (_server, open) => {
        const s = await starttls(open);
        assert.match(
          await s.command("MAIL FROM:<a@example.org>"),
          /^530 5\.7\.0 /,
        );
        assert.match(
          await s.command(plain("bob@example.org", USERS["bob@example.org"])),
          /^235 /,
        );
        assert.match(await s.command("MAIL FROM:<a@example.org>"), /^250 /);
        await s.close();
      },
    );
    assert.deepEqual(seen, ["bob@example.org"]);
  });

  it("after 3 failed AUTH attempts the server sends 421 4.7.0 and closes", async () => {
    await withServer({ tls: TLS, auth }, async (server, open) => {
      const s = await starttls(open);
      assert.equal(
        await s.command(plain("alice", "one")),
        "535 5.7.8 Authentication credentials invalid\r\n",
      );
      assert.match(await s.command("AUTH LOGIN"), /^334 /);
      assert.match(await s.command(b64("alice")), /^334 /);
      assert.match(await s.command(b64("two")), /^535 5\.7\.8 /);
      await s.send(`${plain("alice", "three")}\r\n`);
      assert.match(await s.reply(), /^535 5\.7\.8 /);
      assert.match(await s.reply(), /^421 4\.7\.0 /);
      await s.waitClosed();
      await idle(server);
    });
  });

  it("session.user is set by AUTH and reset by STARTTLS", async () => {
    const seen: (string | null)[] = [];
    await withServer(
      {
        tls: TLS,
        allowInsecureAuth: true,
        auth: { ...auth, required: true },
        onMailFrom(_address, session) {
          seen.push(session.user);
        },
      },
      async (_server, open) => {
        const w = await open();
        assert.match(await ehlo(w), /AUTH PLAIN/);
        assert.match(await w.command(plain("alice", USERS.alice)), /^235 /);
        assert.match(await w.command("MAIL FROM:<a@example.org>"), /^250 /);
        assert.match(await w.command("RSET"), /^250 /);
        assert.match(await w.command("STARTTLS"), /^220 /);
        const s = await upgrade(w);
        assert.match(await s.command("EHLO client.test"), /^250-/);
        assert.match(
          await s.command("MAIL FROM:<a@example.org>"),
          /^530 5\.7\.0 /,
        );
        assert.match(
          await s.command(plain("bob@example.org", USERS["bob@example.org"])),
          /^235 /,
        );
        assert.match(await s.command("MAIL FROM:<a@example.org>"), /^250 /);
        await s.close();
      },
    );
    assert.deepEqual(seen, ["alice", "bob@example.org"]);
  });

  it("AUTH answers the protocol's errors over TLS", async () => {
    const reported: string[] = [];
    await withServer(
      {
        tls: TLS,
        auth,
        maxAuthFailures: 100,
        onError: (e, { hook }) => reported.push(`${hook}: ${e}`),
      },
      async (_server, open) => {
        const s: Wire = await starttls(open);
        const expect = async (line: string, reply: RegExp) =>
          assert.match(await s.command(line), reply, line);
        await expect("AUTH CRAM-MD5", /^504 5\.5\.4 /);
        await expect("AUTH", /^501 5\.5\.4 /);
        await expect("AUTH PLAIN !!!", /^501 5\.5\.2 /);
        await expect("AUTH LOGIN", /^334 /);
        await expect("*", /^501 5\.7\.0 /);
        await expect("AUTH LOGIN", /^334 /);
        await expect("not base64!", /^501 5\.5\.2 /);
        // A hook that throws: 454, never the error's text.
        const boom = await s.command(plain("boom", "secret-in-error"));
        assert.match(boom, /^454 4\.7\.0 /);
        assert.doesNotMatch(boom, /secret|boom/);
        assert.deepEqual(reported, ["auth: Error: boom secret-in-error"]);
        await expect(plain("locked", "x"), /^535 5\.7\.8 Account locked/);
        await expect("MAIL FROM:<a@example.org>", /^250 /);
        await expect(plain("alice", USERS.alice), /^503 5\.5\.1 /);
        await expect("RSET", /^250 /);
        await expect(plain("alice", USERS.alice), /^235 /);
        await expect(plain("alice", USERS.alice), /^503 5\.5\.1 /);
        await s.close();
      },
    );
  });

  it("auth.verify gets mechanism, username and password or token", async () => {
    verified.length = 0;
    await withServer({ tls: TLS, auth }, async (_server, open) => {
      const cases: [string[], RegExp][] = [
        [[plain("alice", USERS.alice)], /^235 /],
        [
          ["AUTH LOGIN", b64("bob@example.org"), b64(USERS["bob@example.org"])],
          /^235 /,
        ],
        [
          [`AUTH XOAUTH2 ${b64("user=alice\x01auth=Bearer tok3n\x01\x01")}`],
          /^235 /,
        ],
        [
          [`AUTH XOAUTH2 ${b64("user=alice\x01auth=Bearer bad\x01\x01")}`, ""],
          /^535 /,
        ],
      ];
      for (const [lines, reply] of cases) {
        const s = await starttls(open);
        let last = "";
        for (const line of lines) last = await s.command(line);
        assert.match(last, reply, lines.join(" / "));
        await s.close();
      }
    });
    assert.deepEqual(
      verified.map((c) => [c.mechanism, c.username, c.password ?? c.token]),
      [
        ["PLAIN", "alice", USERS.alice],
        ["LOGIN", "bob@example.org", USERS["bob@example.org"]],
        ["XOAUTH2", "alice", "tok3n"],
        ["XOAUTH2", "alice", "bad"],
      ],
    );
  });

  it("CRAM-MD5 is offered with lookupPassword only and checks the digest", async () => {
    await withServer(
      { tls: TLS, auth: { lookupPassword: (u) => USERS[u] ?? null } },
      async (_server, open) => {
        const s = await starttls(open);
        for (
          const [user, password, reply] of [
            ["alice", "nope", /^535 5\.7\.8 /],
            ["nobody", "", /^535 5\.7\.8 /],
            ["alice", USERS.alice, /^235 2\.7\.0 /],
          ] as const
        ) {
          const challenge = await s.command("AUTH CRAM-MD5");
          assert.match(challenge, /^334 /);
          const text = unb64(challenge.slice(4).trim());
          assert.match(text, /^<\d+\.\d+@mx\.test>$/);
          const digest = createHmac("md5", password).update(text).digest("hex");
          assert.match(await s.command(b64(`${user} ${digest}`)), reply);
        }
        await s.close();
      },
    );
    await withServer({ tls: TLS, auth }, async (_server, open) => {
      const s = await starttls(open);
      assert.match(
        await s.command("EHLO client.test"),
        /AUTH PLAIN LOGIN XOAUTH2\r\n/,
      );
      await s.close();
    });
  });
});
