// The milter codec (src/milter/protocol.ts), the header modifications
// (src/milter/headers.ts) and the client's option parsing: pure functions,
// no socket. The decoder is fed every packet whole, byte by byte and split
// at every offset.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  ALL_ACTIONS,
  encodeBody,
  encodeConnect,
  encodeMacro,
  encodeOptneg,
  encodePacket,
  encodeStrings,
  MILTER_CHUNK_SIZE,
  MilterDecoder,
  type MilterPacket,
  MilterProtocolError,
  OFFERED_PROTOCOL,
  parseCommand,
  parseResponse,
  SMFIC,
  SMFIP,
} from "../src/milter/protocol.ts";
import { applyHeaderModifications } from "../src/milter/headers.ts";
import { fieldsOf } from "../src/milter/held_message.ts";
import {
  MilterClient,
  parseMilterAddress,
  resolveMilterOptions,
} from "../src/milter/client.ts";
import { feedings } from "./helpers/transcript.ts";

const te = new TextEncoder();
const td = new TextDecoder();

function u32(...v: number[]): Uint8Array {
  const out = new Uint8Array(4 * v.length);
  v.forEach((x, i) => new DataView(out.buffer).setUint32(4 * i, x));
  return out;
}

function cat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Decodes `segments` every way they can be fed; asserts all ways agree. */
function decodeAll(...segments: Uint8Array[]): MilterPacket[] {
  let first: MilterPacket[] | undefined;
  for (const feeding of feedings(...segments)) {
    const d = new MilterDecoder();
    const got = feeding.flatMap((c) => d.push(c));
    assert.equal(d.buffered, 0);
    const plain = got.map((p) => ({ code: p.code, payload: [...p.payload] }));
    if (first === undefined) first = got;
    else {
      assert.deepEqual(
        plain,
        first.map((p) => ({ code: p.code, payload: [...p.payload] })),
      );
    }
  }
  return first!;
}

describe("milter packets", () => {
  it("frames a packet as length, code, payload", () => {
    assert.deepEqual(
      [...encodePacket("c")],
      [0, 0, 0, 1, 0x63],
    );
    assert.deepEqual(
      [...encodeStrings(SMFIC.HELO, ["ab"])],
      [0, 0, 0, 4, 0x48, 0x61, 0x62, 0],
    );
  });

  it("encodes option negotiation with version 6, the actions and the protocol steps", () => {
    const b = encodeOptneg(6, ALL_ACTIONS, OFFERED_PROTOCOL);
    assert.deepEqual(
      [...b],
      [...u32(13), 0x4f, ...u32(6, 0x1ff, OFFERED_PROTOCOL)],
    );
    assert.equal(OFFERED_PROTOCOL & SMFIP.RCPT_REJ, 0);
    assert.equal(OFFERED_PROTOCOL & SMFIP.HDR_LEADSPC, 0);
    assert.notEqual(OFFERED_PROTOCOL & SMFIP.NR_BODY, 0);
    assert.notEqual(OFFERED_PROTOCOL & SMFIP.SKIP, 0);
  });

  it("encodes connect for IPv4, IPv6, Unix and unknown families", () => {
    const [v4] = decodeAll(
      encodeConnect("mx.example", "4", 25000, "192.0.2.1"),
    );
    assert.deepEqual(parseCommand(v4), {
      type: "connect",
      hostname: "mx.example",
      family: "4",
      port: 25000,
      address: "192.0.2.1",
    });
    const [v6] = decodeAll(encodeConnect("[::1]", "6", 1, "::1"));
    assert.deepEqual(parseCommand(v6), {
      type: "connect",
      hostname: "[::1]",
      family: "6",
      port: 1,
      address: "::1",
    });
    const [l] = decodeAll(encodeConnect("localhost", "L", 0, "/run/s"));
    assert.equal((parseCommand(l) as { address: string }).address, "/run/s");
    const u = encodeConnect("x", "U", 99, "ignored");
    assert.deepEqual([...u.subarray(5)], [0x78, 0, 0x55]);
    assert.deepEqual(parseCommand(decodeAll(u)[0]), {
      type: "connect",
      hostname: "x",
      family: "U",
      port: 0,
      address: "",
    });
  });

  it("encodes a header value given as bytes byte for byte", () => {
    const value = new Uint8Array([0x63, 0x61, 0x66, 0xe9]); // "café" in Latin-1
    const b = encodeStrings(SMFIC.HEADER, ["Subject", value]);
    assert.deepEqual([...b.subarray(5)], [
      ...te.encode("Subject\0"),
      0x63,
      0x61,
      0x66,
      0xe9,
      0,
    ]);
  });

  it("encodes macros after the stage byte as name/value pairs", () => {
    const b = encodeMacro(SMFIC.CONNECT, { j: "mx", "{daemon_name}": "smtpd" });
    assert.equal(td.decode(b.subarray(5)), "Cj\0mx\0{daemon_name}\0smtpd\0");
    assert.deepEqual(parseCommand(decodeAll(b)[0]), {
      type: "macro",
      stage: "C",
      macros: { j: "mx", "{daemon_name}": "smtpd" },
    });
  });

  it("splits a body into chunks of at most 65,535 bytes and sends none for an empty one", () => {
    const body = new Uint8Array(2 * MILTER_CHUNK_SIZE + 10).map((_, i) => i);
    const packets = encodeBody(body);
    assert.deepEqual(packets.map((p) => p.length - 5), [
      MILTER_CHUNK_SIZE,
      MILTER_CHUNK_SIZE,
      10,
    ]);
    const d = new MilterDecoder();
    const back = packets.flatMap((p) => d.push(p)).map((p) => p.payload);
    assert.deepEqual(cat(...back), body);
    assert.deepEqual(encodeBody(new Uint8Array(0)), []);
  });

  it("decodes several packets whole, byte by byte and split at every offset", () => {
    const got = decodeAll(
      cat(
        encodePacket("O", u32(6, 0x1ff, 0x80)),
        encodePacket("c"),
        encodeStrings("h", ["X-Spam", "yes"]),
      ),
      encodeStrings("y", ["550 5.7.1 Go away"]),
    );
    assert.deepEqual(got.map(parseResponse), [
      {
        type: "optneg",
        negotiation: { version: 6, actions: 0x1ff, protocol: 0x80, macros: {} },
      },
      { type: "continue" },
      { type: "add-header", name: "X-Spam", value: "yes" },
      { type: "replycode", reply: "550 5.7.1 Go away" },
    ]);
  });

  it("parses every response a filter sends", () => {
    const cases: [Uint8Array, unknown][] = [
      [encodePacket("a"), { type: "accept" }],
      [encodePacket("r"), { type: "reject" }],
      [encodePacket("t"), { type: "tempfail" }],
      [encodePacket("d"), { type: "discard" }],
      [encodePacket("p"), { type: "progress" }],
      [encodePacket("s"), { type: "skip" }],
      [encodePacket("i", cat(u32(0), te.encode("DKIM-Signature\0v=1\0"))), {
        type: "insert-header",
        index: 0,
        name: "DKIM-Signature",
        value: "v=1",
      }],
      [encodePacket("m", cat(u32(2), te.encode("Subject\0\0"))), {
        type: "change-header",
        index: 2,
        name: "Subject",
        value: "",
      }],
      [encodeStrings("+", ["<c@example.org>"]), {
        type: "add-recipient",
        recipient: "<c@example.org>",
      }],
      [encodeStrings("2", ["<c@example.org>", "NOTIFY=NEVER"]), {
        type: "add-recipient",
        recipient: "<c@example.org>",
        params: "NOTIFY=NEVER",
      }],
      [encodeStrings("-", ["<b@example.org>"]), {
        type: "delete-recipient",
        recipient: "<b@example.org>",
      }],
      [encodeStrings("e", ["<new@example.org>"]), {
        type: "change-sender",
        sender: "<new@example.org>",
      }],
      [encodeStrings("e", ["<new@example.org>", "SIZE=5"]), {
        type: "change-sender",
        sender: "<new@example.org>",
        params: "SIZE=5",
      }],
      [encodePacket("b", te.encode("new body\r\n")), {
        type: "replace-body",
        chunk: te.encode("new body\r\n"),
      }],
      [encodeStrings("q", ["virus"]), { type: "quarantine", reason: "virus" }],
      [
        encodePacket(
          "O",
          cat(u32(6, 1, 0, 1), te.encode("{client_addr} j\0")),
        ),
        {
          type: "optneg",
          negotiation: {
            version: 6,
            actions: 1,
            protocol: 0,
            macros: { 1: ["{client_addr}", "j"] },
          },
        },
      ],
    ];
    for (const [bytes, want] of cases) {
      const [p] = decodeAll(bytes);
      const got = parseResponse(p);
      if ("chunk" in got) {
        assert.deepEqual({ ...got, chunk: [...got.chunk] }, {
          ...(want as object),
          chunk: [...(want as { chunk: Uint8Array }).chunk],
        });
      } else assert.deepEqual(got, want);
    }
  });

  it("rejects a zero length, an oversized length, an unknown code and a missing NUL", () => {
    assert.throws(
      () => new MilterDecoder().push(new Uint8Array([0, 0, 0, 0])),
      /Cannot parse packet: length is zero/,
    );
    assert.throws(
      () => new MilterDecoder(100).push(u32(101)),
      /Cannot parse packet: length 101 exceeds 100/,
    );
    assert.throws(
      () => parseResponse({ code: "Z", payload: new Uint8Array(0) }),
      /unknown code 0x5a/,
    );
    assert.throws(
      () => parseResponse({ code: "h", payload: te.encode("X-A\0b") }),
      MilterProtocolError,
    );
    assert.throws(
      () => parseResponse({ code: "O", payload: u32(6, 1) }),
      /payload is too short/,
    );
    assert.throws(() => new MilterDecoder(0), TypeError);
  });
});

describe("applyHeaderModifications", () => {
  const apply = (
    block: string,
    mods: Parameters<typeof applyHeaderModifications>[1],
  ) => td.decode(applyHeaderModifications(te.encode(block), mods));

  it("adds at the end and inserts at an index, past the end appends", () => {
    assert.equal(
      apply("A: 1\r\nB: 2\r\n", [
        { type: "add-header", name: "X-Z", value: "z" },
        { type: "insert-header", index: 0, name: "X-Top", value: "t" },
        { type: "insert-header", index: 2, name: "X-Mid", value: "m" },
        { type: "insert-header", index: 99, name: "X-End", value: "e" },
      ]),
      "X-Top: t\r\nA: 1\r\nX-Mid: m\r\nB: 2\r\nX-Z: z\r\nX-End: e\r\n",
    );
  });

  it("changes and deletes the nth occurrence of a name, case-insensitive, folded fields whole", () => {
    const block =
      "Received: one\r\n\tfolded\r\nSubject: s\r\nreceived: two\r\n";
    assert.equal(
      apply(block, [
        { type: "change-header", index: 2, name: "Received", value: "2nd" },
        { type: "delete-header", index: 1, name: "RECEIVED" },
      ]),
      "Subject: s\r\nReceived: 2nd\r\n",
    );
    assert.equal(
      apply(block, [{
        type: "change-header",
        index: 1,
        name: "Subject",
        value: "",
      }]),
      "Received: one\r\n\tfolded\r\nreceived: two\r\n",
    );
  });

  it("appends a change of a missing field and ignores a delete of one", () => {
    assert.equal(
      apply("A: 1\r\n", [
        { type: "change-header", index: 3, name: "A", value: "x" },
        { type: "delete-header", index: 1, name: "Nope" },
      ]),
      "A: 1\r\nA: x\r\n",
    );
  });

  it("writes LF-folded values with CRLF and keeps the empty line and the body after the block", () => {
    assert.equal(
      apply("A: 1\r\n\r\nbody\r\n", [
        {
          type: "add-header",
          name: "X-Spamd-Result",
          value: "default: False;\n\tA(1)",
        },
      ]),
      "A: 1\r\nX-Spamd-Result: default: False;\r\n\tA(1)\r\n\r\nbody\r\n",
    );
  });

  it("keeps untouched fields byte for byte, 8-bit bytes included", () => {
    const raw = new Uint8Array([...te.encode("Subject: "), 0xe9, 0xff, 13, 10]);
    const out = applyHeaderModifications(raw, [
      { type: "add-header", name: "X", value: "é" },
    ]);
    assert.deepEqual([...out.subarray(0, raw.length)], [...raw]);
    assert.equal(td.decode(out.subarray(raw.length)), "X: é\r\n");
  });
});

describe("the fields a filter is shown and the fields it changes agree", () => {
  // fieldsOf (what each header stage shows a filter) and
  // applyHeaderModifications (what its changes apply to) read the header
  // block with one scan (fieldEnd): the same fields, the same block end.
  const cases: [string, string[], string][] = [
    // block, the names shown, what deleting each shown name leaves
    ["A: 1\r\n\tfolded\r\nB: 2\r\n\r\nbody\r\n", ["A", "B"], "\r\nbody\r\n"],
    ["A: 1\nB: 2\n\nbody\n", ["A", "B"], "\nbody\n"],
    // A bare CR at the start of a line is no empty line: the block goes on.
    ["A: 1\r\n\rx\r\nB: 2\r\n\r\nbody", ["A", "B"], "\rx\r\n\r\nbody"],
    ["A: 1\r\nno colon\r\nB: 2\r\n", ["A", "B"], "no colon\r\n"],
  ];
  for (const [block, names, left] of cases) {
    it(JSON.stringify(block), () => {
      const shown = fieldsOf(te.encode(block)).map((f) => f.name);
      assert.deepEqual(shown, names);
      const mods = shown.map((name) => ({
        type: "delete-header" as const,
        index: 1,
        name,
      }));
      assert.equal(
        td.decode(applyHeaderModifications(te.encode(block), mods)),
        left,
      );
    });
  }
});

describe("milter options", () => {
  it("parses inet:PORT@HOST, inet:HOST:PORT, bracketed IPv6 and unix:/path", () => {
    assert.deepEqual(parseMilterAddress("inet:11332@127.0.0.1"), {
      kind: "tcp",
      host: "127.0.0.1",
      port: 11332,
    });
    assert.deepEqual(parseMilterAddress("inet:localhost:8891"), {
      kind: "tcp",
      host: "localhost",
      port: 8891,
    });
    assert.deepEqual(parseMilterAddress("inet6:8891@::1"), {
      kind: "tcp",
      host: "::1",
      port: 8891,
    });
    assert.deepEqual(parseMilterAddress("inet:[::1]:8891"), {
      kind: "tcp",
      host: "::1",
      port: 8891,
    });
    assert.deepEqual(parseMilterAddress("unix:/run/x.sock"), {
      kind: "unix",
      path: "/run/x.sock",
    });
  });

  it("throws a TypeError for a bad address, policy or time limit", () => {
    const bad: [unknown, RegExp][] = [
      [{ address: "tcp:1@h" }, /expected inet:HOST:PORT/],
      [{ address: "inet:0@h" }, /port "0" is not between 1 and 65535/],
      [{ address: "inet:70000@h" }, /is not between 1 and 65535/],
      [{ address: "inet:h" }, /the port is missing/],
      [{ address: "inet:25@" }, /the host is empty/],
      [{ address: "unix:" }, /the socket path is empty/],
      [{ address: 25 }, /expected a string/],
      [undefined, /expected an object/],
      [{ address: "inet:1@h", onError: "ignore" }, /"ignore" is not one of/],
      [
        { address: "inet:1@h", timeouts: { command: 0 } },
        /timeouts.command: 0 is not a positive/,
      ],
      [{ address: "inet:1@h", timeouts: { command: -5 } }, /timeouts.command/],
      [
        { address: "inet:1@h", timeouts: { connect: NaN } },
        /timeouts.connect: NaN/,
      ],
      [
        { address: "inet:1@h", timeouts: { connect: "5" } },
        /string is not a positive/,
      ],
      [{ address: "inet:1@h", timeouts: { eom: 5 } }, /unknown stage/],
      [{ address: "inet:1@h", maxPacket: 10 }, /maxPacket: 10/],
      [
        { address: "inet:1@h", maxModificationBytes: 0 },
        /maxModificationBytes: 0 is not/,
      ],
      [
        { address: "inet:1@h", maxModificationBytes: "1" },
        /maxModificationBytes: 1 is not/,
      ],
    ];
    for (const [o, re] of bad) {
      assert.throws(
        () => new MilterClient(o as never),
        (e: unknown) => e instanceof TypeError && re.test(e.message),
        String(re),
      );
    }
  });

  it("fills in the defaults: tempfail, 30 s per command, 300 s at end-of-message", () => {
    const o = resolveMilterOptions({ address: "unix:/x" });
    assert.equal(o.onError, "tempfail");
    assert.deepEqual(o.timeouts, {
      connect: 30000,
      command: 30000,
      endOfMessage: 300000,
    });
  });
});
