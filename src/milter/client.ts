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
  MILTER_CHUNK_SIZE,
  MilterDecoder,
  type MilterNegotiation,
  MilterProtocolError,
  type MilterResponse,
  OFFERED_PROTOCOL,
  parseResponse,
  SMFIC,
  SMFIF,
  SMFIP,
} from "./protocol.ts";
import {
  CONTINUE,
  type MilterAddress,
  type MilterConnectInfo,
  type MilterEndOfMessage,
  type MilterErrorPolicy,
  type MilterMacros,
  type MilterModification,
  type MilterOptions,
  type MilterTimeouts,
  type MilterVerdict,
  parseReply,
  rejection,
  resolveMilterOptions,
} from "./options.ts";

// The options and verdict types, for those who import the client alone.
export {
  type MilterAddress,
  type MilterConnectInfo,
  type MilterEndOfMessage,
  type MilterErrorPolicy,
  type MilterMacros,
  type MilterModification,
  type MilterOptions,
  type MilterRejection,
  type MilterTimeouts,
  type MilterVerdict,
  parseMilterAddress,
  resolveMilterOptions,
} from "./options.ts";

/** Roughly the bytes a modification holds (strings counted in UTF-16 units). */
function size(r: MilterResponse): number {
  let n = 0;
  for (const v of Object.values(r)) {
    if (typeof v === "string") n += v.length;
    else if (v instanceof Uint8Array) n += v.length;
  }
  return n;
}

/**
 * A stage's bytes for one write: its macro packet (when there are macros)
 * and its command packets, so that the filter gets them in one segment.
 */
function withMacros(
  code: string,
  macros: MilterMacros | undefined,
  packets: Uint8Array[],
): Uint8Array {
  let hasMacros = false;
  for (const _ in macros) {
    hasMacros = true;
    break;
  }
  if (!hasMacros && packets.length === 1) return packets[0];
  return concat(hasMacros ? [encodeMacro(code, macros!), ...packets] : packets);
}

/** One array of `parts`' bytes (the part itself when there is one). */
function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0];
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  n = 0;
  for (const p of parts) {
    out.set(p, n);
    n += p.length;
  }
  return out;
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
   * Stages the filter does not answer, not yet written: they go with the
   * next stage it answers (one write, one wake-up of the filter), or once
   * they reach {@link MILTER_CHUNK_SIZE} bytes.
   */
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;

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
    this.#pending = [];
    this.#pendingBytes = 0;
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
        // Stages are small writes: with Nagle's algorithm, one written
        // before the filter acknowledged the last (no reply between them)
        // waits for the filter's delayed ACK, some 40 ms.
        if (a.kind === "tcp") socket.setNoDelay(true);
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

  /** The socket to write to; throws when the connection is gone. */
  #writable(): net.Socket {
    const s = this.#socket;
    if (s === undefined || this.#closedError !== undefined) {
      throw this.#closedError ??
        new MilterFailure("Cannot write to milter: not connected");
    }
    return s;
  }

  /**
   * Holds the bytes of a stage the filter does not answer, to go with the
   * next write; writes them all once they reach 64 KB.
   */
  async #defer(bytes: Uint8Array): Promise<void> {
    this.#writable();
    this.#pending.push(bytes);
    this.#pendingBytes += bytes.length;
    if (this.#pendingBytes >= MILTER_CHUNK_SIZE) {
      await this.#write(new Uint8Array(0));
    }
  }

  /** Writes the held bytes, then `bytes`, in one write. */
  async #write(bytes: Uint8Array): Promise<void> {
    const s = this.#writable();
    if (this.#pending.length > 0) {
      bytes = concat([...this.#pending, bytes]);
      this.#pending = [];
      this.#pendingBytes = 0;
    }
    if (bytes.length === 0) return;
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

  /**
   * A stage of one command: the verdict held for the message or session,
   * `continue` when the filter asked to skip it, else the filter's answer
   * (none awaited for a no-reply step).
   */
  #step(
    stage: string,
    code: string,
    skip: number,
    noReply: number,
    packet: () => Uint8Array,
    macros: MilterMacros | undefined,
  ): Promise<MilterVerdict> {
    return this.#stage(async () => {
      if (this.#idle()) return this.#heldVerdict();
      if (this.#has(skip)) return CONTINUE;
      return await this.#send(stage, code, [packet()], macros, noReply);
    }, (v) => v);
  }

  async #send(
    stage: string,
    code: string,
    packets: Uint8Array[],
    macros: MilterMacros | undefined,
    noReply: number,
    timeout = this.#timeouts.command,
  ): Promise<MilterVerdict> {
    const bytes = withMacros(code, macros, packets);
    if (this.#has(noReply)) {
      await this.#defer(bytes);
      return CONTINUE;
    }
    await this.#write(bytes);
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
    return this.#step(
      "helo",
      SMFIC.HELO,
      SMFIP.NOHELO,
      SMFIP.NR_HELO,
      () => encodeStrings(SMFIC.HELO, [name]),
      macros,
    );
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
    return this.#step(
      "rcpt",
      SMFIC.RCPT,
      SMFIP.NORCPT,
      SMFIP.NR_RCPT,
      () => encodeStrings(SMFIC.RCPT, [recipient, ...params]),
      macros,
    );
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
    return this.#step(
      "data",
      SMFIC.DATA,
      SMFIP.NODATA,
      SMFIP.NR_DATA,
      () => encodePacket(SMFIC.DATA),
      macros,
    );
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
    return this.#step(
      "header",
      SMFIC.HEADER,
      SMFIP.NOHDRS,
      SMFIP.NR_HDR,
      () => encodeStrings(SMFIC.HEADER, [name, value]),
      undefined,
    );
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
    return this.#step(
      "end-of-headers",
      SMFIC.EOH,
      SMFIP.NOEOH,
      SMFIP.NR_EOH,
      () => encodePacket(SMFIC.EOH),
      macros,
    );
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
      await this.#write(
        withMacros(SMFIC.BODYEOB, macros, [encodePacket(SMFIC.BODYEOB)]),
      );
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
      // Written now (with any stage held): the filter frees the message.
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
    const pending = this.#pending;
    this.#pending = [];
    this.#pendingBytes = 0;
    if (s === undefined || s.destroyed) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await new Promise<void>((resolve) => {
      s.once("close", () => resolve());
      s.end(concat([...pending, encodePacket(SMFIC.QUIT)]));
      timer = setTimeout(() => s.destroy(), 1000);
    });
    clearTimeout(timer);
  }
}
