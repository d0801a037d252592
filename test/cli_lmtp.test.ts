// The command-line server as an LMTP delivery agent: `smtpd --lmtp --socket
// PATH` as a child process under the same runtime as the tests, fed by
// Python's smtplib.LMTP over the Unix socket; each accepted recipient gets
// its own file in the Maildir and its own reply.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { startCli } from "./helpers/cli.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

let tmp = "";
let counter = 0;
before(() => {
  tmp = fs.mkdtempSync(join(tmpdir(), "smtpd-cli-lmtp-"));
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});
const fresh = (name: string) => join(tmp, `${name}${++counter}`);

function run(file: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: 60000 }, (error, stdout, stderr) => {
      if (error) {
        reject(new Error(`${file} failed: ${error.message}\n${stderr}`));
      } else resolve(String(stdout));
    });
  });
}

describe("cli: --lmtp --socket", () => {
  it("delivers one Maildir file per accepted recipient and answers each", async () => {
    const socket = fresh("lmtp.sock");
    const maildir = fresh("md");
    const cli = startCli([
      "--lmtp",
      "--socket",
      socket,
      "--maildir",
      maildir,
      "--server-name",
      "mda.test",
      "--log",
      "json",
    ]);
    await cli.waitFor(/"event":"listening"/);
    const listening = JSON.parse(
      cli.output().split("\n").find((l) => l.includes('"listening"'))!,
    );
    assert.equal(listening.socket, socket);
    assert.equal(listening.protocol, "lmtp");
    assert.ok(fs.lstatSync(socket).isSocket());

    const data = "Subject: lmtp\r\n\r\n.leading dot\r\nbody\r\n";
    const out = JSON.parse(
      await run("python3", [
        join(ROOT, "test", "fixtures", "lmtp_send.py"),
        socket,
        "0",
        JSON.stringify([{
          from: "sender@example.org",
          to: ["alice@example.org", "bob@example.org"],
          data,
        }]),
      ]),
    );
    assert.equal(out.chunking, true);
    const replies: Record<string, [number, string]> = out.messages[0].data;
    assert.deepEqual(Object.keys(replies), [
      "alice@example.org",
      "bob@example.org",
    ]);
    for (const [to, [code, text]] of Object.entries(replies)) {
      assert.equal(code, 250);
      assert.match(text, new RegExp(`^2\\.0\\.0 OK \\S+ <${to}>$`));
    }

    const files = fs.readdirSync(join(maildir, "new")).sort();
    assert.equal(files.length, 2);
    const copies = files.map((f) =>
      fs.readFileSync(join(maildir, "new", f), "latin1")
    );
    const forWhom = copies.map((c) => /\tfor <([^>]+)>;/.exec(c)?.[1]).sort();
    assert.deepEqual(forWhom, ["alice@example.org", "bob@example.org"]);
    for (const copy of copies) {
      assert.match(copy, /^Return-Path: <sender@example\.org>\r\n/);
      assert.match(copy, /Received: from python\.test \(unix socket\)\r\n/);
      // RFC 3848: an LMTP session is "with LMTP", not ESMTP.
      assert.match(copy, /\tby \S+ with LMTP id /);
      // Byte-exact below the trace headers.
      assert.ok(copy.endsWith(`\r\n${data}`), copy);
      assert.equal(copy.indexOf("Subject:"), copy.length - data.length);
    }
    const delivered = cli.output().split("\n").filter((l) =>
      l.includes('"event":"message"')
    ).map((l) => JSON.parse(l).to);
    assert.deepEqual(delivered.flat().sort(), [
      "alice@example.org",
      "bob@example.org",
    ]);

    assert.equal((await cli.stop()).code, 0);
    assert.equal(fs.existsSync(socket), false, "socket file left behind");
  });

  it("--no-chunking offers no CHUNKING; a stale socket file is replaced", async () => {
    const socket = fresh("stale.sock");
    await run("python3", [
      "-c",
      "import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])",
      socket,
    ]);
    const cli = startCli([
      "--lmtp",
      "--no-chunking",
      "--socket",
      socket,
      "--maildir",
      fresh("md"),
    ]);
    await cli.waitFor(/listening on \S+\/stale\.sock\d+ \(.*, LMTP\)/);
    const out = JSON.parse(
      await run("python3", [
        join(ROOT, "test", "fixtures", "lmtp_send.py"),
        socket,
        "0",
        "[]",
      ]),
    );
    assert.equal(out.lhlo, 250);
    assert.equal(out.chunking, false);
    assert.equal((await cli.stop()).code, 0);
  });

  it("a --socket path that is not a socket exits non-zero with one line naming --socket", async () => {
    const path = fresh("file");
    fs.writeFileSync(path, "keep me");
    const cli = startCli(["--socket", path, "--maildir", fresh("md")]);
    assert.notEqual((await cli.exited).code, 0);
    assert.match(
      cli.output(),
      /^smtpd: --socket: cannot listen on \S+: the path exists and is not a socket\n$/,
    );
    assert.equal(fs.readFileSync(path, "utf8"), "keep me");
  });
});
