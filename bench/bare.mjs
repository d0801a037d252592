// The bare runtime: loads nothing of smtpd, prints `READY 0`, and waits for
// stdin to end. The bench reads its RSS as the runtime's own footprint.
// Plain JavaScript, launched exactly as bench/server.mjs is
// (bench/launch.mjs: same runtime flags, no loader, no type stripping), and
// with the same harness imports (node:fs for its `stats` line, node:process):
// on Deno the first node: module alone costs 1–2 MB, which is the bench's,
// not the library's.
import { readFileSync } from "node:fs";
import process from "node:process";

/** Kept so that node:fs is loaded as in bench/server.mjs. */
export const harness = readFileSync;

process.stdin.on("data", () => {});
process.stdin.on("end", () => process.exit(0));
process.stdout.write("READY 0\n");
