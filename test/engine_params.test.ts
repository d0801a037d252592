// The parsers of MAIL, RCPT and BDAT arguments, table by table: pure
// functions, no engine (the engine's transcripts cover them in a session).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SmtpError } from "../src/errors.ts";
import {
  parseAuthArg,
  parseChunkSize,
  parseEnvelopeArg,
  parseMailParams,
  parsePlainEnvelope,
  parseRcptParams,
  parseSaslResponse,
} from "../src/engine/params.ts";
import { bytes, run } from "./helpers/transcript.ts";

/** Everything offered (with EHLO, and AUTH offered). */
const ALL = {
  esmtp: true,
  maxMessageSize: 1000,
  chunking: true,
  binaryMime: true,
  smtputf8: true,
  dsn: true,
  auth: true,
};

/** An error as "code enhanced text", or the value as it is. */
function shown<T>(r: T | SmtpError): T | string {
  return r instanceof SmtpError
    ? `${r.code} ${r.enhancedCode} ${r.message}`
    : r;
}

describe("parseEnvelopeArg", () => {
  const table: [
    string,
    boolean,
    string | { address: string; params: [string, string | true][] },
  ][] = [
    ["FROM:<a@b.test>", false, { address: "a@b.test", params: [] }],
    ["from: <a@b.test>", false, { address: "a@b.test", params: [] }],
    ["FROM:<>", false, { address: "", params: [] }],
    ["FROM:<a@b.test> SIZE=10 BODY=8BITMIME", false, {
      address: "a@b.test",
      params: [["SIZE", "10"], ["BODY", "8BITMIME"]],
    }],
    ["FROM:<a@b.test> SMTPUTF8", false, {
      address: "a@b.test",
      params: [["SMTPUTF8", true]],
    }],
    ["TO:<x@y.test>", true, { address: "x@y.test", params: [] }],
    ["TO:<Postmaster>", true, { address: "Postmaster", params: [] }],
    ["TO:<x@y.test>", false, "501 5.5.4 Syntax: MAIL FROM:<address>"],
    ["FROM:<a@b.test>", true, "501 5.5.4 Syntax: RCPT TO:<address>"],
    ["TO:<>", true, "501 5.1.3 Bad recipient address syntax"],
    ["FROM:<a b>", false, "501 5.1.7 Bad sender address syntax"],
    [
      `TO:<${"x".repeat(300)}@y.test>`,
      true,
      "501 5.1.3 Recipient address too long",
    ],
    ["FROM:<a@b.test> SIZE=1 SIZE=2", false, "501 5.5.4 Duplicate parameter"],
    ["FROM:<a@b.test> =x", false, "501 5.5.4 Bad parameter syntax"],
  ];
  for (const [arg, recipient, want] of table) {
    it(`parses ${JSON.stringify(arg.slice(0, 40))} (${recipient ? "RCPT" : "MAIL"})`, () => {
      const r = parseEnvelopeArg(arg, recipient);
      const got = r instanceof SmtpError
        ? shown(r)
        : { address: r.mailbox.address, params: [...r.params] };
      assert.deepEqual(got, want);
    });
  }
});

/**
 * MAIL and RCPT arguments for parsePlainEnvelope(): the plain form it
 * reads, and the forms it leaves to parseEnvelopeArg() (null).
 */
const PLAIN_TABLE: [string, boolean, string | null][] = [
  ["FROM:<a@b.test>", false, "a@b.test"],
  ["from:<A.b@C-d.Test>", false, "A.b@C-d.Test"],
  ["FROM:   <a@b>", false, "a@b"],
  ["To:<x!#$%&'*+/=?^_`{|}~-@y.test>", true, "x!#$%&'*+/=?^_`{|}~-@y.test"],
  ["TO:<x@y.test>", true, "x@y.test"],
  [`TO:<${"l".repeat(64)}@y.test>`, true, `${"l".repeat(64)}@y.test`],
  [`TO:<x@${"d".repeat(252)}>`, true, `x@${"d".repeat(252)}`],
  [`TO:<${"l".repeat(65)}@y.test>`, true, null],
  [`TO:<x@${"d".repeat(253)}>`, true, null],
  ["FROM:<>", false, null],
  ["TO:<postmaster>", true, null],
  ["FROM:<a@b.test> SIZE=10", false, null],
  ["FROM:<a@b.test> ", false, null],
  ["FROM:<a@b.test>>", false, null],
  ['FROM:<"a b"@b.test>', false, null],
  ["FROM:<@r.test:a@b.test>", false, null],
  ["FROM:<a@[127.0.0.1]>", false, null],
  ["FROM:<a..b@c>", false, null],
  ["FROM:<.a@c>", false, null],
  ["FROM:<a.@c>", false, null],
  ["FROM:<a@b@c>", false, null],
  ["FROM:<a@b.>", false, null],
  ["FROM:<a@-b>", false, null],
  ["FROM:<a@b->", false, null],
  ["FROM:<a@b..c>", false, null],
  ["FROM:<a@>", false, null],
  ["FROM:<@b>", false, null],
  ["FROM:<a>", false, null],
  ["FROM:a@b", false, null],
  ["FROM<a@b>", false, null],
  ["TO:<x@y.test>", false, null],
  ["FROM:<a@b.test>", true, null],
  ["FROM:<a\x7f@b>", false, null],
];

describe("parsePlainEnvelope", () => {
  for (const [arg, recipient, want] of PLAIN_TABLE) {
    it(`reads ${JSON.stringify(arg.slice(0, 40))} (${recipient ? "RCPT" : "MAIL"}) as ${want === null ? "text" : "bytes"}`, () => {
      const line = bytes(`${recipient ? "RCPT" : "MAIL"} ${arg}`);
      const got = parsePlainEnvelope(line, 5, line.length, recipient);
      assert.equal(got?.address ?? null, want);
      if (got === null) return;
      // What parseEnvelopeArg() makes of the same argument.
      const env = parseEnvelopeArg(arg, recipient);
      assert.ok(!(env instanceof SmtpError));
      assert.deepEqual(got, env.mailbox);
      assert.equal(env.params.size, 0);
    });
  }

  it("agrees with parseEnvelopeArg() on generated arguments", () => {
    // A fixed sequence (xorshift): the same arguments on every run.
    let x = 0x2545f491;
    const next = (n: number) => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return (x >>> 0) % n;
    };
    // Mostly what a plain address is made of, with now and then a byte
    // that is not.
    const common = ["a", "B", "9", ".", "-", "x.y", "+", "_"];
    const rare = ["@", "<", ">", " ", '"', "[", "]", ":", "é", "=", "\\"];
    const piece = () =>
      next(10) === 0 ? rare[next(rare.length)] : common[next(common.length)];
    const text = (n: number) => {
      let t = "";
      while (n-- > 0) t += piece();
      return t;
    };
    let plain = 0;
    for (let k = 0; k < 20_000; k++) {
      const address = next(8) === 0
        ? text(next(12))
        : `${text(1 + next(6))}@${text(1 + next(6))}`;
      const recipient = next(2) === 1;
      const arg = `${recipient ? "TO:" : "FROM:"}<${address}>`;
      const line = bytes(`${recipient ? "RCPT" : "MAIL"} ${arg}`);
      const got = parsePlainEnvelope(line, 5, line.length, recipient);
      if (got === null) continue;
      plain++;
      const env = parseEnvelopeArg(arg, recipient);
      assert.ok(!(env instanceof SmtpError), arg);
      assert.deepEqual(got, env.mailbox, arg);
      assert.equal(env.params.size, 0, arg);
    }
    assert.ok(plain > 100, `only ${plain} plain addresses`);
  });

  it("gives the engine the replies and events of the text path", () => {
    // traceCommands sends every line down the text path (decodeCommandLine,
    // parseEnvelopeArg): both must answer a session alike.
    for (const [arg, recipient] of PLAIN_TABLE) {
      const lines = "EHLO c.test\r\n" +
        (recipient
          ? `MAIL FROM:<s@c.test>\r\nRCPT ${arg}\r\n`
          : `MAIL ${arg}\r\nRCPT TO:<r@c.test>\r\n`) +
        "RSET\r\nQUIT\r\n";
      const plain = run([bytes(lines)]);
      const text = run([bytes(lines)], { traceCommands: true });
      assert.equal(plain.output, text.output, arg);
      assert.deepEqual(
        plain.raw,
        text.raw.filter((ev) => ev.type !== "command"),
        arg,
      );
    }
  });
});

describe("parseMailParams", () => {
  const table: [
    string,
    [string, string | true][],
    Partial<typeof ALL>,
    unknown,
  ][] = [
    ["no parameters", [], {}, { smtputf8: false, params: {} }],
    ["SIZE", [["SIZE", "100"]], {}, {
      smtputf8: false,
      size: 100,
      params: { SIZE: "100" },
    }],
    ["SIZE at the limit", [["SIZE", "1000"]], {}, {
      smtputf8: false,
      size: 1000,
      params: { SIZE: "1000" },
    }],
    [
      "SIZE over the limit",
      [["SIZE", "1001"]],
      {},
      "552 5.3.4 Message size exceeds fixed maximum message size",
    ],
    [
      "SIZE without digits",
      [["SIZE", "1e3"]],
      {},
      "501 5.5.4 Bad SIZE parameter",
    ],
    [
      "SIZE without a value",
      [["SIZE", true]],
      {},
      "501 5.5.4 Bad SIZE parameter",
    ],
    ["BODY=8bitmime", [["BODY", "8bitmime"]], {}, {
      smtputf8: false,
      body: "8BITMIME",
      params: { BODY: "8bitmime" },
    }],
    ["BODY=BINARYMIME", [["BODY", "BINARYMIME"]], {}, {
      smtputf8: false,
      body: "BINARYMIME",
      params: { BODY: "BINARYMIME" },
    }],
    ["BODY=BINARYMIME without CHUNKING", [["BODY", "BINARYMIME"]], {
      chunking: false,
    }, "555 5.5.4 BODY=BINARYMIME is not supported"],
    ["BODY=BINARYMIME without BINARYMIME", [["BODY", "BINARYMIME"]], {
      binaryMime: false,
    }, "555 5.5.4 BODY=BINARYMIME is not supported"],
    ["BODY=9BIT", [["BODY", "9BIT"]], {}, "501 5.5.4 Bad BODY parameter"],
    ["SMTPUTF8", [["SMTPUTF8", true]], {}, {
      smtputf8: true,
      params: { SMTPUTF8: true },
    }],
    [
      "SMTPUTF8 with a value",
      [["SMTPUTF8", "x"]],
      {},
      "501 5.5.4 SMTPUTF8 takes no value",
    ],
    [
      "SMTPUTF8 not offered",
      [["SMTPUTF8", true]],
      { smtputf8: false },
      "555 5.5.4 SMTPUTF8 is not supported",
    ],
    ["RET=hdrs", [["RET", "hdrs"]], {}, {
      smtputf8: false,
      ret: "HDRS",
      params: { RET: "hdrs" },
    }],
    ["RET=ALL", [["RET", "ALL"]], {}, "501 5.5.4 Bad RET parameter"],
    [
      "RET without DSN",
      [["RET", "FULL"]],
      { dsn: false },
      "555 5.5.4 Unsupported parameter RET",
    ],
    ["ENVID xtext", [["ENVID", "a+2Bb"]], {}, {
      smtputf8: false,
      envid: "a+b",
      params: { ENVID: "a+2Bb" },
    }],
    [
      "ENVID too long",
      [["ENVID", "x".repeat(101)]],
      {},
      "501 5.5.4 Bad ENVID parameter",
    ],
    [
      "ENVID without DSN",
      [["ENVID", "x"]],
      { dsn: false },
      "555 5.5.4 Unsupported parameter ENVID",
    ],
    ["AUTH=<>", [["AUTH", "<>"]], {}, {
      smtputf8: false,
      auth: "<>",
      params: { AUTH: "<>" },
    }],
    [
      "AUTH without a value",
      [["AUTH", true]],
      {},
      "501 5.5.4 Bad AUTH parameter",
    ],
    [
      "AUTH not offered",
      [["AUTH", "<>"]],
      { auth: false },
      "555 5.5.4 Unsupported parameter AUTH",
    ],
    [
      "an unknown keyword (cut at 32)",
      [["X".repeat(40), "1"]],
      {},
      `555 5.5.4 Unsupported parameter ${"X".repeat(32)}`,
    ],
    [
      "any parameter after HELO",
      [["SIZE", "1"]],
      { esmtp: false },
      "555 5.5.4 Parameters need EHLO",
    ],
    [
      "the first bad one",
      [["BODY", "7BIT"], ["RET", "X"], ["SIZE", "x"]],
      {},
      "501 5.5.4 Bad RET parameter",
    ],
  ];
  for (const [name, sent, offer, want] of table) {
    it(`decodes ${name}`, () => {
      const o = { ...ALL, ...offer };
      const r = parseMailParams(new Map(sent), o, o.esmtp, o.auth);
      assert.deepEqual(shown(r), want);
    });
  }
});

describe("parseRcptParams", () => {
  const table: [
    string,
    [string, string | true][],
    { esmtp?: boolean; dsn?: boolean },
    unknown,
  ][] = [
    ["no parameters", [], {}, { params: {} }],
    ["NOTIFY=success,failure", [["NOTIFY", "success,failure"]], {}, {
      notify: ["SUCCESS", "FAILURE"],
      params: { NOTIFY: "success,failure" },
    }],
    ["NOTIFY=NEVER", [["NOTIFY", "NEVER"]], {}, {
      notify: ["NEVER"],
      params: { NOTIFY: "NEVER" },
    }],
    [
      "NOTIFY=NEVER,DELAY",
      [["NOTIFY", "NEVER,DELAY"]],
      {},
      "501 5.5.4 Bad NOTIFY parameter",
    ],
    [
      "NOTIFY twice the same",
      [["NOTIFY", "DELAY,DELAY"]],
      {},
      "501 5.5.4 Bad NOTIFY parameter",
    ],
    [
      "NOTIFY=SOMETIMES",
      [["NOTIFY", "SOMETIMES"]],
      {},
      "501 5.5.4 Bad NOTIFY parameter",
    ],
    [
      "NOTIFY without a value",
      [["NOTIFY", true]],
      {},
      "501 5.5.4 Bad NOTIFY parameter",
    ],
    ["ORCPT", [["ORCPT", "RFC822;a+2Bb@c.test"]], {}, {
      orcpt: { type: "rfc822", address: "a+b@c.test" },
      params: { ORCPT: "RFC822;a+2Bb@c.test" },
    }],
    [
      "ORCPT without a type",
      [["ORCPT", ";a@b.test"]],
      {},
      "501 5.5.4 Bad ORCPT parameter",
    ],
    [
      "ORCPT with a bad type",
      [["ORCPT", "rfc 822;a@b.test"]],
      {},
      "501 5.5.4 Bad ORCPT parameter",
    ],
    [
      "NOTIFY without DSN",
      [["NOTIFY", "NEVER"]],
      { dsn: false },
      "555 5.5.4 Unsupported parameter NOTIFY",
    ],
    [
      "an unknown keyword",
      [["SIZE", "1"]],
      {},
      "555 5.5.4 Unsupported parameter SIZE",
    ],
    [
      "any parameter after HELO",
      [["NOTIFY", "NEVER"]],
      { esmtp: false },
      "555 5.5.4 Parameters need EHLO",
    ],
  ];
  for (const [name, sent, offer, want] of table) {
    it(`decodes ${name}`, () => {
      const r = parseRcptParams(
        new Map(sent),
        offer.esmtp ?? true,
        offer.dsn ?? true,
      );
      assert.deepEqual(shown(r), want);
    });
  }
});

describe("parseChunkSize", () => {
  const table: [string, number][] = [
    ["0", 0],
    ["42", 42],
    ["0042", 42],
    ["000", 0],
    [String(Number.MAX_SAFE_INTEGER), Number.MAX_SAFE_INTEGER],
    ["0" + String(Number.MAX_SAFE_INTEGER), Number.MAX_SAFE_INTEGER],
    [String(Number.MAX_SAFE_INTEGER + 1), -1],
    ["18446744073709551617", -1],
    ["", -1],
    ["-1", -1],
    ["+1", -1],
    ["1.5", -1],
    ["1e3", -1],
    [" 1", -1],
    ["0x10", -1],
  ];
  for (const [text, want] of table) {
    it(`reads ${JSON.stringify(text)} as ${want}`, () => {
      assert.equal(parseChunkSize(text), want);
    });
  }
});

describe("parseAuthArg", () => {
  const offered = ["PLAIN", "LOGIN", "XOAUTH2"] as const;
  const table: [string, unknown][] = [
    ["PLAIN", { mechanism: "PLAIN", initial: null }],
    ["login", { mechanism: "LOGIN", initial: null }],
    ["PLAIN =", { mechanism: "PLAIN", initial: "" }],
    ["PLAIN AGEAYg==", { mechanism: "PLAIN", initial: "\0a\0b" }],
    ["", "501 5.5.4 Syntax: AUTH mechanism"],
    [" PLAIN", "501 5.5.4 Syntax: AUTH mechanism"],
    ["CRAM-MD5", "504 5.5.4 Unrecognized authentication type"],
    ["GSSAPI", "504 5.5.4 Unrecognized authentication type"],
    ["PLAIN !!!", "501 5.5.2 Invalid base64 data"],
  ];
  for (const [arg, want] of table) {
    it(`parses ${JSON.stringify(arg)}`, () => {
      assert.deepEqual(shown(parseAuthArg(arg, offered)), want);
    });
  }
});

describe("parseSaslResponse", () => {
  const table: [string, string][] = [
    ["dXNlcg==", "user"],
    ["", ""],
    ["*", "501 5.7.0 Authentication cancelled"],
    ["**", "501 5.5.2 Invalid base64 data"],
    ["not base64!", "501 5.5.2 Invalid base64 data"],
  ];
  for (const [line, want] of table) {
    it(`decodes ${JSON.stringify(line)} inside a line`, () => {
      // The line sits between other bytes: only [start, end) counts.
      const buf = new TextEncoder().encode(`xx${line}\r\n`);
      assert.equal(shown(parseSaslResponse(buf, 2, 2 + line.length)), want);
    });
  }
});
