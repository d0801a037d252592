// A local DNS server for the reverse-DNS tests: Debian's dnsmasq (installed
// by .ci/run) in the foreground on a free 127.0.0.1 port with the records a
// test gives, logging every query it receives; and a UDP socket that reads
// and drops every query (a DNS server that never answers).
import { existsSync } from "node:fs";
import * as dgram from "node:dgram";
import { startProgram } from "./cli.ts";
import type { Program } from "./cli.ts";

/** Where Debian installs dnsmasq. */
export const DNSMASQ = "/usr/sbin/dnsmasq";
/** Whether dnsmasq is there (the tests skip without it). */
export const dnsmasqInstalled: boolean = existsSync(DNSMASQ);

/** A UDP socket on a free loopback port; `onMessage` counts what it reads. */
export async function udpSocket(
  onMessage: () => void = () => {},
): Promise<{ port: number; close(): Promise<void> }> {
  const s = dgram.createSocket("udp4");
  s.on("message", onMessage);
  await new Promise<void>((resolve) => s.bind(0, "127.0.0.1", resolve));
  return {
    port: s.address().port,
    close: () => new Promise<void>((resolve) => s.close(() => resolve())),
  };
}

/** A running dnsmasq. */
export interface Dnsmasq {
  /** Its address for the `dnsServers` option: `127.0.0.1:PORT`. */
  readonly server: string;
  /** The program (its log of queries is on stderr). */
  readonly program: Program;
  /** Stops it and waits for the exit. */
  stop(): Promise<void>;
}

/**
 * Starts dnsmasq with `records` (its own flags: `--host-record=...`,
 * `--ptr-record=...`, `--address=...`, `--local=...`) and answers nothing
 * else; resolves once it serves.
 */
export async function startDnsmasq(records: string[]): Promise<Dnsmasq> {
  for (let attempt = 0;; attempt++) {
    // A free UDP port (dnsmasq takes TCP on it too; try again if taken).
    const probe = await udpSocket();
    await probe.close();
    const program = startProgram(DNSMASQ, [
      "--keep-in-foreground",
      "--no-daemon",
      `--port=${probe.port}`,
      "--listen-address=127.0.0.1",
      "--bind-interfaces",
      "--no-resolv",
      "--no-hosts",
      "--conf-file=/dev/null",
      "--log-queries",
      "--log-facility=-",
      ...records,
    ], { cwd: "/" });
    try {
      await program.waitFor(/cleared cache/, "stderr");
      return {
        server: `127.0.0.1:${probe.port}`,
        program,
        async stop() {
          if (program.child.exitCode === null) {
            program.child.kill("SIGTERM");
            await program.exited;
          }
        },
      };
    } catch (e) {
      if (attempt === 3) throw e;
    }
  }
}
