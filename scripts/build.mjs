#!/usr/bin/env node
// `npm run build` (and `prepack`): empties dist/, then tsup builds the
// library (ES modules and their types) and the CLI (one ES module that
// imports the library's). Runs wherever Node does.
import { spawnSync } from "node:child_process";
import { rmSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { restoreManifest } from "./pack.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
if (restoreManifest(root)) {
  console.log(
    "put back package.json, which an interrupted npm pack had left slim",
  );
}
rmSync(join(root, "dist"), { recursive: true, force: true });
const tsup = join(root, "node_modules", "tsup", "dist", "cli-default.js");
const r = spawnSync(process.execPath, [tsup], { cwd: root, stdio: "inherit" });
process.exitCode = r.status ?? 1;
