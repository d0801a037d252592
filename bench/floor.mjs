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
//   <runtime> bench/floor.mjs --contract   # the contract floor (below)
//
// Deno: Deno.listen + conn.read/conn.write, into
// one buffer per connection that starts at 256 bytes and grows 4-fold on a
// full read (up to 64 KiB), reused for every read: an idle connection holds
// 256 bytes, and a body passes through the same memory (no chunk is handed
// on). Bun: Bun.listen (runtimes/bun.ts's). Node: node:net
// (runtimes/node_connection.ts); there the runtime allocates each read itself.
//
// `--contract`: the contract floor, the same listeners and replies plus
// only what smtpd's public contract makes every conforming server do (an
// awaited promise-returning hook per MAIL and RCPT; per message a byte
// ReadableStream of copies of the body, closed at its end, read to the end
// by an async message hook that is awaited before the 250; what exactly:
// bench/floor_feed.mjs). smtpd ÷ contract floor is what the library adds
// beyond its contract; contract floor ÷ floor what the contract itself
// costs on the runtime.
//
// `--reuse`: the reused-read-buffer floor, what a receiver costs when no
// read allocates. Node: every accepted socket reads into one 64 KiB buffer
// of the process (node:net's `onread`, public for client sockets only:
// here the accepted socket's handle is taken with `pauseOnConnect` and
// wrapped in `new net.Socket({ handle, onread })`, as node:net's own
// server wraps it; the buffer is free again when the callback returns, so
// one serves every connection). Deno: the plain floor reads into a buffer
// of its own already; `--reuse` reads the same way but through the op
// under Deno.Conn.read (`Deno[Deno.internal].core.read` with the
// connection's resource id: what runtimes/deno.ts reads with where it
// finds it), without Conn.read's async wrapper and its set of pending
// reads. Bun: not possible, Bun.listen hands a fresh copy per read; the
// process prints `UNSUPPORTED <why>` and exits 3. Node without the handle
// (a runtime whose node:net has none) and a Deno without the op do the
// same.
// Loopback only (127.0.0.1, a free port).
import process from "node:process";
import { control } from "./control.mjs";
import {
  contractFeed,
  contractRead,
  contractState,
  feed,
  GREETING,
  state,
} from "./floor_feed.mjs";

/** Deno.listen, each connection served by `serveConn` (denoFloor or denoContract). */
function denoServer(serveConn) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  (async () => {
    for await (const conn of listener) serveConn(conn);
  })();
  return listener.addr.port;
}

/**
 * The floor's connection on Deno: one read buffer, reused, read with
 * `read` (Deno.Conn.read; the op under it for `--reuse`).
 */
async function denoFloor(conn, read = (buf) => conn.read(buf)) {
  conn.setNoDelay(true);
  const s = state();
  let buf = new Uint8Array(256);
  try {
    await conn.write(GREETING);
    for (;;) {
      const n = await read(buf);
      if (n === null || n === 0) break;
      const out = feed(s, buf.subarray(0, n));
      // feed() keeps no view of the chunk: the buffer is free again.
      if (n === buf.length && n < 64 * 1024) buf = new Uint8Array(n * 4);
      if (out !== null) await conn.write(out);
    }
  } catch { /* peer gone */ }
  try {
    conn.close();
  } catch { /* closed */ }
}

/**
 * Deno's ops (`Deno[Deno.internal].core`) when they hold the read op
 * (see `--reuse`), else null.
 */
function denoReadOp() {
  const key = Deno.internal;
  const core = typeof key === "symbol" ? Deno[key]?.core : undefined;
  return typeof core?.read === "function" ? core : null;
}

/**
 * The `--reuse` floor's connection on Deno: the floor's, read through the
 * op (which answers 0 at the end of input).
 */
function denoOpFloor(core) {
  return (conn) => {
    const ridKey = Object.getOwnPropertySymbols(conn).find((k) =>
      k.description === "Deno.internal.rid"
    );
    const rid = ridKey === undefined ? undefined : conn[ridKey];
    if (typeof rid !== "number") {
      process.stdout.write("UNSUPPORTED no resource id on Deno's connection\n");
      process.exit(3);
    }
    return denoFloor(conn, (buf) => core.read(rid, buf));
  };
}

/**
 * The contract floor's connection on Deno: the floor's reads, each fed to
 * contractFeed() (which hands its replies over once per read) before the
 * next.
 */
async function denoContract(conn) {
  conn.setNoDelay(true);
  let replies = null;
  const s = contractState((out) => {
    replies = out;
  });
  let buf = new Uint8Array(256);
  try {
    await conn.write(GREETING);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      await contractFeed(s, buf.subarray(0, n));
      // contractFeed() is done with the chunk: the buffer is free again.
      if (n === buf.length && n < 64 * 1024) buf = new Uint8Array(n * 4);
      if (replies !== null) {
        const out = replies;
        replies = null;
        await conn.write(out);
      }
    }
  } catch { /* peer gone */ }
  try {
    conn.close();
  } catch { /* closed */ }
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

/** The contract floor on Bun.listen: each read a fresh copy, queued while a hook is awaited. */
function bunContractServer() {
  const server = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(sock) {
        sock.data = contractState((out) => sock.write(out));
        sock.write(GREETING);
      },
      data(sock, chunk) {
        contractRead(sock.data, chunk);
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

/** The contract floor on node:net: each read a fresh Buffer, queued while a hook is awaited. */
async function nodeContractServer() {
  const net = await import("node:net");
  const server = net.createServer({ noDelay: true }, (sock) => {
    const s = contractState((out) => sock.write(out));
    sock.on("error", () => {});
    sock.on("data", (chunk) => contractRead(s, chunk));
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
/** `--contract`: the contract floor (bench/floor_feed.mjs's contractFeed). */
const contract = process.argv.includes("--contract");
if (reuse && contract) {
  // The reused buffer is read into again while a hook is awaited.
  process.stderr.write("Usage: bench/floor.mjs [--reuse | --contract]\n");
  process.exit(2);
}
let port;
if (globalThis.Deno && reuse) {
  const core = denoReadOp();
  if (core === null) {
    process.stdout.write(
      "UNSUPPORTED this Deno has no read op under Deno.Conn.read\n",
    );
    process.exit(3);
  }
  port = denoServer(denoOpFloor(core));
} else if (globalThis.Deno) {
  port = denoServer(contract ? denoContract : denoFloor);
} else if (globalThis.Bun && contract) port = bunContractServer();
else if (contract) port = await nodeContractServer();
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
