// The CLI's --webhook: the flags in process, and the program as a child
// process under the same runtime as the tests, posting to a local HTTP
// endpoint (node:http on 127.0.0.1) while nodemailer sends.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs/promises";
import { tmpdir } from "node:os";
import process from "node:process";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import nodemailer from "nodemailer";
import { CliError, parseCliArgs, USAGE } from "../src/cli/args.ts";
import type { WebhookPayload } from "../src/webhook.ts";
import { cliCommand } from "./helpers/run.ts";
import { type Endpoint, startEndpoint } from "./helpers/http.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

let tmp = "";
let counter = 0;
before(async () => {
  tmp = await fs.mkdtemp(`${tmpdir()}/smtpd-cli-webhook-test-`);
});
after(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

interface Cli {
  readonly port: number;
  output(): string;
  waitFor(re: RegExp): Promise<RegExpExecArray>;
  stop(): Promise<number | null>;
}

const running = new Set<ChildProcess>();
after(() => {
  for (const child of running) child.kill("SIGKILL");
});

async function startCli(args: string[]): Promise<Cli> {
  const { cmd, args: base } = cliCommand();
  const child = spawn(cmd, [...base, "--port", "0", ...args], {
    cwd: ROOT,
    env: { ...process.env, NO_COLOR: "1" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  running.add(child);
  let out = "";
  let exited = false;
  const waiters: (() => void)[] = [];
  const wake = () => {
    for (const w of waiters.splice(0)) w();
  };
  for (const stream of [child.stdout!, child.stderr!]) {
    stream.setEncoding("utf8");
    stream.on("data", (d: string) => {
      out += d;
      wake();
    });
  }
  const exit = new Promise<number | null>((resolve) => {
    child.on("exit", (code) => {
      exited = true;
      running.delete(child);
      setTimeout(() => {
        resolve(code);
        wake();
      }, 50);
    });
  });
  const waitFor = async (re: RegExp): Promise<RegExpExecArray> => {
    const deadline = Date.now() + 20000;
    for (;;) {
      const m = re.exec(out);
      if (m !== null) return m;
      if (exited || Date.now() > deadline) {
        throw new Error(`CLI did not print ${re}:\n${out}`);
      }
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 200);
      });
    }
  };
  const m = await waitFor(
    /listening on \[?[^\s\]]+?\]?:(\d+) |"event":"listening".*"port":(\d+)/,
  );
  return {
    port: Number(m[1] ?? m[2]),
    output: () => out,
    waitFor,
    async stop() {
      if (!exited) process.kill(child.pid!, "SIGTERM");
      let timer: ReturnType<typeof setTimeout> | undefined;
      const code = await Promise.race([
        exit,
        new Promise<"timeout">((
          r,
        ) => (timer = setTimeout(r, 45000, "timeout"))),
      ]);
      clearTimeout(timer);
      if (code === "timeout") {
        child.kill("SIGKILL");
        throw new Error(`CLI did not exit after SIGTERM:\n${out}`);
      }
      return code;
    },
  };
}

const MESSAGE = [
  "From: Alice <sender@example.org>",
  "To: Bob <rcpt@example.net>",
  "Subject: smtpd webhook test",
  "Message-ID: <webhook-test@example.org>",
  "MIME-Version: 1.0",
  "Content-Type: text/plain; charset=utf-8",
  "Content-Transfer-Encoding: 8bit",
  "",
  "Hello from the test.",
  ".A line that starts with a dot.",
  "Grüße",
  "",
].join("\r\n");

/** Sends MESSAGE; resolves to the final reply line (failures included). */
async function send(port: number): Promise<string> {
  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    port,
    secure: false,
    ignoreTLS: true,
    name: "client.example.com",
  });
  try {
    const info = await transport.sendMail({
      envelope: { from: "sender@example.org", to: ["rcpt@example.net"] },
      raw: MESSAGE,
    });
    return info.response;
  } catch (error) {
    const e = error as { responseCode?: number; response?: string };
    if (e.responseCode === undefined) throw error;
    return e.response ?? String(e.responseCode);
  } finally {
    transport.close();
  }
}

async function listNew(maildir: string): Promise<string[]> {
  return await fs.readdir(`${maildir}/new`);
}

// ---------------------------------------------------------------------------

describe("cli: --webhook arguments", () => {
  it("reads --webhook, --webhook-timeout and --no-maildir", () => {
    const c = parseCliArgs([
      "--webhook",
      "https://example.org/inbound",
      "--webhook-timeout",
      "5000",
      "--no-maildir",
    ]);
    assert.equal(c.command, "serve");
    if (c.command !== "serve") return;
    assert.equal(c.options.webhook, "https://example.org/inbound");
    assert.equal(c.options.webhookTimeout, 5000);
    assert.equal(c.options.noMaildir, true);
  });

  it("defaults the timeout to 30000 and leaves the options alone without --webhook", () => {
    const c = parseCliArgs(["--webhook", "http://127.0.0.1:8080/"]);
    assert.ok(c.command === "serve");
    assert.equal(c.options.webhookTimeout, 30000);
    assert.equal(c.options.noMaildir, undefined);
    const plain = parseCliArgs([]);
    assert.ok(plain.command === "serve");
    assert.ok(!("webhook" in plain.options));
    assert.ok(!("webhookTimeout" in plain.options));
    assert.ok(!("noMaildir" in plain.options));
  });

  it("refuses what cannot work, naming the flag", () => {
    const cases: [string[], RegExp][] = [
      [["--webhook", "example.org/x"], /^--webhook: must be an http/],
      [["--webhook", "ftp://example.org/"], /^--webhook: must be an http/],
      [["--webhook"], /^--webhook: needs a value/],
      [["--webhook-timeout", "100"], /^--webhook-timeout: needs --webhook/],
      [
        ["--webhook", "http://h/", "--webhook-timeout", "0"],
        /^--webhook-timeout: must be a time from 1ms to 10m such as 500ms, 30s, 5m or 1h \(a bare number is in milliseconds\)/,
      ],
      [
        ["--webhook", "http://h/", "--webhook-timeout", "1d"],
        /^--webhook-timeout: must be a time/,
      ],
      [["--no-maildir"], /^--no-maildir: needs --webhook/],
      [
        ["--webhook", "http://h/", "--no-maildir", "--maildir", "x"],
        /^--no-maildir: cannot be used with --maildir/,
      ],
      [
        ["--webhook", "http://h/", "--lmtp"],
        /^--webhook: cannot be used with --lmtp/,
      ],
    ];
    for (const [argv, re] of cases) {
      assert.throws(() => parseCliArgs(argv), (error: unknown) => {
        assert.ok(error instanceof CliError, String(error));
        assert.match(error.message, re, argv.join(" "));
        return true;
      });
    }
  });

  it("documents the flags in --help", () => {
    for (
      const line of [
        "\n  --webhook URL          post each message as JSON",
        "\n  --webhook-timeout TIME how long to wait for the webhook's answer",
        "\n  --no-maildir           store nothing (needs --webhook)",
      ]
    ) assert.ok(USAGE.includes(line), line);
  });
});

describe("cli: --webhook", () => {
  let endpoint: Endpoint;
  let cli: Cli;
  let maildir = "";
  before(async () => {
    endpoint = await startEndpoint();
    maildir = `${tmp}/md${++counter}`;
    cli = await startCli([
      "--maildir",
      maildir,
      "--webhook",
      endpoint.url,
      "--webhook-timeout",
      "1000",
    ]);
  });
  after(async () => {
    if (cli) assert.equal(await cli.stop(), 0);
    await endpoint?.close();
  });

  it("says where it delivers in the listening line", () => {
    assert.match(
      cli.output(),
      new RegExp(
        `listening on .*, Maildir ${maildir}, webhook ${endpoint.url}\\n`,
      ),
    );
  });

  it("2xx: answers 250, posts the message as JSON, keeps the Maildir file", async () => {
    endpoint.status = 200;
    endpoint.requests.length = 0;
    const reply = await send(cli.port);
    assert.match(reply, /^250 /);
    assert.equal(endpoint.requests.length, 1);
    const { headers, body } = endpoint.requests[0];
    assert.equal(headers["content-type"], "application/json");
    const p = JSON.parse(body) as WebhookPayload;
    assert.equal(p.envelope.from, "sender@example.org");
    assert.deepEqual(p.envelope.to, ["rcpt@example.net"]);
    assert.equal(p.envelope.remoteAddress, "127.0.0.1");
    assert.equal(p.envelope.heloName, "client.example.com");
    assert.equal(p.subject, "smtpd webhook test");
    assert.equal(p.messageId, "<webhook-test@example.org>");
    assert.deepEqual(p.from, { name: "Alice", address: "sender@example.org" });
    assert.match(
      p.text ?? "",
      /^Hello from the test\.\n\.A line that starts with a dot\.\nGrüße/,
    );
    assert.equal(p.html, null);
    assert.deepEqual(p.attachments, []);
    const raw = Uint8Array.from(atob(p.raw), (c) => c.charCodeAt(0));
    assert.equal(new TextDecoder().decode(raw), MESSAGE);
    assert.equal(p.size, raw.byteLength);
    // The Maildir file is there too, and the payload says where.
    const files = await listNew(maildir);
    assert.equal(files.length, 1);
    assert.equal(p.file, `${maildir}/new/${files[0]}`);
    const stored = await fs.readFile(p.file!, "utf8");
    assert.ok(stored.endsWith(MESSAGE));
    await cli.waitFor(/message id=\S+ .* file=\S+ webhook=200\n/);
  });

  it("500: answers 451 4.3.0 and takes the Maildir file back", async () => {
    endpoint.status = 500;
    endpoint.requests.length = 0;
    const before = await listNew(maildir);
    const reply = await send(cli.port);
    endpoint.status = 200;
    assert.match(reply, /^451 4\.3\.0 /);
    assert.equal(endpoint.requests.length, 1);
    assert.deepEqual(await listNew(maildir), before);
    assert.deepEqual(await fs.readdir(`${maildir}/tmp`), []);
    await cli.waitFor(
      /delivery failed id=\S+ from=<sender@example\.org>: Cannot post webhook: endpoint answered 500 \(replied 451 4\.3\.0 /,
    );
  });

  it("no answer within --webhook-timeout: 451 4.3.0, nothing kept", async () => {
    endpoint.status = 200;
    endpoint.delay = 3000;
    const before = await listNew(maildir);
    const reply = await send(cli.port);
    endpoint.delay = 0;
    assert.match(reply, /^451 4\.3\.0 /);
    assert.deepEqual(await listNew(maildir), before);
    await cli.waitFor(/no answer within 1000 ms/);
  });
});

describe("cli: --webhook --no-maildir", () => {
  it("posts only, creates no Maildir; 451 when the endpoint is down", async () => {
    const endpoint = await startEndpoint();
    const cwdMaildir = `${ROOT}maildir`;
    const existed = await fs.stat(cwdMaildir).then(() => true, () => false);
    const cli = await startCli([
      "--webhook",
      endpoint.url,
      "--no-maildir",
      "--log",
      "json",
    ]);
    try {
      const listening = JSON.parse(cli.output().split("\n")[0]);
      assert.equal(listening.webhook, endpoint.url);
      assert.equal(listening.maildir, undefined);
      assert.match(await send(cli.port), /^250 /);
      const p = JSON.parse(endpoint.requests[0].body) as WebhookPayload;
      assert.equal(p.file, undefined);
      assert.equal(p.subject, "smtpd webhook test");
      const line = await cli.waitFor(/\{[^\n]*"event":"message"[^\n]*\}/);
      const entry = JSON.parse(line[0]);
      assert.equal(entry.webhook, 200);
      assert.equal(entry.file, undefined);
      if (!existed) {
        assert.equal(
          await fs.stat(cwdMaildir).then(() => true, () => false),
          false,
        );
      }
      await endpoint.close(); // now nobody answers
      assert.match(await send(cli.port), /^451 4\.3\.0 /);
    } finally {
      assert.equal(await cli.stop(), 0);
      await endpoint.close();
    }
  });
});
