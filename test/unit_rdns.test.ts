// ReverseDns with a resolver made of records in memory: the FCrDNS
// outcomes, the cache's bounds, coalescing, the timeout, option
// validation; the Received header's from part and the dnsServers option.
// test/unit_rdns_dnsmasq.test.ts runs the same lookups against a real server.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  type DnsResolver,
  dnsServersOption,
  MAX_PTR_NAMES,
  receivedFrom,
  ReverseDns,
} from "../src/rdns.ts";

/** What a fake resolver was asked, and the signals it was given. */
interface Fake extends DnsResolver {
  calls: string[];
  signals: AbortSignal[];
}

/**
 * A resolver answering from `ptr` and `forward` (a function value is called
 * and may throw or never settle); a name or address without entry has no
 * record.
 */
function fake(
  ptr: Record<string, string[] | (() => Promise<string[]>)>,
  forward: Record<string, string[] | (() => Promise<string[]>)> = {},
): Fake {
  const calls: string[] = [];
  const signals: AbortSignal[] = [];
  const answer = (
    table: Record<string, string[] | (() => Promise<string[]>)>,
    key: string,
  ) => {
    const v = table[key];
    return typeof v === "function" ? v() : Promise.resolve(v ?? []);
  };
  return {
    calls,
    signals,
    reverse(address, signal) {
      calls.push(`PTR ${address}`);
      signals.push(signal);
      return answer(ptr, address);
    },
    resolve4(name, signal) {
      calls.push(`A ${name}`);
      signals.push(signal);
      return answer(forward, `A ${name}`);
    },
    resolve6(name, signal) {
      calls.push(`AAAA ${name}`);
      signals.push(signal);
      return answer(forward, `AAAA ${name}`);
    },
  };
}

const never = () => new Promise<string[]>(() => {});
const fail = () => Promise.reject(new Error("SERVFAIL"));

describe("ReverseDns outcomes", () => {
  it("confirms through A for IPv4 and AAAA for IPv6, names in lower case without the final dot", async () => {
    const r = fake({
      "192.0.2.1": ["MX.Example.ORG."],
      "2001:db8::1": ["mx6.example.org"],
    }, {
      "A mx.example.org": ["192.0.2.1"],
      "AAAA mx6.example.org": ["2001:0db8:0::1"],
    });
    const rdns = new ReverseDns(r);
    assert.equal((await rdns.lookup("192.0.2.1")).name, "mx.example.org");
    assert.equal((await rdns.lookup("2001:db8::1")).name, "mx6.example.org");
    assert.deepEqual(r.calls, [
      "PTR 192.0.2.1",
      "A mx.example.org",
      "PTR 2001:db8::1",
      "AAAA mx6.example.org",
    ]);
  });

  it("does not confirm an IPv6 client through an A record", async () => {
    const r = fake({ "2001:db8::1": ["mx.example.org"] }, {
      "A mx.example.org": ["192.0.2.1"],
    });
    const res = await new ReverseDns(r).lookup("2001:db8::1");
    assert.equal(res.status, "unconfirmed");
    assert.equal(res.name, "unknown");
    assert.equal(res.reverseName, "mx.example.org");
  });

  it("ignores malformed PTR names and names that look like addresses", async () => {
    const r = fake({
      "192.0.2.1": [
        "bad name.example",
        "-x.example",
        "192.0.2.1",
        "ok.example",
      ],
    }, { "A ok.example": ["192.0.2.1"], "A 192.0.2.1": ["192.0.2.1"] });
    const res = await new ReverseDns(r).lookup("192.0.2.1");
    assert.deepEqual(res.ptrNames, ["ok.example"]);
    assert.equal(res.name, "ok.example");
    const only = fake({ "192.0.2.1": ["192.0.2.1"] });
    assert.equal(
      (await new ReverseDns(only).lookup("192.0.2.1")).status,
      "none",
    );
  });

  it(`checks at most ${MAX_PTR_NAMES} PTR names`, async () => {
    const names = Array.from({ length: 20 }, (_, i) => `n${i}.example`);
    const r = fake({ "192.0.2.1": names }, { "A n15.example": ["192.0.2.1"] });
    const res = await new ReverseDns(r).lookup("192.0.2.1");
    assert.equal(res.status, "unconfirmed");
    assert.equal(res.ptrNames.length, MAX_PTR_NAMES);
    assert.equal(r.calls.length, 1 + MAX_PTR_NAMES);
  });

  it("gives tempfail when the PTR query fails", async () => {
    const res = await new ReverseDns(fake({ "192.0.2.1": fail })).lookup(
      "192.0.2.1",
    );
    assert.equal(res.status, "tempfail");
    assert.equal(res.name, "unknown");
  });

  it("gives tempfail when a forward query fails and none confirms, confirmed when another does", async () => {
    const r = fake({ "192.0.2.1": ["a.example", "b.example"] }, {
      "A a.example": fail,
      "A b.example": ["198.51.100.1"],
    });
    assert.equal(
      (await new ReverseDns(r).lookup("192.0.2.1")).status,
      "tempfail",
    );
    const r2 = fake({ "192.0.2.1": ["a.example", "b.example"] }, {
      "A a.example": fail,
      "A b.example": ["192.0.2.1"],
    });
    const res = await new ReverseDns(r2).lookup("192.0.2.1");
    assert.equal(res.status, "confirmed");
    assert.equal(res.name, "b.example");
  });

  it("ends at the timeout with tempfail and aborts the queries under way", async () => {
    const r = fake({ "192.0.2.1": ["slow.example"] }, {
      "A slow.example": never,
    });
    const res = await new ReverseDns(r, { timeout: 50 }).lookup("192.0.2.1");
    assert.equal(res.status, "tempfail");
    assert.deepEqual(res.ptrNames, ["slow.example"]);
    assert.ok(r.signals.length === 2 && r.signals.every((s) => s.aborted));
  });

  it("aborts the signal once a lookup is over", async () => {
    const r = fake({ "192.0.2.1": [] });
    await new ReverseDns(r).lookup("192.0.2.1");
    assert.equal(r.signals[0].aborted, true);
  });

  it("throws a TypeError for an address that is not an IP address", () => {
    const rdns = new ReverseDns(fake({}));
    for (const bad of ["mail.example", "192.0.2.256", "", 7]) {
      assert.throws(() => rdns.lookup(bad as string), {
        name: "TypeError",
        message: `Cannot look up reverse DNS: ${bad} is not an IP address`,
      });
    }
  });
});

describe("ReverseDns cache and coalescing", () => {
  it("queries once for concurrent lookups of one address, in any notation", async () => {
    let release: (v: string[]) => void = () => {};
    const r = fake({
      "2001:db8::1": () => new Promise((resolve) => (release = resolve)),
    });
    const rdns = new ReverseDns(r);
    const all = Promise.all([
      rdns.lookup("2001:db8::1"),
      rdns.lookup("2001:DB8:0::1"),
      rdns.lookup("2001:db8:0:0:0:0:0:1"),
    ]);
    release([]);
    const [a, b, c] = await all;
    assert.equal(a, b);
    assert.equal(a, c);
    assert.deepEqual(r.calls, ["PTR 2001:db8::1"]);
  });

  it("keeps positive entries for cacheTtl and negative ones for negativeCacheTtl", async () => {
    let now = 0;
    const r = fake({ "192.0.2.1": ["mx.example"], "192.0.2.2": [] }, {
      "A mx.example": ["192.0.2.1"],
    });
    const rdns = new ReverseDns(r, {
      cacheTtl: 1000,
      negativeCacheTtl: 100,
      now: () => now,
    });
    await rdns.lookup("192.0.2.1");
    await rdns.lookup("192.0.2.2");
    assert.equal(r.calls.length, 3);
    now = 99;
    await rdns.lookup("192.0.2.1");
    await rdns.lookup("192.0.2.2");
    assert.equal(r.calls.length, 3);
    now = 100;
    await rdns.lookup("192.0.2.1");
    await rdns.lookup("192.0.2.2");
    assert.deepEqual(r.calls.slice(3), ["PTR 192.0.2.2"]);
    now = 1000;
    await rdns.lookup("192.0.2.1");
    assert.deepEqual(r.calls.slice(4), ["PTR 192.0.2.1", "A mx.example"]);
  });

  it("caches a timeout as a negative entry", async () => {
    const r = fake({ "192.0.2.1": never });
    const rdns = new ReverseDns(r, { timeout: 20 });
    const first = await rdns.lookup("192.0.2.1");
    assert.equal(await rdns.lookup("192.0.2.1"), first);
    assert.equal(r.calls.length, 1);
  });

  it("holds at most cacheSize addresses, the least recently used out first", async () => {
    const r = fake({});
    const rdns = new ReverseDns(r, { cacheSize: 2 });
    await rdns.lookup("192.0.2.1");
    await rdns.lookup("192.0.2.2");
    await rdns.lookup("192.0.2.1"); // hit: now the most recent
    await rdns.lookup("192.0.2.3"); // evicts 192.0.2.2
    assert.equal(rdns.size, 2);
    await rdns.lookup("192.0.2.1"); // hit
    await rdns.lookup("192.0.2.2"); // miss
    assert.deepEqual(r.calls, [
      "PTR 192.0.2.1",
      "PTR 192.0.2.2",
      "PTR 192.0.2.3",
      "PTR 192.0.2.2",
    ]);
    rdns.clear();
    assert.equal(rdns.size, 0);
  });

  it("caches nothing with cacheSize 0", async () => {
    const r = fake({});
    const rdns = new ReverseDns(r, { cacheSize: 0 });
    await rdns.lookup("192.0.2.1");
    await rdns.lookup("192.0.2.1");
    assert.equal(r.calls.length, 2);
    assert.equal(rdns.size, 0);
  });
});

describe("ReverseDns options", () => {
  const ok = fake({});
  const cases: [unknown, string][] = [
    [{ timeout: 0 }, "Cannot use option timeout: value is less than 1"],
    [{ timeout: NaN }, "Cannot use option timeout: value is not a number"],
    [{ timeout: "5s" }, "Cannot use option timeout: value is not a number"],
    [{ timeout: 1.5 }, "Cannot use option timeout: value is not an integer"],
    [{ cacheSize: -1 }, "Cannot use option cacheSize: value is less than 0"],
    [{ cacheTtl: -1 }, "Cannot use option cacheTtl: value is less than 0"],
    [
      { negativeCacheTtl: Infinity },
      "Cannot use option negativeCacheTtl: value is not an integer",
    ],
    [{ now: 5 }, "Cannot use option now: value is not a function"],
    [
      { timout: 5 },
      "Cannot use option timout: unknown option (did you mean timeout?)",
    ],
    [null, "Cannot use options: value is not an object"],
  ];
  for (const [options, message] of cases) {
    it(`rejects ${JSON.stringify(options)}`, () => {
      assert.throws(
        () => new ReverseDns(ok, options as Record<string, never>),
        { name: "TypeError", message },
      );
    });
  }

  it("rejects a resolver without the three queries", () => {
    for (const bad of [null, {}, { reverse() {}, resolve4() {} }]) {
      assert.throws(() => new ReverseDns(bad as unknown as DnsResolver), {
        name: "TypeError",
        message:
          "Cannot use resolver: value lacks reverse, resolve4 or resolve6",
      });
    }
  });
});

describe("dnsServersOption", () => {
  it("takes IPv4 and IPv6 addresses with or without a port", () => {
    assert.deepEqual(
      dnsServersOption([
        "127.0.0.1",
        "127.0.0.1:5353",
        "::1",
        "[::1]",
        "[0:0::1]:53",
        "2001:DB8::53",
      ]),
      ["127.0.0.1", "127.0.0.1:5353", "::1", "::1", "[::1]:53", "2001:db8::53"],
    );
  });

  const cases: [unknown, string][] = [
    [[], "value is not a non-empty array"],
    ["127.0.0.1", "value is not a non-empty array"],
    [[53], "53 is not a string"],
    [["localhost:53"], "localhost:53 is not an IP address"],
    [["127.0.0.1:0"], "127.0.0.1:0 has no port from 1 to 65535"],
    [["127.0.0.1:65536"], "127.0.0.1:65536 has no port from 1 to 65535"],
    [["127.0.0.1:"], "127.0.0.1: has no port from 1 to 65535"],
    [["[127.0.0.1]:53"], "[127.0.0.1]:53 is not an IPv6 address in brackets"],
    [["[::1]:x"], "[::1]:x has no port from 1 to 65535"],
  ];
  for (const [value, why] of cases) {
    it(`rejects ${JSON.stringify(value)}`, () => {
      assert.throws(() => dnsServersOption(value), {
        name: "TypeError",
        message: `Cannot use option dnsServers: ${why}`,
      });
    });
  }
});

describe("receivedFrom", () => {
  it("writes Postfix's from part", () => {
    assert.equal(
      receivedFrom("mx.example.org", "mx.example.org", "192.0.2.1"),
      "from mx.example.org (mx.example.org [192.0.2.1])",
    );
    assert.equal(
      receivedFrom("pc.lan", "unknown", "192.0.2.1"),
      "from pc.lan (unknown [192.0.2.1])",
    );
  });

  it("writes IPv6 as an address literal and IPv4-mapped as IPv4", () => {
    assert.equal(
      receivedFrom("[IPv6:2001:db8::1]", "unknown", "2001:db8::1"),
      "from [IPv6:2001:db8::1] (unknown [IPv6:2001:db8::1])",
    );
    assert.equal(
      receivedFrom("a.example", "a.example", "::ffff:192.0.2.1"),
      "from a.example (a.example [192.0.2.1])",
    );
  });

  it("writes the address alone without a lookup (name null), as the Maildir does", () => {
    assert.equal(
      receivedFrom("pc.lan", null, "192.0.2.1"),
      "from pc.lan ([192.0.2.1])",
    );
    assert.equal(
      receivedFrom(null, null, "unix"),
      "from unknown (unix socket)",
    );
    assert.equal(receivedFrom("a", null, ""), "from a (unknown)");
  });

  it("removes control characters", () => {
    assert.equal(
      receivedFrom("a\r\nX-Evil: 1", "b\n", "192.0.2.1\r"),
      "from aX-Evil: 1 (b [192.0.2.1])",
    );
  });

  it("puts the client's name for a missing HELO", () => {
    assert.equal(
      receivedFrom(null, "unknown", "192.0.2.1"),
      "from unknown (unknown [192.0.2.1])",
    );
    assert.equal(
      receivedFrom(null, "mx.example.org", "192.0.2.1"),
      "from mx.example.org (mx.example.org [192.0.2.1])",
    );
  });
});
