#!/usr/bin/env node
// `npm start -- [options]`: the command-line server from a checkout, on the
// Node that runs npm (the user's own), not on a `node` that a dependency
// put in node_modules/.bin (the optional Node 24 test binary). Signals go
// to the server, and its exit code is ours.
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const node = process.env.npm_node_execpath || process.execPath;
const child = spawn(
  node,
  [
    "--import",
    "tsx",
    join(root, "src", "cli", "main.ts"),
    ...process.argv.slice(2),
  ],
  { stdio: "inherit" },
);
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(signal, () => child.kill(signal));
}
child.on("exit", (code, signal) => {
  process.exitCode = code ?? (signal ? 1 : 0);
});
