// The bare runtime: loads nothing, prints `READY 0`, and waits for stdin
// to end. The bench reads its RSS as the runtime's own footprint. Plain
// JavaScript, launched exactly as bench/server.mjs is (bench/launch.mjs:
// same runtime flags, no loader, no type stripping).
import process from "node:process";

process.stdin.on("data", () => {});
process.stdin.on("end", () => process.exit(0));
process.stdout.write("READY 0\n");
