// The one export map: deno.json exports, package.json exports and the tsup
// entries must list the same entry points.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import tsupConfig from "../tsup.config.ts";

const root = new URL("../", import.meta.url);
const denoJson = JSON.parse(readFileSync(new URL("deno.json", root), "utf8"));
const pkg = JSON.parse(readFileSync(new URL("package.json", root), "utf8"));
const entries = tsupConfig.entry as Record<string, string>;

/** "./runtimes/deno.ts" → "runtimes/deno" (the tsup entry name and dist path). */
const stem = (p: string) => p.replace(/^\.\//, "").replace(/\.ts$/, "");

describe("export map", () => {
  it("deno.json exports and tsup entries name the same source files", () => {
    const fromDeno = Object.values(denoJson.exports as Record<string, string>)
      .map((p) => p.replace(/^\.\//, "")).filter((p) => p !== "src/cli.ts")
      .sort();
    const fromTsup = Object.values(entries).filter((p) => p !== "src/cli.ts")
      .sort();
    assert.deepEqual(fromDeno, fromTsup);
  });

  it("package.json exports point at tsup's output for each deno.json export", () => {
    for (
      const [sub, src] of Object.entries(
        denoJson.exports as Record<string, string>,
      )
    ) {
      if (sub === "./cli") continue; // the CLI is the package's bin
      const name = Object.keys(entries).find((k) =>
        entries[k] === stem(src) + ".ts"
      );
      assert.ok(name, `tsup has an entry for ${src}`);
      const exp = pkg.exports[sub];
      assert.ok(exp, `package.json exports ${sub}`);
      assert.equal(exp.import, `./dist/${name}.js`, `${sub} import`);
      assert.equal(exp.require, `./dist/${name}.cjs`, `${sub} require`);
      assert.deepEqual(exp.types, {
        import: `./dist/${name}.d.ts`,
        require: `./dist/${name}.d.cts`,
      });
    }
    const pkgSubpaths = Object.keys(pkg.exports).filter((k) =>
      k !== "./package.json"
    ).sort();
    const denoSubpaths = Object.keys(denoJson.exports).filter((k) =>
      k !== "./cli"
    ).sort();
    assert.deepEqual(pkgSubpaths, denoSubpaths);
  });

  it("package.json '.' picks each runtime's shim through its condition", () => {
    const dot = pkg.exports["."];
    assert.equal(dot.deno, "./dist/runtimes/deno.js");
    assert.equal(dot.bun, "./dist/runtimes/bun.js");
    assert.deepEqual(dot.node, {
      import: "./dist/runtimes/node.js",
      require: "./dist/runtimes/node.cjs",
    });
    // Conditions are matched in order: runtime conditions before import/require.
    const keys = Object.keys(dot);
    assert.ok(keys.indexOf("bun") < keys.indexOf("node"));
    assert.ok(keys.indexOf("node") < keys.indexOf("import"));
  });

  it("the bin is built by tsup and exported to JSR when the CLI exists", () => {
    const bin = pkg.bin?.smtpd;
    assert.equal(bin, "./dist/cli.js");
    if ("cli" in entries) {
      assert.equal(entries.cli, "src/cli.ts");
      assert.equal(denoJson.exports["./cli"], "./src/cli.ts");
    }
  });

  it("versions agree", () => {
    assert.equal(denoJson.version, pkg.version);
  });
});
