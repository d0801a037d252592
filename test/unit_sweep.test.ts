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
        return Promise.resolve({
          mtimeMs: 0,
          isFile: () => name !== "tmp",
          isDirectory: () => name === "tmp",
        });
      },
    };
    const maildir = new Maildir("/md", { fs: fake });
    assert.equal(await maildir.sweepTmp(40 * HOUR), 1);
    assert.deepEqual([...files.keys()], ["gone"]);
  });

  it("does not follow tmp/ when it is a symbolic link, nor a link in it", async () => {
    const elsewhere = `${root}/elsewhere${++n}`;
    await fs.mkdir(elsewhere);
    const old = new Date(Date.now() - 50 * HOUR);
    for (const name of ["a", "b"]) {
      await fs.writeFile(`${elsewhere}/${name}`, name);
      await fs.utimes(`${elsewhere}/${name}`, old, old);
    }
    const path = `${root}/md${++n}`;
    await fs.mkdir(path);
    await fs.symlink(elsewhere, `${path}/tmp`);
    await assert.rejects(
      new Maildir(path).sweepTmp(),
      (e: Error) =>
        /^Cannot sweep .*\/tmp: it is not a directory/.test(e.message),
    );
    assert.deepEqual((await fs.readdir(elsewhere)).sort(), ["a", "b"]);
    // A real tmp/ with a link in it to an old file: the link is not a
    // regular file, so neither it nor its target goes.
    const { maildir, path: p2 } = await maildirWith({ "old.P9": 40 });
    await fs.symlink(`${elsewhere}/a`, `${p2}/tmp/link`);
    assert.equal(await maildir.sweepTmp(), 1);
    assert.deepEqual(await fs.readdir(`${p2}/tmp`), ["link"]);
    assert.deepEqual((await fs.readdir(elsewhere)).sort(), ["a", "b"]);
  });

  it("lets timers run between batches of files, and stops when its signal aborts", async () => {
    // An fs whose every call resolves at once: without a turn of the event
    // loop between batches, the timer below would run only after the sweep.
    const names = Array.from({ length: 1000 }, (_, i) => `f${i}`);
    let unlinked = 0;
    const fake: MaildirFs = {
      mkdir: () => Promise.resolve(),
      open: () => Promise.reject(new Error("unused")),
      rename: () => Promise.reject(new Error("unused")),
      unlink: () => {
        unlinked++;
        return Promise.resolve();
      },
      readdir: () => Promise.resolve(names),
      lstat: (p) =>
        Promise.resolve({
          mtimeMs: 0,
          isFile: () => !p.endsWith("/tmp"),
          isDirectory: () => p.endsWith("/tmp"),
        }),
    };
    const stop = new AbortController();
    let atTimer = -1;
    setTimeout(() => {
      atTimer = unlinked;
      stop.abort();
    }, 0);
    const removed = await new Maildir("/md", { fs: fake }).sweepTmp(
      40 * HOUR,
      undefined,
      { signal: stop.signal },
    );
    assert.ok(atTimer > 0 && atTimer < names.length, `timer at ${atTimer}`);
    assert.equal(removed, atTimer);
    assert.equal(unlinked, atTimer);
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
