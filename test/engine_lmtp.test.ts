// Byte transcripts of LMTP (RFC 2033) through the engine: LHLO, and one
// reply per accepted recipient after the body (DATA or BDAT). Every
// transcript is fed whole, byte by byte and split at every offset.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  SmtpEngine,
  SmtpError,
  type SmtpEvent,
} from "../src/exports/engine.ts";
import {
  bytes,
  codes,
  type Decide,
  replies,
  transcript,
} from "./helpers/transcript.ts";

const LMTP = { lmtp: true, serverName: "lmtp.test" };
const LHLO = "LHLO c.test\r\n";
const MAIL = "MAIL FROM:<a@b.test>\r\n";
/** A transaction with three recipients; no@y.test is refused by NO_USER. */
const RCPTS =
  "RCPT TO:<x@y.test>\r\nRCPT TO:<no@y.test>\r\nRCPT TO:<z@y.test>\r\n";
const TX = LHLO + MAIL + RCPTS;
/** Replies to TX: greeting, LHLO, MAIL, three RCPT. */
const SKIP = 6;

const NO_USER: Decide = (ev) =>
  ev.type === "rcpt" && ev.to.address === "no@y.test"
    ? new SmtpError(550, "5.1.1", "No such user")
    : undefined;

function codesAfter(output: string, skip = SKIP): string[] {
  return codes(output).slice(skip);
}

describe("engine: LMTP greeting and LHLO", () => {
  it("greets with LMTP and answers LHLO like EHLO", () => {
    const r = transcript(LHLO, LMTP);
    const lines = replies(r.output);
    assert.equal(lines[0], "220 lmtp.test LMTP smtpd");
    assert.equal(lines[1], "250-lmtp.test greets c.test");
    assert.ok(lines.includes("250-PIPELINING"));
    assert.ok(lines.includes("250-ENHANCEDSTATUSCODES"));
    assert.ok(lines.includes("250-CHUNKING"));
    assert.equal(lines.at(-1), "250 HELP");
    assert.deepEqual(r.events, ["connect", "helo:LHLO c.test"]);
  });

  it("a greeting given in the options is kept", () => {
    const r = transcript("", { ...LMTP, greeting: "ready" });
    assert.equal(r.output, "220 lmtp.test ready\r\n");
  });

  it("EHLO and HELO reply 500 5.5.1 in LMTP", () => {
    const r = transcript("EHLO c.test\r\nHELO c.test\r\n" + MAIL, LMTP);
    assert.deepEqual(codes(r.output).slice(1), [
      "500 5.5.1",
      "500 5.5.1",
      "503 5.5.1",
    ]);
  });

  it("LHLO replies 500 5.5.1 in SMTP", () => {
    const r = transcript(LHLO);
    assert.deepEqual(codes(r.output).slice(1), ["500 5.5.1"]);
  });

  it("LHLO allows MAIL parameters (it is ESMTP)", () => {
    const r = transcript(LHLO + "MAIL FROM:<a@b> BODY=8BITMIME\r\n", LMTP);
    assert.deepEqual(codes(r.output).slice(2), ["250 2.1.0"]);
  });

  it("HELP names LHLO, not EHLO", () => {
    const lines = replies(transcript("HELP\r\n", LMTP).output);
    assert.match(lines[1], /Commands: LHLO MAIL RCPT DATA BDAT /);
  });
});

describe("engine: LMTP replies per recipient", () => {
  it("after DATA each accepted recipient gets a reply, in RCPT order; a refused one gets none", () => {
    const r = transcript(TX + "DATA\r\nhi\r\n.\r\nQUIT\r\n", LMTP, NO_USER);
    assert.deepEqual(codesAfter(r.output), [
      "354 2.0.0",
      "250 2.0.0",
      "250 2.0.0",
      "221 2.0.0",
    ]);
    assert.deepEqual(replies(r.output).slice(-3, -1), [
      "250 2.0.0 Message accepted for <x@y.test>",
      "250 2.0.0 Message accepted for <z@y.test>",
    ]);
    assert.deepEqual(r.messages, ["hi\r\n"]);
  });

  it("message-end carries the accepted recipients", () => {
    const r = transcript(TX + "DATA\r\n.\r\n", LMTP, NO_USER);
    const end = r.raw.find((ev) => ev.type === "message-end");
    assert.ok(end?.type === "message-end");
    assert.deepEqual(end.recipients.map((rc) => rc.mailbox.address), [
      "x@y.test",
      "z@y.test",
    ]);
  });

  it("acceptEach answers each recipient with its own outcome", () => {
    const decide: Decide = (ev, engine) => {
      if (ev.type === "message-end") {
        return [new SmtpError(452, "4.2.2", "Mailbox full"), "Saved"];
      }
      return NO_USER(ev, engine);
    };
    const r = transcript(TX + "DATA\r\nhi\r\n.\r\n", LMTP, decide);
    assert.deepEqual(replies(r.output).slice(-2), [
      "452 4.2.2 Mailbox full",
      "250 2.0.0 Saved",
    ]);
    // The transaction is over: RCPT needs a new MAIL.
    const next = transcript(
      TX + "DATA\r\nhi\r\n.\r\nRCPT TO:<x@y.test>\r\n",
      LMTP,
      decide,
    );
    assert.deepEqual(codes(next.output).slice(-1), ["503 5.5.1"]);
  });

  it("acceptEach with null accepts with the default reply", () => {
    const r = transcript(
      LHLO + MAIL + "RCPT TO:<x@y.test>\r\nDATA\r\n.\r\n",
      LMTP,
      (ev) => ev.type === "message-end" ? [null] : undefined,
    );
    assert.equal(
      replies(r.output).at(-1),
      "250 2.0.0 Message accepted for <x@y.test>",
    );
  });

  it("reject() refuses every recipient with the same reply", () => {
    const r = transcript(
      TX + "DATA\r\nhi\r\n.\r\n",
      LMTP,
      (ev, engine) =>
        ev.type === "message-end"
          ? new SmtpError(451, "4.3.0", "Try later")
          : NO_USER(ev, engine),
    );
    assert.deepEqual(codesAfter(r.output), [
      "354 2.0.0",
      "451 4.3.0",
      "451 4.3.0",
    ]);
    assert.deepEqual(r.messages, []);
  });

  it("accept(text) gives every recipient that text", () => {
    const r = transcript(
      TX + "DATA\r\nhi\r\n.\r\n",
      LMTP,
      (ev, engine) =>
        ev.type === "message-end" ? "Queued" : NO_USER(ev, engine),
    );
    assert.deepEqual(replies(r.output).slice(-2), [
      "250 2.0.0 Queued",
      "250 2.0.0 Queued",
    ]);
  });

  it("after BDAT LAST each accepted recipient gets a reply", () => {
    const r = transcript(
      TX + "BDAT 3\r\nabcBDAT 2 LAST\r\nde",
      LMTP,
      NO_USER,
    );
    assert.deepEqual(codesAfter(r.output), [
      "250 2.0.0",
      "250 2.0.0",
      "250 2.0.0",
    ]);
    assert.deepEqual(replies(r.output).slice(-3), [
      "250 2.0.0 3 octets received",
      "250 2.0.0 Message accepted for <x@y.test>",
      "250 2.0.0 Message accepted for <z@y.test>",
    ]);
    assert.deepEqual(r.messages, ["abcde"]);
  });

  it("a bare LF refused after the body refuses every recipient with 550 5.6.0", () => {
    const data = transcript(TX + "DATA\r\na\nb\r\n.\r\n", LMTP, NO_USER);
    assert.deepEqual(codesAfter(data.output), [
      "354 2.0.0",
      "550 5.6.0",
      "550 5.6.0",
    ]);
    const chunked = transcript(TX + "BDAT 3 LAST\r\na\nb", LMTP, NO_USER);
    assert.deepEqual(codesAfter(chunked.output), ["550 5.6.0", "550 5.6.0"]);
  });

  it("a body over maxMessageSize refuses every recipient with 552 5.3.4", () => {
    const opts = { ...LMTP, maxMessageSize: 3 };
    const data = transcript(TX + "DATA\r\nabcdef\r\n.\r\n", opts, NO_USER);
    assert.deepEqual(codesAfter(data.output), [
      "354 2.0.0",
      "552 5.3.4",
      "552 5.3.4",
    ]);
    // A LAST chunk over the limit: one reply per recipient; an earlier
    // chunk over the limit: one reply, and the transaction is over. The
    // LAST chunk pipelined behind it is discarded, and still gets the one
    // reply per accepted recipient that the client reads for it.
    const last = transcript(TX + "BDAT 6 LAST\r\nabcdef", opts, NO_USER);
    assert.deepEqual(codesAfter(last.output), ["552 5.3.4", "552 5.3.4"]);
    const early = transcript(
      TX + "BDAT 6\r\nabcdefBDAT 1\r\ngBDAT 1 LAST\r\nhNOOP\r\n",
      opts,
      NO_USER,
    );
    assert.deepEqual(codesAfter(early.output), [
      "552 5.3.4",
      "503 5.5.1",
      "503 5.5.1",
      "503 5.5.1",
      "250 2.0.0",
    ]);
    // A command between them ends that: a later LAST owes nothing.
    const after = transcript(
      TX + "BDAT 6\r\nabcdefNOOP\r\nBDAT 1 LAST\r\ngNOOP\r\n",
      opts,
      NO_USER,
    );
    assert.deepEqual(codesAfter(after.output), [
      "552 5.3.4",
      "250 2.0.0",
      "250 2.0.0",
    ]);
  });

  it("DATA with no accepted recipient replies 503 5.5.1", () => {
    const r = transcript(
      LHLO + MAIL + "RCPT TO:<no@y.test>\r\nDATA\r\nQUIT",
      LMTP,
      NO_USER,
    );
    assert.deepEqual(codes(r.output).slice(3), ["550 5.1.1", "503 5.5.1"]);
    assert.equal(r.closed, null);
  });

  it("BDAT LAST with no accepted recipient gets no reply and ends the transaction", () => {
    // RFC 2033 §4.3: one reply per accepted recipient after the LAST
    // chunk, so none here; a pipelining client then sends the next MAIL.
    const r = transcript(
      LHLO + MAIL + "RCPT TO:<no@y.test>\r\nBDAT 4 LAST\r\nabcd" +
        MAIL + "RCPT TO:<x@y.test>\r\nBDAT 2 LAST\r\nokQUIT\r\n",
      LMTP,
      NO_USER,
    );
    assert.deepEqual(codes(r.output).slice(3), [
      "550 5.1.1",
      "250 2.1.0",
      "250 2.1.5",
      "250 2.0.0",
      "221 2.0.0",
    ]);
    assert.deepEqual(r.messages, ["ok"]);
  });

  it("BDAT LAST without MAIL or any RCPT gets no reply either", () => {
    const r = transcript(
      LHLO + "BDAT 1 LAST\r\nx" + MAIL + "BDAT 0 LAST\r\nNOOP\r\n",
      LMTP,
    );
    assert.deepEqual(codes(r.output).slice(2), ["250 2.1.0", "250 2.0.0"]);
    assert.deepEqual(r.messages, []);
  });

  it("a BDAT chunk before LAST with no accepted recipient gets one 503 5.5.1, LAST none", () => {
    // RFC 3030 §2 and RFC 2033 §4.3: a chunk that is not LAST has one
    // reply; the client that pipelined the LAST chunk behind it reads
    // one reply per accepted recipient for it: none.
    const r = transcript(
      LHLO + MAIL + "RCPT TO:<no@y.test>\r\nBDAT 2\r\nabBDAT 3\r\ncde" +
        "BDAT 2 LAST\r\nfg" + MAIL + "RCPT TO:<z@y.test>\r\n" +
        "BDAT 1 LAST\r\nhQUIT\r\n",
      LMTP,
      NO_USER,
    );
    assert.deepEqual(codes(r.output).slice(3), [
      "550 5.1.1",
      "503 5.5.1",
      "503 5.5.1",
      "250 2.1.0",
      "250 2.1.5",
      "250 2.0.0",
      "221 2.0.0",
    ]);
    assert.deepEqual(r.messages, ["h"]);
  });
});

describe("engine: acceptEach misuse", () => {
  /** An engine waiting for the message-end decision of TX (two recipients). */
  function atMessageEnd(options = LMTP): SmtpEngine {
    const engine = new SmtpEngine(options, 0);
    engine.receive(bytes(TX + "DATA\r\n.\r\n"), 0);
    for (let ev: SmtpEvent = engine.nextEvent(); ev.type !== "message-end";) {
      if (engine.pendingDecision !== null) {
        const refused = NO_USER(ev, engine);
        if (refused instanceof SmtpError) engine.reject(refused);
        else engine.accept();
      }
      ev = engine.nextEvent();
    }
    return engine;
  }

  it("a results array of the wrong length throws and the decision stays pending", () => {
    const engine = atMessageEnd();
    assert.throws(
      () => engine.acceptEach([null]),
      (e: unknown) =>
        e instanceof TypeError &&
        e.message === "Cannot answer per recipient: 1 results for 2 recipients",
    );
    assert.equal(engine.pendingDecision, "message-end");
    engine.acceptEach([null, null]);
    assert.equal(engine.pendingDecision, null);
  });

  it("a result that is not an SmtpError, a string or null throws", () => {
    const engine = atMessageEnd();
    assert.throws(() => engine.acceptEach([null, 5 as never]), TypeError);
    assert.equal(engine.pendingDecision, "message-end");
  });

  it("acceptEach without a pending message-end, or in SMTP, throws", () => {
    const engine = new SmtpEngine(LMTP, 0);
    assert.throws(() => engine.acceptEach([]), /no message-end decision/);
    const smtp = new SmtpEngine({}, 0);
    smtp.receive(
      bytes("EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\n.\r\n"),
      0,
    );
    for (let ev = smtp.nextEvent(); ev.type !== "message-end";) {
      if (smtp.pendingDecision !== null) smtp.accept();
      ev = smtp.nextEvent();
    }
    assert.throws(() => smtp.acceptEach([null]), /LMTP is off/);
  });
});
