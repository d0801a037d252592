// run.mjs's command line (its usage is at the top of run.mjs): the parts,
// runtimes, servers and workloads selected, the mode and its sizes, and
// which smtpd code each runtime loads. Read once, when first imported.
import process from "node:process";
import { ALL_RUNTIMES, BIN, defaultLib } from "./launch.mjs";
import { readOptions } from "./options.mjs";

export const argv = process.argv.slice(2);
const flag = (name) => argv.includes(`--${name}`);
const value = (name) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : undefined;
};
export const ALL_PARTS = ["engine", "load", "memory", "milter"];
/**
 * The parts a run without `--only` runs: all but the milter part (rspamd
 * alone takes some 15 s to listen, the whole part about a minute or more).
 */
export const DEFAULT_PARTS = ["engine", "load", "memory"];
export const ALL_SERVERS = [
  "smtpd",
  "smtpd-byob",
  "smtpd-cli",
  "smtp-server",
  "floor",
  "floor-reuse",
  "floor-contract",
  "smtp-sink",
];
export const ALL_WORKLOADS = ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8"];
const pick = (text, all) =>
  text === undefined ? all : text.split(",").filter((x) => all.includes(x));
// `--only bun,node24` selects runtimes; `--only engine,load` selects parts.
const onlyRuntimes = (value("only") ?? "").split(",").some((x) =>
  ALL_RUNTIMES.includes(x)
);
export const FULL = flag("full");
export const RUNS = Math.max(1, Number(value("runs")) || (FULL ? 7 : 5));
export const PARTS = onlyRuntimes || value("only") === undefined
  ? DEFAULT_PARTS
  : pick(value("only"), ALL_PARTS);
export const RUNTIME_NAMES = pick(
  value("runtimes") ?? (onlyRuntimes ? value("only") : undefined),
  ALL_RUNTIMES,
);
export const SERVER_KINDS = pick(value("servers"), ALL_SERVERS);
export const WORKLOAD_NAMES = pick(value("workloads"), ALL_WORKLOADS);
export const DEFAULT_SELECTION = PARTS.length === DEFAULT_PARTS.length &&
  DEFAULT_PARTS.every((p) => PARTS.includes(p)) &&
  RUNTIME_NAMES.length === ALL_RUNTIMES.length &&
  SERVER_KINDS.length === ALL_SERVERS.length &&
  WORKLOAD_NAMES.length === ALL_WORKLOADS.length;
export const LOAD_TIMEOUT = FULL ? 900_000 : 120_000;
/** Fresh server processes per server in the memory bench (median of them). */
export const MEM_RUNS = Math.max(
  1,
  Number(value("mem-runs")) || (FULL ? 3 : 1),
);
/**
 * Fresh processes through the 100 MB message per server that a memory
 * goal compares (the floors, smtpd-cli, smtpd-byob; the others MEM_RUNS):
 * its growth spreads by 4–8 MB between processes on Bun (the floor's
 * too: its allocator takes memory in 4 MiB pieces), so one process each
 * made the goal met in one run and missed in the next.
 */
export const BIG_RUNS = Math.max(
  MEM_RUNS,
  Number(value("big-runs")) || (FULL ? 5 : 3),
);
/**
 * The smtpd code each runtime's servers load: what its users install (the
 * npm build on Node and Bun, the sources on Deno: bench/launch.mjs), or
 * `--lib src|dist` for every runtime.
 */
export const LIB = Object.fromEntries(
  ALL_RUNTIMES.map((rt) => [
    rt,
    ["src", "dist"].includes(value("lib")) ? value("lib") : defaultLib(rt),
  ]),
);
/** Per runtime: whether it is installed (`ok`). */
export const RUNTIMES = Object.fromEntries(
  ALL_RUNTIMES.map((rt) => [rt, { ok: BIN[rt] !== null }]),
);
/** "full" or "quick". */
export const MODE = FULL ? "full" : "quick";
/** `--messages N`: messages per measured run (NaN when not given). */
export const MESSAGES = Number(value("messages"));
/** `--out PATH`, if given. */
export const OUT = value("out");
/** `--no-write`: print the report, write only the JSON. */
export const NO_WRITE = flag("no-write");
/**
 * `--no-pin`: the load part leaves the servers and the load generator to
 * the scheduler instead of pinning them to a core each on W1 and W4
 * (bench/placement.mjs).
 */
export const NO_PIN = flag("no-pin");
/**
 * `--interleave K`: the load part's measured rounds run each server's load
 * as K sub-batches taken in turn with the other servers of its group
 * (bench/load_part.mjs `interleavedRound`; one workload per run only);
 * 1, the default: one run per server and round.
 */
export const INTERLEAVE = Math.max(
  1,
  Math.floor(Number(value("interleave"))) || 1,
);

/** The flags run.mjs takes, with whether each takes a value. */
const KNOWN = {
  full: false,
  "no-write": false,
  "no-pin": false,
  runs: true,
  only: true,
  runtimes: true,
  servers: true,
  workloads: true,
  out: true,
  "mem-runs": true,
  "big-runs": true,
  messages: true,
  lib: true,
  interleave: true,
};

/**
 * What is wrong with run.mjs's command line, or null: an unknown option
 * (`--help` included) or a name no list knows. run.mjs calls it before it
 * measures anything, so a typo stops the run instead of starting the
 * default one (only bench/run.mjs: other scripts import this file with
 * command lines of their own).
 */
export function argvProblem(args = argv) {
  const { pairs, problem } = readOptions(args, KNOWN);
  if (problem !== undefined) return problem;
  const lists = {
    only: [...ALL_PARTS, ...ALL_RUNTIMES],
    runtimes: ALL_RUNTIMES,
    servers: ALL_SERVERS,
    workloads: ALL_WORKLOADS,
  };
  for (const [name, v] of pairs) {
    if (name in lists) {
      const bad = v.split(",").find((x) => !lists[name].includes(x));
      if (bad !== undefined) {
        return `--${name}: unknown "${bad}" (one of ${lists[name].join(",")})`;
      }
    }
    if (name === "lib" && !["src", "dist"].includes(v)) {
      return `--lib takes src or dist`;
    }
  }
  return null;
}
