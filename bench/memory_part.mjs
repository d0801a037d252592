// run.mjs's memory part: the bare runtime's RSS, then per server a fresh
// process's idle RSS, its RSS per idle session (without and after a full
// GC) and its growth with one big message.
import { writeFileSync } from "node:fs";
import { log, Noise, sleep, spread } from "./common.mjs";
import { fmt, mb } from "./format.mjs";
import { MEM_RUNS, RUNTIME_NAMES, RUNTIMES } from "./flags.mjs";
import { holdIdle, runClient } from "./load_gen.mjs";
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
  const warm = await runClient([
    "--port",
    String(s.port),
    "--sessions",
    "1",
    "--messages",
    "20",
    "--size",
    "1024",
  ]);
  if (!warm.ok) row.errors.push(`warm-up: ${warm.error}`);
}

/** One fresh server process through the memory measurements. */
async function memoryOnce(kind, rt) {
  const [s] = await startAll([[kind, rt]]);
  if (!s) return null;
  const row = { errors: [] };
  try {
    await sleep(1000);
    row.idleRssKb = s.mem().rss;
    await warmUpMemory(s, row);
    await sleep(500);
    row.beforeIdleKb = s.mem().rss;
    const h = await holdIdle(s.port, IDLE_CONNECTIONS);
    if (h.ok) {
      await sleep(1000);
      row.withIdleKb = s.mem().rss;
      row.perIdleKb = (row.withIdleKb - row.beforeIdleKb) / IDLE_CONNECTIONS;
    } else row.errors.push(`idle sessions: ${h.error}`);
    await h.release();
    await sleep(1000);
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
  } finally {
    await s.stop();
  }
  return row;
}

/**
 * What 1,000 idle sessions keep after a full GC, in a fresh process started
 * with the GC exposed (its own, so that the collections do not touch the
 * figures of memoryOnce): 20 warm-up messages, a full GC, the sessions held
 * open after EHLO, a full GC again; the RSS and JS heap deltas ÷ sessions.
 * RSS without a GC (memoryOnce) also counts garbage not yet collected and
 * the room the runtime grew its heap by; this is what the sessions hold.
 */
async function retainedOnce(kind, rt) {
  const [s] = await startAll([[kind, rt]], { gc: true });
  if (!s) return null;
  const row = { errors: [] };
  try {
    await warmUpMemory(s, row);
    await sleep(500);
    const before = await s.gcMem();
    if (before === null) {
      row.errors.push("no full GC on this runtime");
      return row;
    }
    const h = await holdIdle(s.port, IDLE_CONNECTIONS);
    if (h.ok) {
      await sleep(1000);
      const after = await s.gcMem();
      if (after !== null) {
        row.rssKb = (after.rss - before.rss) / 1024 / IDLE_CONNECTIONS;
        row.heapKb = (after.heapUsed - before.heapUsed) / 1024 /
          IDLE_CONNECTIONS;
        row.externalKb = (after.external - before.external) / 1024 /
          IDLE_CONNECTIONS;
      }
    } else row.errors.push(`idle sessions: ${h.error}`);
    await h.release();
  } finally {
    await s.stop();
  }
  return row;
}

/**
 * The memory bench: the bare runtime's RSS; then for every server a fresh
 * process: its idle RSS (1 s after READY), 20 warm-up messages, the RSS
 * delta with IDLE_CONNECTIONS idle sessions held open (after EHLO), and
 * the peak RSS growth while one BIG_MB MB message goes through. With
 * MEM_RUNS > 1 every figure is the median over that many fresh processes
 * (servers interleaved), and the bare runtime's too.
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
  // smtp-sink is left out: the goals compare smtpd with smtp-server and the
  // bare runtime, and smtp-sink stalls with 1,000 sessions held open. The
  // runtime floor is in, for scale: what a receiver that keeps nothing
  // costs per idle session and lets the runtime grow by with a big message.
  const specs = serverList().filter(([k]) => k !== "smtp-sink");
  const samples = new Map(specs.map(([k, rt]) => [`${k}@${rt}`, []]));
  for (let rep = 0; rep < MEM_RUNS; rep++) {
    for (const [kind, rt] of specs) {
      const one = await memoryOnce(kind, rt);
      if (!one) continue;
      samples.get(`${kind}@${rt}`).push(one);
      log(
        `  ${`${kind}@${rt}`.padEnd(20)} idle RSS ${mb(one.idleRssKb)} MB, ` +
          `${fmt(one.perIdleKb, 1)} KB per idle session, ` +
          `+${mb(one.bigGrowthKb)} MB peak with ${BIG_MB} MB` +
          (one.errors.length ? ` (${one.errors.join("; ")})` : ""),
      );
    }
  }
  const retained = new Map();
  for (const [kind, rt] of specs) {
    const r = await retainedOnce(kind, rt);
    if (!r) continue;
    retained.set(`${kind}@${rt}`, r);
    log(
      `  ${`${kind}@${rt}`.padEnd(20)} after a full GC: ${
        fmt(r.rssKb, 1)
      } KB RSS, ${fmt(r.heapKb, 2)} KB JS heap, ${
        fmt(r.externalKb, 2)
      } KB outside it per idle session` +
        (r.errors.length ? ` (${r.errors.join("; ")})` : ""),
    );
  }
  const rows = [];
  for (const [kind, rt] of specs) {
    const xs = samples.get(`${kind}@${rt}`);
    if (xs.length === 0) continue;
    const row = { server: kind, runtime: rt, errors: [], spreads: {} };
    row.retained = retained.get(`${kind}@${rt}`) ?? null;
    for (
      const f of [
        "idleRssKb",
        "perIdleKb",
        "beforeBigKb",
        "bigPeakKb",
        "bigGrowthKb",
        "bigSeconds",
      ]
    ) {
      row.spreads[f] = spread(xs.map((x) => x[f]));
      row[f] = row.spreads[f].median;
    }
    row.idleVsBare = spread(xs.map((x) => x.idleRssKb - bare[rt]));
    row.errors = xs.flatMap((x) => x.errors);
    row.samples = xs;
    rows.push(row);
  }
  const load = noise.stop();
  return { bare, rows, load };
}
