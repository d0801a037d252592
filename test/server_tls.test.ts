// STARTTLS (RFC 3207) and implicit TLS (RFC 8314) over real TCP, on the
// runtime that runs this file: serve() picks its shim. Real clients (swaks,
// openssl s_client, nodemailer, Python's smtplib) and a raw node:tls client
// for the protocol's edges: command injection after STARTTLS, handshakes
// that fail or never come, certificate replacement, minimum version, SNI.
// Every server listens on 127.0.0.1 port 0 and is closed in after/finally.
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type * as tls from "node:tls";
import nodemailer from "nodemailer";
import {
  type LogEntry,
  type Message,
  serve,
  type ServeOptions,
  type Server,
  type TlsInfo,
} from "../mod.ts";
import type { Connection, Listener } from "../src/exports/transport.ts";
import {
  connectPlain,
  connectTls,
  ehlo,
  FINGERPRINT,
  fixture,
  idle,
  OTHER_TLS,
  run,
  runtimeListen,
  starttls,
  TLS,
  upgrade,
  Wire,
  withServer,
} from "./helpers/tls.ts";

const bytes = (s: string) => new TextEncoder().encode(s);

interface Received {
  from: string;
  to: readonly string[];
  body: Buffer;
  secure: boolean;
  tls: TlsInfo | null;
  user: string | null;
}

/** An onMessage hook that keeps each body and what the session said. */
function collector() {
  const got: Received[] = [];
  return {
    got,
    async onMessage(m: Message) {
      const body = Buffer.from(await m.bytes());
      got.push({
        from: m.from,
        to: m.to,
        body,
        secure: m.session.secure,
        tls: m.session.tls === null ? null : { ...m.session.tls },
        user: m.session.user,
      });
    },
  };
}

const USERS: Record<string, string> = { alice: "s3cret-pw", bob: "hunter22" };
const DATA = "From: a@example.org\r\nTo: b@example.org\r\n" +
  "Subject: tls\r\n\r\n" +
  "first line\r\n" +
  ".a line with a leading dot\r\n" +
  "..two leading dots\r\n" +
  "\r\n" +
  "8-bit: \xe9t\xe9\r\n" +
  "last line";

describe("TLS clients", () => {
  let plainPort: number;
  let implicitPort: number;
  let dir: string;
  const servers: Server[] = [];
  const sink = collector();
  const received = sink.got;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "smtpd-tls-"));
    const options: ServeOptions = {
      hostname: "127.0.0.1",
      port: 0,
      serverName: "mx.test",
      tls: TLS,
      // Optional AUTH: some clients here send without logging in.
      auth: { lookupPassword: (user) => USERS[user] ?? null, required: false },
      onMessage: sink.onMessage,
    };
    servers.push(await serve(options));
    servers.push(await serve({ ...options, implicitTls: true }));
    plainPort = servers[0].addr.port;
    implicitPort = servers[1].addr.port;
  });

  after(async () => {
    await Promise.all(servers.map((s) => s.close()));
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  for (const implicit of [false, true]) {
    const flag = implicit ? "--tlsc" : "--tls";
    const mode = implicit ? "implicit TLS" : "STARTTLS";
    it(`swaks ${flag} delivers a message byte-exact over ${mode}`, async () => {
      const file = join(dir, `data-${implicit}.eml`);
      writeFileSync(file, Buffer.from(DATA, "latin1"));
      const mark = received.length;
      const r = await run("swaks", [
        "--server",
        `127.0.0.1:${implicit ? implicitPort : plainPort}`,
        flag,
        "--from",
        "a@example.org",
        "--to",
        "b@example.org",
        "--data",
        `@${file}`,
      ]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /=== TLS started with cipher TLSv1\.[23]/);
      if (!implicit) assert.match(r.stdout, /<- {2}220 2\.0\.0 /);
      const got = received.slice(mark);
      assert.equal(got.length, 1);
      assert.equal(got[0].body.toString("latin1"), DATA + "\r\n");
      assert.equal(got[0].secure, true);
      assert.match(got[0].tls?.version ?? "", /^TLSv1\.[23]$/);
      assert.notEqual(got[0].tls?.cipher, "unknown");
      assert.equal(got[0].user, null);
    });
  }

  it("openssl s_client -starttls smtp delivers a message", async () => {
    const child = spawn("openssl", [
      "s_client",
      "-starttls",
      "smtp",
      "-connect",
      `127.0.0.1:${plainPort}`,
      "-quiet",
      "-nocommands",
    ], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let wake: (() => void) | null = null;
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString("latin1");
      wake?.();
    });
    child.stderr.on("data", () => {});
    const exited = new Promise<number | null>((r) => child.on("close", r));
    /** Waits for `n` complete reply lines (non-continuation) in `out`. */
    const replies = async (n: number) => {
      const deadline = Date.now() + 10000;
      while ((out.match(/^\d{3} .*\r?\n/gm) ?? []).length < n) {
        if (Date.now() > deadline) assert.fail(`openssl got: ${out}`);
        await Promise.race([
          new Promise<void>((r) => (wake = r)),
          sleep(100),
        ]);
      }
    };
    const mark = received.length;
    try {
      // s_client has sent EHLO and STARTTLS and done the handshake; what it
      // reads from stdin now goes out encrypted.
      const steps = [
        "EHLO openssl.test\r\n",
        "MAIL FROM:<ossl@example.org>\r\n",
        "RCPT TO:<b@example.org>\r\n",
        "DATA\r\n",
        "Subject: openssl\r\n\r\nover s_client\r\n.\r\n",
        "QUIT\r\n",
      ];
      for (let i = 0; i < steps.length; i++) {
        child.stdin.write(steps[i]);
        await replies(i + 1);
      }
      assert.equal(await exited, 0);
    } finally {
      child.kill();
    }
    const lines = out.match(/^\d{3}[ -].*$/gm) ?? [];
    assert.match(lines[0] ?? "", /^250-mx\.test greets openssl\.test/);
    assert.ok(!lines.some((l) => /STARTTLS/.test(l)), out);
    assert.match(out, /^354 /m);
    assert.match(out, /^250 2\.0\.0 OK /m);
    assert.match(out, /^221 /m);
    const got = received.slice(mark);
    assert.equal(got.length, 1);
    assert.equal(
      got[0].body.toString("latin1"),
      "Subject: openssl\r\n\r\nover s_client\r\n",
    );
    assert.equal(got[0].secure, true);
    assert.match(got[0].tls?.version ?? "", /^TLSv1\.[23]$/);
    assert.notEqual(got[0].tls?.cipher, "unknown");
  });

  for (const implicit of [false, true]) {
    const how = implicit ? "secure: true" : "requireTLS";
    it(`nodemailer with ${how} delivers with AUTH and the hook sees the user`, async () => {
      const transport = nodemailer.createTransport({
        host: "127.0.0.1",
        port: implicit ? implicitPort : plainPort,
        secure: implicit,
        requireTLS: !implicit,
        name: "nodemailer.test",
        // Verified against the test certificate (it names 127.0.0.1) on
        // STARTTLS; not verified on implicit TLS.
        tls: implicit ? { rejectUnauthorized: false } : { ca: TLS.cert },
        auth: { user: "alice", pass: USERS.alice },
      });
      const raw = Buffer.from(
        "From: nm@example.org\r\nTo: b@example.org\r\nSubject: nodemailer\r\n" +
          "\r\n.leading dot\r\ncaf\u00e9\r\n",
        "utf8",
      );
      const mark = received.length;
      try {
        const info = await transport.sendMail({
          envelope: { from: "nm@example.org", to: ["b@example.org"] },
          raw,
        });
        assert.match(String(info.response), /^250 2\.0\.0 OK /);
      } finally {
        transport.close();
      }
      const got = received.slice(mark);
      assert.equal(got.length, 1);
      assert.ok(got[0].body.equals(raw));
      assert.equal(got[0].secure, true);
      assert.equal(got[0].user, "alice");
    });
  }

  for (const mode of ["starttls", "ssl"] as const) {
    const how = mode === "starttls"
      ? "starttls() and login()"
      : "SMTP_SSL and login()";
    it(`Python smtplib ${how} deliver a message`, async () => {
      const data = "Subject: python\r\n\r\n.dot\r\ncaf\xe9\r\n";
      const mark = received.length;
      const r = await run("python3", [
        fixture("smtplib_tls.py"),
        String(mode === "ssl" ? implicitPort : plainPort),
        mode,
        fixture("tls/cert.pem"),
        "bob",
        USERS.bob,
        "py@example.org",
        "b@example.org",
        data,
      ]);
      assert.equal(r.code, 0, r.stderr);
      const result = JSON.parse(r.stdout);
      assert.deepEqual(result.login, [235, "2.7.0 Authentication successful"]);
      assert.deepEqual(result.refused, {});
      const got = received.slice(mark);
      assert.equal(got.length, 1);
      assert.equal(got[0].body.toString("latin1"), data);
      assert.equal(got[0].user, "bob");
      assert.equal(got[0].tls?.version, result.cipher[1]);
    });
  }

  for (const implicit of [false, true]) {
    for (const version of ["TLSv1.2", "TLSv1.3"] as const) {
      it(
        `session.tls tells version and cipher of a ${version} ${
          implicit ? "implicit TLS" : "STARTTLS"
        } session`,
        async () => {
          const options = { minVersion: version, maxVersion: version };
          let s: Wire;
          let client: tls.TLSSocket;
          if (implicit) {
            client = await connectTls(implicitPort, options);
            s = new Wire(client);
            assert.match(await s.reply(), /^220 /);
            assert.match(await s.command("EHLO client.test"), /^250-/);
          } else {
            s = await starttls(() => connectPlain(plainPort), options);
            client = s.socket as tls.TLSSocket;
          }
          const mark = received.length;
          const protocol = client.getProtocol();
          const cipher = client.getCipher().name;
          try {
            assert.match(await s.command("MAIL FROM:<a@example.org>"), /^250 /);
            assert.match(await s.command("RCPT TO:<b@example.org>"), /^250 /);
            assert.match(await s.command("DATA"), /^354 /);
            assert.match(await s.command("x\r\n."), /^250 /);
            assert.match(await s.command("QUIT"), /^221 /);
          } finally {
            await s.close();
          }
          const got = received.slice(mark);
          assert.equal(got.length, 1);
          assert.equal(got[0].secure, true);
          assert.equal(got[0].tls?.version, version);
          assert.equal(protocol, version);
          assert.equal(got[0].tls?.cipher, cipher);
        },
      );
    }
  }
});

describe("STARTTLS", () => {
  const options: ServeOptions = { tls: TLS };

  for (const split of [false, true]) {
    it(
      `discards commands pipelined after STARTTLS${
        split ? " (sent after the EHLO reply)" : " (sent with EHLO)"
      }: one reply before the handshake, none after`,
      async () => {
        const log: LogEntry[] = [];
        await withServer(
          { ...options, logger: (e) => log.push(e) },
          async (server, open) => {
            const w = await open();
            assert.match(await w.reply(), /^220 /);
            if (split) {
              await w.send("EHLO x\r\n");
              assert.match(await w.reply(), /^250-/);
              await w.send("STARTTLS\r\nNOOP\r\n");
            } else {
              await w.send("EHLO x\r\nSTARTTLS\r\nNOOP\r\n");
              assert.match(await w.reply(), /^250-/);
            }
            assert.equal(await w.reply(), "220 2.0.0 Ready to start TLS\r\n");
            // Give a reply to the injected NOOP the time to come.
            await sleep(100);
            assert.equal(w.pending(), "");
            const s = await upgrade(w);
            // The first reply over TLS answers this EHLO, not the NOOP.
            assert.match(
              await s.command("EHLO y"),
              /^250-mx\.test greets y\r\n/,
            );
            assert.equal(await s.command("RSET"), "250 2.0.0 OK\r\n");
            assert.equal(s.pending(), "");
            await s.close();
            await idle(server);
            const lines = log.flatMap((e) =>
              e.type === "command" ? [e.line] : []
            );
            assert.deepEqual(lines, ["EHLO x", "STARTTLS", "EHLO y", "RSET"]);
          },
        );
      },
    );
  }

  it("discards a transaction started before STARTTLS and wants EHLO again", async () => {
    await withServer(options, async (_server, open) => {
      const w = await open();
      await ehlo(w);
      assert.match(await w.command("MAIL FROM:<a@example.org>"), /^250 /);
      assert.match(await w.command("STARTTLS"), /^220 /);
      const s = await upgrade(w);
      assert.match(await s.command("MAIL FROM:<a@example.org>"), /^503 /);
      assert.match(await s.command("EHLO client.test"), /^250-/);
      assert.match(await s.command("RCPT TO:<b@example.org>"), /^503 /);
      await s.close();
    });
  });

  it("STARTTLS with an argument gets 501", async () => {
    await withServer(options, async (_server, open) => {
      const w = await open();
      await ehlo(w);
      assert.match(await w.command("STARTTLS now"), /^501 5\.5\.4 /);
      // Still plaintext, still able to upgrade.
      assert.match(await w.command("STARTTLS"), /^220 /);
      const s = await upgrade(w);
      assert.match(await s.command("EHLO client.test"), /^250-/);
    });
  });

  it("STARTTLS inside TLS gets 503 and is no longer advertised", async () => {
    await withServer(options, async (_server, open) => {
      const w = await open();
      await ehlo(w);
      assert.match(await w.command("STARTTLS"), /^220 /);
      const s = await upgrade(w);
      const caps = await s.command("EHLO client.test");
      assert.doesNotMatch(caps, /STARTTLS/);
      assert.match(await s.command("STARTTLS"), /^503 5\.5\.1 /);
      assert.match(await s.command("NOOP"), /^250 /);
      await s.close();
    });
    await withServer(
      { ...options, implicitTls: true },
      async (server) => {
        const s = new Wire(
          await connectTls(server.addr.port),
        );
        try {
          assert.match(await s.reply(), /^220 /);
          assert.doesNotMatch(await s.command("EHLO client.test"), /STARTTLS/);
          // The engine answers 502 here (STARTTLS is not configured on an
          // implicit TLS connection); 503 would say why.
          assert.match(await s.command("STARTTLS"), /^50[23] 5\.5\.1 /);
        } finally {
          await s.close();
        }
      },
    );
  });

  it("STARTTLS is not advertised without a certificate and gets 502", async () => {
    await withServer({}, async (_server, open) => {
      const w = await open();
      assert.doesNotMatch(await ehlo(w), /STARTTLS/);
      assert.match(await w.command("STARTTLS"), /^502 5\.5\.1 /);
      assert.match(await w.command("NOOP"), /^250 /);
    });
  });

  it("a failed handshake closes the connection, delivers nothing, and the server goes on", async () => {
    const sink = collector();
    const log: LogEntry[] = [];
    await withServer(
      { ...options, onMessage: sink.onMessage, logger: (e) => log.push(e) },
      async (server, open) => {
        const w = await open();
        await ehlo(w);
        assert.match(await w.command("STARTTLS"), /^220 /);
        // Not a ClientHello: plaintext SMTP, as a confused client would.
        await w.send(
          "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n" +
            "x\r\n.\r\n",
        );
        await w.waitClosed();
        // At most a TLS alert came back: no SMTP reply.
        assert.doesNotMatch(w.pending(), /^\d{3}[ -]/m);
        await idle(server);
        assert.equal(sink.got.length, 0);
        assert.ok(
          log.some((e) =>
            e.type === "error" && e.message === "TLS handshake failed"
          ),
        );
        // The server still serves.
        const s = await starttls(open);
        assert.match(await s.command("MAIL FROM:<a@example.org>"), /^250 /);
        await s.close();
      },
    );
  });

  it("plain SMTP on the implicit TLS port is closed and the server goes on", async () => {
    const sink = collector();
    await withServer(
      { ...options, implicitTls: true, onMessage: sink.onMessage },
      async (server, open) => {
        const w = await open();
        await w.send(
          "EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n" +
            "DATA\r\nx\r\n.\r\nQUIT\r\n",
        );
        await w.waitClosed();
        assert.doesNotMatch(w.pending(), /^\d{3}[ -]/m);
        await idle(server);
        assert.equal(sink.got.length, 0);
        const s = new Wire(await connectTls(server.addr.port));
        try {
          assert.match(await s.reply(), /^220 /);
          assert.match(await s.command("EHLO client.test"), /^250-/);
        } finally {
          await s.close();
        }
      },
    );
  });

  it("a client that leaves during the handshake frees its connection", async () => {
    await withServer(options, async (server, open) => {
      const w = await open();
      await ehlo(w);
      assert.match(await w.command("STARTTLS"), /^220 /);
      // Half a ClientHello, then gone.
      await w.send("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
      await w.close();
      await idle(server);
    });
  });

  it("server.close() ends a connection waiting for its STARTTLS handshake", async () => {
    const server = await serve({
      hostname: "127.0.0.1",
      port: 0,
      tls: TLS,
      closeTimeout: 200,
    });
    const w = await connectPlain(server.addr.port);
    try {
      await ehlo(w);
      assert.match(await w.command("STARTTLS"), /^220 /);
      const t0 = Date.now();
      await server.close();
      assert.ok(Date.now() - t0 < 5000);
      await w.waitClosed();
    } finally {
      await w.close();
      await server.close();
    }
  });

  it("a TLS 1.1 client is refused by default, on implicit TLS and STARTTLS", async () => {
    for (const implicitTls of [true, false]) {
      await withServer({ tls: TLS, implicitTls }, async (server) => {
        const r = await run("openssl", [
          "s_client",
          "-connect",
          `127.0.0.1:${server.addr.port}`,
          ...(implicitTls ? [] : ["-starttls", "smtp"]),
          "-tls1_1",
          "-cipher",
          "DEFAULT@SECLEVEL=0",
          "-nocommands",
        ]);
        assert.notEqual(r.code, 0);
        assert.match(r.stdout, /Cipher is \(NONE\)/);
        assert.doesNotMatch(r.stdout, /^220 mx\.test/m);
        await idle(server);
      });
    }
  });

  it("minVersion TLSv1.3 refuses a TLS 1.2 client and accepts TLS 1.3", async () => {
    await withServer(
      { tls: { ...TLS, minVersion: "TLSv1.3" }, implicitTls: true },
      async (server) => {
        await assert.rejects(
          connectTls(server.addr.port, { maxVersion: "TLSv1.2" }),
        );
        const s = await connectTls(server.addr.port, { minVersion: "TLSv1.3" });
        assert.equal(s.getProtocol(), "TLSv1.3");
        s.destroy();
      },
    );
    await withServer(
      { tls: { ...TLS, minVersion: "TLSv1.3" } },
      async (server, open) => {
        const w = await open();
        await ehlo(w);
        assert.match(await w.command("STARTTLS"), /^220 /);
        await assert.rejects(upgrade(w, { maxVersion: "TLSv1.2" }));
        await idle(server);
        const s = await starttls(open, { minVersion: "TLSv1.3" });
        assert.equal((s.socket as tls.TLSSocket).getProtocol(), "TLSv1.3");
        await s.close();
      },
    );
  });

  for (const implicit of [false, true]) {
    it(
      `tls.sni picks the certificate for the name the client asks for (${
        implicit ? "implicit TLS" : "STARTTLS"
      })`,
      async () => {
        const sink = collector();
        await withServer(
          {
            tls: { ...TLS, sni: { "*.other.test": OTHER_TLS } },
            implicitTls: implicit,
            onMessage: sink.onMessage,
          },
          async (server, open) => {
            const session = async (servername?: string) => {
              const options = servername ? { servername } : {};
              let s: Wire;
              if (implicit) {
                s = new Wire(await connectTls(server.addr.port, options));
                assert.match(await s.reply(), /^220 /);
                assert.match(await s.command("EHLO client.test"), /^250-/);
              } else s = await starttls(open, options);
              const cert = (s.socket as tls.TLSSocket).getPeerCertificate();
              assert.match(
                await s.command("MAIL FROM:<a@example.org>"),
                /^250 /,
              );
              assert.match(await s.command("RCPT TO:<b@example.org>"), /^250 /);
              assert.match(await s.command("DATA"), /^354 /);
              assert.match(await s.command("x\r\n."), /^250 /);
              await s.close();
              return cert.fingerprint256;
            };
            assert.equal(await session("mx.other.test"), FINGERPRINT.other);
            assert.equal(await session("localhost"), FINGERPRINT.localhost);
            assert.equal(await session(), FINGERPRINT.localhost);
            assert.equal(sink.got[0].tls?.servername, "mx.other.test");
            assert.equal(sink.got[1].tls?.servername, "localhost");
            assert.equal(sink.got[2].tls?.servername, undefined);
          },
        );
      },
    );
  }

  it("serve() rejects unusable TLS options with a TypeError", async () => {
    const base = { hostname: "127.0.0.1", port: 0 };
    const bad: [unknown, RegExp][] = [
      [{ key: TLS.key }, /tls\.cert: value is not a string/],
      [{ key: "key", cert: TLS.cert }, /tls\.key: value is not PEM/],
      [{ ...TLS, key: OTHER_TLS.key }, /tls\.key: it does not match/],
      [{ ...TLS, minVersion: "TLSv1.1" }, /tls\.minVersion/],
      [{ ...TLS, sni: { "a b": OTHER_TLS } }, /tls\.sni: "a b"/],
      [
        { ...TLS, sni: { "other.test": { ...OTHER_TLS, key: TLS.key } } },
        /tls\.sni\["other\.test"\]\.key: it does not match/,
      ],
    ];
    for (const [tlsOption, message] of bad) {
      await assert.rejects(
        serve({ ...base, tls: tlsOption as ServeOptions["tls"] }),
        (err: Error) => err instanceof TypeError && message.test(err.message),
        String(message),
      );
    }
  });
});

describe("TLS at the listener", () => {
  /** Opens the runtime's listener and takes its connections one by one. */
  async function open(
    options: { implicitTls?: boolean; handshakeTimeout?: number } = {},
  ): Promise<{ listener: Listener; next: () => Promise<Connection> }> {
    const listen = await runtimeListen();
    const listener = await listen({
      hostname: "127.0.0.1",
      port: 0,
      tls: TLS,
      ...options,
    });
    const it = listener[Symbol.asyncIterator]();
    return {
      listener,
      next: async () => {
        const r = await it.next();
        assert.ok(!r.done);
        return r.value;
      },
    };
  }

  /** Writes one line on a connection. */
  async function write(conn: Connection, text: string): Promise<void> {
    const writer = conn.writable.getWriter();
    await writer.write(bytes(text));
    writer.releaseLock();
  }

  it("setTls replaces the certificate of new implicit TLS connections", async () => {
    const { listener, next } = await open({ implicitTls: true });
    const conns: Connection[] = [];
    try {
      const fingerprint = async () => {
        const s = await connectTls(listener.addr.port);
        conns.push(await next());
        const fp = s.getPeerCertificate().fingerprint256;
        s.destroy();
        return fp;
      };
      assert.equal(await fingerprint(), FINGERPRINT.localhost);
      assert.ok(listener.setTls);
      listener.setTls(OTHER_TLS);
      assert.equal(await fingerprint(), FINGERPRINT.other);
      listener.setTls(TLS);
      assert.equal(await fingerprint(), FINGERPRINT.localhost);
    } finally {
      for (const c of conns) c.close(true);
      listener.close();
    }
  });

  it("setTls replaces the certificate of STARTTLS upgrades", async () => {
    const { listener, next } = await open();
    const conns: Connection[] = [];
    try {
      const fingerprint = async () => {
        const w = await connectPlain(listener.addr.port);
        const conn = await next();
        assert.ok(conn.startTls);
        const upgraded = conn.startTls(bytes("220 2.0.0 go\r\n"));
        assert.equal(await w.reply(), "220 2.0.0 go\r\n");
        const s = await upgrade(w);
        const secure = await upgraded;
        conns.push(conn, secure);
        assert.match(secure.tls?.version ?? "", /^TLSv1\.[23]$/);
        await write(secure, "250 over TLS\r\n");
        assert.equal(await s.reply(), "250 over TLS\r\n");
        const fp = (s.socket as tls.TLSSocket).getPeerCertificate()
          .fingerprint256;
        await s.close();
        return fp;
      };
      assert.equal(await fingerprint(), FINGERPRINT.localhost);
      listener.setTls!(OTHER_TLS);
      assert.equal(await fingerprint(), FINGERPRINT.other);
    } finally {
      for (const c of conns) c.close(true);
      listener.close();
    }
  });

  it("setTls with a bad certificate throws and keeps the old one", async () => {
    const { listener, next } = await open({ implicitTls: true });
    const conns: Connection[] = [];
    try {
      assert.throws(
        () => listener.setTls!({ key: OTHER_TLS.key, cert: TLS.cert }),
        TypeError,
      );
      assert.throws(
        () => listener.setTls!({ key: "nope", cert: TLS.cert }),
        TypeError,
      );
      const s = await connectTls(listener.addr.port);
      conns.push(await next());
      assert.equal(
        s.getPeerCertificate().fingerprint256,
        FINGERPRINT.localhost,
      );
      s.destroy();
    } finally {
      for (const c of conns) c.close(true);
      listener.close();
    }
  });

  it("a listener without tls has no setTls and no startTls", async () => {
    const listen = await runtimeListen();
    const listener = await listen({ hostname: "127.0.0.1", port: 0 });
    const w = await connectPlain(listener.addr.port);
    try {
      assert.equal(listener.setTls, undefined);
      const r = await listener[Symbol.asyncIterator]().next();
      assert.ok(!r.done);
      assert.equal(r.value.startTls, undefined);
      assert.equal(r.value.tls, null);
      r.value.close(true);
    } finally {
      await w.close();
      listener.close();
    }
  });

  it("a STARTTLS handshake that does not come within handshakeTimeout fails and closes", async () => {
    const { listener, next } = await open({ handshakeTimeout: 300 });
    const w = await connectPlain(listener.addr.port);
    try {
      const conn = await next();
      const t0 = Date.now();
      const upgraded = conn.startTls!(bytes("220 2.0.0 go\r\n"));
      assert.equal(await w.reply(), "220 2.0.0 go\r\n");
      await assert.rejects(upgraded, /timed out/);
      assert.ok(Date.now() - t0 >= 250, `failed after ${Date.now() - t0} ms`);
      await w.waitClosed();
    } finally {
      await w.close();
      listener.close();
    }
  });

  it("an implicit TLS handshake that does not come within handshakeTimeout closes the connection", async () => {
    const { listener } = await open({
      implicitTls: true,
      handshakeTimeout: 300,
    });
    const w = await connectPlain(listener.addr.port);
    try {
      const t0 = Date.now();
      await w.waitClosed();
      assert.ok(Date.now() - t0 >= 250, `closed after ${Date.now() - t0} ms`);
    } finally {
      await w.close();
      listener.close();
    }
  });
});

describe("server: certificate replacement and shutdown during a handshake", () => {
  it("server.setTls serves the new certificate to new implicit TLS connections", async () => {
    const server = await serve({ port: 0, tls: TLS, implicitTls: true });
    try {
      const fingerprint = async () => {
        const s = await connectTls(server.addr.port);
        const fp = s.getPeerCertificate().fingerprint256;
        s.destroy();
        return fp;
      };
      assert.equal(await fingerprint(), FINGERPRINT.localhost);
      server.setTls(OTHER_TLS);
      assert.equal(await fingerprint(), FINGERPRINT.other);
      assert.throws(
        () => server.setTls({ key: "nope", cert: TLS.cert }),
        TypeError,
      );
      assert.equal(await fingerprint(), FINGERPRINT.other);
    } finally {
      await server.close();
    }
  });

  it("server.setTls throws a TypeError on a server without tls", async () => {
    const server = await serve({ port: 0 });
    try {
      assert.throws(() => server.setTls(TLS), TypeError);
    } finally {
      await server.close();
    }
  });

  it("close() does not wait for a client that said STARTTLS and never shook hands", async () => {
    const server = await serve({ port: 0, tls: TLS, closeTimeout: 20000 });
    const c = await connectPlain(server.addr.port);
    try {
      await ehlo(c);
      assert.match(await c.command("STARTTLS"), /^220 2\.0\.0 /);
      const started = Date.now();
      await server.close();
      assert.ok(Date.now() - started < 5000, "close() returned promptly");
    } finally {
      await c.close();
    }
  });
});
