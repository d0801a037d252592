/**
 * A sans-IO parser for the PROXY protocol header, versions 1 (text) and 2
 * (binary), as specified by HAProxy's `proxy-protocol.txt`.
 *
 * The caller accumulates the bytes that arrive before the SMTP greeting and
 * calls {@link parseProxyHeader} on all of them after each read. The answer
 * is `incomplete` (read more), `error` (close the connection; it says so as
 * soon as the bytes already seen prove there is no valid header) or `ok`
 * with the header and the number of bytes it took; the bytes after that
 * belong to the SMTP session (or the TLS handshake, for implicit TLS).
 *
 * Bounds: a v1 header is at most {@link PROXY_V1_MAX_LENGTH} (107) bytes
 * and the parser never looks further for its CRLF; a v2 header is at most
 * `maxV2Length` bytes ({@link PROXY_V2_DEFAULT_MAX_LENGTH}, 4096, unless
 * the option says otherwise), checked as soon as its length field arrives.
 *
 * @example
 * ```ts
 * import { parseProxyHeader } from "./proxy.ts";
 *
 * const bytes = new TextEncoder().encode(
 *   "PROXY TCP4 192.0.2.1 198.51.100.1 56324 25\r\nEHLO client.example\r\n",
 * );
 * const result = parseProxyHeader(bytes);
 * if (
 *   result.status === "ok" && result.header.command === "proxy" &&
 *   result.header.family === "tcp4"
 * ) {
 *   result.header.source; // { address: "192.0.2.1", port: 56324 }
 *   bytes.subarray(result.length); // "EHLO client.example\r\n"
 * }
 * ```
 *
 * @module
 */

import { formatIp, parseIp } from "./cidr.ts";

/** Longest v1 header the protocol allows, CRLF included: 107 bytes. */
export const PROXY_V1_MAX_LENGTH = 107;

/**
 * Default bound on a whole v2 header (16 fixed bytes, addresses and TLVs):
 * 4096 bytes. The 16-bit length field would allow 65551; HAProxy's own
 * headers with every SSL TLV are a few hundred bytes.
 */
export const PROXY_V2_DEFAULT_MAX_LENGTH = 4096;

/** Smallest allowed `maxV2Length`: the fixed part plus the AF_UNIX address block (16 + 216). */
export const PROXY_V2_MIN_MAX_LENGTH = 232;

/** Largest possible v2 header: 16 fixed bytes plus a 65535-byte block. */
export const PROXY_V2_ABSOLUTE_MAX_LENGTH = 65551;

/** Options for {@link parseProxyHeader}. */
export interface ProxyParseOptions {
  /**
   * Largest v2 header accepted, in bytes, all of it counted (an integer from
   * {@link PROXY_V2_MIN_MAX_LENGTH} to {@link PROXY_V2_ABSOLUTE_MAX_LENGTH};
   * default {@link PROXY_V2_DEFAULT_MAX_LENGTH}). A longer header is an
   * error as soon as its length field arrives.
   */
  maxV2Length?: number;
}

/** One end of the proxied connection. For `unix`, `address` is the socket path and `port` is 0. */
export interface ProxyEndpoint {
  /** IPv4 dotted quad, IPv6 in RFC 5952 form, or a Unix socket path. */
  address: string;
  /** TCP port, 0-65535 (0 for Unix sockets). */
  port: number;
}

/** The PP2_TYPE_SSL TLV: how the client reached the proxy over TLS. */
export interface ProxySslInfo {
  /** The raw `client` bit field. */
  client: number;
  /** PP2_CLIENT_SSL (0x01): the client connected over SSL/TLS. */
  clientSsl: boolean;
  /** PP2_CLIENT_CERT_CONN (0x02): the client sent a certificate on this connection. */
  clientCertConn: boolean;
  /** PP2_CLIENT_CERT_SESS (0x04): the client sent a certificate at least once in this TLS session. */
  clientCertSess: boolean;
  /** The `verify` field: 0 when the client certificate was verified (or none was sent). */
  verify: number;
  /** PP2_SUBTYPE_SSL_VERSION (0x21), e.g. `TLSv1.3`. */
  version?: string;
  /** PP2_SUBTYPE_SSL_CN (0x22): the client certificate's Common Name. */
  cn?: string;
  /** PP2_SUBTYPE_SSL_CIPHER (0x23), e.g. `TLS_AES_256_GCM_SHA384`. */
  cipher?: string;
  /** PP2_SUBTYPE_SSL_SIG_ALG (0x24): the signature algorithm of the certificate the proxy presented, e.g. `RSA-SHA256`. */
  sigAlg?: string;
  /** PP2_SUBTYPE_SSL_KEY_ALG (0x25): the key algorithm of the certificate the proxy presented, e.g. `RSA2048`. */
  keyAlg?: string;
}

/** A TLV this parser does not interpret (custom types 0xE0-0xEF and any others). */
export interface ProxyRawTlv {
  /** The type byte. */
  type: number;
  /** The value (a copy). */
  value: Uint8Array;
}

/**
 * The TLVs of a v2 PROXY header. When a type appears more than once, the
 * first one counts. v1 headers and v2 LOCAL headers have none.
 */
export interface ProxyTlvs {
  /** PP2_TYPE_ALPN (0x01): the protocol the client negotiated, e.g. `smtp` or `h2`. */
  alpn?: string;
  /** PP2_TYPE_AUTHORITY (0x02): the host name the client asked for (TLS SNI). */
  authority?: string;
  /** PP2_TYPE_CRC32C (0x03): the checksum, present only if it matched. */
  crc32c?: number;
  /** PP2_TYPE_UNIQUE_ID (0x05): an opaque connection id of up to 128 bytes (a copy). */
  uniqueId?: Uint8Array;
  /** PP2_TYPE_SSL (0x20). */
  ssl?: ProxySslInfo;
  /** PP2_TYPE_NETNS (0x30): the network namespace name. */
  netns?: string;
  /** Every other TLV except PP2_TYPE_NOOP (0x04), in order. */
  other: ProxyRawTlv[];
}

/** A PROXY header that carries the original client's TCP addresses. */
export interface ProxyHeaderTcp {
  /** Protocol version the header used. */
  version: 1 | 2;
  /** The connection was relayed for a client. */
  command: "proxy";
  /** TCP over IPv4 or IPv6 (v1 `TCP4`/`TCP6`; v2 AF_INET/AF_INET6 with STREAM). */
  family: "tcp4" | "tcp6";
  /** The original client. */
  source: ProxyEndpoint;
  /** The address the client connected to (the proxy's listener). */
  destination: ProxyEndpoint;
  /** TLVs (v2 only; empty for v1). */
  tlvs: ProxyTlvs;
}

/** A v2 PROXY header for a client that reached the proxy over a Unix stream socket. */
export interface ProxyHeaderUnix {
  /** Always 2. */
  version: 2;
  /** The connection was relayed for a client. */
  command: "proxy";
  /** AF_UNIX with STREAM. */
  family: "unix";
  /** The client's socket path (port 0). */
  source: ProxyEndpoint;
  /** The socket path the client connected to (port 0). */
  destination: ProxyEndpoint;
  /** TLVs. */
  tlvs: ProxyTlvs;
}

/**
 * A relayed connection whose addresses the proxy does not know (v1
 * `UNKNOWN`, v2 AF_UNSPEC). Use the real peer's address.
 */
export interface ProxyHeaderUnknown {
  /** Protocol version the header used. */
  version: 1 | 2;
  /** The connection was relayed, for an unknown client. */
  command: "proxy";
  /** No address information. */
  family: "unknown";
  /** TLVs (v2 only; empty for v1). */
  tlvs: ProxyTlvs;
}

/**
 * A v2 LOCAL header: the proxy opened the connection itself (a health
 * check). Use the real peer's address. As the specification says, the
 * address block is skipped unread, so it carries no TLVs.
 */
export interface ProxyHeaderLocal {
  /** Always 2. */
  version: 2;
  /** The proxy's own connection. */
  command: "local";
  /** Always empty. */
  tlvs: ProxyTlvs;
}

/** A parsed PROXY header; switch on `command`, then `family`. */
export type ProxyHeader =
  | ProxyHeaderTcp
  | ProxyHeaderUnix
  | ProxyHeaderUnknown
  | ProxyHeaderLocal;

/**
 * Result of {@link parseProxyHeader}: `incomplete` (call again with more
 * bytes), `error` (no valid header can start with these bytes), or `ok`
 * with the header and its `length` in bytes.
 */
export type ProxyParseResult =
  | { status: "incomplete" }
  | { status: "error"; reason: string }
  | { status: "ok"; length: number; header: ProxyHeader };

const INCOMPLETE: ProxyParseResult = Object.freeze({ status: "incomplete" });

function fail(reason: string): ProxyParseResult {
  return { status: "error", reason };
}

/**
 * The 12-byte v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
 *
 * @example
 * ```ts
 * import { PROXY_V2_SIGNATURE } from "./proxy.ts";
 *
 * PROXY_V2_SIGNATURE.length; // 12
 * ```
 */
export const PROXY_V2_SIGNATURE: Uint8Array = new Uint8Array([
  0x0d,
  0x0a,
  0x0d,
  0x0a,
  0x00,
  0x0d,
  0x0a,
  0x51,
  0x55,
  0x49,
  0x54,
  0x0a,
]);

/** "PROXY " */
const V1_PREFIX = [0x50, 0x52, 0x4f, 0x58, 0x59, 0x20];

/**
 * Parses a PROXY protocol header (v1 or v2) at the start of `bytes`.
 *
 * Call it with everything received so far. It never looks past 107 bytes
 * for a v1 header or past `maxV2Length` for a v2 header, and answers
 * `error` as soon as the bytes prove the header invalid (a first byte that
 * is neither `P` nor `\r`, a wrong signature byte, a bad field already
 * complete, a v2 length over the bound), so a caller that closes on
 * `error` and waits on `incomplete` never buffers more than the bound.
 *
 * Strict v1 syntax: `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n` with
 * single spaces, addresses of the named family (IPv4 as a dotted quad
 * without leading zeros), decimal ports 0-65535 without leading zeros; or
 * `PROXY UNKNOWN` followed by anything up to the CRLF. A CR must be
 * followed by LF, and a bare LF is an error.
 *
 * v2: version 2, commands LOCAL and PROXY; families AF_UNSPEC, AF_INET,
 * AF_INET6 and AF_UNIX with transport STREAM. DGRAM (UDP) is refused: SMTP
 * runs over streams only. The address block must be at least as long as its
 * family needs; the rest of it is TLVs, each of which must fit inside the
 * header. A PP2_TYPE_CRC32C TLV, if present, must match the header.
 * Throws a TypeError only for a bad `options.maxV2Length`.
 *
 * @example
 * ```ts
 * import { parseProxyHeader } from "./proxy.ts";
 *
 * const v2 = new Uint8Array([
 *   0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
 *   0x21, 0x11, 0x00, 0x0c, // v2 PROXY, AF_INET STREAM, 12 bytes follow
 *   192, 0, 2, 1, 198, 51, 100, 1, 0xdc, 0x04, 0x00, 0x19,
 * ]);
 * parseProxyHeader(v2.subarray(0, 10)); // { status: "incomplete" }
 * const r = parseProxyHeader(v2);
 * // r.status === "ok", r.length === 28,
 * // r.header.source: { address: "192.0.2.1", port: 56324 }
 * parseProxyHeader(new TextEncoder().encode("EHLO x\r\n"));
 * // { status: "error", reason: "..." }
 * ```
 */
export function parseProxyHeader(
  bytes: Uint8Array,
  options: ProxyParseOptions = {},
): ProxyParseResult {
  const max = options.maxV2Length ?? PROXY_V2_DEFAULT_MAX_LENGTH;
  if (
    typeof max !== "number" || !Number.isInteger(max) ||
    max < PROXY_V2_MIN_MAX_LENGTH || max > PROXY_V2_ABSOLUTE_MAX_LENGTH
  ) {
    throw new TypeError(
      `Cannot use option maxV2Length: value is ${
        String(max)
      }, not an integer from ${PROXY_V2_MIN_MAX_LENGTH} to ${PROXY_V2_ABSOLUTE_MAX_LENGTH}`,
    );
  }
  if (bytes.length === 0) return INCOMPLETE;
  if (bytes[0] === V1_PREFIX[0]) return parseV1(bytes);
  if (bytes[0] === PROXY_V2_SIGNATURE[0]) return parseV2(bytes, max);
  return fail(
    "no PROXY protocol header: first byte is neither 'P' (v1) nor CR (v2)",
  );
}

// ---------------------------------------------------------------- v1 ---

function parseV1(b: Uint8Array): ProxyParseResult {
  const n = Math.min(b.length, PROXY_V1_MAX_LENGTH);
  for (let i = 0; i < V1_PREFIX.length && i < n; i++) {
    if (b[i] !== V1_PREFIX[i]) {
      return fail(
        "no PROXY protocol header: v1 header must start with 'PROXY '",
      );
    }
  }
  let cr = -1;
  for (let i = V1_PREFIX.length; i < n; i++) {
    const c = b[i];
    if (c === 0x0d) {
      cr = i;
      break;
    }
    if (c === 0x0a) return fail("v1 header has a LF without CR");
  }
  const end = cr >= 0 ? cr : n;
  let line = "";
  for (let i = V1_PREFIX.length; i < end; i++) {
    line += String.fromCharCode(b[i]);
  }
  // Once the CR is in, the line is final and its last field is whole.
  const checked = checkV1Line(line, cr >= 0);
  if (typeof checked === "string") return fail(checked);
  if (cr < 0 || checked === null) {
    return b.length >= PROXY_V1_MAX_LENGTH
      ? fail(`v1 header has no CRLF within ${PROXY_V1_MAX_LENGTH} bytes`)
      : INCOMPLETE;
  }
  if (cr + 1 >= PROXY_V1_MAX_LENGTH) {
    return fail(`v1 header has no CRLF within ${PROXY_V1_MAX_LENGTH} bytes`);
  }
  if (cr + 1 >= b.length) return INCOMPLETE;
  if (b[cr + 1] !== 0x0a) return fail("v1 header has a CR without LF");
  return { status: "ok", length: cr + 2, header: checked };
}

const V1_PROTOCOLS = ["TCP4", "TCP6", "UNKNOWN"];

/**
 * Checks the text after "PROXY " up to the CR (or up to the end of the
 * bytes so far when `complete` is false, in which case the last field may
 * be a prefix). Returns a reason, null (a valid prefix), or the header.
 */
function checkV1Line(
  line: string,
  complete: boolean,
): string | null | ProxyHeader {
  const fields = line.split(" ");
  const proto = fields[0];
  if (fields.length === 1 && !complete) {
    return V1_PROTOCOLS.some((p) => p.startsWith(proto))
      ? null
      : "v1 header has an unknown protocol (not TCP4, TCP6 or UNKNOWN)";
  }
  if (proto === "UNKNOWN") {
    return complete
      ? { version: 1, command: "proxy", family: "unknown", tlvs: { other: [] } }
      : null;
  }
  if (proto !== "TCP4" && proto !== "TCP6") {
    return "v1 header has an unknown protocol (not TCP4, TCP6 or UNKNOWN)";
  }
  const v6 = proto === "TCP6";
  for (let k = 1; k < fields.length && k < 5; k++) {
    const f = fields[k];
    const whole = complete || k < fields.length - 1;
    const why = k <= 2 ? checkV1Address(f, v6, whole) : checkV1Port(f, whole);
    if (why !== null) return why;
  }
  if (fields.length > 5) {
    return "v1 header has more than four fields after the protocol";
  }
  if (complete && fields.length < 5) {
    return "v1 header has fewer than four fields after the protocol";
  }
  if (!complete) return null;
  const bytesOf = (s: string): string =>
    v6 ? formatIp(parseIp(s) as Uint8Array) : s;
  return {
    version: 1,
    command: "proxy",
    family: v6 ? "tcp6" : "tcp4",
    source: { address: bytesOf(fields[1]), port: Number(fields[3]) },
    destination: { address: bytesOf(fields[2]), port: Number(fields[4]) },
    tlvs: { other: [] },
  };
}

function checkV1Address(f: string, v6: boolean, whole: boolean): string | null {
  const name = v6 ? "IPv6" : "IPv4";
  if (whole) {
    if (f.length === 0) return "v1 header has an empty field (two spaces)";
    const ip = parseIp(f);
    if (ip === null || ip.length !== (v6 ? 16 : 4)) {
      return `v1 header has an address that is not ${name}`;
    }
    return null;
  }
  if (f.length > (v6 ? 45 : 15)) {
    return `v1 header has an address that is not ${name}`;
  }
  for (let i = 0; i < f.length; i++) {
    const c = f.charCodeAt(i);
    const ok = (c >= 48 && c <= 57) || c === 46 ||
      (v6 && (c === 58 || (c >= 97 && c <= 102) || (c >= 65 && c <= 70)));
    if (!ok) return `v1 header has an address that is not ${name}`;
  }
  return null;
}

function checkV1Port(f: string, whole: boolean): string | null {
  const bad =
    "v1 header has a port that is not a decimal number 0-65535 without leading zeros";
  if (f.length === 0) {
    return whole ? "v1 header has an empty field (two spaces)" : null;
  }
  if (f.length > 5 || (f.length > 1 && f[0] === "0")) return bad;
  let v = 0;
  for (let i = 0; i < f.length; i++) {
    const c = f.charCodeAt(i);
    if (c < 48 || c > 57) return bad;
    v = v * 10 + c - 48;
  }
  return v > 65535 ? bad : null;
}

// ---------------------------------------------------------------- v2 ---

const ADDRESS_LENGTH = [0, 12, 36, 216];
const FAMILY_NAME = ["AF_UNSPEC", "AF_INET", "AF_INET6", "AF_UNIX"];

function parseV2(b: Uint8Array, max: number): ProxyParseResult {
  const sig = PROXY_V2_SIGNATURE;
  for (let i = 0; i < sig.length && i < b.length; i++) {
    if (b[i] !== sig[i]) {
      return fail("no PROXY protocol header: bad v2 signature");
    }
  }
  if (b.length < 13) return INCOMPLETE;
  const version = b[12] >> 4;
  if (version !== 2) return fail(`v2 header has version ${version}, not 2`);
  const command = b[12] & 0x0f;
  if (command > 1) {
    return fail(`v2 header has an unknown command 0x${command.toString(16)}`);
  }
  const local = command === 0;
  if (b.length < 14) return INCOMPLETE;
  const family = b[13] >> 4;
  const transport = b[13] & 0x0f;
  if (!local) {
    if (family > 3) {
      return fail(
        `v2 header has an unknown address family 0x${family.toString(16)}`,
      );
    }
    if (transport > 2) {
      return fail(
        `v2 header has an unknown transport 0x${transport.toString(16)}`,
      );
    }
    if (transport === 2) {
      return fail("v2 header is for DGRAM (UDP); only STREAM is supported");
    }
    if (family !== 0 && transport !== 1) {
      return fail(
        `v2 header has ${FAMILY_NAME[family]} with an unspecified transport`,
      );
    }
  }
  if (b.length < 16) return INCOMPLETE;
  const blockLength = (b[14] << 8) | b[15];
  const total = 16 + blockLength;
  if (total > max) {
    return fail(`v2 header is ${total} bytes, more than the limit of ${max}`);
  }
  if (!local && blockLength < ADDRESS_LENGTH[family]) {
    return fail(
      `v2 header's address block is ${blockLength} bytes, too short for ${
        FAMILY_NAME[family]
      } (${ADDRESS_LENGTH[family]})`,
    );
  }
  if (b.length < total) return INCOMPLETE;
  if (local) {
    return {
      status: "ok",
      length: total,
      header: { version: 2, command: "local", tlvs: { other: [] } },
    };
  }
  const tlvs = parseTlvs(b, 16 + ADDRESS_LENGTH[family], total);
  if (typeof tlvs === "string") return fail(tlvs);
  let header: ProxyHeader;
  switch (family) {
    case 0:
      header = { version: 2, command: "proxy", family: "unknown", tlvs };
      break;
    case 1:
    case 2: {
      const size = family === 1 ? 4 : 16;
      const src = 16;
      const dst = src + size;
      const ports = dst + size;
      header = {
        version: 2,
        command: "proxy",
        family: family === 1 ? "tcp4" : "tcp6",
        source: {
          address: formatIp(b.subarray(src, dst)),
          port: (b[ports] << 8) | b[ports + 1],
        },
        destination: {
          address: formatIp(b.subarray(dst, ports)),
          port: (b[ports + 2] << 8) | b[ports + 3],
        },
        tlvs,
      };
      break;
    }
    default:
      header = {
        version: 2,
        command: "proxy",
        family: "unix",
        source: { address: unixPath(b, 16), port: 0 },
        destination: { address: unixPath(b, 16 + 108), port: 0 },
        tlvs,
      };
  }
  return { status: "ok", length: total, header };
}

const utf8 = new TextDecoder();

function unixPath(b: Uint8Array, start: number): string {
  let end = start;
  while (end < start + 108 && b[end] !== 0) end++;
  return utf8.decode(b.subarray(start, end));
}

const TYPE_NAME: Record<number, string> = {
  0x01: "PP2_TYPE_ALPN",
  0x02: "PP2_TYPE_AUTHORITY",
  0x03: "PP2_TYPE_CRC32C",
  0x05: "PP2_TYPE_UNIQUE_ID",
  0x20: "PP2_TYPE_SSL",
  0x30: "PP2_TYPE_NETNS",
};

function tlvName(type: number): string {
  return TYPE_NAME[type] ?? `0x${type.toString(16).padStart(2, "0")}`;
}

function parseTlvs(
  b: Uint8Array,
  start: number,
  end: number,
): ProxyTlvs | string {
  const tlvs: ProxyTlvs = { other: [] };
  let p = start;
  while (p < end) {
    if (end - p < 3) {
      return `v2 header has ${end - p} stray bytes where a TLV should start`;
    }
    const type = b[p];
    const len = (b[p + 1] << 8) | b[p + 2];
    const vs = p + 3;
    const ve = vs + len;
    if (ve > end) return `v2 header's TLV ${tlvName(type)} overruns the header`;
    const value = b.subarray(vs, ve);
    switch (type) {
      case 0x01:
        tlvs.alpn ??= utf8.decode(value);
        break;
      case 0x02:
        tlvs.authority ??= utf8.decode(value);
        break;
      case 0x03: {
        if (len !== 4) {
          return `v2 header's PP2_TYPE_CRC32C TLV is ${len} bytes, not 4`;
        }
        const expected =
          ((value[0] << 24) | (value[1] << 16) | (value[2] << 8) | value[3]) >>>
          0;
        if (crc32c(b, end, vs) !== expected) {
          return "v2 header fails its CRC32C checksum";
        }
        tlvs.crc32c ??= expected;
        break;
      }
      case 0x04: // PP2_TYPE_NOOP
        break;
      case 0x05:
        if (len > 128) {
          return `v2 header's PP2_TYPE_UNIQUE_ID TLV is ${len} bytes, more than 128`;
        }
        tlvs.uniqueId ??= value.slice();
        break;
      case 0x20: {
        const ssl = parseSsl(value);
        if (typeof ssl === "string") return ssl;
        tlvs.ssl ??= ssl;
        break;
      }
      case 0x30:
        tlvs.netns ??= utf8.decode(value);
        break;
      default:
        tlvs.other.push({ type, value: value.slice() });
    }
    p = ve;
  }
  return tlvs;
}

function parseSsl(v: Uint8Array): ProxySslInfo | string {
  if (v.length < 5) {
    return `v2 header's PP2_TYPE_SSL TLV is ${v.length} bytes, fewer than 5`;
  }
  const client = v[0];
  const ssl: ProxySslInfo = {
    client,
    clientSsl: (client & 0x01) !== 0,
    clientCertConn: (client & 0x02) !== 0,
    clientCertSess: (client & 0x04) !== 0,
    verify: ((v[1] << 24) | (v[2] << 16) | (v[3] << 8) | v[4]) >>> 0,
  };
  let p = 5;
  while (p < v.length) {
    if (v.length - p < 3) {
      return "v2 header's PP2_TYPE_SSL TLV has stray bytes where a sub-TLV should start";
    }
    const type = v[p];
    const len = (v[p + 1] << 8) | v[p + 2];
    const ve = p + 3 + len;
    if (ve > v.length) {
      return `v2 header's PP2_TYPE_SSL sub-TLV 0x${
        type.toString(16)
      } overruns the PP2_TYPE_SSL TLV`;
    }
    const text = utf8.decode(v.subarray(p + 3, ve));
    switch (type) {
      case 0x21:
        ssl.version ??= text;
        break;
      case 0x22:
        ssl.cn ??= text;
        break;
      case 0x23:
        ssl.cipher ??= text;
        break;
      case 0x24:
        ssl.sigAlg ??= text;
        break;
      case 0x25:
        ssl.keyAlg ??= text;
        break;
      default: // other sub-TLVs are ignored
    }
    p = ve;
  }
  return ssl;
}

let crcTable: Uint32Array | undefined;

/** CRC32C (Castagnoli) of b[0, end) with the four bytes at `zeroAt` taken as zero. */
function crc32c(b: Uint8Array, end: number, zeroAt: number): number {
  let table = crcTable;
  if (table === undefined) {
    table = new Uint32Array(256);
    for (let i = 0; i < 256; i++) {
      let c = i;
      for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
      table[i] = c >>> 0;
    }
    crcTable = table;
  }
  let crc = 0xffffffff;
  for (let i = 0; i < end; i++) {
    const byte = i >= zeroAt && i < zeroAt + 4 ? 0 : b[i];
    crc = table[(crc ^ byte) & 0xff] ^ (crc >>> 8);
  }
  return (crc ^ 0xffffffff) >>> 0;
}
