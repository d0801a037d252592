/**
 * Limits per client address across connections: the AUTH failure budget
 * ({@link FailureBudget}), the address it counts ({@link clientKey}) and the
 * delay that slows each failure ({@link failureDelay}).
 *
 * Runtime-free: time comes in as `now` (milliseconds, any monotonic or
 * wall clock, as long as one budget always gets the same one), so that
 * tests run with a fake clock.
 *
 * @module
 */

import { formatIp, parseIp } from "./cidr.ts";

/**
 * Options of a {@link FailureBudget}.
 *
 * @example
 * ```ts
 * import type { FailureBudgetOptions } from "./limits.ts";
 *
 * const options: FailureBudgetOptions = { max: 10, window: 15 * 60_000 };
 * ```
 */
export interface FailureBudgetOptions {
  /** Failures of one key within `window` that lock it out. */
  max: number;
  /**
   * Milliseconds: failures count from the first one of a window; a key
   * locked out stays so for this long from the failure that locked it.
   */
  window: number;
  /**
   * Keys remembered at most; past it the least recently used is
   * forgotten. Default 10000 (about 1.5 MB at most).
   */
  capacity?: number;
}

/** What a {@link FailureBudget} remembers of one key. */
interface Entry {
  failures: number;
  /** When the counting window started (the window's first failure). */
  since: number;
  /** Locked out until then (0: not locked). */
  lockedUntil: number;
}

/** What {@link FailureBudget.fail} tells. */
export interface FailureCount {
  /** Failures of the key in its window, this one included. */
  failures: number;
  /** This failure used up the budget: the key is locked out from now on. */
  lockedOut: boolean;
}

/**
 * A failure budget per key (a client address): `max` failures within
 * `window` milliseconds lock the key out for `window` from the last of
 * them. Bounded: at most `capacity` keys, the least recently used
 * forgotten first, so a flood of distinct addresses cannot grow it (it can
 * only push out older entries: an attacker would need `capacity` addresses
 * of its own to forget its lock-out, and could then use them directly).
 *
 * @example
 * ```ts
 * import { FailureBudget } from "./limits.ts";
 *
 * const budget = new FailureBudget({ max: 3, window: 60_000 });
 * budget.fail("192.0.2.1", 0);
 * budget.fail("192.0.2.1", 10);
 * budget.fail("192.0.2.1", 20); // { failures: 3, lockedOut: true }
 * budget.isLocked("192.0.2.1", 1_000); // true
 * budget.isLocked("192.0.2.1", 60_020); // false
 * ```
 */
export class FailureBudget {
  /** Failures within a window that lock a key out. */
  readonly max: number;
  /** The window, in milliseconds. */
  readonly window: number;
  /** Keys remembered at most. */
  readonly capacity: number;
  /** Insertion order is recency order: the first key is the oldest. */
  #entries = new Map<string, Entry>();

  /**
   * Makes an empty budget; throws a `TypeError` on a bad option.
   *
   * @param options see {@link FailureBudgetOptions}
   */
  constructor(options: FailureBudgetOptions) {
    const { max, window, capacity = 10000 } = options;
    const check = (name: string, v: number, infinity: boolean) => {
      if (typeof v !== "number" || Number.isNaN(v)) {
        throw new TypeError(`Cannot use option ${name}: value is not a number`);
      }
      if (v === Infinity && infinity) return;
      if (!Number.isInteger(v) || v < 1) {
        throw new TypeError(
          `Cannot use option ${name}: value is not a positive integer`,
        );
      }
    };
    check("max", max, true);
    check("window", window, false);
    check("capacity", capacity, false);
    this.max = max;
    this.window = window;
    this.capacity = capacity;
  }

  /** Keys remembered now. */
  get size(): number {
    return this.#entries.size;
  }

  /** The key's entry, if it still matters at `now` (else it is dropped). */
  #get(key: string, now: number): Entry | undefined {
    const e = this.#entries.get(key);
    if (e === undefined) return undefined;
    if (e.lockedUntil <= now && now - e.since >= this.window) {
      this.#entries.delete(key);
      return undefined;
    }
    return e;
  }

  /**
   * Whether `key` is locked out at `now`.
   *
   * @example
   * ```ts
   * import { FailureBudget } from "./limits.ts";
   *
   * new FailureBudget({ max: 1, window: 1000 }).isLocked("192.0.2.1", 0); // false
   * ```
   */
  isLocked(key: string, now: number): boolean {
    const e = this.#get(key, now);
    return e !== undefined && e.lockedUntil > now;
  }

  /**
   * Failures of `key` counted at `now` (0 when none, or its window passed).
   *
   * @example
   * ```ts
   * import { FailureBudget } from "./limits.ts";
   *
   * const budget = new FailureBudget({ max: 5, window: 1000 });
   * budget.fail("192.0.2.1", 0);
   * budget.failures("192.0.2.1", 500); // 1
   * budget.failures("192.0.2.1", 1000); // 0
   * ```
   */
  failures(key: string, now: number): number {
    return this.#get(key, now)?.failures ?? 0;
  }

  /**
   * Counts a failure of `key` at `now`.
   *
   * @example
   * ```ts
   * import { FailureBudget } from "./limits.ts";
   *
   * const budget = new FailureBudget({ max: 2, window: 1000 });
   * budget.fail("192.0.2.1", 0); // { failures: 1, lockedOut: false }
   * budget.fail("192.0.2.1", 1); // { failures: 2, lockedOut: true }
   * ```
   */
  fail(key: string, now: number): FailureCount {
    let e = this.#get(key, now);
    if (e === undefined) e = { failures: 0, since: now, lockedUntil: 0 };
    else this.#entries.delete(key); // re-inserted below: the most recent
    e.failures++;
    let lockedOut = false;
    if (e.failures >= this.max && e.lockedUntil <= now) {
      e.lockedUntil = now + this.window;
      lockedOut = true;
    }
    this.#entries.set(key, e);
    if (this.#entries.size > this.capacity) {
      // The least recently failed key.
      this.#entries.delete(this.#entries.keys().next().value!);
    }
    return { failures: e.failures, lockedOut };
  }

  /** Forgets every key. */
  clear(): void {
    this.#entries.clear();
  }
}

/**
 * The key a client address counts under: an IPv4 address as it is (an
 * IPv4-mapped IPv6 address as its IPv4 address), an IPv6 address as its
 * /64 network (one site, one subscriber: a host gets a whole /64 and
 * picks any address in it), anything else (a name, a Unix socket path) as
 * given.
 *
 * @example
 * ```ts
 * import { clientKey } from "./limits.ts";
 *
 * clientKey("192.0.2.1"); // "192.0.2.1"
 * clientKey("::ffff:192.0.2.1"); // "192.0.2.1"
 * clientKey("2001:db8:1:2:aaaa::1"); // "2001:db8:1:2::/64"
 * ```
 */
export function clientKey(address: string): string {
  if (address.indexOf(":") < 0) return address;
  const bytes = parseIp(address);
  if (bytes === null || bytes.length !== 16) return address;
  let mapped = bytes[10] === 0xff && bytes[11] === 0xff;
  for (let k = 0; k < 10 && mapped; k++) mapped = bytes[k] === 0;
  if (mapped) return formatIp(bytes.subarray(12));
  bytes.fill(0, 8);
  return `${formatIp(bytes)}/64`;
}

/**
 * How long to hold the answer to a failed attempt: `step` milliseconds per
 * failure counted, at most `cap`.
 *
 * @example
 * ```ts
 * import { failureDelay } from "./limits.ts";
 *
 * failureDelay(1); // 250
 * failureDelay(4); // 1000
 * failureDelay(100); // 3000
 * ```
 */
export function failureDelay(
  failures: number,
  step = 250,
  cap = 3000,
): number {
  return Math.min(Math.max(0, failures) * step, cap);
}
