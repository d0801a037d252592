// The command-line server as an operator runs it: `npm start` stopped by a
// SIGTERM sent to npm alone (what a supervisor or a container runtime
// sends), SIGHUP, what it logs, and --socket behind a PROXY protocol proxy.
import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import * as net from "node:net";
import { tmpdir } from "node:os";
import process from "node:process";
import { after, before, describe, it } from "node:test";
import { listeningPort, startCli, startProgram } from "./helpers/cli.ts";
import { connectWire, ehlo, Wire } from "./helpers/tls.ts";
import { hashPassword } from "../src/cli/password.ts";
import { subjectOf, subjectOfFile } from "../src/cli/subject.ts";
import { CliError, parseCliArgs, USAGE } from "../src/cli/args.ts";
import { connectTls, FINGERPRINT, fixture } from "./helpers/tls.ts";

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

/** Writes an auth file (mode 600) with one user, alice, and `password`'s hash. */
async function writeUsers(path: string, password: string): Promise<void> {
  await fs.writeFile(path, `alice:${await hashPassword(password)}\n`, {
    mode: 0o600,
  });
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
  // SIGTERM: npm passes it to its shell, which dies of it without passing
  // it on. SIGKILL and SIGHUP: npm dies, its shell stays.
  for (const signal of ["SIGTERM", "SIGKILL", "SIGHUP"] as const) {
    it(`${signal} to npm alone stops the server gracefully: summary, port free, no process left`, async () => {
      await npmStartStoppedBy(signal);
    });
  }

  async function npmStartStoppedBy(
    signal: "SIGTERM" | "SIGKILL" | "SIGHUP",
  ): Promise<void> {
    const maildir = freshPath();
    const npm = startProgram(
      "npm",
      ["start", "--", "--port", "0", "--maildir", maildir],
    );
    const port = await listeningPort(npm);
    assert.equal(await listening(port), true);
    npm.signal(signal);
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
  }
});

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

describe("cli: --socket with --proxy-protocol", () => {
  it("takes the PROXY header from the Unix socket's peer and stores the message", async () => {
    const maildir = freshPath();
    const socket = freshPath("sock");
    const cli = startCli(
      ["--socket", socket, "--proxy-protocol", "--maildir", maildir],
    );
    await cli.waitFor(/listening on /);
    const w = await connectWire({ path: socket });
    await w.send("PROXY TCP4 192.0.2.10 198.51.100.1 40010 25\r\n");
    const reply = await within(sendOne(w, "Subject: via proxy"), 20000);
    assert.match(reply ?? "no reply within 20 s", /^250 /, cli.stderr());
    await w.close();
    const [name] = await fs.readdir(`${maildir}/new`);
    const stored = await fs.readFile(`${maildir}/new/${name}`, "utf8");
    assert.match(stored, /^Received: from client\.test \(\[192\.0\.2\.10\]/m);
    await cli.stop("SIGTERM", 20000);
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
    );
    const exit = await within(cli.exited, 20000);
    assert.equal(exit?.code, 2, cli.stdout());
    assert.match(
      cli.stderr(),
      /^smtpd: --proxy-trusted: cannot be used with --socket/,
    );
  });
});

describe("cli: --quiet", () => {
  it("prints the listening line, with the port --port 0 chose", async () => {
    for (const format of ["text", "json"]) {
      const cli = startCli(
        ["--port", "0", "--quiet", "--log", format, "--maildir", freshPath()],
      );
      const port = await listeningPort(cli);
      assert.equal(await listening(port), true);
      await cli.stop("SIGTERM", 20000);
      assert.equal(cli.stdout().trim().split("\n").length, 1, cli.stdout());
    }
  });

  it("folds AUTH lock-outs into the client-failures summary, one line for three addresses", async () => {
    const users = freshPath("users");
    await writeUsers(users, "right");
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
    ], { env: { SMTPD_LOG_SUMMARY_MS: "300" } });
    const port = await listeningPort(cli);
    const wrong = btoa("\0alice\0wrong");
    // The three side by side: each one's failures are answered 250 ms,
    // then 500 ms, late.
    await Promise.all(
      ["127.0.0.2", "127.0.0.3", "127.0.0.4"].map(async (from) => {
        const w = await connectWire({
          port,
          host: "127.0.0.1",
          localAddress: from,
        });
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
      }),
    );
    await cli.waitFor(/auth-lockout/, "stderr");
    await cli.stop("SIGTERM", 20000);
    assert.doesNotMatch(cli.stderr(), /locked out/);
    const summaries = cli.stderr().match(/(\d+) auth-lockout/g) ?? [];
    const total = summaries.reduce((n, m) => n + parseInt(m), 0);
    assert.equal(total, 3, cli.stderr());
  });
});

describe("cli: flags", () => {
  it("suggests the flag meant for a mistyped one", () => {
    const cases: [string[], RegExp][] = [
      [
        ["--maildr", "x"],
        /^--maildr: unknown option \(did you mean --maildir\?\)$/,
      ],
      [["--max-recipient", "5"], /did you mean --max-recipients\?/],
      [["--Port=25"], /^--Port: unknown option \(did you mean --port\?\)$/],
      [["--tls-crt", "a"], /did you mean --tls-cert\?/],
      [["--zzzzzzzz"], /^--zzzzzzzz: unknown option \(see smtpd --help\)$/],
      [["hash-password", "--hepl"], /did you mean --help\?/],
    ];
    for (const [argv, message] of cases) {
      assert.throws(
        () => parseCliArgs(argv),
        (e: unknown) => e instanceof CliError && message.test(e.message),
        argv.join(" "),
      );
    }
  });

  it("takes durations with units, and bare numbers in each flag's old unit", () => {
    const options = (argv: string[]) => {
      const c = parseCliArgs(argv);
      assert.equal(c.command, "serve");
      return c.command === "serve" ? c.options : assert.fail();
    };
    const web = ["--webhook", "http://127.0.0.1:9/"];
    const cases: [string[], keyof ReturnType<typeof options>, number][] = [
      [["--command-timeout", "90"], "commandTimeout", 90_000],
      [["--command-timeout", "2m"], "commandTimeout", 120_000],
      [["--session-timeout", "1h"], "sessionTimeout", 3_600_000],
      [["--session-timeout", "0"], "sessionTimeout", Infinity],
      [["--greeting-delay", "1500"], "greetingDelay", 1500],
      [["--greeting-delay", "3s"], "greetingDelay", 3000],
      [[...web, "--webhook-timeout", "45s"], "webhookTimeout", 45_000],
      [[...web, "--webhook-timeout", "2500"], "webhookTimeout", 2500],
    ];
    for (const [argv, key, ms] of cases) {
      assert.equal(options(argv)[key], ms, argv.join(" "));
    }
    // Below the command deadline's least (1s): refused, naming the range.
    assert.throws(
      () => options(["--command-timeout", "500ms"]),
      /--command-timeout: must be a time from 1s to 24h such as 500ms, 30s, 5m or 1h \(a bare number is in seconds\), not "500ms"/,
    );
    for (const bad of ["1.5s", "5 m", "10d", "1s5", "s", ""]) {
      assert.throws(
        () => options(["--session-timeout", bad]),
        /--session-timeout: must be a time/,
        bad,
      );
    }
  });

  it("--help lists the flags in groups, every duration as TIME with its default in units", () => {
    for (
      const group of [
        "Listening:",
        "Delivery:",
        "Limits:",
        "TLS and AUTH:",
        "Proxy and processes:",
        "Logging:",
      ]
    ) {
      assert.match(USAGE, new RegExp(`^${group}$`, "m"));
    }
    assert.doesNotMatch(USAGE, /\bMS\b|\bSECONDS\b|milliseconds/);
    for (
      const [flag, dflt] of [
        ["--greeting-delay", "0s"],
        ["--webhook-timeout", "30s"],
        ["--command-timeout", "1m"],
        ["--session-timeout", "30m"],
      ]
    ) {
      const at = USAGE.indexOf(`  ${flag} TIME`);
      assert.ok(at >= 0, flag);
      assert.match(USAGE.slice(at, at + 300), new RegExp(`default ${dflt}`));
    }
    // Every flag in the help is one the parser knows, and the lines fit.
    const flags = [...USAGE.matchAll(/^ {2}(?:-h, )?(--[a-z-]+)/gm)].map((m) =>
      m[1]
    );
    assert.ok(flags.length >= 33, flags.join(" "));
    for (const flag of flags) {
      try {
        parseCliArgs([flag]);
      } catch (error) {
        assert.doesNotMatch(String(error), /unknown option/, flag);
      }
    }
    for (const line of USAGE.split("\n")) assert.ok(line.length <= 78, line);
    assert.match(
      USAGE,
      /SIGHUP\s+reloads --tls-cert, --tls-key and --auth-file/,
    );
  });
});

/** The SHA-256 fingerprint of the certificate an implicit-TLS server shows. */
async function certificateOf(port: number): Promise<string> {
  const t = await connectTls(port);
  const fp = t.getPeerCertificate().fingerprint256;
  t.destroy();
  return fp;
}

/** AUTH PLAIN as alice on a new implicit-TLS connection: the reply. */
async function authAs(port: number, password: string): Promise<string> {
  const w = new Wire(await connectTls(port));
  try {
    assert.match(await ehlo(w), /^250-/);
    return await w.command(`AUTH PLAIN ${btoa(`\0alice\0${password}`)}`);
  } finally {
    await w.close();
  }
}

describe("cli: SIGHUP", () => {
  it("reloads the certificate and the auth file; a bad file keeps the old ones and says why", async () => {
    const cert = freshPath("cert.pem");
    const key = freshPath("key.pem");
    const users = freshPath("users");
    await fs.copyFile(fixture("tls/cert.pem"), cert);
    await fs.copyFile(fixture("tls/key.pem"), key);
    await writeUsers(users, "first");
    const cli = startCli([
      "--port",
      "0",
      "--maildir",
      freshPath(),
      "--tls-cert",
      cert,
      "--tls-key",
      key,
      "--tls-implicit",
      "--auth-file",
      users,
    ]);
    const port = await listeningPort(cli);
    assert.equal(await certificateOf(port), FINGERPRINT.localhost);
    assert.match(await authAs(port, "first"), /^235 /);

    await fs.copyFile(fixture("tls/other-cert.pem"), cert);
    await fs.copyFile(fixture("tls/other-key.pem"), key);
    await writeUsers(users, "second");
    cli.signal("SIGHUP");
    await cli.waitFor(/SIGHUP: reloaded --tls-cert, --tls-key, --auth-file/);
    assert.equal(await certificateOf(port), FINGERPRINT.other);
    assert.match(await authAs(port, "second"), /^235 /);
    assert.match(await authAs(port, "first"), /^535 /);

    // A plaintext password: refused, the previous files stay in use.
    await fs.writeFile(users, "alice:second\n");
    cli.signal("SIGHUP");
    await cli.waitFor(
      /SIGHUP: reload failed, still using the previous .*--auth-file/,
      "stderr",
    );
    assert.doesNotMatch(cli.stderr(), /second/);
    assert.equal(await certificateOf(port), FINGERPRINT.other);
    assert.match(await authAs(port, "second"), /^235 /);

    await cli.stop("SIGTERM", 20000);
    assert.match(cli.stdout(), /stopped after \d+s: 0 messages/);
  });
});

describe("cli: the Subject in the message line", () => {
  const enc = new TextEncoder();
  it("is decoded, unfolded, cut at 100 characters and escaped, from the header block only", () => {
    const cases: [string, string | null][] = [
      ["Subject: hello\r\n\r\nbody", "hello"],
      [
        "From: a@b\r\nSubject: =?UTF-8?B?R3LDvMOfZQ==?= und\r\n =?ISO-8859-1?Q?=E4?=\r\n\r\n",
        "Grüße und ä",
      ],
      ["SUBJECT:  spaced \r\n\r\n", "spaced"],
      ["Subject: a\x1b[2Jb\u202ec\\d\r\n\r\n", "a\\x1b[2Jb\\u{202e}c\\\\d"],
      ["Subject: =?UTF-8?Q?line=0Abreak?=\r\n\r\n", "line\\x0abreak"],
      ["X-A: b\r\n\r\nSubject: in the body\r\n", null],
      ["From: a@b\r\n\r\n", null],
      [`Subject: ${"x".repeat(150)}\r\n\r\n`, `${"x".repeat(100)}…`],
    ];
    for (const [message, subject] of cases) {
      assert.equal(subjectOf(enc.encode(message)), subject, message);
    }
  });

  it("reads a stored file's header block, not its body", async () => {
    const path = freshPath("eml");
    await fs.writeFile(
      path,
      `Return-Path: <a@b>\r\nX-Long: ${
        "a".repeat(9000)
      }\r\nSubject: far down\r\n\r\n` +
        "Subject: not this\r\n".repeat(10000),
    );
    assert.equal(await subjectOfFile(path), "far down");
    assert.equal(await subjectOfFile(freshPath("none")), null);
  });

  it("is logged for each message, text and JSON", async () => {
    for (const format of ["text", "json"]) {
      const maildir = freshPath();
      const cli = startCli(
        ["--port", "0", "--log", format, "--maildir", maildir],
      );
      const port = await listeningPort(cli);
      const w = await connectWire({
        port,
        host: "127.0.0.1",
        localAddress: "127.0.0.1",
      });
      const reply = await sendOne(
        w,
        'Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe_"quoted"?=\r\n =?UTF-8?Q?=1B=5B31m?=',
        "Subject: from the body\r\n",
      );
      assert.match(reply, /^250 /);
      await w.close();
      const line = await cli.waitFor(
        /^.*(?: message id=|"event":"message").*$/m,
      );
      await cli.stop("SIGTERM", 20000);
      if (format === "text") {
        assert.match(line[0], / subject="Grüße \\"quoted\\"\\x1b\[31m" file=/);
      } else {
        const entry = JSON.parse(
          cli.stdout().split("\n").find((l) =>
            l.includes('"event":"message"')
          )!,
        );
        assert.equal(entry.subject, 'Grüße "quoted"\\x1b[31m');
      }
      assert.doesNotMatch(cli.stdout(), /from the body/);
    }
  });
});

describe("cli: SIGHUP under --workers", () => {
  it("the supervisor passes it on: every worker reloads the auth file, none stops", async () => {
    const users = freshPath("users");
    await writeUsers(users, "first");
    const cli = startCli([
      "--port",
      "0",
      "--workers",
      "2",
      "--maildir",
      freshPath(),
      "--auth-file",
      users,
      "--allow-insecure-auth",
    ]);
    const port = await listeningPort(cli);
    await cli.waitFor(/2 workers on /);
    await writeUsers(users, "second");
    cli.signal("SIGHUP");
    await cli.waitFor(
      /SIGHUP: reloaded --auth-file[^]*SIGHUP: reloaded --auth-file/,
    );
    // Whichever worker takes them, connections see the new file.
    for (let i = 0; i < 4; i++) {
      const w = await connectWire({
        port,
        host: "127.0.0.1",
        localAddress: "127.0.0.1",
      });
      assert.match(await ehlo(w), /^250-/);
      assert.match(
        await w.command(`AUTH PLAIN ${btoa("\0alice\0second")}`),
        /^235 /,
      );
      await w.close();
    }
    await cli.stop("SIGTERM", 20000);
    assert.match(
      cli.stdout(),
      /stopped after \d+s: 0 messages, 0 bytes \(2 workers\)/,
    );
  });
});
