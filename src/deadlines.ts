/**
 * Every connection's deadline on one runtime timer: a min-heap by time,
 * set for the earliest. The driver keeps its read/hook deadline and its
 * write watchdog here.
 *
 * The driver may use timers (the engine may not): this module takes a
 * clock so that its test runs on fake time.
 *
 * @module
 */

/**
 * A deadline in {@link Deadlines}: `index` is its place in the heap (-1:
 * not in it). An entry is set again and again (one per driver and kind),
 * not made anew for each wait.
 */
export interface Deadline {
  /** When it fires (on the clock's time); meaningful while in the heap. */
  at: number;
  /** Its place in the heap; -1 when not in it. */
  index: number;
  /** Called once when `at` has come (and it was not removed before). */
  fire(): void;
}

/** The time and the one timer a {@link Deadlines} uses. */
export interface DeadlineClock {
  /** The current time in ms (see {@link now}). */
  now(): number;
  /** Calls `fn` after `ms`; the handle goes to `clearTimer`. */
  setTimer(fn: () => void, ms: number): unknown;
  /** Cancels a timer set by `setTimer`. */
  clearTimer(handle: unknown): void;
}

/** When this module loaded: the start of {@link now}'s time. */
const EPOCH = Date.now();

/**
 * The driver's time: milliseconds since the process loaded this module,
 * for the engine's times (`SmtpEngine.receive`), the deadlines and the
 * write watchdog. Small integers: a time a session keeps in a field is
 * stored in the object itself (a V8 small integer, for the first 12 days
 * of a process), where a `Date.now()` value took a boxed number of its
 * own (seven a session). `Math.floor`, though the difference is whole
 * already: V8 boxes the result of subtracting two boxed numbers (Ignition
 * and optimized code alike: 16 bytes per call, and per field that keeps
 * it), where Math.floor hands out a small integer.
 *
 * @example
 * ```ts
 * import { now } from "./deadlines.ts";
 *
 * const since = now();
 * now() - since; // milliseconds elapsed
 * ```
 */
export function now(): number {
  return Math.floor(Date.now() - EPOCH);
}

/** The runtime's clock: {@link now} and `setTimeout`. */
const SYSTEM_CLOCK: DeadlineClock = {
  now,
  setTimer: (fn, ms) => setTimeout(fn, ms),
  clearTimer: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/**
 * Every connection's deadline on one runtime timer, set for the earliest
 * (a min-heap by time; entries are removed, not left to expire). A timer
 * per connection cost about 5 KB per idle connection on Deno 2.9 (bare
 * `Deno.listen` with a pending read: 15 KB, with a 300 s setTimeout as
 * well: 20 KB), a quarter of the whole.
 */
export class Deadlines {
  #heap: Deadline[] = [];
  #timer: unknown = null;
  #timerAt = Infinity;
  #clock: DeadlineClock;

  /** `clock`: the time and timer to use (default: the runtime's). */
  constructor(clock: DeadlineClock = SYSTEM_CLOCK) {
    this.#clock = clock;
  }

  /** How many deadlines are set. */
  get size(): number {
    return this.#heap.length;
  }

  /** Calls `d.fire()` at `at` (on the clock's time), unless removed first. */
  set(d: Deadline, at: number): void {
    if (d.index >= 0) this.remove(d);
    d.at = at;
    d.index = this.#heap.length;
    this.#heap.push(d);
    this.#up(d.index);
    this.#arm();
  }

  /** Whether `d` is in the heap (set, not yet fired or removed). */
  has(d: Deadline): boolean {
    return d.index >= 0;
  }

  /** Takes `d` out of the heap (nothing when it is not in it). */
  remove(d: Deadline): void {
    const heap = this.#heap;
    const i = d.index;
    if (i < 0) return;
    d.index = -1;
    const last = heap.pop()!;
    if (last !== d) {
      heap[i] = last;
      last.index = i;
      this.#down(i);
      this.#up(last.index);
    }
    // Nothing left: no timer may keep the process alive.
    if (heap.length === 0 && this.#timer !== null) {
      this.#clock.clearTimer(this.#timer);
      this.#timer = null;
      this.#timerAt = Infinity;
    }
  }

  #arm(): void {
    const first = this.#heap[0];
    if (first === undefined) return;
    if (this.#timer !== null) {
      if (this.#timerAt <= first.at) return;
      this.#clock.clearTimer(this.#timer);
    }
    this.#timerAt = first.at;
    this.#timer = this.#clock.setTimer(
      () => this.#fire(),
      Math.max(0, first.at - this.#clock.now()),
    );
  }

  #fire(): void {
    this.#timer = null;
    this.#timerAt = Infinity;
    const now = this.#clock.now();
    const due: Deadline[] = [];
    while (this.#heap.length > 0 && this.#heap[0].at <= now) {
      const d = this.#heap[0];
      this.remove(d);
      due.push(d);
    }
    for (const d of due) d.fire();
    this.#arm();
  }

  #up(i: number): void {
    const heap = this.#heap;
    const d = heap[i];
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (heap[p].at <= d.at) break;
      heap[i] = heap[p];
      heap[i].index = i;
      i = p;
    }
    heap[i] = d;
    d.index = i;
  }

  #down(i: number): void {
    const heap = this.#heap;
    const n = heap.length;
    const d = heap[i];
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && heap[c + 1].at < heap[c].at) c++;
      if (heap[c].at >= d.at) break;
      heap[i] = heap[c];
      heap[i].index = i;
      i = c;
    }
    heap[i] = d;
    d.index = i;
  }
}

/** The deadlines of every connection in this process. */
export const deadlines: Deadlines = new Deadlines();
