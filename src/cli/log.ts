/**
 * The CLI's log: one line per event in text or JSON, `--quiet` and
 * `--verbose`, and the server's structured log entries turned into lines.
 *
 * @module
 */

import process from "node:process";
import type { LogEntry } from "../session.ts";
import type { CliOptions } from "./args.ts";

type Fields = Record<string, unknown>;

export class Log {
  readonly #json: boolean;
  readonly #quiet: boolean;
  readonly verbose: boolean;

  constructor(o: Pick<CliOptions, "log" | "quiet" | "verbose">) {
    this.#json = o.log === "json";
    this.#quiet = o.quiet;
    this.verbose = o.verbose;
  }

  #write(toErr: boolean, event: string, text: string, fields: Fields): void {
    const time = new Date().toISOString();
    const line = this.#json
      ? JSON.stringify({ time, event, ...fields })
      : `${time} ${text}`;
    (toErr ? process.stderr : process.stdout).write(line + "\n");
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
    return typeof code === "string" && !error.message.includes(code)
      ? `${code}: ${error.message}`
      : error.message;
  }
  return String(error);
}

export function duration(ms: number): string {
  let s = Math.round(ms / 1000);
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  return h > 0 ? `${h}h ${m}m ${s}s` : m > 0 ? `${m}m ${s}s` : `${s}s`;
}

export const hostPort = (host: string, port: number) =>
  `${host.includes(":") ? `[${host}]` : host}:${port}`;

/** The server's log entries, in the CLI's log. */
export function serverLogger(log: Log, listen: { runtime?: string }) {
  return (entry: LogEntry): void => {
    switch (entry.type) {
      case "listen":
        listen.runtime = entry.runtime;
        break;
      case "error":
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
      case "refused":
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
