/**
 * The AUTH exchange's outcome: the application's `auth` hook asked within
 * the limits on failed attempts per client address (counted when an
 * attempt begins, a delay after each failure, a lock-out past the
 * budget), logged, and answered to the engine.
 *
 * @module
 */

import type { SmtpEngine } from "./engine.ts";
import { checkAuth } from "./auth.ts";
import { SmtpError } from "./errors.ts";
import type { AuthCredentials } from "./sasl.ts";
import { type AuthStart, clientKey, failureDelay } from "./limits.ts";
import type { Session } from "./session.ts";
import type { DriverHost } from "./host.ts";
import { type HookCalls, isThenable, TEMPORARY } from "./hooks.ts";
import { now } from "./deadlines.ts";

const AUTH_INVALID = new SmtpError(
  535,
  "5.7.8",
  "Authentication credentials invalid",
);
const AUTH_TEMPORARY = new SmtpError(
  454,
  "4.7.0",
  "Temporary authentication failure",
);
const AUTH_LOCKED = new SmtpError(
  454,
  "4.7.0",
  "Too many failed authentications from your address, try again later",
);
/** How long an AUTH attempt waits for those in flight (see maxAuthFailuresPerIp). */
const AUTH_QUEUE_MS = 10000;
/** How often a waiting AUTH attempt asks again. */
const AUTH_QUEUE_POLL_MS = 100;
const EMPTY = new Uint8Array(0);

/** What the AUTH flow needs of a connection's driver. */
export interface AuthDriver {
  readonly host: DriverHost;
  readonly engine: SmtpEngine;
  readonly session: Session;
  readonly hooks: HookCalls;
  /** The server is closing. */
  readonly closing: boolean;
  /** Waits `ms`, or less when the server closes. */
  pause(ms: number): Promise<void>;
}

/**
 * AUTH: the "auth attempt → yes or no" event, answered by auth.verify,
 * within the per-address failure budget (maxAuthFailuresPerIp): counted
 * when it begins, slowed after a failure, locked out past the budget.
 *
 * @example
 * ```ts
 * import { authenticate, type AuthDriver } from "./auth_flow.ts";
 *
 * declare const driver: AuthDriver;
 * await authenticate(driver, { mechanism: "PLAIN", username: "alice", password: "s3cret" });
 * ```
 */
export async function authenticate(
  d: AuthDriver,
  credentials: AuthCredentials,
): Promise<void> {
  const auth = d.host.hooks.auth!;
  const s = d.session;
  const limits = d.host.limits;
  const key = clientKey(s.remoteAddress);
  // Counted when it begins: guesses in flight at once cannot get more
  // checked than the budget. One that could use up the budget with those
  // in flight waits for them.
  const since = Date.now();
  let start: AuthStart;
  for (;;) {
    const r = limits.authStart(key);
    start = isThenable(r) ? await r : r;
    if (
      start.verdict !== "busy" || d.closing ||
      Date.now() - since >= AUTH_QUEUE_MS
    ) break;
    await d.pause(AUTH_QUEUE_POLL_MS);
  }
  if (start.verdict !== "ok") {
    // Locked out (or no room to count): the application is not asked;
    // slow, then 454.
    await d.pause(failureDelay(start.failures));
    return authDone(
      d,
      credentials,
      start.verdict === "locked" || start.verdict === "busy"
        ? AUTH_LOCKED
        : AUTH_TEMPORARY,
    );
  }
  let error: SmtpError | null = AUTH_TEMPORARY;
  const asked = performance.now();
  try {
    const check = (async (): Promise<SmtpError | null> => {
      try {
        return (await checkAuth(auth, credentials, s)) ? null : AUTH_INVALID;
      } catch (err) {
        return d.hooks.error(err, "auth", null, AUTH_TEMPORARY);
      }
    })();
    error = d.hooks.reply(await d.hooks.wait(check, true));
    d.host.counters.hook("auth", performance.now() - asked);
    if (error === TEMPORARY) error = AUTH_TEMPORARY;
  } finally {
    const failed = error !== null && error.code === 535;
    const ended = limits.authEnd(key, failed);
    const { failures, lockedOut } = isThenable(ended) ? await ended : ended;
    if (lockedOut) {
      d.host.counters.lockouts++;
      d.host.logger?.({
        type: "auth-lockout",
        session: s.id,
        remoteAddress: s.remoteAddress,
        failures,
      });
    }
    if (failed) await d.pause(failureDelay(failures));
  }
  authDone(d, credentials, error);
}

/** Logs an AUTH outcome and answers the engine. */
function authDone(
  d: AuthDriver,
  credentials: AuthCredentials,
  error: SmtpError | null,
): void {
  const s = d.session;
  d.host.counters.auth(credentials.mechanism, error === null);
  d.host.logger?.({
    type: "auth",
    session: s.id,
    mechanism: credentials.mechanism,
    username: credentials.username,
    success: error === null,
  });
  if (error === null) d.engine.accept();
  else d.engine.reject(error);
  d.engine.receive(EMPTY, now());
}
