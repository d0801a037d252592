// The command-line server's life cycle as an operator drives it: `npm start`
// stopped by a SIGTERM sent to npm alone (what a supervisor or a container
// runtime sends), and SIGHUP.
import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import * as net from "node:net";
import { tmpdir } from "node:os";
import process from "node:process";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { listeningPort, startProgram } from "./helpers/cli.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

let tmp = "";
let counter = 0;
before(async () => {
  tmp = await fs.mkdtemp(`${tmpdir()}/smtpd-cli-signals-`);
});
after(async () => {
  // A server left behind (the failure this file tests for) is stopped.
  for (const pid of await processesNaming(tmp)) process.kill(pid, "SIGKILL");
  await fs.rm(tmp, { recursive: true, force: true });
});
const freshPath = (name = "md") => `${tmp}/${name}${++counter}`;

/** The processes whose command line holds `text` (Linux: /proc). */
async function processesNaming(text: string): Promise<number[]> {
  const pids: number[] = [];
  let entries: string[];
  try {
    entries = await fs.readdir("/proc");
  } catch {
    return pids;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = await fs.readFile(`/proc/${entry}/cmdline`, "utf8");
      if (cmdline.includes(text)) pids.push(Number(entry));
    } catch { /* gone meanwhile */ }
  }
  return pids;
}

/** Whether something accepts connections on 127.0.0.1:port. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: "127.0.0.1" });
    sock.once("connect", () => {
      sock.destroy();
      resolve(true);
    });
    sock.once("error", () => resolve(false));
  });
}

/** `promise`, or `null` after `ms`. */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const result = await Promise.race([
    promise,
    new Promise<null>((r) => (timer = setTimeout(() => r(null), ms))),
  ]);
  clearTimeout(timer);
  return result;
}

describe("cli: npm start", () => {
  it("SIGTERM to npm alone stops the server gracefully: summary, port free, no process left", async () => {
    const maildir = freshPath();
    const npm = startProgram(
      "npm",
      ["start", "--", "--port", "0", "--maildir", maildir],
      { cwd: ROOT },
    );
    const port = await listeningPort(npm);
    assert.equal(await listening(port), true);
    process.kill(npm.child.pid!, "SIGTERM");
    // "close" comes once every process holding npm's output has exited.
    const exit = await within(npm.exited, 20000);
    const left = await processesNaming(maildir);
    assert.ok(
      exit !== null,
      `still running after 20 s: pids ${left.join(" ")}\n${npm.stdout()}`,
    );
    assert.deepEqual(left, []);
    assert.match(npm.stdout(), /closing \(messages in transfer may finish\)/);
    assert.match(npm.stdout(), /stopped after \d+s: 0 messages, 0 bytes/);
    assert.equal(await listening(port), false);
  });
});
