/**
 * IP address parsing and a matcher for lists of trusted addresses and CIDR
 * ranges (the peers allowed to send a PROXY protocol header).
 *
 * Runtime-free: no regular expression runs per lookup; entries are parsed
 * once into 32-bit words and a lookup is a few integer comparisons.
 *
 * @example
 * ```ts
 * import { CidrSet } from "./cidr.ts";
 *
 * const trusted = new CidrSet(["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8"]);
 * trusted.has("10.1.2.3"); // true
 * trusted.has("::ffff:10.1.2.3"); // true (IPv4-mapped IPv6)
 * trusted.has("192.0.2.1"); // false
 * ```
 *
 * @module
 */

/**
 * An IPv4 address that a dual-stack socket reports in IPv4-mapped IPv6 form,
 * as plain IPv4: `::ffff:192.0.2.1` → `192.0.2.1`; any other text as it is.
 *
 * @example
 * ```ts
 * import { stripMapped } from "./cidr.ts";
 *
 * stripMapped("::ffff:127.0.0.1"); // "127.0.0.1"
 * stripMapped("::1"); // "::1"
 * ```
 */
export function stripMapped(ip: string): string {
  return ip.startsWith("::ffff:") && ip.includes(".") ? ip.slice(7) : ip;
}

/** The loopback ranges, the default list of trusted proxies: `127.0.0.0/8` and `::1`. */
export const LOOPBACK: readonly string[] = Object.freeze([
  "127.0.0.0/8",
  "::1",
]);

/**
 * Parses a dotted-quad IPv4 address in `s[start, end)` strictly: four
 * decimal parts 0-255, no leading zeros, nothing else. Returns the address
 * as an unsigned 32-bit number, or -1.
 */
function parseV4(s: string, start: number, end: number): number {
  if (end - start < 7 || end - start > 15) return -1;
  let value = 0;
  let parts = 0;
  let i = start;
  for (;;) {
    let part = 0;
    let digits = 0;
    while (i < end) {
      const c = s.charCodeAt(i);
      if (c < 48 || c > 57) break;
      if (digits === 1 && part === 0) return -1; // leading zero
      part = part * 10 + (c - 48);
      digits++;
      i++;
    }
    if (digits === 0 || digits > 3 || part > 255) return -1;
    value = value * 256 + part;
    parts++;
    if (parts === 4) return i === end ? value : -1;
    if (i >= end || s.charCodeAt(i) !== 46) return -1;
    i++;
  }
}

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

/**
 * Parses IPv6 text (RFC 4291 §2.2: hex groups, one `::`, an optional
 * trailing dotted quad; no zone identifier) into eight 16-bit groups.
 * Returns false when `s` is not valid.
 */
function parseV6(s: string, out: Uint16Array): boolean {
  const n = s.length;
  if (n < 2 || n > 45) return false;
  let gap = -1;
  let count = 0;
  let i = 0;
  if (s.charCodeAt(0) === 58) {
    if (s.charCodeAt(1) !== 58) return false;
    gap = 0;
    i = 2;
  }
  while (i < n) {
    let v = 0;
    let j = i;
    while (j < n) {
      const d = hexValue(s.charCodeAt(j));
      if (d < 0) break;
      v = v * 16 + d;
      j++;
    }
    if (j < n && s.charCodeAt(j) === 46) {
      if (count > 6) return false;
      const v4 = parseV4(s, i, n);
      if (v4 < 0) return false;
      out[count++] = v4 >>> 16;
      out[count++] = v4 & 0xffff;
      break;
    }
    if (j === i || j - i > 4 || count === 8) return false;
    out[count++] = v;
    if (j === n) break;
    if (s.charCodeAt(j) !== 58) return false;
    j++;
    if (j === n) return false; // a single trailing colon
    if (s.charCodeAt(j) === 58) {
      if (gap >= 0) return false;
      gap = count;
      j++;
    }
    i = j;
  }
  if (gap < 0) return count === 8;
  if (count > 7) return false;
  const tail = count - gap;
  for (let k = 0; k < tail; k++) out[7 - k] = out[count - 1 - k];
  for (let k = gap; k < 8 - tail; k++) out[k] = 0;
  return true;
}

/**
 * Parses an IPv4 address (strict dotted quad: no leading zeros) or an IPv6
 * address (any valid RFC 4291 text form, no zone identifier) into its bytes:
 * 4 bytes for IPv4, 16 for IPv6. Returns `null` when the text is neither.
 *
 * @example
 * ```ts
 * import { parseIp } from "./cidr.ts";
 *
 * parseIp("192.0.2.1"); // Uint8Array(4) [192, 0, 2, 1]
 * parseIp("2001:DB8::1")?.length; // 16
 * parseIp("192.0.2.01"); // null (leading zero)
 * ```
 */
export function parseIp(text: string): Uint8Array | null {
  if (text.indexOf(":") < 0) {
    const v4 = parseV4(text, 0, text.length);
    if (v4 < 0) return null;
    return new Uint8Array([
      v4 >>> 24,
      (v4 >>> 16) & 255,
      (v4 >>> 8) & 255,
      v4 & 255,
    ]);
  }
  const groups = new Uint16Array(8);
  if (!parseV6(text, groups)) return null;
  const out = new Uint8Array(16);
  for (let k = 0; k < 8; k++) {
    out[2 * k] = groups[k] >>> 8;
    out[2 * k + 1] = groups[k] & 255;
  }
  return out;
}

/**
 * Formats 4 address bytes as a dotted quad, or 16 as IPv6 text in the
 * canonical form of RFC 5952 (lower case, no leading zeros, the longest run
 * of two or more zero groups, leftmost on a tie, written `::`). IPv4-mapped
 * addresses (`::ffff:0:0/96`) keep the mixed notation, `::ffff:192.0.2.1`.
 * Throws a TypeError for any other length.
 *
 * @example
 * ```ts
 * import { formatIp } from "./cidr.ts";
 *
 * formatIp(new Uint8Array([192, 0, 2, 1])); // "192.0.2.1"
 * formatIp(new Uint8Array([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])); // "2001:db8::1"
 * ```
 */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) {
    return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  }
  if (bytes.length !== 16) {
    throw new TypeError(
      `Cannot format IP address: value has ${bytes.length} bytes, not 4 or 16`,
    );
  }
  let mapped = bytes[10] === 0xff && bytes[11] === 0xff;
  for (let k = 0; k < 10 && mapped; k++) mapped = bytes[k] === 0;
  if (mapped) {
    return `::ffff:${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
  }
  const groups: number[] = [];
  for (let k = 0; k < 8; k++) {
    groups.push(bytes[2 * k] * 256 + bytes[2 * k + 1]);
  }
  let bestStart = -1;
  let bestLen = 1;
  for (let k = 0; k < 8;) {
    if (groups[k] !== 0) {
      k++;
      continue;
    }
    let e = k;
    while (e < 8 && groups[e] === 0) e++;
    if (e - k > bestLen) {
      bestStart = k;
      bestLen = e - k;
    }
    k = e;
  }
  const hex = (from: number, to: number): string =>
    groups.slice(from, to).map((g) => g.toString(16)).join(":");
  if (bestStart < 0) return hex(0, 8);
  return `${hex(0, bestStart)}::${hex(bestStart + bestLen, 8)}`;
}

const scratch = new Uint16Array(8);

/**
 * A set of trusted IP addresses and CIDR ranges, IPv4 and IPv6, parsed
 * once. {@link CidrSet.has} takes an address in any valid text form; an
 * IPv4-mapped IPv6 address (`::ffff:10.1.2.3`, as Node reports IPv4 peers
 * on a dual-stack socket) matches the IPv4 entries. An IPv4-mapped entry
 * with a prefix of 96 or more is stored as the IPv4 range it maps.
 *
 * Entries are `address` (a single host) or `address/prefix`; a prefix is
 * decimal without leading zeros, 0-32 for IPv4 and 0-128 for IPv6, and the
 * address must have no bits set past the prefix (`10.1.2.3/8` is refused
 * rather than silently widened). A bad entry throws a TypeError naming it.
 *
 * @example
 * ```ts
 * import { CidrSet } from "./cidr.ts";
 *
 * const trusted = new CidrSet(["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8"]);
 * trusted.has("10.200.0.7"); // true
 * trusted.has("0:0:0:0:0:0:0:1"); // true
 * trusted.has("fd12:3456::1"); // true
 * trusted.has("not an address"); // false
 * ```
 */
export class CidrSet {
  /** Network, mask pairs for IPv4 entries. */
  #v4: Uint32Array;
  /** Network words 0-3 then mask words 0-3 for each IPv6 entry. */
  #v6: Uint32Array;
  #entries: readonly string[];

  /**
   * Parses `entries`; throws a TypeError on the first bad one.
   *
   * @example
   * ```ts
   * import { CidrSet } from "./cidr.ts";
   *
   * new CidrSet(["192.0.2.0/24"]).has("192.0.2.77"); // true
   * ```
   */
  constructor(entries: Iterable<string>) {
    const v4: number[] = [];
    const v6: number[] = [];
    const list: string[] = [];
    for (const entry of entries) {
      if (typeof entry !== "string") {
        throw new TypeError(
          `Cannot parse trusted address: value is ${
            entry === null ? "null" : typeof entry
          }, not a string`,
        );
      }
      addEntry(entry, v4, v6);
      list.push(entry);
    }
    this.#v4 = new Uint32Array(v4);
    this.#v6 = new Uint32Array(v6);
    this.#entries = Object.freeze(list);
  }

  /** The entries as given. */
  get entries(): readonly string[] {
    return this.#entries;
  }

  /**
   * Whether `ip` is inside one of the entries. Text that is not a valid
   * IPv4 or IPv6 address (including one with a `%zone`) gives false.
   *
   * @example
   * ```ts
   * import { CidrSet } from "./cidr.ts";
   *
   * const set = new CidrSet(["10.0.0.0/8"]);
   * set.has("::ffff:10.1.2.3"); // true
   * set.has("11.0.0.1"); // false
   * ```
   */
  has(ip: string): boolean {
    if (typeof ip !== "string") return false;
    if (ip.indexOf(":") < 0) {
      const a = parseV4(ip, 0, ip.length);
      return a >= 0 && this.#hasV4(a);
    }
    const g = scratch;
    if (!parseV6(ip, g)) return false;
    if (
      g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 &&
      g[5] === 0xffff && this.#hasV4(((g[6] << 16) | g[7]) >>> 0)
    ) {
      return true;
    }
    const w0 = ((g[0] << 16) | g[1]) >>> 0;
    const w1 = ((g[2] << 16) | g[3]) >>> 0;
    const w2 = ((g[4] << 16) | g[5]) >>> 0;
    const w3 = ((g[6] << 16) | g[7]) >>> 0;
    const t = this.#v6;
    for (let k = 0; k < t.length; k += 8) {
      if (
        ((w0 & t[k + 4]) >>> 0) === t[k] &&
        ((w1 & t[k + 5]) >>> 0) === t[k + 1] &&
        ((w2 & t[k + 6]) >>> 0) === t[k + 2] &&
        ((w3 & t[k + 7]) >>> 0) === t[k + 3]
      ) {
        return true;
      }
    }
    return false;
  }

  #hasV4(a: number): boolean {
    const t = this.#v4;
    for (let k = 0; k < t.length; k += 2) {
      if (((a & t[k + 1]) >>> 0) === t[k]) return true;
    }
    return false;
  }
}

function maskWord(prefix: number, word: number): number {
  const bits = Math.min(32, Math.max(0, prefix - 32 * word));
  return bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
}

function addEntry(entry: string, v4: number[], v6: number[]): void {
  const fail = (why: string): never => {
    throw new TypeError(`Cannot parse trusted address "${entry}": ${why}`);
  };
  const slash = entry.indexOf("/");
  const addr = slash < 0 ? entry : entry.slice(0, slash);
  const isV6 = addr.indexOf(":") >= 0;
  const max = isV6 ? 128 : 32;
  let prefix = max;
  if (slash >= 0) {
    const p = entry.slice(slash + 1);
    if (
      p.length === 0 || p.length > 3 || (p.length > 1 && p[0] === "0") ||
      [...p].some((c) => c < "0" || c > "9")
    ) {
      fail("prefix length is not a decimal number");
    }
    prefix = Number(p);
    if (prefix > max) fail(`prefix length is more than ${max}`);
  }
  const g = new Uint16Array(8);
  if (!isV6) {
    const a = parseV4(addr, 0, addr.length);
    if (a < 0) fail("value is not an IPv4 or IPv6 address");
    pushV4(a, prefix, v4, fail);
    return;
  }
  if (!parseV6(addr, g)) fail("value is not an IPv4 or IPv6 address");
  const words = [
    ((g[0] << 16) | g[1]) >>> 0,
    ((g[2] << 16) | g[3]) >>> 0,
    ((g[4] << 16) | g[5]) >>> 0,
    ((g[6] << 16) | g[7]) >>> 0,
  ];
  if (
    prefix >= 96 && words[0] === 0 && words[1] === 0 && words[2] === 0xffff
  ) {
    pushV4(words[3], prefix - 96, v4, fail);
    return;
  }
  const masks = [0, 1, 2, 3].map((w) => maskWord(prefix, w));
  for (let w = 0; w < 4; w++) {
    if (((words[w] & masks[w]) >>> 0) !== words[w]) {
      fail("address has bits set past the prefix length");
    }
  }
  v6.push(...words, ...masks);
}

function pushV4(
  a: number,
  prefix: number,
  v4: number[],
  fail: (why: string) => never,
): void {
  const mask = maskWord(prefix, 0);
  if (((a & mask) >>> 0) !== a) {
    fail("address has bits set past the prefix length");
  }
  v4.push(a, mask);
}
