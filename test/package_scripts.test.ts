// What a newcomer reads from `npm test`: the runtimes and tools it starts
// print no colours (NO_COLOR, and no FORCE_COLOR, which Deno takes as
// "force" whatever its value), deno doc's warnings about @types/node's own
// files are counted instead of printed, and the tarball `npm pack` leaves
// in the checkout is not something git offers to commit.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { childEnv, denoDocFilter } from "../scripts/output.mjs";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const DENO = join(ROOT, "node_modules", ".bin", "deno");

function run(
  args: string[],
  env: Record<string, string | undefined>,
): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(DENO, args, { cwd: ROOT, env, maxBuffer: 16 << 20 }, (
      err,
      stdout,
      stderr,
    ) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(
        `${stdout}${stderr}`,
      ));
  });
}

describe("npm test's output", () => {
  it("runtimes get no colours, even when the caller sets FORCE_COLOR=0", async () => {
    const env = childEnv({ ...process.env, FORCE_COLOR: "0" });
    assert.equal(env.NO_COLOR, "1");
    assert.equal("FORCE_COLOR" in env, false);
    // Deno colours this when FORCE_COLOR is set to anything.
    const out = await run(
      ["eval", 'console.log({ a: 1 }); console.log("%cred", "color: red")'],
      env,
    );
    assert.equal(out, "{ a: 1 }\nred\n");
  });

  it("deno doc's warnings about @types/node's own files are hidden, and nothing else", async () => {
    // The real output of deno doc on an entry point that reaches node: types.
    const out = await run(
      ["doc", "--lint", "src/testing.ts"],
      childEnv(process.env),
    );
    const filter = denoDocFilter();
    const kept = out.split("\n").filter((line) => filter.keep(line));
    assert.deepEqual(kept.filter((l) => l !== ""), ["Checked 1 file"]);
    // And a warning about anything else stays, with its "at" line.
    const other = [
      "Warning Failed resolving types. Could not find package 'left-pad' from referrer 'file:///app/src/mod.ts'.",
      "    at file:///app/src/mod.ts:3:21",
    ];
    const f = denoDocFilter();
    assert.deepEqual(other.filter((l) => f.keep(l)), other);
    assert.equal(f.hidden, 0);
  });

  it("git ignores the tarball npm pack writes", () => {
    const ignore = readFileSync(join(ROOT, ".gitignore"), "utf8").split("\n");
    assert.ok(ignore.includes("*.tgz"), ".gitignore has *.tgz");
  });
});
