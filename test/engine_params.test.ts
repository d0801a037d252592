// The parsers of MAIL, RCPT and BDAT arguments, table by table: pure
// functions, no engine (the engine's transcripts cover them in a session).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SmtpError } from "../src/errors.ts";
import {
  type MailOptions,
  mailPathEnd,
  parseAuthArg,
  parseChunkSize,
  parseEnvelopeArg,
  parseMailParams,
  parsePlainEnvelope,
  parsePlainMailParams,
  parseRcptParams,
  parseSaslResponse,
} from "../src/engine/params.ts";
import type { EngineOptions, SmtpEvent } from "../src/exports/engine.ts";
import { bytes, run, transcript } from "./helpers/transcript.ts";

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

/**
 * A fixed sequence of numbers (xorshift) from `seed`: `next(n)` is the
 * next one below `n`, the same on every run.
 */
function sequence(seed: number): (n: number) => number {
  let x = seed;
  return (n) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
}

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
    const next = sequence(0x2545f491);
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

/**
 * What the engine's byte path makes of "MAIL <arg>" (the steps command()
 * takes): the sender and the parameters, or null for the text path.
 */
function plainMail(arg: string, o: MailOptions, esmtp: boolean) {
  const line = bytes(`MAIL ${arg}`);
  const pathEnd = mailPathEnd(line, 5, line.length);
  const params = pathEnd === line.length
    ? null
    : parsePlainMailParams(line, pathEnd, line.length, o, esmtp);
  if (pathEnd !== line.length && params === null) return null;
  const from = parsePlainEnvelope(line, 5, pathEnd, false);
  if (from === null) return null;
  return {
    from,
    params: params ?? parseMailParams(new Map(), o, esmtp, false),
  };
}

/** What the text path makes of "MAIL <arg>": the same, or the error. */
function textMail(arg: string, o: MailOptions, esmtp: boolean) {
  const env = parseEnvelopeArg(arg, false);
  if (env instanceof SmtpError) return shown(env);
  const params = parseMailParams(env.params, o, esmtp, false);
  if (params instanceof SmtpError) return shown(params);
  return { from: env.mailbox, params };
}

/**
 * Asserts that the byte path read `arg` as the text path does, down to
 * the order of the properties (JSON of the params object); true when it
 * read it at all (null: left to the text path).
 */
function sameMail(arg: string, o: MailOptions, esmtp: boolean): boolean {
  const got = plainMail(arg, o, esmtp);
  if (got === null) return false;
  const want = textMail(arg, o, esmtp);
  assert.deepEqual(got, want, arg);
  assert.equal(JSON.stringify(got), JSON.stringify(want), arg);
  return true;
}

/**
 * MAIL arguments with parameters: those the byte path reads (true) and
 * those it leaves to the text path (false), with the options (ALL unless
 * changed) and `esmtp`.
 */
const PLAIN_MAIL_TABLE: [string, boolean, Partial<typeof ALL>][] = [
  ["FROM:<a@b.test> SIZE=234", true, {}],
  ["FROM:<a@b.test> SIZE=1000", true, {}],
  ["FROM:<a@b.test> SIZE=0", true, {}],
  ["FROM:<a@b.test> SIZE=123456789012345", true, { maxMessageSize: Infinity }],
  ["FROM:<a@b.test> SIZE=234 BODY=8BITMIME", true, {}],
  ["FROM:<a@b.test> BODY=8BITMIME SIZE=234", true, {}],
  ["FROM:<a@b.test> BODY=7BIT", true, {}],
  ["from:<a@b.test> size=12 body=8bitmime", true, {}],
  ["FROM:<a@b.test> Body=8BitMime Size=5", true, {}],
  ["FROM:  <a@b.test> SIZE=1", true, {}],
  ["FROM:<a@b.test> BODY=BINARYMIME", true, {}],
  ["FROM:<a@b.test> body=binarymime SIZE=7", true, {}],
  ["FROM:<a@b.test> SMTPUTF8", true, {}],
  ["FROM:<a@b.test> SIZE=9 smtputf8 BODY=8BITMIME", true, {}],
  ["FROM:<a@b.test> SIZE=234 BODY=8BITMIME", true, { dsn: false }],
  ["FROM:<a@b.test> SIZE=1001", false, {}],
  [`FROM:<a@b.test> SIZE=${"9".repeat(20)}`, false, {}],
  ["FROM:<a@b.test> SIZE=1234567890123456", false, {
    maxMessageSize: Infinity,
  }],
  ["FROM:<a@b.test> SIZE=01", false, {}],
  ["FROM:<a@b.test> SIZE=00", false, {}],
  ["FROM:<a@b.test> SIZE=", false, {}],
  ["FROM:<a@b.test> SIZE", false, {}],
  ["FROM:<a@b.test> SIZE=1e3", false, {}],
  ["FROM:<a@b.test> SIZE=-1", false, {}],
  ["FROM:<a@b.test> SIZE=+1", false, {}],
  ["FROM:<a@b.test> SIZE=12x", false, {}],
  ["FROM:<a@b.test> SIZES=1", false, {}],
  ["FROM:<a@b.test> SIZE=1 SIZE=1", false, {}],
  ["FROM:<a@b.test> SIZE=1 size=2", false, {}],
  ["FROM:<a@b.test> BODY=7BIT BODY=7BIT", false, {}],
  ["FROM:<a@b.test> SMTPUTF8 SMTPUTF8", false, {}],
  ["FROM:<a@b.test> BODY=9BIT", false, {}],
  ["FROM:<a@b.test> BODY=8BIT", false, {}],
  ["FROM:<a@b.test> BODY=8BITMIMEX", false, {}],
  ["FROM:<a@b.test> BODY=", false, {}],
  ["FROM:<a@b.test> BODY", false, {}],
  ["FROM:<a@b.test> BODY=8BITMIMé", false, {}],
  ["FROM:<a@b.test> BODY=BINARYMIME", false, { chunking: false }],
  ["FROM:<a@b.test> BODY=BINARYMIME", false, { binaryMime: false }],
  ["FROM:<a@b.test> SMTPUTF8", false, { smtputf8: false }],
  ["FROM:<a@b.test> SMTPUTF8=yes", false, {}],
  ["FROM:<a@b.test> SMTPUTF8X", false, {}],
  ["FROM:<a@b.test> SIZE=1", false, { esmtp: false }],
  ["FROM:<a@b.test> BODY=8BITMIME", false, { esmtp: false }],
  ["FROM:<a@b.test>  SIZE=1", false, {}],
  ["FROM:<a@b.test> SIZE=1  BODY=7BIT", false, {}],
  ["FROM:<a@b.test> SIZE=1 ", false, {}],
  ["FROM:<a@b.test>\tSIZE=1", false, {}],
  ["FROM:<a@b.test>SIZE=1", false, {}],
  ["FROM:<a@b.test>> SIZE=1", false, {}],
  ["FROM:<a@b.test> RET=FULL", false, {}],
  ["FROM:<a@b.test> ENVID=x", false, {}],
  ["FROM:<a@b.test> AUTH=<>", false, {}],
  ["FROM:<a@b.test> SIZE=1 AUTH=<>", false, {}],
  ["FROM:<a@b.test> XFOO", false, {}],
  ["FROM:<a@b.test> SIZE=1 =x", false, {}],
  ["FROM:<> SIZE=1", false, {}],
  ['FROM:<"a b"@b.test> SIZE=1', false, {}],
  ["FROM:<a@[127.0.0.1]> SIZE=1", false, {}],
  ["FROM:<a@b.test SIZE=1", false, {}],
  [`FROM:<${"l".repeat(65)}@y.test> SIZE=1`, false, {}],
];

describe("parsePlainMailParams", () => {
  for (const [arg, read, offer] of PLAIN_MAIL_TABLE) {
    const o = { ...ALL, ...offer };
    it(
      `reads ${JSON.stringify(arg.slice(0, 50))} as ${read ? "bytes" : "text"}${
        Object.keys(offer).length ? " " + JSON.stringify(offer) : ""
      }`,
      () => {
        assert.equal(sameMail(arg, o, o.esmtp), read);
      },
    );
  }

  it("reads only what is there: the bytes around count for nothing", () => {
    const buf = bytes("xx SIZE=12 BODY=7BIT SMTPUTF8yy");
    assert.equal(parsePlainMailParams(buf, 2, 10, ALL, true)?.size, 12);
    assert.equal(parsePlainMailParams(buf, 2, 9, ALL, true)?.size, 1);
    assert.equal(parsePlainMailParams(buf, 2, 8, ALL, true), null);
    assert.equal(parsePlainMailParams(buf, 10, 19, ALL, true), null);
    assert.equal(parsePlainMailParams(buf, 10, 20, ALL, true)?.body, "7BIT");
    assert.equal(parsePlainMailParams(buf, 20, 29, ALL, true)?.smtputf8, true);
    assert.equal(parsePlainMailParams(buf, 20, 30, ALL, true), null);
    assert.equal(parsePlainMailParams(buf, 20, 28, ALL, true), null);
  });

  it("agrees with parseEnvelopeArg() and parseMailParams() on generated arguments", () => {
    const next = sequence(0x1b873593);
    const pick = <T>(a: readonly T[]): T => a[next(a.length)];
    const odd = (s: string) =>
      [...s].map((c) => next(4) === 0 ? c.toLowerCase() : c).join("");
    const digits = () => {
      const n = next(5) === 0 ? 14 + next(8) : 1 + next(6);
      let d = "";
      for (let k = 0; k < n; k++) d += next(10);
      return d;
    };
    // The parameters clients send, now and then one that is not, a bad
    // value or no value.
    const param = (): string => {
      switch (next(12)) {
        case 0:
        case 1:
        case 2:
          return `SIZE=${digits()}`;
        case 3:
          return `SIZE=${pick(["", "0", "00", "01", "1e3", "-5", "7x", "١"])}`;
        case 4:
        case 5:
          return `BODY=${pick(["8BITMIME", "7BIT", "BINARYMIME"])}`;
        case 6:
          return `BODY=${pick(["", "8BIT", "9BIT", "8BITMIMEX", "é", "7BI"])}`;
        case 7:
          return pick(["SMTPUTF8", "SMTPUTF8=x", "SMTPUTF"]);
        case 8:
          return pick(["SIZE", "BODY", "RET=FULL", "ENVID=a+2Bb", "AUTH=<>"]);
        case 9:
          return pick(["X-Y=1", "SIZEX=1", "=1", "BODY==7BIT", "SIZE=1=2"]);
        default:
          return `SIZE=${next(2000)}`;
      }
    };
    const space = () =>
      next(20) === 0 ? pick(["", "  ", "\t", " \t", "\u00a0"]) : " ";
    const addresses = [
      "a@b.test",
      "x.y@z-1.example",
      "B@c.d",
      "",
      "a b@c",
      "pm",
    ];
    const options: Partial<typeof ALL>[] = [
      { maxMessageSize: 1_000_000 },
      { maxMessageSize: 1_000_000 },
      {},
      { maxMessageSize: Infinity },
      { maxMessageSize: 0 },
      { chunking: false },
      { binaryMime: false },
      { smtputf8: false },
      { esmtp: false },
    ];
    let plain = 0;
    let withParams = 0;
    for (let k = 0; k < 20_000; k++) {
      let arg = `${odd("FROM:")}${next(10) === 0 ? " " : ""}<${
        pick(addresses)
      }>`;
      const n = next(4);
      for (let j = 0; j < n; j++) arg += space() + odd(param());
      if (next(30) === 0) arg += " ";
      const o = { ...ALL, ...pick(options) };
      if (!sameMail(arg, o, o.esmtp)) continue;
      plain++;
      if (n > 0) withParams++;
    }
    assert.ok(withParams > 800, `only ${withParams} with parameters read`);
    assert.ok(plain > withParams);
  });
});

/**
 * The bytes of a session: each character up to U+00FF one byte (the 8-bit
 * bytes of a body, which the transcript's TextDecoder reads alike however
 * the input is split), UTF-8 above.
 */
function wire(s: string): Uint8Array {
  const out: number[] = [];
  for (const c of s) {
    const code = c.codePointAt(0)!;
    if (code <= 0xff) out.push(code);
    else out.push(...bytes(c));
  }
  return Uint8Array.from(out);
}

/** A MAIL event's params and a message-start's envelope as JSON (in property order). */
function paramsJson(events: SmtpEvent[]): string[] {
  return events.flatMap((ev) =>
    ev.type === "mail"
      ? [JSON.stringify(ev.params)]
      : ev.type === "message-start"
      ? [JSON.stringify({ body: ev.body, mail: ev.envelope.mailParams })]
      : []
  );
}

describe("MAIL with parameters in a session", () => {
  // Each session fed every way (whole, byte by byte, split at every
  // offset) on the byte path and on the text path (traceCommands): the
  // replies and the events must be the same.
  // Bytes above 0x7F in the body, each on its own (see wire()).
  const eight = "Subject: caf\xe9\r\n\r\n\xe9t\xe9 \xff\r\n";
  const sessions: [string, string, EngineOptions][] = [
    [
      "SIZE and BODY=8BITMIME with an 8-bit body",
      "EHLO c.test\r\nMAIL FROM:<s@c.test> SIZE=40 BODY=8BITMIME\r\n" +
      `RCPT TO:<r@c.test>\r\nDATA\r\n${eight}.\r\nQUIT\r\n`,
      {},
    ],
    [
      "odd case, BODY first",
      "EHLO c.test\r\nmail from:<s@c.test> body=8bitMIME size=40\r\n" +
      `RCPT TO:<r@c.test>\r\nDATA\r\n${eight}.\r\nQUIT\r\n`,
      {},
    ],
    [
      "SIZE over the limit, then at it",
      "EHLO c.test\r\nMAIL FROM:<s@c.test> SIZE=101 BODY=8BITMIME\r\n" +
      "MAIL FROM:<s@c.test> SIZE=100\r\nRCPT TO:<r@c.test>\r\n" +
      "DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n",
      { maxMessageSize: 100 },
    ],
    [
      "a declared size below the body's",
      "EHLO c.test\r\nMAIL FROM:<s@c.test> SIZE=3\r\nRCPT TO:<r@c.test>\r\n" +
      `DATA\r\n${"x".repeat(150)}\r\n.\r\nQUIT\r\n`,
      { maxMessageSize: 100 },
    ],
    [
      "bad and repeated parameters",
      "EHLO c.test\r\nMAIL FROM:<s@c.test> SIZE=1 SIZE=1\r\n" +
      "MAIL FROM:<s@c.test> SIZE=01\r\nMAIL FROM:<s@c.test> BODY=9BIT\r\n" +
      "MAIL FROM:<s@c.test>  SIZE=1\r\nMAIL FROM:<s@c.test> SIZE=1 \r\n" +
      "MAIL FROM:<s@c.test> SIZE=1 XFOO\r\nMAIL FROM:<s@c.test> SMTPUTF8=1\r\n" +
      "MAIL FROM:<s@c.test> SIZE=1 BODY=7BIT\r\nQUIT\r\n",
      {},
    ],
    [
      "parameters after HELO",
      "HELO c.test\r\nMAIL FROM:<s@c.test> SIZE=1\r\n" +
      "MAIL FROM:<s@c.test> BODY=8BITMIME\r\nMAIL FROM:<s@c.test>\r\n" +
      "QUIT\r\n",
      {},
    ],
    [
      "before EHLO, and nested",
      "MAIL FROM:<s@c.test> SIZE=1\r\nEHLO c.test\r\n" +
      "MAIL FROM:<s@c.test> SIZE=1\r\nMAIL FROM:<s@c.test> SIZE=1\r\n" +
      "QUIT\r\n",
      {},
    ],
    [
      "SMTPUTF8 offered and not",
      "EHLO c.test\r\nMAIL FROM:<s@c.test> SMTPUTF8 SIZE=10\r\n" +
      "RCPT TO:<r\u0444@c.test>\r\nRSET\r\n" +
      "MAIL FROM:<s@c.test> SIZE=10\r\nRCPT TO:<r\u0444@c.test>\r\nQUIT\r\n",
      {},
    ],
    [
      "SMTPUTF8 not offered",
      "EHLO c.test\r\nMAIL FROM:<s@c.test> SMTPUTF8\r\nQUIT\r\n",
      { smtputf8: false },
    ],
    [
      "BODY=BINARYMIME with BDAT, and with DATA",
      "EHLO c.test\r\nMAIL FROM:<s@c.test> BODY=BINARYMIME SIZE=4\r\n" +
      "RCPT TO:<r@c.test>\r\nBDAT 4 LAST\r\n\x00\x7f\r\n" +
      "MAIL FROM:<s@c.test> BODY=BINARYMIME\r\nRCPT TO:<r@c.test>\r\n" +
      "DATA\r\nQUIT\r\n",
      {},
    ],
    [
      "BODY=BINARYMIME without CHUNKING",
      "EHLO c.test\r\nMAIL FROM:<s@c.test> BODY=BINARYMIME\r\nQUIT\r\n",
      { chunking: false },
    ],
    [
      "BODY=BINARYMIME without BINARYMIME",
      "EHLO c.test\r\nMAIL FROM:<s@c.test> BODY=BINARYMIME\r\nQUIT\r\n",
      { binaryMime: false },
    ],
    [
      "LMTP",
      "LHLO c.test\r\nMAIL FROM:<s@c.test> SIZE=40 BODY=8BITMIME\r\n" +
      `RCPT TO:<r@c.test>\r\nDATA\r\n${eight}.\r\nQUIT\r\n`,
      { lmtp: true },
    ],
    [
      "AUTH required, and AUTH=",
      "EHLO c.test\r\nMAIL FROM:<s@c.test> SIZE=1\r\nAUTH PLAIN AGEAYg==\r\n" +
      "MAIL FROM:<s@c.test> SIZE=1 AUTH=<>\r\nRSET\r\n" +
      "MAIL FROM:<s@c.test> SIZE=1\r\nQUIT\r\n",
      {
        authMechanisms: ["PLAIN"],
        allowInsecureAuth: true,
        authRequired: true,
      },
    ],
  ];
  for (const [name, lines, options] of sessions) {
    it(`answers ${name} as the text path does`, () => {
      const input = wire(lines);
      const fast = transcript(input, options);
      const text = transcript(input, { ...options, traceCommands: true });
      assert.equal(fast.output, text.output);
      assert.deepEqual(
        fast.events,
        text.events.filter((e) => !e.startsWith("command:")),
      );
      const raw = text.raw.filter((ev) => ev.type !== "command");
      assert.deepEqual(fast.raw, raw);
      assert.deepEqual(paramsJson(fast.raw), paramsJson(raw));
    });
  }
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
