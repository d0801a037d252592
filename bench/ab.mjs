// A paired A/B of two built trees' smtpd servers under one workload: is
// tree B cheaper than tree A per message? Not the goal report (that is
// run.mjs's): no floors, no peers, one runtime, one workload.
//
//   node bench/ab.mjs --a DIR --b DIR [--runtime bun|deno|node20|node24]
//     [--workload W1|W4|W2] [--rounds N] [--warm N] [--msgs N] [--no-pin]
//
// Each tree's `bench/server.mjs smtpd` runs on the runtime (its dist/ on
// Node and Bun, its mod.ts on Deno: bench/launch.mjs), both processes at
// once, every thread pinned to one CPU and smtp-source to another
// (bench/placement.mjs; `--no-pin`: neither). Warm-up: `--warm` batches
// of `--msgs` messages to each, taken in turn. Then `--rounds` rounds of
// four measured batches, A B B A in odd rounds and B A A B in even ones:
// the server measured first in a pair came out some 5 % cheaper on Bun,
// whichever it was, so each round gives both servers each place once.
// CPU per message from /proc/<pid>/task/*/sched (all threads) and the
// main thread's alone. Prints every batch, then per round B ÷ A (the sum
// of its two B batches over its two A batches) and their median
// [min–max], and the machine's other load while it ran.
import process from "node:process";
import { AB_USAGE, abArgs } from "./ab_flags.mjs";
import {
  log,
  Noise,
  schedCpuUs,
  ServerChild,
  spread,
  threadCpuUs,
} from "./common.mjs";
import { fmt, loadLine, ms } from "./format.mjs";
import { scriptArgv } from "./launch.mjs";
import { runLoad } from "./load_gen.mjs";
import { pinServer, PLACEMENT } from "./placement.mjs";
import { WORKLOADS } from "./workloads.mjs";

const { options: o, problem } = abArgs(process.argv.slice(2));
if (problem !== undefined) {
  console.error(`${problem}\n${AB_USAGE}`);
  process.exit(2);
}
const w = { ...WORKLOADS[o.workload], messages: o.msgs };
const pinned = o.pin && PLACEMENT.pinned;

/** Starts tree `dir`'s smtpd server as `label`; resolves it with its port. */
async function start(label, dir) {
  const [cmd, ...args] = scriptArgv(o.runtime, "bench/server.mjs", ["smtpd"]);
  const s = new ServerChild(cmd, args, dir);
  const line = await s.nextLine(60_000);
  const port = Number(/^READY (\d+)/.exec(line ?? "")?.[1]);
  if (!port) {
    await s.stop();
    throw new Error(`${label} (${dir}) did not start: ${line} ${s.stderr}`);
  }
  if (o.pin && !pinServer(s.pid)) throw new Error(`could not pin ${label}`);
  log(`${label}: ${dir} pid ${s.pid} ${line}`);
  return { label, s, port, all: [], main: [] };
}

/** One batch of the load against `srv`: µs per message, all threads and main. */
async function batch(srv) {
  const a = schedCpuUs(srv.s.pid);
  const m = threadCpuUs(srv.s.pid);
  const r = await runLoad(w, srv.port, { pin: pinned });
  if (!r.ok) throw new Error(`${srv.label}: load failed: ${r.error}`);
  return {
    all: (schedCpuUs(srv.s.pid) - a) / o.msgs,
    main: (threadCpuUs(srv.s.pid) - m) / o.msgs,
    ms: r.ms,
  };
}

const noise = new Noise();
const servers = [];
try {
  servers.push(await start("A", o.a), await start("B", o.b));
  const [A, B] = servers;
  console.log(
    `${o.runtime} ${o.workload} (${o.msgs} msgs per batch), ${o.warm} warm-up ` +
      `and ${o.rounds}×2 measured batches per server; ${
        pinned
          ? `servers on CPU ${PLACEMENT.server}, smtp-source on CPU ${PLACEMENT.load}`
          : `not pinned (${o.pin ? PLACEMENT.why : "--no-pin"})`
      }\nA ${o.a}\nB ${o.b}`,
  );
  for (let i = 0; i < o.warm; i++) {
    for (const srv of i % 2 ? [B, A] : [A, B]) {
      const r = await batch(srv);
      log(`warm-up ${i + 1} ${srv.label}: ${fmt(r.all, 1)} µs/msg`);
    }
  }
  const rounds = [];
  for (let i = 0; i < o.rounds; i++) {
    const order = i % 2 ? [B, A, A, B] : [A, B, B, A];
    const sum = { A: { all: 0, main: 0 }, B: { all: 0, main: 0 } };
    for (const srv of order) {
      const r = await batch(srv);
      sum[srv.label].all += r.all;
      sum[srv.label].main += r.main;
      console.log(
        `round ${i + 1} ${srv.label}: ${fmt(r.all, 1)} µs/msg all threads, ` +
          `${fmt(r.main, 1)} main thread, ${fmt(r.ms)} ms`,
      );
    }
    rounds.push({
      all: sum.B.all / sum.A.all,
      main: sum.B.main / sum.A.main,
    });
  }
  console.log(
    `B ÷ A per round, all threads: ${
      rounds.map((r) => fmt(r.all, 3)).join(" ")
    }; main thread: ${rounds.map((r) => fmt(r.main, 3)).join(" ")}`,
  );
  console.log(
    `B ÷ A median [min–max]: all threads ${
      ms(spread(rounds.map((r) => r.all)), 3)
    }, main thread ${ms(spread(rounds.map((r) => r.main)), 3)}`,
  );
} catch (e) {
  console.error(String(e?.stack ?? e));
  process.exitCode = 1;
} finally {
  for (const srv of servers) await srv.s.stop();
  console.log(loadLine(noise.stop()));
}
