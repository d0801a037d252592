// What opening an idle session allocates and keeps, in bytes (V8's own
// counts: deterministic, unlike RSS, so no need for a quiet machine): one
// server script under bench/alloc_wrap.mjs, 1000 idle sessions opened and
// closed once (warm-up; not with `--cold`), then 1000 more held; prints per session the bytes
// allocated while they opened, the heap they keep after a full GC, how
// much the heap's spaces grew (V8's young generation, `new`, grows with
// the bytes that survive its collections) and RSS. Deno and Node.
//
//   node bench/alloc_probe.mjs deno bench/server.mjs smtpd
//   node bench/alloc_probe.mjs deno bench/floor.mjs
//   PROF=/tmp/p.txt node bench/alloc_probe.mjs deno bench/server.mjs smtpd
//       # and where it was allocated (see alloc_wrap.mjs; PROF_LIVE=1: kept);
//       # the profiler itself takes memory: RSS is then no figure to quote
//
// Wrap it in the measuring lock as any measurement (`flock
// /tmp/smtpd-measure.lock node bench/alloc_probe.mjs ...`).
import { spawn } from "node:child_process";
import process from "node:process";
import { lineChannel, sleep } from "./common.mjs";
import { BIN, root } from "./launch.mjs";
import { holdIdle, warmUpClient } from "./load_gen.mjs";

const N = 1000;
const argv = process.argv.slice(2);
/** `--cold` (first): no warm-up, as bench/idle_probe.mjs measures by default. */
const cold = argv[0] === "--cold" ? argv.shift() !== undefined : false;
const [rt, script, ...args] = argv;
if (!BIN[rt] || !script || rt === "bun") {
  console.error(
    "usage: node bench/alloc_probe.mjs [--cold] <deno|node|node24> <script> [args]",
  );
  process.exit(2);
}
const flags = rt === "deno"
  ? ["run", "-A", "--v8-flags=--expose-gc"]
  : ["--expose-gc"];
const child = spawn(
  BIN[rt],
  [...flags, "bench/alloc_wrap.mjs", script, ...args],
  {
    cwd: root,
    stdio: ["pipe", "pipe", "inherit"],
    env: { ...process.env, SESSIONS: String(N) },
  },
);
const { nextLine, ask } = lineChannel(child);

const port = Number((await nextLine()).split(" ")[1]);
await warmUpClient(port);
let held;
if (!cold) {
  held = await holdIdle(port, N);
  await sleep(500);
  await held.release();
  await sleep(500);
}
await ask("gc"); // answer 1
const before = await ask("stats"); // 2: the profile starts
held = await holdIdle(port, N);
await sleep(1000);
const opened = await ask("stats"); // 3: the profile ends
const after = await ask("gc");
const kb = (bytes) => (bytes / 1024).toFixed(0);
const grew = Object.keys(opened.spaces)
  .filter((s) => opened.spaces[s] !== before.spaces[s])
  .map((s) => `${s} ${kb(opened.spaces[s] - before.spaces[s])}`)
  .join(", ");
console.log(
  `${rt} ${[script, ...args].join(" ")}${cold ? " (cold)" : ""}: ${
    held.ok ? "" : "(idle sessions: " + held.error + ") "
  }` +
    (typeof opened.alloc === "number"
      ? `${((opened.alloc - before.alloc) / N).toFixed(0)} B allocated`
      : "(bytes allocated not counted: Node's v8.getHeapStatistics() " +
        "has no total_allocated_bytes)") +
    " per session opened, " +
    `${((after.used - before.used) / N).toFixed(0)} B kept after a full GC; ` +
    `heap +${kb(opened.physical - before.physical)} KB (${
      grew || "no space grew"
    }), ` +
    `RSS +${((opened.rss - before.rss) / 1024 / N).toFixed(2)} KB per session`,
);
await held.release();
child.stdin.end();
