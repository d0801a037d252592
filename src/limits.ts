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
  /** Attempts begun ({@link FailureBudget.begin}) and not yet ended. */
  pending: number;
}

/** What {@link FailureBudget.fail} and {@link FailureBudget.end} tell. */
export interface FailureCount {
  /** Failures of the key in its window, this one included. */
  failures: number;
  /** This failure used up the budget: the key is locked out from now on. */
  lockedOut: boolean;
}

/**
 * What {@link FailureBudget.begin} decides about an attempt:
 *
 * - `"ok"`: it may go ahead (counted as pending until {@link FailureBudget.end});
 * - `"locked"`: the key is locked out;
 * - `"busy"`: the failures and the attempts in flight use up the budget
 *   (try again once one of them has ended);
 * - `"full"`: a new key, and the table is full of live keys (none is
 *   forgotten to make room: that would let a flood of addresses free a
 *   lock-out).
 */
export type AttemptVerdict = "ok" | "locked" | "busy" | "full";

/**
 * A failure budget per key (a client address): `max` failures within
 * `window` milliseconds lock the key out for `window` from the last of
 * them. An attempt is counted when it begins ({@link begin}), so that
 * attempts in flight at once cannot get more than `max` checked per
 * window. Bounded: at most `capacity` keys. A key is forgotten only once
 * it no longer matters (its window and lock-out are over, nothing in
 * flight); while the table is full of live keys a new key is refused
 * (`"full"`) rather than pushing out another: a flood of distinct
 * addresses cannot free a lock-out.
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

  /** Whether `e` no longer matters at `now`: its window and lock-out are over. */
  #over(e: Entry, now: number): boolean {
    return e.lockedUntil <= now && now - e.since >= this.window;
  }

  /** The key's entry, if it still matters at `now` (else it is dropped). */
  #get(key: string, now: number): Entry | undefined {
    const e = this.#entries.get(key);
    if (e === undefined) return undefined;
    if (e.failures > 0 && this.#over(e, now)) {
      // A new window starts with the next failure.
      e.failures = 0;
      e.lockedUntil = 0;
    }
    if (e.failures === 0 && e.pending === 0) {
      this.#entries.delete(key);
      return undefined;
    }
    return e;
  }

  /**
   * Room for one more key: forgets the keys that no longer matter, oldest
   * first, until one is still live. False when the table stays full.
   */
  #room(now: number): boolean {
    for (const [key, e] of this.#entries) {
      if (this.#entries.size < this.capacity) return true;
      if (e.pending > 0 || !this.#over(e, now)) break;
      this.#entries.delete(key);
    }
    return this.#entries.size < this.capacity;
  }

  /** Moves `key` to the most recent end. */
  #touch(key: string, e: Entry): void {
    this.#entries.delete(key);
    this.#entries.set(key, e);
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
   * An attempt of `key` begins at `now`: `"ok"` counts it as pending
   * (each `"ok"` must be followed by one {@link end}); any other verdict
   * counts nothing (see {@link AttemptVerdict}).
   *
   * @example
   * ```ts
   * import { FailureBudget } from "./limits.ts";
   *
   * const budget = new FailureBudget({ max: 1, window: 1000 });
   * budget.begin("192.0.2.1", 0); // "ok"
   * budget.begin("192.0.2.1", 0); // "busy": the one in flight may use it up
   * budget.end("192.0.2.1", 5, true); // { failures: 1, lockedOut: true }
   * budget.begin("192.0.2.1", 10); // "locked"
   * ```
   */
  begin(key: string, now: number): AttemptVerdict {
    let e = this.#get(key, now);
    if (e === undefined) {
      if (!this.#room(now)) return "full";
      e = { failures: 0, since: now, lockedUntil: 0, pending: 0 };
    } else if (e.lockedUntil > now) return "locked";
    else if (e.failures + e.pending >= this.max) return "busy";
    e.pending++;
    this.#touch(key, e);
    return "ok";
  }

  /**
   * An attempt that {@link begin} let go ahead has ended at `now`:
   * `failed` counts a failure (as {@link fail}), else it only frees its
   * place (a success does not wipe the failures counted before it).
   *
   * @example
   * ```ts
   * import { FailureBudget } from "./limits.ts";
   *
   * const budget = new FailureBudget({ max: 3, window: 1000 });
   * budget.begin("192.0.2.1", 0); // "ok"
   * budget.end("192.0.2.1", 5, false); // { failures: 0, lockedOut: false }
   * ```
   */
  end(key: string, now: number, failed: boolean): FailureCount {
    const e = this.#get(key, now);
    if (e !== undefined && e.pending > 0) e.pending--;
    if (failed) return this.fail(key, now);
    if (e !== undefined) this.#get(key, now); // dropped when nothing is left
    return { failures: e?.failures ?? 0, lockedOut: false };
  }

  /**
   * Counts a failure of `key` at `now`. A new key finds no room while the
   * table is full of live keys: then it is not counted (its `begin()`
   * would have been refused).
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
    if (e === undefined) {
      if (!this.#room(now)) return { failures: 1, lockedOut: false };
      e = { failures: 0, since: now, lockedUntil: 0, pending: 0 };
    }
    if (e.failures === 0) e.since = now;
    e.failures++;
    let lockedOut = false;
    if (e.failures >= this.max && e.lockedUntil <= now) {
      e.lockedUntil = now + this.window;
      lockedOut = true;
    }
    this.#touch(key, e);
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
  // A connection reset before it was accepted can come without an address
  // (Bun): all such count under one key, as they did before keys.
  if (!address) return "";
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

/** Default of `maxConnectionsPerIp`. */
export const DEFAULT_MAX_CONNECTIONS_PER_IP = 50;
/** Default of `maxAuthFailuresPerIp`. */
export const DEFAULT_MAX_AUTH_FAILURES_PER_IP = 10;
/** Default of `authFailureWindow`: 15 minutes. */
export const DEFAULT_AUTH_FAILURE_WINDOW = 900000;

/**
 * What {@link ClientLimits.authStart} decides: an {@link AttemptVerdict},
 * or `"unavailable"` when the limits could not be asked (a shared table
 * that did not answer in time): the attempt is refused, as for `"full"`.
 * `failures`: the key's failures counted so far (for the delay of a
 * refusal).
 */
export interface AuthStart {
  /** Whether the attempt may go ahead, or why not. */
  verdict: AttemptVerdict | "unavailable";
  /** Failures of the key in its window so far. */
  failures: number;
}

/**
 * Where the limits per client address are counted: open connections
 * (`maxConnectionsPerIp`) and the AUTH failure budget
 * (`maxAuthFailuresPerIp`). `serve()` keeps them in its own process
 * ({@link LocalClientLimits}); several processes serving one port share
 * one table by passing an implementation that asks the process holding
 * it (as `smtpd --workers` does). Keys come from {@link clientKey}. A
 * method may answer at once or with a promise; one that fails closed
 * must still answer (a refusal), never throw.
 *
 * @example
 * ```ts
 * import { type ClientLimits, LocalClientLimits } from "./limits.ts";
 *
 * const limits: ClientLimits = new LocalClientLimits({
 *   maxConnectionsPerIp: 2,
 *   maxAuthFailuresPerIp: 10,
 *   authFailureWindow: 900000,
 *   now: () => Date.now(),
 * });
 * limits.connect("192.0.2.1"); // true
 * ```
 */
export interface ClientLimits {
  /** A connection from `key` opens: false when that is over the limit. */
  connect(key: string): boolean | Promise<boolean>;
  /** A connection that {@link connect} let in has closed. */
  disconnect(key: string): void;
  /** An AUTH attempt from `key` begins (its credentials not yet checked). */
  authStart(key: string): AuthStart | Promise<AuthStart>;
  /**
   * The attempt that {@link authStart} let go ahead has ended: `failed`
   * when the credentials were wrong (535).
   */
  authEnd(key: string, failed: boolean): FailureCount | Promise<FailureCount>;
}

/** Options of {@link LocalClientLimits} (the `serve()` options of the same names). */
export interface LocalClientLimitsOptions {
  /** Open connections per key at most (`Infinity`: no limit). Default 50. */
  maxConnectionsPerIp?: number;
  /** Failed AUTH attempts per key within the window (`Infinity`: off). Default 10. */
  maxAuthFailuresPerIp?: number;
  /** Milliseconds the failures count over, and a lock-out lasts. Default 15 minutes. */
  authFailureWindow?: number;
  /** Keys the AUTH budget remembers at most. Default 10000. */
  capacity?: number;
  /** The clock, in milliseconds. */
  now: () => number;
}

/**
 * The limits per client address of one process: connection counts per
 * key, and a {@link FailureBudget}.
 *
 * @example
 * ```ts
 * import { LocalClientLimits } from "./limits.ts";
 *
 * const limits = new LocalClientLimits({
 *   maxConnectionsPerIp: 1,
 *   maxAuthFailuresPerIp: 10,
 *   authFailureWindow: 900000,
 *   now: () => Date.now(),
 * });
 * limits.connect("192.0.2.1"); // true
 * limits.connect("192.0.2.1"); // false
 * limits.disconnect("192.0.2.1");
 * ```
 */
export class LocalClientLimits implements ClientLimits {
  /** The AUTH failure budget (null: off). */
  readonly budget: FailureBudget | null;
  readonly #max: number;
  readonly #now: () => number;
  #open = new Map<string, number>();

  /**
   * Makes empty counts; throws a `TypeError` on a bad option.
   *
   * @param options see {@link LocalClientLimitsOptions}
   */
  constructor(options: LocalClientLimitsOptions) {
    this.#max = options.maxConnectionsPerIp ?? DEFAULT_MAX_CONNECTIONS_PER_IP;
    this.#now = options.now;
    const maxFailures = options.maxAuthFailuresPerIp ??
      DEFAULT_MAX_AUTH_FAILURES_PER_IP;
    this.budget = maxFailures === Infinity ? null : new FailureBudget({
      max: maxFailures,
      window: options.authFailureWindow ?? DEFAULT_AUTH_FAILURE_WINDOW,
      capacity: options.capacity,
    });
  }

  /** Connections counted now under `key`. */
  connections(key: string): number {
    return this.#open.get(key) ?? 0;
  }

  /** Counts a connection from `key`; false (not counted) when over the limit. */
  connect(key: string): boolean {
    if (this.#max === Infinity) return true;
    const n = this.#open.get(key) ?? 0;
    if (n >= this.#max) return false;
    this.#open.set(key, n + 1);
    return true;
  }

  /** A connection from `key` that {@link connect} counted has closed. */
  disconnect(key: string): void {
    const n = (this.#open.get(key) ?? 1) - 1;
    if (n <= 0) this.#open.delete(key);
    else this.#open.set(key, n);
  }

  /** An AUTH attempt from `key` begins (see {@link FailureBudget.begin}). */
  authStart(key: string): AuthStart {
    if (this.budget === null) return { verdict: "ok", failures: 0 };
    const now = this.#now();
    const verdict = this.budget.begin(key, now);
    return { verdict, failures: this.budget.failures(key, now) };
  }

  /** The attempt has ended (see {@link FailureBudget.end}). */
  authEnd(key: string, failed: boolean): FailureCount {
    if (this.budget === null) return { failures: 0, lockedOut: false };
    return this.budget.end(key, this.#now(), failed);
  }
}
