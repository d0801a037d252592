// SessionState reads the protocol state (HELO name, ESMTP, user, TLS) from
// its one owner, the engine, and still shows it as own enumerable
// properties: a spread or JSON of the session holds them.
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

describe("SessionState", () => {
  it("reads HELO, ESMTP, user and secure from the engine as it changes", () => {
    const engine = new SmtpEngine({ serverName: "mx" }, 0);
    const s = new SessionState(conn, engine, false);
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

  it("shows them as own enumerable properties (spread, JSON)", () => {
    const engine = new SmtpEngine({ serverName: "mx" }, 0);
    const s = new SessionState(conn, engine, false);
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
      assert.equal(Object.prototype.propertyIsEnumerable.call(s, key), true);
    }
  });
});
