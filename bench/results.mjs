// The report run.mjs writes: its head (date, command, machine, code,
// versions, servers), the tables (bench/report.mjs), and where they go:
// bench/RESULTS.md for the default selection (a quick run keeping the last
// full run below its own tables), else .tmp/bench-results.md or --out; the
// raw figures as JSON next to it.
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, isAbsolute, join, relative } from "node:path";
import { log } from "./common.mjs";
import { BIN, libraryFile, root } from "./launch.mjs";
import {
  argv,
  DEFAULT_SELECTION,
  FULL,
  LIB,
  MODE,
  NO_WRITE,
  OUT,
  RUNS,
  RUNTIME_NAMES,
  RUNTIMES,
} from "./flags.mjs";
import { bdatVsData, goals, milterTable, tables } from "./report.mjs";
import { placementText } from "./placement.mjs";
import { loaded } from "./server_proc.mjs";

const { deno, bun, node20, node24 } = BIN;

/** The first line `cmd args` prints (stdout, else stderr). */
function version(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  return (r.stdout || r.stderr || "").split("\n")[0].trim();
}

/** The versions of the runtimes, smtp-server and Postfix, for the report. */
export function toolVersions() {
  return {
    deno: RUNTIMES.deno.ok ? version(deno, ["--version"]) : null,
    bun: RUNTIMES.bun.ok ? `bun ${version(bun, ["--version"])}` : null,
    node20: node20 ? `node ${version(node20, ["--version"])}` : null,
    node24: RUNTIMES.node24.ok
      ? `node ${version(node24, ["--version"])}`
      : null,
    "smtp-server": JSON.parse(
      readFileSync(
        join(root, "node_modules/smtp-server/package.json"),
        "utf8",
      ),
    ).version,
    postfix: version("dpkg-query", ["-W", "-f", "${Version}", "postfix"]),
  };
}

/**
 * Prints the tables and writes the report and its JSON (the JSON only with
 * --no-write). `date`: when the run started, "YYYY-MM-DD HH:MM" UTC.
 */
export function writeResults(
  { date, elapsed, versions, build, engine, workloads, memory, milter },
) {
  const command = `node bench/run.mjs ${argv.join(" ")}`.trim();
  const head = version("git", ["-C", root, "log", "-1", "--format=%h %s"]);
  const dirty = spawnSync("git", [
    "-C",
    root,
    "status",
    "--porcelain",
    "--",
    "mod.ts",
    "src",
    "runtimes",
    "bench",
  ], {
    encoding: "utf8",
  }).stdout?.split("\n").filter((l) => l.length > 3).map((l) => l.slice(3))
    .filter((f) => f !== "bench/RESULTS.md") ?? [];
  const cpuModel =
    (readFileSync("/proc/cpuinfo", "utf8").match(/model name\s*:\s*(.*)/) ??
      [])[1] ?? "unknown";
  const body = [
    ...goals(workloads, memory),
    ...bdatVsData(workloads),
    ...tables(engine, workloads, memory),
    ...milterTable(milter),
  ];
  const md = [
    "# Benchmark results",
    "",
    "Written by `node bench/run.mjs` (never by hand). How to read it: bench/README.md.",
    "",
    `Date: ${date} UTC. Mode: ${MODE}, ${RUNS} measured rounds per workload ` +
    `after each server process warmed up to steady state (discarded, reported per workload), servers alternating A B C / C B A${
      workloads.some((w) => w.interleave > 1)
        ? ` (${
          workloads.filter((w) => w.interleave > 1).map((w) =>
            `${w.name}: each server's round in ${w.interleave} sub-batches taken in turn, A B C C B A …, smtp-server's in one go`
          ).join("; ")
        })`
        : ""
    }. Took ${Math.round(elapsed)} s.`,
    "",
    "Command: `" + command + "`",
    "",
    `Machine: ${os.cpus().length} × ${cpuModel}, Linux ${os.release()}. ` +
    "The load average counts the bench itself (a server and a load " +
    'generator: about 1–2); "CPU used by other processes" is the machine\'s busy time minus ' +
    "the bench's own process tree.",
    "",
    ...(workloads.some((w) => w.rows.length > 0)
      ? [
        `Placement (load part): ${
          placementText(
            workloads.filter((w) => w.pinned).map((w) => w.name),
            workloads.filter((w) => !w.pinned && w.rows.length > 0).map((
              w,
            ) => w.name),
          )
        }.`,
        "",
      ]
      : []),
    `Code: commit ${head || "unknown"}` +
    (dirty.length > 0
      ? ` plus uncommitted changes to ${dirty.join(", ")}`
      : "") +
    ".",
    "",
    ...codeRan(build, engine !== null),
    "Versions: " +
    Object.entries(versions).filter(([, v]) => v).map(([k, v]) =>
      `${k} ${v.replace(/^(deno|bun|node) /, "")}`
    ).join(", ") +
    ".",
    "",
    ...workloadNotes(),
    ...body,
  ].join("\n");
  console.log(body.join("\n"));
  log(`\nbench: done in ${elapsed.toFixed(0)} s`);

  const out = OUT ??
    (DEFAULT_SELECTION ? "bench/RESULTS.md" : ".tmp/bench-results.md");
  const outPath = isAbsolute(out) ? out : join(root, out);
  const jsonPath = out === "bench/RESULTS.md"
    ? join(root, ".tmp", "bench-results.json")
    : outPath.replace(/(\.md)?$/, ".json");
  mkdirSync(dirname(jsonPath), { recursive: true });
  writeFileSync(
    jsonPath,
    JSON.stringify(
      {
        date: new Date().toISOString(),
        command,
        versions,
        elapsed,
        engine,
        workloads,
        memory,
        milter,
      },
      null,
      1,
    ),
  );
  if (NO_WRITE) return;
  mkdirSync(dirname(outPath), { recursive: true });
  // A quick run into RESULTS.md keeps the last full run below its own
  // tables, under its own heading, until the next full run.
  const kept = FULL || out !== "bench/RESULTS.md" ? null : lastFullRun(outPath);
  writeFileSync(outPath, kept === null ? md + "\n" : md + "\n\n" + kept);
  // `npm test` runs `deno fmt --check`, which covers bench/.
  if (RUNTIMES.deno.ok) {
    spawnSync(deno, ["fmt", outPath], { cwd: root, stdio: "ignore" });
  }
  // Under the checkout: relative to it; elsewhere (`--out /tmp/x.md`): whole.
  const json = relative(root, jsonPath);
  log(`wrote ${out} and ${json.startsWith("..") ? jsonPath : json}`);
}

const LAST_FULL = "## Last full run";

/**
 * The full run recorded in RESULTS.md, as a section to append after a
 * quick run's tables: the file itself when it holds a full run, or the
 * full run a quick run kept in it before. `null` when there is none.
 */
function lastFullRun(path) {
  let old;
  try {
    old = readFileSync(path, "utf8");
  } catch {
    return null;
  }
  const at = old.indexOf(`\n${LAST_FULL}`);
  if (at >= 0) return old.slice(at + 1);
  if (!/^Date: [^]{0,80}?Mode: full\b/m.test(old)) return null;
  const text = old.replace(/^# Benchmark results\n+/, "");
  return `${LAST_FULL}\n\nKept from \`bench/RESULTS.md\` when a quick run replaced ` +
    "the tables above (the command below is the one that made it).\n\n" +
    text;
}

/**
 * Which smtpd code each runtime ran: the file the servers said they
 * loaded (bench/server.mjs prints it), else the one they were told to.
 */
function codeRan(build, engine) {
  const what = (file) =>
    file === "mod.ts"
      ? "`mod.ts` (the TypeScript sources, as JSR serves them)"
      : `\`${file}\` (the npm build)`;
  const per = RUNTIME_NAMES.filter((rt) => RUNTIMES[rt].ok).map((rt) => {
    const files = [...loaded].filter((x) => x.startsWith(`${rt}\t`)).map((
      x,
    ) => x.split("\t")[1]);
    const list = files.length > 0 ? files : [libraryFile(rt, LIB[rt])];
    return `${rt} ${list.map(what).join(" and ")}`;
  });
  if (per.length === 0) return [];
  const when = build
    ? ` dist/ was built by scripts/build.mjs ${
      build.built ? "at the start of this run" : "at " +
        new Date(build.mtime).toISOString().slice(0, 16).replace("T", " ") +
        " UTC (not older than the sources)"
    }.`
    : "";
  return [
    `Code each runtime ran (smtpd's servers, loaded by the plain-JavaScript bench/server.mjs: no tsx, no type stripping on Node): ${
      per.join("; ")
    }.${when} smtp-server's servers load only node_modules/smtp-server.` +
    (engine
      ? " The engine bench runs the .ts sources (Node 20 through tsx, Node 24 stripping types)."
      : ""),
    "",
  ];
}

function workloadNotes() {
  return [
    "Servers: `bench/server.mjs smtpd` (serve() from the code above; onMessage reads `message.raw` to the end), " +
    "`bench/server.mjs smtp-server` (authOptional, AUTH and STARTTLS disabled, no reverse DNS, onData drains the stream; " +
    "its default 100 ms wait before each greeting is left on), `floor` (bench/floor.mjs, W1–W4 and memory: fixed replies on the runtime's own " +
    "listener, no parsing, no hooks: what the runtime costs by itself), `floor-reuse` (bench/floor.mjs --reuse: the same with every read into one " +
    "reused buffer: node:net `onread` on the accepted socket's handle; on Deno, whose plain floor reads with Deno.Conn.read into a buffer " +
    "of its own already, the same through the op under Conn.read (`Deno[Deno.internal].core.read`, as runtimes/deno.ts reads where it finds it); none on Bun, whose listener hands a fresh copy per read), `floor-contract` (bench/floor.mjs --contract, W1–W4: the floor plus " +
    "only what smtpd's public contract makes every conforming server do: an awaited hook promise per MAIL and RCPT, and per message a byte " +
    "ReadableStream of copies of the body, closed at its end and read to the end by an async hook awaited before the 250; no parsing, no " +
    "limits), and `smtp-sink` (C, Postfix). Memory only: `smtpd-byob` " +
    "(`bench/server.mjs smtpd --byob`: onMessage reads `message.raw` with a BYOB reader into a buffer of its own, or with the default " +
    'reader where `getReader({ mode: "byob" })` throws: the row says which) and `smtpd-cli` (the CLI delivering into a Maildir: ' +
    "`dist/cli.js` on Node and Bun, `src/cli/main.ts` on Deno, the sources everywhere with `--lib src`). " +
    "Every server gets the same load in a round. " +
    "Server CPU is user + system time of the server process: the JS servers' own `process.cpuUsage()` " +
    "(all threads), smtp-sink's from /proc/<pid>/task/*/sched. Peak RSS is VmHWM of the workload's " +
    "server process (fresh per workload; W5 and W6, W8 and W7 share theirs). Ratios pair runs taken " +
    "back to back in the same round.",
    "",
    "smtp-source waits for every reply, so each message costs every server about 4 reads and 4 writes " +
    "on the socket: that system time is a floor shared by all servers, smtp-sink included.",
    "",
  ];
}
