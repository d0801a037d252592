#!/usr/bin/env node
// What `npm pack` and `npm publish` put in the package's package.json: the
// checkout's, without what only the checkout needs. A user who installs
// smtpd gets postal-mime and nothing else: no devDependencies (Deno, Bun,
// TypeScript, ...), no Node 24 for the tests (scripts/node24), no scripts,
// no allowScripts (the checkout's policy on its dependencies' scripts).
//
// npm reads package.json from disk when it packs, and `npm publish` reads
// it again after packing (for the registry's metadata), so the lifecycle
// scripts swap the file:
//   prepack      builds dist/ (unless SMTPD_PACK_SKIP_BUILD=1), keeps the
//                checkout's package.json in .tmp/package.json.full and
//                writes the slim one;
//   postpack     puts the checkout's back (under `npm publish`, later:
//                npm reads the slim one again first);
//   postpublish  puts it back after `npm publish` (the one script the
//                slim package.json keeps, since npm runs the scripts of
//                the file it re-read).
// A pack or publish that died half-way (a publish refused by the registry,
// say) leaves the slim file, without the checkout's scripts: the next pack,
// `node scripts/build.mjs`, `node scripts/test.mjs` or
// `node scripts/pack.mjs restore` puts the full one back.
//
// Also used by scripts/test.mjs and test/package_exports.test.ts: packCopy() packs
// a copy of the package in a temporary folder, the way npm packs it, and
// leaves the checkout alone.
import { execFile, spawnSync } from "node:child_process";
import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

/** package.json fields the published package does not carry. */
const CHECKOUT_ONLY = [
  "devDependencies",
  "optionalDependencies",
  "scripts",
  "allowScripts",
];

/**
 * The published package.json: the checkout's without its devDependencies,
 * optionalDependencies and scripts, but for `postpublish`, which puts the
 * checkout's file back after `npm publish`.
 *
 * @param {Record<string, unknown>} pkg the checkout's package.json
 * @returns {Record<string, unknown>}
 */
export function slimManifest(pkg) {
  const slim = Object.fromEntries(
    Object.entries(pkg).filter(([k]) => !CHECKOUT_ONLY.includes(k)),
  );
  const scripts = /** @type {Record<string, string> | undefined} */ (
    pkg.scripts
  );
  if (scripts?.postpublish) slim.scripts = { postpublish: scripts.postpublish };
  return slim;
}

/**
 * Puts the checkout's package.json back if a pack left the slim one.
 *
 * @param {string} root the checkout
 * @returns {boolean} whether it had to
 */
export function restoreManifest(root) {
  const kept = join(root, ".tmp", "package.json.full");
  if (!existsSync(kept)) return false;
  copyFileSync(kept, join(root, "package.json"));
  rmSync(kept);
  return true;
}

/**
 * Writes the slim package.json, keeping the checkout's.
 *
 * @param {string} root the checkout
 */
function writeSlimManifest(root) {
  const file = join(root, "package.json");
  const text = readFileSync(file, "utf8");
  mkdirSync(join(root, ".tmp"), { recursive: true });
  writeFileSync(join(root, ".tmp", "package.json.full"), text);
  writeFileSync(
    file,
    JSON.stringify(slimManifest(JSON.parse(text)), null, 2) + "\n",
  );
}

/**
 * @typedef {object} Packed
 * @property {string} tarball the .tgz's path
 * @property {string} copy the copy of the package it was packed from
 * @property {number} size bytes packed
 * @property {number} unpackedSize bytes unpacked
 * @property {string[]} files the paths in the tarball, sorted
 */

/**
 * Packs a copy of the package in `dir` (made if missing) with npm, its
 * lifecycle scripts included (prepack without the build: dist/ must be
 * built), and resolves with the tarball's path and what npm says about
 * it. The checkout is not touched.
 *
 * @param {string} root the checkout, with dist/ built
 * @param {string} dir a temporary folder
 * @returns {Promise<Packed>}
 */
export async function packCopy(root, dir) {
  const npm = (args, cwd) =>
    new Promise((resolve, reject) => {
      execFile(
        process.platform === "win32" ? "npm.cmd" : "npm",
        args,
        {
          cwd,
          env: { ...process.env, SMTPD_PACK_SKIP_BUILD: "1" },
          maxBuffer: 16 << 20,
          shell: process.platform === "win32",
        },
        (err, stdout, stderr) =>
          err ? reject(new Error(`npm ${args.join(" ")}: ${stderr}`)) : resolve(
            stdout,
          ),
      );
    });
  // The files npm would pack from the checkout, then those and this
  // script (which prepack runs) in the copy.
  const dry = JSON.parse(
    await npm(["pack", "--dry-run", "--json", "--ignore-scripts"], root),
  );
  const copy = join(dir, "package");
  rmSync(copy, { recursive: true, force: true });
  for (const { path } of dry[0].files) {
    mkdirSync(dirname(join(copy, path)), { recursive: true });
    cpSync(join(root, path), join(copy, path));
  }
  mkdirSync(join(copy, "scripts"), { recursive: true });
  cpSync(join(here, "pack.mjs"), join(copy, "scripts", "pack.mjs"));
  const out = await npm(
    ["pack", "--json", "--pack-destination", dir, "--loglevel=error"],
    copy,
  );
  // Lifecycle scripts may print before the JSON.
  const info = JSON.parse(out.slice(out.indexOf("[")))[0];
  return {
    tarball: join(dir, info.filename),
    copy,
    size: info.size,
    unpackedSize: info.unpackedSize,
    files: info.files.map((/** @type {{ path: string }} */ f) => f.path)
      .sort(),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const root = process.cwd();
  const step = process.argv[2];
  if (step === "prepack") {
    if (restoreManifest(root)) {
      console.error("pack: put back package.json that a pack had left slim");
    }
    if (process.env.SMTPD_PACK_SKIP_BUILD !== "1") {
      const r = spawnSync(process.execPath, [join(here, "build.mjs")], {
        cwd: root,
        stdio: "inherit",
      });
      if (r.status !== 0) process.exit(r.status ?? 1);
    }
    writeSlimManifest(root);
  } else if (step === "postpack") {
    if (process.env.npm_command !== "publish") restoreManifest(root);
    else {
      console.error(
        "pack: package.json is the published one until npm publish ends; " +
          "if it fails, `node scripts/pack.mjs restore` puts the checkout's back",
      );
    }
  } else if (step === "postpublish" || step === "restore") {
    restoreManifest(root);
  } else {
    console.error(
      "Usage: node scripts/pack.mjs prepack|postpack|postpublish|restore",
    );
    process.exit(2);
  }
}
