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
// process is left behind. So the server also stops, gracefully, once the
// shell is gone: SMTPD_STOP_WITH names the process whose exit stops it
// (see watchStopSignals in src/cli/log.ts).
import { spawn } from "node:child_process";
import { realpathSync } from "node:fs";
import { dirname, join } from "node:path";
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

// Only under npm (run directly, e.g. with nohup, the parent may go); and a
// worker started by `--workers` (this script again) has its own
// supervisor to watch: the shell is watched by the first process only.
if (
  process.env.npm_lifecycle_event !== undefined &&
  process.env.SMTPD_WORKER === undefined
) {
  process.env.SMTPD_STOP_WITH = String(process.ppid);
}

if (same(node, process.execPath)) {
  const { register } = await import("tsx/esm/api");
  register();
  const { runProgram } = await import(pathToFileURL(main).href);
  await runProgram(args);
} else if (typeof process.execve === "function") {
  process.execve(node, [node, "--import", "tsx", main, ...args], process.env);
} else {
  const child = spawn(node, ["--import", "tsx", main, ...args], {
    stdio: "inherit",
  });
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
    process.on(signal, () => child.kill(signal));
  }
  child.on("exit", (code, signal) => {
    process.exitCode = code ?? (signal ? 1 : 0);
  });
}
