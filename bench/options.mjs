// A bench script's command line against its table of options, with no
// side effects (run.mjs's flags.mjs and ab.mjs's ab_flags.mjs both read
// theirs through it, and test/unit_bench.test.ts checks both).

/**
 * `args` read against `known` (option name → whether it takes a value):
 * `{ pairs }`, each option as [name, value] in the order given (`true`
 * for one without a value), or `{ problem }` for an unknown argument
 * (`--help` and bare words included) or an option whose value is missing.
 *
 * @example
 * readOptions(["--runs", "3", "--full"], { runs: true, full: false }).pairs;
 * // [["runs", "3"], ["full", true]]
 */
export function readOptions(args, known) {
  const pairs = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const name = a.startsWith("--") ? a.slice(2) : null;
    if (name === null || !(name in known)) {
      return { problem: `unknown argument ${a}` };
    }
    if (!known[name]) {
      pairs.push([name, true]);
      continue;
    }
    const v = args[++i];
    if (v === undefined || v.startsWith("--")) {
      return { problem: `${a} needs a value` };
    }
    pairs.push([name, v]);
  }
  return { pairs };
}
