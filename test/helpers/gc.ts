// A full garbage collection on demand, for tests that measure what the
// server keeps in memory (RSS sampled between collections).
import v8 from "node:v8";
import vm from "node:vm";

/** A function that runs a full garbage collection, on Deno, Bun or Node. */
export function findGc(): () => void {
  const g = globalThis as {
    gc?: () => void;
    Bun?: { gc(force: boolean): void };
  };
  if (g.Bun) return () => g.Bun!.gc(true);
  if (g.gc) return g.gc;
  v8.setFlagsFromString("--expose-gc");
  return vm.runInNewContext("gc") as () => void;
}
