// The tables of run.mjs's report: the goals of issue 12, BDAT vs DATA,
// the engine, each workload (servers and ratios) and memory. Markdown
// lines, printed and written as they are (bench/results.mjs adds the head).
import os from "node:os";
import { spread } from "./common.mjs";
import { MEM_RUNS, RUNS, RUNTIME_NAMES } from "./flags.mjs";
import { fmt, loadLine, mb, mbs, ms, raw, rtLabel } from "./format.mjs";
import { BIG_MB, IDLE_CONNECTIONS } from "./memory_part.mjs";
import { BDAT_PAIRS, KB, MB, WARMUP_RUNS } from "./workloads.mjs";

/** Other processes' CPU (cores) above which a part is flagged noisy. */
const NOISY_CORES = 0.25;

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
      } per run${
        w.smtpServer !== w.messages
          ? ` (smtp-server: ${w.smtpServer}; its 100 ms wait before each greeting makes its runs long in wall time, short in CPU)`
          : ""
      }; ${RUNS} measured rounds after one warm-up round of ${WARMUP_RUNS} times that.` +
        (r.together
          ? ` Run together with ${
            r.together.filter((n) => n !== r.name).join(", ")
          }: same server processes, each server runs both back to back on its turn, the order flipping every round.`
          : "") +
        (r.load ? ` Machine: ${loadLine(r.load)}.` : ""),
      "",
    );
    for (const s of r.skipped) out.push(`- ${s}`);
    if (r.skipped.length > 0) out.push("");
    if (r.rows.length === 0) continue;
    out.push(
      `| server | runtime | ok runs | CPU s per run | CPU µs/${w.unit} median [min–max] | of which user | msg/s median [min–max] | peak RSS MB |`,
    );
    out.push("|---|---|---:|---:|---:|---:|---:|---:|");
    for (const s of r.rows) {
      out.push(
        `| ${s.server} | ${rtLabel(s.runtime)} | ${s.okRuns}/${s.runs} | ${
          fmt(s.cpuS.median, 2)
        } | ${ms(s.cpu, 1)} | ${fmt(s.user.median, 1)} | ${
          ms(s.msgPerS, 0)
        } | ${mb(s.peakRssKb)} |`,
      );
    }
    out.push("");
    if (r.ratios.length > 0) {
      out.push(
        `| runtime | CPU/${w.unit} smtpd ÷ smtp-server: median [min–max] | every round | CPU/${w.unit} smtpd ÷ smtp-sink: median [min–max] | every round | smtpd ÷ runtime floor | floor ÷ smtp-sink | smtp-server ÷ smtp-sink | msg/s smtpd ÷ smtp-server |`,
      );
      out.push("|---|---:|---|---:|---|---:|---:|---:|---:|");
      for (const x of r.ratios) {
        out.push(
          `| ${x.runtime} | ${ms(x.cpuVsSmtpServer)} | ${
            raw(x.cpuVsSmtpServer)
          } | ${ms(x.cpuVsSink)} | ${raw(x.cpuVsSink)} | ${
            ms(x.cpuVsFloor)
          } | ${ms(x.floorCpuVsSink)} | ${ms(x.peerCpuVsSink)} | ${
            ms(x.speedVsSmtpServer)
          } |`,
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
      `Fresh process per server. Idle RSS: 1 s after it listens. Per idle session: RSS with ${IDLE_CONNECTIONS} sessions ` +
        `held open after EHLO, minus RSS before them, ÷ ${IDLE_CONNECTIONS}; the same after a full GC before and ` +
        `after (another fresh process, started with the GC exposed): RSS, the JS heap in use and the memory held ` +
        `outside it (ArrayBuffers), what the sessions keep rather than garbage and heap room. ${BIG_MB} MB message: peak RSS ` +
        `(VmHWM, reset just before) minus RSS before. ${
          MEM_RUNS === 1
            ? "One fresh process each (`--mem-runs N` for medians)"
            : `Median [min–max] over ${MEM_RUNS} fresh processes each`
        }. Machine: ${loadLine(memory.load)}.`,
      "",
    );
    out.push(
      `| server | runtime | bare runtime RSS MB | idle server RSS MB | idle − bare MB | KB per idle session | after a full GC: KB RSS / JS heap / outside the heap per idle session | RSS before ${BIG_MB} MB message | peak during | growth MB | seconds |`,
    );
    out.push("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (const r of memory.rows) {
      const bare = memory.bare[r.runtime];
      const sp = r.spreads;
      out.push(
        `| ${r.server} | ${rtLabel(r.runtime)} | ${mb(bare)} | ${
          mbs(sp.idleRssKb)
        } | ${mbs(r.idleVsBare)} | ${ms(sp.perIdleKb, 1)} | ${
          retainedCell(r.retained)
        } | ${mbs(sp.beforeBigKb)} | ${mbs(sp.bigPeakKb)} | ${
          mbs(sp.bigGrowthKb)
        } | ${ms(sp.bigSeconds, 2)} |` +
          (r.errors.length > 0 ? ` failed: ${r.errors.join("; ")}` : ""),
      );
    }
    out.push("");
  }
  return out;
}

/** The retained-memory cell of the memory table (retainedOnce), or "–". */
function retainedCell(r) {
  if (!r || r.rssKb === undefined) return r?.errors.join("; ") || "–";
  return `${fmt(r.rssKb, 1)} / ${fmt(r.heapKb, 2)} / ${fmt(r.externalKb, 2)}`;
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

/** The goals of issue 12, judged on the medians; the spread is shown. */
export function goals(workloads, memory) {
  const out = [];
  const ratio = (name, rt) =>
    workloads.find((r) => r.name === name)?.ratios.find((x) =>
      x.runtime === rt
    );
  /** "met", "**missed**", with a note when the spread crosses the line. */
  const judge = (s, limit) => {
    if (!s || !Number.isFinite(s.median)) return "n/a";
    const met = s.median <= limit;
    const crosses = s.min <= limit && s.max > limit;
    return (met ? "met" : "**missed**") +
      (crosses ? " (spread crosses the limit)" : "");
  };
  const sinkLimit = { bun: 1.15, deno: 1.15, node24: 1.3 };
  /** The runtime floor's own ratio to smtp-sink, for scale. */
  const floorNote = (x) =>
    x.floorCpuVsSink && Number.isFinite(x.floorCpuVsSink.median)
      ? ` (runtime floor: ${fmt(x.floorCpuVsSink.median, 2)}×)`
      : "";
  for (const name of ["W1", "W4"]) {
    for (const rt of RUNTIME_NAMES) {
      const x = ratio(name, rt);
      if (!x) continue;
      if (sinkLimit[rt]) {
        out.push(
          `| ${name} CPU/msg ≤ ${sinkLimit[rt]}× smtp-sink's | ${rt} | ${
            ms(x.cpuVsSink)
          }${floorNote(x)} | ${judge(x.cpuVsSink, sinkLimit[rt])} |`,
        );
      }
      out.push(
        `| ${name} CPU/msg ≤ 0.6× smtp-server's | ${rt} | ${
          ms(x.cpuVsSmtpServer)
        } | ${judge(x.cpuVsSmtpServer, 0.6)} |`,
      );
    }
  }
  for (const rt of RUNTIME_NAMES) {
    const x = ratio("W2", rt);
    if (x) {
      out.push(
        `| W2 CPU/connection ≤ 1.5× smtp-sink's | ${rt} | ${ms(x.cpuVsSink)}${
          floorNote(x)
        } | ${judge(x.cpuVsSink, 1.5)} |`,
      );
    }
  }
  for (const rt of RUNTIME_NAMES) {
    const x = ratio("W3", rt);
    if (x) {
      out.push(
        `| W3 CPU/MB ≤ 0.5× smtp-server's | ${rt} | ${
          ms(x.cpuVsSmtpServer)
        } | ${judge(x.cpuVsSmtpServer, 0.5)} |`,
      );
    }
  }
  if (memory) {
    const row = (server, rt) =>
      memory.rows.find((r) => r.server === server && r.runtime === rt);
    const one = (v, limit) =>
      Number.isFinite(v) && Number.isFinite(limit)
        ? v <= limit ? "met" : "**missed**"
        : "n/a";
    /** The runtime floor's figure, for scale (as for the CPU goals). */
    const floorOf = (rt, figure, unit) => {
      const f = row("floor", rt);
      return f ? ` (runtime floor: ${figure(f)}${unit})` : "";
    };
    for (const rt of RUNTIME_NAMES) {
      const a = row("smtpd", rt);
      if (!a) continue;
      const b = row("smtp-server", rt);
      const limit = Math.min(
        b?.perIdleKb ?? Infinity,
        rt === "bun" ? Infinity : 16,
      );
      out.push(
        `| KB per idle session ≤ smtp-server's${
          rt === "bun" ? "" : " and ≤ 16"
        } | ${rt} | ${ms(a.spreads.perIdleKb, 1)} (smtp-server ${
          ms(b?.spreads.perIdleKb, 1)
        }; after a full GC ${fmt(a.retained?.rssKb, 1)} vs ${
          fmt(b?.retained?.rssKb, 1)
        })${floorOf(rt, (f) => ms(f.spreads.perIdleKb, 1), " KB")} | ${
          one(a.perIdleKb, limit)
        } |`,
      );
      out.push(
        `| ${BIG_MB} MB message adds < 16 MB | ${rt} | ${
          mbs(a.spreads.bigGrowthKb)
        } MB${floorOf(rt, (f) => mbs(f.spreads.bigGrowthKb), " MB")} | ${
          one(a.bigGrowthKb, 16 * 1024 - 1)
        } |`,
      );
      const bare = memory.bare[rt];
      out.push(
        `| idle server ≤ 5 MB above the bare runtime | ${rt} | ${
          mbs(a.idleVsBare)
        } MB (${mb(a.idleRssKb)} vs ${mb(bare)})${
          floorOf(rt, (f) => mbs(f.idleVsBare), " MB")
        } | ${one(a.idleRssKb - bare, 5 * 1024)} |`,
      );
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
    "### Goals of issue 12 (reported, not asserted; judged on the median)",
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
    "| goal | runtime | measured: median [min–max] | |",
    "|---|---|---:|---|",
    ...out,
    "",
  ];
}
