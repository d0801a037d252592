// FailureBudget, clientKey, LocalClientLimits and failureDelay with a fake clock and synthetic
// addresses (nothing goes on the wire).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  clientKey,
  FailureBudget,
  failureDelay,
  LocalClientLimits,
} from "../src/limits.ts";
import { claimIp, type PreambleDriver } from "../src/preamble.ts";

const MIN = 60_000;

describe("FailureBudget", () => {
  it("locks a key out at the max-th failure within the window, for the window", () => {
    const b = new FailureBudget({ max: 10, window: 15 * MIN });
    for (let i = 1; i <= 9; i++) {
      assert.deepEqual(b.fail("192.0.2.1", i * 1000), {
        failures: i,
        lockedOut: false,
      });
      assert.equal(b.isLocked("192.0.2.1", i * 1000), false);
    }
    assert.deepEqual(b.fail("192.0.2.1", 10_000), {
      failures: 10,
      lockedOut: true,
    });
    assert.equal(b.isLocked("192.0.2.1", 10_000), true);
    assert.equal(b.isLocked("192.0.2.1", 10_000 + 15 * MIN - 1), true);
    assert.equal(b.isLocked("192.0.2.1", 10_000 + 15 * MIN), false);
    // Once the window has passed, the key starts over.
    assert.equal(b.failures("192.0.2.1", 10_000 + 15 * MIN), 0);
    assert.deepEqual(b.fail("192.0.2.1", 10_000 + 15 * MIN), {
      failures: 1,
      lockedOut: false,
    });
  });

  it("other keys are unaffected", () => {
    const b = new FailureBudget({ max: 3, window: MIN });
    for (let i = 0; i < 3; i++) b.fail("192.0.2.1", 0);
    assert.equal(b.isLocked("192.0.2.1", 1), true);
    assert.equal(b.isLocked("192.0.2.2", 1), false);
    assert.equal(b.failures("192.0.2.2", 1), 0);
  });

  it("failures older than the window no longer count", () => {
    const b = new FailureBudget({ max: 3, window: MIN });
    b.fail("k", 0);
    b.fail("k", 1000);
    assert.equal(b.failures("k", MIN - 1), 2);
    // The window (from its first failure) has passed: a fresh count.
    assert.deepEqual(b.fail("k", MIN), { failures: 1, lockedOut: false });
  });

  it("logs a lock-out once: failures while locked do not lock again", () => {
    const b = new FailureBudget({ max: 2, window: MIN });
    b.fail("k", 0);
    assert.equal(b.fail("k", 1).lockedOut, true);
    assert.equal(b.fail("k", 2).lockedOut, false);
  });

  it("a flood of distinct addresses cannot free a lock-out: new keys are refused while the table is full of live ones", () => {
    const b = new FailureBudget({ max: 5, window: 15 * MIN, capacity: 10_000 });
    // The attacker is locked out first...
    for (let i = 0; i < 5; i++) b.fail("198.51.100.7", i);
    assert.equal(b.isLocked("198.51.100.7", 10), true);
    // ...then 10,050 other addresses fail once each.
    for (let i = 0; i < 10_050; i++) {
      b.fail(`10.0.${i >> 8}.${i & 255}`, 100 + i);
      assert.ok(b.size <= 10_000);
    }
    // The attacker stays locked out, its right password refused...
    assert.equal(b.isLocked("198.51.100.7", 20_000), true);
    assert.equal(b.begin("198.51.100.7", 20_000), "locked");
    // ...the table took 9,999 of them (one place is the attacker's), and
    // refuses another new key while all are live.
    assert.equal(b.size, 10_000);
    assert.equal(b.failures("10.0.39.14", 20_000), 1); // the 9,999th
    assert.equal(b.failures("10.0.39.15", 20_000), 0); // the 10,000th
    assert.equal(b.begin("192.0.2.50", 20_000), "full");
    // A key already in the table goes on being counted.
    assert.equal(b.begin("10.0.0.1", 20_000), "ok");
    // Once their windows are over, old keys make room for new ones.
    const later = 100 + 15 * MIN;
    assert.equal(b.begin("192.0.2.99", later), "ok");
    assert.equal(b.failures("10.0.0.0", later), 0);
  });

  it("counts an attempt when it begins: at most max attempts in flight and failed per window", () => {
    const b = new FailureBudget({ max: 3, window: MIN });
    // 50 attempts at once: only 3 go ahead, the others wait their turn.
    const verdicts = Array.from({ length: 50 }, () => b.begin("k", 0));
    assert.equal(verdicts.filter((v) => v === "ok").length, 3);
    assert.ok(verdicts.slice(3).every((v) => v === "busy"));
    // A success frees its place (without wiping failures)...
    assert.deepEqual(b.end("k", 1, false), { failures: 0, lockedOut: false });
    assert.equal(b.begin("k", 2), "ok");
    // ...failures use it up: the third locks the key out.
    assert.deepEqual(b.end("k", 3, true), { failures: 1, lockedOut: false });
    assert.deepEqual(b.end("k", 4, true), { failures: 2, lockedOut: false });
    assert.equal(b.begin("k", 5), "busy"); // 2 failed + 1 in flight
    assert.deepEqual(b.end("k", 6, true), { failures: 3, lockedOut: true });
    assert.equal(b.begin("k", 7), "locked");
    assert.equal(b.begin("k", 6 + MIN), "ok");
  });

  it("a key with an attempt in flight is never forgotten, not even when the table is full", () => {
    const b = new FailureBudget({ max: 2, window: 1000, capacity: 2 });
    assert.equal(b.begin("a", 0), "ok");
    assert.equal(b.begin("b", 0), "ok");
    assert.equal(b.begin("c", 5000), "full");
    b.end("a", 5000, true);
    assert.equal(b.failures("a", 5001), 1);
    b.end("b", 5000, false);
    assert.equal(b.size, 1); // b had nothing left to remember
    assert.equal(b.begin("c", 5001), "ok");
  });

  it("expired keys are dropped when looked at", () => {
    const b = new FailureBudget({ max: 5, window: 1000 });
    b.fail("a", 0);
    assert.equal(b.size, 1);
    assert.equal(b.isLocked("a", 1000), false);
    assert.equal(b.size, 0);
  });

  it("max Infinity never locks out", () => {
    const b = new FailureBudget({ max: Infinity, window: 1000 });
    for (let i = 0; i < 1000; i++) b.fail("a", 0);
    assert.equal(b.isLocked("a", 0), false);
  });

  it("bad options throw a TypeError", () => {
    for (
      const o of [
        { max: 0, window: 1 },
        { max: 1.5, window: 1 },
        { max: 1, window: 0 },
        { max: 1, window: Infinity },
        { max: 1, window: 1, capacity: 0 },
        { max: NaN, window: 1 },
        { max: "3", window: 1 },
      ]
    ) {
      assert.throws(
        () =>
          new FailureBudget(o as unknown as { max: number; window: number }),
        (e: unknown) =>
          e instanceof TypeError && /^Cannot use option \w+: /.test(e.message),
      );
    }
  });
});

describe("clientKey", () => {
  it("keys IPv4 as is, IPv4-mapped as IPv4, IPv6 by its /64", () => {
    assert.equal(clientKey("192.0.2.1"), "192.0.2.1");
    assert.equal(clientKey("::ffff:192.0.2.1"), "192.0.2.1");
    assert.equal(clientKey("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
    assert.equal(
      clientKey("2001:DB8:1:2:ffff:ffff:ffff:ffff"),
      "2001:db8:1:2::/64",
    );
    assert.equal(clientKey("::1"), "::/64");
    assert.equal(clientKey("::ffff:7f00:1"), "127.0.0.1");
    assert.equal(
      clientKey("2001:db8:1:2::1"),
      clientKey("2001:db8:1:2:ffff::2"),
    );
    assert.notEqual(clientKey("2001:db8:1:2::1"), clientKey("2001:db8:1:3::1"));
    assert.equal(clientKey("not an address"), "not an address");
  });
});

describe("LocalClientLimits", () => {
  it("counts connections per key up to the limit, and frees them", () => {
    const l = new LocalClientLimits({
      maxConnectionsPerIp: 2,
      maxAuthFailuresPerIp: 10,
      authFailureWindow: MIN,
      now: () => 0,
    });
    const key = clientKey("2001:db8:1:2::a");
    assert.equal(l.connect(key), true);
    assert.equal(l.connect(clientKey("2001:db8:1:2::b")), true);
    assert.equal(l.connect(clientKey("2001:db8:1:2:ffff::1")), false);
    assert.equal(l.connect(clientKey("2001:db8:1:3::a")), true);
    l.disconnect(key);
    assert.equal(l.connections(key), 1);
    assert.equal(l.connect(key), true);
  });

  it("with maxAuthFailuresPerIp Infinity lets every attempt go without counting", () => {
    const l = new LocalClientLimits({
      maxConnectionsPerIp: Infinity,
      maxAuthFailuresPerIp: Infinity,
      authFailureWindow: MIN,
      now: () => 0,
    });
    for (let i = 0; i < 100; i++) {
      assert.deepEqual(l.authStart("k"), { verdict: "ok", failures: 0 });
      assert.deepEqual(l.authEnd("k", true), { failures: 0, lockedOut: false });
      assert.equal(l.connect("k"), true);
    }
  });
});

describe("failureDelay", () => {
  it("grows by 250 ms per failure up to 3 s", () => {
    assert.deepEqual(
      [0, 1, 2, 4, 12, 13, 1000].map((n) => failureDelay(n)),
      [0, 250, 500, 1000, 3000, 3000, 3000],
    );
    assert.equal(failureDelay(3, 100, 250), 250);
  });
});

describe("claimIp", () => {
  /** A driver whose host counts with `count`; what it refused, in `refused`. */
  function driverOf(count: (key: string) => boolean | Promise<boolean>) {
    const refused: string[] = [];
    const d = {
      session: { remoteAddress: "::ffff:192.0.2.7" },
      host: {
        options: { path: null },
        claimIp: count,
        refuse: (_conn: unknown, ip: string, code: string) => {
          refused.push(`${ip} ${code}`);
        },
      },
      conn: {},
      io: { write: () => {} },
      countedIp: null,
    } as unknown as PreambleDriver;
    return { d, refused };
  }

  it("answers at once when the count does: opening a session waits for no promise", () => {
    const ok = driverOf(() => true);
    assert.equal(claimIp(ok.d), true);
    assert.equal(ok.d.countedIp, "192.0.2.7");
    const over = driverOf(() => false);
    assert.equal(claimIp(over.d), false);
    assert.equal(over.d.countedIp, null);
    assert.deepEqual(over.refused, [
      "::ffff:192.0.2.7 too_many_connections_per_ip",
    ]);
  });

  it("waits for a count that is a promise (a shared store)", async () => {
    const ok = driverOf(() => Promise.resolve(true));
    const claimed = claimIp(ok.d);
    assert.ok(claimed instanceof Promise);
    assert.equal(await claimed, true);
    assert.equal(ok.d.countedIp, "192.0.2.7");
    const over = driverOf(() => Promise.resolve(false));
    assert.equal(await claimIp(over.d), false);
    assert.equal(over.d.countedIp, null);
    assert.equal(over.refused.length, 1);
  });
});
