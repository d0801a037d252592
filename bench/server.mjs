// The benchmark server: accepts every command and message, reads each body
// to the end and discards it. Plain JavaScript, so that every runtime runs
// it as it is (no loader, no type stripping); launched by bench/launch.mjs.
//
//   <runtime> bench/server.mjs smtpd        # smtpd's serve(), from the code users of this runtime get
//   <runtime> bench/server.mjs smtp-server  # nodemailer's smtp-server (npm)
//   <runtime> bench/server.mjs smtpd --proxy-protocol  # expects a PROXY header (bench/proxy.mjs)
//   <runtime> bench/server.mjs smtpd --lib src|dist    # the sources (mod.ts) or the npm build
//   <runtime> bench/server.mjs smtpd --byob # the hook reads message.raw with a BYOB reader
//   <runtime> bench/server.mjs smtpd --milter inet:127.0.0.1:PORT  # serve({ milters }) (repeatable)
//
// smtpd's code, by default: on Node and Bun the npm build, the file that
// package.json's exports give the runtime (bench/library_file.mjs: what
// `npm install smtpd` resolves to, dist/mod.js); on Deno mod.ts (JSR
// serves the TypeScript sources). `--lib dist` loads the build on Deno
// too; `--lib src` loads mod.ts on
// every runtime (Node 20 then needs `--import tsx`). smtp-server's process
// does not load smtpd.
//
// Prints `READY <port> <what it loaded>` once listening on 127.0.0.1 (a
// free port). A tiny control channel on stdin: each line `stats` prints one
// JSON line with the process's own CPU time (`process.cpuUsage()`, µs) and
// memory; the end of stdin exits. Nothing else is printed on stdout.
import process from "node:process";
import { control } from "./control.mjs";
import { libraryFileFor } from "./library_file.mjs";

const argv = process.argv.slice(2);
const kind = argv[0];
/** smtpd with `proxyProtocol: true` (PROXY v1/v2 from loopback peers). */
const proxyProtocol = argv.includes("--proxy-protocol");
const libAt = argv.indexOf("--lib");
/**
 * `--byob`: the hook reads message.raw with a BYOB reader into one 64 KiB
 * buffer of its own (what an application that wants no per-chunk garbage
 * does). While message.raw is no byte stream, getReader({ mode: "byob" })
 * throws and the hook falls back to the default reader; `stats` says which
 * reader it got (`reader`: "byob" or "default (no byte stream)").
 */
const byob = argv.includes("--byob");
/** `--milter ADDRESS` (repeatable): serve({ milters: [{ address }] }). */
const milters = argv.flatMap((a, i) =>
  a === "--milter" ? [{ address: argv[i + 1] }] : []
);
let readerUsed;
const runtime = typeof globalThis.Deno !== "undefined"
  ? "deno"
  : process.versions.bun
  ? "bun"
  : "node";
const lib = libAt >= 0 ? argv[libAt + 1] : runtime === "deno" ? "src" : "dist";
const nop = () => {};

async function startSmtpd(file) {
  const { serve } = await import(new URL(`../${file}`, import.meta.url).href);
  const server = await serve({
    hostname: "127.0.0.1",
    port: 0,
    serverName: "bench.smtpd",
    // The bench sends from one address: lift the per-IP cap (default 50;
    // W4 opens 100 sessions) and the size cap (the 100 MB message).
    maxConnections: 10000,
    maxConnectionsPerIp: Infinity,
    maxMessageSize: 200 * 1024 * 1024,
    ...(proxyProtocol ? { proxyProtocol: true } : {}),
    ...(milters.length > 0 ? { milters } : {}),
    onMessage: byob ? readByob : readDefault,
  });
  return server.addr.port;
}

/** The hook of the default bench server: message.raw's default reader. */
async function readDefault(message) {
  const reader = message.raw.getReader();
  while (!(await reader.read()).done) { /* discard */ }
}

/** The BYOB reader's buffers (64 KiB each), one taken per body being read, given back after. */
const byobBuffers = [];

/** The `--byob` hook: message.raw into byobBuffer, else (no byte stream) the default reader. */
async function readByob(message) {
  let reader;
  try {
    reader = message.raw.getReader({ mode: "byob" });
  } catch {
    readerUsed = "default (no byte stream)";
    return await readDefault(message);
  }
  readerUsed = "byob";
  // Sessions read bodies concurrently: each read has a buffer of its own.
  let buf = byobBuffers.pop() ?? new ArrayBuffer(64 * 1024);
  for (;;) {
    const { value, done } = await reader.read(new Uint8Array(buf));
    // The buffer comes back (transferred) with the bytes, or empty at the end.
    if (value) buf = value.buffer;
    if (done) break;
  }
  byobBuffers.push(buf);
}

async function startSmtpServer() {
  const { SMTPServer } = await import("smtp-server");
  const server = new SMTPServer({
    // Same behaviour as the smtpd bench server: no AUTH, no STARTTLS
    // (smtpd offers it only with a certificate), no DNS (smtpd does no
    // reverse lookup, and the bench stays on loopback). Everything else,
    // including the 100 ms wait before each greeting, is smtp-server's
    // default.
    authOptional: true,
    disabledCommands: ["AUTH", "STARTTLS"],
    disableReverseLookup: true,
    logger: false,
    onData(stream, _session, callback) {
      stream.on("data", nop);
      stream.on("end", () => callback());
    },
  });
  server.on("error", nop);
  return await new Promise((resolve) => {
    const net = server.listen(0, "127.0.0.1", () => {
      const addr = net.address();
      resolve(typeof addr === "object" && addr !== null ? addr.port : 0);
    });
  });
}

async function main() {
  let port;
  let loaded;
  if (kind === "smtpd") {
    loaded = libraryFileFor(runtime, lib);
    port = await startSmtpd(loaded);
  } else if (kind === "smtp-server") {
    loaded = "smtp-server";
    port = await startSmtpServer();
  } else {
    console.error(
      "Usage: bench/server.mjs smtpd|smtp-server [--proxy-protocol] [--byob] [--milter ADDRESS] [--lib src|dist]",
    );
    process.exit(2);
  }
  control(
    port,
    loaded,
    byob ? () => ({ reader: readerUsed ?? "none yet" }) : undefined,
  );
}

await main();
