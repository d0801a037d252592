import { dirname, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Options } from "tsup";

/**
 * The npm build. The library: ES modules and one set of .d.ts from the
 * same entry points as the `exports` of deno.json and package.json
 * (test/package_exports.test.ts checks that the three agree). No CommonJS copy:
 * it doubled the package, and `require()` loads ES modules on Node 20.19+,
 * 22.12+ and Bun. The CLI: one ES module, no types (it is the package's
 * bin, not an API), and only its own code: what it takes from the library
 * it imports from the library's entry points in dist/ (a plugin makes
 * those imports external and refuses any other import of library code).
 * `npm run build` empties dist/ first.
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
    metrics: "src/exports/metrics.ts",
  },
  format: ["esm"],
  dts: true,
  clean: false,
  sourcemap: false,
  target: "es2022",
  platform: "node",
  splitting: true,
  removeNodeProtocol: false,
  external: ["postal-mime"],
};

const root = dirname(fileURLToPath(import.meta.url));
const cliDir = resolve(root, "src", "cli");
/** Source file (absolute) → the built entry point the CLI imports instead. */
const entryFiles = new Map(
  Object.entries(library.entry as Record<string, string>).map((
    [name, src],
  ) => [resolve(root, src), `./${name}.js`]),
);

/**
 * Library modules the CLI may carry a copy of: small leaves (no imports of
 * their own) that no entry point exports, because they are no API. Today
 * only the option-name suggestions (`--maildr` → `--maildir`).
 */
const cliLeaves = new Set([resolve(root, "src", "keys.ts")]);

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
  esbuildPlugins: [{
    name: "library-entry-points",
    setup(build) {
      build.onResolve({ filter: /^\.\.?\// }, (args) => {
        const path = resolve(args.resolveDir, args.path);
        const entry = entryFiles.get(path);
        if (entry) return { path: entry, external: true };
        if (path.startsWith(cliDir + "/")) return undefined;
        if (cliLeaves.has(path)) return undefined;
        // A value the CLI needs from library code that no entry point
        // exports would come into the bundle as a second copy. (So would
        // `import { type T } from`: with verbatimModuleSyntax it keeps the
        // import for its side effects; `import type` does not.)
        return {
          errors: [{
            text: `The CLI imports ${
              relative(root, path)
            }, which is not a library entry point: import it from one (${
              [...entryFiles.keys()].map((p) => relative(root, p)).join(", ")
            }), exporting it there if need be; for types only, write \`import type\``,
          }],
        };
      });
    },
  }],
};

export { cli, library };
export default [library, cli];
