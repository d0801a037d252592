// What scripts/test.mjs does to the output of the tools it runs, apart so
// that test/package_scripts.test.ts can check it: no colours, and no warnings that
// say nothing about the project.

/**
 * The environment of a tool that npm test runs: the caller's, with
 * NO_COLOR=1 and without FORCE_COLOR (Deno takes any value of it, "0" too,
 * as "force", over NO_COLOR).
 *
 * @param {Record<string, string | undefined>} env the caller's environment
 * @returns {Record<string, string | undefined>}
 */
export function childEnv(env) {
  const out = { ...env, NO_COLOR: "1" };
  delete out.FORCE_COLOR;
  return out;
}

// deno doc (2.9) resolves the `/// <reference path="zlib.d.ts" />` lines
// of @types/node's index.d.ts as package names and warns once per line
// (about 50 warnings per entry point, each with an "at" line); deno check
// resolves them fine.
const DOC_NOISE =
  /^Warning Failed resolving types\. Could not find package '[\w./-]+' from referrer '[^']*\/node_modules\/@types\/node\/[^']*'\.?$/;
const DOC_NOISE_AT = /^\s+at file:\/\/\S*\/node_modules\/@types\/node\/\S+$/;

/**
 * A line filter for deno doc's output: `keep(line)` is false for its
 * warnings about @types/node's own files (and the "at" line under each),
 * true for every other line; `hidden` counts the warnings dropped.
 *
 * @returns {{ keep(line: string): boolean; readonly hidden: number }}
 */
export function denoDocFilter() {
  let hidden = 0;
  let after = false;
  return {
    keep(line) {
      // deno-lint-ignore no-control-regex
      const plain = line.replace(/\x1b\[[0-9;]*m/g, "");
      if (DOC_NOISE.test(plain)) {
        hidden++;
        after = true;
        return false;
      }
      const at = after && DOC_NOISE_AT.test(plain);
      after = false;
      return !at;
    },
    get hidden() {
      return hidden;
    },
  };
}
