/**
 * Calling the application's hooks: what a hook's outcome means as a reply
 * ({@link toSmtpError}), how a hook's error is logged and reported
 * ({@link errorReporter}, the `onError` option), and {@link HookCalls},
 * a connection's wait for a hook with the hook deadline.
 *
 * @module
 */

import { SmtpError } from "./errors.ts";
import type { IncomingMessage } from "./message.ts";
import type { ErrorContext, HookName, Session } from "./session.ts";
import type { ServeOptions } from "./serve_options.ts";
import type { DriverHost } from "./host.ts";
import { now } from "./deadlines.ts";

/** 451 4.3.0: what a hook's failure (not an SmtpError) answers. */
export const TEMPORARY: SmtpError = new SmtpError(
  451,
  "4.3.0",
  "Temporary local problem, try again later",
);
/** 421 4.3.2: what a connection closed by the server gets. */
export const SHUTDOWN: SmtpError = new SmtpError(
  421,
  "4.3.2",
  "Service shutting down",
);
/** A wait ended at the hook deadline (hookTimeout). */
export const HOOK_TIMEOUT: unique symbol = Symbol("timeout");
/** A wait ended because close() gave up on the connection (closeTimeout). */
export const FORCED: unique symbol = Symbol("forced");

/** What a wait ({@link HookCalls.wait}) ends with: the hook's reply (null: accepted), or why it stopped. */
export type WaitResult =
  | SmtpError
  | null
  | typeof HOOK_TIMEOUT
  | typeof FORCED;

/** wait()'s default continuation. */
function identity<T>(x: T): T {
  return x;
}

/** Gives `then` the wait's `result`; what it throws goes to `failed`. */
function call(
  then: (result: WaitResult) => void,
  failed: (error: unknown) => void,
  result: WaitResult,
): void {
  try {
    then(result);
  } catch (error) {
    failed(error);
  }
}

/**
 * Whether a hook returned a promise (or any thenable) to wait for.
 *
 * @example
 * ```ts
 * import { isThenable } from "./hooks.ts";
 *
 * isThenable(Promise.resolve()); // true
 * isThenable(undefined); // false
 * ```
 */
export function isThenable(r: unknown): r is PromiseLike<unknown> {
  return r !== undefined && r !== null &&
    typeof (r as PromiseLike<unknown>).then === "function";
}

/**
 * What reports an application's hook error: the `onError` option, or by
 * default `console.error` with the hook's name, the session and the stack.
 * Never throws (an `onError` that throws or rejects is printed instead).
 */
export function errorReporter(
  onError: ServeOptions["onError"],
): (error: unknown, context: ErrorContext) => void {
  if (onError === undefined) {
    return (error, { hook, session }) => {
      try {
        console.error(
          `smtpd: error in ${hook} (session ${session.id}, client ${session.remoteAddress}):`,
          error,
        );
      } catch { /* no console to tell */ }
    };
  }
  const failed = (thrown: unknown) => {
    try {
      console.error("smtpd: onError failed:", thrown);
    } catch { /* no console to tell */ }
  };
  return (error, context) => {
    try {
      const r: unknown = onError(error, context);
      if (isThenable(r)) Promise.resolve(r).catch(failed);
    } catch (thrown) {
      failed(thrown);
    }
  };
}

/** Turns anything a hook threw into the reply to send. */
export function toSmtpError(err: unknown): SmtpError | null {
  if (err instanceof SmtpError) return err;
  // An SmtpError from another copy of this package (ESM and CJS side by side).
  if (
    typeof err === "object" && err !== null &&
    typeof (err as SmtpError).code === "number" &&
    typeof (err as SmtpError).enhancedCode === "string"
  ) {
    try {
      const e = err as SmtpError;
      return new SmtpError(e.code, e.enhancedCode, e.message);
    } catch {
      return null;
    }
  }
  return null;
}

/** The connection a {@link HookCalls} waits for: its server, session and deadline. */
export interface HookOwner {
  readonly host: DriverHost;
  readonly session: Session;
  /** Makes sure the connection's deadline fires by `deadline` (ms since the epoch). */
  armTimer(deadline: number): void;
}

/**
 * A connection's waits for the application (a hook, or the reader of a
 * message's `raw`): one at a time, ended by the hook deadline
 * (hookTimeout) or a forced close, whichever comes first; and what a
 * hook's error answers.
 *
 * @example
 * ```ts
 * import { HookCalls } from "./hooks.ts";
 * import type { HookOwner } from "./hooks.ts";
 *
 * declare const owner: HookOwner;
 * const calls = new HookCalls(owner);
 * const reply = calls.reply(await calls.wait(Promise.resolve(), false, "onHelo"));
 * ```
 */
export class HookCalls {
  /** close() gave up on the connection: every wait ends at once (FORCED). */
  forced = false;
  /**
   * Ends the wait in progress (a hook, or body backpressure; see wait()):
   * with FORCED when close() gives up on this connection (closeTimeout),
   * so that a hook that never settles cannot keep `close()` from
   * resolving, and with HOOK_TIMEOUT past `#deadline`.
   */
  #settle: ((result: WaitResult) => void) | null = null;
  /** When the wait in progress times out (Infinity: no wait). */
  #deadline = Infinity;
  readonly #owner: HookOwner;

  /** The waits of `owner`'s connection. */
  constructor(owner: HookOwner) {
    this.#owner = owner;
  }

  /** close() gave up: the wait in progress (if any) ends with FORCED, and every later one at once. */
  force(): void {
    this.forced = true;
    this.#settle?.(FORCED);
  }

  /**
   * The connection's deadline fired: a wait past its hook deadline ends
   * with HOOK_TIMEOUT; one not yet due re-arms the deadline.
   */
  onTimer(now: number): void {
    if (this.#settle !== null && this.#deadline !== Infinity) {
      if (now >= this.#deadline) this.#settle(HOOK_TIMEOUT);
      else this.#owner.armTimer(this.#deadline);
    }
  }

  /**
   * Begins a wait that `settle` ends: with HOOK_TIMEOUT at the hook
   * deadline (hookTimeout from now), with FORCED when close() gives up
   * (at once if it has already). The waiter ends it itself with
   * {@link HookCalls.end} when its answer comes first. No promise of its
   * own: the waiter's answer and these two reach `settle` directly. `at`:
   * the time now (the driver's, see `now()`) when the caller has read it
   * already, so that the clock is not read again.
   */
  begin(settle: (result: WaitResult) => void, at?: number): void {
    if (this.forced) return settle(FORCED);
    this.#settle = settle;
    const ms = this.#owner.host.options.hookTimeout;
    if (ms !== Infinity) {
      this.#deadline = (at ?? now()) + ms;
      this.#owner.armTimer(this.#deadline);
    }
  }

  /** Ends the wait `settle` began (see begin()), if it is still the one in progress. */
  end(settle: (result: WaitResult) => void): void {
    if (this.#settle === settle) {
      this.#settle = null;
      this.#deadline = Infinity;
    }
  }

  /**
   * Waits for `p` (a hook, or the reader of `raw`) until the hook deadline
   * (hookTimeout from now) or a forced close, whichever comes first, and
   * gives the result to `then` (the identity by default): its value is the
   * wait's. One promise and one reaction on `p` per wait, and no timer of
   * its own (see the driver's armTimer): no Promise.race, no reaction left
   * behind on a long-lived promise, no second promise for what the caller
   * does with the result. `p`'s value is the result when `valued` (a
   * promise that never rejects, of null or the reply); otherwise
   * fulfilment means null and a rejection (before the deadline) the hook's
   * error.
   */
  wait<R = WaitResult>(
    p: PromiseLike<unknown>,
    valued: boolean,
    hook: HookName = "onMessage",
    then: (result: WaitResult) => R | PromiseLike<R> = identity as (
      result: WaitResult,
    ) => R,
  ): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.#watch(p, valued, hook, (result) => {
        try {
          resolve(then(result));
        } catch (error) {
          reject(error);
        }
      });
    });
  }

  /**
   * {@link HookCalls.wait} without a promise of its own: `then` gets the
   * result once, and what it throws goes to `failed`. From `p`'s reaction
   * they are called at once; when the hook deadline or a forced close ends
   * the wait, in a microtask (not inside the timer, close() or this call).
   */
  waitThen(
    p: PromiseLike<unknown>,
    hook: HookName,
    then: (result: WaitResult) => void,
    failed: (error: unknown) => void,
  ): void {
    this.#watch(p, false, hook, (result, fromHook) => {
      if (fromHook) call(then, failed, result);
      else queueMicrotask(() => call(then, failed, result));
    });
  }

  /**
   * The wait of {@link HookCalls.wait} and {@link HookCalls.waitThen}:
   * `settle` gets the result once, `fromHook` true when it came from `p`'s
   * reaction, false when the hook deadline or a forced close ended the
   * wait (from a timer, close() or begin() itself).
   */
  #watch(
    p: PromiseLike<unknown>,
    valued: boolean,
    hook: HookName,
    settle: (result: WaitResult, fromHook: boolean) => void,
  ): void {
    let done = false;
    const finish = (result: WaitResult, fromHook: boolean) => {
      if (done) return;
      done = true;
      this.end(ended);
      settle(result, fromHook);
    };
    const ended = (result: WaitResult) => finish(result, false);
    // Promise.resolve: a thenable whose then() throws counts as a
    // rejection. Always subscribed, so that no rejection goes unhandled.
    Promise.resolve(p).then(
      valued
        ? (v) => finish(v as SmtpError | null, true)
        : () => finish(null, true),
      (err) => {
        if (!done) finish(this.error(err, hook), true);
      },
    );
    this.begin(ended);
  }

  /** A hook's wait result as the reply to send (null: accepted). */
  reply(r: WaitResult): SmtpError | null {
    if (r === FORCED) return SHUTDOWN;
    if (r === HOOK_TIMEOUT) {
      const host = this.#owner.host;
      host.counters.hookTimeouts++;
      host.logger?.({
        type: "error",
        session: this.#owner.session.id,
        message: `hook did not settle within ${host.options.hookTimeout} ms`,
        error: null,
      });
      return TEMPORARY;
    }
    return r;
  }

  /**
   * The reply to a hook's error: an SmtpError is the reply; anything else
   * is logged and reported (onError) once, and answered 451 4.3.0 (or
   * `reply`). `message`: the message an onMessage hook was handling.
   */
  error(
    err: unknown,
    hook: HookName,
    message: IncomingMessage | null = null,
    reply: SmtpError = TEMPORARY,
  ): SmtpError {
    const smtp = toSmtpError(err);
    if (smtp !== null) return smtp;
    const { host, session } = this.#owner;
    host.counters.hookErrors[hook]++;
    host.logger?.({
      type: "error",
      session: session.id,
      message: `${hook} failed`,
      error: err,
      hook,
    });
    // Given up after hookTimeout: what the hook throws then is the abort.
    if (message === null || !message.signal.aborted) {
      host.reportError(err, { hook, session, message });
    }
    return reply;
  }
}
