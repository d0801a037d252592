/**
 * The milter client's options and verdict types: where a filter listens
 * ({@link parseMilterAddress}), its error policy and timeouts
 * ({@link resolveMilterOptions}), and what each stage resolves to
 * ({@link MilterVerdict}, {@link MilterModification}).
 *
 * @module
 */

import type { MilterFamily } from "./protocol.ts";
import type { HeaderModification } from "./headers.ts";

/**
 * Where a filter listens, parsed from `inet:PORT@HOST`, `inet:HOST:PORT` or `unix:/path`.
 *
 * @example
 * ```ts
 * import type { MilterAddress } from "./options.ts";
 * const opendkim: MilterAddress = { kind: "tcp", host: "127.0.0.1", port: 8891 };
 * ```
 */
export type MilterAddress =
  | { kind: "tcp"; host: string; port: number }
  | { kind: "unix"; path: string };

/**
 * Parses a filter address as Postfix and Sendmail write it:
 * `inet:PORT@HOST` (Sendmail), `inet:HOST:PORT` (Postfix; `inet:[::1]:PORT`
 * for IPv6), `inet6:PORT@HOST`, `unix:/path` or `local:/path`. Throws a
 * `TypeError` for anything else.
 *
 * @example
 * ```ts
 * import { parseMilterAddress } from "./options.ts";
 * parseMilterAddress("inet:11332@127.0.0.1"); // { kind: "tcp", host: "127.0.0.1", port: 11332 }
 * parseMilterAddress("inet:localhost:8891"); // { kind: "tcp", host: "localhost", port: 8891 }
 * parseMilterAddress("unix:/run/opendkim/opendkim.sock"); // { kind: "unix", path: "/run/..." }
 * ```
 */
export function parseMilterAddress(address: string): MilterAddress {
  if (typeof address !== "string") {
    throw new TypeError(
      `Cannot parse milter address: expected a string, got ${typeof address}`,
    );
  }
  const m = /^(inet6?|unix|local):(.*)$/.exec(address);
  if (m === null) {
    throw new TypeError(
      `Cannot parse milter address "${address}": expected inet:HOST:PORT, inet:PORT@HOST or unix:/path`,
    );
  }
  const rest = m[2];
  if (m[1] === "unix" || m[1] === "local") {
    if (rest === "" || rest.includes("\0")) {
      throw new TypeError(
        `Cannot parse milter address "${address}": the socket path is empty`,
      );
    }
    return { kind: "unix", path: rest };
  }
  let host: string;
  let port: string;
  const at = rest.lastIndexOf("@");
  if (at >= 0) {
    port = rest.slice(0, at);
    host = rest.slice(at + 1);
  } else {
    const colon = rest.lastIndexOf(":");
    if (colon < 0) {
      throw new TypeError(
        `Cannot parse milter address "${address}": the port is missing`,
      );
    }
    host = rest.slice(0, colon);
    port = rest.slice(colon + 1);
  }
  if (host.startsWith("[") && host.endsWith("]")) host = host.slice(1, -1);
  const n = Number(port);
  if (!/^\d+$/.test(port) || n < 1 || n > 65535) {
    throw new TypeError(
      `Cannot parse milter address "${address}": port "${port}" is not between 1 and 65535`,
    );
  }
  if (host === "") {
    throw new TypeError(
      `Cannot parse milter address "${address}": the host is empty`,
    );
  }
  return { kind: "tcp", host, port: n };
}

/**
 * What to do when a filter is down, slow, or speaks garbage.
 *
 * @example
 * ```ts
 * import type { MilterErrorPolicy } from "./options.ts";
 * const optional: MilterErrorPolicy = "accept"; // go on without the filter
 * ```
 */
export type MilterErrorPolicy = "tempfail" | "accept" | "reject";

/**
 * Time limits in milliseconds, per stage.
 *
 * @example
 * ```ts
 * import type { MilterTimeouts } from "./options.ts";
 * const quick: MilterTimeouts = { connect: 5_000, command: 10_000, endOfMessage: 60_000 };
 * ```
 */
export interface MilterTimeouts {
  /** Connecting and option negotiation (default 30,000, Postfix's `milter_connect_timeout`). */
  connect?: number;
  /** Each stage from connect to end-of-headers and each body chunk (default 30,000, `milter_command_timeout`). */
  command?: number;
  /** End-of-message, while the filter scans and answers (default 300,000, `milter_content_timeout`). */
  endOfMessage?: number;
}

/**
 * One filter.
 *
 * @example
 * ```ts
 * import type { MilterOptions } from "./options.ts";
 * const rspamd: MilterOptions = { address: "inet:11332@127.0.0.1", onError: "tempfail" };
 * ```
 */
export interface MilterOptions {
  /** `inet:PORT@HOST`, `inet:HOST:PORT` or `unix:/path`. */
  address: string;
  /** Verdict when the filter fails: `"tempfail"` (default, 451 4.7.1), `"accept"` (go on without it) or `"reject"` (550 5.7.1). */
  onError?: MilterErrorPolicy;
  /** Per-stage time limits. */
  timeouts?: MilterTimeouts;
  /** The largest packet accepted from the filter, in bytes (default 1 MiB + 1). */
  maxPacket?: number;
  /**
   * The most bytes of modifications (header names and values, recipients,
   * replacement body) one end-of-message may bring, in bytes (default
   * 26,214,400, the server's default `maxMessageSize`); more is a failure
   * of the filter. Bounds the memory a filter can make the client hold.
   */
  maxModificationBytes?: number;
}

/**
 * The filter's answer, or the error policy's, at one stage.
 *
 * @example
 * ```ts
 * import type { MilterVerdict } from "./options.ts";
 * const spam: MilterVerdict = { action: "reject", code: 554, enhancedCode: "5.7.1", text: "Gtube pattern" };
 * ```
 */
export type MilterVerdict =
  /** Go on with the next stage (and the next filter). */
  | { action: "continue" }
  /** Accept: this filter wants nothing more of this message (or session, before MAIL). */
  | { action: "accept" }
  /** Accept the message towards the client but deliver it to nobody. */
  | { action: "discard" }
  /** End-of-message only: deliver, but hold the message for review (`reason`). */
  | { action: "quarantine"; reason: string }
  /** Reply 5xx (`code`, `enhancedCode`, `text`: the filter's own or the default). */
  | MilterRejection & { action: "reject" }
  /** Reply 4xx. */
  | MilterRejection & { action: "tempfail" };

/**
 * The reply that goes with a reject or tempfail verdict.
 *
 * @example
 * ```ts
 * import type { MilterRejection } from "./options.ts";
 * const down: MilterRejection = {
 *   code: 451,
 *   enhancedCode: "4.7.1",
 *   text: "Service unavailable - try again later",
 *   failure: "Cannot talk to milter: connect ECONNREFUSED 127.0.0.1:11332",
 * };
 * ```
 */
export interface MilterRejection {
  /** Reply code, 4xx or 5xx. */
  code: number;
  /** Enhanced status code such as `"5.7.1"`. */
  enhancedCode: string;
  /** Reply text; lines separated by `\n` for a multi-line reply. */
  text: string;
  /** Set when the verdict comes from the error policy: what went wrong. */
  failure?: string;
}

/**
 * A modification a filter asked for at end-of-message, in the order it asked.
 *
 * @example
 * ```ts
 * import type { MilterModification } from "./options.ts";
 * const bcc: MilterModification = { type: "add-recipient", recipient: "<archive@example.org>" };
 * ```
 */
export type MilterModification =
  | HeaderModification
  | { type: "add-recipient"; recipient: string; params?: string }
  | { type: "delete-recipient"; recipient: string }
  | { type: "change-sender"; sender: string; params?: string }
  /** One piece of the new body; the pieces in order replace the whole body. */
  | { type: "replace-body"; chunk: Uint8Array }
  | { type: "quarantine"; reason: string };

/**
 * The outcome of end-of-message.
 *
 * @example
 * ```ts
 * import type { MilterEndOfMessage } from "./options.ts";
 * const ham: MilterEndOfMessage = {
 *   verdict: { action: "accept" },
 *   modifications: [{ type: "add-header", name: "X-Spam", value: "No" }],
 * };
 * ```
 */
export interface MilterEndOfMessage {
  /** The final verdict. */
  verdict: MilterVerdict;
  /** The modifications, in order (empty when the verdict is not to deliver). */
  modifications: MilterModification[];
}

/**
 * The client side of a connection, for the connect stage.
 *
 * @example
 * ```ts
 * import type { MilterConnectInfo } from "./options.ts";
 * const info: MilterConnectInfo = { hostname: "[192.0.2.1]", family: "4", port: 50000, address: "192.0.2.1" };
 * ```
 */
export interface MilterConnectInfo {
  /** The client's host name, or `[address]` when unknown. */
  hostname: string;
  /** `"4"`, `"6"`, `"L"` (Unix socket) or `"U"` (unknown). */
  family: MilterFamily;
  /** The client's port (0 for a Unix socket). */
  port: number;
  /** The client's IP address, or the socket path. */
  address: string;
}

/**
 * Macros for a stage: name (`j`, `{daemon_name}`, `i`, …) to value.
 *
 * @example
 * ```ts
 * import type { MilterMacros } from "./options.ts";
 * const connect: MilterMacros = { j: "mx.example.org", "{daemon_name}": "smtpd", "{client_addr}": "192.0.2.1" };
 * ```
 */
export type MilterMacros = Readonly<Record<string, string>>;

export const DEFAULT_TIMEOUTS: Required<MilterTimeouts> = {
  connect: 30_000,
  command: 30_000,
  endOfMessage: 300_000,
};
export const POLICIES: readonly MilterErrorPolicy[] = [
  "tempfail",
  "accept",
  "reject",
];
export const CONTINUE: MilterVerdict = { action: "continue" };

export function checkTimeout(name: string, v: unknown): void {
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
    throw new TypeError(
      `Cannot use milter option timeouts.${name}: ${
        typeof v === "number" ? v : typeof v
      } is not a positive number of milliseconds`,
    );
  }
}

/**
 * Validates milter options and fills in the defaults; throws a `TypeError`
 * in std style for a bad address, policy or limit.
 *
 * @example
 * ```ts
 * import { resolveMilterOptions } from "./options.ts";
 * const o = resolveMilterOptions({ address: "inet:11332@127.0.0.1" });
 * o.onError; // "tempfail"
 * o.timeouts.endOfMessage; // 300000
 * ```
 */
export function resolveMilterOptions(options: MilterOptions): {
  address: MilterAddress;
  onError: MilterErrorPolicy;
  timeouts: Required<MilterTimeouts>;
  maxPacket: number;
  maxModificationBytes: number;
} {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(
      "Cannot use milter options: expected an object with an address",
    );
  }
  const address = parseMilterAddress(options.address);
  const onError = options.onError ?? "tempfail";
  if (!POLICIES.includes(onError)) {
    throw new TypeError(
      `Cannot use milter option onError: "${onError}" is not one of tempfail, accept, reject`,
    );
  }
  const timeouts = { ...DEFAULT_TIMEOUTS };
  if (options.timeouts !== undefined) {
    if (typeof options.timeouts !== "object" || options.timeouts === null) {
      throw new TypeError(
        "Cannot use milter option timeouts: expected an object",
      );
    }
    for (const [k, v] of Object.entries(options.timeouts)) {
      if (!(k in DEFAULT_TIMEOUTS)) {
        throw new TypeError(
          `Cannot use milter option timeouts.${k}: unknown stage (connect, command, endOfMessage)`,
        );
      }
      if (v === undefined) continue;
      checkTimeout(k, v);
      timeouts[k as keyof MilterTimeouts] = v;
    }
  }
  const maxPacket = options.maxPacket ?? 1024 * 1024 + 1;
  if (!Number.isInteger(maxPacket) || maxPacket < 65536) {
    throw new TypeError(
      `Cannot use milter option maxPacket: ${maxPacket} is not an integer of at least 65536`,
    );
  }
  const maxModificationBytes = options.maxModificationBytes ?? 26_214_400;
  if (
    typeof maxModificationBytes !== "number" ||
    !Number.isInteger(maxModificationBytes) || maxModificationBytes < 1
  ) {
    throw new TypeError(
      `Cannot use milter option maxModificationBytes: ${maxModificationBytes} is not a positive integer`,
    );
  }
  return { address, onError, timeouts, maxPacket, maxModificationBytes };
}

export function rejection(
  action: "reject" | "tempfail",
  failure?: string,
): MilterVerdict {
  const v: MilterVerdict = action === "reject"
    ? {
      action,
      code: 550,
      enhancedCode: "5.7.1",
      text: "Command rejected",
    }
    : {
      action,
      code: 451,
      enhancedCode: "4.7.1",
      text: "Service unavailable - try again later",
    };
  if (failure !== undefined) v.failure = failure;
  return v;
}

/**
 * Parses a filter's `SMFIR_REPLYCODE` text (`"554 5.7.1 Spam"`, or several
 * lines `"550-5.7.1 a\r\n550 5.7.1 b"`) into a verdict; `undefined` when it
 * is not a 4xx or 5xx reply.
 */
export function parseReply(reply: string): MilterVerdict | undefined {
  const lines = reply.split(/\r?\n/).filter((l) => l !== "");
  const first = /^([45])(\d\d)(?:[ -]|$)/.exec(lines[0] ?? "");
  if (first === null) return undefined;
  const code = Number(first[1] + first[2]);
  let enhancedCode = "";
  const text: string[] = [];
  for (const line of lines) {
    const m = /^\d{3}[ -]?(?:([245]\.\d{1,3}\.\d{1,3})(?: |$))?(.*)$/.exec(
      line,
    );
    if (m === null) return undefined;
    if (m[1] !== undefined && enhancedCode === "") enhancedCode = m[1];
    text.push(m[2]);
  }
  if (enhancedCode === "" || enhancedCode[0] !== first[1]) {
    enhancedCode = first[1] === "5" ? "5.7.1" : "4.7.1";
  }
  return {
    action: first[1] === "5" ? "reject" : "tempfail",
    code,
    enhancedCode,
    text: text.join("\n"),
  };
}

/**
 * What one filter made of a message (`message.milter`, in the order of the
 * `milters` option).
 *
 * @example
 * ```ts
 * import type { MilterResult } from "./options.ts";
 * const r: MilterResult = {
 *   address: "inet:11332@127.0.0.1",
 *   verdict: { action: "accept" },
 *   modifications: [{ type: "add-header", name: "X-Spam", value: "No" }],
 *   addedHeaders: [{ name: "X-Spam", value: "No" }],
 * };
 * ```
 */
export interface MilterResult {
  /** The filter's address, as given in `milters`. */
  readonly address: string;
  /**
   * Its last verdict for this message: `continue` or `accept` (deliver),
   * `quarantine`, or `discard`; an error policy's verdict carries
   * `failure`. (A message a filter rejected never reaches the
   * application.)
   */
  readonly verdict: MilterVerdict;
  /** The modifications it asked for at end-of-message, in order (applied). */
  readonly modifications: readonly MilterModification[];
  /** The header fields it added or inserted (such as `Authentication-Results`, `X-Spam-*`). */
  readonly addedHeaders: readonly { name: string; value: string }[];
  /** Set when it quarantined the message: its reason. */
  readonly quarantine?: string;
}

/**
 * A word for the filters' outcome of a message, for a log line:
 * `quarantine` when one quarantined it, `discard`, else `accept`.
 *
 * @example
 * ```ts
 * import { milterOutcome } from "./options.ts";
 * milterOutcome([{ address: "inet:1@h", verdict: { action: "accept" }, modifications: [], addedHeaders: [] }]); // "accept"
 * ```
 */
export function milterOutcome(results: readonly MilterResult[]): string {
  if (results.some((r) => r.verdict.action === "discard")) return "discard";
  const q = results.find((r) => r.quarantine !== undefined);
  return q !== undefined ? "quarantine" : "accept";
}
