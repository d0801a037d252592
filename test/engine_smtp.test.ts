// Byte transcripts of the protocol engine. Every transcript goes through
// transcript(), which feeds it whole, byte by byte and split at every offset
// and checks that all feedings agree; keep the inputs short (splitting at
// every offset is quadratic). Large inputs use run() with explicit chunks.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SmtpError } from "../mod.ts";
import { formatReply } from "../src/errors.ts";
import { resolveEngineOptions } from "../src/options.ts";
import { capabilities, ehloReply } from "../src/engine/capabilities.ts";
import {
  type EngineOptions,
  type MailParams,
  type RcptParams,
  SmtpEngine,
  type SmtpEvent,
} from "../src/exports/engine.ts";
import {
  bytes,
  codes,
  type Decide,
  replies,
  run,
  transcript,
} from "./helpers/transcript.ts";

const dec = new TextDecoder();
const EHLO = "EHLO c.test\r\n";
const TX = EHLO + "MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n";
/**
 * Runs `engine` to need-data, accepting every decision: the types of the
 * events, and each data event's chunk to `onData`.
 */
function untilNeedData(
  engine: SmtpEngine,
  onData: (chunk: Uint8Array) => void = () => {},
): string[] {
  const types: string[] = [];
  for (let ev = engine.nextEvent(); ev.type !== "need-data";) {
    types.push(ev.type);
    if (ev.type === "data") onData(ev.chunk);
    if (engine.pendingDecision !== null) engine.accept();
    ev = engine.nextEvent();
  }
  return types;
}
/** Codes of the replies to TX (greeting, EHLO, MAIL, RCPT, DATA). */
const TX_CODES = ["220", "250", "250 2.1.0", "250 2.1.5", "354 2.0.0"];

/** Final reply codes after the first `skip` replies. */
function codesAfter(output: string, skip: number): string[] {
  return codes(output).slice(skip);
}

/** The parameters of the mail events of a result. */
function mailParams(raw: SmtpEvent[]): MailParams[] {
  return raw.flatMap((ev) => ev.type === "mail" ? [ev.params] : []);
}

/** The parameters of the rcpt events of a result. */
function rcptParams(raw: SmtpEvent[]): RcptParams[] {
  return raw.flatMap((ev) => ev.type === "rcpt" ? [ev.params] : []);
}

const rejectAddress = (address: string, error: SmtpError): Decide => (ev) =>
  (ev.type === "rcpt" && ev.to.address === address) ||
    (ev.type === "mail" && ev.from.address === address)
    ? error
    : undefined;

describe("engine: basic session", () => {
  it("delivers one message with dot-unstuffing", () => {
    const r = transcript(TX + "hello\r\n..dot\r\n.\r\nQUIT\r\n");
    assert.deepEqual(r.messages, ["hello\r\n.dot\r\n"]);
    assert.deepEqual(codes(r.output), [...TX_CODES, "250 2.0.0", "221 2.0.0"]);
    assert.deepEqual(r.events, [
      "connect",
      "helo:EHLO c.test",
      "mail:<a@b.test>",
      "rcpt:<x@y.test>",
      "message-start",
      "data:hello\r\n.dot\r\n",
      "message-end:13",
    ]);
    assert.equal(r.closed, "quit");
  });

  it("sends a rejected RCPT's reply and goes on with the next", () => {
    const r = transcript(
      EHLO +
        "MAIL FROM:<a@b.test>\r\nRCPT TO:<no@y.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\nhi\r\n.\r\n",
      {},
      rejectAddress("no@y.test", new SmtpError(550, "5.1.1", "No such user")),
    );
    assert.deepEqual(codesAfter(r.output, 3), [
      "550 5.1.1",
      "250 2.1.5",
      "354 2.0.0",
      "250 2.0.0",
    ]);
    assert.deepEqual(r.messages, ["hi\r\n"]);
  });

  it("delivers two messages in one session", () => {
    const r = transcript(
      TX +
        "one\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<z@y.test>\r\nDATA\r\ntwo\r\n.\r\n",
    );
    assert.deepEqual(r.messages, ["one\r\n", "two\r\n"]);
    assert.deepEqual(codesAfter(r.output, 5), [
      "250 2.0.0",
      "250 2.1.0",
      "250 2.1.5",
      "354 2.0.0",
      "250 2.0.0",
    ]);
  });

  it("reads each DATA body of a session afresh (refused, dot-stuffed, then plain)", () => {
    const next = "MAIL FROM:<>\r\nRCPT TO:<z@y.test>\r\nDATA\r\n";
    const r = transcript(
      TX + "a\r\n..b\r\nbare\nlf\r\n.\r\n" + next + "..c\r\n..\r\nd\r\n.\r\n" +
        next + "e\r\n.\r\n",
    );
    assert.deepEqual(r.messages, [".c\r\n.\r\nd\r\n", "e\r\n"]);
    assert.deepEqual(codesAfter(r.output, 5), [
      "550 5.6.0",
      "250 2.1.0",
      "250 2.1.5",
      "354 2.0.0",
      "250 2.0.0",
      "250 2.1.0",
      "250 2.1.5",
      "354 2.0.0",
      "250 2.0.0",
    ]);
  });

  it("uses the text given to accept() in the reply", () => {
    const r = transcript(
      TX + "x\r\n.\r\n",
      {},
      (ev) => ev.type === "message-end" ? "Queued as 1234" : undefined,
    );
    assert.equal(replies(r.output).at(-1), "250 2.0.0 Queued as 1234");
  });
});

describe("engine: greeting and connection", () => {
  it("greets with 220, the server name and no enhanced code", () => {
    const r = transcript("", { serverName: "mx.test", greeting: "hi there" });
    assert.equal(r.output, "220 mx.test hi there\r\n");
    assert.deepEqual(r.events, ["connect"]);
  });

  it("greets with the text given to accept()", () => {
    const r = transcript("", {}, () => "mx.test ready");
    assert.equal(r.output, "220 mx.test ready\r\n");
  });

  it("sends the reject reply and closes with reason rejected", () => {
    const r = transcript(
      "EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n",
      {},
      (ev) =>
        ev.type === "connect"
          ? new SmtpError(554, "5.7.1", "No service for you")
          : undefined,
    );
    assert.equal(r.output, "554 5.7.1 No service for you\r\n");
    assert.deepEqual(r.events, ["connect"]);
    assert.equal(r.closed, "rejected");
  });

  it("answers commands sent before the greeting only after it", () => {
    const r = transcript("NOOP\r\n");
    assert.deepEqual(codes(r.output), ["220", "250 2.0.0"]);
  });
});

describe("engine: EHLO and HELO", () => {
  it("EHLO lists the capabilities", () => {
    const r = transcript("EHLO c.test\r\n", {
      serverName: "mx.test",
      maxMessageSize: 1000,
    });
    assert.deepEqual(replies(r.output).slice(1), [
      "250-mx.test greets c.test",
      "250-PIPELINING",
      "250-8BITMIME",
      "250-SIZE 1000",
      "250-ENHANCEDSTATUSCODES",
      "250-SMTPUTF8",
      "250-CHUNKING",
      "250-BINARYMIME",
      "250 HELP",
    ]);
  });

  it("EHLO advertises DSN only when enabled", () => {
    const off = replies(transcript("EHLO c.test\r\n").output);
    assert.ok(!off.includes("250-DSN"));
    const on = replies(transcript("EHLO c.test\r\n", { dsn: true }).output);
    assert.ok(on.includes("250-DSN"));
  });

  it("EHLO advertises STARTTLS only with startTls on a plain connection", () => {
    const has = (options: EngineOptions) =>
      replies(transcript("EHLO c.test\r\n", options).output).includes(
        "250-STARTTLS",
      );
    assert.equal(has({}), false);
    assert.equal(has({ startTls: true }), true);
    assert.equal(has({ startTls: true, secure: true }), false);
  });

  it("EHLO advertises SIZE without a number when the size is unlimited", () => {
    const r = transcript("EHLO c.test\r\n", { maxMessageSize: Infinity });
    assert.ok(replies(r.output).includes("250-SIZE"));
  });

  it("EHLO leaves out SMTPUTF8 when it is disabled", () => {
    const r = transcript("EHLO c.test\r\n", { smtputf8: false });
    assert.ok(!replies(r.output).includes("250-SMTPUTF8"));
  });

  it("EHLO's reply is formatReply of the greeting and the capabilities, whatever the greeting, formatted once per server and TLS state", () => {
    for (const secure of [false, true]) {
      const o = resolveEngineOptions({ startTls: true, dsn: true });
      for (
        const greet of [
          "mx greets c.test",
          "",
          "two\nlines",
          "trailing space ",
          "a\x00control",
          "mx greets c.test", // again: from the cache
        ]
      ) {
        assert.equal(
          ehloReply(o, secure, greet),
          formatReply(250, null, [greet, ...capabilities(o, secure)]),
          JSON.stringify({ secure, greet }),
        );
      }
    }
  });

  it("HELO replies with one 250 line and no capabilities", () => {
    const r = transcript("HELO c.test\r\n", { serverName: "mx.test" });
    assert.deepEqual(replies(r.output).slice(1), ["250 mx.test greets c.test"]);
    assert.deepEqual(r.events, ["connect", "helo:HELO c.test"]);
  });

  it("EHLO and HELO without a name reply 501 5.5.4", () => {
    const r = transcript("EHLO\r\nHELO\r\nEHLO \r\n");
    assert.deepEqual(codesAfter(r.output, 1), [
      "501 5.5.4",
      "501 5.5.4",
      "501 5.5.4",
    ]);
    assert.deepEqual(r.events, ["connect"]);
  });

  it("EHLO accepts address literals and rejects bad names", () => {
    const r = transcript(
      "EHLO [192.0.2.1]\r\nEHLO [IPv6:2001:db8::1]\r\nEHLO [300.1.1.1]\r\nEHLO a b\r\nEHLO a<b\r\n",
    );
    assert.deepEqual(codesAfter(r.output, 1), [
      "250",
      "250",
      "501 5.5.4",
      "501 5.5.4",
      "501 5.5.4",
    ]);
    assert.deepEqual(r.events, [
      "connect",
      "helo:EHLO [192.0.2.1]",
      "helo:EHLO [IPv6:2001:db8::1]",
    ]);
  });

  it("EHLO accepts a UTF-8 name when SMTPUTF8 is on", () => {
    const r = transcript("EHLO bücher.test\r\n");
    assert.deepEqual(r.events, ["connect", "helo:EHLO bücher.test"]);
    const off = transcript("EHLO bücher.test\r\n", { smtputf8: false });
    assert.deepEqual(codesAfter(off.output, 1), ["501 5.5.4"]);
  });

  it("a rejected EHLO leaves the session without a greeting", () => {
    const r = transcript(
      "EHLO bad.test\r\nMAIL FROM:<a@b.test>\r\n",
      {},
      (ev) =>
        ev.type === "helo" ? new SmtpError(550, "5.7.1", "Go away") : undefined,
    );
    assert.deepEqual(codesAfter(r.output, 1), ["550 5.7.1", "503 5.5.1"]);
  });

  it("EHLO and HELO reset the transaction with a reset event", () => {
    const r = transcript(
      EHLO + "MAIL FROM:<a@b.test>\r\nEHLO c.test\r\nRCPT TO:<x@y.test>\r\n" +
        "MAIL FROM:<a@b.test>\r\nHELO c.test\r\nRCPT TO:<x@y.test>\r\n",
    );
    assert.deepEqual(r.events, [
      "connect",
      "helo:EHLO c.test",
      "mail:<a@b.test>",
      "reset",
      "helo:EHLO c.test",
      "mail:<a@b.test>",
      "reset",
      "helo:HELO c.test",
    ]);
    assert.deepEqual(codesAfter(r.output, 3), [
      "250",
      "503 5.5.1",
      "250 2.1.0",
      "250",
      "503 5.5.1",
    ]);
  });

  it("EHLO without a transaction gives no reset event", () => {
    const r = transcript("EHLO c.test\r\nEHLO c.test\r\n");
    assert.deepEqual(r.events, [
      "connect",
      "helo:EHLO c.test",
      "helo:EHLO c.test",
    ]);
  });

  it("the engine remembers the EHLO name and ESMTP", () => {
    const seen: [string | null, boolean][] = [];
    transcript(
      "HELO h.test\r\nEHLO e.test\r\nMAIL FROM:<>\r\n",
      {},
      (ev, e) => {
        if (ev.type === "mail") seen.push([e.heloName, e.esmtp]);
      },
    );
    assert.deepEqual(seen[0], ["e.test", true]);
  });

  it("verbs are case-insensitive", () => {
    const r = transcript(
      "ehlo c.test\r\nMail From:<a@b.test>\r\nrcpt to:<x@y.test>\r\ndata\r\nx\r\n.\r\nnoop\r\nRsEt\r\nquit\r\n",
    );
    assert.deepEqual(codes(r.output), [
      ...TX_CODES,
      "250 2.0.0",
      "250 2.0.0",
      "250 2.0.0",
      "221 2.0.0",
    ]);
    assert.deepEqual(r.messages, ["x\r\n"]);
  });

  it("a verb is a whole word: followed by a space or the line's end", () => {
    const r = transcript(
      "NOOPX\r\nnoop\r\nNOOP \r\nMAILFROM:<a@b.test>\r\nSTARTTLSX\r\n" +
        "STAR\r\nHEL\r\nQUITE\r\nNOOP\tx\r\nnoop \xff\r\nrset\r\n",
    );
    assert.deepEqual(codesAfter(r.output, 1), [
      "500 5.5.1",
      "250 2.0.0",
      "250 2.0.0",
      "500 5.5.1",
      "500 5.5.1",
      "500 5.5.1",
      "500 5.5.1",
      "500 5.5.1",
      "501 5.5.2",
      "250 2.0.0",
      "250 2.0.0",
    ]);
  });

  it("an argument with a bad byte is refused after a known verb too", () => {
    const r = run([
      bytes("EHLO c.test\r\n"),
      Uint8Array.of(...bytes("NOOP "), 0xff, 13, 10),
      Uint8Array.of(...bytes("MAIL FROM:<a@b.test>"), 1, 13, 10),
      Uint8Array.of(...bytes("mAiL FROM:<a@b.test> "), 0xc3, 0xa9, 13, 10),
      Uint8Array.of(...bytes("MAIL"), 0xff, 13, 10),
    ]);
    assert.deepEqual(codesAfter(r.output, 2), [
      "501 5.5.2",
      "501 5.5.2",
      "501 5.5.4",
      "501 5.5.2",
    ]);
  });
});

describe("engine: other commands", () => {
  it("NOOP replies 250 2.0.0, with or without an argument", () => {
    const r = transcript("NOOP\r\nNOOP hello\r\n");
    assert.deepEqual(codesAfter(r.output, 1), ["250 2.0.0", "250 2.0.0"]);
  });

  it("RSET replies 250 and drops the transaction with a reset event", () => {
    const r = transcript(
      EHLO + "MAIL FROM:<a@b.test>\r\nRSET\r\nRCPT TO:<x@y.test>\r\nRSET\r\n",
    );
    assert.deepEqual(codesAfter(r.output, 3), [
      "250 2.0.0",
      "503 5.5.1",
      "250 2.0.0",
    ]);
    assert.deepEqual(r.events.slice(2), ["mail:<a@b.test>", "reset"]);
  });

  it("RSET, QUIT and DATA with an argument reply 501 5.5.4", () => {
    const r = transcript(
      TX.replace("DATA", "DATA now") + "RSET all\r\nQUIT now\r\nNOOP\r\n",
    );
    assert.deepEqual(codesAfter(r.output, 4), [
      "501 5.5.4",
      "501 5.5.4",
      "501 5.5.4",
      "250 2.0.0",
    ]);
    assert.equal(r.closed, null);
  });

  it("QUIT replies 221 2.0.0 and closes with reason quit", () => {
    const r = transcript("QUIT\r\nNOOP\r\n", { serverName: "mx.test" });
    assert.deepEqual(replies(r.output).slice(1), ["221 2.0.0 mx.test Bye"]);
    assert.equal(r.closed, "quit");
  });

  it("QUIT in a transaction gives a reset event", () => {
    const r = transcript(EHLO + "MAIL FROM:<a@b.test>\r\nQUIT\r\n");
    assert.deepEqual(r.events.slice(-1), ["reset"]);
    assert.equal(r.closed, "quit");
  });

  it("VRFY replies 252 2.5.0, and 501 without an argument", () => {
    const r = transcript("VRFY someone\r\nVRFY\r\nVRFY  \r\n");
    assert.deepEqual(codesAfter(r.output, 1), [
      "252 2.5.0",
      "501 5.5.4",
      "501 5.5.4",
    ]);
  });

  it("HELP replies with a multi-line 214", () => {
    const r = transcript("HELP\r\nHELP MAIL\r\n");
    const lines = replies(r.output).slice(1);
    assert.equal(lines.length, 4);
    assert.match(lines[0], /^214-2\.0\.0 Commands: EHLO HELO MAIL/);
    assert.equal(lines[1], "214 2.0.0 End of HELP info");
    assert.ok(!lines[0].includes("STARTTLS"));
    const tls = replies(transcript("HELP\r\n", { startTls: true }).output);
    assert.ok(tls[1].includes("STARTTLS"));
  });

  it("HELP lists only what is available now, as EHLO does", () => {
    const auth = { authMechanisms: ["PLAIN"] as const };
    // AUTH configured, plaintext: neither EHLO nor HELP offers it.
    const plain = replies(
      transcript("HELP\r\n", { ...auth, startTls: true }).output,
    );
    assert.ok(plain[1].includes("STARTTLS"));
    assert.ok(!plain[1].includes("AUTH"), plain[1]);
    // Over TLS: AUTH is offered, STARTTLS no longer.
    const secure = replies(
      transcript("HELP\r\n", { ...auth, startTls: true, secure: true }).output,
    );
    assert.ok(secure[1].includes(" AUTH"), secure[1]);
    assert.ok(!secure[1].includes("STARTTLS"), secure[1]);
    // Plaintext AUTH allowed: listed.
    const insecure = replies(
      transcript("HELP\r\n", { ...auth, allowInsecureAuth: true }).output,
    );
    assert.ok(insecure[1].includes(" AUTH"), insecure[1]);
  });

  it("EXPN and other unimplemented commands reply 502 5.5.1", () => {
    const r = transcript("EXPN list\r\nTURN\r\nETRN x\r\nAUTH PLAIN\r\n");
    assert.deepEqual(codesAfter(r.output, 1), [
      "502 5.5.1",
      "502 5.5.1",
      "502 5.5.1",
      "502 5.5.1",
    ]);
  });

  it("an unknown command replies 500 5.5.1", () => {
    const r = transcript("FOO bar\r\nMAILFROM:<a@b>\r\n");
    assert.deepEqual(codesAfter(r.output, 1), ["500 5.5.1", "500 5.5.1"]);
  });

  it("an empty line replies 500 5.5.2", () => {
    const r = transcript("\r\nNOOP\r\n");
    assert.deepEqual(codesAfter(r.output, 1), ["500 5.5.2", "250 2.0.0"]);
  });

  it("traceCommands gives a command event for each line", () => {
    const r = transcript("NOOP\r\nfoo bar\r\n", { traceCommands: true });
    assert.deepEqual(r.events, ["connect", "command:NOOP", "command:foo bar"]);
    const raw = r.raw.filter((e) => e.type === "command");
    assert.deepEqual(raw[1], { type: "command", verb: "FOO", line: "foo bar" });
  });

  it("every reply but the greeting and EHLO/HELO has an enhanced code", () => {
    const r = transcript(
      "NOOP\r\nVRFY x\r\nHELP\r\nEXPN x\r\nFOO\r\n\r\nMAIL FROM:<a@b>\r\n" +
        "HELO c\r\nEHLO c\r\nMAIL FROM:<a@b>\r\nMAIL FROM:<a@b>\r\n" +
        "RCPT TO:<c@d>\r\nRCPT TO:<bad>\r\nDATA\r\nx\r\n.\r\nDATA\r\n" +
        "RSET x\r\nRSET\r\nSTARTTLS\r\nQUIT\r\n",
      { maxBadCommands: 100 },
    );
    const lines = replies(r.output);
    let checked = 0;
    for (const line of lines) {
      if (line.startsWith("220 ") || line.startsWith("250-")) continue;
      if (/^250 (localhost greets|HELP)/.test(line)) continue;
      assert.match(line, /^[2-5]\d\d[ -][245]\.\d{1,3}\.\d{1,3} /, line);
      checked++;
    }
    assert.equal(checked, 19);
  });
});

describe("engine: MAIL", () => {
  it("MAIL before EHLO replies 503 5.5.1", () => {
    const r = transcript("MAIL FROM:<a@b.test>\r\n");
    assert.deepEqual(codesAfter(r.output, 1), ["503 5.5.1"]);
  });

  it("MAIL without FROM: replies 501 5.5.4", () => {
    const r = transcript(EHLO + "MAIL\r\nMAIL <a@b.test>\r\nMAIL TO:<a@b>\r\n");
    assert.deepEqual(codesAfter(r.output, 2), [
      "501 5.5.4",
      "501 5.5.4",
      "501 5.5.4",
    ]);
  });

  it("MAIL with a bad address replies 501 5.1.7", () => {
    const r = transcript(
      EHLO +
        "MAIL FROM:a@b.test\r\nMAIL FROM:<a@b.test\r\nMAIL FROM:<a@-b>\r\n" +
        "MAIL FROM:<postmaster>\r\nMAIL FROM:<a b@c>\r\nMAIL FROM:<@b.test>\r\n",
    );
    assert.deepEqual(
      codesAfter(r.output, 2),
      Array(6).fill("501 5.1.7"),
    );
    assert.equal(r.events.length, 2);
  });

  it("MAIL with a too long address replies 501 5.1.7", () => {
    const r = transcript(EHLO + `MAIL FROM:<${"a".repeat(65)}@b.test>\r\n`);
    assert.deepEqual(codesAfter(r.output, 2), ["501 5.1.7"]);
  });

  it("MAIL accepts the null path and a space after FROM:", () => {
    const r = transcript(
      EHLO + "MAIL FROM:<>\r\nRSET\r\nMAIL FROM: <a@b.test>\r\n",
    );
    assert.deepEqual(codesAfter(r.output, 2), [
      "250 2.1.0",
      "250 2.0.0",
      "250 2.1.0",
    ]);
    assert.deepEqual(r.events.filter((e) => e.startsWith("mail:")), [
      "mail:<>",
      "mail:<a@b.test>",
    ]);
  });

  it("a second MAIL in a transaction replies 503 5.5.1", () => {
    const r = transcript(EHLO + "MAIL FROM:<a@b.test>\r\nMAIL FROM:<c@d>\r\n");
    assert.deepEqual(codesAfter(r.output, 2), ["250 2.1.0", "503 5.5.1"]);
  });

  it("a rejected MAIL starts no transaction", () => {
    const r = transcript(
      EHLO +
        "MAIL FROM:<spam@b.test>\r\nRCPT TO:<x@y.test>\r\nMAIL FROM:<a@b>\r\n",
      {},
      rejectAddress("spam@b.test", new SmtpError(550, "5.7.1", "No")),
    );
    assert.deepEqual(codesAfter(r.output, 2), [
      "550 5.7.1",
      "503 5.5.1",
      "250 2.1.0",
    ]);
  });

  it("the engine's envelope holds the sender after MAIL", () => {
    const froms: string[] = [];
    transcript(
      EHLO + "MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y>\r\n",
      {},
      (ev, e) => {
        if (ev.type === "rcpt") froms.push(e.envelope.from!.address);
      },
    );
    assert.equal(froms[0], "a@b.test");
  });

  it("an unknown MAIL parameter replies 555 5.5.4", () => {
    const r = transcript(EHLO + "MAIL FROM:<a@b.test> FOO=bar\r\n");
    assert.deepEqual(codesAfter(r.output, 2), ["555 5.5.4"]);
    assert.equal(r.events.length, 2);
  });

  it("MAIL parameters after HELO reply 555 5.5.4", () => {
    const r = transcript(
      "HELO c.test\r\nMAIL FROM:<a@b.test> BODY=8BITMIME\r\nMAIL FROM:<a@b.test> SIZE=10\r\n",
    );
    assert.deepEqual(codesAfter(r.output, 2), ["555 5.5.4", "555 5.5.4"]);
  });

  it("bad parameter syntax and duplicates reply 501 5.5.4", () => {
    const r = transcript(
      EHLO +
        "MAIL FROM:<a@b.test>SIZE=1\r\nMAIL FROM:<a@b.test> SIZE=\r\n" +
        "MAIL FROM:<a@b.test> SIZE=1 SIZE=2\r\nMAIL FROM:<a@b.test> =1\r\n",
    );
    assert.deepEqual(codesAfter(r.output, 2), Array(4).fill("501 5.5.4"));
  });

  it("SIZE within the limit is accepted and handed over", () => {
    const r = transcript(EHLO + "MAIL FROM:<a@b.test> size=1000\r\n", {
      maxMessageSize: 1000,
    });
    assert.deepEqual(codesAfter(r.output, 2), ["250 2.1.0"]);
    assert.equal(mailParams(r.raw)[0].size, 1000);
    assert.deepEqual(mailParams(r.raw)[0].params, { SIZE: "1000" });
  });

  it("SIZE over the limit replies 552 5.3.4 at MAIL", () => {
    const r = transcript(EHLO + "MAIL FROM:<a@b.test> SIZE=1001\r\n", {
      maxMessageSize: 1000,
    });
    assert.deepEqual(codesAfter(r.output, 2), ["552 5.3.4"]);
    assert.equal(r.events.length, 2);
  });

  it("SIZE that is not a number replies 501 5.5.4", () => {
    const r = transcript(
      EHLO +
        "MAIL FROM:<a@b> SIZE=abc\r\nMAIL FROM:<a@b> SIZE=-1\r\nMAIL FROM:<a@b> SIZE\r\n",
    );
    assert.deepEqual(codesAfter(r.output, 2), Array(3).fill("501 5.5.4"));
  });

  it("BODY=7BIT and BODY=8BITMIME are accepted, other values 501", () => {
    const r = transcript(
      EHLO +
        "MAIL FROM:<a@b> BODY=7BIT\r\nRSET\r\nMAIL FROM:<a@b> body=8bitmime\r\nRSET\r\n" +
        "MAIL FROM:<a@b> BODY=foo\r\nMAIL FROM:<a@b> BODY=BINARY\r\n",
    );
    assert.deepEqual(codesAfter(r.output, 2), [
      "250 2.1.0",
      "250 2.0.0",
      "250 2.1.0",
      "250 2.0.0",
      "501 5.5.4",
      "501 5.5.4",
    ]);
    assert.deepEqual(mailParams(r.raw).map((p) => p.body), [
      "7BIT",
      "8BITMIME",
    ]);
  });

  it("a UTF-8 sender without SMTPUTF8 replies 553 5.6.7", () => {
    const r = transcript(EHLO + "MAIL FROM:<jürgen@b.test>\r\n");
    assert.deepEqual(codesAfter(r.output, 2), ["553 5.6.7"]);
    assert.equal(r.events.length, 2);
  });

  it("a UTF-8 sender with SMTPUTF8 is accepted", () => {
    const r = transcript(EHLO + "MAIL FROM:<jürgen@bücher.test> SMTPUTF8\r\n");
    assert.deepEqual(codesAfter(r.output, 2), ["250 2.1.0"]);
    assert.deepEqual(r.events.slice(2), [
      'mail:<jürgen@bücher.test> {"SMTPUTF8":true}',
    ]);
    assert.equal(mailParams(r.raw)[0].smtputf8, true);
  });

  it("SMTPUTF8 with a value replies 501, and 555 when disabled", () => {
    const r = transcript(EHLO + "MAIL FROM:<a@b> SMTPUTF8=yes\r\n");
    assert.deepEqual(codesAfter(r.output, 2), ["501 5.5.4"]);
    const off = transcript(EHLO + "MAIL FROM:<a@b> SMTPUTF8\r\n", {
      smtputf8: false,
    });
    assert.deepEqual(codesAfter(off.output, 2), ["555 5.5.4"]);
  });

  it("DSN parameters RET and ENVID are decoded only with dsn enabled", () => {
    const line = "MAIL FROM:<a@b.test> RET=hdrs ENVID=QQ+2B1+3Dx\r\n";
    const on = transcript(EHLO + line, { dsn: true });
    assert.deepEqual(codesAfter(on.output, 2), ["250 2.1.0"]);
    const p = mailParams(on.raw)[0];
    assert.equal(p.ret, "HDRS");
    assert.equal(p.envid, "QQ+1=x");
    assert.deepEqual(p.params, { RET: "hdrs", ENVID: "QQ+2B1+3Dx" });
    const off = transcript(EHLO + line);
    assert.deepEqual(codesAfter(off.output, 2), ["555 5.5.4"]);
    assert.equal(off.events.length, 2);
  });

  it("bad RET and ENVID values reply 501 5.5.4", () => {
    const r = transcript(
      EHLO +
        "MAIL FROM:<a@b> RET=ALL\r\nMAIL FROM:<a@b> ENVID=a+2g\r\nMAIL FROM:<a@b> RET\r\n",
      { dsn: true },
    );
    assert.deepEqual(codesAfter(r.output, 2), Array(3).fill("501 5.5.4"));
  });
});

describe("engine: RCPT", () => {
  const MAIL = EHLO + "MAIL FROM:<a@b.test>\r\n";

  it("RCPT before MAIL replies 503 5.5.1", () => {
    const r = transcript(EHLO + "RCPT TO:<x@y.test>\r\n");
    assert.deepEqual(codesAfter(r.output, 2), ["503 5.5.1"]);
  });

  it("RCPT without TO: replies 501 5.5.4", () => {
    const r = transcript(
      MAIL + "RCPT <x@y.test>\r\nRCPT\r\nRCPT FROM:<x@y>\r\n",
    );
    assert.deepEqual(codesAfter(r.output, 3), Array(3).fill("501 5.5.4"));
  });

  it("RCPT with a bad address replies 501 5.1.3", () => {
    const r = transcript(
      MAIL +
        "RCPT TO:<>\r\nRCPT TO:x@y.test\r\nRCPT TO:<x@y-.test>\r\nRCPT TO:<x@[1.2.3]>\r\n" +
        `RCPT TO:<x@${"a".repeat(250)}.test>\r\n`,
    );
    assert.deepEqual(codesAfter(r.output, 3), Array(5).fill("501 5.1.3"));
    assert.equal(r.events.length, 3);
  });

  it("RCPT accepts <postmaster> in any case", () => {
    const r = transcript(
      MAIL + "RCPT TO:<postmaster>\r\nRCPT TO:<PostMaster>\r\n",
    );
    assert.deepEqual(codesAfter(r.output, 3), ["250 2.1.5", "250 2.1.5"]);
    assert.deepEqual(r.events.slice(3), [
      "rcpt:<postmaster>",
      "rcpt:<PostMaster>",
    ]);
  });

  it("RCPT with a source route keeps only the mailbox", () => {
    const r = transcript(MAIL + "RCPT TO:<@relay.test,@r2.test:x@y.test>\r\n");
    assert.deepEqual(r.events.slice(3), ["rcpt:<x@y.test>"]);
  });

  it("a UTF-8 recipient needs SMTPUTF8 on MAIL", () => {
    const r = transcript(MAIL + "RCPT TO:<ñ@y.test>\r\n");
    assert.deepEqual(codesAfter(r.output, 3), ["553 5.6.7"]);
    const ok = transcript(
      EHLO + "MAIL FROM:<a@b.test> SMTPUTF8\r\nRCPT TO:<ñ@ÿ.test>\r\n",
    );
    assert.deepEqual(codesAfter(ok.output, 3), ["250 2.1.5"]);
    assert.deepEqual(ok.events.slice(3), ["rcpt:<ñ@ÿ.test>"]);
  });

  it("an unknown RCPT parameter replies 555 5.5.4", () => {
    const r = transcript(MAIL + "RCPT TO:<x@y.test> FOO\r\n");
    assert.deepEqual(codesAfter(r.output, 3), ["555 5.5.4"]);
  });

  it("DSN parameters NOTIFY and ORCPT are decoded only with dsn enabled", () => {
    const line =
      "RCPT TO:<x@y.test> NOTIFY=success,FAILURE ORCPT=rfc822;x+40y.test\r\n";
    const on = transcript(MAIL + line, { dsn: true });
    assert.deepEqual(codesAfter(on.output, 3), ["250 2.1.5"]);
    const p = rcptParams(on.raw)[0];
    assert.deepEqual(p.notify, ["SUCCESS", "FAILURE"]);
    assert.deepEqual(p.orcpt, { type: "rfc822", address: "x@y.test" });
    const off = transcript(MAIL + line);
    assert.deepEqual(codesAfter(off.output, 3), ["555 5.5.4"]);
    assert.equal(off.events.length, 3);
  });

  it("bad NOTIFY and ORCPT values reply 501 5.5.4", () => {
    const r = transcript(
      MAIL +
        "RCPT TO:<x@y> NOTIFY=NEVER,SUCCESS\r\nRCPT TO:<x@y> NOTIFY=SOMETIMES\r\n" +
        "RCPT TO:<x@y> NOTIFY=DELAY,DELAY\r\nRCPT TO:<x@y> NOTIFY\r\n" +
        "RCPT TO:<x@y> ORCPT=x@y\r\nRCPT TO:<x@y> ORCPT=rfc822;a+zz\r\n",
      { dsn: true },
    );
    assert.deepEqual(codesAfter(r.output, 3), Array(6).fill("501 5.5.4"));
  });

  it("RCPT parameters after HELO reply 555 5.5.4", () => {
    const r = transcript(
      "HELO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test> NOTIFY=NEVER\r\n",
      { dsn: true },
    );
    assert.deepEqual(codesAfter(r.output, 3), ["555 5.5.4"]);
    assert.equal(r.events.length, 3);
  });

  it("the engine's envelope lists the accepted recipients", () => {
    const seen: string[][] = [];
    transcript(
      MAIL +
        "RCPT TO:<x@y>\r\nRCPT TO:<no@y>\r\nRCPT TO:<z@y>\r\nDATA\r\n.\r\n",
      {},
      (ev, e) => {
        if (ev.type === "rcpt" && ev.to.address === "no@y") {
          return new SmtpError(550, "5.1.1", "No");
        }
        if (ev.type === "message-end") {
          seen.push(e.envelope.recipients.map((r) => r.mailbox.address));
        }
      },
    );
    assert.deepEqual(seen[0], ["x@y", "z@y"]);
  });
});

describe("engine: DATA", () => {
  it("DATA without MAIL or RCPT replies 503 5.5.1", () => {
    const r = transcript(EHLO + "DATA\r\nMAIL FROM:<a@b>\r\nDATA\r\n");
    assert.deepEqual(codesAfter(r.output, 2), [
      "503 5.5.1",
      "250 2.1.0",
      "503 5.5.1",
    ]);
  });

  it("DATA after every RCPT was rejected replies 554 5.5.1", () => {
    const rejected = transcript(
      EHLO + "MAIL FROM:<a@b>\r\nRCPT TO:<no@y>\r\nDATA\r\nNOOP\r\n",
      {},
      rejectAddress("no@y", new SmtpError(550, "5.1.1", "No")),
    );
    assert.deepEqual(codesAfter(rejected.output, 3), [
      "550 5.1.1",
      "554 5.5.1",
      "250 2.0.0",
    ]);
  });

  it("body events are views handed out in order", () => {
    const r = transcript(TX + "line 1\r\nline 2\r\n\r\nline 4\r\n.\r\n");
    assert.deepEqual(r.events.slice(4), [
      "message-start",
      "data:line 1\r\nline 2\r\n\r\nline 4\r\n",
      "message-end:26",
    ]);
    // Whole: one chunk, one data event that is a view of the received bytes.
    const input = bytes(TX + "abc\r\n.\r\n");
    const engine = new SmtpEngine();
    engine.receive(input, 0);
    const datas: Uint8Array[] = [];
    for (let ev = engine.nextEvent(); ev.type !== "need-data";) {
      if (ev.type === "data") datas.push(ev.chunk);
      if (engine.pendingDecision !== null) engine.accept();
      ev = engine.nextEvent();
    }
    assert.equal(datas.length, 1);
    assert.equal(datas[0].buffer, input.buffer);
  });

  it("dot-unstuffing removes the first dot of a line", () => {
    const r = transcript(TX + "..x\r\n..\r\n...\r\na.b\r\n. \r\n.\r\n");
    assert.deepEqual(r.messages, [".x\r\n.\r\n..\r\na.b\r\n \r\n"]);
    assert.deepEqual(r.events.at(-1), "message-end:19");
  });

  it("dot-stuffed lines in a chunk go out as one data event", () => {
    const input = bytes(TX + "..a\r\nb\r\n..\r\n...c\r\nd\r\n.\r\n");
    const engine = new SmtpEngine();
    engine.receive(input, 0);
    const datas: string[] = [];
    for (let ev = engine.nextEvent(); ev.type !== "need-data";) {
      if (ev.type === "data") datas.push(dec.decode(ev.chunk));
      if (engine.pendingDecision !== null) engine.accept();
      ev = engine.nextEvent();
    }
    assert.deepEqual(datas, [".a\r\nb\r\n.\r\n..c\r\nd\r\n"]);
  });

  it("joining dot-stuffed lines allocates at most the chunk's length once", () => {
    // Each bare LF ends a data event: a new array the size of the rest of
    // the chunk at each would allocate quadratically in the chunk's length.
    const input = bytes(TX + "a\r\n..b\n".repeat(2000) + "\r\n.\r\n");
    const engine = new SmtpEngine({ bareLineEnding: "normalize" });
    engine.receive(input, 0);
    const arrays = new Set<ArrayBufferLike>();
    let events = 0;
    for (let ev = engine.nextEvent(); ev.type !== "need-data";) {
      // (Not the CRLF put in place of each bare LF: two bytes of their own.)
      if (
        ev.type === "data" && ev.chunk.buffer !== input.buffer &&
        ev.chunk.buffer.byteLength > 2
      ) arrays.add(ev.chunk.buffer);
      if (ev.type === "data") events++;
      if (engine.pendingDecision !== null) engine.accept();
      ev = engine.nextEvent();
    }
    assert.ok(events >= 2000, `${events} data events`);
    let allocated = 0;
    for (const a of arrays) allocated += a.byteLength;
    assert.ok(allocated <= input.length, `${allocated} bytes allocated`);
  });

  it("joined dot-stuffed lines keep the bare line ending and size rules", () => {
    const normalized = transcript(TX + "..a\r\nb\nc\r\n..d\r\re\r\n.\r\n", {
      bareLineEnding: "normalize",
    });
    assert.deepEqual(normalized.messages, [".a\r\nb\r\nc\r\n.d\r\n\r\ne\r\n"]);
    const refused = transcript(TX + "..a\r\n..b\rc\r\n.\r\nNOOP\r\n");
    assert.deepEqual(codesAfter(refused.output, 5), ["550 5.6.0", "250 2.0.0"]);
    assert.deepEqual(refused.events.slice(4, 6), [
      "message-start",
      "data:.a\r\n.b",
    ]);
    const large = transcript(TX + "..ab\r\n..cd\r\n..ef\r\n.\r\n", {
      maxMessageSize: 9,
    });
    assert.deepEqual(large.events.slice(4, 7), [
      "message-start",
      "data:.ab\r\n.cd\r",
      "message-abort:552 5.3.4",
    ]);
  });

  it("an empty body is delivered", () => {
    const r = transcript(TX + ".\r\nNOOP\r\n");
    assert.deepEqual(r.messages, [""]);
    assert.deepEqual(r.events.slice(-2), ["message-start", "message-end:0"]);
    assert.deepEqual(codesAfter(r.output, 5), ["250 2.0.0", "250 2.0.0"]);
  });

  it("the message ends only at CRLF.CRLF", () => {
    const r = transcript(TX + "a\r\n.x\r\n .\r\n.\r\r\n.\r\n");
    assert.equal(r.messages.length, 0);
    assert.deepEqual(r.events.at(-1), "message-abort:550 5.6.0");
    const ok = transcript(TX + "a.\r\n.\r\nb\r\n");
    assert.deepEqual(ok.messages, ["a.\r\n"]);
    assert.deepEqual(codesAfter(ok.output, 5), ["250 2.0.0", "500 5.5.1"]);
  });

  it("commands in a body are body text", () => {
    const r = transcript(TX + "QUIT\r\nRSET\r\n.\r\n");
    assert.deepEqual(r.messages, ["QUIT\r\nRSET\r\n"]);
    assert.equal(r.closed, null);
  });

  it("the body is handed out byte for byte (8-bit, NUL)", () => {
    const head = bytes(TX);
    const body = new Uint8Array([0xff, 0x00, 0x80, 0x7f, 13, 10]);
    const input = new Uint8Array([...head, ...body, 46, 13, 10]);
    const r = transcript(input);
    assert.equal(r.messages.length, 1);
    assert.deepEqual(r.events.at(-1), "message-end:6");
  });

  it("a line end or control byte at any offset of a long run is found where it is", () => {
    // The body scan tests several bytes at once: each special byte (or
    // pair) at every offset of a run long enough for that, with the body
    // at each alignment in its buffer, among text bytes near the line-end
    // bytes (0x0e just above CR) and 8-bit ones.
    const specials: [string, string | null, string][] = [
      // [sent, delivered with bareLineEnding "reject" (null: refused), with "normalize"]
      ["\r\n", "\r\n", "\r\n"],
      ["\r\n..z", "\r\n.z", "\r\n.z"],
      ["\r\n\r\n", "\r\n\r\n", "\r\n\r\n"],
      ["\t\0\x0c", "\t\0\x0c", "\t\0\x0c"],
      ["\x0e\r\n\x0e", "\x0e\r\n\x0e", "\x0e\r\n\x0e"],
      ["\r", null, "\r\n"],
      ["\n", null, "\r\n"],
      ["\x01\r", null, "\x01\r\n"],
      ["\x0e\n\r\n", null, "\x0e\r\n\r\n"],
    ];
    const octets = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));
    const head = bytes(TX);
    const tail = "x\x0e".repeat(24) + "\r\n";
    for (const [sent, rejected, normalized] of specials) {
      for (let at = 0; at < 24; at++) {
        const before = "\x80y".repeat(at).slice(0, at);
        const body = octets(before + sent + tail + ".\r\n");
        for (let offset = 0; offset < 4; offset++) {
          const all = new Uint8Array(offset + head.length + body.length);
          all.set(head, offset);
          all.set(body, offset + head.length);
          for (
            const [policy, want] of [
              ["reject", rejected],
              ["normalize", normalized],
            ] as const
          ) {
            const r = run([all.subarray(offset)], { bareLineEnding: policy });
            assert.deepEqual(
              r.messages,
              want === null ? [] : [dec.decode(octets(before + want + tail))],
              `${JSON.stringify(sent)} at ${at}, offset ${offset}, ${policy}`,
            );
          }
        }
      }
    }
  });

  it("a body with a bare LF is refused with 550 5.6.0 after the end", () => {
    const r = transcript(TX + "a\nb\r\n.\r\nNOOP\r\n");
    assert.deepEqual(r.events.slice(4), [
      "message-start",
      "data:a",
      "message-abort:550 5.6.0",
    ]);
    assert.deepEqual(codesAfter(r.output, 5), ["550 5.6.0", "250 2.0.0"]);
    assert.deepEqual(r.messages, []);
  });

  it("a body with a bare CR is refused with 550 5.6.0 after the end", () => {
    const r = transcript(TX + "a\rb\r\n.\r\n");
    assert.deepEqual(codesAfter(r.output, 5), ["550 5.6.0"]);
    assert.deepEqual(r.messages, []);
  });

  it("bareLineEnding normalize turns bare CR and LF into CRLF", () => {
    const r = transcript(TX + "a\nb\rc\r\r\n.\r\n", {
      bareLineEnding: "normalize",
    });
    assert.deepEqual(r.messages, ["a\r\nb\r\nc\r\n\r\n"]);
    assert.deepEqual(r.events.at(-1), "message-end:11");
  });

  it("a refused body ends the transaction and the next one works", () => {
    const r = transcript(
      TX +
        "a\nb\r\n.\r\nRCPT TO:<x@y>\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\nok\r\n.\r\n",
    );
    assert.deepEqual(codesAfter(r.output, 5), [
      "550 5.6.0",
      "503 5.5.1",
      "250 2.1.0",
      "250 2.1.5",
      "354 2.0.0",
      "250 2.0.0",
    ]);
    assert.deepEqual(r.messages, ["ok\r\n"]);
  });

  it("a message rejected at message-end sends the reply and ends the transaction", () => {
    const r = transcript(
      TX + "spam\r\n.\r\nRCPT TO:<x@y>\r\n",
      {},
      (ev) =>
        ev.type === "message-end"
          ? new SmtpError(554, "5.7.1", "Spam")
          : undefined,
    );
    assert.deepEqual(codesAfter(r.output, 5), ["554 5.7.1", "503 5.5.1"]);
    assert.deepEqual(r.messages, []);
  });

  it("commands pipelined after the end of the body are answered", () => {
    const r = transcript(TX + "x\r\n.\r\nQUIT\r\n");
    assert.deepEqual(codesAfter(r.output, 5), ["250 2.0.0", "221 2.0.0"]);
    assert.equal(r.closed, "quit");
  });

  it("the envelope is empty after a delivered message", () => {
    const seen: number[] = [];
    transcript(TX + "x\r\n.\r\nNOOP\r\n", {}, (ev, e) => {
      if (ev.type === "message-end") seen.push(e.envelope.recipients.length);
    });
    assert.equal(seen[0], 1);
    const engine = new SmtpEngine();
    engine.receive(bytes(TX + "x\r\n.\r\n"), 0);
    for (let ev = engine.nextEvent(); ev.type !== "need-data";) {
      if (engine.pendingDecision !== null) engine.accept();
      ev = engine.nextEvent();
    }
    assert.equal(engine.envelope.from, null);
    assert.deepEqual(engine.envelope.recipients, []);
  });
});

describe("engine: control characters in commands", () => {
  it("a bare LF makes one line that is refused with 501", () => {
    const r = transcript(EHLO + "MAIL FROM:<a@b.test>\nRCPT TO:<c@d>\r\n");
    assert.deepEqual(codesAfter(r.output, 2), ["501 5.5.2"]);
    assert.deepEqual(r.events, ["connect", "helo:EHLO c.test"]);
  });

  it("a bare LF does not split pipelined commands", () => {
    const r = transcript(
      EHLO + "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d>\nRCPT TO:<e@f>\r\nDATA\r\n",
    );
    assert.deepEqual(codesAfter(r.output, 2), [
      "250 2.1.0",
      "501 5.5.2",
      "503 5.5.1",
    ]);
    assert.ok(!r.events.some((e) => e.startsWith("rcpt:")));
  });

  it("a bare CR, NUL, TAB or DEL in a command replies 501", () => {
    for (const c of ["\r", "\0", "\t", "\x01", "\x1b", "\x7f"]) {
      const r = transcript(`NOOP a${c}b\r\nRSET${c}\r\n${c}\r\n`);
      assert.deepEqual(
        codesAfter(r.output, 1),
        ["501 5.5.2", "501 5.5.2", "501 5.5.2"],
        JSON.stringify(c),
      );
    }
  });

  it("invalid UTF-8 in a command replies 501 5.5.2", () => {
    const head = bytes(EHLO + "MAIL FROM:<a");
    const tail = bytes("@b.test> SMTPUTF8\r\nNOOP\r\n");
    for (const bad of [[0xff], [0xc3], [0xed, 0xa0, 0x80], [0xc0, 0xaf]]) {
      const r = transcript(new Uint8Array([...head, ...bad, ...tail]));
      assert.deepEqual(codesAfter(r.output, 2), ["501 5.5.2", "250 2.0.0"]);
      assert.equal(r.events.length, 2);
    }
  });

  it("a byte order mark before a verb is not ignored", () => {
    const r = transcript("\uFEFFNOOP\r\n");
    assert.deepEqual(codesAfter(r.output, 1), ["500 5.5.1"]);
  });
});

describe("engine: SMTP smuggling", () => {
  const SMUGGLED = "MAIL FROM:<evil@x.test>\r\nRCPT TO:<v@y.test>\r\nDATA\r\n";
  const FAKE_ENDS = [
    "\n.\n",
    "\n.\r\n",
    "\r\n.\n",
    "\r.\r",
    "\r.\r\n",
    "\r\n.\r",
    "\r\n.\r\r\n",
  ];
  const input = (fake: string) =>
    TX + "Subject: hi\r\n\r\nhello" + fake + SMUGGLED + "evil\r\n.\r\nNOOP\r\n";

  for (const fake of FAKE_ENDS) {
    it(`${JSON.stringify(fake)} does not end the body (reject policy)`, () => {
      const r = transcript(input(fake));
      assert.deepEqual(r.messages, []);
      assert.ok(!r.events.includes("mail:<evil@x.test>"));
      assert.ok(!r.events.includes("rcpt:<v@y.test>"));
      assert.equal(r.events.filter((e) => e === "message-start").length, 1);
      assert.deepEqual(r.events.at(-1), "message-abort:550 5.6.0");
      // 550 only after the real terminator, then the NOOP after it.
      assert.deepEqual(codesAfter(r.output, 5), ["550 5.6.0", "250 2.0.0"]);
    });

    it(`${JSON.stringify(fake)} does not end the body (normalize policy)`, () => {
      const r = transcript(input(fake), { bareLineEnding: "normalize" });
      assert.equal(r.messages.length, 1);
      const body = r.messages[0];
      assert.ok(body.startsWith("Subject: hi\r\n\r\nhello\r\n"));
      assert.ok(body.endsWith(SMUGGLED + "evil\r\n"));
      // Every CR and LF of the delivered body is part of a CRLF.
      assert.doesNotMatch(body, /\r(?!\n)|(?<!\r)\n/);
      assert.ok(!r.events.includes("mail:<evil@x.test>"));
      assert.deepEqual(codesAfter(r.output, 5), ["250 2.0.0", "250 2.0.0"]);
    });
  }

  it("a normalized fake terminator is delivered as body text", () => {
    // A line that starts with a dot and is not ".CRLF" loses that dot
    // (dot-unstuffing, RFC 5321 §4.5.2); the line boundaries come only
    // from real CRLFs, so a bare CR or LF never starts a line.
    const expected: Record<string, string> = {
      "\n.\n": "\r\n.\r\n",
      "\n.\r\n": "\r\n.\r\n",
      "\r\n.\n": "\r\n\r\n",
      "\r.\r": "\r\n.\r\n",
      "\r.\r\n": "\r\n.\r\n",
      "\r\n.\r": "\r\n\r\n",
      "\r\n.\r\r\n": "\r\n\r\n\r\n",
    };
    for (const fake of FAKE_ENDS) {
      const r = transcript(TX + "hello" + fake + "x\r\n.\r\n", {
        bareLineEnding: "normalize",
      });
      assert.deepEqual(
        r.messages,
        ["hello" + expected[fake] + "x\r\n"],
        JSON.stringify(fake),
      );
    }
  });

  it("CRLF NUL . CRLF is an ordinary body line", () => {
    const r = transcript(input("\r\n\0.\r\n"));
    assert.deepEqual(r.messages, [
      "Subject: hi\r\n\r\nhello\r\n\0.\r\n" + SMUGGLED + "evil\r\n",
    ]);
    assert.ok(!r.events.includes("mail:<evil@x.test>"));
    assert.deepEqual(codesAfter(r.output, 5), ["250 2.0.0", "250 2.0.0"]);
  });

  it("smuggled commands split over many chunks produce no events", () => {
    for (const fake of FAKE_ENDS) {
      const text = input(fake);
      // Chunks that end right after the fake terminator.
      const cut = text.indexOf(fake) + fake.length;
      const r = run([bytes(text.slice(0, cut)), bytes(text.slice(cut))]);
      assert.ok(!r.events.includes("mail:<evil@x.test>"), JSON.stringify(fake));
      assert.deepEqual(codesAfter(r.output, 5), ["550 5.6.0", "250 2.0.0"]);
    }
  });
});

describe("engine: command line limit", () => {
  it("a line of 510 octets plus CRLF is accepted", () => {
    const line = "NOOP " + "x".repeat(505);
    assert.equal(line.length, 510);
    const r = transcript(line + "\r\n");
    assert.deepEqual(codesAfter(r.output, 1), ["250 2.0.0"]);
  });

  it("a line of 511 octets plus CRLF replies 500 5.5.2 and the next command works", () => {
    const r = transcript("NOOP " + "x".repeat(506) + "\r\nNOOP\r\n");
    assert.deepEqual(codesAfter(r.output, 1), ["500 5.5.2", "250 2.0.0"]);
  });

  it("maxLineLength sets the limit, CRLF included", () => {
    const ok = transcript("NOOP " + "x".repeat(57) + "\r\n", {
      maxLineLength: 64,
    });
    assert.deepEqual(codesAfter(ok.output, 1), ["250 2.0.0"]);
    const long = transcript("NOOP " + "x".repeat(58) + "\r\nNOOP\r\n", {
      maxLineLength: 64,
    });
    assert.deepEqual(codesAfter(long.output, 1), ["500 5.5.2", "250 2.0.0"]);
  });

  it("a too long line with a CR just before the split still ends at its CRLF", () => {
    const r = transcript("x".repeat(70) + "\r\r\nNOOP\r\n", {
      maxLineLength: 64,
    });
    assert.deepEqual(codesAfter(r.output, 1), ["500 5.5.2", "250 2.0.0"]);
  });

  it("a too long line is discarded without being buffered", () => {
    const line = bytes("MAIL FROM:<" + "a".repeat(100 * 1024) + "@b>\r\n");
    const chunks: Uint8Array[] = [bytes(EHLO)];
    for (let i = 0; i < line.length; i += 1024) {
      chunks.push(line.subarray(i, i + 1024));
    }
    chunks.push(bytes("NOOP\r\n"));
    const r = run(chunks);
    assert.deepEqual(codesAfter(r.output, 2), ["500 5.5.2", "250 2.0.0"]);
    assert.ok(r.maxBuffered < 2 * 1024, `maxBuffered ${r.maxBuffered}`);
    assert.equal(r.events.length, 2);
  });

  it("a 100 KB line fed whole is discarded and the next command works", () => {
    const r = run([
      bytes("NOOP " + "x".repeat(100 * 1024)),
      bytes("\r\nNOOP\r\n"),
    ]);
    assert.deepEqual(codesAfter(r.output, 1), ["500 5.5.2", "250 2.0.0"]);
  });

  it("a long maxLineLength accepts a long command line", () => {
    const line = "NOOP " + "x".repeat(150000) + "\r\n";
    const r = run([bytes(line)], { maxLineLength: 200000 });
    assert.deepEqual(codesAfter(r.output, 1), ["250 2.0.0"]);
  });
});

describe("engine: recipient limit", () => {
  it("the RCPT over maxRecipients gets 452 4.5.3 and the others still deliver", () => {
    const seen: string[][] = [];
    const r = transcript(
      EHLO +
        "MAIL FROM:<a@b>\r\nRCPT TO:<1@y>\r\nRCPT TO:<2@y>\r\nRCPT TO:<3@y>\r\nDATA\r\nhi\r\n.\r\n",
      { maxRecipients: 2 },
      (ev, e) => {
        if (ev.type === "message-end") {
          seen.push(e.envelope.recipients.map((x) => x.mailbox.address));
        }
      },
    );
    assert.deepEqual(codesAfter(r.output, 3), [
      "250 2.1.5",
      "250 2.1.5",
      "452 4.5.3",
      "354 2.0.0",
      "250 2.0.0",
    ]);
    assert.ok(!r.events.includes("rcpt:<3@y>"));
    assert.deepEqual(seen[0], ["1@y", "2@y"]);
    assert.deepEqual(r.messages, ["hi\r\n"]);
  });

  it("the limit counts per transaction", () => {
    const r = transcript(
      EHLO +
        "MAIL FROM:<a@b>\r\nRCPT TO:<1@y>\r\nRSET\r\nMAIL FROM:<a@b>\r\nRCPT TO:<2@y>\r\n",
      { maxRecipients: 1 },
    );
    assert.deepEqual(codesAfter(r.output, 5), ["250 2.1.0", "250 2.1.5"]);
  });
});

describe("engine: message size limit", () => {
  it("a body over maxMessageSize is aborted and refused after the end", () => {
    const r = transcript(
      TX + "0123456789\r\nabcdefghij\r\n.\r\nNOOP\r\n",
      { maxMessageSize: 15 },
    );
    assert.deepEqual(r.events.slice(4), [
      "message-start",
      "data:0123456789\r\nabc",
      "message-abort:552 5.3.4",
    ]);
    assert.deepEqual(codesAfter(r.output, 5), ["552 5.3.4", "250 2.0.0"]);
    assert.deepEqual(r.messages, []);
  });

  it("a body of exactly maxMessageSize is delivered", () => {
    const r = transcript(TX + "0123456789\r\nabc\r\n.\r\n", {
      maxMessageSize: 17,
    });
    assert.deepEqual(r.messages, ["0123456789\r\nabc\r\n"]);
  });

  it("the size counts octets after dot-unstuffing", () => {
    const r = transcript(TX + "..\r\n.\r\n", { maxMessageSize: 3 });
    assert.deepEqual(r.messages, [".\r\n"]);
  });

  it("552 is sent only after the terminator and no byte past the limit is handed out", () => {
    const engine = new SmtpEngine({ maxMessageSize: 100 });
    const out: string[] = [];
    let handed = 0;
    const events: string[] = [];
    const pump = () => {
      for (let ev = engine.nextEvent(); ev.type !== "need-data";) {
        if (ev.type === "data") handed += ev.chunk.length;
        else events.push(ev.type);
        if (engine.pendingDecision !== null) engine.accept();
        ev = engine.nextEvent();
      }
      const o = engine.takeOutput();
      if (o !== null) out.push(new TextDecoder().decode(o));
    };
    pump();
    engine.receive(bytes(TX), 0);
    pump();
    const line = bytes("x".repeat(40) + "\r\n");
    for (let i = 0; i < 100; i++) {
      engine.receive(line, 0);
      pump();
    }
    assert.equal(handed, 100);
    assert.ok(events.includes("message-abort"));
    assert.ok(!out.join("").includes("552"));
    engine.receive(bytes(".\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"), 0);
    pump();
    assert.deepEqual(codes(out.slice(-1)[0]), [
      "552 5.3.4",
      "250 2.1.0",
      "250 2.1.5",
    ]);
    assert.ok(!events.includes("message-end"));
  });
});

describe("engine: bad command limit", () => {
  it("the Nth bad command gets its reply, then 421 4.7.0 and a close", () => {
    const r = transcript("FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n", {
      maxBadCommands: 3,
    });
    assert.deepEqual(codesAfter(r.output, 1), [
      "500 5.5.1",
      "500 5.5.1",
      "500 5.5.1",
      "421 4.7.0",
    ]);
    assert.equal(r.closed, "too-many-errors");
  });

  it("a good command resets the count", () => {
    const r = transcript("FOO\r\nBAR\r\nNOOP\r\nBAZ\r\nQUX\r\nNOOP\r\n", {
      maxBadCommands: 3,
    });
    assert.deepEqual(codesAfter(r.output, 1), [
      "500 5.5.1",
      "500 5.5.1",
      "250 2.0.0",
      "500 5.5.1",
      "500 5.5.1",
      "250 2.0.0",
    ]);
    assert.equal(r.closed, null);
  });

  it("syntax and sequence errors count as bad commands", () => {
    const r = transcript(
      "MAIL FROM:<a@b>\r\nEHLO\r\nRCPT TO:<a@b>\r\nNOOP\r\n",
      { maxBadCommands: 3 },
    );
    assert.deepEqual(codesAfter(r.output, 1), [
      "503 5.5.1",
      "501 5.5.4",
      "503 5.5.1",
      "421 4.7.0",
    ]);
    assert.equal(r.closed, "too-many-errors");
  });
});

describe("engine: options", () => {
  const limits = [
    "maxLineLength",
    "maxRecipients",
    "maxMessageSize",
    "maxBadCommands",
    "idleTimeout",
    "dataTimeout",
  ] as const;

  it("limits that are 0, negative, NaN, fractions or strings throw TypeError", () => {
    for (const name of limits) {
      for (const value of [0, -1, NaN, 1.5, "10", null, -Infinity]) {
        assert.throws(
          () => new SmtpEngine({ [name]: value } as unknown as EngineOptions),
          TypeError,
          `${name}: ${String(value)}`,
        );
      }
    }
  });

  it("Infinity is allowed for maxMessageSize and the timeouts only", () => {
    for (const name of ["maxMessageSize", "idleTimeout", "dataTimeout"]) {
      const e = new SmtpEngine({ [name]: Infinity });
      assert.equal(e.options[name as keyof EngineOptions], Infinity);
    }
    for (const name of ["maxLineLength", "maxRecipients", "maxBadCommands"]) {
      assert.throws(() => new SmtpEngine({ [name]: Infinity }), TypeError);
    }
  });

  it("maxLineLength below 64 throws TypeError", () => {
    assert.throws(() => new SmtpEngine({ maxLineLength: 63 }), TypeError);
    assert.equal(
      new SmtpEngine({ maxLineLength: 64 }).options.maxLineLength,
      64,
    );
  });

  it("other options are validated", () => {
    const bad: Record<string, unknown>[] = [
      { bareLineEnding: "strip" },
      { dsn: "yes" },
      { smtputf8: 1 },
      { startTls: null },
      { secure: "false" },
      { traceCommands: 0 },
      { serverName: "" },
      { serverName: "mx\r\n250 injected" },
      { greeting: 42 },
    ];
    for (const options of bad) {
      assert.throws(
        () => new SmtpEngine(options as EngineOptions),
        TypeError,
        JSON.stringify(options),
      );
    }
  });

  it("defaults apply when options are left out", () => {
    const e = new SmtpEngine();
    assert.equal(e.options.maxLineLength, 512);
    assert.equal(e.options.maxRecipients, 100);
    assert.equal(e.options.bareLineEnding, "reject");
    assert.equal(e.options.dsn, false);
    assert.equal(e.options.smtputf8, true);
  });
});

describe("engine: pipelining", () => {
  it("a batch in one chunk is answered in order and delivers to the accepted recipients", () => {
    const seen: string[][] = [];
    const input = EHLO +
      "MAIL FROM:<a@b.test>\r\nRCPT TO:<ok1@y.test>\r\nRCPT TO:<no@y.test>\r\n" +
      "RCPT TO:<ok2@y.test>\r\nDATA\r\nbody\r\n.\r\nQUIT\r\n";
    const r = transcript(input, {}, (ev, e) => {
      if (ev.type === "rcpt" && ev.to.address === "no@y.test") {
        return new SmtpError(550, "5.1.1", "No such user");
      }
      if (ev.type === "message-end") {
        seen.push(e.envelope.recipients.map((x) => x.mailbox.address));
      }
    });
    assert.deepEqual(codesAfter(r.output, 2), [
      "250 2.1.0",
      "250 2.1.5",
      "550 5.1.1",
      "250 2.1.5",
      "354 2.0.0",
      "250 2.0.0",
      "221 2.0.0",
    ]);
    assert.deepEqual(seen[0], ["ok1@y.test", "ok2@y.test"]);
    assert.deepEqual(r.messages, ["body\r\n"]);
    // Whole feeding: all replies come out of one pass.
    const whole = run([bytes(input)]);
    assert.equal(codes(whole.output).length, 9);
  });

  it("a fixed reply queued alone, then with a reply after it, comes out whole", () => {
    const out = (e: SmtpEngine) => new TextDecoder().decode(e.takeOutput()!);
    const a = new SmtpEngine();
    a.receive(bytes(EHLO + "MAIL FROM:<a@b.test>\r\n"), 0);
    a.nextEvent(); // connect
    a.accept();
    a.nextEvent(); // helo
    a.accept();
    out(a);
    assert.equal(a.nextEvent().type, "mail");
    a.accept();
    const first = a.takeOutput()!;
    assert.equal(new TextDecoder().decode(first), "250 2.1.0 Sender OK\r\n");
    // The next reply is queued after the fixed one, not in its place.
    a.receive(bytes("RCPT TO:<c@d.test>\r\nNOOP\r\n"), 0);
    assert.equal(a.nextEvent().type, "rcpt");
    a.accept();
    assert.equal(a.hasOutput, true);
    assert.equal(a.nextEvent().type, "need-data");
    assert.equal(
      out(a),
      "250 2.1.5 Recipient OK\r\n250 2.0.0 OK\r\n",
    );
    assert.equal(a.takeOutput(), null);
    assert.equal(a.hasOutput, false);
  });

  it("the engine reads no further while a decision is pending", () => {
    const engine = new SmtpEngine();
    engine.receive(bytes(EHLO + "MAIL FROM:<a@b>\r\nNOOP\r\n"), 0);
    assert.equal(engine.nextEvent().type, "connect");
    engine.accept();
    assert.equal(engine.nextEvent().type, "helo");
    assert.equal(engine.pendingDecision, "helo");
    assert.throws(() => engine.nextEvent(), Error);
    engine.accept();
    assert.equal(engine.nextEvent().type, "mail");
    assert.ok(engine.bufferedBytes === "NOOP\r\n".length);
    engine.accept();
    assert.equal(engine.nextEvent().type, "need-data");
    assert.deepEqual(codes(new TextDecoder().decode(engine.takeOutput()!)), [
      "220",
      "250",
      "250 2.1.0",
      "250 2.0.0",
    ]);
  });

  it("accept() and reject() without a pending decision throw", () => {
    const engine = new SmtpEngine();
    assert.throws(() => engine.accept(), Error);
    assert.throws(
      () => engine.reject(new SmtpError(550, "5.0.0", "x")),
      Error,
    );
  });

  it("a reused receive buffer is scanned afresh", () => {
    // A driver may read into one Uint8Array and hand the same object in
    // again once the engine asked for more data.
    const engine = new SmtpEngine();
    const answer = () => untilNeedData(engine);
    engine.receive(bytes(TX), 0);
    answer();
    const buf = new Uint8Array(8);
    buf.set(bytes("line\r\nab"));
    engine.receive(buf, 0);
    assert.deepEqual(answer(), ["data"]);
    assert.equal(engine.bufferedBytes, 0);
    buf.set(bytes("c\r\n.\r\nxy"));
    engine.receive(buf, 0);
    assert.deepEqual(answer(), ["data", "message-end"]);
  });

  it("a reused receive buffer of body text is scanned afresh a word at a time", () => {
    // Chunks long enough for the body scanner's word view, which it keeps
    // for the chunk it was made for: the same array refilled, then another
    // view of the same memory at an offset that is not a word's.
    const engine = new SmtpEngine();
    let body = "";
    const answer = () =>
      untilNeedData(engine, (chunk) => body += dec.decode(chunk));
    engine.receive(bytes(TX), 0);
    answer();
    const buf = new Uint8Array(64);
    buf.set(bytes("x".repeat(40) + "\r\n" + "y".repeat(22)));
    engine.receive(buf, 0);
    assert.deepEqual(answer(), ["data"]);
    buf.set(bytes("y".repeat(20) + "\r\n" + "w".repeat(42)));
    engine.receive(buf, 0);
    assert.deepEqual(answer(), ["data"]);
    const view = buf.subarray(3);
    view.set(
      bytes("v".repeat(30) + "\r\n.\r\nNOOP " + "q".repeat(19) + "\r\n"),
    );
    engine.receive(view, 0);
    assert.deepEqual(answer(), ["data", "message-end"]);
    assert.equal(
      body,
      "x".repeat(40) + "\r\n" + "y".repeat(42) + "\r\n" + "w".repeat(42) +
        "v".repeat(30) + "\r\n",
    );
    assert.deepEqual(codes(dec.decode(engine.takeOutput()!)).slice(-2), [
      "250 2.0.0",
      "250 2.0.0",
    ]);
  });
});

describe("engine: timeouts", () => {
  /** Runs the engine to need-data, accepting every decision. */
  function drain(engine: SmtpEngine): string[] {
    const types: string[] = [];
    for (let ev = engine.nextEvent(); ev.type !== "need-data";) {
      types.push(ev.type === "close" ? `close:${ev.reason}` : ev.type);
      if (ev.type === "close") break;
      if (engine.pendingDecision !== null) engine.accept();
      ev = engine.nextEvent();
    }
    return types;
  }
  const text = (engine: SmtpEngine) =>
    new TextDecoder().decode(engine.takeOutput() ?? new Uint8Array());

  it("the idle timeout replies 421 4.4.2 and closes with reason timeout", () => {
    const engine = new SmtpEngine({ idleTimeout: 1000, serverName: "mx" }, 0);
    drain(engine);
    text(engine);
    engine.receive(bytes("NOOP\r\n"), 500);
    drain(engine);
    text(engine);
    assert.equal(engine.deadline(), 1500);
    engine.tick(1499);
    assert.equal(engine.hasOutput, false);
    engine.tick(1500);
    assert.equal(text(engine), "421 4.4.2 mx Timeout, closing connection\r\n");
    assert.deepEqual(drain(engine), ["close:timeout"]);
    assert.equal(engine.closed, true);
    assert.equal(engine.deadline(), Infinity);
  });

  it("an empty receive() restarts the idle clock", () => {
    const engine = new SmtpEngine({ idleTimeout: 1000 }, 0);
    drain(engine);
    engine.receive(new Uint8Array(0), 800);
    assert.equal(engine.deadline(), 1800);
  });

  it("the DATA timeout applies during DATA and aborts the message first", () => {
    const engine = new SmtpEngine({ idleTimeout: 1000, dataTimeout: 3000 }, 0);
    drain(engine);
    engine.receive(bytes(TX), 100);
    drain(engine);
    text(engine);
    assert.equal(engine.deadline(), 1100);
    // Steady input keeps the idle clock fresh, but not the DATA clock.
    for (let t = 600; t < 3100; t += 500) {
      engine.receive(bytes("more\r\n"), t);
      drain(engine);
    }
    assert.equal(engine.deadline(), 3100);
    engine.tick(3099);
    assert.equal(engine.closed, false);
    engine.tick(3100);
    assert.deepEqual(codes(text(engine)), ["421 4.4.2"]);
    assert.deepEqual(drain(engine), ["message-abort", "close:timeout"]);
  });

  it("no timeout applies while a decision is pending", () => {
    const engine = new SmtpEngine({ idleTimeout: 1000 }, 0);
    assert.equal(engine.nextEvent().type, "connect");
    assert.equal(engine.deadline(), Infinity);
    engine.tick(1e9);
    assert.equal(engine.closed, false);
    assert.equal(engine.hasOutput, false);
    engine.accept();
    assert.equal(engine.deadline(), 1000);
  });

  it("end() during DATA aborts the message and closes with reason eof", () => {
    const engine = new SmtpEngine();
    assert.deepEqual(drain(engine), ["connect"]);
    engine.receive(bytes(TX + "partial\r\n"), 0);
    assert.deepEqual(drain(engine), [
      "helo",
      "mail",
      "rcpt",
      "message-start",
      "data",
    ]);
    engine.end();
    assert.deepEqual(drain(engine), ["message-abort", "close:eof"]);
  });

  it("end() between commands closes with reason eof", () => {
    const engine = new SmtpEngine();
    drain(engine);
    engine.end();
    assert.deepEqual(drain(engine), ["close:eof"]);
  });

  it("shutdown() replies 421 4.3.2 and closes", () => {
    const engine = new SmtpEngine({ serverName: "mx" });
    drain(engine);
    text(engine);
    engine.receive(bytes(TX + "x"), 0);
    drain(engine);
    text(engine);
    engine.shutdown();
    assert.equal(text(engine), "421 4.3.2 mx Service shutting down\r\n");
    assert.deepEqual(drain(engine), ["message-abort", "close:shutdown"]);
  });
});

describe("engine: STARTTLS", () => {
  const TLS = { startTls: true } as const;

  it("STARTTLS asks for a decision and replies 220 2.0.0", () => {
    const r = transcript(EHLO + "STARTTLS\r\n", TLS);
    assert.deepEqual(r.events, ["connect", "helo:EHLO c.test", "starttls"]);
    assert.deepEqual(replies(r.output).at(-1), "220 2.0.0 Ready to start TLS");
  });

  it("after TLS starts, MAIL needs a new EHLO", () => {
    // The client waits for 220 and the handshake: a chunk boundary.
    const r = transcript(
      [
        EHLO + "STARTTLS\r\n",
        "MAIL FROM:<a@b>\r\nEHLO c.test\r\nMAIL FROM:<a@b>\r\n",
      ],
      TLS,
    );
    assert.deepEqual(codesAfter(r.output, 2), [
      "220 2.0.0",
      "503 5.5.1",
      "250",
      "250 2.1.0",
    ]);
    // Both EHLO replies list the capabilities; only the first offers STARTTLS.
    const count = (line: string) =>
      replies(r.output).filter((l) => l === line).length;
    assert.equal(count("250-PIPELINING"), 2);
    assert.equal(count("250-STARTTLS"), 1);
  });

  it("STARTTLS drops an open transaction", () => {
    const r = transcript(
      EHLO + "MAIL FROM:<a@b>\r\nSTARTTLS\r\n",
      TLS,
    );
    assert.deepEqual(r.events.slice(-2), ["starttls", "reset"]);
  });

  it("STARTTLS with an argument replies 501 5.5.4", () => {
    const r = transcript(EHLO + "STARTTLS now\r\n", TLS);
    assert.deepEqual(codesAfter(r.output, 2), ["501 5.5.4"]);
  });

  it("STARTTLS on a secure connection replies 503 5.5.1", () => {
    const r = transcript(EHLO + "STARTTLS\r\n", {
      startTls: true,
      secure: true,
    });
    assert.deepEqual(codesAfter(r.output, 2), ["503 5.5.1"]);
    const again = transcript(
      [EHLO + "STARTTLS\r\n", "EHLO c\r\nSTARTTLS\r\n"],
      TLS,
    );
    assert.deepEqual(codesAfter(again.output, 2), [
      "220 2.0.0",
      "250",
      "503 5.5.1",
    ]);
  });

  it("STARTTLS without startTls replies 502 5.5.1", () => {
    const r = transcript(EHLO + "STARTTLS\r\n");
    assert.deepEqual(codesAfter(r.output, 2), ["502 5.5.1"]);
  });

  it("a rejected STARTTLS keeps the plain session going", () => {
    const r = transcript(
      EHLO + "STARTTLS\r\nMAIL FROM:<a@b>\r\n",
      TLS,
      (ev) =>
        ev.type === "starttls"
          ? new SmtpError(454, "4.7.0", "TLS not available")
          : undefined,
    );
    assert.deepEqual(codesAfter(r.output, 2), ["454 4.7.0", "250 2.1.0"]);
  });

  it("bytes pipelined after STARTTLS are discarded (RFC 3207 injection)", () => {
    const engine = new SmtpEngine(TLS);
    engine.receive(
      bytes("EHLO c\r\nSTARTTLS\r\nNOOP\r\nMAIL FROM:<a@b>\r\n"),
      0,
    );
    assert.equal(engine.nextEvent().type, "connect");
    engine.accept();
    assert.equal(engine.nextEvent().type, "helo");
    engine.accept();
    engine.takeOutput();
    assert.equal(engine.nextEvent().type, "starttls");
    engine.accept();
    assert.equal(engine.nextEvent().type, "need-data");
    assert.equal(engine.bufferedBytes, 0);
    // Plain bytes arriving before the handshake completes are ignored too.
    engine.receive(bytes("NOOP\r\n"), 0);
    assert.equal(engine.nextEvent().type, "need-data");
    assert.equal(
      new TextDecoder().decode(engine.takeOutput()!),
      "220 2.0.0 Ready to start TLS\r\n",
    );
    engine.tlsStarted();
    assert.equal(engine.secure, true);
    assert.equal(engine.heloName, null);
    engine.receive(bytes("NOOP\r\n"), 0);
    assert.equal(engine.nextEvent().type, "need-data");
    assert.deepEqual(codes(new TextDecoder().decode(engine.takeOutput()!)), [
      "250 2.0.0",
    ]);
  });

  it("tlsStarted() without an accepted STARTTLS throws", () => {
    const engine = new SmtpEngine(TLS);
    assert.throws(() => engine.tlsStarted(), Error);
  });
});
