// The limits that `smtpd --workers` shares: a worker's questions and the
// supervisor's answers, joined here by hand (no processes), and what a
// worker does when the answer does not come.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseCliArgs } from "../src/cli/args.ts";
import type { CliOptions } from "../src/cli/args.ts";
import {
  LimitsHolder,
  type LimitsReply,
  type LimitsRequest,
  SupervisorLimits,
} from "../src/cli/worker_limits.ts";

function options(argv: string[]): CliOptions {
  const c = parseCliArgs(argv);
  assert.equal(c.command, "serve");
  return c.command === "serve" ? c.options : (null as never);
}

/**
 * Workers joined to one holder. The answers to a `deaf` worker are held
 * back until `late()` delivers them.
 */
function supervised(argv: string[]) {
  const o = options(argv);
  const holder = new LimitsHolder(o);
  const held: (() => void)[] = [];
  const worker = (id: number, deaf = () => false) => {
    const limits: SupervisorLimits = new SupervisorLimits(
      o,
      (m: LimitsRequest) => {
        const reply = holder.handle(id, m);
        if (reply === null) return true;
        const answer = () => limits.handle(reply as LimitsReply);
        if (deaf()) held.push(answer);
        else queueMicrotask(answer);
        return true;
      },
      50,
    );
    return limits;
  };
  const late = () => {
    for (const answer of held.splice(0)) answer();
  };
  return { holder, worker, late };
}

describe("limits shared by --workers", () => {
  it("connections from one client count across workers, and are freed", async () => {
    const { holder, worker } = supervised(["--max-connections-per-ip", "3"]);
    const a = worker(1);
    const b = worker(2);
    assert.deepEqual(
      [
        await a.connect("192.0.2.1"),
        await b.connect("192.0.2.1"),
        await a.connect("192.0.2.1"),
        await b.connect("192.0.2.1"),
        await b.connect("192.0.2.2"),
      ],
      [true, true, true, false, true],
    );
    b.disconnect("192.0.2.1");
    assert.equal(await a.connect("192.0.2.1"), true);
    assert.equal(holder.limits.connections("192.0.2.1"), 3);
  });

  it("AUTH attempts count across workers: the budget is checked once for all", async () => {
    const { worker } = supervised(["--max-auth-failures-per-ip", "2"]);
    const a = worker(1);
    const b = worker(2);
    assert.equal((await a.authStart("k")).verdict, "ok");
    assert.equal((await b.authStart("k")).verdict, "ok");
    assert.equal((await a.authStart("k")).verdict, "busy");
    assert.deepEqual(await a.authEnd("k", true), {
      failures: 1,
      lockedOut: false,
    });
    assert.deepEqual(await b.authEnd("k", true), {
      failures: 2,
      lockedOut: true,
    });
    assert.equal((await b.authStart("k")).verdict, "locked");
  });

  it("a worker that exits gives back its connections; its AUTH attempt in flight counts as failed", async () => {
    const { holder, worker } = supervised([
      "--max-connections-per-ip",
      "1",
      "--max-auth-failures-per-ip",
      "1",
    ]);
    const a = worker(1);
    assert.equal(await a.connect("k"), true);
    assert.equal((await a.authStart("k")).verdict, "ok");
    holder.release(1);
    const b = worker(2);
    assert.equal(await b.connect("k"), true);
    assert.equal((await b.authStart("k")).verdict, "locked");
  });

  it("without an answer in time, AUTH fails closed and a connection is counted by the worker alone; a late answer is undone", async () => {
    let deaf = true;
    const { holder, worker, late } = supervised([
      "--max-connections-per-ip",
      "1",
      "--max-auth-failures-per-ip",
      "1",
    ]);
    const a = worker(1, () => deaf);
    assert.deepEqual(await a.authStart("k"), {
      verdict: "unavailable",
      failures: 0,
    });
    assert.equal(await a.connect("k"), true); // the worker's own count
    assert.equal(await a.connect("k"), false); // its limit still holds
    // The holder counted what it was asked (an AUTH attempt, a
    // connection); the late answers give them back.
    assert.equal(holder.limits.connections("k"), 1);
    deaf = false;
    late();
    await new Promise((r) => setTimeout(r, 0));
    assert.equal(holder.limits.connections("k"), 0);
    assert.equal(holder.limits.budget!.failures("k", Date.now()), 0);
    assert.equal((await a.authStart("k")).verdict, "ok");
  });

  it("once the supervisor is gone, nothing is asked", async () => {
    const o = options([]);
    let sent = 0;
    const a = new SupervisorLimits(o, () => {
      sent++;
      return true;
    });
    a.close();
    assert.equal((await a.authStart("k")).verdict, "unavailable");
    assert.equal(await a.connect("k"), true);
    assert.equal(sent, 0);
  });
});
