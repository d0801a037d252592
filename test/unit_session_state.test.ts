// SessionState shows the protocol state (HELO name, ESMTP, user, TLS) that
// its one owner, the engine, writes into it as it changes: own enumerable
// data properties, so a spread or JSON of the session holds them.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SessionState } from "../src/session_state.ts";
import { SmtpEngine } from "../src/engine.ts";
import type { Connection } from "../src/transport.ts";

const conn = {
  remoteAddr: { transport: "tcp", hostname: "192.0.2.7", port: 40000 },
  localAddr: { transport: "tcp", hostname: "127.0.0.1", port: 2525 },
  tls: null,
} as unknown as Connection;

const enc = new TextEncoder();

/** Runs the engine until it needs data, accepting every decision. */
function pump(engine: SmtpEngine): void {
  for (;;) {
    const ev = engine.nextEvent();
    if (ev.type === "need-data" || ev.type === "close") return;
    if (engine.pendingDecision !== null) engine.accept();
  }
}

/** A session and the engine that writes its protocol state. */
function open(
  options: ConstructorParameters<typeof SmtpEngine>[0] = { serverName: "mx" },
): { s: SessionState; engine: SmtpEngine } {
  const s = new SessionState(conn, false);
  const engine = new SmtpEngine(options, 0, s);
  return { s, engine };
}

describe("SessionState", () => {
  it("follows HELO, ESMTP and secure as the engine changes them", () => {
    const { s, engine } = open();
    pump(engine);
    assert.equal(s.heloName, null);
    assert.equal(s.esmtp, false);
    assert.equal(s.secure, false);
    assert.equal(s.user, null);
    engine.receive(enc.encode("EHLO client.example\r\n"), 0);
    pump(engine);
    assert.equal(s.heloName, "client.example");
    assert.equal(s.esmtp, true);
    engine.receive(enc.encode("HELO other.example\r\n"), 0);
    pump(engine);
    assert.equal(s.heloName, "other.example");
    assert.equal(s.esmtp, false);
  });

  it("is secure from the start on an implicit-TLS engine", () => {
    const { s } = open({ serverName: "mx", secure: true });
    assert.equal(s.secure, true);
  });

  it("follows the user after AUTH and forgets HELO and user after STARTTLS", () => {
    const { s, engine } = open({
      serverName: "mx",
      startTls: true,
      authMechanisms: ["PLAIN"],
      allowInsecureAuth: true,
    });
    pump(engine);
    const plain = btoa("\0alice\0secret");
    engine.receive(enc.encode(`EHLO c.example\r\nAUTH PLAIN ${plain}\r\n`), 0);
    pump(engine);
    assert.equal(s.user, "alice");
    assert.equal(s.heloName, "c.example");
    engine.receive(enc.encode("STARTTLS\r\n"), 0);
    pump(engine);
    engine.tlsStarted();
    assert.equal(s.secure, true);
    assert.equal(s.heloName, null);
    assert.equal(s.esmtp, false);
    assert.equal(s.user, null);
  });

  it("a hook that writes them does not change what the engine decides", () => {
    const { s, engine } = open({ serverName: "mx", authRequired: true });
    pump(engine);
    engine.receive(enc.encode("EHLO client.example\r\n"), 0);
    pump(engine);
    engine.takeOutput();
    // Plain data: an application may write them, but the engine owns them.
    s.user = "mallory";
    s.secure = true;
    engine.receive(enc.encode("MAIL FROM:<a@b.example>\r\n"), 0);
    pump(engine);
    assert.match(new TextDecoder().decode(engine.takeOutput()!), /^530 /);
    assert.equal(engine.user, null);
    assert.equal(engine.secure, false);
  });

  it("shows them as own enumerable data properties (spread, JSON), no accessors", () => {
    const { s, engine } = open();
    pump(engine);
    engine.receive(enc.encode("EHLO client.example\r\n"), 0);
    pump(engine);
    const copy = { ...s };
    assert.equal(copy.heloName, "client.example");
    assert.equal(copy.esmtp, true);
    assert.equal(copy.secure, false);
    assert.equal(copy.user, null);
    const json = JSON.parse(JSON.stringify(s));
    assert.equal(json.heloName, "client.example");
    assert.equal(json.remoteAddress, "192.0.2.7");
    assert.equal(json.lmtp, false);
    for (const key of ["heloName", "esmtp", "secure", "user"]) {
      const d = Object.getOwnPropertyDescriptor(s, key);
      assert.equal(d?.enumerable, true, key);
      // A plain value: opening a session defines no getter.
      assert.equal(d?.get, undefined, key);
      assert.equal("value" in d!, true, key);
    }
  });
});
