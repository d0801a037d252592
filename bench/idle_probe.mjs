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
// then after a full GC (RSS, JS heap in use, memory outside the heap), and
// on Linux where the RSS after that GC grew, from /proc/<pid>/smaps:
// `file` (pages of the runtime's executable and libraries, shared with
// every process that maps them: on Node 24 about 4.5 MB of the executable
// the first time an optimizing compiler runs), `brk` (the main thread's
// malloc heap), `arenas` (anonymous mappings on a 64 MiB boundary: other
// threads' malloc arenas, e.g. the compiler threads'), `other` (the rest
// of the anonymous memory: the JS heap's pages, large allocations).
// Measure in a fresh process that loads nothing after its baseline: a
// script that spawns its own load (node:child_process loaded after the
// baseline) and skips the warm-up charges the runtime's one-off growth to
// the sessions (a bare Bun.listen measured that way showed 9.5 KB per
// session; measured here, 3.7–3.9 whatever its socket options).
// Not a benchmark run: one server, no other load; never two at once.
//
// Options, before the runtime:
//
// `--warm N`: N idle sessions opened and closed before the baseline, so
// that what opening sessions costs once (code the runtime compiles, its
// heap and its threads' memory growing) is not counted per session; what
// is left is what each idle session keeps.
// `--again`: then a second set, once the first closed, from a new baseline
// (the bench's "again": memory_part.mjs).
// `--sessions N`: N idle sessions per set instead of the bench's 1,000 (a
// cost paid once weighs 1/N on each session).
// `--flag F` (repeatable): a flag for the runtime (Node and Bun: before the
// script; Deno: after `run`), e.g. `--flag --no-maglev`.
//
//   node bench/idle_probe.mjs --warm 1000 node24 bench/server.mjs smtpd
//   node bench/idle_probe.mjs --again --sessions 3000 node24 bench/floor.mjs
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import process from "node:process";
import { lineChannel, sleep } from "./common.mjs";
import { BIN, root } from "./launch.mjs";
import { holdIdle, warmUpClient } from "./load_gen.mjs";
import { IDLE_CONNECTIONS } from "./memory_part.mjs";

const argv = process.argv.slice(2);
let warm = 0;
let again = false;
let sessions = IDLE_CONNECTIONS;
const flags = [];
for (;;) {
  if (argv[0] === "--warm") warm = Number(argv.splice(0, 2)[1]);
  else if (argv[0] === "--sessions") sessions = Number(argv.splice(0, 2)[1]);
  else if (argv[0] === "--flag") flags.push(argv.splice(0, 2)[1]);
  else if (argv[0] === "--again") again = Boolean(argv.shift());
  else break;
}
const [rt, script, ...args] = argv;
const bin = BIN[rt];
if (!bin || !script || !(sessions > 0) || !(warm >= 0)) {
  console.error(
    "usage: node bench/idle_probe.mjs [--warm N] [--again] [--sessions N] [--flag F]... <runtime> <script> [args]",
  );
  process.exit(2);
}
/** Each runtime's flag for a full GC (Bun has Bun.gc). */
const gcFlags = rt === "deno"
  ? ["run", "-A", "--v8-flags=--expose-gc", ...flags]
  : rt === "bun"
  ? flags
  : ["--expose-gc", ...flags];
const child = spawn(bin, [...gcFlags, script, ...args], {
  cwd: root,
  stdio: ["pipe", "pipe", "inherit"],
});
const { nextLine, ask } = lineChannel(child);

/**
 * The process's resident memory by kind, in KB (see the head of this
 * file), from /proc/<pid>/smaps; null where there is none.
 */
function residentByKind() {
  let text;
  try {
    text = readFileSync(`/proc/${child.pid}/smaps`, "utf8");
  } catch {
    return null;
  }
  const kb = { file: 0, brk: 0, arenas: 0, other: 0 };
  let kind = "other";
  for (const line of text.split("\n")) {
    const head = /^([0-9a-f]+)-[0-9a-f]+ \S+ \S+ \S+ (\d+)\s*(.*)$/.exec(line);
    if (head) {
      const [, start, inode, name] = head;
      kind = inode !== "0"
        ? "file"
        : name === "[heap]"
        ? "brk"
        : name === "" && BigInt(`0x${start}`) % (64n << 20n) === 0n
        ? "arenas"
        : "other";
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) kb[kind] += Number(rss[1]);
  }
  return kb;
}

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
const per = (bytes) => (bytes / 1024 / sessions).toFixed(2);
for (const set of again ? ["first", "again"] : ["first"]) {
  const before = await ask("gc");
  const base = await ask("stats");
  const kindsBefore = residentByKind();
  const held = await holdIdle(port, sessions);
  await sleep(1000);
  const withIdle = await ask("stats");
  const after = await ask("gc");
  const kindsAfter = residentByKind();
  const where = kindsBefore && kindsAfter
    ? `; RSS after the GC by kind (KB per session): ${
      Object.keys(kindsAfter).map((k) =>
        `${k} ${per((kindsAfter[k] - kindsBefore[k]) * 1024)}`
      ).join(", ")
    }`
    : "";
  console.log(
    `${rt} ${flags.length > 0 ? `${flags.join(" ")} ` : ""}${
      [script, ...args].join(" ")
    }${warm > 0 ? ` (after ${warm} idle sessions opened and closed)` : ""}${
      again ? `, ${set} set` : ""
    }: ${held.ok ? "" : `(idle sessions: ${held.error}) `}${
      per(withIdle.rss - base.rss)
    } KB per idle session (${sessions}); after a full GC ${
      per(after.rss - before.rss)
    } RSS, ${per(after.heapUsed - before.heapUsed)} JS heap, ${
      per(after.external - before.external)
    } outside it${where}`,
  );
  await held.release();
  if (set === "first" && again) await sleep(1000);
}
child.stdin.end();
