/**
 * The PROXY protocol header read from the first bytes of a connection,
 * sans I/O: a reader fed chunks as they arrive, which says when the
 * header is complete (and hands back the bytes after it) or bad. The
 * driver feeds it for plaintext connections; the `node:net` listener for
 * implicit TLS, where the header comes before the TLS handshake.
 *
 * @example
 * ```ts
 * import { ProxyPreamble } from "./proxy_preamble.ts";
 *
 * const reader = new ProxyPreamble({ maxV2Length: 4096 });
 * const enc = new TextEncoder();
 * reader.push(enc.encode("PROXY TCP4 192.0.2.1 ")); // { status: "incomplete" }
 * const r = reader.push(enc.encode("198.51.100.1 56324 25\r\nEHLO x\r\n"));
 * // r.status === "ok"; r.rest holds "EHLO x\r\n"
 * ```
 *
 * @module
 */

import {
  parseProxyHeader,
  type ProxyHeader,
  type ProxyParseOptions,
} from "./proxy.ts";

/** What feeding a {@link ProxyPreamble} gives: wait for more, a refusal, or the header. */
export type ProxyPreambleResult =
  | { status: "incomplete" }
  | {
    status: "error";
    /** Why the connection is refused (for the `refused` log entry). */
    reason: string;
  }
  | {
    status: "ok";
    header: ProxyHeader;
    /** The bytes that came after the header (the client's first). */
    rest: Uint8Array;
  };

/** The refusal reason of a connection that ended before its header was complete. */
export const PREAMBLE_CLOSED = "connection closed before the PROXY header";

/**
 * The refusal reason of a header not complete within `ms`.
 *
 * @example
 * ```ts
 * import { preambleTimedOut } from "./proxy_preamble.ts";
 *
 * preambleTimedOut(30000); // "no PROXY header within 30000 ms"
 * ```
 */
export function preambleTimedOut(ms: number): string {
  return `no PROXY header within ${ms} ms`;
}

const EMPTY = new Uint8Array(0);

/**
 * Reads a PROXY header (v1 or v2) out of the chunks that start a
 * connection. Bounded: the parser says "error" once more bytes came than
 * a header may hold.
 *
 * @example
 * ```ts
 * import { ProxyPreamble } from "./proxy_preamble.ts";
 *
 * const reader = new ProxyPreamble({ maxV2Length: 4096 });
 * const r = reader.push(new TextEncoder().encode("HELO x\r\n"));
 * if (r.status === "error") console.log(r.reason); // "bad PROXY header: ..."
 * ```
 */
export class ProxyPreamble {
  #buf: Uint8Array = EMPTY;
  readonly #options: ProxyParseOptions;

  /** `options.maxV2Length`: the largest v2 header accepted. */
  constructor(options: ProxyParseOptions) {
    this.#options = options;
  }

  /** Adds the next chunk of the connection and parses what came so far. */
  push(chunk: Uint8Array): ProxyPreambleResult {
    let buf = this.#buf;
    if (buf.length === 0) buf = chunk;
    else {
      const merged = new Uint8Array(buf.length + chunk.length);
      merged.set(buf);
      merged.set(chunk, buf.length);
      buf = merged;
    }
    const p = parseProxyHeader(buf, this.#options);
    switch (p.status) {
      case "incomplete":
        // Kept past this read: a copy (the shim may read into a chunk's
        // memory again, see `Connection`).
        this.#buf = buf === chunk ? new Uint8Array(chunk) : buf;
        return p;
      case "error":
        return { status: "error", reason: `bad PROXY header: ${p.reason}` };
      case "ok":
        this.#buf = EMPTY;
        return {
          status: "ok",
          header: p.header,
          rest: buf.subarray(p.length),
        };
      default:
        return ((x: never): never => x)(p);
    }
  }
}
