import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SmtpError } from "../mod.ts";
import { formatReply } from "../src/exports/engine.ts";
import { SmtpEngine } from "../src/engine.ts";
import { type EngineOptions, sharedEngineOptions } from "../src/options.ts";
import { bytes, run } from "./helpers/transcript.ts";

/** The rule formatReply implements, written out line by line (no shortcut). */
function reference(
  code: number,
  enhancedCode: string | null,
  text: string | readonly string[],
): string {
  const lines = typeof text === "string" ? text.split(/\r\n|\r|\n/) : text;
  const prefix = enhancedCode === null ? "" : enhancedCode + " ";
  let out = "";
  for (let i = 0; i < lines.length; i++) {
    // deno-lint-ignore no-control-regex
    const line = lines[i].replace(/[\x00-\x1f\x7f]/g, " ");
    out += `${code}${i === lines.length - 1 ? " " : "-"}${prefix}${line}`
      .trimEnd() + "\r\n";
  }
  return out;
}

describe("formatReply", () => {
  it("formats one line with and without an enhanced code", () => {
    assert.equal(
      formatReply(250, "2.1.0", "Sender OK"),
      "250 2.1.0 Sender OK\r\n",
    );
    assert.equal(
      formatReply(220, null, "mx.test ESMTP"),
      "220 mx.test ESMTP\r\n",
    );
  });

  it("drops the space after the code when the text is empty or blank", () => {
    assert.equal(formatReply(250, "2.0.0", ""), "250 2.0.0\r\n");
    assert.equal(formatReply(250, null, ""), "250\r\n");
    assert.equal(
      formatReply(250, "2.0.0", "OK  \u00a0\u3000"),
      "250 2.0.0 OK\r\n",
    );
  });

  it("splits line breaks into a multi-line reply and blanks other control characters", () => {
    assert.equal(
      formatReply(214, "2.0.0", "one\r\ntwo\nthree\rfour"),
      "214-2.0.0 one\r\n214-2.0.0 two\r\n214-2.0.0 three\r\n214 2.0.0 four\r\n",
    );
    assert.equal(
      formatReply(550, "5.7.1", "a\x00b\tc\x7f"),
      "550 5.7.1 a b c\r\n",
    );
    assert.equal(formatReply(250, null, ["a", "b "]), "250-a\r\n250 b\r\n");
  });

  it("gives the reference result for every text built from tricky characters", () => {
    const alphabet = [
      "a",
      "Z",
      " ",
      "\t",
      "\r",
      "\n",
      "\x00",
      "\x0b",
      "\x1f",
      "\x7f",
      "\u0085",
      "\u00a0",
      "é",
      "\u2028",
      "\u3000",
      "\ufeff",
    ];
    let seed = 12345;
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let i = 0; i < 20000; i++) {
      let text = "";
      for (let n = random(7); n > 0; n--) {
        text += alphabet[random(alphabet.length)];
      }
      for (const enhanced of [null, "2.1.0"]) {
        assert.equal(
          formatReply(250, enhanced, text),
          reference(250, enhanced, text),
          JSON.stringify(text),
        );
      }
    }
  });

  it("is what SmtpError.toString() shows", () => {
    assert.equal(
      new SmtpError(550, "5.1.1", "No such user").toString(),
      "550 5.1.1 No such user",
    );
  });
});

describe("takeOutput", () => {
  it("gives each reply's bytes, the frequent ones among many made once", () => {
    // The engine keeps the bytes of replies it sends often; names and
    // message ids make replies seen once, which must not disturb them.
    for (let i = 0; i < 700; i++) {
      const lines = [
        `HELO c${i}.test`,
        "MAIL FROM:<a@b.test>",
        "RCPT TO:<c@d.test>",
        "DATA",
        "x\r\n.",
        "QUIT",
      ];
      const r = run(
        lines.map((l) => bytes(l + "\r\n")),
        { serverName: "mx.test" },
        (ev) => ev.type === "message-end" ? `OK ${i}` : undefined,
      );
      assert.equal(
        r.output,
        "220 mx.test ESMTP smtpd\r\n" +
          `250 mx.test greets c${i}.test\r\n` +
          "250 2.1.0 Sender OK\r\n" +
          "250 2.1.5 Recipient OK\r\n" +
          "354 2.0.0 End data with <CR><LF>.<CR><LF>\r\n" +
          `250 2.0.0 OK ${i}\r\n` +
          "221 2.0.0 mx.test Bye\r\n",
      );
    }
  });
});

describe("the default greeting", () => {
  /** The greeting a new engine on `options` writes. */
  function greet(options: EngineOptions): Uint8Array {
    const engine = new SmtpEngine(options);
    assert.equal(engine.nextEvent().type, "connect");
    engine.accept();
    return engine.takeOutput()!;
  }

  it("is formatted and encoded once for the sessions of shared options", () => {
    const options = sharedEngineOptions({ serverName: "mx.test" });
    const first = greet(options);
    assert.equal(
      new TextDecoder().decode(first),
      "220 mx.test ESMTP smtpd\r\n",
    );
    // The same bytes for every session of these options.
    assert.equal(greet(options), first);
    // Other options greet with their own text.
    const lmtp = sharedEngineOptions({ serverName: "mx.test", lmtp: true });
    assert.equal(
      new TextDecoder().decode(greet(lmtp)),
      "220 mx.test LMTP smtpd\r\n",
    );
    assert.equal(greet(options), first);
  });

  it("is the application's text when it gives one", () => {
    const options = sharedEngineOptions({ serverName: "mx.test" });
    const engine = new SmtpEngine(options);
    engine.nextEvent();
    engine.accept("mx.test Welcome");
    assert.equal(
      new TextDecoder().decode(engine.takeOutput()!),
      "220 mx.test Welcome\r\n",
    );
    // The default text, given as text, is the same reply.
    const again = new SmtpEngine(options);
    again.nextEvent();
    again.accept("mx.test ESMTP smtpd");
    assert.equal(
      new TextDecoder().decode(again.takeOutput()!),
      "220 mx.test ESMTP smtpd\r\n",
    );
  });
});

describe("the default reply to HELO and EHLO", () => {
  /** What a new engine on `options` replies to `line` (a HELO or EHLO). */
  function hello(
    options: EngineOptions,
    line: string,
    text?: string,
  ): Uint8Array {
    const engine = new SmtpEngine(options);
    engine.nextEvent();
    engine.accept();
    engine.takeOutput();
    engine.receive(bytes(line + "\r\n"), 0);
    assert.equal(engine.nextEvent().type, "helo");
    engine.accept(text);
    return engine.takeOutput()!;
  }
  const dec = new TextDecoder();

  it("is made once for sessions that greet with the same name", () => {
    const options = sharedEngineOptions({ serverName: "mx.test" });
    const first = hello(options, "EHLO c.test");
    assert.equal(
      dec.decode(first),
      "250-mx.test greets c.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n" +
        "250-SIZE 26214400\r\n250-ENHANCEDSTATUSCODES\r\n" +
        "250-SMTPUTF8\r\n250-CHUNKING\r\n250-BINARYMIME\r\n250 HELP\r\n",
    );
    assert.equal(hello(options, "EHLO c.test"), first);
    const helo = hello(options, "HELO c.test");
    assert.equal(dec.decode(helo), "250 mx.test greets c.test\r\n");
    assert.equal(hello(options, "HELO c.test"), helo);
  });

  it("greets each name, server and kind of greeting with its own", () => {
    const options = sharedEngineOptions({ serverName: "mx.test" });
    const other = sharedEngineOptions({ serverName: "other.test" });
    const sequence: [EngineOptions, string, string][] = [
      [options, "HELO a.test", "250 mx.test greets a.test\r\n"],
      [options, "HELO b.test", "250 mx.test greets b.test\r\n"],
      [other, "HELO b.test", "250 other.test greets b.test\r\n"],
      [options, "HELO b.test", "250 mx.test greets b.test\r\n"],
      [options, "EHLO b.test", "250-mx.test greets b.test\r\n"],
      [options, "HELO b.test", "250 mx.test greets b.test\r\n"],
      [options, "HELO a.test", "250 mx.test greets a.test\r\n"],
    ];
    for (const [o, line, reply] of sequence) {
      assert.ok(dec.decode(hello(o, line)).startsWith(reply), line);
    }
    // The application's text replaces the default, and is not kept.
    assert.equal(
      dec.decode(hello(options, "HELO a.test", "mx.test Hi")),
      "250 mx.test Hi\r\n",
    );
    assert.equal(
      dec.decode(hello(options, "HELO a.test")),
      "250 mx.test greets a.test\r\n",
    );
  });

  it("offers STARTTLS before TLS only, with the same client name", () => {
    const plain = sharedEngineOptions({
      serverName: "mx.test",
      startTls: true,
    });
    const secure = sharedEngineOptions({
      serverName: "mx.test",
      startTls: true,
      secure: true,
    });
    assert.ok(dec.decode(hello(plain, "EHLO c.test")).includes("STARTTLS"));
    assert.ok(!dec.decode(hello(secure, "EHLO c.test")).includes("STARTTLS"));
    assert.ok(dec.decode(hello(plain, "EHLO c.test")).includes("STARTTLS"));
  });
});

describe("the 221 to QUIT", () => {
  it("is formatted and encoded once for the sessions of shared options", () => {
    /** What a new engine on `options` replies to QUIT. */
    function bye(options: EngineOptions): Uint8Array {
      const engine = new SmtpEngine(options);
      engine.nextEvent();
      engine.accept();
      engine.takeOutput();
      engine.receive(bytes("QUIT\r\n"), 0);
      assert.equal(engine.nextEvent().type, "close");
      return engine.takeOutput()!;
    }
    const options = sharedEngineOptions({ serverName: "mx.test" });
    const first = bye(options);
    assert.equal(new TextDecoder().decode(first), "221 2.0.0 mx.test Bye\r\n");
    // The same bytes for every session of these options.
    assert.equal(bye(options), first);
    const other = sharedEngineOptions({ serverName: "other.test" });
    assert.equal(
      new TextDecoder().decode(bye(other)),
      "221 2.0.0 other.test Bye\r\n",
    );
  });
});

describe("acceptQueued", () => {
  /**
   * A new engine on `options` at the message-end of one message (two
   * recipients), its replies so far taken; `after` is sent with the body.
   */
  function atMessageEnd(options: EngineOptions, after = ""): SmtpEngine {
    const engine = new SmtpEngine(options, 0);
    const session = [
      "LHLO c.test\r\nMAIL FROM:<a@b.test>\r\n",
      "RCPT TO:<c@d.test>\r\nRCPT TO:<e@f.test>\r\nDATA\r\n",
      "x\r\n.\r\n" + after,
    ];
    if (!options.lmtp) session[0] = session[0].replace("LHLO", "EHLO");
    for (;;) {
      const ev = engine.nextEvent();
      if (ev.type === "message-end") break;
      if (ev.type === "need-data") {
        engine.receive(bytes(session.shift()!), 0);
      } else if (ev.type !== "message-start" && ev.type !== "data") {
        engine.accept();
      }
    }
    engine.takeOutput();
    return engine;
  }
  const text = (out: Uint8Array | null) => new TextDecoder().decode(out!);
  const options = sharedEngineOptions({ serverName: "mx.test" });

  it("replies 250 2.0.0 OK <id>, each reply's bytes kept as the next ones are written", () => {
    const taken: [string, Uint8Array][] = [];
    // Enough replies to fill more than one slab of output.
    for (let i = 0; i < 1500; i++) {
      const id = `${"0123456789abcdef".slice(i % 16)}${i.toString(36)}`;
      const engine = atMessageEnd(options);
      engine.acceptQueued(id);
      const out = engine.takeOutput();
      assert.equal(text(out), `250 2.0.0 OK ${id}\r\n`);
      assert.equal(engine.takeOutput(), null);
      assert.equal(engine.nextEvent().type, "need-data");
      taken.push([id, out!]);
    }
    for (const [id, out] of taken) {
      assert.equal(text(out), `250 2.0.0 OK ${id}\r\n`);
    }
  });

  it("is accept(`OK ${id}`) for any id, in SMTP and in LMTP, and with pipelined commands", () => {
    const ids = [
      "m1",
      "a b",
      "é1",
      "x\r\ny",
      " ",
      "",
      "t\x7f",
      "z".repeat(300),
    ];
    for (const lmtp of [false, true]) {
      const o = sharedEngineOptions({ serverName: "mx.test", lmtp });
      for (const after of ["", "QUIT\r\n"]) {
        for (const id of ids) {
          const queued = atMessageEnd(o, after);
          const accepted = atMessageEnd(o, after);
          queued.acceptQueued(id);
          accepted.accept(`OK ${id}`);
          let a = "";
          let b = "";
          for (;;) {
            const x = queued.nextEvent().type;
            const y = accepted.nextEvent().type;
            assert.equal(x, y);
            a += queued.hasOutput ? text(queued.takeOutput()) : "";
            b += accepted.hasOutput ? text(accepted.takeOutput()) : "";
            if (x === "need-data" || x === "close") break;
          }
          assert.equal(a, b, JSON.stringify({ lmtp, after, id }));
          assert.match(a, /^250[ -]/);
        }
      }
    }
  });

  it("throws as accept() does when no message-end is pending, and does nothing once closed", () => {
    const engine = new SmtpEngine(options, 0);
    assert.throws(() => engine.acceptQueued("m1"), /no decision is pending/);
    const closed = atMessageEnd(options);
    closed.end();
    while (closed.nextEvent().type !== "close") { /* to the close */ }
    closed.takeOutput();
    closed.acceptQueued("m1");
    assert.equal(closed.takeOutput(), null);
  });
});
