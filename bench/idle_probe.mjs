// The memory bench's idle measurement (memory_part.mjs's idleOnce) for any
// one script that speaks the control channel (bench/control.mjs): a server
// variant, a trimmed shim, a floor with one more feature. One fresh
// process, ~20 s, instead of the whole memory part:
//
//   node bench/idle_probe.mjs <runtime> <script> [script args...]
//   node bench/idle_probe.mjs bun bench/server.mjs smtpd --lib src
//   node bench/idle_probe.mjs deno bench/floor.mjs
//
// Prints the KB per idle session as the bench reports them: RSS as it is,
// then after a full GC (RSS, JS heap in use, memory outside the heap).
// Measure in a fresh process that loads nothing after its baseline: a
// script that spawns its own load (node:child_process loaded after the
// baseline) and skips the warm-up charges the runtime's one-off growth to
// the sessions (a bare Bun.listen measured that way showed 9.5 KB per
// session; measured here, 3.7–3.9 whatever its socket options).
// Not a benchmark run: one server, no other load; never two at once.
//
// `--warm N` (before the runtime): N idle sessions opened and closed
// before the baseline, so that what opening sessions costs once (code the
// runtime compiles, its heap and its threads' memory growing) is not
// counted per session; what is left is what each idle session keeps:
//
//   node bench/idle_probe.mjs --warm 1000 node24 bench/server.mjs smtpd
import { spawn } from "node:child_process";
import process from "node:process";
import { lineChannel, sleep } from "./common.mjs";
import { BIN, root } from "./launch.mjs";
import { holdIdle, warmUpClient } from "./load_gen.mjs";
import { IDLE_CONNECTIONS } from "./memory_part.mjs";

const argv = process.argv.slice(2);
const warmAt = argv.indexOf("--warm");
const warm = warmAt === 0 ? Number(argv.splice(0, 2)[1]) : 0;
const [rt, script, ...args] = argv;
const bin = BIN[rt];
if (!bin || !script) {
  console.error(
    "usage: node bench/idle_probe.mjs [--warm N] <runtime> <script> [args]",
  );
  process.exit(2);
}
/** Each runtime's flag for a full GC (Bun has Bun.gc). */
const gcFlags = rt === "deno"
  ? ["run", "-A", "--v8-flags=--expose-gc"]
  : rt === "bun"
  ? []
  : ["--expose-gc"];
const child = spawn(bin, [...gcFlags, script, ...args], {
  cwd: root,
  stdio: ["pipe", "pipe", "inherit"],
});
const { nextLine, ask } = lineChannel(child);

const port = Number((await nextLine()).split(" ")[1]);
await sleep(1000);
await warmUpClient(port);
await sleep(500);
if (warm > 0) {
  const warming = await holdIdle(port, warm);
  await sleep(1000);
  await warming.release();
  await sleep(1500);
}
const before = await ask("gc");
const base = await ask("stats");
const held = await holdIdle(port, IDLE_CONNECTIONS);
await sleep(1000);
const withIdle = await ask("stats");
const after = await ask("gc");
const per = (bytes) => (bytes / 1024 / IDLE_CONNECTIONS).toFixed(2);
console.log(
  `${rt} ${[script, ...args].join(" ")}${
    warm > 0 ? ` (after ${warm} idle sessions opened and closed)` : ""
  }: ${held.ok ? "" : `(idle sessions: ${held.error}) `}${
    per(withIdle.rss - base.rss)
  } KB per idle session; after a full GC ${per(after.rss - before.rss)} RSS, ${
    per(after.heapUsed - before.heapUsed)
  } JS heap, ${per(after.external - before.external)} outside it`,
);
await held.release();
child.stdin.end();
