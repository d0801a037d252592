/**
 * The bare runtime: loads nothing, prints `READY 0`, and waits for stdin
 * to end. The bench reads its peak RSS as the runtime's own footprint,
 * launched exactly as the servers are (same flags and loaders).
 *
 * @module
 */

import process from "node:process";

process.stdin.on("data", () => {});
process.stdin.on("end", () => process.exit(0));
process.stdout.write("READY 0\n");
