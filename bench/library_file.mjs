// Which smtpd file a runtime loads from this checkout (bench/server.mjs in
// the server process, bench/launch.mjs for the report): mod.ts for the
// sources, else the file package.json's exports give that runtime, as a
// resolver would pick it (its condition first, then "import", then
// "default"): what `npm install smtpd` resolves to. No other import, so
// that the bench servers load nothing more than they did.
import { readFileSync } from "node:fs";

/** The conditions a runtime's resolver tries, in order. */
const CONDITIONS = {
  deno: ["deno", "import", "default"],
  bun: ["bun", "import", "default"],
  node: ["node", "import", "default"],
};

/** The target of an export entry under `conditions` (nested conditions too). */
function target(entry, conditions) {
  if (typeof entry === "string") return entry;
  for (const c of conditions) {
    if (entry?.[c] !== undefined) return target(entry[c], conditions);
  }
  return undefined;
}

/**
 * The file, relative to the project root, that `runtime` ("deno", "bun",
 * "node") loads smtpd from with `lib` ("src": mod.ts; "dist": the npm
 * build). Throws on another `lib` or when package.json has no target.
 */
export function libraryFileFor(runtime, lib) {
  if (lib === "src") return "mod.ts";
  if (lib !== "dist") throw new Error(`--lib ${lib}: expected src or dist`);
  const pkg = JSON.parse(
    readFileSync(new URL("../package.json", import.meta.url), "utf8"),
  );
  const file = target(pkg.exports["."], CONDITIONS[runtime] ?? CONDITIONS.node);
  if (typeof file !== "string") {
    throw new Error(`package.json exports no "." file for ${runtime}`);
  }
  return file.replace(/^\.\//, "");
}
