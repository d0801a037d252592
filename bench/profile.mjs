#!/usr/bin/env node
// Profiles one bench server under one workload and says where its CPU time
// goes: self time by function, and time by source file (inclusive).
//
//   node bench/profile.mjs [--runtime node24|node20|bun] [--server smtpd|smtp-server]
//                          [--workload W1|W2|W3|W4|W5] [--quick] [--lib dist|src]
//   node bench/profile.mjs --file X.cpuprofile [--messages N]   # summarize only
//
// The server is bench/server.mjs, launched as bench/run.mjs launches it
// (bench/launch.mjs): by default smtpd is the npm build (dist/, bundled into
// chunks: functions keep their names, files are chunks); `--lib src` runs
// the sources (Node 20 through tsx) for time per source file.
//
// Self time is sampled by wall clock on the JS thread: a blocking syscall
// (the socket write) shows with its wall time, not only its CPU time.
//
// Node and Bun write a V8/JSC .cpuprofile with --cpu-prof (Deno 2.9 has no
// such flag). The profile lands in .tmp/prof/<runtime>-<server>-<workload>/. Loopback only; the workload
// is bounded by its message count and a timeout.
import { spawn } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { BIN, defaultLib, ensureBuilt, scriptArgv } from "./launch.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const argv = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : fallback;
};
const runtime = opt("runtime", "node24");
const server = opt("server", "smtpd");
const workload = opt("workload", "W1");
const div = argv.includes("--quick") ? 10 : 1;
const file = opt("file", null); // summarize an existing .cpuprofile only

const dir = join(root, ".tmp", "prof", `${runtime}-${server}-${workload}`);
const node24 = BIN.node24;
const lib = opt("lib", defaultLib(runtime));
const profFlags = ["--cpu-prof", `--cpu-prof-dir=${dir}`];
const WORKLOADS = {
  W1: ["/usr/sbin/smtp-source", [
    "-d",
    "-s",
    "20",
    "-m",
    String(20000 / div),
    "-l",
    "1024",
  ]],
  W2: ["/usr/sbin/smtp-source", [
    "-s",
    "20",
    "-m",
    String(5000 / div),
    "-l",
    "1024",
  ]],
  W3: ["/usr/sbin/smtp-source", [
    "-d",
    "-s",
    "4",
    "-m",
    String(200 / div),
    "-l",
    "1048576",
  ]],
  W4: ["/usr/sbin/smtp-source", [
    "-d",
    "-s",
    "100",
    "-m",
    String(10000 / div),
    "-l",
    "10240",
  ]],
  W5: [node24, [
    "bench/client.mjs",
    "--sessions",
    "20",
    "--messages",
    String(20000 / div),
    "--size",
    "1024",
  ]],
};

function messageCount() {
  const [, args] = WORKLOADS[workload];
  const i = args.findIndex((a) => a === "-m" || a === "--messages");
  return Number(args[i + 1]);
}

function run(cmd, args) {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, {
      cwd: root,
      stdio: ["ignore", "ignore", "inherit"],
    });
    const t = setTimeout(() => c.kill("SIGKILL"), 600_000);
    c.once("exit", (code) => {
      clearTimeout(t);
      code === 0 ? resolve() : reject(new Error(`${cmd} exited ${code}`));
    });
  });
}

async function profile() {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  if (!["node24", "node20", "bun"].includes(runtime)) {
    throw new Error(`--runtime ${runtime}: node24, node20 or bun`);
  }
  if (server === "smtpd" && lib === "dist") ensureBuilt();
  const [cmd, ...args] = scriptArgv(runtime, "bench/server.mjs", [server], {
    lib,
    flags: profFlags,
  });
  const child = spawn(cmd, args, {
    cwd: root,
    stdio: ["pipe", "pipe", "inherit"],
  });
  const port = await new Promise((resolve, reject) => {
    let buf = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (d) => {
      buf += d;
      const m = /READY (\d+)/.exec(buf);
      if (m) resolve(Number(m[1]));
    });
    child.once("exit", () => reject(new Error("server exited")));
  });
  const [lcmd, largs] = WORKLOADS[workload];
  const target = lcmd.endsWith("smtp-source")
    ? [`127.0.0.1:${port}`]
    : ["--port", String(port)];
  await run(lcmd, [...largs, ...target]); // warm-up
  await run(lcmd, [...largs, ...target]);
  const exited = new Promise((r) => child.once("exit", r));
  child.stdin.end();
  await exited;
  const f = readdirSync(dir).find((n) => n.endsWith(".cpuprofile"));
  if (!f) throw new Error("no .cpuprofile written");
  return join(dir, f);
}

/** smtpd's own code: the sources, or the npm build. */
const project = (u) =>
  u.startsWith("src/") || u.startsWith("runtimes/") || u.startsWith("dist/");

function summarize(path) {
  const p = JSON.parse(readFileSync(path, "utf8"));
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of p.nodes) {
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const self = new Map();
  const files = new Map();
  const incl = new Map();
  const selfFile = new Map();
  let total = 0;
  const short = (url) =>
    url
      ? url.replace(/^file:\/\//, "").replace(root + "/", "").replace(
        /^.*node_modules\//,
        "npm:",
      )
      : "";
  for (let i = 0; i < p.samples.length; i++) {
    const dt = p.timeDeltas[i] ?? 0;
    const n = byId.get(p.samples[i]);
    if (!n) continue;
    const cf = n.callFrame;
    if (cf.functionName === "(idle)") continue;
    total += dt;
    const key = `${cf.functionName || "(anonymous)"} ${short(cf.url)}:${
      cf.lineNumber + 1
    }`;
    self.set(key, (self.get(key) ?? 0) + dt);
    const u0 = short(cf.url);
    const cat = u0 === ""
      ? `${cf.functionName || "(native)"}`
      : u0.startsWith("node:")
      ? u0.replace(/^node:internal\//, "node:")
      : u0.startsWith("npm:")
      ? u0.split("/").slice(0, 1).join("/")
      : u0;
    selfFile.set(cat, (selfFile.get(cat) ?? 0) + dt);
    const seen = new Set();
    const seenFn = new Set();
    for (let id = n.id; id !== undefined; id = parent.get(id)) {
      const fcf = byId.get(id).callFrame;
      const u = short(fcf.url);
      if (project(u) || u.startsWith("npm:")) {
        const fk = `${fcf.functionName || "(anonymous)"} ${u}:${
          fcf.lineNumber + 1
        }`;
        if (!seenFn.has(fk)) {
          seenFn.add(fk);
          incl.set(fk, (incl.get(fk) ?? 0) + dt);
        }
      }
      const group = project(u) || u.startsWith("bench/")
        ? u
        : u.startsWith("npm:")
        ? u.split("/")[0]
        : u === ""
        ? null
        : "runtime internals";
      if (group && !seen.has(group)) {
        seen.add(group);
        files.set(group, (files.get(group) ?? 0) + dt);
      }
    }
  }
  // Both runs (warm-up and measured) are in the profile.
  const msgs = file ? Number(opt("messages", "0")) : 2 * messageCount();
  const pct = (x) =>
    ((100 * x) / total).toFixed(1).padStart(5) + "%" +
    (msgs > 0 ? (x / msgs).toFixed(2).padStart(8) + " µs/msg" : "");
  console.log(
    `${path}\nbusy samples: ${
      (total / 1000).toFixed(0)
    } ms\n\nself time by function:`,
  );
  for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 30)) {
    console.log(`  ${pct(v)}  ${k}`);
  }
  console.log("\nself time by file (native frames by name):");
  for (const [k, v] of [...selfFile].sort((a, b) => b[1] - a[1]).slice(0, 25)) {
    console.log(`  ${pct(v)}  ${k}`);
  }
  console.log("\ninclusive time by function (project and npm code):");
  for (const [k, v] of [...incl].sort((a, b) => b[1] - a[1]).slice(0, 40)) {
    console.log(`  ${pct(v)}  ${k}`);
  }
  console.log(
    "\ntime by file (inclusive: a sample counts for every file on its stack):",
  );
  for (const [k, v] of [...files].sort((a, b) => b[1] - a[1]).slice(0, 20)) {
    console.log(`  ${pct(v)}  ${k}`);
  }
}

summarize(file ?? (await profile()));
