import type { Options } from "tsup";

/**
 * The npm build: ESM + CJS + .d.ts from the same entry points as the
 * `exports` of deno.json and package.json (test/exports.test.ts checks that
 * the three agree).
 */
const config: Options = {
  entry: {
    mod: "mod.ts",
    "runtimes/deno": "runtimes/deno.ts",
    "runtimes/bun": "runtimes/bun.ts",
    "runtimes/node": "runtimes/node.ts",
  },
  format: ["esm", "cjs"],
  dts: true,
  clean: true,
  sourcemap: false,
  target: "es2022",
  platform: "node",
  splitting: true,
  removeNodeProtocol: false,
  external: ["postal-mime"],
};

export default config;
