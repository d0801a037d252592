// Transcript tests of the PROXY protocol header parser (src/proxy.ts): every
// v1/v2 form, fed whole, as every prefix, byte by byte and split at every
// offset, plus headers captured from a real HAProxy 2.6.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  parseProxyHeader,
  PROXY_V1_MAX_LENGTH,
  PROXY_V2_DEFAULT_MAX_LENGTH,
  PROXY_V2_SIGNATURE,
  type ProxyHeader,
  type ProxyParseOptions,
  type ProxyParseResult,
} from "../src/proxy.ts";

const enc = new TextEncoder();
const ascii = (s: string): number[] => [...enc.encode(s)];
const hex = (s: string): Uint8Array =>
  new Uint8Array(s.match(/../g)!.map((h) => parseInt(h, 16)));
const SMTP = ascii("EHLO client.example\r\n");
const EMPTY = { other: [] };

/** Feeds chunks the way a driver does: accumulate, parse after each chunk, stop on a decision. */
function feed(
  chunks: Uint8Array[],
  options?: ProxyParseOptions,
): { result: ProxyParseResult; buffered: number } {
  let acc = new Uint8Array(0);
  let result: ProxyParseResult = { status: "incomplete" };
  for (const chunk of chunks) {
    const next = new Uint8Array(acc.length + chunk.length);
    next.set(acc);
    next.set(chunk, acc.length);
    acc = next;
    result = parseProxyHeader(acc, options);
    if (result.status !== "incomplete") break;
  }
  return { result, buffered: acc.length };
}

/** Checks a valid header: every shorter prefix is incomplete; whole, byte by byte and split at every offset give the same ok. */
function expectHeader(
  bytes: Uint8Array | number[],
  header: ProxyHeader,
  options?: ProxyParseOptions,
): void {
  const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const want = { status: "ok", length: b.length, header };
  for (let k = 0; k < b.length; k++) {
    assert.deepEqual(
      parseProxyHeader(b.subarray(0, k), options),
      { status: "incomplete" },
      `prefix of ${k} bytes`,
    );
  }
  assert.deepEqual(parseProxyHeader(b, options), want);
  // Followed by SMTP bytes: length points exactly at the first of them.
  const withSmtp = new Uint8Array([...b, ...SMTP]);
  const r = parseProxyHeader(withSmtp, options);
  assert.deepEqual(r, want);
  assert.equal(withSmtp[b.length], "E".charCodeAt(0));
  // Byte by byte, and split at every offset (the rest in one chunk).
  const bytewise = [...withSmtp].map((x) => new Uint8Array([x]));
  assert.deepEqual(feed(bytewise, options), {
    result: want,
    buffered: b.length,
  });
  for (let k = 0; k <= withSmtp.length; k++) {
    const got = feed([withSmtp.subarray(0, k), withSmtp.subarray(k)], options);
    assert.deepEqual(got.result, want, `split at ${k}`);
  }
}

/** Checks an invalid input: prefixes are incomplete until `at` bytes, then error on every longer prefix; never ok. */
function expectError(
  bytes: Uint8Array | number[],
  at: number,
  reason: RegExp,
  options?: ProxyParseOptions,
): void {
  const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  for (let k = 0; k <= b.length; k++) {
    const r = parseProxyHeader(b.subarray(0, k), options);
    if (k < at) {
      assert.deepEqual(r, { status: "incomplete" }, `prefix of ${k} bytes`);
    } else {
      assert.equal(r.status, "error", `prefix of ${k} bytes`);
      if (r.status === "error") assert.match(r.reason, reason);
    }
  }
  const bytewise = [...b].map((x) => new Uint8Array([x]));
  const got = feed(bytewise, options);
  assert.equal(got.result.status, "error");
  assert.equal(got.buffered, at);
}

function v1(line: string): number[] {
  return ascii(line);
}

function tcp(
  version: 1 | 2,
  family: "tcp4" | "tcp6",
  src: string,
  sport: number,
  dst: string,
  dport: number,
  tlvs: ProxyHeader["tlvs"] = { other: [] },
): ProxyHeader {
  return {
    version,
    command: "proxy",
    family,
    source: { address: src, port: sport },
    destination: { address: dst, port: dport },
    tlvs,
  };
}

function be16(n: number): number[] {
  return [n >> 8, n & 255];
}

/** A v2 header: signature, version/command byte, family/transport byte, block. */
function v2(verCmd: number, famTr: number, block: number[]): number[] {
  return [
    ...PROXY_V2_SIGNATURE,
    verCmd,
    famTr,
    ...be16(block.length),
    ...block,
  ];
}

function tlv(type: number, value: number[]): number[] {
  return [type, ...be16(value.length), ...value];
}

const INET = [192, 0, 2, 1, 198, 51, 100, 7, ...be16(56324), ...be16(25)];

/** Bitwise CRC32C, independent of the parser's table. */
function crc32c(bytes: number[]): number {
  let crc = 0xffffffff;
  for (const x of bytes) {
    crc ^= x;
    for (let k = 0; k < 8; k++) {
      crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
    }
  }
  return (crc ^ 0xffffffff) >>> 0;
}

/** A v2 AF_INET header whose last TLV is a CRC32C with the right value. */
function withCrc(tlvs: number[]): { bytes: number[]; crc: number } {
  const bytes = v2(0x21, 0x11, [...INET, ...tlvs, ...tlv(0x03, [0, 0, 0, 0])]);
  const crc = crc32c(bytes);
  bytes.splice(
    bytes.length - 4,
    4,
    crc >>> 24,
    (crc >>> 16) & 255,
    (crc >>> 8) & 255,
    crc & 255,
  );
  return { bytes, crc };
}

// Captured from HAProxy 2.6.12 (frontends on 127.0.0.1/::1 in front of a
// node TCP listener): `send-proxy`, `send-proxy-v2 proxy-v2-options
// crc32c,unique-id`, the same from [::1], a `check-send-proxy` health
// check, and `send-proxy-v2-ssl-cn proxy-v2-options
// ssl,cert-cn,ssl-cipher,cert-sig,cert-key,authority,crc32c,unique-id`
// behind `bind ... ssl alpn smtp verify optional` with an ECDSA client
// certificate. Each capture ends with the client's first SMTP line.
const HAPROXY_V1 = hex(
  "50524f58592054435034203132372e302e302e31203132372e302e302e31203433" +
    "3439302032343030310d0a45484c4f20610d0a",
);
const HAPROXY_V2 = hex(
  "0d0a0d0a000d0a515549540a211100167f0000017f000001cb6e5dc2030004f6" +
    "87b99b05000045484c4f20620d0a",
);
const HAPROXY_V2_TCP6 = hex(
  "0d0a0d0a000d0a515549540a2121002e00000000000000000000000000000001" +
    "0000000000000000000000000000000196c65dc40300047a14941305000045484c" +
    "4f20630d0a",
);
const HAPROXY_V2_LOCAL = hex("0d0a0d0a000d0a515549540a20000000");
const HAPROXY_V2_SSL = hex(
  "0d0a0d0a000d0a515549540a211100b07f0000017f00000196585dc3030004a0" +
    "c60547010004736d747002000f6d782e6578616d706c652e7465737405002937" +
    "463030303030313a393635385f37463030303030313a354443335f3642304638" +
    "3135455f303030302000550700000000210007544c5376312e33220013636c69" +
    "656e742e6578616d706c652e746573742500075253413230343824000a525341" +
    "2d534841323536230016544c535f4145535f3235365f47434d5f534841333834" +
    "45484c4f20640d0a",
);

describe("parseProxyHeader: headers captured from HAProxy", () => {
  it("parses HAProxy's send-proxy (v1) and points at the SMTP bytes", () => {
    const r = parseProxyHeader(HAPROXY_V1);
    assert.deepEqual(r, {
      status: "ok",
      length: 44,
      header: tcp(1, "tcp4", "127.0.0.1", 43490, "127.0.0.1", 24001),
    });
    expectHeader(
      HAPROXY_V1.subarray(0, 44),
      (r as { header: ProxyHeader }).header,
    );
  });

  it("parses HAProxy's send-proxy-v2 with crc32c and an empty unique-id", () => {
    const header = tcp(2, "tcp4", "127.0.0.1", 52078, "127.0.0.1", 24002, {
      crc32c: 0xf687b99b,
      uniqueId: new Uint8Array(0),
      other: [],
    });
    assert.deepEqual(parseProxyHeader(HAPROXY_V2), {
      status: "ok",
      length: 38,
      header,
    });
    expectHeader(HAPROXY_V2.subarray(0, 38), header);
  });

  it("parses HAProxy's send-proxy-v2 from an IPv6 client", () => {
    const header = tcp(2, "tcp6", "::1", 38598, "::1", 24004, {
      crc32c: 0x7a149413,
      uniqueId: new Uint8Array(0),
      other: [],
    });
    assert.deepEqual(parseProxyHeader(HAPROXY_V2_TCP6), {
      status: "ok",
      length: 62,
      header,
    });
    expectHeader(HAPROXY_V2_TCP6.subarray(0, 62), header);
  });

  it("parses HAProxy's health check as a LOCAL command", () => {
    expectHeader(HAPROXY_V2_LOCAL, {
      version: 2,
      command: "local",
      tlvs: EMPTY,
    });
  });

  it("parses HAProxy's send-proxy-v2-ssl with every SSL TLV", () => {
    const header = tcp(2, "tcp4", "127.0.0.1", 38488, "127.0.0.1", 24003, {
      crc32c: 0xa0c60547,
      alpn: "smtp",
      authority: "mx.example.test",
      uniqueId: enc.encode("7F000001:9658_7F000001:5DC3_6B0F815E_0000"),
      ssl: {
        client: 7,
        clientSsl: true,
        clientCertConn: true,
        clientCertSess: true,
        verify: 0,
        version: "TLSv1.3",
        cn: "client.example.test",
        keyAlg: "RSA2048",
        sigAlg: "RSA-SHA256",
        cipher: "TLS_AES_256_GCM_SHA384",
      },
      other: [],
    });
    assert.deepEqual(parseProxyHeader(HAPROXY_V2_SSL), {
      status: "ok",
      length: 192,
      header,
    });
    expectHeader(HAPROXY_V2_SSL.subarray(0, 192), header);
  });

  it("rejects HAProxy's SSL header with one bit flipped (CRC32C)", () => {
    const b = HAPROXY_V2_SSL.slice(0, 192);
    b[150] ^= 1;
    expectError(b, 192, /CRC32C/);
  });
});

describe("parseProxyHeader: v1", () => {
  it("parses TCP4", () => {
    expectHeader(
      v1("PROXY TCP4 192.0.2.1 198.51.100.7 56324 25\r\n"),
      tcp(1, "tcp4", "192.0.2.1", 56324, "198.51.100.7", 25),
    );
  });

  it("parses TCP6 and formats the addresses per RFC 5952", () => {
    expectHeader(
      v1("PROXY TCP6 2001:DB8:0:0:0:0:0:1 2001:db8:0000::0001:0 1 65535\r\n"),
      tcp(1, "tcp6", "2001:db8::1", 1, "2001:db8::1:0", 65535),
    );
  });

  it("keeps an IPv4-mapped TCP6 address in mixed notation", () => {
    expectHeader(
      v1("PROXY TCP6 ::ffff:10.1.2.3 ::FFFF:a01:204 0 587\r\n"),
      tcp(1, "tcp6", "::ffff:10.1.2.3", 0, "::ffff:10.1.2.4", 587),
    );
  });

  it("parses the longest TCP6 line (104 bytes)", () => {
    const a = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    const line = `PROXY TCP6 ${a} ${a} 65535 65535\r\n`;
    assert.equal(line.length, 104);
    expectHeader(v1(line), tcp(1, "tcp6", a, 65535, a, 65535));
  });

  it("parses UNKNOWN alone and with anything before the CRLF", () => {
    const unknown: ProxyHeader = {
      version: 1,
      command: "proxy",
      family: "unknown",
      tlvs: EMPTY,
    };
    expectHeader(v1("PROXY UNKNOWN\r\n"), unknown);
    expectHeader(v1("PROXY UNKNOWN ffff:f...f:ffff 1.2.3.4 x\r\n"), unknown);
  });

  it("accepts a 107-byte line and refuses 108 without reading on", () => {
    const max = "PROXY UNKNOWN " + "x".repeat(107 - 16) + "\r\n";
    assert.equal(max.length, PROXY_V1_MAX_LENGTH);
    expectHeader(v1(max), {
      version: 1,
      command: "proxy",
      family: "unknown",
      tlvs: EMPTY,
    });
    // CR is the 107th byte: its LF would be the 108th.
    const crLate = "PROXY UNKNOWN " + "x".repeat(92) + "\r\n";
    expectError(v1(crLate), 107, /no CRLF within 107/);
    // 108 bytes with no CRLF at all: an error once 107 are in.
    expectError(
      v1("PROXY UNKNOWN " + "x".repeat(94)),
      107,
      /no CRLF within 107/,
    );
    // A megabyte of junk after "PROXY UNKNOWN " is decided at byte 107.
    const big = new Uint8Array(1 << 20).fill(0x78);
    big.set(enc.encode("PROXY UNKNOWN "));
    const r = parseProxyHeader(big);
    assert.equal(r.status, "error");
  });

  it("refuses a first byte that is neither P nor CR at once", () => {
    expectError(v1("EHLO client.example\r\n"), 1, /first byte/);
    expectError([0x16, 0x03, 0x01], 1, /first byte/); // a TLS ClientHello
  });

  it("refuses a bad prefix at the first wrong byte", () => {
    expectError(v1("PROXZ TCP4"), 5, /must start with 'PROXY '/);
    expectError(v1("PROXYTCP4"), 6, /must start with 'PROXY '/);
    expectError(v1("proxy TCP4"), 1, /first byte/);
  });

  const bad: [string, number, RegExp][] = [
    ["PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", 10, /unknown protocol/],
    ["PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", 7, /unknown protocol/],
    ["PROXY UNKNOWNX\r\n", 14, /unknown protocol/],
    ["PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", 12, /empty field/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n", 30, /empty field/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", 31, /more than four fields/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", 29, /fewer than four/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", 31, /more than four fields/],
    ["PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n", 20, /not IPv4/],
    ["PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", 21, /not IPv4/],
    ["PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", 17, /not IPv4/],
    ["PROXY TCP4 ::1 5.6.7.8 1 2\r\n", 12, /not IPv4/],
    ["PROXY TCP6 1.2.3.4 ::1 1 2\r\n", 19, /not IPv6/],
    ["PROXY TCP6 ::1 fe80::1%eth0 1 2\r\n", 23, /not IPv6/],
    ["PROXY TCP6 ::1 1:2:3:4:5:6:7:8:9 1 2\r\n", 33, /not IPv6/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", 29, /port/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", 32, /port/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 123456 2\r\n", 33, /port/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", 28, /port/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", 31, /LF without CR/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", 32, /CR without LF/],
    ["PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n", 11, /unknown protocol/],
    ["PROXY \r\n", 7, /unknown protocol/],
  ];
  for (const [line, at, reason] of bad) {
    it(`refuses ${JSON.stringify(line)} after ${at} bytes`, () => {
      expectError(v1(line), at, reason);
    });
  }
});

describe("parseProxyHeader: v2", () => {
  it("parses AF_INET STREAM", () => {
    expectHeader(
      v2(0x21, 0x11, INET),
      tcp(2, "tcp4", "192.0.2.1", 56324, "198.51.100.7", 25),
    );
  });

  it("parses AF_INET6 STREAM and formats per RFC 5952", () => {
    const cases: [number[], string][] = [
      [
        [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        "2001:db8::1",
      ],
      [
        [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1],
        "2001:db8:0:1:1:1:1:1",
      ],
      [[0x20, 0x01, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1], "2001:0:0:1::1"],
      [
        [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
        "2001:db8::1:0:0:1",
      ],
      [new Array(16).fill(0), "::"],
      [[...new Array(15).fill(0), 1], "::1"],
      [[0xfe, 0x80, ...new Array(14).fill(0)], "fe80::"],
      [
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3],
        "::ffff:10.1.2.3",
      ],
      [[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 1, 2, 3], "::a01:203"],
      [new Array(16).fill(0xab), "abab:abab:abab:abab:abab:abab:abab:abab"],
    ];
    for (const [src, text] of cases) {
      const block = [
        ...src,
        ...[...new Array(15).fill(0), 1],
        ...be16(1),
        ...be16(2),
      ];
      assert.deepEqual(
        parseProxyHeader(new Uint8Array(v2(0x21, 0x21, block))),
        { status: "ok", length: 52, header: tcp(2, "tcp6", text, 1, "::1", 2) },
      );
    }
    const block = [
      ...new Array(15).fill(0),
      1,
      0x20,
      0x01,
      0x0d,
      0xb8,
      ...new Array(11).fill(0),
      2,
      ...be16(0),
      ...be16(65535),
    ];
    expectHeader(
      v2(0x21, 0x21, block),
      tcp(2, "tcp6", "::1", 0, "2001:db8::2", 65535),
    );
  });

  it("parses AF_UNIX STREAM with NUL-terminated paths", () => {
    const path = (s: string): number[] => {
      const out = new Array(108).fill(0);
      out.splice(0, s.length, ...ascii(s));
      return out.slice(0, 108);
    };
    expectHeader(
      v2(0x21, 0x31, [
        ...path("/run/client.sock"),
        ...path("/run/haproxy/smtp.sock"),
      ]),
      {
        version: 2,
        command: "proxy",
        family: "unix",
        source: { address: "/run/client.sock", port: 0 },
        destination: { address: "/run/haproxy/smtp.sock", port: 0 },
        tlvs: EMPTY,
      },
    );
  });

  it("parses AF_UNSPEC with PROXY as an unknown family, TLVs kept", () => {
    expectHeader(v2(0x21, 0x00, tlv(0x02, ascii("mx.example"))), {
      version: 2,
      command: "proxy",
      family: "unknown",
      tlvs: { authority: "mx.example", other: [] },
    });
  });

  it("parses LOCAL and skips whatever its block holds", () => {
    const local: ProxyHeader = { version: 2, command: "local", tlvs: EMPTY };
    expectHeader(v2(0x20, 0x00, []), local);
    expectHeader(v2(0x20, 0x11, INET), local);
    expectHeader(v2(0x20, 0x12, [1, 2, 3]), local); // DGRAM, short block: ignored
    expectHeader(v2(0x20, 0xff, tlv(0x01, [1, 2, 3, 4, 5])), local);
  });

  it("parses ALPN, AUTHORITY, UNIQUE_ID, NETNS, NOOP, SSL and keeps unknown TLVs raw", () => {
    const ssl = [
      0x05,
      0,
      0,
      0,
      0x13,
      ...tlv(0x21, ascii("TLSv1.2")),
      ...tlv(0x22, ascii("Client CN")),
      ...tlv(0x23, ascii("ECDHE-RSA-AES128-GCM-SHA256")),
      ...tlv(0x24, ascii("SHA256")),
      ...tlv(0x25, ascii("EC256")),
      ...tlv(0x26, [9, 9]), // unknown sub-TLV: ignored
    ];
    const block = [
      ...INET,
      ...tlv(0x01, ascii("h2")),
      ...tlv(0x02, ascii("mx.example.org")),
      ...tlv(0x04, [0, 0, 0]),
      ...tlv(0x05, new Array(128).fill(7)),
      ...tlv(0x20, ssl),
      ...tlv(0x30, ascii("blue")),
      ...tlv(0xea, [1, 0x76, 0x70, 0x63]),
      ...tlv(0x01, ascii("second ALPN is ignored")),
      ...tlv(0xe0, []),
    ];
    expectHeader(
      v2(0x21, 0x11, block),
      tcp(2, "tcp4", "192.0.2.1", 56324, "198.51.100.7", 25, {
        alpn: "h2",
        authority: "mx.example.org",
        uniqueId: new Uint8Array(128).fill(7),
        ssl: {
          client: 5,
          clientSsl: true,
          clientCertConn: false,
          clientCertSess: true,
          verify: 0x13,
          version: "TLSv1.2",
          cn: "Client CN",
          cipher: "ECDHE-RSA-AES128-GCM-SHA256",
          sigAlg: "SHA256",
          keyAlg: "EC256",
        },
        netns: "blue",
        other: [
          { type: 0xea, value: new Uint8Array([1, 0x76, 0x70, 0x63]) },
          { type: 0xe0, value: new Uint8Array(0) },
        ],
      }),
    );
  });

  it("copies TLV values out of the caller's buffer", () => {
    const b = new Uint8Array(
      v2(0x21, 0x11, [...INET, ...tlv(0x05, [1, 2]), ...tlv(0xee, [3])]),
    );
    const r = parseProxyHeader(b);
    b.fill(0);
    assert.ok(r.status === "ok" && r.header.command === "proxy");
    assert.deepEqual(r.header.tlvs.uniqueId, new Uint8Array([1, 2]));
    assert.deepEqual(r.header.tlvs.other[0].value, new Uint8Array([3]));
  });

  it("verifies a CRC32C TLV anywhere among the TLVs", () => {
    const { bytes, crc } = withCrc(tlv(0x01, ascii("smtp")));
    expectHeader(
      bytes,
      tcp(2, "tcp4", "192.0.2.1", 56324, "198.51.100.7", 25, {
        alpn: "smtp",
        crc32c: crc,
        other: [],
      }),
    );
    for (let i = 0; i < bytes.length; i++) {
      if (i >= 14 && i < 16) continue; // the length field: a different error
      if (i === bytes.length - 7) continue; // the CRC TLV's type: no CRC left
      const broken = bytes.slice();
      broken[i] ^= 0x40;
      const r = parseProxyHeader(new Uint8Array(broken));
      assert.equal(r.status, "error", `bit flipped in byte ${i}`);
    }
    const wrongLength = v2(0x21, 0x11, [...INET, ...tlv(0x03, [0, 0, 0])]);
    expectError(wrongLength, wrongLength.length, /CRC32C TLV is 3 bytes/);
  });

  it("refuses a bad signature at the first wrong byte", () => {
    for (let i = 1; i < 12; i++) {
      const b = v2(0x21, 0x11, INET);
      b[i] ^= 0x20;
      expectError(b, i + 1, /bad v2 signature/);
    }
  });

  const bad: [string, number[], number, RegExp][] = [
    [
      "version 1 in the v2 format",
      v2(0x11, 0x11, INET),
      13,
      /version 1, not 2/,
    ],
    ["version 3", v2(0x31, 0x11, INET), 13, /version 3, not 2/],
    ["command 2", v2(0x22, 0x11, INET), 13, /unknown command/],
    ["DGRAM over AF_INET", v2(0x21, 0x12, INET), 14, /DGRAM/],
    ["DGRAM over AF_UNSPEC", v2(0x21, 0x02, []), 14, /DGRAM/],
    ["family 4", v2(0x21, 0x41, INET), 14, /unknown address family/],
    ["transport 3", v2(0x21, 0x13, INET), 14, /unknown transport/],
    [
      "AF_INET with UNSPEC transport",
      v2(0x21, 0x10, INET),
      14,
      /unspecified transport/,
    ],
    [
      "AF_INET block of 8 bytes",
      v2(0x21, 0x11, INET.slice(0, 8)),
      16,
      /8 bytes, too short for AF_INET \(12\)/,
    ],
    [
      "AF_INET6 block of 12 bytes",
      v2(0x21, 0x21, INET),
      16,
      /too short for AF_INET6 \(36\)/,
    ],
    [
      "AF_UNIX block of 100 bytes",
      v2(0x21, 0x31, new Array(100).fill(0)),
      16,
      /too short for AF_UNIX \(216\)/,
    ],
    [
      "a TLV that overruns the header",
      v2(0x21, 0x11, [...INET, 0x01, 0x00, 0x05, 1, 2, 3, 4]),
      35,
      /PP2_TYPE_ALPN overruns/,
    ],
    [
      "a TLV length past a 2-byte tail",
      v2(0x21, 0x11, [...INET, 0xe1, 0xff, 0xff]),
      31,
      /0xe1 overruns/,
    ],
    [
      "2 stray bytes after the TLVs",
      v2(0x21, 0x11, [...INET, ...tlv(4, []), 0x01, 0x00]),
      33,
      /2 stray bytes/,
    ],
    [
      "an SSL TLV of 4 bytes",
      v2(0x21, 0x11, [...INET, ...tlv(0x20, [1, 0, 0, 0])]),
      35,
      /fewer than 5/,
    ],
    [
      "an SSL sub-TLV that overruns",
      v2(0x21, 0x11, [
        ...INET,
        ...tlv(0x20, [1, 0, 0, 0, 0, 0x22, 0, 9, 0x41]),
      ]),
      40,
      /sub-TLV 0x22 overruns/,
    ],
    [
      "an SSL TLV with stray bytes",
      v2(0x21, 0x11, [...INET, ...tlv(0x20, [1, 0, 0, 0, 0, 0x22])]),
      37,
      /stray bytes/,
    ],
    [
      "a 129-byte UNIQUE_ID",
      v2(0x21, 0x11, [...INET, ...tlv(0x05, new Array(129).fill(1))]),
      160,
      /more than 128/,
    ],
  ];
  for (const [name, bytes, at, reason] of bad) {
    it(`refuses ${name}`, () => expectError(bytes, at, reason));
  }

  it("caps the header at 4096 bytes by default, decided by the length field", () => {
    assert.equal(PROXY_V2_DEFAULT_MAX_LENGTH, 4096);
    const ok = v2(0x21, 0x11, [
      ...INET,
      ...tlv(0xe0, new Array(4096 - 16 - 12 - 3).fill(0)),
    ]);
    assert.equal(ok.length, 4096);
    assert.equal(parseProxyHeader(new Uint8Array(ok)).status, "ok");
    assert.equal(
      parseProxyHeader(new Uint8Array(ok.slice(0, 4095))).status,
      "incomplete",
    );
    const over = [...PROXY_V2_SIGNATURE, 0x21, 0x11, ...be16(4081)];
    expectError(over, 16, /4097 bytes, more than the limit of 4096/);
    const huge = [...PROXY_V2_SIGNATURE, 0x20, 0x00, 0xff, 0xff];
    expectError(huge, 16, /65551 bytes, more than the limit of 4096/);
  });

  it("takes maxV2Length as an option and validates it", () => {
    const b = v2(0x21, 0x11, [...INET, ...tlv(0xe0, new Array(300).fill(0))]);
    assert.equal(
      parseProxyHeader(new Uint8Array(b), { maxV2Length: 331 }).status,
      "ok",
    );
    expectError(b, 16, /331 bytes, more than the limit of 330/, {
      maxV2Length: 330,
    });
    const big = v2(0x21, 0x11, [
      ...INET,
      ...tlv(0xe0, new Array(65535 - 15).fill(0)),
    ]);
    assert.equal(
      parseProxyHeader(new Uint8Array(big), { maxV2Length: 65551 }).status,
      "ok",
    );
    for (const value of [0, 231, 65552, 1.5, NaN, Infinity, -1, "4096"]) {
      assert.throws(
        () =>
          parseProxyHeader(new Uint8Array(b), { maxV2Length: value as number }),
        (e: unknown) =>
          e instanceof TypeError &&
          e.message.startsWith("Cannot use option maxV2Length: value is"),
      );
    }
  });
});

describe("parseProxyHeader: robustness", () => {
  it("never throws, never reads past its bound, and an ok is stable under more bytes", () => {
    let seed = 0x2545f491;
    const rand = (n: number): number => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    const seeds = [
      HAPROXY_V1.subarray(0, 44),
      HAPROXY_V2_SSL.subarray(0, 192),
      HAPROXY_V2_TCP6.subarray(0, 62),
      new Uint8Array(v1("PROXY TCP6 2001:db8::1 ::ffff:1.2.3.4 1 2\r\n")),
    ];
    for (let round = 0; round < 3000; round++) {
      const b = seeds[round % seeds.length].slice();
      const flips = 1 + rand(3);
      for (let f = 0; f < flips; f++) b[rand(b.length)] = rand(256);
      const r = parseProxyHeader(b);
      if (r.status === "ok") {
        assert.ok(r.length <= b.length);
        const tail = new Uint8Array([...b.subarray(0, r.length), ...SMTP]);
        assert.deepEqual(parseProxyHeader(tail), r);
        for (let k = 0; k < r.length; k++) {
          assert.equal(parseProxyHeader(b.subarray(0, k)).status, "incomplete");
        }
      }
    }
  });
});
