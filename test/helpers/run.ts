// How the tests start a TypeScript program (the CLI, an example) as a child
// process under the runtime that runs them.
import process from "node:process";

/** The runtime that runs the tests. */
export const RUNTIME: "deno" | "bun" | "node" =
  (globalThis as { Deno?: unknown }).Deno !== undefined
    ? "deno"
    : (globalThis as { Bun?: unknown }).Bun !== undefined
    ? "bun"
    : "node";

/** `cmd` and `args` that run `file` (a path from the repository root) on this runtime. */
export function tsCommand(file: string): { cmd: string; args: string[] } {
  const g = globalThis as { Deno?: unknown; Bun?: unknown };
  const cmd = process.execPath;
  if (g.Deno !== undefined) return { cmd, args: ["run", "-A", file] };
  if (g.Bun !== undefined) return { cmd, args: [file] };
  // Node strips types itself from 23.6 on; older versions load tsx.
  const [major, minor] = process.versions.node.split(".").map(Number);
  return major > 23 || (major === 23 && minor >= 6)
    ? { cmd, args: [file] }
    : { cmd, args: ["--import", "tsx", file] };
}

/** How to run the CLI (src/cli/main.ts). */
export function cliCommand(): { cmd: string; args: string[] } {
  return tsCommand("src/cli/main.ts");
}
