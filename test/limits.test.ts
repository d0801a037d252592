// FailureBudget, clientKey and failureDelay with a fake clock and synthetic
// addresses (nothing goes on the wire).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { clientKey, FailureBudget, failureDelay } from "../src/limits.ts";

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

  it("stays bounded under a flood of distinct addresses (LRU)", () => {
    const b = new FailureBudget({ max: 5, window: 15 * MIN, capacity: 10_000 });
    // The attacker is locked out first...
    for (let i = 0; i < 5; i++) b.fail("198.51.100.7", i);
    assert.equal(b.isLocked("198.51.100.7", 10), true);
    // ...then 100,000 other addresses fail once each; the attacker keeps
    // trying (and so stays among the recently used).
    for (let i = 0; i < 100_000; i++) {
      const a = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
      b.fail(a, 100 + i);
      assert.ok(b.size <= 10_000);
      if (i % 5000 === 0) b.fail("198.51.100.7", 100 + i);
    }
    assert.equal(b.size, 10_000);
    assert.equal(b.isLocked("198.51.100.7", 200_000), true);
    // The oldest of the flood were forgotten.
    assert.equal(b.failures("10.0.0.0", 200_000), 0);
    assert.equal(b.failures("10.1.134.159", 200_000), 1);
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
    assert.equal(clientKey("not an address"), "not an address");
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
