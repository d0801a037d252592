// The Deadlines heap on a fake clock: one timer for the earliest deadline,
// entries fired in time order and once, removal, re-setting, and no timer
// left once the heap is empty (nothing waits for real).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type Deadline,
  type DeadlineClock,
  Deadlines,
  now,
} from "../src/deadlines.ts";

/** A clock whose time moves only when told; its timers run on advance(). */
class FakeClock implements DeadlineClock {
  time = 1000;
  #next = 1;
  timers = new Map<number, { at: number; fn: () => void }>();

  now(): number {
    return this.time;
  }
  setTimer(fn: () => void, ms: number): unknown {
    const id = this.#next++;
    this.timers.set(id, { at: this.time + ms, fn });
    return id;
  }
  clearTimer(handle: unknown): void {
    this.timers.delete(handle as number);
  }
  /** Moves the time to `to`, running the timers due on the way, in order. */
  advance(to: number): void {
    for (;;) {
      let first: [number, { at: number; fn: () => void }] | null = null;
      for (const e of this.timers) {
        if (e[1].at <= to && (first === null || e[1].at < first[1].at)) {
          first = e;
        }
      }
      if (first === null) break;
      this.timers.delete(first[0]);
      this.time = Math.max(this.time, first[1].at);
      first[1].fn();
    }
    this.time = to;
  }
}

/** A deadline that records its name in `fired` when it fires. */
function entry(name: string, fired: string[]): Deadline {
  return { at: Infinity, index: -1, fire: () => fired.push(name) };
}

describe("Deadlines", () => {
  it("fires entries in time order, each once, on one timer", () => {
    const clock = new FakeClock();
    const heap = new Deadlines(clock);
    const fired: string[] = [];
    const names = ["e", "b", "d", "a", "c", "f", "g"];
    const at: Record<string, number> = {
      a: 1100,
      b: 1200,
      c: 1300,
      d: 1400,
      e: 1500,
      f: 1600,
      g: 1700,
    };
    for (const n of names) heap.set(entry(n, fired), at[n]);
    assert.equal(heap.size, 7);
    assert.equal(clock.timers.size, 1);
    assert.equal([...clock.timers.values()][0].at, 1100);
    clock.advance(1350);
    assert.deepEqual(fired, ["a", "b", "c"]);
    assert.equal(heap.size, 4);
    clock.advance(5000);
    assert.deepEqual(fired, ["a", "b", "c", "d", "e", "f", "g"]);
    assert.equal(heap.size, 0);
    assert.equal(clock.timers.size, 0);
  });

  it("fires every entry due at once in one timer callback", () => {
    const clock = new FakeClock();
    const heap = new Deadlines(clock);
    const fired: string[] = [];
    heap.set(entry("x", fired), 1100);
    heap.set(entry("y", fired), 1100);
    heap.set(entry("z", fired), 1050);
    clock.advance(1200);
    assert.deepEqual(fired.sort(), ["x", "y", "z"]);
  });

  it("a removed entry does not fire; the last one removed clears the timer", () => {
    const clock = new FakeClock();
    const heap = new Deadlines(clock);
    const fired: string[] = [];
    const a = entry("a", fired);
    const b = entry("b", fired);
    heap.set(a, 1100);
    heap.set(b, 1200);
    heap.remove(a);
    assert.equal(heap.has(a), false);
    assert.equal(a.index, -1);
    assert.equal(heap.has(b), true);
    heap.remove(a); // twice: nothing happens
    heap.remove(b);
    assert.equal(heap.size, 0);
    // Nothing left: no timer keeps the process alive.
    assert.equal(clock.timers.size, 0);
    clock.advance(2000);
    assert.deepEqual(fired, []);
  });

  it("setting an entry again moves it (earlier re-arms the timer, later waits)", () => {
    const clock = new FakeClock();
    const heap = new Deadlines(clock);
    const fired: string[] = [];
    const a = entry("a", fired);
    const b = entry("b", fired);
    heap.set(a, 1500);
    heap.set(b, 1600);
    heap.set(a, 1100); // earlier: the timer moves to it
    assert.equal(heap.size, 2);
    assert.equal(clock.timers.size, 1);
    assert.equal([...clock.timers.values()][0].at, 1100);
    heap.set(a, 1700); // later: b comes first now
    clock.advance(1650);
    assert.deepEqual(fired, ["b"]);
    clock.advance(1700);
    assert.deepEqual(fired, ["b", "a"]);
  });

  it("an entry set again from its own fire() fires again later", () => {
    const clock = new FakeClock();
    const heap = new Deadlines(clock);
    let count = 0;
    const d: Deadline = {
      at: Infinity,
      index: -1,
      fire() {
        if (++count < 3) heap.set(d, clock.now() + 100);
      },
    };
    heap.set(d, 1100);
    clock.advance(1150);
    assert.equal(count, 1);
    assert.equal(heap.has(d), true);
    clock.advance(2000);
    assert.equal(count, 3);
    assert.equal(heap.has(d), false);
    assert.equal(clock.timers.size, 0);
  });

  it("keeps the heap order through many random sets and removes", () => {
    const clock = new FakeClock();
    const heap = new Deadlines(clock);
    const fired: number[] = [];
    let seed = 7;
    const random = () =>
      (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const all: Deadline[] = [];
    for (let i = 0; i < 200; i++) {
      const d: Deadline = {
        at: Infinity,
        index: -1,
        fire: () => fired.push(d.at),
      };
      all.push(d);
      heap.set(d, 2000 + Math.floor(random() * 1000));
    }
    for (let i = 0; i < 50; i++) heap.remove(all[Math.floor(random() * 200)]);
    for (let i = 0; i < 50; i++) {
      heap.set(
        all[Math.floor(random() * 200)],
        2000 + Math.floor(random() * 1000),
      );
    }
    const left = heap.size;
    clock.advance(4000);
    assert.equal(fired.length, left);
    assert.deepEqual(fired, [...fired].sort((x, y) => x - y));
  });
});

describe("now", () => {
  it("counts whole milliseconds from the process's start: small integers, on Date.now's pace", () => {
    // A time a session keeps (its deadline, its engine's last activity)
    // is one of these: a small integer is kept in the object itself, a
    // Date.now() value (over 2^31) was a boxed number of its own.
    const t = now();
    assert.ok(Number.isInteger(t), `${t}`);
    assert.ok(t >= 0 && t < 2 ** 30, `${t}`);
    // The origin, read a few times: a thread switch between the two reads
    // of one sample can move it, never the median of seven.
    const origin = () => {
      const xs = Array.from({ length: 7 }, () => Date.now() - now());
      return xs.sort((x, y) => x - y)[3];
    };
    const epoch = origin();
    const later = now();
    assert.ok(later >= t);
    // The same pace as Date.now(): only the origin differs.
    assert.ok(Math.abs(origin() - epoch) <= 2);
    assert.ok(epoch > 1_600_000_000_000 && epoch <= Date.now());
  });
});
