/**
 * The CLI's log: one line per event in text or JSON, `--quiet` and
 * `--verbose`, and the server's structured log entries turned into lines.
 *
 * Failures of clients (refused connections, failed TLS handshakes, resets,
 * timeouts, protocol errors) are not the server's errors: unless
 * `--verbose`, they are counted and summarised in one `client-failures`
 * line per interval at most (60 s; and at shutdown), so that a flood
 * cannot flood the log. AUTH lock-outs get a line each, or with `--quiet`
 * are counted in that summary too. The listening line is printed even
 * with `--quiet` (it says which port `--port 0` chose). The environment variable
 * `SMTPD_LOG_SUMMARY_MS` shortens the interval (for tests). No line ever
 * holds a raw line break from an error message.
 *
 * @module
 */

import process from "node:process";
import {
  clearInterval,
  clearTimeout,
  setInterval,
  setTimeout,
} from "node:timers";
import type { ErrorContext, LogEntry } from "../session.ts";
import type { CliOptions } from "./args.ts";

type Fields = Record<string, unknown>;

/** The kinds of client failures counted in a `client-failures` summary. */
export type ClientFailure =
  | "refused"
  | "tls"
  | "reset"
  | "timeout"
  | "protocol"
  | "connection"
  | "auth-lockout";

/** The summary interval: SMTPD_LOG_SUMMARY_MS, else 60 s. */
function summaryInterval(): number {
  const ms = Number(process.env.SMTPD_LOG_SUMMARY_MS);
  return Number.isInteger(ms) && ms > 0 ? ms : 60_000;
}

/** Text without line breaks or other control characters (one log line). */
export function oneLine(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/\s*[\r\n]+\s*/g, " ").replace(/[\x00-\x1f\x7f]/g, "?")
    .trim();
}

export class Log {
  readonly #json: boolean;
  readonly #quiet: boolean;
  readonly verbose: boolean;
  readonly #interval: number;
  #counts = new Map<ClientFailure, number>();
  #since = 0;
  #timer: ReturnType<typeof setTimeout> | null = null;

  constructor(o: Pick<CliOptions, "log" | "quiet" | "verbose">) {
    this.#json = o.log === "json";
    this.#quiet = o.quiet;
    this.verbose = o.verbose;
    this.#interval = summaryInterval();
  }

  #write(toErr: boolean, event: string, text: string, fields: Fields): void {
    const time = new Date().toISOString();
    const line = this.#json
      ? JSON.stringify({ time, event, ...fields })
      : `${time} ${oneLine(text)}`;
    (toErr ? process.stderr : process.stdout).write(line + "\n");
  }

  /**
   * Counts a client's failure for the next summary (printed at most once
   * per interval, and by {@link Log.flush}).
   */
  clientFailure(kind: ClientFailure): void {
    if (this.#counts.size === 0) this.#since = Date.now();
    this.#counts.set(kind, (this.#counts.get(kind) ?? 0) + 1);
    if (this.#timer === null) {
      this.#timer = setTimeout(() => {
        this.#timer = null;
        this.flush();
      }, this.#interval);
      this.#timer.unref?.();
    }
  }

  /** Prints the summary of client failures counted so far, if any. */
  flush(): void {
    if (this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    if (this.#counts.size === 0) return;
    const counts = Object.fromEntries(this.#counts);
    const seconds = Math.max(1, Math.round((Date.now() - this.#since) / 1000));
    this.#counts.clear();
    this.#write(
      true,
      "client-failures",
      `warning: client failures in the last ${seconds} s: ${
        Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(", ")
      }`,
      { seconds, counts },
    );
  }

  /** A line printed even with `--quiet` (the listening line). */
  notice(event: string, text: string, fields: Fields = {}): void {
    this.#write(false, event, text, fields);
  }

  /** Whether `--quiet` was given. */
  get quiet(): boolean {
    return this.#quiet;
  }

  info(event: string, text: string, fields: Fields = {}): void {
    if (!this.#quiet) this.#write(false, event, text, fields);
  }

  debug(event: string, text: string, fields: Fields = {}): void {
    if (this.verbose) this.#write(false, event, text, fields);
  }

  warn(event: string, text: string, fields: Fields = {}): void {
    this.#write(true, event, `warning: ${text}`, fields);
  }

  error(event: string, text: string, fields: Fields = {}): void {
    this.#write(true, event, `error: ${text}`, fields);
  }
}

export function errorText(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return oneLine(
      typeof code === "string" && !error.message.includes(code)
        ? `${code}: ${error.message}`
        : error.message,
    );
  }
  return oneLine(String(error));
}

/** What the server logs about a client's failure (by its message), or null. */
const CLIENT_ERRORS: Record<string, ClientFailure> = {
  "connection failed": "connection",
  "TLS handshake failed": "tls",
};

/** The kind of a client's connection error. */
function failureKind(
  message: string,
  error: unknown,
): ClientFailure | "counted" | null {
  // Its session then closes with reason "timeout": counted there.
  if (message.startsWith("the client did not read its replies")) {
    return "counted";
  }
  const kind = CLIENT_ERRORS[message];
  if (kind !== "connection") return kind ?? null;
  const e = error as { code?: unknown; name?: unknown; message?: unknown };
  const text = `${String(e?.code ?? "")} ${String(e?.name ?? "")} ${
    String(e?.message ?? "")
  }`;
  if (/SSL|TLS|certificate|handshake/i.test(text)) return "tls";
  if (
    /ECONNRESET|EPIPE|ECONNABORTED|ConnectionReset|BrokenPipe|reset/i.test(text)
  ) {
    return "reset";
  }
  if (/ETIMEDOUT|TimedOut/i.test(text)) return "timeout";
  return "connection";
}

export function duration(ms: number): string {
  let s = Math.round(ms / 1000);
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  return h > 0 ? `${h}h ${m}m ${s}s` : m > 0 ? `${m}m ${s}s` : `${s}s`;
}

/** "1 message", "2 messages". */
export function count(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** What the server did, as the summary line says it. */
export interface Totals {
  messages: number;
  bytes: number;
  failed: number;
}

/** "stopped after 2m 5s: 3 messages, 4096 bytes[, 1 failed delivery]". */
export function stoppedText(uptimeMs: number, t: Totals): string {
  return `stopped after ${duration(uptimeMs)}: ${
    count(t.messages, "message")
  }, ${count(t.bytes, "byte")}` +
    (t.failed > 0
      ? `, ${count(t.failed, "failed delivery", "failed deliveries")}`
      : "");
}

/**
 * The environment variable naming the processes (pids, comma-separated)
 * whose exit stops the server as SIGTERM does (set by the checkout's `npm
 * start`: npm's shell dies of the SIGTERM that npm passes on, and passes
 * nothing on itself; and npm killed leaves its shell behind).
 */
export const STOP_WITH_ENV = "SMTPD_STOP_WITH";

/** How often the processes named by {@link STOP_WITH_ENV} are looked for. */
const STOP_WITH_POLL_MS = 250;

/** Why the server stops: a signal, or the exit of a process it stops with. */
export type StopReason = "SIGINT" | "SIGTERM" | "parent exited";

/** Whether process `pid` has exited (it is not, or no longer, our parent when it was). */
function exited(pid: number, wasParent: boolean): boolean {
  // A parent that exits leaves its children to another (init, or a
  // subreaper), even before it is reaped.
  if (wasParent) return process.ppid !== pid;
  try {
    process.kill(pid, 0);
    return false;
  } catch (error) {
    return (error as { code?: unknown }).code === "ESRCH";
  }
}

/**
 * Calls `onGone` once a process named by {@link STOP_WITH_ENV} has
 * exited; returns the function that stops watching. Takes the variable
 * out of the environment, so that processes started later do not watch.
 */
function watchStopWith(onGone: () => void): () => void {
  const text = process.env[STOP_WITH_ENV];
  if (text === undefined) return () => {};
  delete process.env[STOP_WITH_ENV];
  const pids = text.split(",").map(Number).filter((pid) =>
    Number.isSafeInteger(pid) && pid > 1
  ).map((pid) => ({ pid, wasParent: process.ppid === pid }));
  if (pids.length === 0) return () => {};
  const timer = setInterval(() => {
    if (!pids.some(({ pid, wasParent }) => exited(pid, wasParent))) return;
    clearInterval(timer);
    onGone();
  }, STOP_WITH_POLL_MS);
  timer.unref?.();
  return () => clearInterval(timer);
}

/**
 * Calls `onSignal` on SIGINT and SIGTERM (a signal the platform cannot
 * watch is skipped), and once when a process named by
 * {@link STOP_WITH_ENV} exits (not after a signal: a terminal's Ctrl-C
 * ends that process too); returns the function that stops watching.
 */
export function watchStopSignals(
  onSignal: (why: StopReason) => void,
): () => void {
  const unwatchParent = watchStopWith(() => onSignal("parent exited"));
  const removers = (["SIGINT", "SIGTERM"] as const).map((signal) => {
    const handler = () => {
      unwatchParent();
      onSignal(signal);
    };
    try {
      process.on(signal, handler);
    } catch { /* a signal this platform cannot watch */ }
    return () => {
      try {
        process.off(signal, handler);
      } catch { /* never added */ }
    };
  });
  return () => {
    unwatchParent();
    for (const remove of removers) remove();
  };
}

/**
 * Calls `onReload` on each SIGHUP (where the platform has it); returns the
 * function that stops watching. While watched, SIGHUP no longer ends the
 * process.
 */
export function watchReloadSignal(onReload: () => void): () => void {
  const handler = () => onReload();
  try {
    process.on("SIGHUP", handler);
  } catch {
    return () => {}; // a signal this platform cannot watch
  }
  return () => {
    try {
      process.off("SIGHUP", handler);
    } catch { /* never added */ }
  };
}

export const hostPort = (host: string, port: number) =>
  `${host.includes(":") ? `[${host}]` : host}:${port}`;

/**
 * The server's `onError` for the CLI: one error line per hook error in the
 * log's format (the hook, the session, the message id, the error's
 * message; in JSON also its stack), instead of the library's default
 * print to the console.
 */
export function hookErrorLogger(
  log: Log,
): (error: unknown, context: ErrorContext) => void {
  return (error, { hook, session, message }) => {
    const stack = error instanceof Error ? error.stack : undefined;
    log.error(
      "hook-error",
      `session=${session.id} ${hook} failed${
        message !== null ? ` id=${message.id}` : ""
      }: ${errorText(error)}`,
      {
        session: session.id,
        remoteAddress: session.remoteAddress,
        hook,
        ...(message !== null ? { id: message.id } : {}),
        error: errorText(error),
        ...(stack !== undefined ? { stack } : {}),
      },
    );
  };
}

/** The server's log entries, in the CLI's log. */
export function serverLogger(log: Log, listen: { runtime?: string }) {
  return (entry: LogEntry): void => {
    switch (entry.type) {
      case "listen":
        listen.runtime = entry.runtime;
        break;
      case "error": {
        // A hook's error: onError prints it (see hookErrorLogger).
        if (entry.hook !== undefined) break;
        const kind = entry.session === undefined
          ? null
          : failureKind(entry.message, entry.error);
        if (kind !== null && !log.verbose) {
          if (kind !== "counted") log.clientFailure(kind);
          break;
        }
        log.error(
          "error",
          `${
            entry.session ? `session=${entry.session} ` : ""
          }${entry.message}: ${errorText(entry.error)}`,
          {
            session: entry.session,
            message: entry.message,
            error: errorText(entry.error),
          },
        );
        break;
      }
      case "refused":
        if (!log.verbose) {
          log.clientFailure("refused");
          break;
        }
        log.warn(
          "refused",
          `refused ${entry.remoteAddress}: ${entry.reason}`,
          { remoteAddress: entry.remoteAddress, reason: entry.reason },
        );
        break;
      case "connect":
        // A proxy's health check is no client.
        log.debug(
          entry.proxy?.healthCheck ? "health-check" : "connect",
          entry.proxy?.healthCheck
            ? `session=${entry.session} health check from proxy ${
              hostPort(entry.proxy.address, entry.proxy.port)
            }`
            : `session=${entry.session} connect from ${
              hostPort(entry.remoteAddress, entry.remotePort)
            }${
              // --reverse-dns: the name, when its A/AAAA records confirm it.
              entry.reverseDns?.status === "confirmed"
                ? ` (${entry.reverseDns.name})`
                : ""}${
              entry.proxy
                ? ` via proxy ${
                  hostPort(entry.proxy.address, entry.proxy.port)
                }`
                : ""
            }`,
          entry,
        );
        break;
      case "close":
        if (!log.verbose) {
          if (entry.reason === "timeout") log.clientFailure("timeout");
          else if (entry.reason === "too-many-errors") {
            log.clientFailure("protocol");
          }
          break;
        }
        log.debug(
          "close",
          `session=${entry.session} close (${entry.reason}, ${entry.messages} messages)`,
          entry,
        );
        break;
      case "command":
        log.debug("command", `session=${entry.session} < ${entry.line}`, entry);
        break;
      case "reply":
        log.debug(
          "reply",
          `session=${entry.session} > ${
            entry.text.replace(/\r\n$/, "").replace(/\r\n/g, "\\r\\n")
          }`,
          entry,
        );
        break;
      case "message":
        break; // the CLI logs the delivered message itself, with its file
      case "milter": {
        // A filter refused or discarded: a message (from DATA on) or a
        // command. A delivered message's line says milter=... itself.
        const what = entry.action === "discard"
          ? "discarded"
          : entry.action === "tempfail"
          ? "deferred"
          : "rejected";
        const tail = `${what} by milter ${entry.milter} at ${entry.stage}${
          entry.reply !== undefined ? `: ${entry.reply}` : ""
        }${entry.failure !== undefined ? ` (${entry.failure})` : ""}`;
        log.info(
          "milter",
          entry.id !== undefined
            ? `message id=${entry.id} from=<${entry.from}> to=${
              (entry.to ?? []).map((a) => `<${a}>`).join(",")
            } ${tail}`
            : `session=${entry.session} ${tail}`,
          entry,
        );
        break;
      }
      case "auth-lockout":
        // One line per address, unless --quiet: then in the summary.
        if (log.quiet) {
          log.clientFailure("auth-lockout");
          break;
        }
        log.warn(
          "auth-lockout",
          `session=${entry.session} ${entry.remoteAddress} locked out of AUTH after ${entry.failures} failures`,
          entry,
        );
        break;
      case "auth":
        log.info(
          "auth",
          `session=${entry.session} auth ${entry.mechanism} user=${entry.username} ${
            entry.success ? "ok" : "failed"
          }`,
          entry,
        );
        break;
      default:
        ((x: never) => x)(entry);
    }
  };
}

// ---------------------------------------------------------------------------
