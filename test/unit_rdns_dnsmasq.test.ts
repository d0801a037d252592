// Reverse DNS against real DNS servers started by the test: Debian's
// dnsmasq (installed by .ci/run) in the foreground with the records below,
// logging every query it receives, and a UDP socket that reads and drops
// every query (a server that never answers). The client addresses are
// documentation ranges that exist only as records here: only the DNS
// servers, on 127.0.0.1, are ever contacted.
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  DNSMASQ,
  type Dnsmasq,
  dnsmasqInstalled,
  startDnsmasq,
  udpSocket,
} from "./helpers/dnsmasq.ts";
import { createResolver, createReverseDns } from "../runtimes/dns.ts";
import type { ReverseDnsResult } from "../src/rdns.ts";

/** The name of the PTR query dnsmasq logs for an IPv4 address. */
const arpa = (ip: string) =>
  `${ip.split(".").reverse().join(".")}.in-addr.arpa`;

// Records: name → forward address, address → PTR names.
const RECORDS = [
  // confirmed IPv4 and IPv6 (host-record writes the PTR too)
  "--host-record=mx4.example.test,192.0.2.10",
  "--host-record=mx6.example.test,2001:db8::10",
  // a PTR whose name resolves to another address
  "--ptr-record=20.2.0.192.in-addr.arpa,forged.example.test",
  "--address=/forged.example.test/198.51.100.20",
  // two PTR names, the second one given (dnsmasq answers it first) resolves
  // elsewhere, the first one back
  "--ptr-record=40.2.0.192.in-addr.arpa,good.example.test",
  "--ptr-record=40.2.0.192.in-addr.arpa,bad.example.test",
  "--address=/good.example.test/192.0.2.40",
  "--address=/bad.example.test/198.51.100.40",
  // for the cache and coalescing cases
  "--host-record=cached.example.test,192.0.2.50",
  "--host-record=shared.example.test,192.0.2.60",
  // anything else in these zones does not exist (NXDOMAIN, not REFUSED)
  "--local=/test/",
  "--local=/in-addr.arpa/",
  "--local=/ip6.arpa/",
];

describe("reverse DNS against dnsmasq", {
  skip: !dnsmasqInstalled && `${DNSMASQ} is not installed`,
}, () => {
  let dnsmasq: Dnsmasq | null = null;
  let server = "";
  let markers = 0;

  before(async () => {
    dnsmasq = await startDnsmasq(RECORDS);
    server = dnsmasq.server;
  });

  after(async () => {
    await dnsmasq?.stop();
  });

  /**
   * How many queries for `name` dnsmasq has received: a marker query is
   * sent and waited for in the log first, so every earlier query is there.
   */
  async function queries(name: string): Promise<number> {
    const marker = `marker${++markers}.example.test`;
    await createResolver({ dnsServers: [server] }).resolve4(
      marker,
      new AbortController().signal,
    );
    await dnsmasq!.program.waitFor(
      new RegExp(`query\\[A\\] ${marker} `),
      "stderr",
    );
    const lines = dnsmasq!.program.stderr().split("\n");
    return lines.filter((l) => l.includes(`] ${name} from `)).length;
  }

  it("confirms an IPv4 address whose PTR name resolves back to it", async () => {
    const r = await createReverseDns({ dnsServers: [server] }).lookup(
      "192.0.2.10",
    );
    assert.deepEqual(r, {
      address: "192.0.2.10",
      status: "confirmed",
      name: "mx4.example.test",
      reverseName: "mx4.example.test",
      ptrNames: ["mx4.example.test"],
    });
  });

  it("confirms an IPv6 address (AAAA), written in any form", async () => {
    const r = await createReverseDns({ dnsServers: [server] }).lookup(
      "2001:DB8:0:0::10",
    );
    assert.equal(r.status, "confirmed");
    assert.equal(r.address, "2001:db8::10");
    assert.equal(r.name, "mx6.example.test");
  });

  it("confirms an IPv4-mapped IPv6 client through its A record", async () => {
    const r = await createReverseDns({ dnsServers: [server] }).lookup(
      "::ffff:192.0.2.10",
    );
    assert.equal(r.status, "confirmed");
    assert.equal(r.address, "192.0.2.10");
  });

  it("names a forged PTR unknown and keeps the PTR name apart", async () => {
    const r = await createReverseDns({ dnsServers: [server] }).lookup(
      "192.0.2.20",
    );
    assert.deepEqual(r, {
      address: "192.0.2.20",
      status: "unconfirmed",
      name: "unknown",
      reverseName: "forged.example.test",
      ptrNames: ["forged.example.test"],
    });
  });

  it("names an address without PTR unknown (IPv4 and IPv6)", async () => {
    const rdns = createReverseDns({ dnsServers: [server] });
    for (const address of ["192.0.2.30", "2001:db8::30"]) {
      const r = await rdns.lookup(address);
      assert.equal(r.status, "none");
      assert.equal(r.name, "unknown");
      assert.equal(r.reverseName, "unknown");
      assert.deepEqual(r.ptrNames, []);
    }
  });

  it("takes the PTR name that confirms among several", async () => {
    const r = await createReverseDns({ dnsServers: [server] }).lookup(
      "192.0.2.40",
    );
    assert.equal(r.status, "confirmed");
    assert.equal(r.name, "good.example.test");
    assert.deepEqual([...r.ptrNames].sort(), [
      "bad.example.test",
      "good.example.test",
    ]);
  });

  it("answers a second lookup from the cache, without a query", async () => {
    const rdns = createReverseDns({ dnsServers: [server] });
    const first = await rdns.lookup("192.0.2.50");
    assert.equal(first.name, "cached.example.test");
    assert.equal(await queries(arpa("192.0.2.50")), 1);
    assert.equal(await queries("cached.example.test"), 1);
    const second = await rdns.lookup("192.0.2.50");
    assert.equal(second, first);
    assert.equal(await queries(arpa("192.0.2.50")), 1);
    assert.equal(await queries("cached.example.test"), 1);
  });

  it("sends one set of queries for concurrent lookups of one address", async () => {
    const rdns = createReverseDns({ dnsServers: [server] });
    const results: ReverseDnsResult[] = await Promise.all(
      Array.from({ length: 5 }, () => rdns.lookup("192.0.2.60")),
    );
    for (const r of results) assert.equal(r, results[0]);
    assert.equal(results[0].name, "shared.example.test");
    assert.equal(await queries(arpa("192.0.2.60")), 1);
    assert.equal(await queries("shared.example.test"), 1);
  });
});

describe("reverse DNS against a server that never answers", () => {
  it("ends at the timeout with unknown, cancels its query, caches the failure", async () => {
    let received = 0;
    const silent = await udpSocket(() => received++);
    try {
      const rdns = createReverseDns({
        dnsServers: [`127.0.0.1:${silent.port}`],
        timeout: 200,
      });
      let guard: ReturnType<typeof setTimeout> | undefined;
      const r = await Promise.race([
        rdns.lookup("192.0.2.70"),
        new Promise<never>((_, reject) => {
          guard = setTimeout(
            () => reject(new Error("the lookup did not end at its timeout")),
            10_000,
          );
        }),
      ]).finally(() => clearTimeout(guard));
      assert.equal(r.status, "tempfail");
      assert.equal(r.name, "unknown");
      assert.equal(r.reverseName, "unknown");
      // The query was cancelled: no retry reaches the server afterwards.
      // Uncancelled, the first retry comes 1 s (Deno), 2 s (Node) or 3 s
      // (Bun) after the query.
      const sent = received;
      assert.ok(sent >= 1);
      await sleep(3500);
      assert.equal(received, sent);
      // Negative cache: the next session from that address does not wait.
      assert.equal(await rdns.lookup("192.0.2.70"), r);
      assert.equal(received, sent);
    } finally {
      await silent.close();
    }
  });
});
