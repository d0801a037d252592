// run.mjs's milter part (`--only milter`; not in the default run: rspamd
// alone takes some 15 s to listen): what a milter filter costs per message,
// smtpd with `milters: [rspamd]` and with `milters: [OpenDKIM]` beside
// smtpd with no filter, on each runtime. smtpd's own CPU per message
// (bench/server.mjs's process.cpuUsage()), the daemon's in a column of its
// own (its whole process tree, from /proc), and msg/s (wall time of the
// load generator). First a probe per runtime: smtpd started with a milter
// that is a bare listener of the bench's, one message sent; the option
// works when that listener got a connection, and is "not available in this
// build" when serve() refused the option or ignored it.
import net from "node:net";
import { log, Noise, sleep, spread } from "./common.mjs";
import { FULL, RUNS, RUNTIME_NAMES, RUNTIMES } from "./flags.mjs";
import { HAVE_POSTFIX } from "./launch.mjs";
import { runClient, runLoad } from "./load_gen.mjs";
import { startOpendkim, startRspamd } from "./milter_daemons.mjs";
import { cpuDelta, ServerProc, settle } from "./server_proc.mjs";
import { warmedUp } from "./workloads.mjs";

/**
 * The load: W1's shape (smtp-source -d, 1 KB messages, many per
 * connection) with fewer sessions and messages, from bench@example.org
 * (OpenDKIM signs for example.org), the same for every arm.
 */
export const MILTER_LOAD = {
  desc: "10 sessions, 1 KB, many per connection (smtp-source -d), " +
    "from bench@example.org",
  sessions: 10,
  messages: FULL ? 2000 : 200,
  size: 1024,
  tool: "source",
  reuse: true,
  unit: "msg",
  sourceArgs: ["-f", "bench@example.org", "-t", "postmaster@example.com"],
};

/** Measured rounds (after each server's warm-up). */
const MILTER_RUNS = FULL ? RUNS : 3;

/**
 * Whether smtpd on `rt` talks to a milter given in serve()'s options:
 * `{ ok: true }` or `{ ok: false, why }`.
 */
async function probe(rt) {
  let hits = 0;
  const listener = net.createServer((sock) => {
    hits++;
    sock.destroy();
  });
  await new Promise((r) => listener.listen(0, "127.0.0.1", r));
  const address = `inet:127.0.0.1:${listener.address().port}`;
  const s = new ServerProc("smtpd", rt, {
    args: ["--milter", address],
    label: "smtpd+probe",
  });
  try {
    try {
      await s.start();
    } catch (e) {
      await s.child?.exited;
      await sleep(100);
      const why = /\bTypeError: [^\n]*/.exec(s.child?.stderr ?? "")?.[0] ??
        e.message.split("\n")[0];
      return { ok: false, why: `serve() refused the option: ${why}` };
    }
    // One message: a filter that hangs up gives 451 (the client's exit
    // status does not matter here, only whether smtpd connected).
    await runClient([
      "--port",
      String(s.port),
      "--sessions",
      "1",
      "--messages",
      "1",
      "--size",
      "100",
    ]);
    return hits > 0 ? { ok: true } : {
      ok: false,
      why: "serve() ignored the option (no connection to the filter)",
    };
  } finally {
    await s.stop();
    listener.close();
  }
}

/** One run: smtpd's CPU, the daemon's, and wall time. */
async function measureMilter(s, daemon, round) {
  const n = MILTER_LOAD.messages;
  const a = await s.cpu();
  const d0 = daemon?.cpuUs() ?? NaN;
  const r = await runLoad(MILTER_LOAD, s.port);
  await settle(s);
  const b = await s.cpu();
  const d1 = daemon?.cpuUs() ?? NaN;
  if (!r.ok) return { round, ok: false, error: r.error };
  return {
    round,
    ok: true,
    cpuUsPerMsg: cpuDelta(a, b).us / n,
    daemonUsPerMsg: (d1 - d0) / n,
    msgPerS: n / (r.ms / 1000),
  };
}

/**
 * The milter part: the probes, then (where the option works) rspamd and
 * OpenDKIM started once, and per runtime three smtpd processes (no filter,
 * rspamd, OpenDKIM), each warmed up (batches until the CPU per message
 * stops falling), then MILTER_RUNS rounds in alternating order.
 */
export async function benchMilter() {
  const noise = new Noise();
  log(`\nMilter cost: ${MILTER_LOAD.desc}, ${MILTER_LOAD.messages} per run`);
  const runtimes = RUNTIME_NAMES.filter((rt) => RUNTIMES[rt].ok);
  const probes = {};
  for (const rt of runtimes) {
    probes[rt] = await probe(rt);
    log(
      `  ${rt}: ${
        probes[rt].ok
          ? "milter option works"
          : `milter option not available in this build: ${probes[rt].why}`
      }`,
    );
  }
  const result = { probes, daemons: {}, rows: [], load: null };
  const usable = runtimes.filter((rt) => probes[rt].ok);
  if (!HAVE_POSTFIX) result.skipped = "no smtp-source";
  if (usable.length === 0 || !HAVE_POSTFIX) {
    result.load = noise.stop();
    return result;
  }
  const started = await Promise.allSettled([startRspamd(), startOpendkim()]);
  const daemons = [];
  for (const [i, name] of ["rspamd", "OpenDKIM"].entries()) {
    const x = started[i];
    if (x.status === "fulfilled") {
      daemons.push({ name, ...x.value });
      result.daemons[name] = "started";
    } else {
      result.daemons[name] = `not started: ${x.reason.message.slice(0, 300)}`;
      log(`  ${name}: ${result.daemons[name]}`);
    }
  }
  try {
    for (const rt of usable) {
      const arms = [
        { filter: "no filter", daemon: null, args: [] },
        ...daemons.map((d) => ({
          filter: d.name,
          daemon: d.daemon,
          args: ["--milter", d.address],
        })),
      ];
      const servers = [];
      for (const arm of arms) {
        const s = new ServerProc("smtpd", rt, {
          args: arm.args,
          label: arm.daemon ? `smtpd+${arm.filter}` : "smtpd",
        });
        try {
          await s.start();
          servers.push({ arm, s, warmup: [], runs: [], errors: [] });
        } catch (e) {
          result.rows.push({
            runtime: rt,
            filter: arm.filter,
            errors: [e.message.slice(0, 300)],
          });
        }
      }
      try {
        for (const x of servers) {
          for (let batch = 1;; batch++) {
            const run = await measureMilter(x.s, x.arm.daemon, 0);
            if (!run.ok) {
              x.errors.push(`warm-up ${batch}: ${run.error}`);
              log(`  ${x.s.name.padEnd(24)} warm-up: FAILED ${run.error}`);
              break;
            }
            x.warmup.push(run.cpuUsPerMsg);
            logMilter(x.s, `warm-up ${batch}`, run);
            if (warmedUp(x.warmup)) break;
          }
        }
        for (let round = 1; round <= MILTER_RUNS; round++) {
          const seq = round % 2 === 1 ? [...servers].reverse() : servers;
          for (const x of seq) {
            const run = await measureMilter(x.s, x.arm.daemon, round);
            x.runs.push(run);
            if (!run.ok) {
              x.errors.push(`run ${round}: ${run.error}`);
              log(`  ${x.s.name.padEnd(24)} run ${round}: FAILED ${run.error}`);
            } else logMilter(x.s, `run ${round}`, run);
          }
        }
      } finally {
        for (const x of servers) await x.s.stop();
      }
      const base = servers.find((x) => !x.arm.daemon);
      for (const x of servers) {
        const ok = x.runs.filter((r) => r.ok);
        /** Round by round: this arm's figure ÷ the no-filter arm's. */
        const vsBase = (field) =>
          spread(x.runs.map((r) => {
            const p = base?.runs.find((b) => b.round === r.round);
            return r.ok && p?.ok ? r[field] / p[field] : NaN;
          }));
        result.rows.push({
          runtime: rt,
          filter: x.arm.filter,
          okRuns: ok.length,
          runs: x.runs.length,
          warmupMessages: x.warmup.length * MILTER_LOAD.messages,
          cpu: spread(ok.map((r) => r.cpuUsPerMsg)),
          daemonCpu: spread(ok.map((r) => r.daemonUsPerMsg)),
          msgPerS: spread(ok.map((r) => r.msgPerS)),
          cpuVsNone: x === base ? null : vsBase("cpuUsPerMsg"),
          speedVsNone: x === base ? null : vsBase("msgPerS"),
          errors: x.errors,
        });
      }
    }
  } finally {
    for (const d of daemons) await d.daemon.stop();
  }
  result.load = noise.stop();
  return result;
}

function logMilter(s, tag, run) {
  log(
    `  ${s.name.padEnd(24)} ${tag.padEnd(10)}: ${
      run.msgPerS.toFixed(0).padStart(6)
    } msg/s ${run.cpuUsPerMsg.toFixed(1).padStart(8)} µs CPU/msg` +
      (Number.isFinite(run.daemonUsPerMsg)
        ? `, filter ${run.daemonUsPerMsg.toFixed(1)} µs/msg`
        : ""),
  );
}
