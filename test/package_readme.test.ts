// The README's commands work when pasted: the ones a test can run without
// a running server are run here as written.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { parseAuthFile, verifyPassword } from "../src/cli/password.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const README = readFileSync(join(ROOT, "README.md"), "utf8");

/** The README's shell lines that contain `needle`. */
function commands(needle: string): string[] {
  const blocks = [...README.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]);
  return blocks.flatMap((b) => b.split("\n")).filter((l) => l.includes(needle));
}

describe("README", () => {
  it("the hash-password command writes one user:hash line and nothing else", async () => {
    const [line] = commands("hash-password alice >> users");
    assert.ok(line, "the README shows the command");
    // As pasted, minus the trailing comment; `users` in a temp folder.
    const dir = mkdtempSync(join(tmpdir(), "smtpd-readme-"));
    try {
      const users = join(dir, "users");
      const command = line.replace(/\s+#.*$/, "").replace(
        ">> users",
        `>> '${users}'`,
      );
      await new Promise<void>((resolve, reject) => {
        execFile(
          "sh",
          ["-c", command],
          { cwd: ROOT },
          (err, _out, stderr) =>
            err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(),
        );
      });
      const text = readFileSync(users, "utf8");
      assert.match(text, /^alice:\$scrypt\$[^\n]+\n$/, JSON.stringify(text));
      const hash = parseAuthFile(text).get("alice");
      assert.ok(hash);
      assert.equal(await verifyPassword("a secret", hash), true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
