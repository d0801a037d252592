// serve({ reverseDns }) end to end: the client's name from a local dnsmasq
// (records written here) in the session before onConnect, in the connect
// log entry and in the Received header of a message delivered to a
// Maildir; a DNS server that never answers delays the greeting by the
// lookup's timeout only; the early-talker rule across the lookup; option
// validation. The clients are documentation addresses presented through
// the PROXY protocol (dnsmasq cannot give 127.0.0.1 a PTR: the resolvers
// answer 127/8 themselves); only 127.0.0.1 is ever contacted.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as net from "node:net";
import { serve, type ServeOptions, type Session } from "../mod.ts";
import { createServer } from "../src/server.ts";
import { listen } from "../runtimes/node_net.ts";
import type { LogEntry } from "../src/session.ts";
import type { ReverseDnsResult } from "../src/rdns.ts";
import { Maildir } from "../src/maildir.ts";
import { type Client, connect, withServerUsing } from "./helpers/client.ts";
import {
  DNSMASQ,
  type Dnsmasq,
  dnsmasqInstalled,
  startDnsmasq,
  udpSocket,
} from "./helpers/dnsmasq.ts";

const RECORDS = [
  // confirmed (host-record writes the PTR too)
  "--host-record=mx4.example.test,192.0.2.10",
  "--host-record=mx6.example.test,2001:db8::10",
  // a PTR whose name resolves to another address
  "--ptr-record=20.2.0.192.in-addr.arpa,forged.example.test",
  "--address=/forged.example.test/198.51.100.20",
  // anything else in these zones does not exist (NXDOMAIN)
  "--local=/test/",
  "--local=/in-addr.arpa/",
  "--local=/ip6.arpa/",
];

/** A PROXY v1 header naming `address` as the client. */
function proxyHeader(address: string): string {
  return address.includes(":")
    ? `PROXY TCP6 ${address} 2001:db8::25 40000 25\r\n`
    : `PROXY TCP4 ${address} 198.51.100.25 40000 25\r\n`;
}

/** Resolves with `p`, or rejects after `ms` (a bound, not a measurement). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`${what} within ${ms} ms`)),
        ms,
      );
    }),
  ]).finally(() => clearTimeout(timer));
}

/** What onConnect saw and what the logger got. */
function recorder() {
  const seen: { hostname: string | null; result: ReverseDnsResult | null }[] =
    [];
  const log: LogEntry[] = [];
  const options: ServeOptions = {
    proxyProtocol: { trusted: ["127.0.0.1"] },
    onConnect(session: Session) {
      seen.push({
        hostname: session.clientHostname,
        result: session.reverseDns,
      });
    },
    logger: (e) => log.push(e),
  };
  return { seen, log, options };
}

/** Sends one message from a client already greeted (220 read). */
async function sendMessage(c: Client): Promise<void> {
  await c.send("EHLO client.example\r\n");
  assert.match(await c.reply(), /^250/);
  await c.send("MAIL FROM:<a@example.org>\r\n");
  assert.match(await c.reply(), /^250/);
  await c.send("RCPT TO:<b@example.net>\r\n");
  assert.match(await c.reply(), /^250/);
  await c.send("DATA\r\n");
  assert.match(await c.reply(), /^354/);
  await c.send("Subject: hi\r\n\r\nhello\r\n.\r\n");
  assert.match(await c.reply(), /^250/);
}

describe("reverseDns through serve() against dnsmasq", {
  skip: !dnsmasqInstalled && `${DNSMASQ} is not installed`,
}, () => {
  let dnsmasq: Dnsmasq | null = null;
  let dir = "";

  before(async () => {
    dnsmasq = await startDnsmasq(RECORDS);
    dir = await mkdtemp(join(tmpdir(), "smtpd-rdns-"));
  });

  after(async () => {
    await dnsmasq?.stop();
    if (dir !== "") await rm(dir, { recursive: true, force: true });
  });

  const cases = [
    {
      address: "192.0.2.10",
      status: "confirmed",
      name: "mx4.example.test",
      reverseName: "mx4.example.test",
      from: "from client.example (mx4.example.test [192.0.2.10])",
    },
    {
      address: "2001:db8::10",
      status: "confirmed",
      name: "mx6.example.test",
      reverseName: "mx6.example.test",
      from: "from client.example (mx6.example.test [IPv6:2001:db8::10])",
    },
    {
      address: "192.0.2.20",
      status: "unconfirmed",
      name: "unknown",
      reverseName: "forged.example.test",
      from: "from client.example (unknown [192.0.2.20])",
    },
    {
      address: "192.0.2.30",
      status: "none",
      name: "unknown",
      reverseName: "unknown",
      from: "from client.example (unknown [192.0.2.30])",
    },
  ] as const;

  for (const want of cases) {
    it(`names a ${want.status} client ${want.address} in the session, the log and the Received header`, async () => {
      const r = recorder();
      const maildir = new Maildir(join(dir, want.address.replace(/:/g, "_")), {
        serverName: "mx.test",
      });
      await maildir.create();
      const delivered: string[] = [];
      await withServerUsing(
        {
          ...r.options,
          reverseDns: true,
          dnsServers: [dnsmasq!.server],
          async onMessage(message) {
            delivered.push((await maildir.deliver(message)).path);
          },
        },
        connect,
        async (_server, open) => {
          const c = await open();
          await c.send(proxyHeader(want.address));
          assert.match(await c.reply(), /^220 /);
          await sendMessage(c);
        },
      );
      assert.equal(r.seen.length, 1);
      assert.equal(r.seen[0].hostname, want.name);
      assert.equal(r.seen[0].result?.status, want.status);
      assert.equal(r.seen[0].result?.reverseName, want.reverseName);
      const connectEntry = r.log.find((e) => e.type === "connect");
      assert.equal(
        connectEntry?.type === "connect" && connectEntry.reverseDns?.name,
        want.name,
      );
      assert.equal(delivered.length, 1);
      const text = await readFile(delivered[0], "latin1");
      const received = /^Received: ([^\r\n]*)\r\n/m.exec(text);
      assert.equal(received?.[1], want.from);
    });
  }

  it("makes no lookup for a proxy's health check (clientHostname stays null)", async () => {
    const r = recorder();
    await withServerUsing(
      {
        ...r.options,
        reverseDns: true,
        dnsServers: [dnsmasq!.server],
      },
      connect,
      async (server, open) => {
        const c = await open();
        // HAProxy's v1 check names its own connection as the client.
        await c.send(
          `PROXY TCP4 127.0.0.1 127.0.0.1 ${c.socket.localPort} ${server.addr.port}\r\n`,
        );
        assert.match(await c.reply(), /^220 /);
      },
    );
    assert.deepEqual(r.seen, [{ hostname: null, result: null }]);
  });

  it("leaves clientHostname and reverseDns null with reverseDns off", async () => {
    const r = recorder();
    await withServerUsing(r.options, connect, async (_server, open) => {
      const c = await open();
      await c.send(proxyHeader("192.0.2.10"));
      assert.match(await c.reply(), /^220 /);
    });
    assert.deepEqual(r.seen, [{ hostname: null, result: null }]);
    const connectEntry = r.log.find((e) => e.type === "connect");
    assert.ok(connectEntry !== undefined && !("reverseDns" in connectEntry));
  });
});

describe("reverseDns with a DNS server that never answers", () => {
  let silent: { port: number; close(): Promise<void> } | null = null;
  before(async () => {
    silent = await udpSocket();
  });
  after(async () => {
    await silent?.close();
  });

  const options = (more: ServeOptions): ServeOptions => ({
    reverseDns: { timeout: 400 },
    dnsServers: [`127.0.0.1:${silent!.port}`],
    ...more,
  });

  it("greets once the lookup has timed out, the client named unknown", async () => {
    const r = recorder();
    await withServerUsing(
      options(r.options),
      connect,
      async (_server, open) => {
        const c = await open();
        await c.send(proxyHeader("192.0.2.70"));
        assert.match(await within(c.reply(), 10_000, "a greeting"), /^220 /);
      },
    );
    assert.equal(r.seen.length, 1);
    assert.equal(r.seen[0].hostname, "unknown");
    assert.equal(r.seen[0].result?.status, "tempfail");
  });

  it("makes no lookup on a Unix socket (clientHostname stays null)", async () => {
    const dir = await mkdtemp(join(tmpdir(), "smtpd-rdns-unix-"));
    const path = join(dir, "smtp.sock");
    const r = recorder();
    const server = await serve({
      ...options(r.options),
      proxyProtocol: false,
      reverseDns: true, // 5 s: a lookup would hold the greeting that long
      path,
    });
    try {
      const transcript = await within(
        new Promise<string>((resolve, reject) => {
          const s = net.connect({ path });
          let out = "";
          s.setEncoding("latin1");
          s.on("data", (d: string) => (out += d));
          s.on("error", reject);
          s.on("close", () => resolve(out));
          s.write("QUIT\r\n");
        }),
        10_000,
        "a session",
      );
      assert.match(transcript, /^220 [^\r]*\r\n221 /);
    } finally {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    }
    assert.deepEqual(r.seen, [{ hostname: null, result: null }]);
  });

  it("without greetingDelay, reads what the client sent during the lookup after the greeting", async () => {
    const r = recorder();
    await withServerUsing(
      options(r.options),
      connect,
      async (_server, open) => {
        const c = await open();
        await c.send(proxyHeader("192.0.2.71"));
        // Before the lookup's timeout: no greeting yet.
        await new Promise((resolve) => setTimeout(resolve, 100));
        assert.equal(c.pending(), "");
        await c.send("EHLO early.example\r\n");
        assert.match(await within(c.reply(), 10_000, "a greeting"), /^220 /);
        assert.match(await c.reply(), /^250-mx\.test/);
      },
    );
    assert.equal(r.seen[0].hostname, "unknown");
  });

  it("with greetingDelay, refuses a client that talks while the lookup runs on", async () => {
    const r = recorder();
    await withServerUsing(
      options({ ...r.options, greetingDelay: 50 }),
      connect,
      async (_server, open) => {
        const c = await open();
        await c.send(proxyHeader("192.0.2.72"));
        // Past the greeting delay, before the lookup's timeout.
        await new Promise((resolve) => setTimeout(resolve, 150));
        await c.send("EHLO early.example\r\n");
        assert.match(await c.reply(), /^554 5\.7\.1 /);
      },
    );
    assert.deepEqual(r.seen, []);
    assert.ok(
      r.log.some((e) =>
        e.type === "refused" && e.reason === "sent data before the greeting"
      ),
    );
  });
});

describe("reverseDns options", () => {
  for (
    const [value, message] of [
      [
        { reverseDns: "yes" },
        /reverseDns: value is not an object or a boolean/,
      ],
      [{ reverseDns: { timout: 1 } }, /did you mean reverseDns\.timeout\?/],
      [
        { reverseDns: { timeout: 0 } },
        /reverseDns\.timeout: value is less than 1/,
      ],
      [
        { reverseDns: { cacheSize: -1 } },
        /reverseDns\.cacheSize: value is less than 0/,
      ],
      [
        { reverseDns: { cacheTtl: "60" } },
        /reverseDns\.cacheTtl: value is not a number/,
      ],
      [
        { reverseDns: true, dnsServers: ["nope"] },
        /dnsServers: nope is not an IP address/,
      ],
      [
        { reverseDns: true, dnsServers: [] },
        /dnsServers: value is not a non-empty array/,
      ],
      [
        { dnsServers: "127.0.0.1" },
        /dnsServers: value is not a non-empty array/,
      ],
    ] as const
  ) {
    it(`rejects ${JSON.stringify(value)}`, async () => {
      await assert.rejects(
        serve({ port: 0, ...(value as ServeOptions) }),
        (e: unknown) => e instanceof TypeError && message.test(e.message),
      );
    });
  }

  it("rejects reverseDns in createServer without a dnsResolver", async () => {
    await assert.rejects(
      createServer(listen, "node", { port: 0, reverseDns: true }),
      /Cannot use option reverseDns: createServer was given no dnsResolver/,
    );
  });
});
