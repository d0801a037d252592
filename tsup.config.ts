import type { Options } from "tsup";

/**
 * The npm build. The library: ESM + CJS + .d.ts from the same entry points
 * as the `exports` of deno.json and package.json (test/exports.test.ts
 * checks that the three agree). The CLI: ESM only, no types (it is the
 * package's bin, not an API). `npm run build` empties dist/ first.
 */
const library: Options = {
  entry: {
    mod: "mod.ts",
    engine: "src/exports/engine.ts",
    transport: "src/exports/transport.ts",
    "runtimes/deno": "runtimes/deno.ts",
    "runtimes/bun": "runtimes/bun.ts",
    "runtimes/node": "runtimes/node.ts",
    maildir: "src/maildir.ts",
    webhook: "src/webhook.ts",
    testing: "src/testing.ts",
  },
  format: ["esm", "cjs"],
  dts: true,
  clean: false,
  sourcemap: false,
  target: "es2022",
  platform: "node",
  splitting: true,
  removeNodeProtocol: false,
  external: ["postal-mime"],
};

const cli: Options = {
  entry: { cli: "src/cli/main.ts" },
  format: ["esm"],
  dts: false,
  clean: false,
  sourcemap: false,
  target: "es2022",
  platform: "node",
  splitting: false,
  removeNodeProtocol: false,
  external: ["postal-mime"],
};

export { cli, library };
export default [library, cli];
