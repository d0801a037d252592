// The command-line server as an operator runs it: `npm start` stopped by a
// SIGTERM sent to npm alone (what a supervisor or a container runtime
// sends), SIGHUP, what it logs, and --socket behind a PROXY protocol proxy.
import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import * as net from "node:net";
import { tmpdir } from "node:os";
import process from "node:process";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { listeningPort, startCli, startProgram } from "./helpers/cli.ts";
import { ehlo, Wire } from "./helpers/tls.ts";
import { hashPassword } from "../src/cli/password.ts";

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

/** A connection to a Unix socket, as an SMTP line client. */
function connectUnix(path: string): Promise<Wire> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ path });
    socket.once("error", reject);
    socket.once("connect", () => {
      socket.off("error", reject);
      resolve(new Wire(socket));
    });
  });
}

/** Sends one message on `w` (after the greeting); resolves with the final reply. */
async function sendOne(
  w: Wire,
  headers: string,
  body = "hello\r\n",
): Promise<string> {
  assert.match(await ehlo(w), /^250-/);
  assert.match(await w.command("MAIL FROM:<a@example.org>"), /^250 /);
  assert.match(await w.command("RCPT TO:<b@example.org>"), /^250 /);
  assert.match(await w.command("DATA"), /^354 /);
  return w.command(`${headers}\r\n\r\n${body}.`);
}

/** Stops a CLI with SIGTERM and waits for it. */
async function stop(p: { child: { pid?: number }; exited: Promise<unknown> }) {
  process.kill(p.child.pid!, "SIGTERM");
  assert.notEqual(await within(p.exited, 20000), null, "did not stop");
}

describe("cli: --socket with --proxy-protocol", () => {
  it("takes the PROXY header from the Unix socket's peer and stores the message", async () => {
    const maildir = freshPath();
    const socket = freshPath("sock");
    const cli = startCli(
      ["--socket", socket, "--proxy-protocol", "--maildir", maildir],
      { cwd: ROOT },
    );
    await cli.waitFor(/listening on /);
    const w = await connectUnix(socket);
    await w.send("PROXY TCP4 192.0.2.10 198.51.100.1 40010 25\r\n");
    const reply = await within(sendOne(w, "Subject: via proxy"), 20000);
    assert.match(reply ?? "no reply within 20 s", /^250 /, cli.stderr());
    await w.close();
    const [name] = await fs.readdir(`${maildir}/new`);
    const stored = await fs.readFile(`${maildir}/new/${name}`, "utf8");
    assert.match(stored, /^Received: from client\.test \(\[192\.0\.2\.10\]/m);
    await stop(cli);
  });

  it("refuses --proxy-trusted with --socket, naming the flag", async () => {
    const cli = startCli(
      [
        "--socket",
        freshPath("sock"),
        "--proxy-protocol",
        "--proxy-trusted",
        "10.0.0.5",
      ],
      { cwd: ROOT },
    );
    const exit = await within(cli.exited, 20000);
    assert.equal(exit?.code, 2, cli.stdout());
    assert.match(
      cli.stderr(),
      /^smtpd: --proxy-trusted: cannot be used with --socket/,
    );
  });
});

/** A plaintext connection from `localAddress` (a loopback address) to 127.0.0.1:port. */
function connectFrom(port: number, localAddress: string): Promise<Wire> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: "127.0.0.1", localAddress });
    socket.once("error", reject);
    socket.once("connect", () => {
      socket.off("error", reject);
      resolve(new Wire(socket));
    });
  });
}

describe("cli: --quiet", () => {
  it("prints the listening line, with the port --port 0 chose", async () => {
    for (const format of ["text", "json"]) {
      const cli = startCli(
        ["--port", "0", "--quiet", "--log", format, "--maildir", freshPath()],
        { cwd: ROOT },
      );
      const port = await listeningPort(cli);
      assert.equal(await listening(port), true);
      await stop(cli);
      assert.equal(cli.stdout().trim().split("\n").length, 1, cli.stdout());
    }
  });

  it("folds AUTH lock-outs into the client-failures summary, one line for three addresses", async () => {
    const users = freshPath("users");
    await fs.writeFile(users, `alice:${await hashPassword("right")}\n`, {
      mode: 0o600,
    });
    const cli = startCli([
      "--port",
      "0",
      "--quiet",
      "--maildir",
      freshPath(),
      "--auth-file",
      users,
      "--allow-insecure-auth",
      "--max-auth-failures-per-ip",
      "2",
    ], { cwd: ROOT, env: { SMTPD_LOG_SUMMARY_MS: "300" } });
    const port = await listeningPort(cli);
    const wrong = btoa("\0alice\0wrong");
    for (const from of ["127.0.0.2", "127.0.0.3", "127.0.0.4"]) {
      const w = await connectFrom(port, from);
      assert.match(await ehlo(w), /^250-/);
      for (let i = 0; i < 2; i++) {
        assert.match(await w.command(`AUTH PLAIN ${wrong}`), /^535 /);
      }
      // Locked out now: even the right password gets 454.
      assert.match(
        await w.command(`AUTH PLAIN ${btoa("\0alice\0right")}`),
        /^454 4\.7\.0 /,
      );
      await w.close();
    }
    await cli.waitFor(/auth-lockout/, "stderr");
    await stop(cli);
    assert.doesNotMatch(cli.stderr(), /locked out/);
    const summaries = cli.stderr().match(/(\d+) auth-lockout/g) ?? [];
    const total = summaries.reduce((n, m) => n + parseInt(m), 0);
    assert.equal(total, 3, cli.stderr());
  });
});
