// run.mjs's load part: each workload against every server, in rounds
// (fresh server processes per workload, each warmed up to steady state, the
// servers alternating A B C / C B A; on W1 and W4 each server process
// pinned to one CPU and the load generator to another:
// bench/placement.mjs), and the
// per-server and per-runtime figures taken from them.
import {
  log,
  machineBusyTicks,
  Noise,
  ownTicks,
  reapedChildTicks,
  spread,
  threadsCpuUs,
  threadsDelta,
} from "./common.mjs";
import { fmtLoad } from "./format.mjs";
import { INTERLEAVE, RUNS, RUNTIME_NAMES } from "./flags.mjs";
import { ehloKeywords, runLoad } from "./load_gen.mjs";
import {
  cpuDelta,
  REUSE_FLOOR_NOTE,
  serverList,
  settle,
  startAll,
} from "./server_proc.mjs";
import {
  compilingUsPerMsg,
  perUnit,
  REWARM,
  sized,
  warmedUp,
  warmupLimits,
  WORKLOADS,
} from "./workloads.mjs";
import { HAVE_POSTFIX } from "./launch.mjs";
import { pinServer, PLACEMENT } from "./placement.mjs";

/**
 * One workload, or a DATA and a BDAT workload together (workloadPlan):
 * fresh server processes (for W1 and W4, each pinned to the server's CPU
 * once it listens, and the load generator run on another:
 * bench/placement.mjs), each warmed up
 * to steady state (batches of one
 * run's load until its CPU per message stops falling: WARMUP, warmedUp,
 * warmupLimits — W2 at least 20,000 connections, smtp-server one batch;
 * discarded, but reported), then RUNS rounds, the same load for every
 * server. In each round every runtime's group (smtp-server, smtpd, the
 * floors, smtp-sink) runs back to back, in the order A B C on even rounds
 * and C B A on odd ones; the order of the groups rotates every round. smtp-sink thus runs once per group, and the
 * ratios to it pair each run with the smtp-sink run of the same group.
 * With two workloads, each server runs both back to back on its turn, DATA
 * then BDAT on even rounds and BDAT then DATA on odd ones, so that a BDAT ÷
 * DATA ratio pairs two runs of one server process seconds apart; a server
 * without CHUNKING runs only the DATA one. `--interleave K` (one workload):
 * each server's round in K sub-batches taken in turn (interleavedRound).
 */
export async function benchWorkloads(names) {
  const ws = [];
  const results = [];
  for (const name of names) {
    const w = sized(WORKLOADS[name]);
    if (w.tool === "source" && !HAVE_POSTFIX) {
      log(`${name}: skipped (no smtp-source)`);
      results.push({
        name,
        w,
        rows: [],
        ratios: [],
        skipped: ["no smtp-source"],
      });
    } else ws.push({ name, w, skipped: [] });
  }
  if (ws.length === 0) return results;
  for (const { name, w } of ws) {
    log(
      `\n${name}: ${w.desc}: ${w.messages} messages of ${w.size} B` +
        ` per run, every server (warm-up: batches of that size until the CPU per message stops falling)` +
        (ws.length > 1
          ? `; run together with ${
            ws.filter((y) => y.name !== name).map((y) => y.name).join(", ")
          }`
          : ""),
    );
  }
  const noise = new Noise();
  let servers = await startAll(serverList());
  // Pinned where the workload says so (W1, W4: bench/workloads.mjs).
  const pin = PLACEMENT.pinned && ws.every((x) => x.w.pin);
  log(
    pin
      ? `  placement: each server process pinned to CPU ${PLACEMENT.server}, the load generator to CPU ${PLACEMENT.load}`
      : "  placement: left to the scheduler",
  );
  for (const s of pin ? servers : []) {
    if (!pinServer(s.pid)) {
      log(`  ${s.name}: could not pin it (taskset failed)`);
    }
  }
  /** The servers each workload runs on (BDAT: those offering CHUNKING). */
  const runsOn = new Map();
  for (const x of ws) {
    // The runtime floors are for scale under smtp-source's loads only.
    const all = new Set(
      servers.filter((s) =>
        !s.kind.startsWith("floor") || x.w.tool === "source"
      ),
    );
    if (x.w.tool !== "bdat") {
      runsOn.set(x.name, all);
      continue;
    }
    const offer = new Set();
    for (const s of all) {
      if ((await ehloKeywords(s.port)).includes("CHUNKING")) offer.add(s);
      else {
        const line = `${s.name}: skipped, its EHLO reply has no CHUNKING`;
        log(`  ${x.name}: ${line}`);
        x.skipped.push(line);
      }
    }
    runsOn.set(x.name, offer);
  }
  const used = servers.filter((s) => ws.some((x) => runsOn.get(x.name).has(s)));
  for (const s of servers) if (!used.includes(s)) await s.stop();
  servers = used;
  const rows = new Map(
    ws.map((x) => [
      x.name,
      new Map(
        servers.filter((s) => runsOn.get(x.name).has(s)).map((s) => [s.name, {
          server: s.kind,
          runtime: s.runtime,
          runs: [],
          warmup: [],
          warmupCompiling: [],
          errors: [],
        }]),
      ),
    ]),
  );
  const sink = servers.find((s) => s.kind === "smtp-sink");
  const runtimes = [...new Set(servers.map((s) => s.runtime))].filter((r) =>
    r !== null
  );
  const groups = runtimes.length > 0
    ? runtimes.map((rt) => ({
      rt,
      // smtp-server first, so that it never stands between smtpd and the
      // floors: its runs are the long ones (W2: about 12 s against 0.3–0.6
      // s), and each ratio to a floor pairs runs about a second apart.
      seq: [
        ...servers.filter((s) => s.runtime === rt && s.kind === "smtp-server"),
        ...servers.filter((s) => s.runtime === rt && s.kind !== "smtp-server"),
        ...(sink ? [sink] : []),
      ],
    }))
    : sink
    ? [{ rt: null, seq: [sink] }]
    : [];
  try {
    // Warm-up: each server process on its own, batch after batch, until
    // every workload it runs has stopped getting cheaper.
    for (const s of servers) {
      const mine = ws.filter((x) => runsOn.get(x.name).has(s));
      for (let batch = 0;; batch++) {
        for (const x of batch % 2 === 1 ? [...mine].reverse() : mine) {
          const row = rows.get(x.name).get(s.name);
          const run = await measure(s, x.w, 0, null, pin);
          const tag = `warm-up ${batch + 1}` +
            (ws.length > 1 ? ` ${x.name}` : "");
          if (!run.ok) {
            row.errors.push(`${tag}: ${run.error}`);
            row.warmup.push(NaN);
            row.warmupCompiling.push(NaN);
            log(`  ${s.name.padEnd(20)} ${tag}: FAILED ${run.error}`);
            continue;
          }
          row.warmup.push(run.cpuUsPerMsg);
          row.warmupCompiling.push(compilingUsPerMsg(run));
          logRun(s, x.w, run, tag, null);
        }
        const done = mine.every((x) => {
          const row = rows.get(x.name).get(s.name);
          const xs = row.warmup;
          return xs.some((v) => !Number.isFinite(v)) ||
            warmedUp(xs, warmupLimits(x.w, s.kind), row.warmupCompiling);
        });
        if (done) break;
      }
    }
    // Sub-batches per server and round (`--interleave K`), with one
    // workload only.
    const k = ws.length === 1 ? INTERLEAVE : 1;
    if (k > 1) {
      log(
        `  rounds: each server's ${ws[0].w.messages} in ${k} sub-batches of ${
          Math.floor(ws[0].w.messages / k)
        }, taken in turn within each group (A B C C B A …; smtp-server in one go at its end)`,
      );
    }
    for (let round = 1; round <= RUNS; round++) {
      const order = round % 2 === 1 ? [...ws].reverse() : ws;
      for (let g = 0; g < groups.length; g++) {
        const group = groups[(g + round) % groups.length];
        const seq = round % 2 === 1 ? [...group.seq].reverse() : group.seq;
        if (k > 1) {
          await interleavedRound(ws[0], seq, k, round, group.rt, rows, pin);
          continue;
        }
        for (const s of seq) {
          for (const x of order) {
            if (!runsOn.get(x.name).has(s)) continue;
            const pre = await rewarm(s, x, round, rows, pin);
            const run = await measure(s, x.w, round, group.rt, pin);
            if (run.ok) run.rewarm = pre;
            const tag = `run ${round}` + (ws.length > 1 ? ` ${x.name}` : "");
            record(s, x, run, tag, group.rt, rows);
          }
        }
      }
    }
    for (const x of ws) {
      for (const s of servers) {
        const row = rows.get(x.name).get(s.name);
        if (row) row.peakRssKb = s.mem().hwm;
      }
    }
  } finally {
    for (const s of servers) await s.stop();
  }
  const load = noise.stop();
  log(
    `  load average ${fmtLoad(load.before)} before, max ${
      load.duringMax.toFixed(2)
    } during, ${fmtLoad(load.after)} after; other work ${
      load.otherCores.toFixed(2)
    } cores`,
  );
  const together = ws.length > 1 ? ws.map((x) => x.name) : null;
  const interleave = ws.length === 1 ? INTERLEAVE : 1;
  for (const x of ws) {
    results.push({
      name: x.name,
      w: x.w,
      load,
      skipped: x.skipped,
      together,
      pinned: pin,
      interleave,
      ...summarize(x.w, [...rows.get(x.name).values()]),
    });
  }
  return results;
}

/** The progress line of one run. */
function logRun(s, w, run, tag, group) {
  log(
    `  ${s.name.padEnd(20)} ${tag.padEnd(12)}: ${
      run.msgPerS.toFixed(0).padStart(6)
    } msg/s ${
      perUnit(w, run.cpuUsPerMsg).toFixed(1).padStart(8)
    } µs CPU/${w.unit} ${(run.cpuUs / 1e6).toFixed(2)} s CPU, load generator ${
      perUnit(w, run.loadUsPerMsg).toFixed(1)
    } µs/${w.unit}, other work ${run.otherCores.toFixed(2)} cores` +
      (s.kind === "smtp-sink" && group ? ` (with ${group})` : ""),
  );
}

/**
 * One run of workload `w` (`w.messages` messages, every server) against
 * server `s` (`pin`: the load generator on its CPU): CPU before, the load, a pause until the server's CPU stops
 * moving, CPU after.
 */
async function measure(s, w, round, group, pin) {
  const messages = w.messages;
  const last = lastCpu.get(s);
  const busy0 = machineBusyTicks();
  const own0 = ownTicks();
  const t0 = performance.now();
  const a = await s.cpu();
  const threads0 = threadsCpuUs(s.pid);
  const load0 = reapedChildTicks();
  const r = await runLoad(w, s.port, { pin });
  // The load generator's CPU (10 ms ticks): whether it differs by server
  // hints at reads and wakeups coalescing differently (the servers, still
  // running, are not among the reaped children).
  const loadUs = (reapedChildTicks() - load0) * 1e4;
  const settleMs = await settle(s);
  const b = await s.cpu();
  const threads = threadsDelta(threads0, threadsCpuUs(s.pid), messages);
  lastCpu.set(s, b);
  if (!r.ok) return { round, group, ok: false, error: r.error };
  const cpu = cpuDelta(a, b);
  // The machine's busy time meanwhile minus this process tree's (the load
  // generator, reaped) and the server's: other work, in cores.
  const seconds = (performance.now() - t0) / 1000;
  const otherCores = Math.max(
    0,
    ((machineBusyTicks() - busy0 - ownTicks() + own0) / 100 -
      (b.sched - a.sched) / 1e6) / seconds,
  );
  return {
    round,
    group,
    ok: true,
    ms: r.ms,
    cpuUs: cpu.us,
    msgPerS: messages / (r.ms / 1000),
    cpuUsPerMsg: cpu.us / messages,
    userUsPerMsg: cpu.userUs / messages,
    // The main thread's share, and each thread's by name (GC helpers and
    // JIT compilers apart from the main thread's own work).
    mainUsPerMsg: threads.main,
    threadsUsPerMsg: threads.byName,
    loadUsPerMsg: loadUs / messages,
    otherCores,
    messages,
    seconds,
    settleMs,
    // The server's CPU between its previous reading and this run's start
    // (other servers' runs meanwhile): work left over from its last run
    // that the settle pause did not wait for, plus the stats requests.
    gapUs: last ? cpuDelta(last, a).us : NaN,
  };
}

/**
 * The re-warm before measured run `round` of `s` under workload `x` (those
 * with `rewarm`: W2; not smtp-server, whose warm-up is one batch):
 * unmeasured batches of the run's load until one costs at most
 * REWARM.within above the level the server's warm-up ended at (the median
 * of its last three batches), at most REWARM.max. A Bun server whose
 * code has not run for a minute or more drops it at its next full
 * collection and recompiles it from the interpreter up, over about five
 * batches (workloads.mjs, REWARM).
 * Resolves each batch's CPU per message (kept in the run's `rewarm`).
 */
async function rewarm(s, x, round, rows, pin) {
  if (!x.w.rewarm || s.kind === "smtp-server") return [];
  const row = rows.get(x.name).get(s.name);
  const tail = row.warmup.slice(-3).filter(Number.isFinite);
  if (tail.length === 0) return [];
  const level = spread(tail).median;
  const xs = [];
  for (let i = 0; i < REWARM.max; i++) {
    const run = await measure(s, x.w, round, null, pin);
    if (!run.ok) break;
    xs.push(run.cpuUsPerMsg);
    logRun(s, x.w, run, `re-warm ${round}.${i + 1}`, null);
    if (run.cpuUsPerMsg <= level * (1 + REWARM.within)) break;
  }
  return xs;
}

/** Each server's CPU reading after its last run (measure's `gapUs`). */
const lastCpu = new Map();

/**
 * One round of group `seq` with its load split into `k` sub-batches per
 * server, run in turn (A B C, C B A, A B C, …: the order flips every
 * sub-batch), so that the servers' runs of a round span the same stretch
 * of time; smtp-server, slow (W2: its 100 ms wait before each greeting),
 * runs its whole load in one go at its end of the group. Each server's
 * round is the sum of its sub-batches (CPU over connections), each
 * sub-batch kept in `parts`.
 */
async function interleavedRound(x, seq, k, round, group, rows, pin) {
  const side = seq.filter((s) => s.kind === "smtp-server");
  const core = seq.filter((s) => s.kind !== "smtp-server");
  const sideFirst = side.length > 0 && seq[0] === side[0];
  const tag = `run ${round}`;
  const whole = async (s) => {
    const run = await measure(s, x.w, round, group, pin);
    record(s, x, run, tag, group, rows);
  };
  if (sideFirst) { for (const s of side) await whole(s); }
  const pre = new Map();
  for (const s of core) pre.set(s, await rewarm(s, x, round, rows, pin));
  const sub = { ...x.w, messages: Math.floor(x.w.messages / k) };
  const parts = new Map(core.map((s) => [s, []]));
  for (let j = 0; j < k; j++) {
    for (const s of j % 2 === 1 ? [...core].reverse() : core) {
      parts.get(s).push(await measure(s, sub, round, group, pin));
    }
  }
  for (const s of core) {
    const run = sum(parts.get(s));
    if (run.ok) run.rewarm = pre.get(s);
    record(s, x, run, tag, group, rows);
  }
  if (!sideFirst) { for (const s of side) await whole(s); }
}

/** One server's round made of sub-batches `ps`: their totals, and each. */
function sum(ps) {
  const bad = ps.find((p) => !p.ok);
  if (bad) return bad;
  const total = (f) => ps.reduce((a, p) => a + f(p), 0);
  const messages = total((p) => p.messages);
  const ms = total((p) => p.ms);
  const seconds = total((p) => p.seconds);
  const cpuUs = total((p) => p.cpuUs);
  return {
    round: ps[0].round,
    group: ps[0].group,
    ok: true,
    ms,
    cpuUs,
    msgPerS: messages / (ms / 1000),
    cpuUsPerMsg: cpuUs / messages,
    userUsPerMsg: total((p) => p.userUsPerMsg * p.messages) / messages,
    mainUsPerMsg: total((p) => p.mainUsPerMsg * p.messages) / messages,
    threadsUsPerMsg: sumThreads(ps, messages),
    loadUsPerMsg: total((p) => p.loadUsPerMsg * p.messages) / messages,
    otherCores: total((p) => p.otherCores * p.seconds) / seconds,
    messages,
    seconds,
    settleMs: total((p) => p.settleMs),
    gapUs: total((p) => Number.isFinite(p.gapUs) ? p.gapUs : 0),
    parts: ps.map((p) => ({
      cpuUs: p.cpuUs,
      messages: p.messages,
      ms: p.ms,
      otherCores: p.otherCores,
      settleMs: p.settleMs,
      gapUs: p.gapUs,
    })),
  };
}

/** The sub-batches' CPU per message by thread name (see threadsDelta), over `messages`. */
function sumThreads(ps, messages) {
  /** @type {Record<string, number>} */
  const byName = {};
  for (const p of ps) {
    for (const [name, us] of Object.entries(p.threadsUsPerMsg)) {
      byName[name] = (byName[name] ?? 0) + us * p.messages;
    }
  }
  for (const k of Object.keys(byName)) {
    byName[k] = Math.round((byName[k] / messages) * 1000) / 1000;
  }
  return byName;
}

/** Records measured run `run` (or its failure) of `s` under workload `x`, and logs it as `tag`. */
function record(s, x, run, tag, group, rows) {
  const row = rows.get(x.name).get(s.name);
  if (!run.ok) {
    row.errors.push(`${tag}: ${run.error}`);
    row.runs.push({ round: run.round, group, ok: false });
    log(`  ${s.name.padEnd(20)} ${tag}: FAILED ${run.error}`);
    return;
  }
  row.runs.push(run);
  logRun(s, x.w, run, tag, group);
}

/** Per-server medians and spreads, and per-runtime ratios taken round by round. */
function summarize(w, rows) {
  const byKey = (server, runtime) =>
    rows.find((r) => r.server === server && r.runtime === runtime);
  const sink = byKey("smtp-sink", null);
  /** Ratios of `row`'s runs to `peer`'s run of the same round (and group). */
  const paired = (row, peer, field) => {
    if (!row || !peer) return null;
    const xs = [];
    for (const run of row.runs) {
      const p = peer.runs.find((x) =>
        x.round === run.round && (peer !== sink || x.group === run.group)
      );
      xs.push(run.ok && p?.ok ? run[field] / p[field] : NaN);
    }
    return spread(xs);
  };
  const serverRows = rows.map((row) => {
    const ok = row.runs.filter((r) => r.ok);
    return {
      server: row.server,
      runtime: row.runtime,
      okRuns: ok.length,
      runs: row.runs.length,
      cpuS: spread(ok.map((r) => r.cpuUs / 1e6)),
      cpu: spread(ok.map((r) => perUnit(w, r.cpuUsPerMsg))),
      user: spread(ok.map((r) => perUnit(w, r.userUsPerMsg))),
      msgPerS: spread(ok.map((r) => r.msgPerS)),
      // The load generator's CPU per unit while it talked to this server:
      // the mean over the measured rounds (each run's figure is counted in
      // 10 ms ticks, about 2 µs per message on W4's quick count).
      loadCpu: perUnit(
        w,
        ok.reduce((a, r) => a + r.loadUsPerMsg, 0) / ok.length,
      ),
      peakRssKb: row.peakRssKb,
      // CPU per unit of each warm-up batch, and the last batch ÷ the
      // measured median (about 1 when the warm-up reached steady state).
      warmup: row.warmup.map((v) => perUnit(w, v)),
      // The same batches' compiler-thread CPU per unit (Bun's JITWorker;
      // 0 where the runtime names no compiler thread: warmedUp()).
      warmupCompiling: row.warmupCompiling.map((v) => perUnit(w, v)),
      // Unmeasured batches before each measured run (`rewarm`: W2).
      rewarm: row.runs.map((r) => r.rewarm?.length ?? 0),
      warmupVsMeasured: row.warmup.length > 0
        ? perUnit(w, row.warmup[row.warmup.length - 1]) /
          spread(ok.map((r) => perUnit(w, r.cpuUsPerMsg))).median
        : NaN,
      errors: row.errors,
      raw: row.runs,
    };
  });
  const ratios = [];
  for (const rt of RUNTIME_NAMES) {
    const smtpd = byKey("smtpd", rt);
    if (!smtpd) continue;
    const peer = byKey("smtp-server", rt);
    const floor = byKey("floor", rt);
    const reuse = byKey("floor-reuse", rt);
    const contract = byKey("floor-contract", rt);
    ratios.push({
      runtime: rt,
      cpuVsFloor: paired(smtpd, floor, "cpuUsPerMsg"),
      cpuVsReuseFloor: paired(smtpd, reuse, "cpuUsPerMsg"),
      reuseFloorNote: REUSE_FLOOR_NOTE[rt] ?? null,
      cpuVsContractFloor: paired(smtpd, contract, "cpuUsPerMsg"),
      contractFloorVsFloor: paired(contract, floor, "cpuUsPerMsg"),
      floorVsSmtpServer: paired(floor, peer, "cpuUsPerMsg"),
      floorCpuVsSink: paired(floor, sink, "cpuUsPerMsg"),
      cpuVsSmtpServer: paired(smtpd, peer, "cpuUsPerMsg"),
      speedVsSmtpServer: paired(smtpd, peer, "msgPerS"),
      cpuVsSink: paired(smtpd, sink, "cpuUsPerMsg"),
      peerCpuVsSink: paired(peer, sink, "cpuUsPerMsg"),
    });
  }
  return { rows: serverRows, ratios };
}
