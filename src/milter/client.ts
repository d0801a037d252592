/**
 * A milter client: the MTA side of the milter protocol, over TCP or a Unix
 * socket (node:net, which Deno, Bun and Node all provide). One
 * {@link MilterClient} per SMTP session and filter, reused across the
 * session's transactions (`abort()` between them), never shared.
 *
 * Each stage method sends the stage to the filter and resolves to a typed
 * {@link MilterVerdict}; it never throws for the filter's sake. A filter
 * that is down, slow or speaks garbage gives the verdict of its `onError`
 * policy (default `tempfail`: 451 4.7.1), and the client stays in that
 * state for the rest of the session, as Postfix's `milter_default_action`.
 *
 * @module
 */

import * as net from "node:net";
import {
  ALL_ACTIONS,
  encodeBody,
  encodeConnect,
  encodeMacro,
  encodeOptneg,
  encodePacket,
  encodeStrings,
  MilterDecoder,
  type MilterFamily,
  type MilterNegotiation,
  MilterProtocolError,
  type MilterResponse,
  OFFERED_PROTOCOL,
  parseResponse,
  SMFIC,
  SMFIF,
  SMFIP,
} from "./protocol.ts";
import type { HeaderModification } from "./headers.ts";

/**
 * Where a filter listens, parsed from `inet:PORT@HOST`, `inet:HOST:PORT` or `unix:/path`.
 *
 * @example
 * ```ts
 * import type { MilterAddress } from "./client.ts";
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
 * import { parseMilterAddress } from "./client.ts";
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
 * import type { MilterErrorPolicy } from "./client.ts";
 * const optional: MilterErrorPolicy = "accept"; // go on without the filter
 * ```
 */
export type MilterErrorPolicy = "tempfail" | "accept" | "reject";

/**
 * Time limits in milliseconds, per stage.
 *
 * @example
 * ```ts
 * import type { MilterTimeouts } from "./client.ts";
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
 * import type { MilterOptions } from "./client.ts";
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
 * import type { MilterVerdict } from "./client.ts";
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
 * import type { MilterRejection } from "./client.ts";
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
 * import type { MilterModification } from "./client.ts";
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
 * import type { MilterEndOfMessage } from "./client.ts";
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
 * import type { MilterConnectInfo } from "./client.ts";
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
 * import type { MilterMacros } from "./client.ts";
 * const connect: MilterMacros = { j: "mx.example.org", "{daemon_name}": "smtpd", "{client_addr}": "192.0.2.1" };
 * ```
 */
export type MilterMacros = Readonly<Record<string, string>>;

const DEFAULT_TIMEOUTS: Required<MilterTimeouts> = {
  connect: 30_000,
  command: 30_000,
  endOfMessage: 300_000,
};
const POLICIES: readonly MilterErrorPolicy[] = ["tempfail", "accept", "reject"];
const CONTINUE: MilterVerdict = { action: "continue" };

function checkTimeout(name: string, v: unknown): void {
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
 * import { resolveMilterOptions } from "./client.ts";
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

function rejection(
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
function parseReply(reply: string): MilterVerdict | undefined {
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

/** Roughly the bytes a modification holds (strings counted in UTF-16 units). */
function size(r: MilterResponse): number {
  let n = 0;
  for (const v of Object.values(r)) {
    if (typeof v === "string") n += v.length;
    else if (v instanceof Uint8Array) n += v.length;
  }
  return n;
}

/** Internal: a failure of the filter connection (down, timeout, garbage). */
class MilterFailure extends Error {}

/**
 * A verdict that holds for the rest of the message or session: accept,
 * discard, reject or tempfail (other than one recipient's).
 */
interface Held {
  scope: "message" | "session";
  verdict: MilterVerdict;
}

/**
 * A connection to one filter for one SMTP session. Call the stages in
 * protocol order: {@link MilterClient.connect} (opens the connection and
 * negotiates), {@link MilterClient.helo}, then per transaction
 * {@link MilterClient.mail}, {@link MilterClient.rcpt} (each recipient),
 * {@link MilterClient.data}, {@link MilterClient.header} (each field),
 * {@link MilterClient.endOfHeaders}, {@link MilterClient.body} (any
 * chunks), {@link MilterClient.endOfMessage}; {@link MilterClient.abort}
 * after a transaction that did not reach end-of-message; and
 * {@link MilterClient.close} at the end of the session. Stages the filter
 * asked to skip are not sent and resolve to `continue`.
 *
 * A verdict other than `continue` holds: after an accept, discard, reject
 * or tempfail (except a reject of one recipient), the later stages of that
 * message are not sent and resolve to the same verdict, end-of-message
 * included; one given at connect or HELO holds for the whole session.
 * `mail()` and `abort()` start afresh.
 *
 * @example
 * ```ts
 * import { MilterClient } from "./client.ts";
 *
 * const milter = new MilterClient({ address: "inet:11332@127.0.0.1" });
 * try {
 *   let v = await milter.connect(
 *     { hostname: "[192.0.2.1]", family: "4", port: 50000, address: "192.0.2.1" },
 *     { j: "mx.example.org", "{daemon_name}": "smtpd" },
 *   );
 *   if (v.action === "continue") v = await milter.helo("client.example");
 *   if (v.action === "continue") v = await milter.mail("<a@example.org>", []);
 *   if (v.action === "continue") v = await milter.rcpt("<b@example.org>", []);
 *   if (v.action === "continue") v = await milter.data();
 *   await milter.header("Subject", "hi");
 *   await milter.endOfHeaders();
 *   await milter.body(new TextEncoder().encode("Hello\r\n"));
 *   const eom = await milter.endOfMessage({ i: "QUEUEID" });
 *   console.log(eom.verdict, eom.modifications);
 * } finally {
 *   await milter.close();
 * }
 * ```
 */
export class MilterClient {
  readonly #address: MilterAddress;
  readonly #onError: MilterErrorPolicy;
  readonly #timeouts: Required<MilterTimeouts>;
  readonly #maxPacket: number;
  readonly #maxModificationBytes: number;
  #socket: net.Socket | undefined;
  #decoder: MilterDecoder | undefined;
  #queue: MilterResponse[] = [];
  #waiter: (() => void) | undefined;
  #closedError: Error | undefined;
  #failed: MilterVerdict | undefined;
  #failure: string | undefined;
  #negotiation: MilterNegotiation | undefined;
  #held: Held | undefined;
  #skipBody = false;
  #busy = false;

  /**
   * Makes a client; connects at {@link MilterClient.connect}. Throws a
   * `TypeError` for bad options.
   *
   * @param options the filter's address, error policy and time limits (validated here) */
  constructor(options: MilterOptions) {
    const o = resolveMilterOptions(options);
    this.#address = o.address;
    this.#onError = o.onError;
    this.#timeouts = o.timeouts;
    this.#maxPacket = o.maxPacket;
    this.#maxModificationBytes = o.maxModificationBytes;
  }

  /**
   * What the filter negotiated, once connected; `undefined` before or after a failure to connect.
   *
   * @example
   * ```ts
   * import type { MilterClient } from "./client.ts";
   * declare const m: MilterClient;
   * const skipsHelo = ((m.negotiation?.protocol ?? 0) & 0x2) !== 0;
   * ```
   */
  get negotiation(): MilterNegotiation | undefined {
    return this.#negotiation;
  }

  /**
   * Why the filter failed (the error policy is in force), or `undefined`;
   * for the log line.
   *
   * @example
   * ```ts
   * import type { MilterClient } from "./client.ts";
   * declare const m: MilterClient;
   * if (m.failure !== undefined) console.warn(`milter: ${m.failure}`);
   * ```
   */
  get failure(): string | undefined {
    return this.#failure;
  }

  /** Runs one stage, turning failures into the policy's verdict. */
  async #stage<T>(
    run: () => Promise<T>,
    onFailure: (v: MilterVerdict) => T,
  ): Promise<T> {
    if (this.#busy) {
      throw new Error(
        "Cannot run milter stage: the previous stage has not finished",
      );
    }
    if (this.#failed !== undefined) return onFailure(this.#failed);
    this.#busy = true;
    try {
      return await run();
    } catch (e) {
      const failure = e instanceof Error ? e.message : String(e);
      this.#fail(failure);
      return onFailure(this.#failed!);
    } finally {
      this.#busy = false;
    }
  }

  #fail(failure: string): void {
    this.#failure = failure;
    this.#failed = this.#onError === "accept"
      ? { action: "accept" }
      : rejection(this.#onError, failure);
    this.#socket?.destroy();
    this.#socket = undefined;
  }

  #has(flag: number): boolean {
    return ((this.#negotiation?.protocol ?? 0) & flag) !== 0;
  }

  #open(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const a = this.#address;
      const socket = a.kind === "tcp"
        ? net.connect({ host: a.host, port: a.port })
        : net.connect({ path: a.path });
      this.#socket = socket;
      this.#decoder = new MilterDecoder(this.#maxPacket);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(
          new MilterFailure(
            `Cannot connect to milter: no connection within ${this.#timeouts.connect} ms`,
          ),
        );
      }, this.#timeouts.connect);
      socket.once("connect", () => {
        clearTimeout(timer);
        resolve();
      });
      socket.on("data", (chunk: Uint8Array) => {
        try {
          for (const p of this.#decoder!.push(chunk)) {
            this.#queue.push(parseResponse(p));
          }
        } catch (e) {
          this.#closedError = e instanceof Error ? e : new Error(String(e));
          socket.destroy();
        }
        this.#wake();
      });
      socket.on("error", (e: Error) => {
        clearTimeout(timer);
        this.#closedError ??= new MilterFailure(
          `Cannot talk to milter: ${e.message}`,
        );
        reject(this.#closedError);
        this.#wake();
      });
      socket.on("close", () => {
        clearTimeout(timer);
        this.#closedError ??= new MilterFailure(
          "Cannot read milter reply: the filter closed the connection",
        );
        reject(this.#closedError);
        this.#wake();
      });
    });
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }

  /** The next response; `progress` restarts the clock. */
  async #read(timeout: number): Promise<MilterResponse> {
    for (;;) {
      const r = this.#queue.shift();
      if (r !== undefined) {
        if (r.type === "progress") continue;
        return r;
      }
      if (this.#closedError !== undefined) throw this.#closedError;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timedOut = await new Promise<boolean>((resolve) => {
        this.#waiter = () => resolve(false);
        timer = setTimeout(() => resolve(true), timeout);
      });
      clearTimeout(timer);
      if (timedOut) {
        this.#waiter = undefined;
        throw new MilterFailure(
          `Cannot read milter reply: no reply within ${timeout} ms`,
        );
      }
    }
  }

  async #write(bytes: Uint8Array): Promise<void> {
    const s = this.#socket;
    if (s === undefined || this.#closedError !== undefined) {
      throw this.#closedError ??
        new MilterFailure("Cannot write to milter: not connected");
    }
    if (!s.write(bytes)) {
      await new Promise<void>((resolve) => {
        const done = () => {
          s.off("drain", done);
          s.off("close", done);
          resolve();
        };
        s.on("drain", done);
        s.on("close", done);
      });
    }
  }

  /** Maps a stage reply to a verdict; modification packets are a protocol error here. */
  #verdict(r: MilterResponse, stage: string): MilterVerdict {
    switch (r.type) {
      case "continue":
        return CONTINUE;
      case "accept":
        return { action: "accept" };
      case "discard":
        return { action: "discard" };
      case "reject":
        return rejection("reject");
      case "tempfail":
        return rejection("tempfail");
      case "replycode": {
        const v = parseReply(r.reply);
        if (v === undefined) {
          throw new MilterProtocolError(
            `Cannot parse milter reply code at ${stage}: "${r.reply}" is not a 4xx or 5xx reply`,
          );
        }
        return v;
      }
      case "skip":
        if (stage === "body" && this.#has(SMFIP.SKIP)) {
          this.#skipBody = true;
          return CONTINUE;
        }
        break;
      case "conn-fail":
      case "shutdown":
        return rejection("tempfail");
      default:
        break;
    }
    throw new MilterProtocolError(
      `Cannot use milter reply at ${stage}: unexpected ${r.type}`,
    );
  }

  /** Sends macros (if any) and a command, then reads its reply unless the filter said it sends none. */
  async #send(
    stage: string,
    code: string,
    packets: Uint8Array[],
    macros: MilterMacros | undefined,
    noReply: number,
    timeout = this.#timeouts.command,
  ): Promise<MilterVerdict> {
    if (macros !== undefined && Object.keys(macros).length > 0) {
      await this.#write(encodeMacro(code, macros));
    }
    for (const p of packets) await this.#write(p);
    if (this.#has(noReply)) return CONTINUE;
    const v = this.#verdict(await this.#read(timeout), stage);
    this.#scope(v, stage);
    return v;
  }

  /**
   * Remembers a verdict that ends the filter's part in the message (or,
   * at connect and HELO, the session); a reject at RCPT is that
   * recipient's only.
   */
  #scope(v: MilterVerdict, stage: string): void {
    if (v.action === "continue") return;
    if (
      (v.action === "reject" || v.action === "tempfail") && stage === "rcpt"
    ) {
      return;
    }
    const session = stage === "connect" || stage === "helo";
    this.#held = { scope: session ? "session" : "message", verdict: v };
  }

  /** True when the filter wants nothing more now. */
  #idle(): boolean {
    return this.#held !== undefined || this.#socket === undefined;
  }

  /** The verdict in force: the held one, or continue. */
  #heldVerdict(): MilterVerdict {
    return this.#held?.verdict ?? CONTINUE;
  }

  /** Ends the message's held verdict (a new transaction starts). */
  #endMessage(): void {
    if (this.#held?.scope === "message") this.#held = undefined;
    this.#skipBody = false;
  }

  /**
   * Opens the connection, negotiates options, and sends the connect stage
   * (with `macros`, such as `j`, `{daemon_name}`, `{client_addr}`).
   *
   * @example
   * ```ts
   * import { MilterClient } from "./client.ts";
   * const m = new MilterClient({ address: "unix:/run/milter.sock", onError: "accept" });
   * const v = await m.connect({ hostname: "[::1]", family: "6", port: 4000, address: "::1" });
   * ```
   */
  connect(
    info: MilterConnectInfo,
    macros?: MilterMacros,
  ): Promise<MilterVerdict> {
    return this.#stage(async () => {
      if (this.#socket !== undefined || this.#negotiation !== undefined) {
        throw new Error("Cannot connect milter: already connected");
      }
      await this.#open();
      await this.#write(
        encodeOptneg(6, ALL_ACTIONS, OFFERED_PROTOCOL),
      );
      const r = await this.#read(this.#timeouts.connect);
      if (r.type !== "optneg") {
        throw new MilterProtocolError(
          `Cannot negotiate with milter: expected option negotiation, got ${r.type}`,
        );
      }
      const n = r.negotiation;
      if (n.version < 2 || n.version > 6) {
        throw new MilterProtocolError(
          `Cannot negotiate with milter: version ${n.version} is not between 2 and 6`,
        );
      }
      if ((n.actions & ~ALL_ACTIONS) !== 0) {
        throw new MilterProtocolError(
          `Cannot negotiate with milter: actions 0x${
            n.actions.toString(16)
          } include some not offered`,
        );
      }
      if ((n.protocol & ~OFFERED_PROTOCOL & 0x1fffff) !== 0) {
        throw new MilterProtocolError(
          `Cannot negotiate with milter: protocol 0x${
            n.protocol.toString(16)
          } includes steps not offered`,
        );
      }
      this.#negotiation = n;
      if (this.#has(SMFIP.NOCONNECT)) return CONTINUE;
      return await this.#send(
        "connect",
        SMFIC.CONNECT,
        [encodeConnect(info.hostname, info.family, info.port, info.address)],
        macros,
        SMFIP.NR_CONN,
      );
    }, (v) => v);
  }

  /**
   * The HELO/EHLO stage.
   *
   * @example
   * ```ts
   * import { MilterClient } from "./client.ts";
   * const m = new MilterClient({ address: "inet:8891@127.0.0.1" });
   * // after connect():
   * const v = await m.helo("client.example");
   * ```
   */
  helo(name: string, macros?: MilterMacros): Promise<MilterVerdict> {
    return this.#stage(async () => {
      if (this.#idle()) return this.#heldVerdict();
      if (this.#has(SMFIP.NOHELO)) return CONTINUE;
      return await this.#send(
        "helo",
        SMFIC.HELO,
        [encodeStrings(SMFIC.HELO, [name])],
        macros,
        SMFIP.NR_HELO,
      );
    }, (v) => v);
  }

  /**
   * The MAIL FROM stage: `sender` in angle brackets (`"<a@example.org>"`,
   * `"<>"`), then the ESMTP parameters as sent (`"SIZE=1000"`). Starts a
   * new transaction.
   *
   * @example
   * ```ts
   * import { MilterClient } from "./client.ts";
   * const m = new MilterClient({ address: "inet:8891@127.0.0.1" });
   * // after connect() and helo():
   * const v = await m.mail("<a@example.org>", ["BODY=8BITMIME"], { "{mail_addr}": "a@example.org" });
   * ```
   */
  mail(
    sender: string,
    params: readonly string[],
    macros?: MilterMacros,
  ): Promise<MilterVerdict> {
    return this.#stage(async () => {
      this.#endMessage();
      if (this.#idle()) return this.#heldVerdict();
      if (this.#has(SMFIP.NOMAIL)) return CONTINUE;
      return await this.#send(
        "mail",
        SMFIC.MAIL,
        [encodeStrings(SMFIC.MAIL, [sender, ...params])],
        macros,
        SMFIP.NR_MAIL,
      );
    }, (v) => v);
  }

  /**
   * One RCPT TO; a reject or tempfail applies to this recipient only.
   *
   * @example
   * ```ts
   * import { MilterClient } from "./client.ts";
   * const m = new MilterClient({ address: "inet:8891@127.0.0.1" });
   * // after mail():
   * const v = await m.rcpt("<b@example.org>", []);
   * if (v.action === "reject") console.log(v.code, v.enhancedCode, v.text);
   * ```
   */
  rcpt(
    recipient: string,
    params: readonly string[],
    macros?: MilterMacros,
  ): Promise<MilterVerdict> {
    return this.#stage(async () => {
      if (this.#idle()) return this.#heldVerdict();
      if (this.#has(SMFIP.NORCPT)) return CONTINUE;
      return await this.#send(
        "rcpt",
        SMFIC.RCPT,
        [encodeStrings(SMFIC.RCPT, [recipient, ...params])],
        macros,
        SMFIP.NR_RCPT,
      );
    }, (v) => v);
  }

  /**
   * The DATA command (after the accepted recipients, before the content).
   *
   * @example
   * ```ts
   * import { MilterClient } from "./client.ts";
   * const m = new MilterClient({ address: "inet:8891@127.0.0.1" });
   * // after rcpt():
   * const v = await m.data();
   * ```
   */
  data(macros?: MilterMacros): Promise<MilterVerdict> {
    return this.#stage(async () => {
      if (this.#idle()) return this.#heldVerdict();
      if (this.#has(SMFIP.NODATA)) return CONTINUE;
      return await this.#send(
        "data",
        SMFIC.DATA,
        [encodePacket(SMFIC.DATA)],
        macros,
        SMFIP.NR_DATA,
      );
    }, (v) => v);
  }

  /**
   * One header field: its name and its value without the space after the
   * colon, folded lines keeping their CRLF line breaks (as OpenDKIM's
   * `simple` canonicalization needs them). Give the value as bytes to send
   * 8-bit header bytes unchanged.
   *
   * @example
   * ```ts
   * import { MilterClient } from "./client.ts";
   * const m = new MilterClient({ address: "inet:8891@127.0.0.1" });
   * // after data():
   * await m.header("From", "a@example.org");
   * ```
   */
  header(name: string, value: string | Uint8Array): Promise<MilterVerdict> {
    return this.#stage(async () => {
      if (this.#idle()) return this.#heldVerdict();
      if (this.#has(SMFIP.NOHDRS)) return CONTINUE;
      return await this.#send(
        "header",
        SMFIC.HEADER,
        [encodeStrings(SMFIC.HEADER, [name, value])],
        undefined,
        SMFIP.NR_HDR,
      );
    }, (v) => v);
  }

  /**
   * The end of the header fields.
   *
   * @example
   * ```ts
   * import { MilterClient } from "./client.ts";
   * const m = new MilterClient({ address: "inet:8891@127.0.0.1" });
   * // after the headers:
   * const v = await m.endOfHeaders();
   * ```
   */
  endOfHeaders(macros?: MilterMacros): Promise<MilterVerdict> {
    return this.#stage(async () => {
      if (this.#idle()) return this.#heldVerdict();
      if (this.#has(SMFIP.NOEOH)) return CONTINUE;
      return await this.#send(
        "end-of-headers",
        SMFIC.EOH,
        [encodePacket(SMFIC.EOH)],
        macros,
        SMFIP.NR_EOH,
      );
    }, (v) => v);
  }

  /**
   * Body bytes (CRLF line ends, not dot-stuffed), any size: sent in
   * packets of at most 65,535 bytes, each answered unless the filter said
   * it does not answer body chunks. After the filter answered `skip`, the
   * rest of the body is not sent.
   *
   * @example
   * ```ts
   * import { MilterClient } from "./client.ts";
   * const m = new MilterClient({ address: "inet:8891@127.0.0.1" });
   * // after endOfHeaders():
   * const v = await m.body(new TextEncoder().encode("Hello\r\n"));
   * ```
   */
  body(chunk: Uint8Array): Promise<MilterVerdict> {
    return this.#stage(async () => {
      if (this.#idle()) return this.#heldVerdict();
      for (const packet of encodeBody(chunk)) {
        if (this.#skipBody || this.#has(SMFIP.NOBODY)) break;
        const v = await this.#send(
          "body",
          SMFIC.BODY,
          [packet],
          undefined,
          SMFIP.NR_BODY,
        );
        if (v.action !== "continue") return v;
      }
      return CONTINUE;
    }, (v) => v);
  }

  /**
   * End-of-message: the filter's modifications (in order) and final
   * verdict. `quarantine` is the verdict when the filter asked for it and
   * did not reject. The next transaction starts with `mail()` without an
   * `abort()`.
   *
   * @example
   * ```ts
   * import { MilterClient } from "./client.ts";
   * const m = new MilterClient({ address: "inet:8891@127.0.0.1" });
   * // after body():
   * const { verdict, modifications } = await m.endOfMessage({ i: "4Bx7" });
   * ```
   */
  endOfMessage(macros?: MilterMacros): Promise<MilterEndOfMessage> {
    return this.#stage<MilterEndOfMessage>(async () => {
      if (this.#idle()) {
        const verdict = this.#heldVerdict();
        this.#endMessage();
        return { verdict, modifications: [] };
      }
      if (macros !== undefined && Object.keys(macros).length > 0) {
        await this.#write(encodeMacro(SMFIC.BODYEOB, macros));
      }
      await this.#write(encodePacket(SMFIC.BODYEOB));
      const modifications: MilterModification[] = [];
      let bytes = 0;
      const actions = this.#negotiation?.actions ?? 0;
      for (;;) {
        const r = await this.#read(this.#timeouts.endOfMessage);
        const allowed = ({
          "add-header": SMFIF.ADDHDRS,
          "insert-header": SMFIF.ADDHDRS,
          "change-header": SMFIF.CHGHDRS,
          "add-recipient": SMFIF.ADDRCPT | SMFIF.ADDRCPT_PAR,
          "delete-recipient": SMFIF.DELRCPT,
          "change-sender": SMFIF.CHGFROM,
          "replace-body": SMFIF.CHGBODY,
          "quarantine": SMFIF.QUARANTINE,
        } as Record<string, number>)[r.type];
        if (allowed !== undefined) {
          if ((actions & allowed) === 0) {
            throw new MilterProtocolError(
              `Cannot use milter modification ${r.type}: not negotiated`,
            );
          }
          bytes += size(r);
          if (bytes > this.#maxModificationBytes) {
            throw new MilterFailure(
              `Cannot use milter modifications: more than ${this.#maxModificationBytes} bytes`,
            );
          }
          if (r.type === "change-header" && r.value === "") {
            modifications.push({
              type: "delete-header",
              index: r.index,
              name: r.name,
            });
          } else {
            modifications.push(r as MilterModification);
          }
          continue;
        }
        let verdict = this.#verdict(r, "end-of-message");
        this.#endMessage();
        const q = modifications.find((m) => m.type === "quarantine");
        if (
          q !== undefined &&
          (verdict.action === "continue" || verdict.action === "accept")
        ) {
          verdict = { action: "quarantine", reason: q.reason };
        }
        const deliver = verdict.action === "continue" ||
          verdict.action === "accept" || verdict.action === "quarantine";
        return { verdict, modifications: deliver ? modifications : [] };
      }
    }, (v) => ({ verdict: v, modifications: [] }));
  }

  /**
   * Ends the current transaction early (RSET, a rejected DATA, a client
   * gone mid-message); the connection stays open for the next one.
   *
   * @example
   * ```ts
   * import { MilterClient } from "./client.ts";
   * const m = new MilterClient({ address: "inet:8891@127.0.0.1" });
   * // after mail() and a RSET from the client:
   * await m.abort();
   * ```
   */
  abort(): Promise<void> {
    return this.#stage(async () => {
      this.#endMessage();
      if (this.#socket === undefined) return;
      await this.#write(encodePacket(SMFIC.ABORT));
    }, () => undefined);
  }

  /**
   * Says goodbye (`SMFIC_QUIT`) and closes the connection; safe to call
   * more than once and after a failure.
   *
   * @example
   * ```ts
   * import { MilterClient } from "./client.ts";
   * const m = new MilterClient({ address: "inet:8891@127.0.0.1" });
   * await m.close();
   * ```
   */
  async close(): Promise<void> {
    const s = this.#socket;
    this.#socket = undefined;
    this.#failed ??= { action: "accept" };
    if (s === undefined || s.destroyed) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await new Promise<void>((resolve) => {
      s.once("close", () => resolve());
      s.end(encodePacket(SMFIC.QUIT));
      timer = setTimeout(() => s.destroy(), 1000);
    });
    clearTimeout(timer);
  }
}
