/**
 * The CLI's sweep of the Maildir's `tmp/` (at start-up, then every hour).
 *
 * @module
 */

import type { Maildir } from "../maildir.ts";
import { errorText, type Log } from "./log.ts";

/** How often `tmp/` is swept after the start-up sweep. */
export const SWEEP_INTERVAL_MS = 3600 * 1000;

/**
 * Sweeps `tmp/` now and then every {@link SWEEP_INTERVAL_MS}, in the
 * background: called once the server listens, so that a `tmp/` full of
 * orphans does not hold up start-up (the sweep lets the event loop run
 * between batches of files). Logs what it removed, and a warning when a
 * sweep fails (never fatal). Returns the function that stops it, also a
 * sweep in progress.
 */
export function startTmpSweep(maildir: Maildir, log: Log): () => void {
  const stop = new AbortController();
  let running = false;
  const sweep = async () => {
    if (running || stop.signal.aborted) return;
    running = true;
    try {
      const removed = await maildir.sweepTmp(undefined, undefined, {
        signal: stop.signal,
      });
      if (removed > 0) {
        log.info(
          "tmp-swept",
          `removed ${removed} orphan file${
            removed === 1 ? "" : "s"
          } older than 36 hours from ${maildir.path}/tmp`,
          { removed, dir: `${maildir.path}/tmp` },
        );
      }
    } catch (error) {
      log.warn(
        "tmp-sweep-failed",
        `cannot sweep ${maildir.path}/tmp: ${errorText(error)}`,
        { dir: `${maildir.path}/tmp`, error: errorText(error) },
      );
    } finally {
      running = false;
    }
  };
  void sweep();
  const timer = setInterval(() => void sweep(), SWEEP_INTERVAL_MS);
  return () => {
    stop.abort();
    clearInterval(timer);
  };
}
