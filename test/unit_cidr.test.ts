// Unit tests of the IP address helpers and the trusted-address matcher.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CidrSet, formatIp, LOOPBACK, parseIp } from "../src/cidr.ts";

describe("parseIp and formatIp", () => {
  it("parses dotted quads strictly", () => {
    assert.deepEqual(parseIp("192.0.2.1"), new Uint8Array([192, 0, 2, 1]));
    assert.deepEqual(parseIp("0.0.0.0"), new Uint8Array(4));
    assert.deepEqual(parseIp("255.255.255.255"), new Uint8Array(4).fill(255));
    for (
      const bad of [
        "",
        "1.2.3",
        "1.2.3.4.5",
        "1.2.3.256",
        "01.2.3.4",
        "1.2.3.04",
        "1..3.4",
        "1.2.3.4.",
        ".1.2.3.4",
        " 1.2.3.4",
        "1.2.3.4 ",
        "1.2.3.x",
        "0x1.2.3.4",
        "1.2.3.-4",
        "1234.2.3.4",
        "1.2.3.4/32",
      ]
    ) {
      assert.equal(parseIp(bad), null, bad);
    }
  });

  it("parses every valid IPv6 text form to the same bytes", () => {
    const one = new Uint8Array(16);
    one[15] = 1;
    for (
      const form of [
        "::1",
        "0:0:0:0:0:0:0:1",
        "0000:0000::0001",
        "::0:0:1",
        "0::1",
      ]
    ) {
      assert.deepEqual(parseIp(form), one, form);
    }
    assert.deepEqual(parseIp("::"), new Uint8Array(16));
    assert.deepEqual(
      parseIp("2001:DB8::a:B"),
      new Uint8Array([
        0x20,
        1,
        0x0d,
        0xb8,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0x0a,
        0,
        0x0b,
      ]),
    );
    assert.deepEqual(
      parseIp("::ffff:10.1.2.3"),
      new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 10, 1, 2, 3]),
    );
    assert.deepEqual(parseIp("1:2:3:4:5:6:1.2.3.4")?.[15], 4);
    assert.deepEqual(parseIp("1:2:3:4:5:6:7::")?.[13], 7);
    assert.deepEqual(parseIp("::2:3:4:5:6:7:8")?.[1], 0);
  });

  it("refuses invalid IPv6 text", () => {
    for (
      const bad of [
        ":",
        ":::",
        "1:",
        ":1",
        "1::2::3",
        "1:2:3:4:5:6:7:8:9",
        "1:2:3:4:5:6:7",
        "::1:2:3:4:5:6:7:8",
        "12345::",
        "g::1",
        "fe80::1%eth0",
        "::ffff:1.2.3",
        "::ffff:1.2.3.04",
        "1:2:3:4:5:6:7:1.2.3.4",
        "::1.2.3.4:5",
        "[::1]",
        "::1/128",
        "1:2:3:4:5:6:7:8::",
      ]
    ) {
      assert.equal(parseIp(bad), null, bad);
    }
  });

  it("formats IPv6 per RFC 5952 and round-trips", () => {
    const cases: [string, string][] = [
      ["2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8::1"],
      ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
      ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"],
      ["2001:0:0:1:0:0:0:1", "2001:0:0:1::1"],
      ["0:0:0:0:0:0:0:0", "::"],
      ["fe80:0:0:0:0:0:0:0", "fe80::"],
      ["::FFFF:0A01:0203", "::ffff:10.1.2.3"],
      ["::10.1.2.3", "::a01:203"],
    ];
    for (const [input, want] of cases) {
      const bytes = parseIp(input)!;
      assert.equal(formatIp(bytes), want, input);
      assert.deepEqual(parseIp(want), bytes, want);
    }
    assert.equal(formatIp(new Uint8Array([10, 0, 0, 1])), "10.0.0.1");
    assert.throws(() => formatIp(new Uint8Array(5)), TypeError);
  });
});

describe("CidrSet", () => {
  const set = new CidrSet(["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8"]);

  it("matches hosts and ranges of both families", () => {
    for (
      const ip of [
        "127.0.0.1",
        "10.0.0.0",
        "10.255.255.255",
        "10.1.2.3",
        "::1",
        "0:0:0:0:0:0:0:1",
        "fd00::",
        "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "FD12:3456::1",
      ]
    ) {
      assert.equal(set.has(ip), true, ip);
    }
    for (
      const ip of [
        "127.0.0.2",
        "11.0.0.0",
        "9.255.255.255",
        "::2",
        "fc00::1",
        "fe00::",
        "::",
        "0.0.0.0",
      ]
    ) {
      assert.equal(set.has(ip), false, ip);
    }
  });

  it("matches IPv4-mapped IPv6 against IPv4 entries", () => {
    assert.equal(set.has("::ffff:10.1.2.3"), true);
    assert.equal(set.has("::FFFF:a01:203"), true);
    assert.equal(set.has("::ffff:127.0.0.1"), true);
    assert.equal(set.has("::ffff:11.1.2.3"), false);
    assert.equal(set.has("::10.1.2.3"), false); // IPv4-compatible is not mapped
  });

  it("stores IPv4-mapped entries as IPv4 ranges", () => {
    const mapped = new CidrSet(["::ffff:192.0.2.0/120"]);
    assert.equal(mapped.has("192.0.2.200"), true);
    assert.equal(mapped.has("::ffff:192.0.2.1"), true);
    assert.equal(mapped.has("192.0.3.1"), false);
  });

  it("answers false for anything that is not an address", () => {
    for (
      const ip of [
        "",
        "localhost",
        "10.1.2",
        "010.1.2.3",
        "fe80::1%eth0",
        "10.1.2.3/8",
        " ::1",
      ]
    ) {
      assert.equal(set.has(ip), false, ip);
    }
    assert.equal(set.has(undefined as unknown as string), false);
  });

  it("handles /0, /32, /128 and prefixes that split a word", () => {
    const all = new CidrSet(["0.0.0.0/0", "::/0"]);
    assert.equal(all.has("203.0.113.9"), true);
    assert.equal(all.has("2001:db8::9"), true);
    const odd = new CidrSet([
      "192.168.128.0/17",
      "2001:db8:8000::/33",
      "2001:db8::1:0:0:0/81",
    ]);
    assert.equal(odd.has("192.168.200.1"), true);
    assert.equal(odd.has("192.168.127.255"), false);
    assert.equal(odd.has("2001:db8:ffff::1"), true);
    assert.equal(odd.has("2001:db8:7fff::1"), false);
    assert.equal(odd.has("2001:db8::1:7fff:0:0"), true);
    assert.equal(odd.has("2001:db8::1:8000:0:0"), false);
    const hosts = new CidrSet(["198.51.100.7/32", "2001:db8::7/128"]);
    assert.equal(hosts.has("198.51.100.7"), true);
    assert.equal(hosts.has("198.51.100.8"), false);
    assert.equal(hosts.has("2001:db8:0::7"), true);
    assert.equal(hosts.has("2001:db8::8"), false);
  });

  it("is empty for an empty list and keeps its entries", () => {
    assert.equal(new CidrSet([]).has("127.0.0.1"), false);
    assert.deepEqual(set.entries, [
      "127.0.0.1",
      "10.0.0.0/8",
      "::1",
      "fd00::/8",
    ]);
    const loop = new CidrSet(LOOPBACK);
    assert.equal(loop.has("127.3.2.1"), true);
    assert.equal(loop.has("::1"), true);
    assert.equal(loop.has("::ffff:127.0.0.1"), true);
    assert.equal(loop.has("192.0.2.1"), false);
  });

  it("throws a TypeError naming each bad entry", () => {
    const bad: [string, RegExp][] = [
      ["10.0.0.0/33", /prefix length is more than 32/],
      ["::/129", /prefix length is more than 128/],
      ["10.0.0.0/", /not a decimal number/],
      ["10.0.0.0/08", /not a decimal number/],
      ["10.0.0.0/+8", /not a decimal number/],
      ["10.0.0.0/8/8", /not a decimal number/],
      ["10.1.2.3/8", /bits set past the prefix/],
      ["fd00::1/8", /bits set past the prefix/],
      ["::ffff:10.1.2.3/104", /bits set past the prefix/],
      ["1.2.3", /not an IPv4 or IPv6 address/],
      ["", /not an IPv4 or IPv6 address/],
      ["fe80::1%eth0", /not an IPv4 or IPv6 address/],
      ["localhost", /not an IPv4 or IPv6 address/],
      [" 10.0.0.0/8", /not an IPv4 or IPv6 address/],
    ];
    for (const [entry, why] of bad) {
      assert.throws(
        () => new CidrSet(["127.0.0.1", entry]),
        (e: unknown) =>
          e instanceof TypeError &&
          e.message.startsWith(`Cannot parse trusted address "${entry}": `) &&
          why.test(e.message),
        entry,
      );
    }
    assert.throws(
      () => new CidrSet([42 as unknown as string]),
      /Cannot parse trusted address: value is number, not a string/,
    );
  });
});
