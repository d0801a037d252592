/**
 * The milter protocol, version 6 (as libmilter, Postfix and rspamd speak
 * it), as a sans-IO codec: functions that encode the MTA's commands to
 * bytes, a {@link MilterDecoder} that cuts a byte stream into packets, and
 * parsers that turn a packet into a typed response (or, for test filters,
 * a typed command). No socket, no timer, no runtime global.
 *
 * Every packet is a 4-byte big-endian length, then a command byte, then
 * `length - 1` bytes of payload. Strings are NUL-terminated.
 *
 * @module
 */

/**
 * The protocol version this codec speaks.
 *
 * @example
 * ```ts
 * import { MILTER_VERSION } from "./protocol.ts";
 * console.log(MILTER_VERSION); // 6
 * ```
 */
export const MILTER_VERSION = 6;

/**
 * The largest body chunk sent in one `SMFIC_BODY` packet (64 KB − 1).
 *
 * @example
 * ```ts
 * import { MILTER_CHUNK_SIZE } from "./protocol.ts";
 * const packets = Math.ceil(150000 / MILTER_CHUNK_SIZE); // 3
 * ```
 */
export const MILTER_CHUNK_SIZE = 65535;

/**
 * Command bytes the MTA sends (`SMFIC_*`).
 *
 * @example
 * ```ts
 * import { SMFIC } from "./protocol.ts";
 * console.log(SMFIC.HELO); // "H"
 * ```
 */
export const SMFIC = {
  ABORT: "A",
  BODY: "B",
  CONNECT: "C",
  MACRO: "D",
  BODYEOB: "E",
  HELO: "H",
  QUIT_NC: "K",
  HEADER: "L",
  MAIL: "M",
  EOH: "N",
  OPTNEG: "O",
  QUIT: "Q",
  RCPT: "R",
  DATA: "T",
  UNKNOWN: "U",
} as const;

/**
 * Response bytes the filter sends (`SMFIR_*`).
 *
 * @example
 * ```ts
 * import { SMFIR } from "./protocol.ts";
 * console.log(SMFIR.REPLYCODE); // "y"
 * ```
 */
export const SMFIR = {
  ADDRCPT: "+",
  DELRCPT: "-",
  ADDRCPT_PAR: "2",
  SHUTDOWN: "4",
  ACCEPT: "a",
  REPLBODY: "b",
  CONTINUE: "c",
  DISCARD: "d",
  CHGFROM: "e",
  CONN_FAIL: "f",
  ADDHEADER: "h",
  INSHEADER: "i",
  SETSYMLIST: "l",
  CHGHEADER: "m",
  PROGRESS: "p",
  QUARANTINE: "q",
  REJECT: "r",
  SKIP: "s",
  TEMPFAIL: "t",
  REPLYCODE: "y",
  OPTNEG: "O",
} as const;

/**
 * Action flags (`SMFIF_*`): the modifications a filter may make, offered by
 * the MTA and requested by the filter in option negotiation.
 *
 * @example
 * ```ts
 * import { SMFIF } from "./protocol.ts";
 * const headersOnly = SMFIF.ADDHDRS | SMFIF.CHGHDRS; // 0x11
 * ```
 */
export const SMFIF = {
  ADDHDRS: 0x01,
  CHGBODY: 0x02,
  ADDRCPT: 0x04,
  DELRCPT: 0x08,
  CHGHDRS: 0x10,
  QUARANTINE: 0x20,
  CHGFROM: 0x40,
  ADDRCPT_PAR: 0x80,
  SETSYMLIST: 0x100,
} as const;

/**
 * Protocol-step flags (`SMFIP_*`): stages the filter does not want
 * (`NO*`), stages it will not answer (`NR_*`), and features.
 *
 * @example
 * ```ts
 * import { SMFIP } from "./protocol.ts";
 * const quietHeaders = SMFIP.NR_HDR; // the filter sends no reply per header
 * ```
 */
export const SMFIP = {
  NOCONNECT: 0x1,
  NOHELO: 0x2,
  NOMAIL: 0x4,
  NORCPT: 0x8,
  NOBODY: 0x10,
  NOHDRS: 0x20,
  NOEOH: 0x40,
  NR_HDR: 0x80,
  NOUNKNOWN: 0x100,
  NODATA: 0x200,
  SKIP: 0x400,
  RCPT_REJ: 0x800,
  NR_CONN: 0x1000,
  NR_HELO: 0x2000,
  NR_MAIL: 0x4000,
  NR_RCPT: 0x8000,
  NR_DATA: 0x10000,
  NR_UNKN: 0x20000,
  NR_EOH: 0x40000,
  NR_BODY: 0x80000,
  HDR_LEADSPC: 0x100000,
} as const;

/**
 * Every action flag: what this MTA lets a filter do.
 *
 * @example
 * ```ts
 * import { ALL_ACTIONS, SMFIF } from "./protocol.ts";
 * console.log((ALL_ACTIONS & SMFIF.CHGBODY) !== 0); // true
 * ```
 */
export const ALL_ACTIONS: number = 0x1ff;

/**
 * The protocol steps this MTA offers: every skip and no-reply step and
 * SMFIR_SKIP. Not offered: rejected recipients (`RCPT_REJ`), leading
 * space in header values (`HDR_LEADSPC`) and larger packets (`MDS_*`).
 *
 * @example
 * ```ts
 * import { OFFERED_PROTOCOL, SMFIP } from "./protocol.ts";
 * console.log((OFFERED_PROTOCOL & SMFIP.NR_HDR) !== 0); // true
 * ```
 */
export const OFFERED_PROTOCOL: number = 0x1fffff & ~SMFIP.RCPT_REJ &
  ~SMFIP.HDR_LEADSPC;

/**
 * A protocol violation by the peer: a malformed or unexpected packet.
 *
 * @example
 * ```ts
 * import { MilterDecoder, MilterProtocolError } from "./protocol.ts";
 * try {
 *   new MilterDecoder().push(new Uint8Array([0, 0, 0, 0]));
 * } catch (e) {
 *   console.log(e instanceof MilterProtocolError); // true
 * }
 * ```
 */
export class MilterProtocolError extends Error {
  /**
   * Makes the error.
   *
   * @param message what was wrong, in std style
   *
   * @example
   * ```ts
   * import { MilterProtocolError } from "./protocol.ts";
   * const e = new MilterProtocolError("Cannot parse packet: length is zero");
   * ```
   */
  constructor(message: string) {
    super(message);
    this.name = "MilterProtocolError";
  }
}

/**
 * One milter packet: its command byte (as a one-character string) and payload.
 *
 * @example
 * ```ts
 * import type { MilterPacket } from "./protocol.ts";
 * const accept: MilterPacket = { code: "a", payload: new Uint8Array(0) };
 * ```
 */
export interface MilterPacket {
  /** The command or response byte, such as `"O"` or `"c"`. */
  code: string;
  /** The payload after the command byte (a view; copy it to keep it). */
  payload: Uint8Array;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Frames one packet: 4-byte big-endian length (payload + 1), the code byte,
 * the payload.
 *
 * @example
 * ```ts
 * import { encodePacket } from "./protocol.ts";
 * encodePacket("c"); // Uint8Array [0, 0, 0, 1, 0x63]
 * ```
 */
export function encodePacket(
  code: string,
  payload: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const out = new Uint8Array(5 + payload.length);
  new DataView(out.buffer).setUint32(0, payload.length + 1);
  out[4] = code.charCodeAt(0);
  out.set(payload, 5);
  return out;
}

/** Concatenates byte arrays. */
function concat(parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Encodes strings (UTF-8) or bytes (as they are), each followed by a NUL byte. */
function cstrings(...values: (string | Uint8Array)[]): Uint8Array {
  return concat(
    values.map((v) =>
      typeof v === "string"
        ? encoder.encode(v + "\0")
        : concat([v, new Uint8Array(1)])
    ),
  );
}

function uint32(...values: number[]): Uint8Array {
  const out = new Uint8Array(4 * values.length);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => view.setUint32(4 * i, v >>> 0));
  return out;
}

/**
 * The option negotiation the MTA opens with (`SMFIC_OPTNEG`).
 *
 * @example
 * ```ts
 * import { ALL_ACTIONS, encodeOptneg, OFFERED_PROTOCOL } from "./protocol.ts";
 * const hello = encodeOptneg(6, ALL_ACTIONS, OFFERED_PROTOCOL);
 * ```
 */
export function encodeOptneg(
  version: number,
  actions: number,
  protocol: number,
): Uint8Array {
  return encodePacket(SMFIC.OPTNEG, uint32(version, actions, protocol));
}

/**
 * Macros for the stage whose command byte is `stage` (`SMFIC_MACRO`).
 *
 * @example
 * ```ts
 * import { encodeMacro, SMFIC } from "./protocol.ts";
 * encodeMacro(SMFIC.CONNECT, { j: "mx.example.org", "{daemon_name}": "smtpd" });
 * ```
 */
export function encodeMacro(
  stage: string,
  macros: Readonly<Record<string, string>>,
): Uint8Array {
  const pairs: string[] = [];
  for (const [k, v] of Object.entries(macros)) pairs.push(k, v);
  return encodePacket(
    SMFIC.MACRO,
    concat([encoder.encode(stage), cstrings(...pairs)]),
  );
}

/**
 * Address family of a connection as the milter protocol names it.
 *
 * @example
 * ```ts
 * import type { MilterFamily } from "./protocol.ts";
 * const family: MilterFamily = "6";
 * ```
 */
export type MilterFamily = "4" | "6" | "L" | "U";

/**
 * The connection stage (`SMFIC_CONNECT`): client host name, family
 * (`"4"` IPv4, `"6"` IPv6, `"L"` Unix socket, `"U"` unknown), port and
 * address (both omitted for `"U"`).
 *
 * @example
 * ```ts
 * import { encodeConnect } from "./protocol.ts";
 * encodeConnect("[192.0.2.1]", "4", 50000, "192.0.2.1");
 * ```
 */
export function encodeConnect(
  hostname: string,
  family: MilterFamily,
  port: number,
  address: string,
): Uint8Array {
  const parts = [cstrings(hostname), encoder.encode(family)];
  if (family !== "U") {
    const p = new Uint8Array(2);
    new DataView(p.buffer).setUint16(0, port);
    parts.push(p, cstrings(address));
  }
  return encodePacket(SMFIC.CONNECT, concat(parts));
}

/**
 * A packet whose payload is NUL-terminated strings: HELO (`["name"]`),
 * MAIL and RCPT (`["<addr>", ...esmtpParams]`), HEADER (`[name, value]`).
 * A string goes as UTF-8; a `Uint8Array` goes byte for byte (a header
 * value in 8-bit bytes that a signature must cover as they are).
 *
 * @example
 * ```ts
 * import { encodeStrings, SMFIC } from "./protocol.ts";
 * encodeStrings(SMFIC.MAIL, ["<a@example.org>", "SIZE=100"]);
 * ```
 */
export function encodeStrings(
  code: string,
  values: (string | Uint8Array)[],
): Uint8Array {
  return encodePacket(code, cstrings(...values));
}

/**
 * Body bytes as `SMFIC_BODY` packets of at most {@link MILTER_CHUNK_SIZE}
 * bytes each (none for an empty chunk).
 *
 * @example
 * ```ts
 * import { encodeBody } from "./protocol.ts";
 * encodeBody(new Uint8Array(70000)).length; // 2 packets
 * ```
 */
export function encodeBody(chunk: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = 0; at < chunk.length; at += MILTER_CHUNK_SIZE) {
    out.push(
      encodePacket(SMFIC.BODY, chunk.subarray(at, at + MILTER_CHUNK_SIZE)),
    );
  }
  return out;
}

/**
 * Cuts a byte stream into packets, whatever the read boundaries. A packet
 * of length zero or longer than `maxPacket` is a protocol error (a peer
 * speaking something else, or a memory attack).
 *
 * @example
 * ```ts
 * import { encodePacket, MilterDecoder } from "./protocol.ts";
 * const d = new MilterDecoder();
 * const bytes = encodePacket("c");
 * d.push(bytes.subarray(0, 2)); // []
 * d.push(bytes.subarray(2)); // [{ code: "c", payload: Uint8Array [] }]
 * ```
 */
export class MilterDecoder {
  #buf: Uint8Array = new Uint8Array(0);
  readonly #max: number;

  /**
   * Makes a decoder with an empty buffer.
   *
   * @param maxPacket the largest packet length accepted, in bytes (default 1 MiB + 1) */
  constructor(maxPacket = 1024 * 1024 + 1) {
    if (!Number.isInteger(maxPacket) || maxPacket < 1) {
      throw new TypeError(
        `Cannot create MilterDecoder: maxPacket ${maxPacket} is not a positive integer`,
      );
    }
    this.#max = maxPacket;
  }

  /**
   * Bytes held for a packet not yet complete.
   *
   * @example
   * ```ts
   * import { MilterDecoder } from "./protocol.ts";
   * const d = new MilterDecoder();
   * d.push(new Uint8Array([0, 0]));
   * console.log(d.buffered); // 2
   * ```
   */
  get buffered(): number {
    return this.#buf.length;
  }

  /**
   * Adds bytes; returns the packets they complete, in order. Throws
   * {@link MilterProtocolError} for a length of zero or over the limit.
   *
   * @example
   * ```ts
   * import { encodePacket, MilterDecoder } from "./protocol.ts";
   * const packets = new MilterDecoder().push(encodePacket("a"));
   * console.log(packets[0].code); // "a"
   * ```
   */
  push(chunk: Uint8Array): MilterPacket[] {
    let buf = this.#buf.length === 0 ? chunk : concat([this.#buf, chunk]);
    const out: MilterPacket[] = [];
    for (;;) {
      if (buf.length < 4) break;
      const len = new DataView(buf.buffer, buf.byteOffset, 4).getUint32(0);
      if (len === 0) {
        throw new MilterProtocolError("Cannot parse packet: length is zero");
      }
      if (len > this.#max) {
        throw new MilterProtocolError(
          `Cannot parse packet: length ${len} exceeds ${this.#max}`,
        );
      }
      if (buf.length < 4 + len) break;
      out.push({
        code: String.fromCharCode(buf[4]),
        payload: buf.slice(5, 4 + len),
      });
      buf = buf.subarray(4 + len);
    }
    this.#buf = buf.slice();
    return out;
  }
}

/** Splits a payload of NUL-terminated strings; throws if the last has no NUL. */
function splitStrings(payload: Uint8Array, what: string): string[] {
  const out: string[] = [];
  let start = 0;
  for (let i = 0; i < payload.length; i++) {
    if (payload[i] === 0) {
      out.push(decoder.decode(payload.subarray(start, i)));
      start = i + 1;
    }
  }
  if (start !== payload.length) {
    throw new MilterProtocolError(
      `Cannot parse ${what}: string is not NUL-terminated`,
    );
  }
  return out;
}

function need(count: number, got: string[], what: string): void {
  if (got.length < count) {
    throw new MilterProtocolError(
      `Cannot parse ${what}: expected ${count} strings, got ${got.length}`,
    );
  }
}

function readUint32(payload: Uint8Array, at: number, what: string): number {
  if (payload.length < at + 4) {
    throw new MilterProtocolError(`Cannot parse ${what}: payload is too short`);
  }
  return new DataView(payload.buffer, payload.byteOffset + at, 4).getUint32(0);
}

/**
 * What a filter answered to option negotiation.
 *
 * @example
 * ```ts
 * import type { MilterNegotiation } from "./protocol.ts";
 * const rspamd: MilterNegotiation = { version: 6, actions: 0x1ff, protocol: 0xff080, macros: {} };
 * ```
 */
export interface MilterNegotiation {
  /** The filter's protocol version (2 to 6). */
  version: number;
  /** The modifications it may make (`SMFIF_*`). */
  actions: number;
  /** The steps it skips or does not answer (`SMFIP_*`). */
  protocol: number;
  /** Macro names it asks for per stage (`SMFIM_*` index 0 connect … 6 EOH). */
  macros: Record<number, string[]>;
}

/**
 * A response from the filter, decoded.
 *
 * @example
 * ```ts
 * import type { MilterResponse } from "./protocol.ts";
 * const add: MilterResponse = { type: "add-header", name: "X-Spam", value: "No" };
 * ```
 */
export type MilterResponse =
  | { type: "optneg"; negotiation: MilterNegotiation }
  | { type: "accept" }
  | { type: "continue" }
  | { type: "reject" }
  | { type: "tempfail" }
  | { type: "discard" }
  | { type: "skip" }
  | { type: "progress" }
  | { type: "conn-fail" }
  | { type: "shutdown" }
  | { type: "replycode"; reply: string }
  | { type: "add-header"; name: string; value: string }
  | { type: "insert-header"; index: number; name: string; value: string }
  | { type: "change-header"; index: number; name: string; value: string }
  | { type: "add-recipient"; recipient: string; params?: string }
  | { type: "delete-recipient"; recipient: string }
  | { type: "change-sender"; sender: string; params?: string }
  | { type: "replace-body"; chunk: Uint8Array }
  | { type: "quarantine"; reason: string };

/**
 * Decodes one packet from a filter; throws {@link MilterProtocolError} for
 * an unknown code or a malformed payload.
 *
 * @example
 * ```ts
 * import { encodePacket, parseResponse } from "./protocol.ts";
 * const r = parseResponse({ code: "y", payload: new TextEncoder().encode("550 5.7.1 No\0") });
 * // { type: "replycode", reply: "550 5.7.1 No" }
 * ```
 */
export function parseResponse(packet: MilterPacket): MilterResponse {
  const p = packet.payload;
  switch (packet.code) {
    case SMFIR.OPTNEG: {
      const version = readUint32(p, 0, "option negotiation");
      const actions = readUint32(p, 4, "option negotiation");
      const protocol = readUint32(p, 8, "option negotiation");
      const macros: Record<number, string[]> = {};
      let at = 12;
      while (at < p.length) {
        const stage = readUint32(p, at, "option negotiation macros");
        const end = p.indexOf(0, at + 4);
        if (end < 0) {
          throw new MilterProtocolError(
            "Cannot parse option negotiation macros: string is not NUL-terminated",
          );
        }
        macros[stage] = decoder.decode(p.subarray(at + 4, end)).split(/[\s,]+/)
          .filter((m) => m !== "");
        at = end + 1;
      }
      return {
        type: "optneg",
        negotiation: { version, actions, protocol, macros },
      };
    }
    case SMFIR.ACCEPT:
      return { type: "accept" };
    case SMFIR.CONTINUE:
      return { type: "continue" };
    case SMFIR.REJECT:
      return { type: "reject" };
    case SMFIR.TEMPFAIL:
      return { type: "tempfail" };
    case SMFIR.DISCARD:
      return { type: "discard" };
    case SMFIR.SKIP:
      return { type: "skip" };
    case SMFIR.PROGRESS:
      return { type: "progress" };
    case SMFIR.CONN_FAIL:
      return { type: "conn-fail" };
    case SMFIR.SHUTDOWN:
      return { type: "shutdown" };
    case SMFIR.REPLYCODE: {
      const s = splitStrings(p, "reply code");
      need(1, s, "reply code");
      return { type: "replycode", reply: s[0] };
    }
    case SMFIR.ADDHEADER: {
      const s = splitStrings(p, "add header");
      need(2, s, "add header");
      return { type: "add-header", name: s[0], value: s[1] };
    }
    case SMFIR.INSHEADER:
    case SMFIR.CHGHEADER: {
      const what = packet.code === SMFIR.INSHEADER
        ? "insert header"
        : "change header";
      const index = readUint32(p, 0, what);
      const s = splitStrings(p.subarray(4), what);
      need(2, s, what);
      return {
        type: packet.code === SMFIR.INSHEADER
          ? "insert-header"
          : "change-header",
        index,
        name: s[0],
        value: s[1],
      };
    }
    case SMFIR.ADDRCPT: {
      const s = splitStrings(p, "add recipient");
      need(1, s, "add recipient");
      return { type: "add-recipient", recipient: s[0] };
    }
    case SMFIR.ADDRCPT_PAR: {
      const s = splitStrings(p, "add recipient");
      need(1, s, "add recipient");
      return s.length > 1 && s[1] !== ""
        ? { type: "add-recipient", recipient: s[0], params: s[1] }
        : { type: "add-recipient", recipient: s[0] };
    }
    case SMFIR.DELRCPT: {
      const s = splitStrings(p, "delete recipient");
      need(1, s, "delete recipient");
      return { type: "delete-recipient", recipient: s[0] };
    }
    case SMFIR.CHGFROM: {
      const s = splitStrings(p, "change sender");
      need(1, s, "change sender");
      return s.length > 1 && s[1] !== ""
        ? { type: "change-sender", sender: s[0], params: s[1] }
        : { type: "change-sender", sender: s[0] };
    }
    case SMFIR.REPLBODY:
      return { type: "replace-body", chunk: p };
    case SMFIR.QUARANTINE: {
      const s = splitStrings(p, "quarantine");
      need(1, s, "quarantine");
      return { type: "quarantine", reason: s[0] };
    }
    default:
      throw new MilterProtocolError(
        `Cannot parse response: unknown code 0x${
          packet.code.charCodeAt(0).toString(16).padStart(2, "0")
        }`,
      );
  }
}

/**
 * A command from the MTA, decoded (what a filter sees).
 *
 * @example
 * ```ts
 * import type { MilterCommand } from "./protocol.ts";
 * const helo: MilterCommand = { type: "helo", name: "client.example" };
 * ```
 */
export type MilterCommand =
  | { type: "optneg"; version: number; actions: number; protocol: number }
  | { type: "macro"; stage: string; macros: Record<string, string> }
  | {
    type: "connect";
    hostname: string;
    family: MilterFamily;
    port: number;
    address: string;
  }
  | { type: "helo"; name: string }
  | { type: "mail"; args: string[] }
  | { type: "rcpt"; args: string[] }
  | { type: "data" }
  | { type: "header"; name: string; value: string }
  | { type: "eoh" }
  | { type: "body"; chunk: Uint8Array }
  | { type: "eob" }
  | { type: "abort" }
  | { type: "quit" }
  | { type: "quit-nc" }
  | { type: "unknown"; line: string };

/**
 * Decodes one packet from an MTA (for filters and tests); throws
 * {@link MilterProtocolError} for an unknown code or a malformed payload.
 *
 * @example
 * ```ts
 * import { encodeStrings, MilterDecoder, parseCommand } from "./protocol.ts";
 * const [packet] = new MilterDecoder().push(encodeStrings("H", ["client.example"]));
 * parseCommand(packet); // { type: "helo", name: "client.example" }
 * ```
 */
export function parseCommand(packet: MilterPacket): MilterCommand {
  const p = packet.payload;
  switch (packet.code) {
    case SMFIC.OPTNEG:
      return {
        type: "optneg",
        version: readUint32(p, 0, "option negotiation"),
        actions: readUint32(p, 4, "option negotiation"),
        protocol: readUint32(p, 8, "option negotiation"),
      };
    case SMFIC.MACRO: {
      if (p.length < 1) {
        throw new MilterProtocolError("Cannot parse macro: payload is empty");
      }
      const s = splitStrings(p.subarray(1), "macro");
      const macros: Record<string, string> = {};
      for (let i = 0; i + 1 < s.length; i += 2) macros[s[i]] = s[i + 1];
      return { type: "macro", stage: String.fromCharCode(p[0]), macros };
    }
    case SMFIC.CONNECT: {
      const end = p.indexOf(0);
      if (end < 0 || end + 1 >= p.length) {
        throw new MilterProtocolError("Cannot parse connect: payload is short");
      }
      const hostname = decoder.decode(p.subarray(0, end));
      const family = String.fromCharCode(p[end + 1]) as MilterFamily;
      if (family === "U") {
        return { type: "connect", hostname, family, port: 0, address: "" };
      }
      if (p.length < end + 4) {
        throw new MilterProtocolError("Cannot parse connect: payload is short");
      }
      const port = (p[end + 2] << 8) | p[end + 3];
      const s = splitStrings(p.subarray(end + 4), "connect");
      need(1, s, "connect");
      return { type: "connect", hostname, family, port, address: s[0] };
    }
    case SMFIC.HELO: {
      const s = splitStrings(p, "helo");
      need(1, s, "helo");
      return { type: "helo", name: s[0] };
    }
    case SMFIC.MAIL:
    case SMFIC.RCPT: {
      const s = splitStrings(p, "envelope");
      need(1, s, "envelope");
      return { type: packet.code === SMFIC.MAIL ? "mail" : "rcpt", args: s };
    }
    case SMFIC.HEADER: {
      const s = splitStrings(p, "header");
      need(2, s, "header");
      return { type: "header", name: s[0], value: s[1] };
    }
    case SMFIC.DATA:
      return { type: "data" };
    case SMFIC.EOH:
      return { type: "eoh" };
    case SMFIC.BODY:
      return { type: "body", chunk: p };
    case SMFIC.BODYEOB:
      return { type: "eob" };
    case SMFIC.ABORT:
      return { type: "abort" };
    case SMFIC.QUIT:
      return { type: "quit" };
    case SMFIC.QUIT_NC:
      return { type: "quit-nc" };
    case SMFIC.UNKNOWN: {
      const s = splitStrings(p, "unknown");
      return { type: "unknown", line: s[0] ?? "" };
    }
    default:
      throw new MilterProtocolError(
        `Cannot parse command: unknown code 0x${
          packet.code.charCodeAt(0).toString(16).padStart(2, "0")
        }`,
      );
  }
}
