// The runtime floor: the least an SMTP receiver can do on this runtime's
// native listener, for scale in the bench. It answers a fixed reply per
// line (354 after DATA, 250 after the body's "\r\n.\r\n", 221 after QUIT,
// else 250), with no parsing, no state machine, no limits, no hooks: not a
// server anyone should run, only what the runtime itself costs per read and
// write. smtpd ÷ floor is what the library adds on that runtime.
//
//   <runtime> bench/floor.mjs        # prints READY <port>; `stats` on stdin
//
//   <runtime> bench/floor.mjs --reuse   # the reused-read-buffer floor (below)
//
// Deno: Deno.listen + conn.read/conn.write (runtimes/deno.ts's path), into
// one buffer per connection that starts at 256 bytes and grows 4-fold on a
// full read (up to 64 KiB), reused for every read: an idle connection holds
// 256 bytes, and a body passes through the same memory (no chunk is handed
// on). Bun: Bun.listen (runtimes/bun.ts's). Node: node:net
// (runtimes/node_net.ts's); there the runtime allocates each read itself.
//
// `--reuse`: the reused-read-buffer floor, what a receiver costs when no
// read allocates. Node: every accepted socket reads into one 64 KiB buffer
// of the process (node:net's `onread`, public for client sockets only:
// here the accepted socket's handle is taken with `pauseOnConnect` and
// wrapped in `new net.Socket({ handle, onread })`, as node:net's own
// server wraps it; the buffer is free again when the callback returns, so
// one serves every connection). Deno: the same as the plain floor, which
// reads with Deno.Conn.read into a buffer of its own per connection
// already (run.mjs reports the plain floor's figures for it). Bun: not
// possible, Bun.listen hands a fresh copy per read; the process prints
// `UNSUPPORTED <why>` and exits 3. Node without the handle (a runtime
// whose node:net has none) does the same.
// Loopback only (127.0.0.1, a free port).
import process from "node:process";
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

/** The reused-buffer floor's one read buffer (Node): 64 KiB, as libuv reads. */
const SHARED = new Uint8Array(64 * 1024);

/**
 * The reused-buffer floor on node:net: each accepted socket's handle
 * wrapped in a socket that reads into SHARED (`onread`). Null when this
 * node:net hands out no handle to wrap.
 */
async function nodeReuseServer() {
  const net = await import("node:net");
  let wrapped = 0;
  const server = net.createServer({ pauseOnConnect: true }, (accepted) => {
    const handle = accepted._handle;
    if (!handle || typeof handle.readStart !== "function") {
      accepted.destroy();
      return;
    }
    // The accepted socket lets go of the handle: the new one owns it.
    accepted._handle = null;
    const s = state();
    const sock = new net.Socket({
      handle,
      readable: true,
      writable: true,
      onread: {
        buffer: SHARED,
        callback(n, buf) {
          const out = feed(s, buf.subarray(0, n));
          if (out !== null) sock.write(out);
        },
      },
    });
    wrapped++;
    sock.setNoDelay(true);
    sock.on("error", () => {});
    sock.write(GREETING);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  // Feature check: one connection of our own must get the greeting
  // through a wrapped socket.
  const ok = await new Promise((resolve) => {
    const c = net.connect(server.address().port, "127.0.0.1");
    const t = setTimeout(() => resolve(false), 5000);
    c.once("data", () => {
      clearTimeout(t);
      c.destroy();
      resolve(wrapped === 1);
    });
    c.once("error", () => resolve(false));
  });
  if (!ok) {
    server.close();
    return null;
  }
  return server.address().port;
}

const reuse = process.argv.includes("--reuse");
let port;
if (globalThis.Deno) port = denoServer();
else if (globalThis.Bun) {
  if (reuse) {
    process.stdout.write(
      "UNSUPPORTED Bun.listen hands a fresh copy of every read: no reused buffer\n",
    );
    process.exit(3);
  }
  port = bunServer();
} else if (reuse) {
  port = await nodeReuseServer();
  if (port === null) {
    process.stdout.write(
      "UNSUPPORTED node:net gave no handle to read into a reused buffer\n",
    );
    process.exit(3);
  }
} else port = await nodeServer();
control(port);
