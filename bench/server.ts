/**
 * The benchmark server: accepts every command and message, reads each body
 * to the end and discards it. Runs on Deno, Bun and Node.
 *
 * ```sh
 * <runtime> bench/server.ts smtpd        # smtpd via serve() from ../mod.ts
 * <runtime> bench/server.ts smtp-server  # nodemailer's smtp-server (npm)
 * <runtime> bench/server.ts smtpd --proxy-protocol  # expects a PROXY header (bench/proxy.mjs)
 * ```
 *
 * Prints `READY <port>` once listening on 127.0.0.1 (a free port). A tiny
 * control channel on stdin: each line `stats` prints one JSON line with
 * the process's own CPU time (`process.cpuUsage()`, µs) and memory; the end
 * of stdin exits. Nothing else is printed on stdout.
 *
 * @module
 */

import { readFileSync } from "node:fs";
import process from "node:process";
import { serve } from "../mod.ts";

const kind = process.argv[2];
/** smtpd with `proxyProtocol: true` (PROXY v1/v2 from loopback peers). */
const proxyProtocol = process.argv.includes("--proxy-protocol");
const nop = () => {};

async function startSmtpd(): Promise<number> {
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
    async onMessage(message) {
      const reader = message.raw.getReader();
      while (!(await reader.read()).done) { /* discard */ }
    },
  });
  return server.addr.port;
}

async function startSmtpServer(): Promise<number> {
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
  return await new Promise<number>((resolve) => {
    const net = server.listen(0, "127.0.0.1", () => {
      const addr = net.address();
      resolve(typeof addr === "object" && addr !== null ? addr.port : 0);
    });
  });
}

/** VmHWM and VmRSS in kB from /proc/self/status (Linux), else null. */
function procMemory(): { hwmKb: number; rssKb: number } | null {
  try {
    const status = readFileSync("/proc/self/status", "utf8");
    const hwm = /VmHWM:\s+(\d+)/.exec(status);
    const rss = /VmRSS:\s+(\d+)/.exec(status);
    if (!hwm || !rss) return null;
    return { hwmKb: Number(hwm[1]), rssKb: Number(rss[1]) };
  } catch {
    return null;
  }
}

function stats(): string {
  const cpu = process.cpuUsage();
  return JSON.stringify({
    userUs: cpu.user,
    systemUs: cpu.system,
    rss: process.memoryUsage().rss,
    ...procMemory(),
  });
}

async function main(): Promise<void> {
  let port: number;
  if (kind === "smtpd") port = await startSmtpd();
  else if (kind === "smtp-server") port = await startSmtpServer();
  else {
    console.error("Usage: bench/server.ts smtpd|smtp-server");
    process.exit(2);
  }
  let pending = "";
  process.stdin.setEncoding("utf8");
  process.stdin.on("data", (d: string) => {
    pending += d;
    for (let nl = pending.indexOf("\n"); nl >= 0; nl = pending.indexOf("\n")) {
      const line = pending.slice(0, nl).trim();
      pending = pending.slice(nl + 1);
      if (line === "stats") process.stdout.write(stats() + "\n");
    }
  });
  process.stdin.on("end", () => process.exit(0));
  process.stdout.write(`READY ${port}\n`);
}

await main();
