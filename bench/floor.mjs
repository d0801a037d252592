// The runtime floor: the least an SMTP receiver can do on this runtime's
// native listener, for scale in the bench. It answers a fixed reply per
// line (354 after DATA, 250 after the body's "\r\n.\r\n", 221 after QUIT,
// else 250), with no parsing, no state machine, no limits, no hooks: not a
// server anyone should run, only what the runtime itself costs per read and
// write. smtpd ÷ floor is what the library adds on that runtime.
//
//   <runtime> bench/floor.mjs        # prints READY <port>; `stats` on stdin
//
// Deno: Deno.listen + conn.read/conn.write (runtimes/deno.ts's path), into
// one buffer per connection that starts at 256 bytes and grows 4-fold on a
// full read (up to 64 KiB), reused for every read: an idle connection holds
// 256 bytes, and a body passes through the same memory (no chunk is handed
// on). Bun: Bun.listen (runtimes/bun.ts's). Node: node:net
// (runtimes/node_net.ts's); there the runtime allocates each read itself.
// Loopback only (127.0.0.1, a free port).
import { control } from "./control.mjs";

const enc = new TextEncoder();
const GREETING = enc.encode("220 floor ESMTP\r\n");
const EHLO = enc.encode("250-floor\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
const OK = enc.encode("250 2.0.0 OK\r\n");
const GO = enc.encode("354 Go ahead\r\n");
const BYE = enc.encode("221 2.0.0 Bye\r\n");
const CR = 13, LF = 10, DOT = 46;

/**
 * One connection's state: the replies for the bytes in `chunk`, in one
 * array (or null). `s.body` while a body arrives; `s.tail` the last four
 * bytes seen (to find "\r\n.\r\n" across reads); `s.partial` the first
 * letter of a command line that a read cut. Line ends are found with
 * indexOf (memchr-like), as a receiver that cares about large bodies would.
 */
function feed(s, chunk) {
  let out = null;
  let i = 0;
  const n = chunk.length;
  while (i < n) {
    const j = chunk.indexOf(LF, i);
    if (j < 0) {
      if (!s.body && s.partial === null) s.partial = chunk[i] | 0x20;
      break;
    }
    if (s.body) {
      // "\r\n.\r" then LF: the end of the body (the CRLF before the dot
      // may be DATA's own).
      if (last4(s.tail, chunk, j) === END) {
        s.body = false;
        out = add(out, OK);
      }
    } else {
      // The first letter tells the command apart (D is only DATA).
      const c0 = s.partial ?? (chunk[i] | 0x20);
      s.partial = null;
      if (c0 === 0x64) { // DATA
        s.body = true;
        out = add(out, GO);
      } else if (c0 === 0x65 || c0 === 0x68) out = add(out, EHLO); // EHLO/HELO
      else if (c0 === 0x71) out = add(out, BYE); // QUIT
      else out = add(out, OK);
    }
    i = j + 1;
  }
  s.tail = last4(s.tail, chunk, n);
  return out;
}

/** "\r\n.\r" as four bytes. */
const END = ((CR << 24) | (LF << 16) | (DOT << 8) | CR) >>> 0;

/** The four bytes before `end` in `chunk`, earlier reads' from `prev`. */
function last4(prev, chunk, end) {
  if (end >= 4) {
    return ((chunk[end - 4] << 24) | (chunk[end - 3] << 16) |
      (chunk[end - 2] << 8) | chunk[end - 1]) >>> 0;
  }
  let t = prev;
  for (let k = 0; k < end; k++) t = ((t << 8) | chunk[k]) >>> 0;
  return t;
}

function add(out, reply) {
  if (out === null) return reply;
  const r = new Uint8Array(out.length + reply.length);
  r.set(out);
  r.set(reply, out.length);
  return r;
}

const state = () => ({ body: false, tail: 0, partial: null });

function denoServer() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  (async () => {
    for await (const conn of listener) {
      (async () => {
        conn.setNoDelay(true);
        const s = state();
        let buf = new Uint8Array(256);
        try {
          await conn.write(GREETING);
          for (;;) {
            const n = await conn.read(buf);
            if (n === null) break;
            const out = feed(s, buf.subarray(0, n));
            // feed() keeps no view of the chunk: the buffer is free again.
            if (n === buf.length && n < 64 * 1024) buf = new Uint8Array(n * 4);
            if (out !== null) await conn.write(out);
          }
        } catch { /* peer gone */ }
        try {
          conn.close();
        } catch { /* closed */ }
      })();
    }
  })();
  return listener.addr.port;
}

function bunServer() {
  const server = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(sock) {
        sock.data = state();
        sock.write(GREETING);
      },
      data(sock, chunk) {
        const out = feed(sock.data, chunk);
        if (out !== null) sock.write(out);
      },
      error() {},
    },
  });
  return server.port;
}

async function nodeServer() {
  const net = await import("node:net");
  const server = net.createServer({ noDelay: true }, (sock) => {
    const s = state();
    sock.on("error", () => {});
    sock.on("data", (chunk) => {
      const out = feed(s, chunk);
      if (out !== null) sock.write(out);
    });
    sock.write(GREETING);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return server.address().port;
}

const port = globalThis.Deno
  ? denoServer()
  : globalThis.Bun
  ? bunServer()
  : await nodeServer();
control(port);
