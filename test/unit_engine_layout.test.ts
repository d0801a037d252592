// What an engine keeps per session: the fields only some sessions use
// (AUTH's user, a refused BDAT chunk, LMTP replies owed, an overlong
// line's CR, the event queue) live in side objects made with their first
// use, so that an idle session's core carries none of them.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { SmtpEngine } from "../src/engine.ts";
import { EngineCore } from "../src/engine/core.ts";
import { resolveEngineOptions } from "../src/options.ts";

const enc = new TextEncoder();

describe("engine layout", () => {
  it("a new core has no field for what only some sessions use", () => {
    const core = new EngineCore(resolveEngineOptions({}), 0);
    const own = Object.keys(core);
    for (const rare of ["user", "skipped", "owedReplies", "discardCR"]) {
      assert.ok(!own.includes(rare), `${rare} is an own field`);
    }
    assert.equal(core.queue, null);
    assert.equal(core.extras, null);
    assert.equal(core.auth, null);
    // Their defaults, read through the core.
    assert.equal(core.user, null);
    assert.equal(core.skipped, null);
    assert.equal(core.owedReplies, 0);
    assert.equal(core.discardCR, false);
  });

  it("writing a default value makes no side object", () => {
    const core = new EngineCore(resolveEngineOptions({}), 0);
    core.user = null;
    core.owedReplies = 0;
    core.discardCR = false;
    core.skipped = null;
    assert.equal(core.auth, null);
    assert.equal(core.extras, null);
    core.owedReplies = 2;
    assert.equal(core.owedReplies, 2);
    core.discardCR = true;
    assert.equal(core.discardCR, true);
    core.user = "alice";
    assert.equal(core.user, "alice");
    assert.equal(core.auth!.user, "alice");
  });

  it("the engine keeps its options once, in its core", () => {
    const engine = new SmtpEngine({ serverName: "mx.test" });
    assert.deepEqual(Object.keys(engine), []);
    assert.equal(engine.options.serverName, "mx.test");
  });

  it("the event queue is made with the first queued event", () => {
    const core = new EngineCore(
      resolveEngineOptions({ traceCommands: true }),
      0,
    );
    assert.equal(core.queue, null);
    const q = core.events();
    assert.equal(core.events(), q);
    assert.equal(core.queue, q);
    // Through the engine: a traced command queues its event.
    const engine = new SmtpEngine({ traceCommands: true });
    for (let ev = engine.nextEvent(); ev.type !== "need-data";) {
      if (ev.type === "connect") engine.accept();
      ev = engine.nextEvent();
    }
    engine.receive(enc.encode("NOOP\r\n"), 0);
    const ev = engine.nextEvent();
    assert.equal(ev.type, "command");
  });
});
