/**
 * The arguments of MAIL, RCPT and BDAT as pure functions: a string (and
 * what the session offers) in, the decoded value or the `SmtpError` to
 * reply with out. No engine state.
 *
 * @module
 */

import {
  decodeXtext,
  type Mailbox,
  type ParamsResult,
  parseParams,
  parsePath,
  plainAddressAt,
} from "../address.ts";
import { SmtpError } from "../errors.ts";
import { type AuthMechanism, decodeBase64Text } from "../sasl.ts";
import type { ResolvedEngineOptions } from "../options.ts";
import type { BodyType, MailParams, RcptParams } from "./types.ts";
import { asciiText } from "./command_line.ts";

/** The parameters of a path without any (only read, never changed). */
const NO_PARAMS: ParamsResult = Object.freeze({
  ok: true,
  params: new Map<string, string | true>(),
});
/** Longest chunk size BDAT accepts: larger ones cannot be counted exactly. */
const MAX_CHUNK_DIGITS = String(Number.MAX_SAFE_INTEGER).length;
const NOTIFY_VALUES = ["NEVER", "SUCCESS", "FAILURE", "DELAY"];
/** What parsePath allows in MAIL FROM and in RCPT TO (made once, not per command). */
const SENDER_PATH = { allowNull: true, allowPostmaster: false, utf8: true };
const RECIPIENT_PATH = { allowNull: false, allowPostmaster: true, utf8: true };

/**
 * The address and the parameters of MAIL or RCPT, as sent.
 *
 * @example
 * ```ts
 * import { parseEnvelopeArg } from "./params.ts";
 *
 * const env = parseEnvelopeArg("FROM:<a@example.org> SIZE=10", false);
 * ```
 */
export interface EnvelopeArg {
  /** The parsed address. */
  mailbox: Mailbox;
  /** The parameters by upper-cased keyword; `true` for a keyword without a value. */
  params: Map<string, string | true>;
}

/**
 * The options that MAIL's parameters depend on (the engine's resolved
 * options fit).
 *
 * @example
 * ```ts
 * import type { MailOptions } from "./params.ts";
 *
 * const o: MailOptions = {
 *   maxMessageSize: 1000,
 *   chunking: true,
 *   binaryMime: true,
 *   smtputf8: true,
 *   dsn: false,
 * };
 * ```
 */
export type MailOptions = Pick<
  ResolvedEngineOptions,
  "maxMessageSize" | "chunking" | "binaryMime" | "smtputf8" | "dsn"
>;

/**
 * Parses the argument of MAIL ("FROM:<path> params") or RCPT ("TO:<path>
 * params"): the address and the parameters, or the syntax error to reply
 * with.
 *
 * @example
 * ```ts
 * import { parseEnvelopeArg } from "./params.ts";
 *
 * const env = parseEnvelopeArg("TO:<postmaster>", true);
 * ```
 */
export function parseEnvelopeArg(
  arg: string,
  recipient: boolean,
): EnvelopeArg | SmtpError {
  const prefix = recipient ? "TO:" : "FROM:";
  if (!startsWithUpper(arg, prefix)) {
    return new SmtpError(
      501,
      "5.5.4",
      `Syntax: ${recipient ? "RCPT TO" : "MAIL FROM"}:<address>`,
    );
  }
  let i = prefix.length;
  while (arg.charCodeAt(i) === 0x20) i++; // tolerate "FROM: <a@b>"
  const path = parsePath(arg, i, recipient ? RECIPIENT_PATH : SENDER_PATH);
  if (!path.ok) {
    const who = recipient ? "recipient" : "sender";
    return new SmtpError(
      501,
      recipient ? "5.1.3" : "5.1.7",
      path.error === "too-long"
        ? `${recipient ? "Recipient" : "Sender"} address too long`
        : `Bad ${who} address syntax`,
    );
  }
  // Most paths have no parameters: no Map (and no result object) for them.
  const parsed = path.end === arg.length
    ? NO_PARAMS
    : parseParams(arg.slice(path.end));
  if (!parsed.ok) {
    return new SmtpError(
      501,
      "5.5.4",
      parsed.error === "duplicate"
        ? "Duplicate parameter"
        : "Bad parameter syntax",
    );
  }
  return { mailbox: path.mailbox, params: parsed.params };
}

/**
 * The path of a MAIL ("FROM:<path>") or RCPT ("TO:<path>") argument in
 * `buf[start, end)`, the command line's bytes without CRLF (or, for MAIL,
 * up to the end of the path: see mailPathEnd() and
 * parsePlainMailParams() for the parameters after it), when it is what
 * nearly every client sends: an address in its plainest ASCII form (see
 * plainAddressAt()) and nothing after it. Else null: the line is then
 * read as text (decodeCommandLine(), parseEnvelopeArg()), which decides
 * it all (what null paths, postmaster, quoted local parts, UTF-8, the
 * parameters and the errors are). One string, the address, is made from
 * the bytes (the argument as a whole is never made a string); its local
 * part and domain are slices of it.
 *
 * @example
 * ```ts
 * import { parsePlainEnvelope } from "./params.ts";
 *
 * const line = new TextEncoder().encode("MAIL FROM:<a@example.org>");
 * parsePlainEnvelope(line, 5, line.length, false)?.domain; // "example.org"
 * ```
 */
export function parsePlainEnvelope(
  buf: Uint8Array,
  start: number,
  end: number,
  recipient: boolean,
): Mailbox | null {
  const prefix = recipient ? TO_BYTES : FROM_BYTES;
  const n = prefix.length;
  if (end - start < n + 2 || !bytesAre(buf, start, end, prefix)) return null;
  let i = start + n;
  while (i < end && buf[i] === 0x20) i++; // tolerated, as parseEnvelopeArg does
  if (buf[i] !== 0x3c /* < */ || buf[end - 1] !== 0x3e /* > */) return null;
  // Longer than any path: the text path says so (and asciiText() takes
  // no more than a line's bytes).
  if (end - i > 256) return null;
  // Each byte a character of its own: one above 0x7F or a control
  // character is then no address's, which plainAddressAt() tells.
  const address = asciiText(buf, i + 1, end - 1);
  const at = plainAddressAt(address);
  if (at < 0) return null;
  return {
    address,
    localPart: address.slice(0, at),
    domain: address.slice(at + 1),
  };
}

/** The prefixes parsePlainEnvelope() reads, as bytes. */
const FROM_BYTES = new TextEncoder().encode("FROM:");
const TO_BYTES = new TextEncoder().encode("TO:");

/**
 * Whether `buf[at, end)` starts with `word` (capital letters, digits and
 * punctuation), its letters in either case.
 */
function bytesAre(
  buf: Uint8Array,
  at: number,
  end: number,
  word: Uint8Array,
): boolean {
  if (end - at < word.length) return false;
  for (let k = 0; k < word.length; k++) {
    const p = word[k];
    const c = buf[at + k];
    // Letters in either case (`| 0x20` makes no other byte a lower-case letter).
    if (c !== p && (p < 0x41 || p > 0x5a || c !== (p | 0x20))) return false;
  }
  return true;
}

/**
 * The end of the path (one past its ">") in the MAIL argument
 * `buf[start, end)` when parameters may follow it: the first ">" in the
 * bytes a path can take. `end` when the argument ends with ">" (no
 * parameters, or a line that is no plain path) or has no ">" there.
 *
 * @example
 * ```ts
 * import { mailPathEnd } from "./params.ts";
 *
 * const line = new TextEncoder().encode("MAIL FROM:<a@b.example> SIZE=10");
 * mailPathEnd(line, 5, line.length); // 23
 * ```
 */
export function mailPathEnd(
  buf: Uint8Array,
  start: number,
  end: number,
): number {
  if (buf[end - 1] === 0x3e /* > */) return end;
  // "FROM:", spaces, "<", the address (at most 254) and ">": a longer
  // path is the text path's (which says it is too long), and no scan
  // runs on into the lines pipelined after this one.
  const to = Math.min(end, start + 6 + 256);
  for (let i = start; i < to; i++) {
    if (buf[i] === 0x3e) return i + 1;
  }
  return end;
}

/** The parameters parsePlainMailParams() reads, as bytes. */
const SIZE_BYTES = new TextEncoder().encode("SIZE=");
const BODY_BYTES = new TextEncoder().encode("BODY=");
const SMTPUTF8_BYTES = new TextEncoder().encode("SMTPUTF8");
const BODY_7BIT = new TextEncoder().encode("7BIT");
const BODY_8BITMIME = new TextEncoder().encode("8BITMIME");
const BODY_BINARYMIME = new TextEncoder().encode("BINARYMIME");
/** Most digits of a SIZE read from the bytes: exact as a number. */
const MAX_SIZE_DIGITS = 15;

/**
 * MAIL's parameters `buf[start, end)` (the bytes after the path, from the
 * space before the first one) when they are what clients send and the
 * session takes them as sent: ` SIZE=<digits>` (no leading zero, at most
 * `maxMessageSize`), ` BODY=7BIT`, ` BODY=8BITMIME`, ` BODY=BINARYMIME`
 * (with CHUNKING and BINARYMIME) and ` SMTPUTF8` (when offered), in any
 * case and order, each once, one space before each, after EHLO or LHLO.
 * They are then what parseEnvelopeArg() and parseMailParams() make of
 * them: the same object, its properties in the same order. Else null: the
 * line is then read as text, which decides it all (unknown and repeated
 * parameters, other spacing, the values it refuses, 552 for a SIZE over
 * the limit, "Parameters need EHLO").
 *
 * @example
 * ```ts
 * import { parsePlainMailParams } from "./params.ts";
 *
 * const o = {
 *   maxMessageSize: 1000,
 *   chunking: false,
 *   binaryMime: false,
 *   smtputf8: false,
 *   dsn: false,
 * };
 * const args = new TextEncoder().encode(" SIZE=100 body=8bitmime");
 * parsePlainMailParams(args, 0, args.length, o, true);
 * // { smtputf8: false, params: { SIZE: "100", BODY: "8bitmime" },
 * //   size: 100, body: "8BITMIME" }
 * ```
 */
export function parsePlainMailParams(
  buf: Uint8Array,
  start: number,
  end: number,
  o: MailOptions,
  esmtp: boolean,
): MailParams | null {
  if (!esmtp) return null;
  const params = noMailParams();
  let i = start;
  while (i < end) {
    if (buf[i] !== 0x20) return null;
    i++;
    if (bytesAre(buf, i, end, SIZE_BYTES)) {
      if (params.size !== undefined) return null;
      const from = i += SIZE_BYTES.length;
      let size = 0;
      for (; i < end; i++) {
        const d = buf[i] - 0x30;
        if (d < 0 || d > 9) break;
        size = size * 10 + d;
      }
      const n = i - from;
      if (
        n === 0 || n > MAX_SIZE_DIGITS || (n > 1 && buf[from] === 0x30) ||
        size > o.maxMessageSize
      ) return null;
      // The digits as sent: no leading zero, so the number's own.
      params.params.SIZE = String(size);
      params.size = size;
    } else if (bytesAre(buf, i, end, BODY_BYTES)) {
      if (params.body !== undefined) return null;
      const from = i += BODY_BYTES.length;
      while (i < end && buf[i] !== 0x20) i++;
      const body = bodyType(buf, from, i, o);
      if (body === null) return null;
      // The value as sent: a string only when not in capitals.
      params.params.BODY = bytesEqual(buf, from, i, body)
        ? body
        : asciiText(buf, from, i);
      params.body = body;
    } else if (
      bytesAre(buf, i, end, SMTPUTF8_BYTES) &&
      (i + SMTPUTF8_BYTES.length === end ||
        buf[i + SMTPUTF8_BYTES.length] === 0x20)
    ) {
      if (params.smtputf8 || !o.smtputf8) return null;
      i += SMTPUTF8_BYTES.length;
      params.params.SMTPUTF8 = true;
      params.smtputf8 = true;
    } else return null;
  }
  return params;
}

/**
 * The BODY value `buf[from, to)` as parseMailParams() takes it, in
 * capitals (BINARYMIME only with CHUNKING and BINARYMIME); null for any
 * other value.
 */
function bodyType(
  buf: Uint8Array,
  from: number,
  to: number,
  o: MailOptions,
): BodyType | null {
  const n = to - from;
  if (n === BODY_8BITMIME.length && bytesAre(buf, from, to, BODY_8BITMIME)) {
    return "8BITMIME";
  }
  if (n === BODY_7BIT.length && bytesAre(buf, from, to, BODY_7BIT)) {
    return "7BIT";
  }
  if (
    n === BODY_BINARYMIME.length && bytesAre(buf, from, to, BODY_BINARYMIME) &&
    o.chunking && o.binaryMime
  ) return "BINARYMIME";
  return null;
}

/** Whether `buf[from, to)` is `text` (ASCII), byte for byte. */
function bytesEqual(
  buf: Uint8Array,
  from: number,
  to: number,
  text: string,
): boolean {
  if (to - from !== text.length) return false;
  for (let k = 0; k < text.length; k++) {
    if (buf[from + k] !== text.charCodeAt(k)) return false;
  }
  return true;
}

/**
 * MAIL's parameters when none were sent (see parseMailParams()).
 *
 * @example
 * ```ts
 * import { noMailParams } from "./params.ts";
 *
 * noMailParams().smtputf8; // false
 * ```
 */
export function noMailParams(): MailParams {
  return { smtputf8: false, params: {} };
}

/**
 * RCPT's parameters when none were sent (see parseRcptParams()).
 *
 * @example
 * ```ts
 * import { noRcptParams } from "./params.ts";
 *
 * noRcptParams().params; // {}
 * ```
 */
export function noRcptParams(): RcptParams {
  return { params: {} };
}

/**
 * Whether `s` starts with `prefix` (capital letters and punctuation) in any
 * case of the letters: what `s.slice(0, n).toUpperCase() === prefix` tells
 * for an ASCII prefix, without the two strings it made per command.
 */
function startsWithUpper(s: string, prefix: string): boolean {
  if (s.length < prefix.length) return false;
  for (let k = 0; k < prefix.length; k++) {
    const p = prefix.charCodeAt(k);
    const c = s.charCodeAt(k);
    if (c !== p && (p < 0x41 || p > 0x5a || c !== p + 0x20)) return false;
  }
  return true;
}

/**
 * Decodes the parameters of MAIL FROM against what the session offers
 * (`esmtp`: the client greeted with EHLO or LHLO; `authOffered`: AUTH is
 * offered now); the first bad one gives the error to reply with.
 *
 * @example
 * ```ts
 * import { parseMailParams } from "./params.ts";
 *
 * const options = {
 *   maxMessageSize: 1000,
 *   chunking: false,
 *   binaryMime: false,
 *   smtputf8: false,
 *   dsn: false,
 * };
 * const params = parseMailParams(new Map([["SIZE", "100"]]), options, true, false);
 * ```
 */
export function parseMailParams(
  sent: ReadonlyMap<string, string | true>,
  o: MailOptions,
  esmtp: boolean,
  authOffered: boolean,
): MailParams | SmtpError {
  const params = noMailParams();
  // Most commands have no parameters: no Map iterator for them.
  if (sent.size === 0) return params;
  for (const [key, value] of sent) {
    params.params[key] = value;
    if (!esmtp) {
      return new SmtpError(555, "5.5.4", "Parameters need EHLO");
    }
    switch (key) {
      case "SIZE": {
        if (value === true || !/^\d{1,20}$/.test(value)) {
          return new SmtpError(501, "5.5.4", "Bad SIZE parameter");
        }
        params.size = Number(value);
        if (params.size > o.maxMessageSize) {
          return new SmtpError(
            552,
            "5.3.4",
            "Message size exceeds fixed maximum message size",
          );
        }
        break;
      }
      case "BODY": {
        const body = value === true ? "" : value.toUpperCase();
        if (body === "BINARYMIME") {
          // RFC 3030 §3: only when offered, and only with CHUNKING.
          if (!o.chunking || !o.binaryMime) {
            return new SmtpError(
              555,
              "5.5.4",
              "BODY=BINARYMIME is not supported",
            );
          }
        } else if (body !== "7BIT" && body !== "8BITMIME") {
          return new SmtpError(501, "5.5.4", "Bad BODY parameter");
        }
        params.body = body;
        break;
      }
      case "SMTPUTF8":
        if (!o.smtputf8) {
          return new SmtpError(555, "5.5.4", "SMTPUTF8 is not supported");
        }
        if (value !== true) {
          return new SmtpError(501, "5.5.4", "SMTPUTF8 takes no value");
        }
        params.smtputf8 = true;
        break;
      case "RET": {
        if (!o.dsn) {
          return new SmtpError(555, "5.5.4", "Unsupported parameter RET");
        }
        const ret = value === true ? "" : value.toUpperCase();
        if (ret !== "FULL" && ret !== "HDRS") {
          return new SmtpError(501, "5.5.4", "Bad RET parameter");
        }
        params.ret = ret;
        break;
      }
      case "ENVID": {
        if (!o.dsn) {
          return new SmtpError(555, "5.5.4", "Unsupported parameter ENVID");
        }
        const envid = value === true ? null : decodeXtext(value);
        if (envid === null || envid.length > 100) {
          return new SmtpError(501, "5.5.4", "Bad ENVID parameter");
        }
        params.envid = envid;
        break;
      }
      case "AUTH": {
        // RFC 4954 §5: the identity that submitted the message, handed to
        // the application as sent; "<>" when unknown.
        if (!authOffered) {
          return new SmtpError(555, "5.5.4", "Unsupported parameter AUTH");
        }
        const auth = value === true ? null : decodeXtext(value);
        if (auth === null) {
          return new SmtpError(501, "5.5.4", "Bad AUTH parameter");
        }
        params.auth = auth;
        break;
      }
      default:
        return new SmtpError(
          555,
          "5.5.4",
          `Unsupported parameter ${key.slice(0, 32)}`,
        );
    }
  }
  return params;
}

/**
 * Decodes the parameters of RCPT TO (NOTIFY and ORCPT, only with `dsn`;
 * none unless `esmtp`); the first bad one gives the error to reply with.
 *
 * @example
 * ```ts
 * import { parseRcptParams } from "./params.ts";
 *
 * const params = parseRcptParams(new Map([["NOTIFY", "NEVER"]]), true, true);
 * ```
 */
export function parseRcptParams(
  sent: ReadonlyMap<string, string | true>,
  esmtp: boolean,
  dsn: boolean,
): RcptParams | SmtpError {
  const params = noRcptParams();
  if (sent.size === 0) return params;
  for (const [key, value] of sent) {
    params.params[key] = value;
    // RCPT parameters are service extensions: only after EHLO (RFC 5321
    // §4.1.1.3), as for MAIL.
    if (!esmtp) {
      return new SmtpError(555, "5.5.4", "Parameters need EHLO");
    }
    if (!dsn || (key !== "NOTIFY" && key !== "ORCPT")) {
      return new SmtpError(
        555,
        "5.5.4",
        `Unsupported parameter ${key.slice(0, 32)}`,
      );
    }
    if (value === true) {
      return new SmtpError(501, "5.5.4", `Bad ${key} parameter`);
    }
    if (key === "NOTIFY") {
      const list = value.toUpperCase().split(",");
      const ok = list.every((v) => NOTIFY_VALUES.includes(v)) &&
        new Set(list).size === list.length &&
        (!list.includes("NEVER") || list.length === 1);
      if (!ok) {
        return new SmtpError(501, "5.5.4", "Bad NOTIFY parameter");
      }
      params.notify = list as RcptParams["notify"];
    } else {
      const semi = value.indexOf(";");
      const address = semi > 0 ? decodeXtext(value.slice(semi + 1)) : null;
      if (address === null || !/^[A-Za-z0-9-]+$/.test(value.slice(0, semi))) {
        return new SmtpError(501, "5.5.4", "Bad ORCPT parameter");
      }
      params.orcpt = { type: value.slice(0, semi).toLowerCase(), address };
    }
  }
  return params;
}

/**
 * The size of a BDAT chunk: decimal digits (leading zeros allowed), at
 * most Number.MAX_SAFE_INTEGER; -1 for anything else, so that a size too
 * large to count exactly (2^64 + 1, say) never wraps to a small number.
 *
 * @example
 * ```ts
 * import { parseChunkSize } from "./params.ts";
 *
 * parseChunkSize("0042"); // 42
 * parseChunkSize("-1"); // -1
 * ```
 */
export function parseChunkSize(text: string): number {
  let i = 0;
  while (i < text.length - 1 && text.charCodeAt(i) === 0x30) i++;
  const digits = text.slice(i);
  if (digits.length === 0 || digits.length > MAX_CHUNK_DIGITS) return -1;
  for (let k = 0; k < digits.length; k++) {
    const c = digits.charCodeAt(k);
    if (c < 0x30 || c > 0x39) return -1;
  }
  const n = Number(digits);
  return n <= Number.MAX_SAFE_INTEGER ? n : -1;
}

/**
 * The argument of AUTH ("mechanism [initial-response]", RFC 4954 §4): one
 * of the `mechanisms` offered and the decoded initial response (`""` for
 * "=", null when none was sent), or the error to reply with.
 *
 * @example
 * ```ts
 * import { parseAuthArg } from "./params.ts";
 *
 * parseAuthArg("plain AGEAYg==", ["PLAIN", "LOGIN"]);
 * // { mechanism: "PLAIN", initial: "\0a\0b" }
 * ```
 */
export function parseAuthArg(
  arg: string,
  mechanisms: readonly AuthMechanism[],
): { mechanism: AuthMechanism; initial: string | null } | SmtpError {
  const sp = arg.indexOf(" ");
  const mech = (sp < 0 ? arg : arg.slice(0, sp)).toUpperCase();
  const rest = sp < 0 ? null : arg.slice(sp + 1);
  if (mech === "") return new SmtpError(501, "5.5.4", "Syntax: AUTH mechanism");
  const mechanism = mechanisms.find((m) => m === mech);
  if (mechanism === undefined) {
    return new SmtpError(504, "5.5.4", "Unrecognized authentication type");
  }
  let initial: string | null = null;
  if (rest !== null) {
    initial = rest === "=" ? "" : decodeBase64Text(rest);
    if (initial === null) {
      return new SmtpError(501, "5.5.2", "Invalid base64 data");
    }
  }
  return { mechanism, initial };
}

/**
 * A client's response line during an AUTH exchange (`buf[start, end)`,
 * without CRLF), decoded from base64; "*" cancels (RFC 4954 §4). Returns
 * the text, or the error to reply with.
 *
 * @example
 * ```ts
 * import { parseSaslResponse } from "./params.ts";
 *
 * const line = new TextEncoder().encode("dXNlcg==");
 * parseSaslResponse(line, 0, line.length); // "user"
 * ```
 */
export function parseSaslResponse(
  buf: Uint8Array,
  start: number,
  end: number,
): string | SmtpError {
  let text = "";
  for (let i = start; i < end; i++) {
    text += String.fromCharCode(buf[i]);
  }
  if (text === "*") {
    return new SmtpError(501, "5.7.0", "Authentication cancelled");
  }
  const decoded = decodeBase64Text(text);
  if (decoded === null) {
    return new SmtpError(501, "5.5.2", "Invalid base64 data");
  }
  return decoded;
}
