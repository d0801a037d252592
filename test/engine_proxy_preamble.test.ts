// The sans-IO PROXY preamble reader that the driver (plaintext) and the
// node:net listener (implicit TLS) both feed: chunks as they come, the
// header once complete with the bytes after it, a bad header refused
// with its reason; whole, split at every offset and byte by byte alike.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PROXY_V2_SIGNATURE } from "../src/proxy.ts";
import {
  PREAMBLE_CLOSED,
  preambleTimedOut,
  ProxyPreamble,
  type ProxyPreambleResult,
} from "../src/proxy_preamble.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const V1 = enc.encode("PROXY TCP4 192.0.2.1 198.51.100.7 56324 25\r\n");
const SMTP = enc.encode("EHLO client.example\r\n");

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let i = 0;
  for (const p of parts) {
    out.set(p, i);
    i += p.length;
  }
  return out;
}

/** Feeds `chunks` to a new reader until it decides; the decision. */
function read(chunks: Uint8Array[]): ProxyPreambleResult {
  const reader = new ProxyPreamble({ maxV2Length: 4096 });
  let r: ProxyPreambleResult = { status: "incomplete" };
  for (const c of chunks) {
    r = reader.push(c);
    if (r.status !== "incomplete") break;
  }
  return r;
}

describe("ProxyPreamble", () => {
  it("gives the header and the bytes after it, however the chunks fall", () => {
    const all = concat(V1, SMTP);
    const splits: Uint8Array[][] = [[all]];
    for (let k = 1; k < all.length; k++) {
      splits.push([all.subarray(0, k), all.subarray(k)]);
    }
    splits.push([...all].map((b) => new Uint8Array([b])));
    for (const chunks of splits) {
      const r = read(chunks);
      assert.equal(r.status, "ok");
      if (r.status !== "ok") continue;
      assert.equal(r.header.version, 1);
      assert.equal(r.header.command, "proxy");
      if (r.header.command === "proxy" && r.header.family !== "unknown") {
        assert.equal(r.header.source.address, "192.0.2.1");
        assert.equal(r.header.source.port, 56324);
      }
      // The bytes after the header in the chunk that completed it (a
      // byte-by-byte feed completes on the header's last byte).
      let end = 0;
      for (const c of chunks) {
        end += c.length;
        if (end >= V1.length) break;
      }
      assert.equal(
        dec.decode(r.rest),
        dec.decode(all.subarray(V1.length, end)),
      );
    }
  });

  it("hands back the rest without copying when the header came in one chunk", () => {
    const all = concat(V1, SMTP);
    const r = read([all]);
    assert.equal(r.status, "ok");
    if (r.status === "ok") {
      assert.equal(r.rest.buffer, all.buffer);
      assert.equal(dec.decode(r.rest), "EHLO client.example\r\n");
    }
  });

  it("says incomplete until the header is whole", () => {
    const reader = new ProxyPreamble({ maxV2Length: 4096 });
    assert.deepEqual(reader.push(V1.subarray(0, 10)), { status: "incomplete" });
    assert.deepEqual(reader.push(PROXY_V2_SIGNATURE.subarray(0, 0)), {
      status: "incomplete",
    });
    assert.equal(reader.push(V1.subarray(10)).status, "ok");
  });

  it("refuses what is not a PROXY header, with the reason", () => {
    const r = read([SMTP]);
    assert.equal(r.status, "error");
    if (r.status === "error") assert.match(r.reason, /^bad PROXY header: /);
  });

  it("refuses a v2 header longer than maxV2Length as soon as its length arrives", () => {
    const head = concat(
      PROXY_V2_SIGNATURE,
      new Uint8Array([0x21, 0x11, 0x10, 0x00]), // PROXY, TCP4, 4096 bytes
    );
    const reader = new ProxyPreamble({ maxV2Length: 1024 });
    const r = reader.push(head);
    assert.equal(r.status, "error");
  });

  it("names the refusals of a connection that ends or stays silent", () => {
    assert.equal(PREAMBLE_CLOSED, "connection closed before the PROXY header");
    assert.equal(preambleTimedOut(3000), "no PROXY header within 3000 ms");
  });
});
