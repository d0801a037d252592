// bench/ab.mjs's command line (its usage is at the top of ab.mjs), read
// without side effects so that test/unit_bench.test.ts can check it.
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { ALL_RUNTIMES } from "./launch.mjs";
import { readOptions } from "./options.mjs";

/**
 * The workloads ab.mjs runs (bench/workloads.mjs's loads), with its own
 * defaults: messages per batch and warm-up batches per server.
 */
export const AB_WORKLOADS = {
  W1: { messages: 10000, warm: 12 },
  W4: { messages: 5400, warm: 10 },
  W2: { messages: 2400, warm: 9 },
};

export const AB_USAGE =
  "usage: node bench/ab.mjs --a DIR --b DIR [--runtime bun|deno|node20|node24]" +
  " [--workload W1|W4|W2] [--rounds N] [--warm N] [--msgs N] [--no-pin]";

/** The options and whether each takes a value. */
const KNOWN = {
  a: true,
  b: true,
  runtime: true,
  workload: true,
  rounds: true,
  warm: true,
  msgs: true,
  "no-pin": false,
};

/** The file a tree must hold for `runtime`: the build, or mod.ts on Deno. */
const needs = (runtime) => runtime === "deno" ? "mod.ts" : "dist/mod.js";

/**
 * ab.mjs's options from `args`: `{ options }` or `{ problem }` (an unknown
 * option, a missing value, a bad runtime, workload or count, a tree
 * without what the runtime loads).
 *
 * @example
 * abArgs(["--a", "/tmp/base", "--b", ".", "--workload", "W4"]).options.rounds; // 4
 */
export function abArgs(args) {
  const { pairs, problem } = readOptions(args, KNOWN);
  if (problem !== undefined) return { problem };
  const got = Object.fromEntries(pairs);
  const runtime = got.runtime ?? "bun";
  if (!ALL_RUNTIMES.includes(runtime)) {
    return {
      problem: `--runtime: unknown "${runtime}" (one of ${
        ALL_RUNTIMES.join(",")
      })`,
    };
  }
  const workload = got.workload ?? "W1";
  const w = AB_WORKLOADS[workload];
  if (!w) {
    return {
      problem: `--workload: unknown "${workload}" (one of ${
        Object.keys(AB_WORKLOADS).join(",")
      })`,
    };
  }
  const counts = { rounds: 4, warm: w.warm, msgs: w.messages };
  for (const k of Object.keys(counts)) {
    if (got[k] === undefined) continue;
    const n = Number(got[k]);
    const least = k === "warm" ? 0 : 1;
    if (!Number.isInteger(n) || n < least) {
      return { problem: `--${k} takes a whole number ≥ ${least}` };
    }
    counts[k] = n;
  }
  const trees = {};
  for (const k of ["a", "b"]) {
    if (got[k] === undefined) return { problem: `--${k} DIR is required` };
    trees[k] = resolve(got[k]);
    const missing = ["bench/server.mjs", needs(runtime)].find((f) =>
      !existsSync(join(trees[k], f))
    );
    if (missing !== undefined) {
      return {
        problem: `--${k} ${got[k]}: no ${missing}` +
          (missing.startsWith("dist")
            ? " (build it there: node scripts/build.mjs)"
            : ""),
      };
    }
  }
  return {
    options: {
      a: trees.a,
      b: trees.b,
      runtime,
      workload,
      ...counts,
      pin: !got["no-pin"],
    },
  };
}
