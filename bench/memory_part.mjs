// run.mjs's memory part: the bare runtime's RSS, then per server a fresh
// process's idle RSS and its RSS per idle session (without and after a
// full GC), and another fresh process's growth with one big message.
import { writeFileSync } from "node:fs";
import { log, Noise, sleep, spread } from "./common.mjs";
import { fmt, mb } from "./format.mjs";
import { BIG_RUNS, MEM_RUNS, RUNTIME_NAMES, RUNTIMES } from "./flags.mjs";
import { holdIdle, runClient, warmUpClient } from "./load_gen.mjs";
import { serverList, ServerProc, startAll } from "./server_proc.mjs";

/** Idle sessions held open to measure the memory of one. */
export const IDLE_CONNECTIONS = 1000;
/** The big message, in MB. */
export const BIG_MB = 100;

/** Resets VmHWM of `pid` to its current RSS (Linux 4.0+), true if it worked. */
function resetPeak(pid) {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

/** The memory bench's warm-up: 20 messages of 1 KB on one session. */
async function warmUpMemory(s, row) {
  const warm = await warmUpClient(s.port);
  if (!warm.ok) row.errors.push(`warm-up: ${warm.error}`);
}

/**
 * One fresh server process, started with a full GC exposed, through the
 * idle measurements: its RSS 1 s after it listens; 20 warm-up messages and
 * a full GC (the baseline then holds no warm-up garbage); RSS with
 * IDLE_CONNECTIONS sessions held open after EHLO, as it is (garbage and
 * the room the runtime grew its heap by included), then after a full GC
 * (what the sessions keep: RSS, JS heap in use, memory outside it); each
 * minus the baseline, ÷ IDLE_CONNECTIONS (idleSet). Then, once they
 * closed, a second set the same way ("again").
 */
async function idleOnce(kind, rt) {
  const [s] = await startAll([[kind, rt]], { gc: true });
  if (!s) return null;
  const row = { errors: [] };
  try {
    await sleep(1000);
    row.idleRssKb = s.mem().rss;
    await warmUpMemory(s, row);
    await sleep(500);
    const first = await idleSet(s);
    if (!first.gc) row.errors.push("no full GC on this runtime");
    row.beforeIdleKb = first.beforeKb;
    if (!first.ok) {
      row.errors.push(`idle sessions: ${first.error}`);
      return row;
    }
    row.withIdleKb = first.withKb;
    row.perIdleKb = first.perKb;
    row.retainedRssKb = first.retainedRssKb;
    row.retainedHeapKb = first.retainedHeapKb;
    row.retainedExternalKb = first.retainedExternalKb;
    // The same process through a second set, once the first has closed.
    // What the first set cost once (code the runtime compiled for the
    // session path, its compiler threads' and allocator's memory, heap
    // room) is in the new baseline, so this is what one more idle session
    // costs a server that has held as many before: the steady state, as
    // the CPU figures are taken after a warm-up (issue 23).
    await sleep(1000);
    const again = await idleSet(s);
    if (!again.ok) row.errors.push(`idle sessions again: ${again.error}`);
    row.perIdleAgainKb = again.perKb;
    row.retainedAgainKb = again.retainedRssKb;
  } finally {
    await s.stop();
  }
  return row;
}

/**
 * One set of IDLE_CONNECTIONS idle sessions on server `s`: a full GC (the
 * baseline), the sessions held open after EHLO, RSS per session as it is
 * (1 s after), then after another full GC (RSS, JS heap in use, memory
 * outside it), each minus the baseline ÷ IDLE_CONNECTIONS; the sessions
 * are closed before it returns. Without a full GC on the runtime (`gc`
 * false) only the figure as it is.
 */
async function idleSet(s) {
  const before = await s.gcMem();
  const set = { gc: before !== null, beforeKb: s.mem().rss };
  const h = await holdIdle(s.port, IDLE_CONNECTIONS);
  set.ok = h.ok;
  set.error = h.error;
  if (h.ok) {
    await sleep(1000);
    set.withKb = s.mem().rss;
    set.perKb = (set.withKb - set.beforeKb) / IDLE_CONNECTIONS;
    const after = before === null ? null : await s.gcMem();
    if (after !== null) {
      const per = (f) => (after[f] - before[f]) / 1024 / IDLE_CONNECTIONS;
      set.retainedRssKb = per("rss");
      set.retainedHeapKb = per("heapUsed");
      set.retainedExternalKb = per("external");
    }
  }
  await h.release();
  return set;
}

/**
 * One fresh server process through the big message (nothing else ran in
 * it but 20 warm-up messages): RSS before, peak RSS while one BIG_MB MB
 * message goes through (VmHWM, reset just before) and the growth; for the
 * BYOB server, the reader its hook got.
 */
async function bigOnce(kind, rt) {
  const [s] = await startAll([[kind, rt]]);
  if (!s) return null;
  const row = { errors: [] };
  try {
    await sleep(500);
    await warmUpMemory(s, row);
    await sleep(500);
    row.peakReset = resetPeak(s.pid);
    const before = s.mem();
    row.beforeBigKb = before.rss;
    const big = await runClient([
      "--port",
      String(s.port),
      "--big",
      String(BIG_MB),
    ]);
    await sleep(200);
    const after = s.mem();
    if (big.ok) {
      row.bigPeakKb = after.hwm;
      row.bigGrowthKb = row.peakReset ? after.hwm - before.rss : NaN;
      row.bigSeconds = big.ms / 1000;
    } else row.errors.push(`${BIG_MB} MB message: ${big.error}`);
    row.reader = (await s.notes()).reader;
  } finally {
    await s.stop();
  }
  return row;
}

/** The servers measured idle (the BYOB and CLI arms differ only in how a body is read). */
const IDLE_KINDS = ["smtpd", "smtp-server", "floor", "floor-reuse"];
/** The servers a memory goal compares: BIG_RUNS processes each through the big message. */
export const BIG_GOAL_KINDS = [
  "floor",
  "floor-reuse",
  "smtpd-cli",
  "smtpd-byob",
];

/**
 * The memory bench: the bare runtime's RSS; then for every server a fresh
 * process through the idle measurements (idleOnce: smtpd, smtp-server and
 * the floors) and another through the big message (bigOnce: those, smtpd
 * reading with a BYOB reader and smtpd's CLI delivering into a Maildir).
 * With MEM_RUNS > 1 every figure is the median over that many fresh
 * processes (servers interleaved), and the bare runtime's too; the big
 * message's figures of the servers the goals compare over BIG_RUNS.
 */
export async function benchMemory() {
  const noise = new Noise();
  const bare = {};
  log(`\nMemory`);
  for (const rt of RUNTIME_NAMES) {
    if (!RUNTIMES[rt].ok) continue;
    const xs = [];
    for (let rep = 0; rep < MEM_RUNS; rep++) {
      const b = new ServerProc("bare", rt);
      try {
        await b.start();
        await sleep(1000);
        xs.push(b.mem().rss);
      } catch (e) {
        log(`  bare@${rt}: ${e.message}`);
      } finally {
        await b.stop();
      }
    }
    bare[rt] = spread(xs).median;
    log(`  bare ${rt.padEnd(15)} RSS ${mb(bare[rt])} MB`);
  }
  // smtp-sink is left out: the goals compare smtpd with the runtime floors,
  // and smtp-sink stalls with 1,000 sessions held open.
  const specs = serverList("memory").filter(([k]) => k !== "smtp-sink");
  const samples = new Map(specs.map(([k, rt]) => [`${k}@${rt}`, []]));
  for (let rep = 0; rep < BIG_RUNS; rep++) {
    for (const [kind, rt] of specs) {
      if (rep >= MEM_RUNS && !BIG_GOAL_KINDS.includes(kind)) continue;
      const idle = IDLE_KINDS.includes(kind) && rep < MEM_RUNS
        ? await idleOnce(kind, rt)
        : null;
      const big = await bigOnce(kind, rt);
      if (!idle && !big) continue;
      const one = {
        ...idle,
        ...big,
        errors: [...idle?.errors ?? [], ...big?.errors ?? []],
      };
      samples.get(`${kind}@${rt}`).push(one);
      log(
        `  ${`${kind}@${rt}`.padEnd(20)} ` +
          (idle
            ? `idle RSS ${mb(one.idleRssKb)} MB, ${
              fmt(one.perIdleKb, 1)
            } KB per idle session (after a full GC ${
              fmt(one.retainedRssKb, 1)
            }; again ${fmt(one.perIdleAgainKb, 1)}, after a full GC ${
              fmt(one.retainedAgainKb, 1)
            }), `
            : "") +
          `+${mb(one.bigGrowthKb)} MB peak with ${BIG_MB} MB` +
          (one.reader ? ` (reader: ${one.reader})` : "") +
          (one.errors.length ? ` (${one.errors.join("; ")})` : ""),
      );
    }
  }
  const rows = [];
  for (const [kind, rt] of specs) {
    const xs = samples.get(`${kind}@${rt}`);
    if (xs.length === 0) continue;
    const row = { server: kind, runtime: rt, errors: [], spreads: {} };
    for (
      const f of [
        "idleRssKb",
        "perIdleKb",
        "retainedRssKb",
        "retainedHeapKb",
        "retainedExternalKb",
        "perIdleAgainKb",
        "retainedAgainKb",
        "beforeBigKb",
        "bigPeakKb",
        "bigGrowthKb",
        "bigSeconds",
      ]
    ) {
      row.spreads[f] = spread(xs.map((x) => x[f]));
      row[f] = row.spreads[f].median;
    }
    row.idle = IDLE_KINDS.includes(kind);
    row.reader = xs.map((x) => x.reader).find((r) => r !== undefined);
    row.idleVsBare = spread(xs.map((x) => x.idleRssKb - bare[rt]));
    row.errors = xs.flatMap((x) => x.errors);
    row.samples = xs;
    rows.push(row);
  }
  const load = noise.stop();
  return { bare, rows, load };
}
