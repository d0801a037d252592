// commandTimeout and sessionTimeout in the engine, with fake time: a command
// line must complete within commandTimeout of its first byte, a session
// within sessionTimeout of its start; both answer 421 4.4.2 and close.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type EngineOptions, SmtpEngine } from "../src/exports/engine.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** An engine past its greeting, answering every decision with accept. */
function started(options: EngineOptions, now = 0) {
  const engine = new SmtpEngine({ serverName: "mx", ...options }, now);
  const events: string[] = [];
  const pump = () => {
    for (;;) {
      const ev = engine.nextEvent();
      if (ev.type === "need-data") return;
      events.push(ev.type === "close" ? `close:${ev.reason}` : ev.type);
      if (ev.type === "close") return;
      if (engine.pendingDecision !== null) engine.accept();
    }
  };
  pump();
  const out = () => dec.decode(engine.takeOutput() ?? new Uint8Array());
  out();
  return {
    engine,
    events,
    out,
    /** Feeds `text` at time `t`, answers what it asks, returns the replies. */
    feed(text: string, t: number) {
      engine.receive(enc.encode(text), t);
      pump();
      return out();
    },
    /** Ticks at `t`, then reads what it wrote. */
    tick(t: number) {
      engine.tick(t);
      pump();
      return out();
    },
  };
}

describe("commandTimeout", () => {
  it("a line dribbled byte by byte times out commandTimeout after its first byte", () => {
    const s = started({ commandTimeout: 500, idleTimeout: 10_000 });
    const line = "EHLO client.example\r\n";
    // One byte per 100 ms: each resets the idle clock, not the command's.
    for (let i = 0; i < 5; i++) s.feed(line[i], 1000 + i * 100);
    assert.equal(s.engine.deadline(), 1500);
    assert.equal(s.tick(1499), "");
    assert.equal(
      s.tick(1500),
      "421 4.4.2 mx Command timeout, closing connection\r\n",
    );
    assert.deepEqual(s.events, ["connect", "close:timeout"]);
  });

  it("a slow line that completes within it passes, and the next starts afresh", () => {
    const s = started({ commandTimeout: 500, idleTimeout: 10_000 });
    const line = "NOOP\r\n";
    let got = "";
    for (let i = 0; i < line.length; i++) got += s.feed(line[i], 1000 + i * 80);
    assert.match(got, /^250 /);
    // Nothing in progress: only the idle deadline (from the last byte).
    assert.equal(s.engine.deadline(), 1400 + 10_000);
    s.feed("NO", 5000);
    assert.equal(s.engine.deadline(), 5500);
    assert.match(s.feed("OP\r\n", 5400), /^250 /);
    assert.equal(s.engine.deadline(), 5400 + 10_000);
  });

  it("a pipelined remainder counts from the chunk that brought it", () => {
    const s = started({ commandTimeout: 500, idleTimeout: 10_000 });
    let got = s.feed("NO", 1000);
    // Completes the first line and starts the next one.
    got += s.feed("OP\r\nNO", 1400);
    assert.equal(s.engine.deadline(), 1900);
    got += s.feed("OP\r\nNO", 1800);
    assert.equal(s.engine.deadline(), 2300);
    got += s.feed("OP\r\n", 2200);
    assert.equal(got.match(/^250 /gm)?.length, 3);
    assert.equal(s.engine.closed, false);
  });

  it("time in a hook does not count against a pipelined line", () => {
    const engine = new SmtpEngine({ commandTimeout: 500 }, 0);
    assert.equal(engine.nextEvent().type, "connect");
    engine.accept();
    engine.receive(enc.encode("HELO a\r\nNO"), 100);
    assert.equal(engine.nextEvent().type, "helo");
    // The hook takes 5 s; the driver then tells the engine (empty receive).
    assert.equal(engine.deadline(), Infinity);
    engine.accept();
    engine.receive(new Uint8Array(0), 5100);
    assert.equal(engine.nextEvent().type, "need-data");
    assert.equal(engine.deadline(), 5600);
  });

  it("does not apply to a message body (dataTimeout does)", () => {
    const s = started({
      commandTimeout: 500,
      idleTimeout: 10_000,
      dataTimeout: 60_000,
    });
    s.feed("HELO a\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n", 0);
    s.feed("DATA\r\n", 0);
    // A body line dribbled slowly: only idle and DATA deadlines apply.
    for (let t = 1000; t <= 5000; t += 1000) s.feed("x", t);
    assert.equal(s.engine.deadline(), 5000 + 10_000);
    assert.match(s.feed("\r\n.\r\n", 6000), /^250 /);
    // A command after the body starts its own clock.
    s.feed("QU", 7000);
    assert.equal(s.engine.deadline(), 7500);
    assert.equal(s.engine.closed, false);
  });

  it("applies to an over-long line being discarded", () => {
    const s = started({ commandTimeout: 500, maxLineLength: 64 });
    s.feed("X".repeat(100), 1000);
    s.feed("X", 1400);
    assert.equal(s.engine.deadline(), 1500);
    assert.match(s.tick(1500), /^421 4\.4\.2 /);
  });

  it("applies to AUTH response lines", () => {
    const s = started({
      commandTimeout: 500,
      authMechanisms: ["PLAIN"],
      allowInsecureAuth: true,
    });
    assert.match(s.feed("EHLO a\r\nAUTH PLAIN\r\n", 1000), /334 /);
    s.feed("AGFsaWNl", 2000);
    assert.equal(s.engine.deadline(), 2500);
    assert.match(s.tick(2500), /^421 4\.4\.2 /);
  });

  it("Infinity turns it off", () => {
    const s = started({ commandTimeout: Infinity, idleTimeout: 1000 });
    s.feed("NO", 0);
    assert.equal(s.engine.deadline(), 1000);
  });
});

describe("sessionTimeout", () => {
  it("ends a busy session sessionTimeout after it started", () => {
    const s = started({ sessionTimeout: 3000, idleTimeout: 1000 }, 100);
    for (let t = 500; t < 3100; t += 500) s.feed("NOOP\r\n", t);
    assert.equal(s.engine.deadline(), 3100);
    assert.equal(s.tick(3099), "");
    assert.equal(
      s.tick(3100),
      "421 4.4.2 mx Session too long, closing connection\r\n",
    );
    assert.deepEqual(s.events.slice(-1), ["close:timeout"]);
  });

  it("aborts a message in transfer", () => {
    const s = started({ sessionTimeout: 3000 });
    s.feed(
      "HELO a\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n",
      0,
    );
    s.feed("body\r\n", 2000);
    assert.equal(s.engine.deadline(), 3000);
    assert.match(s.tick(3000), /^421 4\.4\.2 /);
    assert.deepEqual(s.events.slice(-2), ["message-abort", "close:timeout"]);
  });

  it("defaults: commandTimeout 60 s, sessionTimeout 30 min; Infinity allowed", () => {
    const engine = new SmtpEngine();
    assert.equal(engine.options.commandTimeout, 60_000);
    assert.equal(engine.options.sessionTimeout, 1_800_000);
    const off = new SmtpEngine({
      commandTimeout: Infinity,
      sessionTimeout: Infinity,
    });
    assert.equal(off.options.sessionTimeout, Infinity);
  });

  it("bad values throw a TypeError", () => {
    for (const name of ["commandTimeout", "sessionTimeout"]) {
      for (const value of [0, -1, NaN, 1.5, "60000"]) {
        assert.throws(
          () => new SmtpEngine({ [name]: value } as EngineOptions),
          (e: unknown) =>
            e instanceof TypeError &&
            e.message.startsWith(`Cannot use option ${name}: `),
        );
      }
    }
  });
});
