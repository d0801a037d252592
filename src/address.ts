/**
 * Envelope address and parameter parsing, written against the grammar of
 * RFC 5321 §4.1.2 (with the UTF-8 extensions of RFC 6531 when the
 * transaction carries SMTPUTF8).
 *
 * Parsing runs on every MAIL and RCPT command, so it is a handful of
 * precompiled regular expressions rather than a general grammar engine.
 *
 * @module
 */

/** A parsed envelope address. */
export interface Mailbox {
  /**
   * The address as `local@domain`; the local part keeps its quotes when it
   * was sent quoted. The null reverse-path `<>` is the empty string, and
   * `<postmaster>` is `"postmaster"`.
   */
  address: string;
  /** The local part as sent (with quotes, if it was quoted). */
  localPart: string;
  /** The domain or address literal (`[192.0.2.1]`); empty for `<>` and `<postmaster>`. */
  domain: string;
}

/** Why a path did not parse. `utf8`: well-formed, but needs SMTPUTF8. */
export type PathError = "syntax" | "too-long" | "utf8";

/** Result of {@link parsePath}: a mailbox and the index after `>`, or an error. */
export type PathResult =
  | { ok: true; mailbox: Mailbox; end: number }
  | { ok: false; error: PathError };

const NON_ASCII = "\\u0080-\\uffff";
const ATEXT = "A-Za-z0-9!#$%&'*+\\-/=?^_`{|}~";
const QTEXT = "\\x20\\x21\\x23-\\x5b\\x5d-\\x7e";

function buildLocal(utf8: boolean): RegExp {
  const a = `[${ATEXT}${utf8 ? NON_ASCII : ""}]+`;
  const q = `"(?:[${QTEXT}${utf8 ? NON_ASCII : ""}]|\\\\[\\x20-\\x7e])*"`;
  return new RegExp(`^(?:${a}(?:\\.${a})*|${q})$`);
}

function buildDomain(utf8: boolean): RegExp {
  const ld = utf8 ? `[A-Za-z0-9${NON_ASCII}]` : "[A-Za-z0-9]";
  const ldh = utf8 ? `[A-Za-z0-9\\-${NON_ASCII}]` : "[A-Za-z0-9\\-]";
  const sub = `${ld}(?:${ldh}*${ld})?`;
  return new RegExp(`^${sub}(?:\\.${sub})*$`);
}

const LOCAL_ASCII = buildLocal(false);
const LOCAL_UTF8 = buildLocal(true);
const DOMAIN_UTF8 = buildDomain(true);

/**
 * The ASCII forms nearly every address takes, scanned by character instead
 * of by the regular expressions above (which cost up to 1 µs a message on
 * Bun): 1 for a character of atext (RFC 5321 §4.1.2), 2 also for a letter
 * or digit (a domain's label).
 */
const CHARS = new Uint8Array(128);
for (const c of "!#$%&'*+-/=?^_`{|}~") CHARS[c.charCodeAt(0)] = 1;
for (let c = 0x30; c <= 0x39; c++) CHARS[c] = 3;
for (let c = 0x41; c <= 0x5a; c++) CHARS[c] = CHARS[c + 0x20] = 3;

/**
 * `s[from, to)` is an ASCII dot-atom: atext runs joined by single dots
 * (LOCAL_ASCII's unquoted form).
 */
function isDotAtom(s: string, from: number, to: number): boolean {
  let dot = true; // at the start, or just after a dot
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x2e /* . */) {
      if (dot) return false;
      dot = true;
    } else if (c < 0x80 && (CHARS[c] & 1) !== 0) dot = false;
    else return false;
  }
  return !dot;
}

/**
 * `s[from, to)` is an ASCII domain: labels of letters, digits and inner
 * hyphens, joined by single dots (what buildDomain(false) matches).
 */
function isAsciiDomain(s: string, from: number, to: number): boolean {
  let start = true; // at the start of a label
  let hyphen = false; // the last character was "-"
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x2e /* . */) {
      if (start || hyphen) return false;
      start = true;
    } else if (c === 0x2d /* - */) {
      if (start) return false;
      hyphen = true;
    } else if (c < 0x80 && (CHARS[c] & 2) !== 0) {
      start = false;
      hyphen = false;
    } else return false;
  }
  return !start && !hyphen;
}

/**
 * Where the `@` is in `s` when it is an address in its plainest ASCII
 * form: a dot-atom local part of at most 64 octets, `@`, a domain name of
 * at most 255 (no address literal), all of it at most 254 octets; else
 * -1. What {@link parsePath} accepts for such an address: a caller that
 * gets -1 reads it with parsePath() (a null path, postmaster, a quoted
 * local part, a source route, UTF-8 and every error).
 *
 * @example
 * ```ts
 * import { plainAddressAt } from "./address.ts";
 *
 * plainAddressAt("a.b@example.org"); // 3
 * ```
 */
export function plainAddressAt(s: string): number {
  const n = s.length;
  const at = s.indexOf("@");
  if (n + 2 > 256 || at < 0 || at > 64 || n - at - 1 > 255) return -1;
  return isDotAtom(s, 0, at) && isAsciiDomain(s, at + 1, n) ? at : -1;
}

/** The local part `s[from, to)` as LOCAL_ASCII or LOCAL_UTF8 checks it. */
function isLocalPartAt(
  s: string,
  from: number,
  to: number,
  utf8: boolean,
): boolean {
  if (utf8 || s.charCodeAt(from) === 0x22 /* " */) {
    return (utf8 ? LOCAL_UTF8 : LOCAL_ASCII).test(s.slice(from, to));
  }
  return isDotAtom(s, from, to);
}

/** The domain `s[from, to)` as isDomainOrLiteral() checks it. */
function isDomainAt(
  s: string,
  from: number,
  to: number,
  utf8: boolean,
): boolean {
  if (from === to) return false;
  if (utf8 || s.charCodeAt(from) === 0x5b /* [ */) {
    return isDomainOrLiteral(s.slice(from, to), utf8);
  }
  return isAsciiDomain(s, from, to);
}
const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
const GENERAL_LITERAL = /^[A-Za-z0-9-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+$/;
const HEX16 = /^[0-9A-Fa-f]{1,4}$/;
// deno-lint-ignore no-control-regex
const HAS_NON_ASCII = /[^\x00-\x7f]/;

/** Checks an IPv4 dotted quad: four decimal numbers from 0 to 255. */
function isIPv4(s: string): boolean {
  const m = IPV4.exec(s);
  return m !== null && m.slice(1).every((n) => Number(n) <= 255);
}

/** Checks the IPv6 forms of RFC 5321 §4.1.3 (full, compressed, IPv4-mapped). */
function isIPv6(s: string): boolean {
  let groups = 8;
  const lastColon = s.lastIndexOf(":");
  if (s.includes(".")) {
    if (!isIPv4(s.slice(lastColon + 1))) return false;
    s = s.slice(0, lastColon + 1) + "0";
    groups = 7;
  }
  const halves = s.split("::");
  if (halves.length > 2) return false;
  const parts = halves.map((h) => (h === "" ? [] : h.split(":")));
  if (!parts.every((p) => p.every((g) => HEX16.test(g)))) return false;
  const count = parts.reduce((n, p) => n + p.length, 0);
  return halves.length === 2 ? count <= groups - 1 : count === groups;
}

/**
 * Checks a domain or an address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`)
 * as allowed after `@` in a mailbox, or as the argument of EHLO/HELO.
 *
 * @example
 * ```ts
 * import { isDomainOrLiteral } from "@smtpd/smtpd/engine";
 *
 * isDomainOrLiteral("mail.example.org", false); // true
 * isDomainOrLiteral("[IPv6:::1]", false); // true
 * isDomainOrLiteral("-bad-.example", false); // false
 * ```
 */
export function isDomainOrLiteral(s: string, utf8: boolean): boolean {
  if (s.length === 0) return false;
  if (s.charCodeAt(0) === 0x5b /* [ */) {
    if (s.charCodeAt(s.length - 1) !== 0x5d /* ] */) return false;
    const lit = s.slice(1, -1);
    if (isIPv4(lit)) return true;
    if (/^IPv6:/i.test(lit)) return isIPv6(lit.slice(5));
    return GENERAL_LITERAL.test(lit);
  }
  return utf8 ? DOMAIN_UTF8.test(s) : isAsciiDomain(s, 0, s.length);
}

/** Octets a string takes in UTF-8 (addresses are measured in octets). */
function utf8Length(s: string): number {
  if (!HAS_NON_ASCII.test(s)) return s.length;
  return new TextEncoder().encode(s).length;
}

/**
 * Parses a path (`<local@domain>`, with an optional source route, which is
 * ignored) starting at `start` in `line`.
 *
 * - `allowNull`: accept `<>` (the reverse-path of MAIL FROM).
 * - `allowPostmaster`: accept `<postmaster>` without a domain (RCPT TO).
 * - `utf8`: the transaction carries SMTPUTF8, so UTF-8 may appear.
 *
 * @example
 * ```ts
 * import { parsePath } from "@smtpd/smtpd/engine";
 *
 * const r = parsePath("<a@example.org> SIZE=10", 0, {
 *   allowNull: true,
 *   allowPostmaster: false,
 *   utf8: false,
 * });
 * if (r.ok) console.log(r.mailbox.address, r.end); // "a@example.org" 15
 * ```
 */
export function parsePath(
  line: string,
  start: number,
  opts: { allowNull: boolean; allowPostmaster: boolean; utf8: boolean },
): PathResult {
  if (line.charCodeAt(start) !== 0x3c /* < */) {
    return { ok: false, error: "syntax" };
  }
  // Whether the path has a character above U+007F, seen on the way to its
  // end (no regular expression run over it again): an ASCII path (nearly
  // all) is measured by its length.
  let nonAscii = false;
  // Find the closing ">" outside a quoted string.
  let i = start + 1;
  let quoted = false;
  for (; i < line.length; i++) {
    const c = line.charCodeAt(i);
    if (c > 0x7f) nonAscii = true;
    else if (quoted) {
      if (c === 0x5c /* \ */) {
        if (line.charCodeAt(++i) > 0x7f) nonAscii = true;
      } else if (c === 0x22 /* " */) quoted = false;
    } else if (c === 0x22) quoted = true;
    else if (c === 0x3e /* > */) break;
  }
  if (i >= line.length) return { ok: false, error: "syntax" };
  const end = i + 1;
  // The mailbox is checked in place, by index in `line`: its strings are
  // slices made for the result only. A slice that is read character by
  // character is made a string of its own (JavaScriptCore copies it out of
  // `line`), three per address; slices that nobody reads cost none.
  let from = start + 1;
  if (from === i) {
    return opts.allowNull
      ? { ok: true, mailbox: { address: "", localPart: "", domain: "" }, end }
      : { ok: false, error: "syntax" };
  }
  const octets = nonAscii ? utf8Length(line.slice(from, i)) : i - from;
  if (octets + 2 > 256) return { ok: false, error: "too-long" };
  // Source route: "@a,@b:" before the mailbox, ignored (RFC 5321 §4.1.2, C.).
  if (line.charCodeAt(from) === 0x40 /* @ */) {
    const colon = line.indexOf(":", from);
    if (colon < 0 || colon >= i) return { ok: false, error: "syntax" };
    for (const hop of line.slice(from, colon).split(",")) {
      if (hop[0] !== "@" || !isDomainOrLiteral(hop.slice(1), opts.utf8)) {
        return { ok: false, error: "syntax" };
      }
    }
    from = colon + 1;
    if (nonAscii) nonAscii = HAS_NON_ASCII.test(line.slice(from, i));
  }
  // The length first: no lower-cased copy of every recipient.
  if (opts.allowPostmaster && i - from === 10) {
    const inner = line.slice(from, i);
    if (inner.toLowerCase() === "postmaster") {
      return {
        ok: true,
        mailbox: { address: inner, localPart: inner, domain: "" },
        end,
      };
    }
  }
  const at = line.lastIndexOf("@", i - 1);
  if (at <= from) return { ok: false, error: "syntax" };
  const utf8 = opts.utf8 && nonAscii;
  if (
    !isLocalPartAt(line, from, at, utf8) || !isDomainAt(line, at + 1, i, utf8)
  ) {
    // Well-formed with UTF-8 allowed, but SMTPUTF8 was not requested.
    if (
      nonAscii && !opts.utf8 && LOCAL_UTF8.test(line.slice(from, at)) &&
      isDomainOrLiteral(line.slice(at + 1, i), true)
    ) {
      return { ok: false, error: "utf8" };
    }
    return { ok: false, error: "syntax" };
  }
  if (
    nonAscii
      ? utf8Length(line.slice(from, at)) > 64 ||
        utf8Length(line.slice(at + 1, i)) > 255
      : at - from > 64 || i - at - 1 > 255
  ) {
    return { ok: false, error: "too-long" };
  }
  return {
    ok: true,
    mailbox: {
      address: line.slice(from, i),
      localPart: line.slice(from, at),
      domain: line.slice(at + 1, i),
    },
    end,
  };
}

/** Why a parameter list did not parse. */
export type ParamsResult =
  | { ok: true; params: Map<string, string | true> }
  | { ok: false; error: "syntax" | "duplicate" };

const KEYWORD = /^[A-Za-z0-9][A-Za-z0-9-]*$/;
// esmtp-value: printable except "=" and space (UTF-8 allowed, RFC 6531).
// deno-lint-ignore no-control-regex
const VALUE = /^[^\x00-\x20=\x7f]+$/;

/**
 * Parses `SP keyword[=value]` pairs after a path (RFC 5321 §4.1.2
 * Mail-parameters). Keywords are upper-cased; a keyword without `=` maps to
 * `true`.
 *
 * @example
 * ```ts
 * import { parseParams } from "@smtpd/smtpd/engine";
 *
 * const r = parseParams(" SIZE=1000 BODY=8BITMIME");
 * if (r.ok) console.log(r.params.get("SIZE")); // "1000"
 * ```
 */
export function parseParams(rest: string): ParamsResult {
  const params = new Map<string, string | true>();
  if (rest === "") return { ok: true, params };
  if (rest[0] !== " ") return { ok: false, error: "syntax" };
  for (const item of rest.split(" ")) {
    if (item === "") continue; // tolerate runs of spaces
    const eq = item.indexOf("=");
    const key = (eq < 0 ? item : item.slice(0, eq)).toUpperCase();
    if (!KEYWORD.test(key)) return { ok: false, error: "syntax" };
    let value: string | true = true;
    if (eq >= 0) {
      value = item.slice(eq + 1);
      if (!VALUE.test(value)) return { ok: false, error: "syntax" };
    }
    if (params.has(key)) return { ok: false, error: "duplicate" };
    params.set(key, value);
  }
  return { ok: true, params };
}

/**
 * Decodes xtext (RFC 3461 §4: `+XX` hex escapes), as used by ENVID, ORCPT
 * and AUTH=. Returns `null` when the text is not valid xtext.
 *
 * @example
 * ```ts
 * import { decodeXtext } from "@smtpd/smtpd/engine";
 *
 * decodeXtext("a+2Bb"); // "a+b"
 * ```
 */
export function decodeXtext(s: string): string | null {
  let out = "";
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x2b /* + */) {
      const hex = s.slice(i + 1, i + 3);
      if (!/^[0-9A-F]{2}$/.test(hex)) return null;
      out += String.fromCharCode(parseInt(hex, 16));
      i += 2;
    } else if (c < 0x21 || c > 0x7e || c === 0x3d /* = */) {
      return null;
    } else {
      out += s[i];
    }
  }
  return out;
}
