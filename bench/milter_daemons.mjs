// The milter filters of run.mjs's milter part, started the way the interop
// tests start them (test/interop_rspamd.test.ts, interop_opendkim.test.ts;
// Debian's packages, installed by .ci/run): rspamd's proxy worker in milter
// mode in front of a normal worker, no Redis, in a temporary directory of
// its own; OpenDKIM signing with a key made by opendkim-genkey. Loopback
// only. Each daemon's CPU is read from /proc for its whole process tree.
import { execFileSync, spawn } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { canConnect, freePort, schedCpuUs, sleep } from "./common.mjs";

export const RSPAMD = "/usr/bin/rspamd";
export const OPENDKIM = "/usr/sbin/opendkim";
export const GENKEY = "/usr/sbin/opendkim-genkey";

/** The pids of `pid` and every process below it (from /proc/<pid>/stat). */
function tree(pid) {
  const parent = new Map();
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const s = readFileSync(`/proc/${e}/stat`, "utf8");
      const ppid = Number(s.slice(s.lastIndexOf(")") + 2).split(" ")[1]);
      parent.set(Number(e), ppid);
    } catch { /* gone */ }
  }
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    for (const [p, pp] of parent) if (pp === out[i]) out.push(p);
  }
  return out;
}

/** A daemon started in the foreground, its output kept, stopped by signal. */
class Daemon {
  constructor(name, cmd, args, dir) {
    this.name = name;
    this.dir = dir;
    this.output = "";
    this.child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    this.exited = new Promise((r) => this.child.once("exit", r));
    for (const s of [this.child.stdout, this.child.stderr]) {
      s.on("data", (d) => {
        if (this.output.length < 4000) this.output += d;
      });
    }
  }

  alive() {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** CPU µs of the daemon's whole process tree (its workers included). */
  cpuUs() {
    return tree(this.child.pid).reduce((t, p) => t + (schedCpuUs(p) || 0), 0);
  }

  /** SIGTERM, SIGKILL after `graceMs`; removes its directory. */
  async stop(graceMs = 3000) {
    if (this.alive()) {
      this.child.kill("SIGTERM");
      const t = await Promise.race([
        this.exited.then(() => true),
        sleep(graceMs),
      ]);
      if (!t) {
        for (const p of tree(this.child.pid).reverse()) {
          try {
            process.kill(p, "SIGKILL");
          } catch { /* gone */ }
        }
        await this.exited;
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Waits until every port listens (or the daemon exits, or `ms` pass). */
async function waitPorts(d, ports, ms) {
  const until = performance.now() + ms;
  for (const port of ports) {
    while (!(await canConnect(port))) {
      if (!d.alive() || performance.now() > until) {
        await d.stop(500);
        throw new Error(
          `${d.name} did not listen on ${port}: ${d.output.slice(-500)}`,
        );
      }
      await sleep(200);
    }
  }
}

/**
 * rspamd (its proxy worker speaks milter, `milter = yes`), as
 * test/interop_rspamd.test.ts starts it: ports and directories of its own,
 * no Redis; it listens some 15 s after start. Resolves `{ daemon, address }`.
 */
export async function startRspamd() {
  if (!existsSync(RSPAMD)) throw new Error(`${RSPAMD} is not installed`);
  const dir = mkdtempSync(join(tmpdir(), "smtpd-bench-rspamd-"));
  chmodSync(dir, 0o755);
  for (const d of ["local.d", "run", "db", "log"]) mkdirSync(join(dir, d));
  const [proxy, normal, controller] = [
    await freePort(),
    await freePort(),
    await freePort(),
  ];
  const local = join(dir, "local.d");
  writeFileSync(
    join(local, "worker-proxy.inc"),
    `bind_socket = "127.0.0.1:${proxy}";\nmilter = yes;\n` +
      `upstream "local" {\n  default = yes;\n  hosts = "127.0.0.1:${normal}";\n}\n`,
  );
  writeFileSync(
    join(local, "worker-normal.inc"),
    `bind_socket = "127.0.0.1:${normal}";\n`,
  );
  writeFileSync(
    join(local, "worker-controller.inc"),
    `bind_socket = "127.0.0.1:${controller}";\n`,
  );
  writeFileSync(
    join(local, "milter_headers.conf"),
    "extended_spam_headers = true;\nskip_local = false;\nskip_authenticated = false;\n",
  );
  const args = [
    "-f",
    `--var=LOCAL_CONFDIR=${dir}`,
    `--var=RUNDIR=${dir}/run`,
    `--var=DBDIR=${dir}/db`,
    `--var=LOGDIR=${dir}/log`,
  ];
  if (process.getuid?.() === 0) {
    const uid = Number(execFileSync("id", ["-u", "_rspamd"]).toString());
    const gid = Number(execFileSync("id", ["-g", "_rspamd"]).toString());
    for (const d of ["run", "db", "log"]) chownSync(join(dir, d), uid, gid);
    args.unshift("-u", "_rspamd", "-g", "_rspamd");
  }
  const daemon = new Daemon("rspamd", RSPAMD, args, dir);
  await waitPorts(daemon, [proxy, normal], 90_000);
  return { daemon, address: `inet:127.0.0.1:${proxy}` };
}

/**
 * OpenDKIM signing (`Mode sv`, domain example.org, selector sel) with a key
 * made by opendkim-genkey, as test/interop_opendkim.test.ts starts it.
 * Resolves `{ daemon, address }`.
 */
export async function startOpendkim() {
  if (!existsSync(OPENDKIM) || !existsSync(GENKEY)) {
    throw new Error(`${OPENDKIM} or ${GENKEY} is not installed`);
  }
  const dir = mkdtempSync(join(tmpdir(), "smtpd-bench-opendkim-"));
  execFileSync(GENKEY, ["-D", dir, "-d", "example.org", "-s", "sel"]);
  const port = await freePort();
  const conf = join(dir, "opendkim.conf");
  writeFileSync(
    conf,
    [
      `Socket inet:${port}@127.0.0.1`,
      "Mode sv",
      "Domain example.org",
      "Selector sel",
      `KeyFile ${join(dir, "sel.private")}`,
      // Sign whatever the bench's client sends (from 127.0.0.1).
      "InternalHosts 127.0.0.1",
      "RequireSafeKeys no",
      "Syslog no",
      "",
    ].join("\n"),
  );
  const daemon = new Daemon("opendkim", OPENDKIM, ["-f", "-x", conf], dir);
  await waitPorts(daemon, [port], 30_000);
  return { daemon, address: `inet:127.0.0.1:${port}` };
}
