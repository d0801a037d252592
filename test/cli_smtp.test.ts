// The command-line server (src/cli/): its argument checks in process, and
// the program itself as a child process under the same runtime as the
// tests, fed by swaks, nodemailer and a raw socket, read back with Python's
// mailbox module. Never execFileSync while a server runs: children are
// awaited asynchronously.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as fs from "node:fs/promises";
import * as net from "node:net";
import { tmpdir } from "node:os";
import process from "node:process";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import nodemailer from "nodemailer";
import { CliError, parseCliArgs, VERSION } from "../src/cli/args.ts";
import {
  checkCredentials,
  hashPassword,
  parseAuthFile,
  verifyPassword,
} from "../src/cli/password.ts";
import { hookErrorLogger, Log, serverLogger } from "../src/cli/log.ts";
import { serve } from "../mod.ts";
import { cliCommand } from "./helpers/run.ts";
import { startListeningCli } from "./helpers/cli.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const CERT = `${ROOT}test/fixtures/tls/cert.pem`;
const KEY = `${ROOT}test/fixtures/tls/key.pem`;
const enc = new TextEncoder();
const dec = new TextDecoder();

let tmp = "";
let counter = 0;
before(async () => {
  tmp = await fs.mkdtemp(`${tmpdir()}/smtpd-cli-test-`);
});
after(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

/** A fresh path under the test directory (not created). */
function freshPath(name = "md"): string {
  return `${tmp}/${name}${++counter}`;
}

// ---------------------------------------------------------------------------
// Child processes

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program to completion (asynchronously), never throwing on its exit code. */
function run(
  cmd: string,
  args: string[],
  input?: string,
): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args,
      { cwd: ROOT, timeout: 60000, encoding: "utf8" },
      (error, stdout, stderr) => {
        const code = error === null
          ? 0
          : typeof (error as { code?: unknown }).code === "number"
          ? (error as unknown as { code: number }).code
          : null;
        if (error !== null && code === null) {
          reject(new Error(`${cmd} failed: ${error.message}\n${stderr}`));
        } else {resolve({
            code,
            stdout: String(stdout),
            stderr: String(stderr),
          });}
      },
    );
    if (input !== undefined) child.stdin!.end(input);
  });
}

/** Runs the CLI to completion. */
function runCli(args: string[], input?: string): Promise<Result> {
  const { cmd, args: base } = cliCommand();
  return run(cmd, [...base, ...args], input ?? "");
}

// ---------------------------------------------------------------------------
// A raw SMTP client, byte-exact

interface Smtp {
  /** Sends text, UTF-8 encoded. */
  send(data: string): void;
  /** The next complete reply. */
  reply(): Promise<string>;
  /** Sends a line (CRLF added) and reads its reply. */
  cmd(line: string): Promise<string>;
  close(): void;
  readonly closed: Promise<void>;
}

function smtp(port: number): Promise<Smtp> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: "127.0.0.1" });
    sock.setEncoding("latin1");
    let buf = "";
    let ended = false;
    let wake: (() => void) | null = null;
    const closed = new Promise<void>((r) => sock.once("close", () => r()));
    sock.on("data", (d: string) => {
      buf += d;
      wake?.();
    });
    sock.on("close", () => {
      ended = true;
      wake?.();
    });
    sock.on("error", () => {});
    const reply = async (): Promise<string> => {
      const deadline = Date.now() + 20000;
      for (;;) {
        const m = /^(?:\d{3}-[^\r\n]*\r\n)*\d{3}(?: [^\r\n]*)?\r\n/.exec(buf);
        if (m !== null) {
          buf = buf.slice(m[0].length);
          return m[0];
        }
        if (ended) {
          throw new Error(`connection closed; got ${JSON.stringify(buf)}`);
        }
        if (Date.now() > deadline) {
          throw new Error(`no reply within 20 s; got ${JSON.stringify(buf)}`);
        }
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, 500);
        });
        wake = null;
      }
    };
    const client: Smtp = {
      send: (data) => void sock.write(enc.encode(data)),
      reply,
      cmd(line) {
        sock.write(enc.encode(line + "\r\n"));
        return reply();
      },
      close: () => sock.destroy(),
      closed,
    };
    sock.once("connect", () => resolve(client));
    sock.once("error", reject);
  });
}

/** Greets and opens a transaction up to the 354. */
async function openData(
  port: number,
  from = "sender@example.org",
  to = ["rcpt@example.net"],
): Promise<Smtp> {
  const c = await smtp(port);
  assert.match(await c.reply(), /^220 /);
  assert.match(await c.cmd("EHLO client.test"), /^250[ -]/);
  assert.match(await c.cmd(`MAIL FROM:<${from}>`), /^250 /);
  for (const rcpt of to) {
    assert.match(await c.cmd(`RCPT TO:<${rcpt}>`), /^250 /);
  }
  assert.match(await c.cmd("DATA"), /^354 /);
  return c;
}

// ---------------------------------------------------------------------------
// Reading the Maildir

async function list(dir: string): Promise<string[]> {
  return (await fs.readdir(dir)).sort();
}

/** Asserts that `dir` holds `n` entries (delivery ends before the 250) and lists them. */
async function files(dir: string, n = 1): Promise<string[]> {
  const names = await list(dir);
  assert.equal(names.length, n, `${dir}: ${names.join(", ")}`);
  return names;
}

/** The trace headers and the bytes below them. */
function splitTrace(file: Uint8Array): { trace: string; body: Uint8Array } {
  const text = dec.decode(file.subarray(0, Math.min(file.length, 4000)));
  const m =
    /^Return-Path: [^\r\n]*\r\nReceived: [^\r\n]*(?:\r\n\t[^\r\n]*)*\r\n/
      .exec(text);
  assert.ok(m, `trace headers on top: ${JSON.stringify(text.slice(0, 300))}`);
  return {
    trace: m[0],
    body: new Uint8Array(file.subarray(enc.encode(m[0]).length)),
  };
}

const MESSAGE = [
  "From: Alice <sender@example.org>",
  "To: Bob <rcpt@example.net>",
  "Subject: smtpd CLI test",
  "Message-ID: <cli-test@example.org>",
  "MIME-Version: 1.0",
  "Content-Type: text/plain; charset=utf-8",
  "Content-Transfer-Encoding: 8bit",
  "",
  "Hello from the test.",
  ".A line that starts with a dot (stuffed on the wire).",
  "..Two dots.",
  "Grüße, ünïcödé",
  "   trailing spaces   ",
  "",
  "",
].join("\r\n");

// ---------------------------------------------------------------------------

describe("cli: arguments", () => {
  it("has the documented defaults", () => {
    const c = parseCliArgs([]);
    assert.equal(c.command, "serve");
    if (c.command !== "serve") return;
    assert.equal(c.options.host, "127.0.0.1");
    assert.equal(c.options.port, 2525);
    assert.equal(c.options.maildir, "./maildir");
    assert.equal(c.options.log, "text");
    assert.equal(c.options.size, undefined);
    assert.equal(c.options.quiet, false);
    assert.equal(c.options.socket, undefined);
    assert.equal(c.options.lmtp, false);
    assert.equal(c.options.chunking, true);
  });

  it("reads --socket and --lmtp (without --host and --port)", () => {
    const c = parseCliArgs(["--lmtp", "--socket", "/run/smtpd/lmtp.sock"]);
    assert.equal(c.command, "serve");
    if (c.command !== "serve") return;
    assert.equal(c.options.socket, "/run/smtpd/lmtp.sock");
    assert.equal(c.options.lmtp, true);
    assert.equal(c.options.chunking, true);
  });

  it("reads every flag", () => {
    const c = parseCliArgs([
      "--host=::1",
      "--port",
      "25",
      "--maildir",
      "/var/mail/x",
      "--server-name",
      "mx.test",
      "--size",
      "10M",
      "--max-recipients",
      "5",
      "--max-connections",
      "7",
      "--workers",
      "3",
      "--tls-cert",
      "c.pem",
      "--tls-key",
      "k.pem",
      "--tls-implicit",
      "--require-tls",
      "--auth-file",
      "users",
      "--dsn",
      "--lmtp",
      "--no-chunking",
      "--proxy-protocol",
      "--proxy-trusted",
      "10.0.0.0/8, ::1",
      "--greeting-delay",
      "3000",
      "--log",
      "json",
      "--quiet",
      "--reverse-dns",
      "--dns-server",
      "127.0.0.1:5353",
      "--dns-server",
      "::1",
      "--metrics",
      "[::1]:9465",
    ]);
    assert.deepEqual(c, {
      command: "serve",
      options: {
        host: "::1",
        port: 25,
        socket: undefined,
        lmtp: true,
        chunking: false,
        maildir: "/var/mail/x",
        serverName: "mx.test",
        size: 10 * 1024 * 1024,
        maxRecipients: 5,
        maxConnections: 7,
        workers: 3,
        tlsCert: "c.pem",
        tlsKey: "k.pem",
        tlsImplicit: true,
        requireTls: true,
        authFile: "users",
        allowInsecureAuth: false,
        dsn: true,
        proxyProtocol: true,
        proxyTrusted: ["10.0.0.0/8", "::1"],
        greetingDelay: 3000,
        reverseDns: true,
        dnsServers: ["127.0.0.1:5353", "::1"],
        metrics: { host: "::1", port: 9465 },
        log: "json",
        quiet: true,
        verbose: false,
      },
    });
  });

  it("knows --help, --version and hash-password", () => {
    assert.deepEqual(parseCliArgs(["--help"]), { command: "help" });
    assert.deepEqual(parseCliArgs(["-h"]), { command: "help" });
    assert.deepEqual(parseCliArgs(["--version"]), { command: "version" });
    assert.deepEqual(parseCliArgs(["hash-password"]), {
      command: "hash-password",
    });
    assert.deepEqual(parseCliArgs(["hash-password", "bob"]), {
      command: "hash-password",
      user: "bob",
    });
  });

  const bad: [string[], string][] = [
    [["--bogus"], "--bogus"],
    [["--port"], "--port"],
    [["--port", "65536"], "--port"],
    [["--port", "-1"], "--port"],
    [["--port", "2.5"], "--port"],
    [["--size", "0"], "--size"],
    [["--size", "ten"], "--size"],
    [["--max-recipients", "0"], "--max-recipients"],
    [["--max-connections", "x"], "--max-connections"],
    [["--log", "xml"], "--log"],
    [["--metrics", "9465"], "--metrics"],
    [["--dns-server", "127.0.0.1"], "--dns-server"],
    [["--reverse-dns", "--dns-server", "dns.example"], "--dns-server"],
    [["--quiet=yes"], "--quiet"],
    [["--quiet", "--verbose"], "--quiet"],
    [["--maildir", ""], "--maildir"],
    [["--host", ""], "--host"],
    [["--server-name", "a b"], "--server-name"],
    [["--tls-cert", "c.pem"], "--tls-key"],
    [["--tls-key", "k.pem"], "--tls-cert"],
    [["--tls-implicit"], "--tls-implicit"],
    [["--require-tls"], "--require-tls"],
    [["--allow-insecure-auth"], "--allow-insecure-auth"],
    [["--auth-file", "users"], "--auth-file"],
    [["--socket", ""], "--socket"],
    [["--socket", "/tmp/s", "--port", "25"], "--socket"],
    [["--socket", "/tmp/s", "--host", "::1"], "--socket"],
    [["--lmtp=yes"], "--lmtp"],
    [["--no-chunking=1"], "--no-chunking"],
    [["--proxy-trusted", "10.0.0.0/8"], "--proxy-trusted"],
    [["--proxy-protocol", "--proxy-trusted", "10.1.2.3/8"], "--proxy-trusted"],
    [["--proxy-protocol", "--proxy-trusted", "10.0.0.1,"], "--proxy-trusted"],
    [["--greeting-delay", "-5"], "--greeting-delay"],
    [["--greeting-delay", "1d"], "--greeting-delay"],
    [["--greeting-delay", "11m"], "--greeting-delay"],
    [["stray"], "stray"],
    [["hash-password", "a", "b"], "hash-password"],
    [["hash-password", "a:b"], "hash-password"],
  ];
  for (const [args, flag] of bad) {
    it(`refuses ${args.join(" ") || '""'} naming ${flag}`, () => {
      assert.throws(() => parseCliArgs(args), (e: unknown) => {
        assert.ok(e instanceof CliError);
        assert.equal(e.flag, flag);
        assert.ok(e.message.startsWith(`${flag}: `), e.message);
        assert.doesNotMatch(e.message, /\n/);
        return true;
      });
    });
  }
});

describe("cli: passwords and the auth file", () => {
  it("hashes with scrypt and verifies", async () => {
    const hash = await hashPassword("correct horse");
    assert.match(
      hash,
      /^\$scrypt\$N=16384,r=8,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$/,
    );
    assert.equal(await verifyPassword("correct horse", hash), true);
    assert.equal(await verifyPassword("correct horse ", hash), false);
    assert.equal(await verifyPassword("x", "not a hash"), false);
    assert.notEqual(await hashPassword("correct horse"), hash); // salted
  });

  it("reads users, skipping comments and blank lines", async () => {
    const alice = await hashPassword("a-secret");
    const users = parseAuthFile(
      `# smtpd users\n\nalice:${alice}\r\n  bob@example.org:${await hashPassword(
        "b",
      )}  \n`,
    );
    assert.deepEqual([...users.keys()], ["alice", "bob@example.org"]);
    assert.equal(await checkCredentials(users, "alice", "a-secret"), true);
    assert.equal(await checkCredentials(users, "alice", "b"), false);
    assert.equal(await checkCredentials(users, "bob@example.org", "b"), true);
    assert.equal(await checkCredentials(users, "carol", "a-secret"), false);
  });

  it("refuses plaintext passwords without repeating them", () => {
    assert.throws(
      () => parseAuthFile("alice:hunter2-secret\n"),
      (e: Error) => {
        assert.match(e.message, /^line 1: .*plaintext passwords are refused/);
        assert.doesNotMatch(e.message, /hunter2/);
        return true;
      },
    );
  });

  const badFiles: [string, RegExp][] = [
    ["no colon here\n", /line 1: expected user:hash/],
    ["# c\nbob:$2b$10$abcdefghijklmnopqrstuv\n", /line 2: bcrypt/],
    [
      "bob:$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA\n",
      /line 1: unknown hash scheme "argon2id"/,
    ],
    [
      "bob:$scrypt$N=1000,r=8,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA\n",
      /N=1000 is not a power of 2/,
    ],
    [
      "bob:$scrypt$N=16384,r=8,p=1$c2FsdA$aGFzaGhhc2hoYXNoaGFzaA\n",
      /salt is shorter/,
    ],
    ["bob:$scrypt$N=16384,r=8$x$y\n", /not in the form/],
    [
      "bob:$scrypt$N=16384,r=8,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA\nbob:$scrypt$N=16384,r=8,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA\n",
      /line 2: "bob" is listed twice/,
    ],
  ];
  for (const [text, re] of badFiles) {
    it(`refuses ${JSON.stringify(text.slice(0, 30))}…`, () => {
      assert.throws(() => parseAuthFile(text), re);
    });
  }
});

describe("cli: the program", () => {
  it("--help and --version exit 0", async () => {
    const [help, version] = await Promise.all([
      runCli(["--help"]),
      runCli(["--version"]),
    ]);
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /^Usage: smtpd \[options\]/);
    for (
      const flag of ["--maildir", "--tls-cert", "--auth-file", "hash-password"]
    ) {
      assert.ok(help.stdout.includes(flag), flag);
    }
    assert.equal(version.code, 0, version.stderr);
    assert.equal(version.stdout, `smtpd ${VERSION}\n`);
    const pkg = JSON.parse(await fs.readFile(`${ROOT}package.json`, "utf8"));
    assert.equal(VERSION, pkg.version);
  });

  it("bad flags and unreadable files exit non-zero with one line naming the flag", async () => {
    const file = freshPath("plain-file");
    await fs.writeFile(file, "x");
    const plaintext = freshPath("users");
    await fs.writeFile(plaintext, "alice:secret\n");
    const cases: [string[], string][] = [
      [["--bogus"], "--bogus"],
      [["--port", "99999"], "--port"],
      [["--log", "xml"], "--log"],
      [["--size", "0"], "--size"],
      [["--tls-cert", `${tmp}/missing.pem`, "--tls-key", KEY], "--tls-cert"],
      [["--tls-cert", CERT, "--tls-key", `${tmp}/missing.pem`], "--tls-key"],
      [["--tls-cert", file, "--tls-key", KEY], "--tls-cert"],
      [["--tls-cert", CERT, "--tls-key", CERT], "--tls-key"],
      [["--auth-file", plaintext, "--allow-insecure-auth"], "--auth-file"],
      [["--auth-file", tmp, "--allow-insecure-auth"], "--auth-file"],
      [["--maildir", `${file}/maildir`], "--maildir"],
    ];
    const results = await Promise.all(
      cases.map(([args]) => runCli(["--port", "0", ...args])),
    );
    for (let i = 0; i < cases.length; i++) {
      const [args, flag] = cases[i];
      const r = results[i];
      const what = `${args.join(" ")}: ${JSON.stringify(r)}`;
      assert.notEqual(r.code, 0, what);
      assert.equal(r.stdout, "", what); // nothing listened
      assert.match(r.stderr, /^smtpd: [^\n]+\n$/, what);
      assert.ok(r.stderr.startsWith(`smtpd: ${flag}: `), what);
    }
    assert.doesNotMatch(results[8].stderr, /secret/);
  });

  it("a port in use is an error naming --port", async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", r));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const { cmd, args } = cliCommand();
      const r = await run(cmd, [
        ...args,
        "--port",
        String(port),
        "--maildir",
        freshPath(),
      ]);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /^smtpd: --port: [^\n]*in use\n$/);
    } finally {
      await new Promise((r) => blocker.close(r));
    }
  });

  it("stores what swaks sends in new/, byte-exact below the trace headers; Python reads it", async () => {
    const maildir = freshPath();
    const cli = await startListeningCli([
      "--maildir",
      maildir,
      "--server-name",
      "mx.test",
    ]);
    try {
      const data = freshPath("swaks.eml");
      // swaks ends the data with CRLF "." CRLF itself: leave out the last CRLF.
      await fs.writeFile(data, MESSAGE.slice(0, -2));
      const r = await run("/usr/bin/swaks", [
        "--server",
        "127.0.0.1",
        "--port",
        String(cli.port),
        "--helo",
        "swaks.test",
        "--from",
        "sender@example.org",
        "--to",
        "rcpt@example.net",
        "--data",
        `@${data}`,
        "--pipeline",
      ]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const id = /<-\s+250 2\.0\.0 OK (\S+)/.exec(r.stdout)?.[1];
      assert.ok(id, r.stdout);
      const [name] = await files(`${maildir}/new`);
      assert.deepEqual(await list(`${maildir}/tmp`), []);
      const { trace, body } = splitTrace(
        await fs.readFile(`${maildir}/new/${name}`),
      );
      assert.deepEqual(body, enc.encode(MESSAGE));
      assert.match(
        trace,
        new RegExp(
          "^Return-Path: <sender@example\\.org>\\r\\n" +
            "Received: from swaks\\.test \\(\\[127\\.0\\.0\\.1\\]\\)\\r\\n" +
            `\\tby mx\\.test with ESMTP id ${id}\\r\\n` +
            "\\tfor <rcpt@example\\.net>; \\w{3}, \\d{1,2} \\w{3} \\d{4} \\d\\d:\\d\\d:\\d\\d [+-]\\d{4}\\r\\n$",
        ),
      );
      // One log line for the message: time, id, sender, recipients, size,
      // Subject, file.
      const line = await cli.waitFor(new RegExp(`^.*message id=${id}.*$`, "m"));
      assert.match(
        line[0],
        new RegExp(
          `^\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z message id=${id} from=<sender@example\\.org> to=<rcpt@example\\.net> size=${
            enc.encode(MESSAGE).length
          } subject="smtpd CLI test" file=${
            maildir.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
          }/new/${name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`,
        ),
      );
      const py = await run("python3", [
        "-c",
        [
          "import json, mailbox, sys",
          "mb = mailbox.Maildir(sys.argv[1], factory=None, create=False)",
          "out = []",
          "for key in mb.keys():",
          "    m = mb[key]",
          "    out.append({'key': key, 'subdir': m.get_subdir(), 'subject': m['Subject'], 'returnPath': m['Return-Path'], 'received': m['Received'], 'body': m.get_payload(decode=True).decode('utf-8')})",
          "print(json.dumps(out))",
        ].join("\n"),
        maildir,
      ]);
      assert.equal(py.code, 0, py.stderr);
      const [m] = JSON.parse(py.stdout);
      assert.equal(m.key, name);
      assert.equal(m.subdir, "new");
      assert.equal(m.subject, "smtpd CLI test");
      assert.equal(m.returnPath, "<sender@example.org>");
      assert.match(m.received, new RegExp(`with ESMTP id ${id}`));
      assert.match(
        m.body,
        /\.A line that starts with a dot[\s\S]*Grüße, ünïcödé/,
      );
    } finally {
      await cli.stop();
    }
  });

  it("stores what nodemailer sends, to two recipients, byte-exact", async () => {
    const maildir = freshPath();
    const cli = await startListeningCli(["--maildir", maildir]);
    try {
      const transport = nodemailer.createTransport({
        host: "127.0.0.1",
        port: cli.port,
        secure: false,
        ignoreTLS: true,
        name: "nodemailer.test",
      });
      const info = await transport.sendMail({
        envelope: {
          from: "sender@example.org",
          to: ["rcpt@example.net", "other@example.net"],
        },
        raw: MESSAGE,
      });
      transport.close();
      assert.deepEqual(info.accepted, [
        "rcpt@example.net",
        "other@example.net",
      ]);
      const id = /^250 2\.0\.0 OK (\S+)/.exec(info.response)?.[1];
      assert.ok(id, info.response);
      const [name] = await files(`${maildir}/new`);
      const { trace, body } = splitTrace(
        await fs.readFile(`${maildir}/new/${name}`),
      );
      assert.deepEqual(body, enc.encode(MESSAGE));
      assert.match(
        trace,
        new RegExp(
          `^Return-Path: <sender@example\\.org>\\r\\nReceived: from nodemailer\\.test \\(\\[127\\.0\\.0\\.1\\]\\)\\r\\n\\tby \\S+ with ESMTP id ${id};\\r\\n\\t`,
        ),
      );
      assert.doesNotMatch(trace, /for </); // two recipients: Bcc stays private
      await cli.waitFor(/to=<rcpt@example\.net>,<other@example\.net>/);
    } finally {
      await cli.stop();
    }
  });

  it("a message that got 250 is in new/ after SIGKILL right after the reply", async () => {
    const maildir = freshPath();
    const cli = await startListeningCli(["--maildir", maildir]);
    const c = await openData(cli.port);
    c.send(MESSAGE.replace(/^\./gm, "..") + ".\r\n");
    const reply = await c.reply();
    cli.signal("SIGKILL");
    assert.match(reply, /^250 2\.0\.0 /);
    const exit = await cli.exited;
    assert.equal(exit.signal, "SIGKILL");
    c.close();
    const [name] = await files(`${maildir}/new`);
    assert.deepEqual(
      splitTrace(await fs.readFile(`${maildir}/new/${name}`)).body,
      enc.encode(MESSAGE),
    );
    assert.deepEqual(await list(`${maildir}/tmp`), []);
  });

  it("an unwritable tmp/ gives 451 4.3.0, not 250, and delivery resumes once fixed", async () => {
    const maildir = freshPath();
    const cli = await startListeningCli(["--maildir", maildir]);
    const asRoot = process.getuid?.() === 0;
    try {
      // chmod does not stop root from writing: as root, put a file where
      // tmp/ should be.
      if (asRoot) {
        await fs.rm(`${maildir}/tmp`, { recursive: true });
        await fs.writeFile(`${maildir}/tmp`, "not a directory");
      } else {
        await fs.chmod(`${maildir}/tmp`, 0o500);
      }
      let c = await openData(cli.port);
      c.send("Subject: lost?\r\n\r\nbody\r\n.\r\n");
      assert.match(await c.reply(), /^451 4\.3\.0 /);
      assert.match(await c.cmd("QUIT"), /^221 /);
      c.close();
      assert.deepEqual(await list(`${maildir}/new`), []);
      await cli.waitFor(
        /error: delivery failed id=\S+ from=<sender@example\.org>: E[A-Z]+/,
        "stderr",
      );

      if (asRoot) {
        await fs.rm(`${maildir}/tmp`);
        await fs.mkdir(`${maildir}/tmp`);
      } else {
        await fs.chmod(`${maildir}/tmp`, 0o700);
      }
      c = await openData(cli.port);
      c.send("Subject: second\r\n\r\nbody\r\n.\r\n");
      assert.match(await c.reply(), /^250 2\.0\.0 /);
      c.close();
      await files(`${maildir}/new`, 1);
    } finally {
      const exit = await cli.stop();
      assert.equal(exit.code, 0);
    }
    assert.match(
      cli.stdout(),
      /stopped after \d+s: 1 message, \d+ bytes, 1 failed delivery/,
    );
  });

  it("SIGTERM lets a message in transfer finish, then exits 0 with a summary", async () => {
    const maildir = freshPath();
    const cli = await startListeningCli(["--maildir", maildir]);
    const c = await openData(cli.port);
    c.send("Subject: in flight\r\n\r\nfirst half\r\n");
    cli.signal("SIGTERM");
    await cli.waitFor(/SIGTERM: closing/);
    c.send("second half\r\n.\r\n");
    assert.match(await c.reply(), /^250 2\.0\.0 /);
    // Then the server says goodbye and closes.
    assert.match(await c.reply(), /^421 4\.3\.2 /);
    await c.closed;
    const exit = await cli.exited;
    assert.equal(exit.code, 0);
    const size =
      "Subject: in flight\r\n\r\nfirst half\r\nsecond half\r\n".length;
    assert.match(
      cli.stdout(),
      new RegExp(`stopped after \\d+s: 1 message, ${size} bytes\\n$`),
    );
    await files(`${maildir}/new`);
  });

  it("SIGINT stops an idle server with exit code 0", async () => {
    const cli = await startListeningCli(["--maildir", freshPath()]);
    const exit = await cli.stop("SIGINT");
    assert.equal(exit.code, 0);
    assert.match(
      cli.stdout(),
      /SIGINT: closing[^\n]*\n[^\n]*stopped after \d+s: 0 messages, 0 bytes\n$/,
    );
    assert.equal(cli.stderr(), "");
  });

  it("passes --size, --max-recipients and --max-connections to the server; --verbose logs the dialogue", async () => {
    const cli = await startListeningCli([
      "--maildir",
      freshPath(),
      "--size",
      "1K",
      "--max-recipients",
      "1",
      "--max-connections",
      "1",
      "--verbose",
    ]);
    try {
      const c = await smtp(cli.port);
      assert.match(await c.reply(), /^220 /);
      assert.match(await c.cmd("EHLO client.test"), /\r\n250[ -]SIZE 1024\r\n/);
      assert.match(await c.cmd("MAIL FROM:<a@b.test>"), /^250 /);
      assert.match(await c.cmd("RCPT TO:<x@y.test>"), /^250 /);
      assert.match(await c.cmd("RCPT TO:<z@y.test>"), /^452 4\.5\.3 /);
      // A second connection while the first is open: refused.
      const d = await smtp(cli.port);
      assert.match(await d.reply(), /^421 4\.7\.0 /);
      d.close();
      assert.match(await c.cmd("DATA"), /^354 /);
      c.send("Subject: big\r\n\r\n" + "x".repeat(2000) + "\r\n.\r\n");
      assert.match(await c.reply(), /^552 5\.3\.4 /);
      c.close();
      // --verbose logs the dialogue.
      await cli.waitFor(/session=\S+ > 552 5\.3\.4 /);
      assert.match(
        cli.stdout(),
        /session=\S+ < RCPT TO:<z@y\.test>\n.*session=\S+ > 452 4\.5\.3 /,
      );
      assert.match(
        cli.stderr(),
        /warning: refused 127\.0\.0\.1: too many connections/,
      );
    } finally {
      await cli.stop();
    }
  });

  it("--proxy-protocol: Received names the original client, the log the proxy; no header, no greeting", async () => {
    const maildir = freshPath();
    const cli = await startListeningCli([
      "--maildir",
      maildir,
      "--server-name",
      "mx.test",
      "--proxy-protocol",
      "--proxy-trusted",
      "127.0.0.0/8,::1",
      "--verbose",
    ]);
    try {
      const c = await smtp(cli.port);
      c.send("PROXY TCP4 192.0.2.77 198.51.100.1 4242 25\r\n");
      assert.match(await c.reply(), /^220 /);
      assert.match(await c.cmd("EHLO client.test"), /^250[ -]/);
      assert.match(await c.cmd("MAIL FROM:<a@b.test>"), /^250 /);
      assert.match(await c.cmd("RCPT TO:<x@y.test>"), /^250 /);
      assert.match(await c.cmd("DATA"), /^354 /);
      c.send("Subject: hi\r\n\r\nhello\r\n.\r\n");
      assert.match(await c.reply(), /^250 /);
      c.close();
      const [name] = await files(`${maildir}/new`);
      const { trace } = splitTrace(
        await fs.readFile(`${maildir}/new/${name}`),
      );
      assert.match(
        trace,
        /^Received: from client\.test \(\[192\.0\.2\.77\]\)/m,
      );
      assert.match(
        cli.stdout(),
        /session=\S+ connect from 192\.0\.2\.77:4242 via proxy 127\.0\.0\.1:\d+/,
      );
      // A client without a header gets nothing and is closed.
      const d = await smtp(cli.port);
      d.send("EHLO client.test\r\n");
      await d.closed;
      await cli.waitFor(
        /warning: refused 127\.0\.0\.1: bad PROXY header/,
        "stderr",
      );
    } finally {
      await cli.stop();
    }
  });

  it("--log json prints one JSON object a line", async () => {
    const maildir = freshPath();
    const cli = await startListeningCli([
      "--maildir",
      maildir,
      "--log",
      "json",
    ]);
    const c = await openData(cli.port);
    c.send("Subject: json\r\n\r\nhi\r\n.\r\n");
    assert.match(await c.reply(), /^250 /);
    c.close();
    await cli.waitFor(/"event":"message"/);
    await cli.stop();
    const lines = cli.stdout().trim().split("\n").map((l) => JSON.parse(l));
    assert.deepEqual(lines.map((l) => l.event), [
      "listening",
      "message",
      "stopping",
      "stopped",
    ]);
    assert.equal(lines[0].port, cli.port);
    assert.equal(lines[0].maildir, maildir);
    assert.equal(lines[1].from, "sender@example.org");
    assert.deepEqual(lines[1].to, ["rcpt@example.net"]);
    assert.equal(lines[1].size, "Subject: json\r\n\r\nhi\r\n".length);
    assert.ok(lines[1].file.startsWith(`${maildir}/new/`));
    assert.equal(lines[3].messages, 1);
  });

  it("with a certificate, --require-tls refuses mail before STARTTLS and swaks --tls delivers (ESMTPS)", async () => {
    const maildir = freshPath();
    const cli = await startListeningCli([
      "--maildir",
      maildir,
      "--tls-cert",
      CERT,
      "--tls-key",
      KEY,
      "--require-tls",
    ]);
    try {
      assert.match(cli.stdout(), /STARTTLS\), Maildir /);
      const c = await smtp(cli.port);
      assert.match(await c.reply(), /^220 /);
      assert.match(await c.cmd("EHLO client.test"), /\r\n250[ -]STARTTLS\r\n/);
      assert.match(await c.cmd("MAIL FROM:<a@b.test>"), /^530 5\.7\.0 /);
      c.close();
      const r = await run("/usr/bin/swaks", [
        "--server",
        "127.0.0.1",
        "--port",
        String(cli.port),
        "--from",
        "sender@example.org",
        "--to",
        "rcpt@example.net",
        "--tls",
      ]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const [name] = await files(`${maildir}/new`);
      const { trace } = splitTrace(await fs.readFile(`${maildir}/new/${name}`));
      assert.match(
        trace,
        /\r\n\t\(using TLSv1\.[23] with cipher \S+\)\r\n\tby \S+ with ESMTPS id /,
      );
    } finally {
      await cli.stop();
    }
  });

  it("hash-password makes a hash that an --auth-file takes; plaintext files are refused", async () => {
    const r = await runCli(["hash-password", "alice"], "s3cret pass\n");
    assert.equal(r.code, 0, r.stderr);
    const line = r.stdout.trim();
    assert.match(line, /^alice:\$scrypt\$N=16384,r=8,p=1\$\S+\$\S+$/);
    assert.equal(
      await verifyPassword("s3cret pass", line.slice("alice:".length)),
      true,
    );

    const empty = await runCli(["hash-password"], "\n");
    assert.notEqual(empty.code, 0);
    assert.match(
      empty.stderr,
      /^smtpd: hash-password: the password is empty\n$/,
    );

    const users = freshPath("users");
    await fs.writeFile(users, `# test users\n${line}\n`, { mode: 0o600 });
    const cli = await startListeningCli([
      "--maildir",
      freshPath(),
      "--auth-file",
      users,
      "--allow-insecure-auth",
    ]);
    try {
      const c = await smtp(cli.port);
      assert.match(await c.reply(), /^220 /);
      await c.cmd("EHLO client.test");
      // Without AUTH, no mail (530 until authenticated).
      assert.match(await c.cmd("MAIL FROM:<a@b.test>"), /^530 5\.7\.0 /);
      const plain = (u: string, p: string) =>
        btoa(String.fromCharCode(...new TextEncoder().encode(`\0${u}\0${p}`)));
      assert.match(
        await c.cmd(`AUTH PLAIN ${plain("alice", "wrong")}`),
        /^535 5\.7\.8 /,
      );
      assert.match(
        await c.cmd(`AUTH PLAIN ${plain("alice", "s3cret pass")}`),
        /^235 2\.7\.0 /,
      );
      assert.match(await c.cmd("MAIL FROM:<a@b.test>"), /^250 /);
      c.close();
    } finally {
      await cli.stop();
    }
  });
});

describe("cli: errors in the server's hooks", () => {
  /** Runs `fn` with process.stderr.write and console.error captured. */
  async function capturing(
    fn: () => Promise<void>,
  ): Promise<{ stderr: string; console: unknown[][] }> {
    let stderr = "";
    const printed: unknown[][] = [];
    const write = process.stderr.write;
    const error = console.error;
    process.stderr.write = ((chunk: string | Uint8Array) => {
      stderr += typeof chunk === "string"
        ? chunk
        : new TextDecoder().decode(chunk);
      return true;
    }) as typeof process.stderr.write;
    console.error = (...args: unknown[]) => {
      printed.push(args);
    };
    try {
      await fn();
    } finally {
      process.stderr.write = write;
      console.error = error;
    }
    return { stderr, console: printed };
  }

  for (const format of ["text", "json"] as const) {
    it(`an onMessage error is one error line of the CLI's log (--log ${format}), not a console print`, async () => {
      const log = new Log({ log: format, quiet: false, verbose: false });
      let id = "";
      const out = await capturing(async () => {
        const server = await serve({
          port: 0,
          logger: serverLogger(log, {}),
          onError: hookErrorLogger(log),
          async onMessage(m) {
            id = m.id;
            await m.bytes();
            throw new Error("disk on fire\nsecond line");
          },
        });
        try {
          const reply = await nodemailer.createTransport({
            host: "127.0.0.1",
            port: server.addr.port,
            ignoreTLS: true,
          }).sendMail({
            envelope: { from: "a@example.org", to: ["b@example.org"] },
            raw: "Subject: x\r\n\r\nhi\r\n",
          }).catch((e: { response?: string }) => e.response);
          assert.match(String(reply), /^451 4\.3\.0 /);
        } finally {
          await server.close();
        }
      });
      assert.deepEqual(out.console, []);
      const lines = out.stderr.split("\n").filter((l) => l !== "");
      assert.equal(lines.length, 1, out.stderr);
      if (format === "text") {
        assert.match(
          lines[0],
          new RegExp(
            `^\\S+ error: session=\\S+ onMessage failed id=${id}: disk on fire second line$`,
          ),
        );
      } else {
        const entry = JSON.parse(lines[0]);
        assert.equal(entry.event, "hook-error");
        assert.equal(entry.hook, "onMessage");
        assert.equal(entry.id, id);
        assert.equal(entry.remoteAddress, "127.0.0.1");
        assert.equal(entry.error, "disk on fire second line");
        assert.match(entry.stack, /disk on fire\nsecond line\n\s+at /);
      }
    });
  }
});
