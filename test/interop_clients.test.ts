// Real SMTP clients against a listening server on this runtime's shim:
// swaks (with and without PIPELINING), Python's smtplib and nodemailer.
// Every message must arrive byte-exact. A missing client fails its test
// (CI installs them): nothing is skipped.
//
// Clients run with the async child_process.execFile: a synchronous spawn
// would block the event loop the server runs on.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import nodemailer from "nodemailer";
import { type Message, serve, type Server, SmtpError } from "../mod.ts";

const here = dirname(fileURLToPath(import.meta.url));

interface Received {
  from: string;
  to: readonly string[];
  body: Buffer;
  heloName: string | null;
}

/** Runs a program; resolves with its output, rejects (with stderr) on failure. */
function run(
  file: string,
  args: string[],
): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      { timeout: 60000, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error) {
          reject(
            new Error(`${file} failed: ${error.message}\n${stderr}`, {
              cause: error,
            }),
          );
        } else resolve({ stdout: String(stdout), stderr: String(stderr) });
      },
    );
  });
}

/** The message as swaks' transcript shows it sent (dot-stuffed lines between 354 and "."). */
function swaksSentData(transcript: string): Buffer {
  const lines = transcript.split("\n");
  const start = lines.findIndex((l) => l.startsWith("<-  354 "));
  assert.ok(start >= 0, `no 354 in swaks output:\n${transcript}`);
  const out: string[] = [];
  for (const line of lines.slice(start + 1)) {
    if (!line.startsWith(" -> ")) continue;
    const text = line.slice(4).replace(/\r$/, "");
    if (text === ".") {
      return Buffer.from(
        out.map((l) => (l.startsWith(".") ? l.slice(1) : l) + "\r\n").join(""),
        "latin1",
      );
    }
    out.push(text);
  }
  assert.fail(`no end of data in swaks output:\n${transcript}`);
}

describe("interop", () => {
  let server: Server;
  let port: number;
  let dir: string;
  const received: Received[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "smtpd-interop-"));
    server = await serve({
      hostname: "127.0.0.1",
      port: 0,
      serverName: "mx.test",
      onRcptTo(address) {
        if (address.startsWith("nobody@")) {
          throw new SmtpError(550, "5.1.1", "No such user");
        }
      },
      async onMessage(m: Message) {
        const body = Buffer.from(await m.bytes());
        received.push({
          from: m.from,
          to: m.to,
          body,
          heloName: m.session.heloName,
        });
      },
    });
    port = server.addr.port;
  });

  after(async () => {
    await server?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Messages received since `mark` (a length of `received`). */
  const since = (mark: number) => received.slice(mark);

  for (const pipeline of [false, true]) {
    const label = pipeline ? "with --pipeline" : "without pipelining";

    it(`swaks ${label} delivers a --data file byte-exact`, async () => {
      // swaks sends the file, then CRLF and the final dot: a file without
      // a final line break arrives as the file plus CRLF.
      const data = "From: a@example.org\r\nTo: b@example.org\r\n" +
        "Subject: swaks\r\n\r\n" +
        "first line\r\n" +
        ".a line with a leading dot\r\n" +
        "..two leading dots\r\n" +
        ".\tdot and tab\r\n" +
        "\r\n" +
        "8-bit: \xe9t\xe9\r\n" +
        "last line";
      const file = join(dir, `data-${pipeline}.eml`);
      writeFileSync(file, Buffer.from(data, "latin1"));
      const mark = received.length;
      await run("swaks", [
        "--server",
        `127.0.0.1:${port}`,
        "--helo",
        "swaks.test",
        "--from",
        "a@example.org",
        "--to",
        "b@example.org,c@example.org",
        "--data",
        `@${file}`,
        ...(pipeline ? ["--pipeline"] : []),
      ]);
      const got = since(mark);
      assert.equal(got.length, 1);
      assert.equal(got[0].from, "a@example.org");
      assert.deepEqual(got[0].to, ["b@example.org", "c@example.org"]);
      assert.equal(got[0].heloName, "swaks.test");
      assert.equal(got[0].body.toString("latin1"), data + "\r\n");
    });

    it(`swaks ${label} delivers a --body with dot lines as it sent it`, async () => {
      const mark = received.length;
      const { stdout } = await run("swaks", [
        "--server",
        `127.0.0.1:${port}`,
        "--from",
        "a@example.org",
        "--to",
        "b@example.org",
        "--body",
        "hello\n.dot\n..two dots\n.\nend",
        ...(pipeline ? ["--pipeline"] : []),
      ]);
      if (pipeline) {
        // The commands went out in one batch, before any reply.
        assert.match(stdout, / -> MAIL FROM:[^\n]*\n -> RCPT TO:[^\n]*\n/);
      }
      const got = since(mark);
      assert.equal(got.length, 1);
      const sent = swaksSentData(stdout);
      assert.equal(got[0].body.toString("latin1"), sent.toString("latin1"));
      assert.match(
        got[0].body.toString("latin1"),
        /\r\n\r\nhello\r\n\.dot\r\n\.\.two dots\r\n\.\r\nend\r\n/,
      );
    });
  }

  it("swaks sees a rejected recipient's 550 and delivers to the others", async () => {
    const mark = received.length;
    const file = join(dir, "partial.eml");
    writeFileSync(file, "Subject: partial\r\n\r\nbody");
    // swaks goes on (and exits 0) when some recipients are accepted.
    const { stdout } = await run("swaks", [
      "--server",
      `127.0.0.1:${port}`,
      "--from",
      "a@example.org",
      "--to",
      "b@example.org,nobody@example.org",
      "--data",
      `@${file}`,
      "--pipeline",
    ]);
    assert.match(stdout, /<\*\* +550 5\.1\.1 No such user/);
    const got = since(mark);
    assert.equal(got.length, 1);
    assert.deepEqual(got[0].to, ["b@example.org"]);
  });

  it("Python smtplib delivers byte-exact, one and several messages per connection", async () => {
    const messages = [
      {
        from: "py@example.org",
        to: ["b@example.org"],
        data: "Subject: one\r\n\r\n.leading dot\r\n..two\r\nend\r\n",
      },
      {
        from: "",
        to: ["b@example.org", "nobody@example.org", "c@example.org"],
        data: "Subject: bounce\r\n\r\nnull sender, three recipients\r\n",
      },
      {
        from: "py@example.org",
        to: ["c@example.org"],
        data: "Subject: 8bit\r\n\r\ncaf\xe9 \xff\r\n.\r\n",
        options: ["BODY=8BITMIME"],
      },
    ];
    const mark = received.length;
    const { stdout } = await run("python3", [
      join(here, "fixtures", "smtplib_send.py"),
      String(port),
      JSON.stringify([[messages[0]], messages]),
    ]);
    const refused = JSON.parse(stdout);
    assert.deepEqual(refused, [
      [{}],
      [{}, { "nobody@example.org": [550, "5.1.1 No such user"] }, {}],
    ]);
    const got = since(mark);
    assert.equal(got.length, 4);
    const expected = [messages[0], ...messages];
    for (let i = 0; i < 4; i++) {
      assert.equal(got[i].from, expected[i].from);
      assert.deepEqual(
        got[i].to,
        expected[i].to.filter((t) => !t.startsWith("nobody@")),
      );
      assert.equal(got[i].body.toString("latin1"), expected[i].data);
      assert.equal(got[i].heloName, "python.test");
    }
  });

  it("nodemailer delivers a raw message byte-exact", async () => {
    const raw = Buffer.from(
      "From: nm@example.org\r\nTo: b@example.org\r\nSubject: nodemailer\r\n" +
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" +
        ".leading dot\r\n" +
        "..two\r\n" +
        ".\r\n" +
        "caf\u00e9\r\n",
      "utf8",
    );
    const transport = nodemailer.createTransport({
      host: "127.0.0.1",
      port,
      secure: false,
      ignoreTLS: true,
      name: "nodemailer.test",
    });
    const mark = received.length;
    try {
      for (let i = 0; i < 2; i++) {
        const info = await transport.sendMail({
          envelope: {
            from: "nm@example.org",
            to: ["b@example.org", "c@example.org"],
          },
          raw,
        });
        assert.match(String(info.response), /^250 2\.0\.0 OK /);
        assert.deepEqual(info.accepted, ["b@example.org", "c@example.org"]);
      }
    } finally {
      transport.close();
    }
    const got = since(mark);
    assert.equal(got.length, 2);
    for (const m of got) {
      assert.equal(m.from, "nm@example.org");
      assert.deepEqual(m.to, ["b@example.org", "c@example.org"]);
      assert.equal(m.heloName, "nodemailer.test");
      assert.ok(m.body.equals(raw), `got ${JSON.stringify(m.body.toString())}`);
    }
  });
});
