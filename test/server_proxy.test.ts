// PROXY protocol and greetingDelay in the server, over real TCP on
// whichever runtime runs this file: headers written by hand on a raw
// socket (v1 text, v2 bytes built here), implicit TLS and STARTTLS behind
// a header, refusals, per-IP counting by the original client, and a Unix
// socket's peers (trusted: the socket file's permissions say who connects).
import { setTimeout as sleep } from "node:timers/promises";
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as net from "node:net";
import * as tls from "node:tls";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Duplex } from "node:stream";
import {
  type LogEntry,
  serve,
  type ServeOptions,
  type Session,
} from "../mod.ts";
import {
  connectPlain,
  connectTls,
  connectWire,
  ehlo,
  TLS,
  upgrade,
  Wire,
  withServer,
} from "./helpers/tls.ts";

const SIG = "\r\n\r\n\0\r\nQUIT\n";
const u16 = (n: number) => String.fromCharCode(n >> 8, n & 0xff);
const ip4 = (a: string) =>
  String.fromCharCode(...a.split(".").map((x) => Number(x)));
const tlv = (type: number, value: string) =>
  String.fromCharCode(type) + u16(value.length) + value;

/** A v2 PROXY header over TCP4 (latin1: one char, one byte). */
function v2(
  src: string,
  sport: number,
  dst: string,
  dport: number,
  tlvs = "",
): string {
  const block = ip4(src) + ip4(dst) + u16(sport) + u16(dport) + tlvs;
  return SIG + "\x21\x11" + u16(block.length) + block;
}
/** A v2 LOCAL header (a health check). */
const V2_LOCAL = SIG + "\x20\x00" + u16(0);

function v1(src: string, sport: number): string {
  return `PROXY TCP4 ${src} 198.51.100.1 ${sport} 25\r\n`;
}

/** Collects log entries and the sessions hooks saw. */
function recorder() {
  const log: LogEntry[] = [];
  const sessions: Session[] = [];
  const options: ServeOptions = {
    logger: (e) => log.push(e),
    onConnect(s) {
      sessions.push(s);
    },
  };
  return { log, sessions, options };
}

async function refusal(log: LogEntry[]): Promise<string> {
  for (let i = 0; i < 200; i++) {
    const e = log.find((x) => x.type === "refused");
    if (e && e.type === "refused") return e.reason;
    await sleep(10);
  }
  throw new Error("no refused entry");
}

/** Expects the server to close without sending a byte. */
async function closedSilently(w: Wire): Promise<void> {
  await w.waitClosed();
  assert.equal(w.pending(), "");
}

describe("PROXY protocol", () => {
  it("takes the client's address from a v1 header", async () => {
    const r = recorder();
    await withServer(
      { ...r.options, proxyProtocol: true },
      async (_s, open) => {
        const w = await open();
        await w.send(v1("192.0.2.1", 56324));
        assert.match(await ehlo(w), /^250-/);
        const s = r.sessions[0];
        assert.equal(s.remoteAddress, "192.0.2.1");
        assert.equal(s.remotePort, 56324);
        assert.equal(s.proxy?.version, 1);
        assert.equal(s.proxy?.command, "proxy");
        assert.equal(s.proxy?.address, "127.0.0.1");
        assert.equal(s.proxy?.port, w.socket.localPort);
        assert.deepEqual(s.proxy?.destination, {
          address: "198.51.100.1",
          port: 25,
        });
        const c = r.log.find((e) => e.type === "connect");
        assert.ok(c?.type === "connect");
        assert.equal(c.remoteAddress, "192.0.2.1");
        assert.equal(c.proxy?.command, "proxy");
        assert.equal(c.proxy?.healthCheck, false);
        assert.equal(s.proxy?.healthCheck, false);
      },
    );
  });

  it("takes the client's address and TLVs from a v2 header", async () => {
    const r = recorder();
    const ssl = tlv(
      0x20,
      "\x01\0\0\0\0" + tlv(0x21, "TLSv1.3") +
        tlv(0x23, "TLS_AES_128_GCM_SHA256"),
    );
    const header = v2(
      "203.0.113.9",
      40000,
      "198.51.100.1",
      465,
      tlv(0x02, "mx.example.org") + ssl,
    );
    await withServer(
      { ...r.options, proxyProtocol: true },
      async (_s, open) => {
        const w = await open();
        await w.send(header);
        assert.match(await ehlo(w), /^250-/);
        const s = r.sessions[0];
        assert.equal(s.remoteAddress, "203.0.113.9");
        assert.equal(s.remotePort, 40000);
        assert.equal(s.proxy?.version, 2);
        assert.equal(s.proxy?.tlvs.authority, "mx.example.org");
        assert.equal(s.proxy?.tlvs.ssl?.version, "TLSv1.3");
        assert.equal(s.proxy?.tlvs.ssl?.clientSsl, true);
        assert.equal(s.proxy?.tlvs.ssl?.cipher, "TLS_AES_128_GCM_SHA256");
      },
    );
  });

  it("keeps the bytes that come with the header (header + EHLO in one packet)", async () => {
    const r = recorder();
    await withServer(
      { ...r.options, proxyProtocol: true },
      async (_s, open) => {
        for (
          const header of [
            v1("192.0.2.7", 1000),
            v2("192.0.2.8", 2000, "192.0.2.254", 25),
          ]
        ) {
          const w = await open();
          await w.send(header + "EHLO client.test\r\nNOOP\r\n");
          assert.match(await w.reply(), /^220 /);
          assert.match(await w.reply(), /^250-/);
          assert.match(await w.reply(), /^250 /);
          await w.close();
        }
        assert.deepEqual(r.sessions.map((s) => s.remoteAddress), [
          "192.0.2.7",
          "192.0.2.8",
        ]);
      },
    );
  });

  it("reads a header that arrives byte by byte", async () => {
    const r = recorder();
    await withServer(
      { ...r.options, proxyProtocol: true },
      async (_s, open) => {
        const w = await open();
        w.socket.setNoDelay(true);
        const header = v2("192.0.2.44", 4444, "192.0.2.254", 25);
        for (const ch of header) {
          await w.send(ch);
          await sleep(1);
        }
        assert.match(await ehlo(w), /^250-/);
        assert.equal(r.sessions[0].remoteAddress, "192.0.2.44");
      },
    );
  });

  it("takes IPv6 client addresses (v1 TCP6)", async () => {
    const r = recorder();
    await withServer(
      { ...r.options, proxyProtocol: true },
      async (_s, open) => {
        const w = await open();
        await w.send("PROXY TCP6 2001:DB8::1 2001:db8::2 1234 25\r\n");
        assert.match(await ehlo(w), /^250-/);
        assert.equal(r.sessions[0].remoteAddress, "2001:db8::1");
        assert.equal(r.sessions[0].proxy?.family, "tcp6");
      },
    );
  });

  it("serves a v2 LOCAL health check as the proxy's own session, marked local", async () => {
    const r = recorder();
    await withServer(
      { ...r.options, proxyProtocol: true },
      async (_s, open) => {
        const w = await open();
        await w.send(V2_LOCAL);
        assert.match(await ehlo(w), /^250-/);
        assert.match(await w.command("QUIT"), /^221 /);
        const s = r.sessions[0];
        assert.equal(s.remoteAddress, "127.0.0.1");
        assert.equal(s.remotePort, w.socket.localPort);
        assert.equal(s.proxy?.command, "local");
        assert.equal(s.proxy?.source, null);
        const c = r.log.find((e) => e.type === "connect");
        assert.ok(c?.type === "connect");
        assert.equal(c.proxy?.command, "local");
        assert.equal(c.proxy?.healthCheck, true);
        assert.equal(s.proxy?.healthCheck, true);
      },
    );
  });

  it("marks a v1 header naming the proxy's own connection as a health check (HAProxy's v1 checks)", async () => {
    const r = recorder();
    await withServer(
      { ...r.options, proxyProtocol: true },
      async (server, open) => {
        const w = await open();
        await w.send(
          `PROXY TCP4 127.0.0.1 127.0.0.1 ${w.socket.localPort} ${server.addr.port}\r\n`,
        );
        assert.match(await ehlo(w), /^250-/);
        assert.equal(r.sessions[0].proxy?.healthCheck, true);
        assert.equal(r.sessions[0].remotePort, w.socket.localPort);
      },
    );
  });

  it("closes a peer that is not trusted without a greeting", async () => {
    const r = recorder();
    await withServer(
      { ...r.options, proxyProtocol: { trusted: ["10.0.0.0/8", "fd00::/8"] } },
      async (_s, open) => {
        const w = await open();
        await w.send(v1("192.0.2.1", 1)).catch(() => {});
        await closedSilently(w);
        assert.match(await refusal(r.log), /untrusted/);
        assert.equal(r.sessions.length, 0);
      },
    );
  });

  for (
    const [name, bytes, reason] of [
      [
        "a client that speaks SMTP at once",
        "EHLO client.test\r\n",
        /bad PROXY header/,
      ],
      [
        "a malformed v1 header",
        "PROXY TCP4 192.0.2.1 nope 1 2\r\n",
        /bad PROXY header/,
      ],
      [
        "a v1 header without CRLF in 107 bytes",
        "PROXY UNKNOWN " + "x".repeat(120),
        /107/,
      ],
      [
        "a v2 header longer than maxV2Length",
        SIG + "\x21\x11" + u16(5000),
        /more than the limit/,
      ],
    ] as const
  ) {
    it(`closes ${name} without a greeting`, async () => {
      const r = recorder();
      await withServer(
        { ...r.options, proxyProtocol: true },
        async (_s, open) => {
          const w = await open();
          await w.send(bytes).catch(() => {});
          await closedSilently(w);
          assert.match(await refusal(r.log), reason);
          assert.equal(r.sessions.length, 0);
        },
      );
    });
  }

  it("closes a connection whose header does not complete within handshakeTimeout", async () => {
    const r = recorder();
    await withServer(
      { ...r.options, proxyProtocol: true, handshakeTimeout: 300 },
      async (_s, open) => {
        const silent = await open();
        const slow = await open();
        const t0 = Date.now();
        await slow.send("PROXY TCP4 192.0.2.1 ");
        await closedSilently(silent);
        await closedSilently(slow);
        assert.ok(Date.now() - t0 >= 250, `closed after ${Date.now() - t0} ms`);
        assert.match(await refusal(r.log), /no PROXY header within 300 ms/);
        assert.equal(r.sessions.length, 0);
      },
    );
  });

  it("counts maxConnectionsPerIp by the original client", async () => {
    const r = recorder();
    await withServer(
      { ...r.options, proxyProtocol: true, maxConnectionsPerIp: 1 },
      async (server, open) => {
        const a = await open();
        await a.send(v1("192.0.2.1", 1001));
        assert.match(await a.reply(), /^220 /);
        const b = await open();
        await b.send(v1("192.0.2.2", 1002));
        assert.match(await b.reply(), /^220 /);
        const c = await open();
        await c.send(v1("192.0.2.1", 1003));
        assert.match(await c.reply(), /^421 4\.7\.0 /);
        await c.waitClosed();
        assert.equal(
          await refusal(r.log),
          "too many connections from this address",
        );
        // Freed when the first one leaves.
        await a.close();
        for (let i = 0; i < 100 && server.connections > 1; i++) await sleep(10);
        const d = await open();
        await d.send(v1("192.0.2.1", 1004));
        assert.match(await d.reply(), /^220 /);
      },
    );
  });

  it("counts maxConnectionsPerIp per IPv6 /64, and an IPv4-mapped client as its IPv4 address", async () => {
    const r = recorder();
    await withServer(
      { ...r.options, proxyProtocol: true, maxConnectionsPerIp: 3 },
      async (_server, open) => {
        const from = async (src: string, port: number) => {
          const w = await open();
          await w.send(
            `PROXY TCP6 ${src} 2001:db8:ffff::1 ${port} 25\r\n`,
          );
          return (await w.reply()).slice(0, 9);
        };
        // A trusted proxy names 6 addresses of one /64: 3 get in.
        const one64: string[] = [];
        for (let i = 1; i <= 6; i++) {
          one64.push(await from(`2001:db8:1:2::${i.toString(16)}`, 1000 + i));
        }
        assert.deepEqual(one64, [
          "220 mx.te",
          "220 mx.te",
          "220 mx.te",
          "421 4.7.0",
          "421 4.7.0",
          "421 4.7.0",
        ]);
        // The next /64 is another client.
        assert.equal(await from("2001:db8:1:3::1", 2000), "220 mx.te");
        // ::ffff:192.0.2.1 and 192.0.2.1 are one client.
        for (let i = 0; i < 3; i++) {
          assert.equal(await from("::ffff:192.0.2.1", 3000 + i), "220 mx.te");
        }
        const w = await open();
        await w.send(v1("192.0.2.1", 3010));
        assert.match(await w.reply(), /^421 4\.7\.0 /);
      },
    );
  });

  it("runs STARTTLS behind a header as without one", async () => {
    const r = recorder();
    await withServer(
      { ...r.options, proxyProtocol: true, tls: TLS },
      async (_s, open) => {
        const w = await open();
        await w.send(v1("192.0.2.5", 5555));
        assert.match(await ehlo(w), /STARTTLS/);
        assert.match(await w.command("STARTTLS"), /^220 /);
        const t = await upgrade(w);
        assert.match(await t.command("EHLO client.test"), /^250-/);
        assert.match(await t.command("MAIL FROM:<a@example.org>"), /^250 /);
        const s = r.sessions[0];
        assert.equal(s.secure, true);
        assert.equal(s.remoteAddress, "192.0.2.5");
        await t.close();
      },
    );
  });

  it("reads the header before the TLS handshake with implicitTls", async () => {
    const r = recorder();
    await withServer(
      { ...r.options, proxyProtocol: true, tls: TLS, implicitTls: true },
      async (server, _open) => {
        const raw = await connectPlain(server.addr.port);
        raw.detach();
        await new Promise<void>((res) =>
          raw.socket.write(
            Buffer.from(
              v2("192.0.2.9", 9999, "192.0.2.254", 465, tlv(0x02, "localhost")),
              "latin1",
            ),
            () => res(),
          )
        );
        const t = new Wire(await connectTls(0, { socket: raw.socket }));
        assert.match(await ehlo(t), /^250-/);
        const s = r.sessions[0];
        assert.equal(s.secure, true);
        assert.equal(s.remoteAddress, "192.0.2.9");
        assert.equal(s.remotePort, 9999);
        assert.equal(s.proxy?.tlvs.authority, "localhost");
        await t.close();
      },
    );
  });

  it("keeps the ClientHello that comes in the header's packet with implicitTls", async () => {
    const r = recorder();
    await withServer(
      { ...r.options, proxyProtocol: true, tls: TLS, implicitTls: true },
      async (server) => {
        const raw = net.connect({ port: server.addr.port, host: "127.0.0.1" });
        await new Promise((res) => raw.once("connect", res));
        // The header and the client's first TLS record in one write.
        let first = true;
        const header = Buffer.from(v1("192.0.2.10", 1010), "latin1");
        const pipe = new Duplex({
          read() {},
          write(chunk, _enc, cb) {
            raw.write(first ? Buffer.concat([header, chunk]) : chunk, cb);
            first = false;
          },
          final(cb) {
            raw.end(cb);
          },
        });
        raw.on("data", (d) => pipe.push(d));
        raw.on("end", () => pipe.push(null));
        raw.on("error", (e) => pipe.destroy(e));
        const secure = tls.connect({ socket: pipe, rejectUnauthorized: false });
        await new Promise((res, rej) => {
          secure.once("secureConnect", res);
          secure.once("error", rej);
        });
        const t = new Wire(secure as unknown as net.Socket);
        assert.match(await ehlo(t), /^250-/);
        assert.equal(r.sessions[0].remoteAddress, "192.0.2.10");
        secure.destroy();
        raw.destroy();
      },
    );
  });

  it("closes an implicit-TLS connection without a header, and an untrusted peer", async () => {
    for (const trusted of [undefined, ["10.0.0.0/8"]]) {
      const r = recorder();
      await withServer(
        {
          ...r.options,
          proxyProtocol: trusted ? { trusted } : true,
          tls: TLS,
          implicitTls: true,
        },
        async (server) => {
          await assert.rejects(connectTls(server.addr.port));
          assert.match(
            await refusal(r.log),
            trusted ? /untrusted/ : /bad PROXY header/,
          );
          assert.equal(r.sessions.length, 0);
        },
      );
    }
  });

  it("lets close() end a connection still waiting for its header", async () => {
    const server = await serve({
      hostname: "127.0.0.1",
      port: 0,
      proxyProtocol: true,
    });
    const w = await connectPlain(server.addr.port);
    await sleep(50);
    const t0 = Date.now();
    await server.close();
    assert.ok(Date.now() - t0 < 2000);
    await w.waitClosed();
  });

  it("on a Unix socket takes the header from any peer, whatever the trusted list", async () => {
    const dir = await mkdtemp(join(tmpdir(), "smtpd-proxy-unix-"));
    const r = recorder();
    // Neither list names the peer ("unix"): the socket file's permissions
    // say who connects.
    for (const proxyProtocol of [true, { trusted: ["10.0.0.5"] }]) {
      r.sessions.length = 0;
      const server = await serve({
        ...r.options,
        path: join(dir, "smtpd.sock"),
        proxyProtocol,
      });
      try {
        const w = await connectWire({ path: join(dir, "smtpd.sock") });
        await w.send(v1("192.0.2.7", 40001));
        assert.match(await ehlo(w), /^250-/);
        await w.close();
        const s = r.sessions[0];
        assert.equal(s.remoteAddress, "192.0.2.7");
        assert.equal(s.remotePort, 40001);
        assert.equal(s.proxy?.address, "unix");
        const w2 = await connectWire({ path: join(dir, "smtpd.sock") });
        await w2.send(v2("192.0.2.8", 40002, "192.0.2.254", 25));
        assert.match(await ehlo(w2), /^250-/);
        await w2.close();
        assert.equal(r.sessions[1].remoteAddress, "192.0.2.8");
      } finally {
        await server.close();
      }
    }
    assert.deepEqual(r.log.filter((e) => e.type === "refused"), []);
    await rm(dir, { recursive: true, force: true });
  });

  it("on a Unix socket reads the header before the TLS handshake with implicitTls", async () => {
    const dir = await mkdtemp(join(tmpdir(), "smtpd-proxy-unix-"));
    const r = recorder();
    const path = join(dir, "smtps.sock");
    const server = await serve({
      ...r.options,
      path,
      proxyProtocol: true,
      tls: TLS,
      implicitTls: true,
    });
    try {
      const raw = await connectWire({ path });
      raw.detach();
      await raw.send(v1("192.0.2.9", 40003));
      const t = new Wire(await connectTls(0, { socket: raw.socket }));
      assert.match(await ehlo(t), /^250-/);
      await t.close();
      const s = r.sessions[0];
      assert.equal(s.secure, true);
      assert.equal(s.remoteAddress, "192.0.2.9");
      assert.equal(s.remotePort, 40003);
    } finally {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("validates its options when the server starts", async () => {
    const bad: [unknown, RegExp][] = [
      [{ trusted: ["10.1.2.3/8"] }, /10\.1\.2\.3\/8/],
      [{ trusted: ["not-an-ip"] }, /not-an-ip/],
      [{ trusted: [] }, /empty/],
      [{ trusted: "127.0.0.1" }, /array of strings/],
      [{ maxV2Length: 10 }, /maxV2Length/],
      [{ trustd: ["127.0.0.1"] }, /trustd/],
      ["yes", /proxyProtocol/],
    ];
    for (const [value, message] of bad) {
      await assert.rejects(
        serve({
          port: 0,
          proxyProtocol: value as ServeOptions["proxyProtocol"],
        }),
        (e: Error) => e instanceof TypeError && message.test(e.message),
      );
    }
    for (const g of [-1, 1.5, "10", NaN]) {
      await assert.rejects(
        serve({ port: 0, greetingDelay: g as number }),
        TypeError,
      );
    }
  });
});

describe("greetingDelay", () => {
  it("answers an early talker 554 5.7.1 and closes", async () => {
    const r = recorder();
    await withServer({ ...r.options, greetingDelay: 300 }, async (_s, open) => {
      const w = await open();
      await w.send("EHLO early.test\r\n");
      assert.match(await w.reply(), /^554 5\.7\.1 /);
      await w.waitClosed();
      assert.match(await refusal(r.log), /before the greeting/);
      assert.equal(r.sessions.length, 0);
    });
  });

  it("greets a patient client after the delay", async () => {
    await withServer({ greetingDelay: 200 }, async (_s, open) => {
      const t0 = Date.now();
      const w = await open();
      assert.match(await ehlo(w), /^250-/);
      assert.ok(Date.now() - t0 >= 190, `greeted after ${Date.now() - t0} ms`);
      assert.match(await w.command("NOOP"), /^250 /);
    });
  });

  it("starts after the PROXY header; bytes with the header are early talk", async () => {
    const r = recorder();
    await withServer(
      { ...r.options, greetingDelay: 200, proxyProtocol: true },
      async (_s, open) => {
        const early = await open();
        await early.send(v1("192.0.2.1", 1) + "EHLO x\r\n");
        assert.match(await early.reply(), /^554 5\.7\.1 /);
        await early.waitClosed();
        const patient = await open();
        await sleep(100);
        const t0 = Date.now();
        await patient.send(v1("192.0.2.2", 2));
        assert.match(await ehlo(patient), /^250-/);
        assert.ok(
          Date.now() - t0 >= 190,
          `greeted after ${Date.now() - t0} ms`,
        );
        assert.deepEqual(r.sessions.map((s) => s.remoteAddress), ["192.0.2.2"]);
        const ref = r.log.find((e) => e.type === "refused");
        assert.ok(ref?.type === "refused");
        assert.equal(ref.remoteAddress, "192.0.2.1");
      },
    );
  });
});
