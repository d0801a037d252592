// Byte transcripts of CHUNKING/BDAT and BINARYMIME (RFC 3030) through the
// engine. Every transcript goes through transcript(), which feeds it whole,
// byte by byte and split at every offset (so chunk boundaries fall inside
// the BDAT line, inside the chunk and exactly at its end) and checks that
// all feedings agree. Large inputs use run() or the engine directly.
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
  replies,
  run,
  transcript,
} from "./helpers/transcript.ts";

const EHLO = "EHLO c.test\r\n";
const MAIL = "MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\n";
const TX = EHLO + MAIL;
/** Replies to TX: greeting, EHLO, MAIL, RCPT. */
const SKIP = 4;

function codesAfter(output: string, skip = SKIP): string[] {
  return codes(output).slice(skip);
}

/** The message-start events of a result. */
function starts(
  raw: SmtpEvent[],
): Extract<SmtpEvent, { type: "message-start" }>[] {
  return raw.flatMap((ev) => ev.type === "message-start" ? [ev] : []);
}

/** A BDAT command and its chunk. */
function bdat(chunk: string, last = false): string {
  return `BDAT ${bytes(chunk).length}${last ? " LAST" : ""}\r\n${chunk}`;
}

describe("engine: CHUNKING advertisement", () => {
  it("EHLO advertises CHUNKING and BINARYMIME by default", () => {
    const lines = replies(transcript(EHLO).output);
    assert.ok(lines.includes("250-CHUNKING"));
    assert.ok(lines.includes("250-BINARYMIME"));
  });

  it("binaryMime false leaves out BINARYMIME only", () => {
    const lines = replies(transcript(EHLO, { binaryMime: false }).output);
    assert.ok(lines.includes("250-CHUNKING"));
    assert.ok(!lines.includes("250-BINARYMIME"));
  });

  it("chunking false leaves out both, and BDAT replies 502 5.5.1", () => {
    const r = transcript(TX + "BDAT 0 LAST\r\n", { chunking: false });
    const lines = replies(r.output);
    assert.ok(!lines.includes("250-CHUNKING"));
    assert.ok(!lines.includes("250-BINARYMIME"));
    assert.deepEqual(codesAfter(r.output), ["502 5.5.1"]);
  });

  it("HELP lists BDAT only with chunking", () => {
    assert.match(replies(transcript("HELP\r\n").output)[1], / BDAT /);
    const off = replies(transcript("HELP\r\n", { chunking: false }).output);
    assert.doesNotMatch(off[1], /BDAT/);
  });
});

describe("engine: BDAT", () => {
  it("one BDAT LAST delivers its chunk as the message", () => {
    const r = transcript(TX + bdat("hello", true));
    assert.deepEqual(r.messages, ["hello"]);
    assert.deepEqual(codesAfter(r.output), ["250 2.0.0"]);
    assert.equal(replies(r.output).at(-1), "250 2.0.0 Message accepted");
    assert.deepEqual(r.events.slice(-3), [
      "message-start",
      "data:hello",
      "message-end:5",
    ]);
    assert.deepEqual(starts(r.raw), [{
      type: "message-start",
      command: "BDAT",
      body: "7BIT",
      envelope: {
        from: { address: "a@b.test", localPart: "a", domain: "b.test" },
        mailParams: { smtputf8: false, params: {} },
        recipients: [{
          mailbox: { address: "x@y.test", localPart: "x", domain: "y.test" },
          params: { params: {} },
        }],
      },
    }]);
  });

  it("pipelined chunks make one message, one reply per BDAT in order", () => {
    // No dot-unstuffing, and command lines in a chunk are body.
    const r = transcript(
      TX + bdat("hello\r\n") + bdat(".\r\nQUIT\r\n") +
        "BDAT 0 LAST\r\nNOOP\r\n",
    );
    assert.deepEqual(r.messages, ["hello\r\n.\r\nQUIT\r\n"]);
    assert.deepEqual(replies(r.output).slice(-4), [
      "250 2.0.0 7 octets received",
      "250 2.0.0 9 octets received",
      "250 2.0.0 Message accepted",
      "250 2.0.0 OK",
    ]);
    assert.equal(r.closed, null);
  });

  it("BDAT 0 LAST alone delivers an empty message", () => {
    const r = transcript(TX + "BDAT 0 LAST\r\n");
    assert.deepEqual(r.messages, [""]);
    assert.deepEqual(r.events.slice(-2), ["message-start", "message-end:0"]);
  });

  it("the size keyword LAST is case-insensitive and leading zeros count", () => {
    const r = transcript(TX + "bdat 0003 last\r\nabc");
    assert.deepEqual(r.messages, ["abc"]);
  });

  it("a chunk of NUL and 8-bit octets is handed out byte for byte", () => {
    const chunk = Uint8Array.from([0, 0xff, 0x80, 13, 10, 0x2e, 13, 10]);
    const input = new Uint8Array([
      ...bytes(TX + "BDAT 8 LAST\r\n"),
      ...chunk,
    ]);
    const seen: number[] = [];
    const engine = new SmtpEngine({}, 0);
    engine.receive(input, 0);
    for (let ev = engine.nextEvent(); ev.type !== "need-data";) {
      if (ev.type === "data") seen.push(...ev.chunk);
      if (engine.pendingDecision !== null) engine.accept();
      ev = engine.nextEvent();
    }
    assert.deepEqual(seen, [...chunk]);
  });

  it("the message-end event carries the accepted recipients", () => {
    const r = transcript(
      EHLO + "MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nRCPT TO:<no@y>\r\n" +
        "RCPT TO:<z@y>\r\n" + bdat("hi", true),
      {},
      (ev) =>
        ev.type === "rcpt" && ev.to.address === "no@y"
          ? new SmtpError(550, "5.1.1", "No such user")
          : undefined,
    );
    const end = r.raw.find((ev) => ev.type === "message-end");
    assert.ok(end?.type === "message-end");
    assert.deepEqual(end.recipients.map((rc) => rc.mailbox.address), [
      "x@y",
      "z@y",
    ]);
  });

  it("a RCPT between two chunks leaves the message-start recipients as they were", () => {
    const r = transcript(
      TX + bdat("one") + "RCPT TO:<late@y.test>\r\n" + bdat("two", true),
    );
    const [start] = starts(r.raw);
    assert.deepEqual(
      start.envelope.recipients.map((rc) => rc.mailbox.address),
      [
        "x@y.test",
      ],
    );
    const end = r.raw.find((ev) => ev.type === "message-end");
    assert.ok(end?.type === "message-end");
    assert.deepEqual(end.recipients.map((rc) => rc.mailbox.address), [
      "x@y.test",
      "late@y.test",
    ]);
  });

  it("two BDAT messages in one session", () => {
    const r = transcript(
      TX + bdat("one", true) + MAIL + bdat("tw") + bdat("o", true),
    );
    assert.deepEqual(r.messages, ["one", "two"]);
  });

  it("a message rejected at message-end sends the reply and ends the transaction", () => {
    const r = transcript(
      TX + bdat("x", true) + bdat("y", true),
      {},
      (ev) =>
        ev.type === "message-end"
          ? new SmtpError(554, "5.7.1", "Spam")
          : undefined,
    );
    assert.deepEqual(codesAfter(r.output), ["554 5.7.1", "503 5.5.1"]);
    assert.deepEqual(r.messages, []);
  });

  it("a BDAT after the LAST chunk replies 503 5.5.1 and its chunk is consumed", () => {
    const r = transcript(TX + bdat("x", true) + bdat("NOOP\r\n") + "NOOP\r\n");
    assert.deepEqual(codesAfter(r.output), [
      "250 2.0.0",
      "503 5.5.1",
      "250 2.0.0",
    ]);
  });

  it("accept(text) gives the LAST chunk's reply that text", () => {
    const r = transcript(
      TX + bdat("x", true),
      {},
      (ev) => ev.type === "message-end" ? "Queued as 42" : undefined,
    );
    assert.equal(replies(r.output).at(-1), "250 2.0.0 Queued as 42");
  });
});

describe("engine: BDAT refused, chunk consumed", () => {
  it("BDAT without MAIL replies 503 5.5.1 after its chunk", () => {
    const r = transcript(EHLO + bdat("QUIT\r\n") + "NOOP\r\n");
    assert.deepEqual(codesAfter(r.output, 2), ["503 5.5.1", "250 2.0.0"]);
    assert.equal(r.closed, null);
    assert.ok(!r.events.includes("message-start"));
  });

  it("BDAT before EHLO replies 503 5.5.1 after its chunk", () => {
    const r = transcript(bdat("QUIT\r\n", true) + "NOOP\r\n");
    assert.deepEqual(codesAfter(r.output, 1), ["503 5.5.1", "250 2.0.0"]);
  });

  it("BDAT without RCPT replies 503 5.5.1, with every RCPT refused 554 5.5.1", () => {
    const none = transcript(
      EHLO + "MAIL FROM:<a@b>\r\n" + bdat("RSET\r\n", true),
    );
    assert.deepEqual(codesAfter(none.output, 3), ["503 5.5.1"]);
    const refused = transcript(
      TX + bdat("RSET\r\n", true) + "RCPT TO:<z@y>\r\n" + bdat("ok", true),
      {},
      (ev) =>
        ev.type === "rcpt" && ev.to.address === "x@y.test"
          ? new SmtpError(550, "5.1.1", "No such user")
          : undefined,
    );
    // The transaction goes on: a later recipient and BDAT deliver.
    assert.deepEqual(codesAfter(refused.output, 3), [
      "550 5.1.1",
      "554 5.5.1",
      "250 2.1.5",
      "250 2.0.0",
    ]);
    assert.deepEqual(refused.messages, ["ok"]);
  });

  it("BDAT with a bad keyword after a good size replies 501 5.5.4 after its chunk", () => {
    const r = transcript(TX + "BDAT 6 FIRST\r\nQUIT\r\n" + "NOOP\r\n");
    assert.deepEqual(codesAfter(r.output), ["501 5.5.4", "250 2.0.0"]);
    assert.equal(r.closed, null);
  });

  it("a bad keyword fails the transaction in progress", () => {
    const r = transcript(
      TX + bdat("ab") + "BDAT 1 LAST x\r\nc" + bdat("d", true),
    );
    assert.deepEqual(codesAfter(r.output), [
      "250 2.0.0",
      "501 5.5.4",
      "503 5.5.1",
    ]);
    assert.deepEqual(r.messages, []);
    assert.ok(r.events.includes("message-abort:501 5.5.4"));
  });

  for (
    const size of [
      "18446744073709551617", // 2^64 + 1
      "123456789012345678901234567890",
      "9007199254740992", // 2^53: not counted exactly
      "12a",
      "-1",
      "+1",
      "0x10",
      "1.5",
      "",
      " 1",
    ]
  ) {
    it(`BDAT size ${JSON.stringify(size)} replies 501 5.5.4, then 421 4.7.0, and closes`, () => {
      const r = transcript(TX + `BDAT ${size} LAST\r\nQUIT\r\n`);
      assert.deepEqual(codesAfter(r.output), ["501 5.5.4", "421 4.7.0"]);
      assert.equal(r.closed, "protocol-error");
    });
  }

  it("BDAT without a size replies 501 5.5.4 and closes", () => {
    const r = transcript(TX + "BDAT\r\nNOOP\r\n");
    assert.deepEqual(codesAfter(r.output), ["501 5.5.4", "421 4.7.0"]);
    assert.equal(r.closed, "protocol-error");
  });

  it("an unparsable size between chunks aborts the message", () => {
    const r = transcript(TX + bdat("ab") + "BDAT 99999999999999999999\r\n");
    assert.deepEqual(r.events.slice(-3), [
      "message-start",
      "data:ab",
      "message-abort:501 5.5.4",
    ]);
    assert.equal(r.closed, "protocol-error");
  });

  it("the largest countable size is consumed, not refused as unparsable", () => {
    // 2^53 - 1 octets announced: the chunk is over the limit, so it is
    // read and discarded; the engine waits for the rest of it.
    const engine = new SmtpEngine({}, 0);
    engine.receive(bytes(TX + "BDAT 9007199254740991\r\nNOOP\r\n"), 0);
    for (let ev = engine.nextEvent(); ev.type !== "need-data";) {
      if (engine.pendingDecision !== null) engine.accept();
      ev = engine.nextEvent();
    }
    assert.equal(engine.closed, false);
    assert.equal(engine.bufferedBytes, 0);
    assert.deepEqual(
      codesAfter(new TextDecoder().decode(engine.takeOutput()!)),
      [],
    );
  });
});

describe("engine: BDAT and maxMessageSize", () => {
  it("the chunk that crosses the limit is consumed and answered 552 5.3.4; later BDATs get 503", () => {
    const r = transcript(
      TX + bdat("123456") + bdat("abcdef") + bdat("xy", true) +
        MAIL + bdat("ok", true),
      { maxMessageSize: 10 },
    );
    assert.deepEqual(codesAfter(r.output), [
      "250 2.0.0",
      "552 5.3.4",
      "503 5.5.1",
      "250 2.1.0",
      "250 2.1.5",
      "250 2.0.0",
    ]);
    assert.deepEqual(r.messages, ["ok"]);
    assert.deepEqual(
      r.events.filter((e) => !e.startsWith("mail") && !e.startsWith("rcpt"))
        .slice(2),
      [
        "message-start",
        "data:123456",
        "message-abort:552 5.3.4",
        "message-start",
        "data:ok",
        "message-end:2",
      ],
    );
  });

  it("a first chunk over the limit starts no message and ends the transaction", () => {
    const r = transcript(
      TX + bdat("12345678901", true) + bdat("x", true),
      { maxMessageSize: 10 },
    );
    assert.deepEqual(codesAfter(r.output), ["552 5.3.4", "503 5.5.1"]);
    assert.ok(!r.events.includes("message-start"));
  });

  it("chunks summing to exactly maxMessageSize deliver", () => {
    const r = transcript(
      TX + bdat("12345") + bdat("67890", true),
      { maxMessageSize: 10 },
    );
    assert.deepEqual(r.messages, ["1234567890"]);
  });

  it("normalized line endings that cross the limit get 552 for that chunk", () => {
    const r = transcript(
      TX + bdat("abcd\n") + bdat("x", true),
      { maxMessageSize: 5, bareLineEnding: "normalize" },
    );
    assert.deepEqual(codesAfter(r.output), ["552 5.3.4", "503 5.5.1"]);
    assert.deepEqual(r.messages, []);
  });
});

describe("engine: BDAT transaction boundaries", () => {
  it("RSET between chunks drops the partial message", () => {
    const r = transcript(TX + bdat("abc") + "RSET\r\n" + bdat("d", true));
    assert.deepEqual(codesAfter(r.output), [
      "250 2.0.0",
      "250 2.0.0",
      "503 5.5.1",
    ]);
    assert.deepEqual(r.events.slice(-4), [
      "message-start",
      "data:abc",
      "message-abort:451 4.3.0",
      "reset",
    ]);
    assert.deepEqual(r.messages, []);
  });

  it("QUIT between chunks drops the partial message and closes", () => {
    const r = transcript(TX + bdat("abc") + "QUIT\r\n");
    assert.deepEqual(r.events.slice(-2), ["message-abort:451 4.3.0", "reset"]);
    assert.equal(r.closed, "quit");
    assert.deepEqual(r.messages, []);
  });

  it("EHLO between chunks drops the partial message", () => {
    const r = transcript(TX + bdat("abc") + EHLO);
    assert.deepEqual(r.events.slice(-3), [
      "message-abort:451 4.3.0",
      "reset",
      "helo:EHLO c.test",
    ]);
  });

  it("NOOP between chunks keeps the message", () => {
    const r = transcript(TX + bdat("ab") + "NOOP\r\n" + bdat("c", true));
    assert.deepEqual(r.messages, ["abc"]);
  });

  it("DATA after a BDAT replies 503 5.5.1 and the BDAT transaction goes on", () => {
    const r = transcript(TX + bdat("ab") + "DATA\r\n" + bdat("c", true));
    assert.deepEqual(codesAfter(r.output), [
      "250 2.0.0",
      "503 5.5.1",
      "250 2.0.0",
    ]);
    assert.deepEqual(r.messages, ["abc"]);
  });

  it("end() between chunks aborts the message and closes with reason eof", () => {
    const engine = new SmtpEngine({}, 0);
    engine.receive(bytes(TX + bdat("ab")), 0);
    const seen: string[] = [];
    const pump = () => {
      for (let ev = engine.nextEvent();; ev = engine.nextEvent()) {
        if (ev.type === "need-data" || ev.type === "close") {
          seen.push(ev.type);
          return;
        }
        if (ev.type === "message-abort") seen.push(`abort:${ev.error.code}`);
        if (engine.pendingDecision !== null) engine.accept();
      }
    };
    pump();
    engine.end();
    pump();
    assert.deepEqual(seen, ["need-data", "abort:451", "close"]);
  });
});

describe("engine: BINARYMIME", () => {
  it("BODY=BINARYMIME is accepted and the message says so", () => {
    const body = "a\nb\rc\0\r\n.\r\n";
    const r = transcript(
      EHLO + "MAIL FROM:<a@b> BODY=BINARYMIME\r\nRCPT TO:<x@y>\r\n" +
        bdat(body.slice(0, 4)) + bdat(body.slice(4), true),
    );
    // Bare CR and LF pass untouched, whatever the policy.
    assert.deepEqual(r.messages, [body]);
    const mail = r.raw.find((ev) => ev.type === "mail");
    assert.ok(mail?.type === "mail");
    assert.equal(mail.params.body, "BINARYMIME");
    assert.equal(starts(r.raw)[0].body, "BINARYMIME");
  });

  it("BINARYMIME passes through with normalize too", () => {
    const r = transcript(
      EHLO + "MAIL FROM:<a@b> BODY=BINARYMIME\r\nRCPT TO:<x@y>\r\n" +
        bdat("a\nb\r", true),
      { bareLineEnding: "normalize" },
    );
    assert.deepEqual(r.messages, ["a\nb\r"]);
  });

  it("DATA in a BINARYMIME transaction replies 503 5.5.1", () => {
    const r = transcript(
      EHLO + "MAIL FROM:<a@b> BODY=BINARYMIME\r\nRCPT TO:<x@y>\r\nDATA\r\n" +
        bdat("x", true),
    );
    assert.deepEqual(codesAfter(r.output), ["503 5.5.1", "250 2.0.0"]);
    assert.match(replies(r.output).at(-2)!, /BINARYMIME needs BDAT/);
    assert.deepEqual(r.messages, ["x"]);
  });

  it("BODY=BINARYMIME when not offered replies 555 5.5.4", () => {
    for (const options of [{ binaryMime: false }, { chunking: false }]) {
      const r = transcript(
        EHLO + "MAIL FROM:<a@b> BODY=BINARYMIME\r\n",
        options,
      );
      assert.deepEqual(codesAfter(r.output, 2), ["555 5.5.4"]);
    }
  });

  it("a DATA message says it came with DATA and its body type", () => {
    const r = transcript(
      EHLO + "MAIL FROM:<a@b> BODY=8BITMIME\r\nRCPT TO:<x@y>\r\nDATA\r\n.\r\n",
    );
    assert.deepEqual(starts(r.raw), [{
      type: "message-start",
      command: "DATA",
      body: "8BITMIME",
      envelope: {
        from: { address: "a@b", localPart: "a", domain: "b" },
        mailParams: {
          body: "8BITMIME",
          smtputf8: false,
          params: { BODY: "8BITMIME" },
        },
        recipients: [{
          mailbox: { address: "x@y", localPart: "x", domain: "y" },
          params: { params: {} },
        }],
      },
    }]);
  });
});

describe("engine: bare line endings in BDAT bodies", () => {
  it("a bare LF is refused with 550 5.6.0 after the LAST chunk", () => {
    const r = transcript(
      TX + bdat("a\nb") + bdat("c", true) + MAIL + bdat("ok", true),
    );
    assert.deepEqual(codesAfter(r.output), [
      "250 2.0.0",
      "550 5.6.0",
      "250 2.1.0",
      "250 2.1.5",
      "250 2.0.0",
    ]);
    assert.deepEqual(r.messages, ["ok"]);
    assert.ok(r.events.includes("message-abort:550 5.6.0"));
    assert.ok(r.events.includes("data:a"));
  });

  it("a bare CR inside a chunk is refused", () => {
    const r = transcript(TX + bdat("a\rb", true));
    assert.deepEqual(codesAfter(r.output), ["550 5.6.0"]);
    assert.match(replies(r.output).at(-1)!, /bare CR/);
  });

  it("a CRLF split between two chunks is a CRLF", () => {
    const r = transcript(TX + bdat("a\r") + bdat("\nb", true));
    assert.deepEqual(r.messages, ["a\r\nb"]);
  });

  it("a CRLF split by an empty chunk is a CRLF", () => {
    const r = transcript(TX + bdat("a\r") + bdat("") + bdat("\n", true));
    assert.deepEqual(r.messages, ["a\r\n"]);
  });

  it("a CR at the end of one chunk and not LF next is a bare CR", () => {
    const r = transcript(TX + bdat("a\r") + bdat("b", true));
    assert.deepEqual(codesAfter(r.output), ["250 2.0.0", "550 5.6.0"]);
  });

  it("a CR as the last octet of the message is a bare CR", () => {
    const r = transcript(TX + bdat("a\r", true));
    assert.deepEqual(codesAfter(r.output), ["550 5.6.0"]);
  });

  it("normalize turns bare CR and LF into CRLF, across chunk boundaries too", () => {
    const r = transcript(
      TX + bdat("a\nb\rc\r") + bdat("d\r\ne\r") + bdat("\r", true),
      { bareLineEnding: "normalize" },
    );
    assert.deepEqual(r.messages, ["a\r\nb\r\nc\r\nd\r\ne\r\n\r\n"]);
    const end = r.raw.find((ev) => ev.type === "message-end");
    assert.ok(end?.type === "message-end");
    assert.equal(end.size, 17);
  });
});

describe("engine: BDAT streaming", () => {
  it("a large chunk streams out as views of the input, nothing buffered", () => {
    const size = 1_000_000;
    const piece = 65536;
    const input = new Uint8Array(size).fill(0x61);
    for (let i = 76; i < size; i += 78) {
      input[i] = 13;
      if (i + 1 < size) input[i + 1] = 10;
    }
    input[size - 2] = 13;
    input[size - 1] = 10;
    const engine = new SmtpEngine({}, 0);
    engine.receive(bytes(TX + `BDAT ${size} LAST\r\n`), 0);
    const drain = () => {
      const out: SmtpEvent[] = [];
      for (let ev = engine.nextEvent(); ev.type !== "need-data";) {
        out.push(ev);
        if (engine.pendingDecision !== null) engine.accept();
        ev = engine.nextEvent();
      }
      return out;
    };
    drain();
    let total = 0;
    let ended = false;
    for (let at = 0; at < size; at += piece) {
      const chunk = input.subarray(at, at + piece);
      engine.receive(chunk, 0);
      for (const ev of drain()) {
        if (ev.type === "data") {
          // Views of the input, but for a CRLF split between two reads.
          if (ev.chunk.length > 2) {
            assert.equal(ev.chunk.buffer, input.buffer, "a view, not a copy");
          }
          total += ev.chunk.length;
        }
        if (ev.type === "message-end") ended = true;
      }
      assert.ok(engine.bufferedBytes <= 1, "bytes held after need-data");
    }
    assert.equal(total, size);
    assert.ok(ended);
    assert.equal(
      replies(new TextDecoder().decode(engine.takeOutput()!)).at(-1),
      "250 2.0.0 Message accepted",
    );
  });

  it("a refused large chunk is discarded without being buffered", () => {
    const r = run(
      [
        bytes(EHLO + "BDAT 300000\r\n"),
        ...Array.from({ length: 10 }, () => new Uint8Array(30000).fill(0x41)),
        bytes("NOOP\r\n"),
      ],
    );
    assert.deepEqual(codesAfter(r.output, 2), ["503 5.5.1", "250 2.0.0"]);
    assert.ok(r.maxBuffered <= 30000);
  });
});

describe("engine: BDAT and dataTimeout", () => {
  const options = { idleTimeout: 10_000, dataTimeout: 1_000 };

  function step(engine: SmtpEngine, input: string, now: number): string[] {
    if (input !== "") engine.receive(bytes(input), now);
    const seen: string[] = [];
    for (let ev = engine.nextEvent(); ev.type !== "need-data";) {
      seen.push(
        ev.type === "message-abort"
          ? `abort:${ev.error.code}`
          : ev.type === "close"
          ? `close:${ev.reason}`
          : ev.type,
      );
      if (ev.type === "close") break;
      if (engine.pendingDecision !== null) engine.accept();
      ev = engine.nextEvent();
    }
    return seen;
  }

  it("covers the whole BDAT transaction, not one chunk", () => {
    const engine = new SmtpEngine(options, 0);
    step(engine, TX, 0);
    assert.equal(engine.deadline(), 10_000);
    step(engine, bdat("abc"), 100);
    assert.equal(engine.deadline(), 1_100);
    // A second chunk later: the deadline still counts from the first.
    step(engine, bdat("def"), 900);
    assert.equal(engine.deadline(), 1_100);
    engine.tick(1_099);
    assert.equal(engine.closed, false);
    engine.tick(1_100);
    assert.deepEqual(step(engine, "", 1_100), ["abort:421", "close:timeout"]);
    assert.deepEqual(
      codesAfter(new TextDecoder().decode(engine.takeOutput()!)),
      ["250 2.0.0", "250 2.0.0", "421 4.4.2"],
    );
  });

  it("after the LAST chunk only the idle timeout applies", () => {
    const engine = new SmtpEngine(options, 0);
    step(engine, TX, 0);
    step(engine, bdat("abc"), 100);
    step(engine, bdat("d", true), 500);
    assert.equal(engine.deadline(), 10_500);
  });

  it("a refused chunk with no transaction has only the idle timeout", () => {
    const engine = new SmtpEngine(options, 0);
    step(engine, EHLO + "BDAT 10\r\nabc", 0);
    assert.equal(engine.deadline(), 10_000);
  });
});

describe("engine: BDAT options", () => {
  it("chunking and binaryMime must be booleans", () => {
    for (const key of ["chunking", "binaryMime", "lmtp"]) {
      for (const value of [1, "yes", null]) {
        assert.throws(
          () => new SmtpEngine({ [key]: value } as never),
          (e: unknown) =>
            e instanceof TypeError &&
            e.message === `Cannot use option ${key}: value is not a boolean`,
        );
      }
    }
    const o = new SmtpEngine().options;
    assert.equal(o.chunking, true);
    assert.equal(o.binaryMime, true);
    assert.equal(o.lmtp, false);
  });
});
