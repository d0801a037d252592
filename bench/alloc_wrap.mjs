// Runs a bench server script (bench/server.mjs, bench/floor.mjs, ...) with
// V8's heap figures added to each JSON line its control channel answers
// (bench/control.mjs): `alloc` (total bytes allocated so far), `used`
// (heap in use), `physical` (heap memory held) and `spaces` (each space's
// memory held). With PROF=<file> in the environment, V8's sampling heap
// profiler runs from the second answer to the third (bench/alloc_probe.mjs
// asks them around opening the idle sessions) and <file> gets where the
// bytes were allocated, per function and per nearest frame of smtpd's own
// code (src/, runtimes/), divided by SESSIONS (default 1000). PROF_LIVE=1:
// only what was still alive at the end (what the sessions keep).
//
//   deno run -A --v8-flags=--expose-gc bench/alloc_wrap.mjs bench/server.mjs smtpd
//   node --expose-gc bench/alloc_wrap.mjs bench/floor.mjs
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import process from "node:process";
import v8 from "node:v8";

const script = process.argv.splice(2, 1)[0];
const prof = process.env.PROF;
const live = process.env.PROF_LIVE === "1";
const per = Number(process.env.SESSIONS ?? 1000);
const session = prof ? new Session() : null;
session?.connect();

/** Bytes per session by key, the largest first, as lines. */
function table(m) {
  return [...m].sort((a, b) => b[1] - a[1]).slice(0, 40).map(([k, v]) =>
    `${(v / per).toFixed(0).padStart(7)} B  ${k}`
  ).join("\n");
}

/** Writes the sampling profile, per function and per nearest smtpd frame. */
function dump(profile) {
  const self = new Map();
  const ours = new Map();
  const walk = (node, nearest) => {
    const f = node.callFrame;
    const url = f.url.replace(/^.*\/(src|runtimes|bench)\//, "$1/");
    const key = `${f.functionName || "(anonymous)"} ${url}:${f.lineNumber + 1}`;
    const mine = /^(src|runtimes)\//.test(url) ? key : nearest;
    if (node.selfSize > 0) {
      self.set(key, (self.get(key) ?? 0) + node.selfSize);
      ours.set(mine, (ours.get(mine) ?? 0) + node.selfSize);
    }
    for (const child of node.children) walk(child, mine);
  };
  walk(profile.head, "(no frame of smtpd's)");
  writeFileSync(
    prof,
    `${live ? "alive at the end" : "allocated"}, per session, ` +
      `by function:\n${table(self)}\n\nby nearest frame of smtpd's own code:\n${
        table(ours)
      }\n`,
  );
}

let answers = 0;
const write = process.stdout.write.bind(process.stdout);
process.stdout.write = (text, ...rest) => {
  if (typeof text === "string" && text.startsWith("{")) {
    answers++;
    const h = v8.getHeapStatistics();
    const o = JSON.parse(text);
    o.alloc = h.total_allocated_bytes;
    o.used = h.used_heap_size;
    o.physical = h.total_physical_size;
    o.spaces = Object.fromEntries(
      v8.getHeapSpaceStatistics().map((s) => [
        s.space_name.replace(/_space$/, ""),
        s.physical_space_size,
      ]),
    );
    text = JSON.stringify(o) + "\n";
    if (session !== null && answers === 2) {
      session.post("HeapProfiler.startSampling", {
        samplingInterval: 32,
        includeObjectsCollectedByMajorGC: !live,
        includeObjectsCollectedByMinorGC: !live,
      });
    }
    if (session !== null && answers === 3) {
      session.post("HeapProfiler.stopSampling", (_e, r) => dump(r.profile));
    }
  }
  return write(text, ...rest);
};
await import(new URL(`../${script}`, import.meta.url).href);
