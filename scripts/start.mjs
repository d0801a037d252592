#!/usr/bin/env node
// `npm start -- [options]`: the command-line server from a checkout, on the
// Node that runs npm (the user's own), not on a `node` that a dependency
// put in node_modules/.bin (the optional Node 24 test binary).
//
// The server runs in this very process: on the Node that runs npm, it is
// loaded here through tsx's register API; on another Node, this process
// becomes the Node that runs npm (process.execve, Node 22.15 and later).
// A child process is the last resort, for an older Node in node_modules.
//
// npm runs this through `sh -c`, and passes SIGINT and SIGTERM on to that
// shell only. A shell that does not exec its command (dash, Debian's sh)
// dies of the SIGTERM without passing it on, npm exits after it, and this
// process is left behind; npm killed (SIGKILL, SIGHUP) leaves the shell
// and this process behind. So the server also stops, gracefully, once the
// shell or npm is gone: SMTPD_STOP_WITH names the processes whose exit
// stops it (see watchStopSignals in src/cli/log.ts).
import { execFileSync, spawn } from "node:child_process";
import { readFileSync, realpathSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const main = join(root, "src", "cli", "main.ts");
const args = process.argv.slice(2);
const node = process.env.npm_node_execpath || process.execPath;

/** Whether two paths name the same file. */
function same(a, b) {
  try {
    return realpathSync(a) === realpathSync(b);
  } catch {
    return a === b;
  }
}

/** Runs `ps -o <field>= -p pid` (where there is no /proc), or "". */
function ps(field, pid) {
  try {
    return execFileSync("ps", ["-o", `${field}=`, "-p", String(pid)], {
      encoding: "utf8",
    }).trim();
  } catch {
    return "";
  }
}

/** The parent of process `pid` (Linux: /proc; elsewhere ps), or NaN. */
function parentOf(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  } catch {
    return Number(ps("ppid", pid) || NaN);
  }
}

/** The command line of process `pid`, or "". */
function commandOf(pid) {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ");
  } catch {
    return ps("args", pid);
  }
}

// Only under npm (run directly, e.g. with nohup, the parent may go); and a
// worker started by `--workers` (this script again) has its own
// supervisor to watch: the shell is watched by the first process only.
// npm (or the package manager that ran the script) is the shell's parent;
// when the shell exec'd this script, npm is ours, and its parent (whoever
// ran npm) is not watched.
if (
  process.env.npm_lifecycle_event !== undefined &&
  process.env.SMTPD_WORKER === undefined
) {
  const shell = process.ppid;
  const manager = basename(process.env.npm_execpath || "npm-cli.js");
  const npm = commandOf(shell).includes(manager) ? NaN : parentOf(shell);
  process.env.SMTPD_STOP_WITH = npm > 1 ? `${shell},${npm}` : String(shell);
}

if (same(node, process.execPath)) {
  const { register } = await import("tsx/esm/api");
  register();
  const { runProgram } = await import(pathToFileURL(main).href);
  await runProgram(args);
} else if (typeof process.execve === "function") {
  process.execve(node, [node, "--import", "tsx", main, ...args], process.env);
} else {
  // The child stops with this process too.
  const stopWith = process.env.SMTPD_STOP_WITH;
  const child = spawn(node, ["--import", "tsx", main, ...args], {
    stdio: "inherit",
    env: stopWith === undefined
      ? process.env
      : { ...process.env, SMTPD_STOP_WITH: `${process.pid},${stopWith}` },
  });
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
    process.on(signal, () => child.kill(signal));
  }
  child.on("exit", (code, signal) => {
    process.exitCode = code ?? (signal ? 1 : 0);
  });
}
