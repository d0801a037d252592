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
    maildir: "src/maildir.ts",
    cli: "src/cli.ts",
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
  // The CLI checks import.meta.main / import.meta.url to know it is the
  // entry point; CommonJS has no import.meta, so the CJS build never is.
  esbuildOptions(options, { format }) {
    if (format === "cjs") {
      options.define = {
        ...options.define,
        "import.meta.main": "false",
        "import.meta.url": "undefined",
      };
    }
  },
};

export default config;
