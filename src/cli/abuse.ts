/**
 * The CLI's defences: the per-address limits and deadlines of its flags as
 * server options, and the sweep of the Maildir's `tmp/` (at start-up, then
 * every hour).
 *
 * @module
 */

import type { Maildir } from "../maildir.ts";
import type { ServeOptions } from "../server.ts";
import type { CliOptions } from "./args.ts";
import { errorText, type Log } from "./log.ts";

/** How often `tmp/` is swept after the start-up sweep. */
export const SWEEP_INTERVAL_MS = 3600 * 1000;

/**
 * The server options of `--max-connections-per-ip`,
 * `--max-auth-failures-per-ip`, `--command-timeout` and
 * `--session-timeout` (only those given: the library's defaults otherwise).
 */
export function abuseOptions(o: CliOptions): Partial<ServeOptions> {
  const out: Partial<ServeOptions> = {};
  if (o.maxConnectionsPerIp !== undefined) {
    out.maxConnectionsPerIp = o.maxConnectionsPerIp;
  }
  if (o.maxAuthFailuresPerIp !== undefined) {
    out.maxAuthFailuresPerIp = o.maxAuthFailuresPerIp;
  }
  if (o.commandTimeout !== undefined) out.commandTimeout = o.commandTimeout;
  if (o.sessionTimeout !== undefined) out.sessionTimeout = o.sessionTimeout;
  return out;
}

/**
 * Sweeps `tmp/` now (awaited: orphans are gone before the server listens)
 * and then every {@link SWEEP_INTERVAL_MS}; logs what it removed, and a
 * warning when a sweep fails. Returns the function that stops it.
 */
export async function startTmpSweep(
  maildir: Maildir,
  log: Log,
): Promise<() => void> {
  let running = false;
  const sweep = async () => {
    if (running) return;
    running = true;
    try {
      const removed = await maildir.sweepTmp();
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
  await sweep();
  const timer = setInterval(() => void sweep(), SWEEP_INTERVAL_MS);
  return () => clearInterval(timer);
}
