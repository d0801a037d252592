// Maildir.sweepTmp: orphans older than 36 hours go, anything fresher (a
// delivery in progress, in this process or another) stays.
import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import { tmpdir } from "node:os";
import { after, before, describe, it } from "node:test";
import { Maildir, type MaildirFs, TMP_MAX_AGE } from "../src/maildir.ts";

const HOUR = 3600_000;
let root = "";
let n = 0;
before(async () => {
  root = await fs.mkdtemp(`${tmpdir()}/smtpd-sweep-`);
});
after(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

async function maildirWith(
  files: Record<string, number>,
): Promise<{ maildir: Maildir; path: string }> {
  const path = `${root}/md${++n}`;
  const maildir = new Maildir(path);
  await maildir.create();
  const now = Date.now();
  for (const [name, ageHours] of Object.entries(files)) {
    const file = `${path}/tmp/${name}`;
    await fs.writeFile(file, name);
    const t = new Date(now - ageHours * HOUR);
    await fs.utimes(file, t, t);
  }
  return { maildir, path };
}

describe("Maildir.sweepTmp", () => {
  it("removes files older than 36 hours and keeps the others", async () => {
    const { maildir, path } = await maildirWith({
      "old.P1": 40,
      "very-old.P2": 24 * 30,
      "fresh.P3": 0,
      "almost.P4": 35.9,
    });
    await fs.mkdir(`${path}/tmp/old-dir`);
    const old = new Date(Date.now() - 50 * HOUR);
    await fs.utimes(`${path}/tmp/old-dir`, old, old);
    assert.equal(await maildir.sweepTmp(), 2);
    assert.deepEqual(
      (await fs.readdir(`${path}/tmp`)).sort(),
      ["almost.P4", "fresh.P3", "old-dir"],
    );
    // Nothing left to sweep.
    assert.equal(await maildir.sweepTmp(), 0);
  });

  it("takes the time and the age to use", async () => {
    const { maildir, path } = await maildirWith({ a: 0, b: 2 });
    assert.equal(TMP_MAX_AGE, 36 * HOUR);
    assert.equal(await maildir.sweepTmp(Date.now(), HOUR), 1);
    assert.deepEqual(await fs.readdir(`${path}/tmp`), ["a"]);
    assert.equal(await maildir.sweepTmp(Date.now() + 37 * HOUR), 1);
    assert.deepEqual(await fs.readdir(`${path}/tmp`), []);
  });

  it("sweeps nothing when tmp/ is missing", async () => {
    assert.equal(await new Maildir(`${root}/none${++n}`).sweepTmp(), 0);
  });

  it("skips a file that vanishes meanwhile (renamed by its delivery)", async () => {
    const files = new Map([["gone", 0], ["old", 0]]);
    const fake: MaildirFs = {
      mkdir: () => Promise.resolve(),
      open: () => Promise.reject(new Error("unused")),
      rename: () => Promise.reject(new Error("unused")),
      unlink: (p) => {
        files.delete(p.slice(p.lastIndexOf("/") + 1));
        return Promise.resolve();
      },
      readdir: () => Promise.resolve([...files.keys()]),
      lstat: (p) => {
        const name = p.slice(p.lastIndexOf("/") + 1);
        if (name === "gone") {
          return Promise.reject(
            Object.assign(new Error("gone"), { code: "ENOENT" }),
          );
        }
        return Promise.resolve({ mtimeMs: 0, isFile: () => true });
      },
    };
    const maildir = new Maildir("/md", { fs: fake });
    assert.equal(await maildir.sweepTmp(40 * HOUR), 1);
    assert.deepEqual([...files.keys()], ["gone"]);
  });

  it("throws a TypeError with an fs that cannot list", async () => {
    const fake: MaildirFs = {
      mkdir: () => Promise.resolve(),
      open: () => Promise.reject(new Error("unused")),
      rename: () => Promise.resolve(),
      unlink: () => Promise.resolve(),
    };
    await assert.rejects(
      new Maildir("/md", { fs: fake }).sweepTmp(),
      (e: unknown) =>
        e instanceof TypeError && /^Cannot sweep tmp\//.test(e.message),
    );
  });
});
