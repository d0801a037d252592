// The tables of run.mjs's report: the goals of issue 23, BDAT vs DATA,
// the engine, each workload (servers and ratios) and memory. Markdown
// lines, printed and written as they are (bench/results.mjs adds the head).
import os from "node:os";
import { spread } from "./common.mjs";
import { BIG_RUNS, MEM_RUNS, RUNS, RUNTIME_NAMES } from "./flags.mjs";
import { fmt, loadLine, mb, mbs, ms, raw, rtLabel } from "./format.mjs";
import { BIG_GOAL_KINDS, BIG_MB, IDLE_CONNECTIONS } from "./memory_part.mjs";
import { MILTER_LOAD } from "./milter_part.mjs";
import { REUSE_FLOOR_NOTE } from "./server_proc.mjs";
import {
  BDAT_PAIRS,
  KB,
  MB,
  REWARM,
  WARMUP,
  warmupLimits,
} from "./workloads.mjs";

/** Other processes' CPU (cores) above which a part is flagged noisy. */
const NOISY_CORES = 0.25;

/**
 * The warm-up's batch limits under workload `w` as the report states them:
 * "3 to 10 batches", and for W2 its larger minimum and smtp-server's
 * single batch (warmupLimits).
 */
function warmupRange(w) {
  const all = warmupLimits(w, "smtpd");
  const side = warmupLimits(w, "smtp-server");
  const range = `${all.min} to ${all.max} batches`;
  const units = w.warmupMin
    ? ` (at least ${w.warmupMin} ${
      w.unit === "conn" ? "connections" : "messages"
    })`
    : w.warmupConnections
    ? ` (at least ${w.warmupConnections} connections)`
    : "";
  return side.max !== all.max
    ? `${range}${units}; smtp-server: ${side.max} batch${
      side.max === 1 ? "" : "es"
    }, a side column`
    : range + units;
}

/** The engine table, then per workload its server and ratio tables, then memory. */
export function tables(engine, workloads, memory) {
  const out = [];
  if (engine) {
    out.push("### Engine (no sockets)", "", loadLine(engine.load) + ".", "");
    out.push(
      "| runtime | µs per 1 KB message (with commands) | MB/s, 1 MB bodies | MB/s, 1 MB bodies, every 10th line dot-stuffed |",
    );
    out.push("|---|---:|---:|---:|");
    for (const e of engine.rows) {
      out.push(`| ${e.runtime} | ${e.us1k} | ${e.mbps1m} | ${e.mbps1mDots} |`);
    }
    out.push("");
  }
  for (const r of workloads) {
    const w = r.w;
    out.push(`### ${r.name}: ${w.desc}`, "");
    out.push(
      `${w.messages} messages of ${
        w.size >= MB ? `${w.size / MB} MB` : `${w.size / KB} KB`
      } per run, every server; ${RUNS} measured rounds after each server process warmed up: batches of ${w.messages} ` +
        `until the CPU per ${w.unit} stopped falling (two batches in a row within ${
          WARMUP.settle * 100
        } % of the cheapest before them, or above it; ${
          warmupRange(w)
        }; and on Bun until the last two batches each spent at most ${
          WARMUP.compiling * 100
        } % of their CPU in JavaScriptCore's compiler thread, up to ${WARMUP.compilingMore} batches more).` +
        (r.together
          ? ` Run together with ${
            r.together.filter((n) => n !== r.name).join(", ")
          }: same server processes, each server runs both back to back on its turn, the order flipping every round.`
          : "") +
        (w.rewarm
          ? ` Before each measured run, unmeasured batches of ${w.messages} against the same server until one costs at most ${
            REWARM.within * 100
          } % above the median of its last three warm-up batches (at most ${REWARM.max}; smtp-server: none): an idle Bun server drops its compiled code.`
          : "") +
        (r.pinned
          ? " Each server process pinned to one CPU, the load generator to another."
          : "") +
        (r.interleave > 1
          ? ` Each round runs every server's ${w.messages} in ${r.interleave} sub-batches of ${
            Math.floor(w.messages / r.interleave)
          }, taken in turn with the other servers of its group (A B C C B A …; smtp-server's in one go at its end of the group), and takes its CPU per ${w.unit} as their sum over their ${w.unit}s.`
          : "") +
        (r.load ? ` Machine: ${loadLine(r.load)}.` : ""),
      "",
    );
    for (const s of r.skipped) out.push(`- ${s}`);
    if (r.skipped.length > 0) out.push("");
    if (r.rows.length === 0) continue;
    out.push(
      `| server | runtime | ok runs | CPU s per run | CPU µs/${w.unit} median [min–max] | of which user | msg/s median [min–max] | load generator CPU µs/${w.unit} (mean) | peak RSS MB | warm-up: messages | warm-up batches, CPU µs/${w.unit} | last warm-up ÷ measured median |`,
    );
    out.push("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|");
    for (const s of r.rows) {
      out.push(
        `| ${s.server} | ${rtLabel(s.runtime)} | ${s.okRuns}/${s.runs} | ${
          fmt(s.cpuS.median, 2)
        } | ${ms(s.cpu, 1)} | ${fmt(s.user.median, 1)} | ${
          ms(s.msgPerS, 0)
        } | ${fmt(s.loadCpu, 1)} | ${mb(s.peakRssKb)} | ${
          s.warmup.length * w.messages
        } | ${s.warmup.map((x) => fmt(x, 1)).join(" → ")}${
          s.rewarm?.some((n) => n > 0)
            ? `; re-warm before each round: ${s.rewarm.join(", ")} batches`
            : ""
        } | ${fmt(s.warmupVsMeasured, 2)} |`,
      );
    }
    out.push("");
    if (r.ratios.length > 0) {
      out.push(
        `| runtime | CPU/${w.unit} smtpd ÷ runtime floor: median [min–max] | every round | smtpd ÷ reused-buffer floor | smtpd ÷ contract floor | contract floor ÷ floor | CPU/${w.unit} smtpd ÷ smtp-server | every round | smtpd ÷ smtp-sink | every round | floor ÷ smtp-server | floor ÷ smtp-sink | smtp-server ÷ smtp-sink | msg/s smtpd ÷ smtp-server |`,
      );
      out.push(
        "|---|---:|---|---:|---:|---:|---:|---|---:|---|---:|---:|---:|---:|",
      );
      for (const x of r.ratios) {
        out.push(
          `| ${x.runtime} | ${ms(x.cpuVsFloor)} | ${raw(x.cpuVsFloor)} | ${
            reuseCell(x)
          } | ${ms(x.cpuVsContractFloor)} | ${ms(x.contractFloorVsFloor)} | ${
            ms(x.cpuVsSmtpServer)
          } | ${raw(x.cpuVsSmtpServer)} | ${ms(x.cpuVsSink)} | ${
            raw(x.cpuVsSink)
          } | ${ms(x.floorVsSmtpServer)} | ${ms(x.floorCpuVsSink)} | ${
            ms(x.peerCpuVsSink)
          } | ${ms(x.speedVsSmtpServer)} |`,
        );
      }
      out.push("");
    }
    const errors = r.rows.flatMap((s) =>
      s.errors.map((e) => `${s.server}@${rtLabel(s.runtime)}: ${e}`)
    );
    for (const e of errors.slice(0, 10)) out.push(`- failed: ${e}`);
    if (errors.length > 0) out.push("");
  }
  if (memory) {
    out.push(
      "### Memory",
      "",
      `Idle: a fresh process per server, started with a full GC exposed; idle RSS 1 s after it listens; then 20 ` +
        `messages and a full GC (the baseline); per idle session: RSS with ${IDLE_CONNECTIONS} sessions held open after ` +
        `EHLO minus the baseline, ÷ ${IDLE_CONNECTIONS}, as it is (garbage and heap room included) and after another ` +
        `full GC (RSS / JS heap in use / memory outside the heap: what the sessions keep); "again": the same process ` +
        `through another ${IDLE_CONNECTIONS} idle sessions once the first closed, from a new baseline after a full GC ` +
        `(what one more session costs once the first ones paid what opening sessions costs once). ${BIG_MB} MB message: ` +
        `another fresh process (20 messages first, nothing else), peak RSS (VmHWM, reset just before) minus RSS ` +
        `before. smtpd-byob and smtpd-cli are measured with the big message only (idle they are smtpd). ${
          MEM_RUNS === 1
            ? "One fresh process each (`--mem-runs N` for medians)"
            : `Median [min–max] over ${MEM_RUNS} fresh processes each`
        }${
          BIG_RUNS > MEM_RUNS
            ? `; the ${BIG_MB} MB message of ${
              BIG_GOAL_KINDS.join(", ")
            } (the goals' servers): median [min–max] over ${BIG_RUNS} fresh processes (\`--big-runs N\`; on Bun one process's growth spreads by 4–8 MB, the floor's too)`
            : ""
        }. Machine: ${loadLine(memory.load)}.`,
      "",
    );
    out.push(
      `| server | runtime | bare runtime RSS MB | idle server RSS MB | idle − bare MB | KB per idle session | after a full GC: KB RSS / JS heap / outside the heap per idle session | KB per idle session again / after a full GC | RSS before ${BIG_MB} MB message | peak during | growth MB | seconds |`,
    );
    out.push("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (const r of memory.rows) {
      const bare = memory.bare[r.runtime];
      const sp = r.spreads;
      const idle = (x) => r.idle ? x : "–";
      out.push(
        `| ${r.server}${r.reader ? ` (reader: ${r.reader})` : ""} | ${
          rtLabel(r.runtime)
        } | ${mb(bare)} | ${idle(mbs(sp.idleRssKb))} | ${
          idle(mbs(r.idleVsBare))
        } | ${idle(ms(sp.perIdleKb, 1))} | ${idle(retainedCell(r))} | ${
          idle(`${ms(sp.perIdleAgainKb, 1)} / ${fmt(r.retainedAgainKb, 1)}`)
        } | ${mbs(sp.beforeBigKb)} | ${mbs(sp.bigPeakKb)} | ${
          mbs(sp.bigGrowthKb)
        } | ${ms(sp.bigSeconds, 2)} |` +
          (r.errors.length > 0 ? ` failed: ${r.errors.join("; ")}` : ""),
      );
    }
    const notes = Object.entries(REUSE_FLOOR_NOTE).filter(([rt]) =>
      RUNTIME_NAMES.includes(rt)
    );
    if (notes.length > 0) {
      out.push(
        "",
        `floor-reuse: ${notes.map(([rt, why]) => `${rt}: ${why}`).join("; ")}.`,
      );
    }
    out.push("");
  }
  return out;
}

/** The retained-memory cell of the memory table (after a full GC), or "–". */
function retainedCell(r) {
  if (!Number.isFinite(r.retainedRssKb)) return "–";
  return `${fmt(r.retainedRssKb, 1)} / ${fmt(r.retainedHeapKb, 2)} / ${
    fmt(r.retainedExternalKb, 2)
  }`;
}

/**
 * Contract floor ÷ floor for a goal of `limit`× the floor, with the share
 * of the allowance above the floor (limit − 1) that it takes: "1.10
 * [1.05–1.15]: 40 % of the 0.25 allowance".
 */
function contractShare(s, limit) {
  const cell = ms(s);
  if (!s || !Number.isFinite(s.median)) return cell;
  if (!(limit > 1)) return `${cell}: no allowance above the floor`;
  return `${cell}: ${fmt(((s.median - 1) / (limit - 1)) * 100, 0)} % of the ${
    fmt(limit - 1, 2)
  } allowance`;
}

/** The verdict's note when the contract floor alone misses a goal of `limit`× the floor. */
function contractAbove(s, limit) {
  if (!s || !Number.isFinite(s.median) || s.median <= limit) return "";
  return `; the contract floor alone is above the limit (${
    fmt(s.median, 2)
  }×): the goal is below what the contract allows on this runtime`;
}

/** smtpd ÷ the reused-buffer floor, or why there is none on that runtime. */
function reuseCell(x) {
  if (x.reuseFloorNote) return "none (Bun.listen)";
  return ms(x.cpuVsReuseFloor);
}

/**
 * BDAT ÷ DATA for smtpd (issue 9), per runtime: CPU per unit of each BDAT
 * workload over its DATA counterpart sent by the same client, round by
 * round (round r of one workload ÷ round r of the other; run together,
 * they are two runs of one server process back to back: benchWorkloads),
 * as median [min–max] and every round; the smtp-source workload of the
 * same size for scale.
 */
export function bdatVsData(workloads) {
  const byName = (n) => workloads.find((r) => r.name === n);
  const out = [];
  for (const pair of BDAT_PAIRS) {
    const b = byName(pair.bdat);
    const d = byName(pair.data);
    if (!b || !d) continue;
    const ref = byName(pair.ref);
    const w = b.w;
    for (const rt of RUNTIME_NAMES) {
      const row = (r) =>
        r?.rows.find((x) => x.server === "smtpd" && x.runtime === rt);
      const rb = row(b);
      const rd = row(d);
      if (!rb || !rd) continue;
      const xs = rb.raw.map((run) => {
        const p = rd.raw.find((x) => x.round === run.round);
        return run.ok && p?.ok ? run.cpuUsPerMsg / p.cpuUsPerMsg : NaN;
      });
      const ratio = spread(xs);
      out.push(
        `| ${w.size >= MB ? "1 MB" : "1 KB"} | ${rt} | ${ms(rd.cpu, 1)} | ${
          ms(rb.cpu, 1)
        } | ${ms(ratio)} | ${raw(ratio)} | ${
          Number.isFinite(ratio.median)
            ? `${fmt((1 - ratio.median) * 100, 0)} %`
            : "–"
        } | ${ms(row(ref)?.cpu, 1)} |`,
      );
    }
  }
  if (out.length === 0) return [];
  return [
    "### BDAT vs DATA, smtpd (issue 9)",
    "",
    "smtpd's CPU µs per unit: per message (1 KB) or per MB (1 MB). Same client for both " +
    "sides: bench/client.mjs, pipelined, same sessions, count and size " +
    `(1 KB: ${BDAT_PAIRS[0].bdat} ÷ ${BDAT_PAIRS[0].data}; 1 MB: ${
      BDAT_PAIRS[1].bdat
    } ÷ ${BDAT_PAIRS[1].data}). The ratio is taken round by round ` +
    "(round r of the BDAT workload ÷ round r of the DATA one). When both are " +
    "selected they share their rounds and server processes: on its turn each smtpd " +
    "server runs DATA then BDAT (even rounds) or BDAT then DATA (odd rounds), so " +
    "each ratio pairs two runs of one process seconds apart. " +
    `The smtp-source column (${BDAT_PAIRS[0].ref}, ${
      BDAT_PAIRS[1].ref
    }: no pipelining, a reply awaited per command) is for scale, not part of the ratio.`,
    "",
    "| size | runtime | DATA CPU µs/unit median [min–max] | BDAT CPU µs/unit median [min–max] | BDAT ÷ DATA median [min–max] | every round | 1 − BDAT ÷ DATA (median; > 0: BDAT cheaper) | smtp-source DATA CPU µs/unit |",
    "|---|---|---:|---:|---:|---|---:|---:|",
    ...out,
    "",
  ];
}

/**
 * The goals of issue 23, judged on the medians, with a note when the
 * spread crosses the limit. The headline is smtpd ÷ the runtime floor;
 * smtpd ÷ the reused-buffer floor, smtp-server and smtp-sink are beside it;
 * for the CPU goals, smtpd ÷ the contract floor and contract floor ÷
 * floor in columns of their own, and a note when the contract floor alone
 * misses the goal.
 */
export function goals(workloads, memory) {
  const out = [];
  const ratio = (name, rt) =>
    workloads.find((r) => r.name === name)?.ratios.find((x) =>
      x.runtime === rt
    );
  /** "met", "**missed**", with a note when the spread crosses the line. */
  const judge = (s, limit) => {
    if (!s || !Number.isFinite(s.median) || !Number.isFinite(limit)) {
      return "n/a";
    }
    const met = s.median <= limit;
    const crosses = s.min <= limit && s.max > limit;
    return (met ? "met" : "**missed**") +
      (crosses ? " (spread crosses the limit)" : "");
  };
  const beside = (x) =>
    `; ÷ reused-buffer floor ${reuseCell(x)}; ÷ smtp-server ${
      ms(x.cpuVsSmtpServer)
    }; ÷ smtp-sink ${ms(x.cpuVsSink)}`;
  const cpuGoals = [
    ["W1", "CPU/msg", 1.25],
    ["W4", "CPU/msg", 1.25],
    ["W2", "CPU/connection", 1.3],
    ["W3", "CPU/MB", 1.0],
  ];
  for (const [name, unit, limit] of cpuGoals) {
    for (const rt of RUNTIME_NAMES) {
      const x = ratio(name, rt);
      if (!x) continue;
      out.push(
        `| ${name} ${unit} ≤ ${limit.toFixed(2)}× the floor | ${rt} | ${
          ms(x.cpuVsFloor)
        }${beside(x)} | ${ms(x.cpuVsContractFloor)} | ${
          contractShare(x.contractFloorVsFloor, limit)
        } | ${judge(x.cpuVsFloor, limit)}${
          contractAbove(x.contractFloorVsFloor, limit)
        } |`,
      );
    }
  }
  for (const name of ["W1", "W4"]) {
    for (const rt of ["bun", "deno"]) {
      const x = ratio(name, rt);
      if (!x || !RUNTIME_NAMES.includes(rt)) continue;
      out.push(
        `| ${name} CPU/msg ≤ 0.6× smtp-server's | ${rt} | ${
          ms(x.cpuVsSmtpServer)
        } (floor ÷ smtp-server ${ms(x.floorVsSmtpServer)}) | – | – | ${
          judge(x.cpuVsSmtpServer, 0.6)
        } |`,
      );
    }
  }
  if (memory) {
    const row = (server, rt) =>
      memory.rows.find((r) => r.server === server && r.runtime === rt);
    const kb = (r, f) => r?.spreads[f];
    for (const rt of RUNTIME_NAMES) {
      const floor = row("floor", rt);
      const reuse = row("floor-reuse", rt);
      const floors = `floor${
        rt === "deno" ? " (reads into a reused buffer)" : ""
      } ${mbs(kb(floor, "bigGrowthKb"))}${
        reuse ? `, reused-buffer floor ${mbs(kb(reuse, "bigGrowthKb"))}` : ""
      }, smtpd with the default reader ${
        mbs(kb(row("smtpd", rt), "bigGrowthKb"))
      }`;
      // Bun has no reused-buffer read: its goal is its floor's + 4 MB.
      const limit = rt === "bun"
        ? (floor?.bigGrowthKb ?? NaN) + 4 * 1024
        : 16 * 1024 - 1;
      const what = rt === "bun" ? "≤ the floor's + 4 MB" : "< 16 MB";
      for (
        const [server, path] of [
          ["smtpd-cli", "the CLI's Maildir path"],
          ["smtpd-byob", "a BYOB reader of message.raw"],
        ]
      ) {
        const a = row(server, rt);
        if (!a) continue;
        out.push(
          `| ${BIG_MB} MB message adds ${what}, ${path}${
            a.reader && a.reader !== "byob" ? ` (reader: ${a.reader})` : ""
          } | ${rt} | ${
            mbs(kb(a, "bigGrowthKb"))
          } MB (${floors} MB) | – | – | ${
            judge(kb(a, "bigGrowthKb"), limit)
          } |`,
        );
      }
      const a = row("smtpd", rt);
      if (a && floor) {
        out.push(
          `| KB per idle session ≤ the floor's + 4 (again: the steady state) | ${rt} | again ${
            ms(kb(a, "perIdleAgainKb"), 1)
          } (floor ${ms(kb(floor, "perIdleAgainKb"), 1)}); first ${
            ms(kb(a, "perIdleKb"), 1)
          } (floor ${ms(kb(floor, "perIdleKb"), 1)}${
            reuse
              ? `, reused-buffer floor ${ms(kb(reuse, "perIdleKb"), 1)}`
              : ""
          }, smtp-server ${
            ms(kb(row("smtp-server", rt), "perIdleKb"), 1)
          }; after a full GC ${fmt(a.retainedRssKb, 1)} vs the floor's ${
            fmt(floor.retainedRssKb, 1)
          }) | – | – | ${
            judge(kb(a, "perIdleAgainKb"), floor.perIdleAgainKb + 4)
          }; first: ${judge(kb(a, "perIdleKb"), floor.perIdleKb + 4)} |`,
        );
      }
    }
  }
  if (out.length === 0) return [];
  const loads = [...workloads.map((r) => r.load), memory?.load].filter(
    Boolean,
  );
  const other = loads.map((l) => l.otherCores);
  const cores = os.cpus().length;
  const quiet = Math.max(...other) <= NOISY_CORES;
  return [
    "### Goals of issue 23 (reported, not asserted; judged on the median)",
    "",
    `Machine noise: other processes used ${fmt(Math.min(...other), 2)}–${
      fmt(Math.max(...other), 2)
    } of ${cores} cores during the parts below (1-minute load average up to ${
      fmt(Math.max(...loads.map((l) => l.duringMax)), 2)
    }). ` +
    (quiet
      ? "Quiet enough to compare."
      : `**Noisy** (more than ${NOISY_CORES} cores of other work): ratios wander by ` +
        "the spreads shown; rerun on a quiet machine before quoting them."),
    "",
    "The floor is `bench/floor.mjs` (the runtime's own listener, fixed replies); the reused-buffer floor " +
    "`bench/floor.mjs --reuse` (every read into one reused buffer); the contract floor " +
    "`bench/floor.mjs --contract` (the floor plus only what smtpd's public contract makes every conforming " +
    "server do: an awaited hook promise per MAIL and RCPT, the body as a byte stream of copies read to the end " +
    "by an awaited message hook before the 250). Contract floor ÷ floor is what the contract alone costs: " +
    "its share of a goal's allowance above the floor is beside it, and a goal the contract floor itself " +
    "misses says so. Memory limits relative to a floor take the floor's median.",
    "",
    "| goal | runtime | measured: smtpd ÷ floor median [min–max], and beside it | smtpd ÷ contract floor | contract floor ÷ floor | |",
    "|---|---|---|---:|---:|---|",
    ...out,
    "",
  ];
}

/**
 * What a milter filter costs per message (issue 22): per runtime, smtpd
 * with no filter, with rspamd and with OpenDKIM; or why it was not
 * measured (the probe: the option not available in this build).
 */
export function milterTable(milter) {
  if (!milter) return [];
  const out = [
    "### Milter cost (issue 22)",
    "",
    `Load: ${MILTER_LOAD.desc}, ${MILTER_LOAD.messages} messages per run, the same for every arm; each smtpd ` +
    "process warmed up (batches until its CPU per message stops falling), then measured rounds in alternating " +
    "order. smtpd's CPU is its own process's; the filter's is its daemon's whole process tree (from /proc, " +
    'background work included), in its own column. Ratios to "no filter" are taken round by round. ' +
    (milter.load ? `Machine: ${loadLine(milter.load)}.` : ""),
    "",
  ];
  for (const [rt, p] of Object.entries(milter.probes)) {
    if (!p.ok) {
      out.push(`- ${rt}: milter option not available in this build (${p.why})`);
    }
  }
  for (const [name, state] of Object.entries(milter.daemons)) {
    if (state !== "started") out.push(`- ${name}: ${state}`);
  }
  if (milter.skipped) out.push(`- skipped: ${milter.skipped}`);
  if (out[out.length - 1] !== "") out.push("");
  if (milter.rows.length === 0) return out;
  out.push(
    "| runtime | smtpd with | ok runs | warm-up messages | smtpd CPU µs/msg median [min–max] | ÷ no filter | msg/s median [min–max] | ÷ no filter | the filter's own CPU µs/msg |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|",
  );
  for (const r of milter.rows) {
    if (!r.cpu) {
      out.push(
        `| ${r.runtime} | ${r.filter} | – | – | – | – | – | – | – | failed: ${
          r.errors.join("; ")
        }`,
      );
      continue;
    }
    out.push(
      `| ${r.runtime} | ${r.filter} | ${r.okRuns}/${r.runs} | ${r.warmupMessages} | ${
        ms(r.cpu, 1)
      } | ${r.cpuVsNone ? ms(r.cpuVsNone) : "–"} | ${ms(r.msgPerS, 0)} | ${
        r.speedVsNone ? ms(r.speedVsNone) : "–"
      } | ${ms(r.daemonCpu, 1)} |` +
        (r.errors.length > 0
          ? ` failed: ${r.errors.slice(0, 3).join("; ")}`
          : ""),
    );
  }
  out.push("");
  return out;
}
