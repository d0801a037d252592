// Property tests of the protocol engine with fast-check: random byte
// streams and random sequences of command fragments, fed in random chunks.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { SmtpError } from "../mod.ts";
import { type EngineOptions, SmtpEngine } from "../src/exports/engine.ts";

const NUM_RUNS = 500;

/** Bytes as a string, one character per byte (no decoding). */
function latin1(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return s;
}

const enc = new TextEncoder();

/** What one run of the engine produced. */
interface Outcome {
  output: string;
  events: string[];
  /** Bodies of delivered messages, one character per byte. */
  messages: string[];
  /** The command that carried each delivered message (DATA or BDAT). */
  via: string[];
  closed: string | null;
}

/**
 * Runs the engine over `chunks`, answering decisions from `decisions` in
 * turn (0 rejects, anything else accepts), and checks the invariants that
 * must hold at every step:
 * - bufferedBytes after receive() is at most the chunk plus maxLineLength,
 *   and after the engine asked for data it is at most maxLineLength;
 * - no message hands out more body bytes than maxMessageSize;
 * - nothing comes after a close event.
 */
function drive(
  chunks: Uint8Array[],
  options: EngineOptions,
  decisions: number[],
  end = false,
): Outcome {
  const engine = new SmtpEngine(options, 0);
  const maxLine = engine.options.maxLineLength;
  const maxSize = engine.options.maxMessageSize;
  const events: string[] = [];
  const messages: string[] = [];
  const via: string[] = [];
  let output = "";
  let closed: string | null = null;
  let body = "";
  let command = "";
  let k = 0;
  const pump = () => {
    for (;;) {
      const ev = engine.nextEvent();
      if (ev.type === "need-data") break;
      if (ev.type === "close") {
        closed = ev.reason;
        break;
      }
      if (ev.type === "data") {
        const text = latin1(ev.chunk);
        body += text;
        assert.ok(body.length <= maxSize, "body bytes past maxMessageSize");
        // Consecutive data events merged, to compare feedings.
        const last = events.length - 1;
        if (events[last]?.startsWith("data:")) events[last] += text;
        else events.push("data:" + text);
        continue;
      }
      if (ev.type === "message-start") {
        body = "";
        command = ev.command;
      }
      if (ev.type === "mail") events.push(`mail:${ev.from.address}`);
      else if (ev.type === "rcpt") events.push(`rcpt:${ev.to.address}`);
      else if (ev.type === "message-end") {
        assert.equal(ev.size, body.length);
        events.push(ev.type);
      } else events.push(ev.type);
      if (engine.pendingDecision !== null) {
        const d = decisions.length === 0
          ? 1
          : decisions[k++ % decisions.length];
        if (d === 0) {
          engine.reject(
            ev.type === "starttls"
              ? new SmtpError(454, "4.7.0", "No TLS")
              : new SmtpError(550, "5.7.1", "No"),
          );
        } else {
          if (ev.type === "message-end") {
            messages.push(body);
            via.push(command);
          }
          engine.accept();
          if (ev.type === "starttls") engine.tlsStarted();
        }
      }
    }
    assert.ok(
      engine.bufferedBytes <= maxLine,
      `bufferedBytes ${engine.bufferedBytes} after need-data`,
    );
    const out = engine.takeOutput();
    if (out !== null) output += latin1(out);
  };
  pump();
  for (const chunk of chunks) {
    if (closed !== null) break;
    engine.receive(chunk, 0);
    assert.ok(
      engine.bufferedBytes <= chunk.length + maxLine,
      `bufferedBytes ${engine.bufferedBytes} for a chunk of ${chunk.length}`,
    );
    pump();
  }
  if (end && closed === null) {
    engine.end();
    pump();
    assert.equal(closed, "eof");
  }
  if (closed !== null) {
    assert.equal(engine.nextEvent().type, "close");
    assert.equal(engine.takeOutput(), null);
  }
  return { output, events, messages, via, closed };
}

/** A string as a regular expression that matches exactly it. */
function escape(s: string): string {
  return s.replace(/[\\^$.*+?()[\]{}|/]/g, "\\$&");
}

/** Splits `input` at the given offsets (taken modulo its length). */
function split(input: Uint8Array, cuts: number[]): Uint8Array[] {
  if (input.length === 0) return [input];
  const at = [...new Set(cuts.map((c) => c % input.length))].sort((a, b) =>
    a - b
  );
  const chunks: Uint8Array[] = [];
  let prev = 0;
  for (const c of at) {
    if (c > prev) chunks.push(input.subarray(prev, c));
    prev = Math.max(prev, c);
  }
  chunks.push(input.subarray(prev));
  return chunks;
}

/** Command fragments a client (or an attacker) might send. */
const FRAGMENTS = [
  "EHLO c.test\r\n",
  "HELO c.test\r\n",
  "ehlo x\r\n",
  "MAIL FROM:<a@b.test>\r\n",
  "MAIL FROM:<>\r\n",
  "MAIL FROM:<a@b> SIZE=20 BODY=8BITMIME\r\n",
  "MAIL FROM:<ü@b> SMTPUTF8\r\n",
  "MAIL FROM:<a@b> RET=FULL ENVID=x+2By\r\n",
  "RCPT TO:<c@d.test>\r\n",
  "RCPT TO:<postmaster>\r\n",
  "RCPT TO:<c@d> NOTIFY=NEVER ORCPT=rfc822;c@d\r\n",
  'RCPT TO:<"q x"@[192.0.2.1]>\r\n',
  "DATA\r\n",
  "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n",
  "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@f>\r\nDATA\r\n",
  "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: x\r\n\r\n..hi\r\n.\r\n",
  "Subject: x\r\n\r\nhello\r\n",
  "RSET\r\n",
  "NOOP\r\n",
  "QUIT\r\n",
  "VRFY x\r\n",
  "HELP\r\n",
  "STARTTLS\r\n",
  "\r\n.\r\n",
  ".\r\n",
  "..",
  ".",
  "\r\n",
  "\r",
  "\n",
  "\0",
  "line of text",
  "\xff\xfe",
  "ü",
  "x".repeat(70),
  "x".repeat(520),
  "LHLO c.test\r\n",
  "MAIL FROM:<a@b> BODY=BINARYMIME\r\n",
  "BDAT 5\r\n",
  "BDAT 0 LAST\r\n",
  "BDAT 3 LAST\r\n",
  "BDAT 2\r\n\r\n",
  "BDAT 22\r\nMAIL FROM:<evil@x>\r\n",
  "BDAT 300\r\n",
  "bdat 1 last\r\n\n",
  "BDAT 99999999999999999999\r\n",
  "BDAT x\r\n",
  "BDAT 4 FIRST\r\n",
];

const fragmentBytes = fc.constantFrom(
  ...FRAGMENTS.map((f) =>
    // One byte per character for the \xNN escapes, UTF-8 for the rest.
    /[\u0100-\uffff]|ü/.test(f)
      ? enc.encode(f)
      : Uint8Array.from(f, (c) => c.charCodeAt(0))
  ),
);

/** Random bytes, as bytes or as UTF-8 text. */
const junk = fc.oneof(
  fc.uint8Array({ maxLength: 12 }),
  fc.string({ maxLength: 12 }).map((s) => enc.encode(s)),
);

/**
 * A run of 32 to 160 body bytes, mostly above CR (text, 8-bit, 0x0e) with
 * a few control bytes among them: long enough for the engine's word-at-a-
 * time scan, which byte-by-byte feeding never uses.
 */
const textRun = fc
  .array(
    fc.oneof(
      { weight: 12, arbitrary: fc.constantFrom(0x41, 0x20, 0x2e, 0x7f) },
      { weight: 4, arbitrary: fc.constantFrom(0x0e, 0x80, 0x8a, 0x8d, 0xff) },
      { weight: 1, arbitrary: fc.constantFrom(0x00, 0x09, 0x0a, 0x0c, 0x0d) },
    ),
    { minLength: 32, maxLength: 160 },
  )
  .map((bytes) => Uint8Array.from(bytes));

/** Pieces of a message body, including fake and real terminators. */
const bodyPiece = fc.oneof({
  weight: 6,
  arbitrary: fc.constantFrom(
    "Subject: x\r\n",
    "text",
    "\r\n",
    "\r\n\r\n",
    ".",
    "..",
    ".\r\n",
    "\r",
    "\n",
    "\0",
    "\r\n.\r",
    "\n.\n",
    "\r\n.\r\n",
    "MAIL FROM:<evil@x>\r\n",
  ),
}, { weight: 1, arbitrary: textRun });

const concat = (parts: (string | Uint8Array)[]): Uint8Array => {
  const bytes = parts.map((p) => typeof p === "string" ? enc.encode(p) : p);
  const all = new Uint8Array(bytes.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of bytes) {
    all.set(p, at);
    at += p.length;
  }
  return all;
};

/** MAIL, one to three RCPTs, DATA, a body and (mostly) its end. */
const transaction = fc
  .tuple(
    fc.constantFrom(
      "MAIL FROM:<a@b.test>\r\n",
      "MAIL FROM:<>\r\n",
      "MAIL FROM:<a@b> SIZE=20 BODY=8BITMIME\r\n",
      "MAIL FROM:<ü@b> SMTPUTF8\r\n",
    ),
    fc.array(
      fc.constantFrom(
        "RCPT TO:<c@d.test>\r\n",
        "RCPT TO:<postmaster>\r\n",
        "RCPT TO:<c@d> NOTIFY=NEVER\r\n",
      ),
      { minLength: 1, maxLength: 3 },
    ),
    fc.array(bodyPiece, { maxLength: 10 }),
    fc.constantFrom("\r\n.\r\n", "\r\n.\r\n", ".\r\n", ""),
  )
  .map(([mail, rcpts, body, end]) =>
    concat([mail, ...rcpts, "DATA\r\n", ...body, end])
  );

/** A BDAT command with its chunk of body pieces (sized right). */
const chunk = fc
  .tuple(fc.array(bodyPiece, { maxLength: 4 }), fc.boolean())
  .map(([pieces, last]) => {
    const data = concat(pieces);
    return concat([`BDAT ${data.length}${last ? " LAST" : ""}\r\n`, data]);
  });

/** MAIL, RCPT, then BDAT chunks (and other commands between them). */
const chunkedTransaction = fc
  .tuple(
    fc.constantFrom(
      "MAIL FROM:<a@b.test>\r\n",
      "MAIL FROM:<a@b> BODY=BINARYMIME\r\n",
      "MAIL FROM:<a@b> BODY=8BITMIME\r\n",
    ),
    fc.array(fc.constantFrom("RCPT TO:<c@d.test>\r\n", "RCPT TO:<e@f>\r\n"), {
      minLength: 1,
      maxLength: 2,
    }),
    fc.array(
      fc.oneof(
        { weight: 6, arbitrary: chunk },
        {
          weight: 1,
          arbitrary: fc.constantFrom("RSET\r\n", "NOOP\r\n", "DATA\r\n")
            .map((s) => enc.encode(s)),
        },
      ),
      { maxLength: 5 },
    ),
  )
  .map(([mail, rcpts, chunks]) => concat([mail, ...rcpts, ...chunks]));

/** A plausible session: mostly a greeting, then commands, transactions and junk. */
const sessionBytes = fc
  .tuple(
    fc.constantFrom(
      "",
      "EHLO c.test\r\n",
      "EHLO c.test\r\n",
      "HELO c\r\n",
      "LHLO c.test\r\n",
    ),
    fc.array(
      fc.oneof(
        { weight: 3, arbitrary: fragmentBytes },
        { weight: 3, arbitrary: transaction },
        { weight: 2, arbitrary: chunkedTransaction },
        { weight: 1, arbitrary: junk },
      ),
      { maxLength: 12 },
    ),
  )
  .map(([greeting, rest]) => concat([greeting, ...rest]));

/** Random bytes or a plausible session. */
const input = fc.oneof(
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 400 }) },
  { weight: 3, arbitrary: sessionBytes },
);

const options: fc.Arbitrary<EngineOptions> = fc.record({
  maxLineLength: fc.constantFrom(64, 100, 512),
  maxMessageSize: fc.constantFrom(1, 16, 200, Infinity),
  maxRecipients: fc.integer({ min: 1, max: 3 }),
  maxBadCommands: fc.integer({ min: 1, max: 20 }),
  bareLineEnding: fc.constantFrom("reject" as const, "normalize" as const),
  dsn: fc.boolean(),
  smtputf8: fc.boolean(),
  startTls: fc.boolean(),
  traceCommands: fc.boolean(),
  chunking: fc.constantFrom(true, true, false),
  binaryMime: fc.boolean(),
  lmtp: fc.constantFrom(false, false, false, true),
});

const decisions = fc.array(fc.nat(9), { maxLength: 8 });
const cuts = fc.array(fc.nat(), { maxLength: 12 });

describe("engine properties", () => {
  it("random input in random chunks never throws", () => {
    fc.assert(
      fc.property(input, options, decisions, cuts, (data, opts, ds, cs) => {
        drive(split(data, cs), opts, ds, true);
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it("every reply line matches the SMTP reply grammar and ends with CRLF", () => {
    fc.assert(
      fc.property(input, options, decisions, cuts, (data, opts, ds, cs) => {
        const { output } = drive(split(data, cs), opts, ds, true);
        if (output === "") return;
        assert.ok(output.endsWith("\r\n"));
        const lines = output.slice(0, -2).split("\r\n");
        let continued: string | null = null;
        for (const line of lines) {
          assert.match(line, /^[2-5]\d\d[ -].*$/);
          assert.doesNotMatch(line, /[\r\n]/);
          // A continuation line carries the code of the line before it.
          if (continued !== null) assert.equal(line.slice(0, 3), continued);
          continued = line[3] === "-" ? line.slice(0, 3) : null;
        }
        assert.equal(continued, null, "the last reply is complete");
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it("a message is delivered only after 354 and CRLF.CRLF, or a BDAT LAST", () => {
    fc.assert(
      fc.property(input, options, decisions, cuts, (data, opts, ds, cs) => {
        const r = drive(split(data, cs), opts, ds);
        if (r.messages.length === 0) return;
        const text = latin1(data);
        if (r.via.includes("BDAT")) {
          assert.notEqual(opts.chunking, false);
          assert.match(text, /BDAT \d+ LAST\r\n/i);
        }
        const viaData = r.messages.filter((_, i) => r.via[i] === "DATA");
        if (viaData.length === 0) return;
        assert.ok(r.output.includes("\r\n354 ") || r.output.startsWith("354"));
        assert.ok(text.includes("\r\n.\r\n"));
        if (opts.bareLineEnding !== "reject") return;
        // With the default policy the body is what was sent, dot-unstuffed:
        // each of its lines was sent as is or with one more leading dot
        // (a line that starts with a dot lost one), between the CRLF that
        // ended the DATA line and ".CRLF".
        for (const body of viaData) {
          assert.ok(body === "" || body.endsWith("\r\n"));
          assert.doesNotMatch(body, /\r(?!\n)|(?<!\r)\n/);
          const lines = body === "" ? [] : body.slice(0, -2).split("\r\n");
          const sent = lines.map((l) =>
            (l === "" ? "" : l[0] === "." ? "\\." : "\\.?") + escape(l) +
            "\r\n"
          );
          const re = new RegExp("\r\n" + sent.join("") + "\\.\r\n");
          assert.match(text, re);
        }
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it("a BDAT message is delivered only after its LAST chunk, byte for byte", () => {
    const chunks = fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 5 });
    fc.assert(
      fc.property(
        chunks,
        fc.boolean(),
        fc.boolean(),
        cuts,
        (parts, last, binary, cs) => {
          const pieces: Uint8Array[] = [];
          parts.forEach((p, i) => {
            const isLast = last && i === parts.length - 1;
            pieces.push(
              enc.encode(`BDAT ${p.length}${isLast ? " LAST" : ""}\r\n`),
              p,
            );
          });
          if (last && parts.length === 0) {
            pieces.push(enc.encode("BDAT 0 LAST\r\n"));
          }
          const data = concat([
            "EHLO c.test\r\n",
            `MAIL FROM:<a@b>${binary ? " BODY=BINARYMIME" : ""}\r\n`,
            "RCPT TO:<c@d>\r\n",
            ...pieces,
          ]);
          const r = drive(split(data, cs), { bareLineEnding: "normalize" }, []);
          if (!last) {
            assert.deepEqual(r.messages, []);
            return;
          }
          assert.equal(r.messages.length, 1);
          const sent = latin1(concat(parts));
          if (binary) assert.equal(r.messages[0], sent);
          else {
            // Normalized: every bare CR or LF became CRLF.
            assert.equal(
              r.messages[0],
              sent.replace(/\r\n|\r|\n/g, "\r\n"),
            );
          }
          // One reply per BDAT, none lost and none run as a command.
          const replies = r.output.split("\r\n").filter((l) => l[3] === " ");
          assert.equal(replies.length, 4 + Math.max(parts.length, 1));
          assert.ok(replies.slice(1).every((l) => l.startsWith("250 ")));
        },
      ),
      { numRuns: NUM_RUNS },
    );
  });

  it("the engine buffers at most one line and a small body limit holds", () => {
    // drive() checks bufferedBytes at every step and the size of every body.
    fc.assert(
      fc.property(
        input,
        fc.constantFrom(1, 5, 30),
        fc.integer({ min: 1, max: 64 }),
        (data, maxMessageSize, size) => {
          const chunks: Uint8Array[] = [];
          for (let i = 0; i < data.length; i += size) {
            chunks.push(data.subarray(i, i + size));
          }
          const r = drive(chunks, { maxMessageSize, maxLineLength: 64 }, []);
          for (const body of r.messages) {
            assert.ok(body.length <= maxMessageSize);
          }
        },
      ),
      { numRuns: NUM_RUNS },
    );
  });

  it("splitting the input at random offsets gives the same result", () => {
    fc.assert(
      fc.property(input, options, decisions, cuts, (data, opts, ds, cs) => {
        const whole = drive([data], opts, ds);
        const parts = drive(split(data, cs), opts, ds);
        // With STARTTLS accepted, what the whole feeding sent after the
        // STARTTLS line is discarded, unlike separately fed chunks.
        if (whole.events.includes("starttls")) return;
        assert.deepEqual(parts, whole);
      }),
      { numRuns: NUM_RUNS },
    );
  });

  it("byte-by-byte feeding gives the same result as whole feeding", () => {
    fc.assert(
      fc.property(sessionBytes, options, decisions, (data, opts, ds) => {
        const whole = drive([data], opts, ds);
        if (whole.events.includes("starttls")) return;
        // The same bytes at every alignment of the underlying buffer.
        for (let shift = 1; shift < 4; shift++) {
          const moved = new Uint8Array(data.length + shift).subarray(shift);
          moved.set(data);
          assert.deepEqual(drive([moved], opts, ds), whole);
        }
        const bytes: Uint8Array[] = [];
        for (let i = 0; i < data.length; i++) {
          bytes.push(data.subarray(i, i + 1));
        }
        assert.deepEqual(drive(bytes, opts, ds), whole);
      }),
      { numRuns: NUM_RUNS },
    );
  });
});
