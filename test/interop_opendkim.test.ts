// The milter client against a real OpenDKIM (Debian's /usr/sbin/opendkim,
// installed by .ci/run) in signing mode, with a key the test generates
// (opendkim-genkey). The DKIM-Signature it asks to insert is applied to
// the message, and mailauth verifies it against the generated public key;
// and through serve({ milters }), the message onMessage gets is signed.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { dkimVerify } from "mailauth";
import { MilterClient } from "../src/milter/client.ts";
import { applyHeaderModifications } from "../src/milter/headers.ts";
import { serve } from "../mod.ts";
import { connect } from "./helpers/client.ts";
import {
  type Daemon,
  freePort,
  startDaemon,
  waitListening,
} from "./helpers/daemon.ts";

const OPENDKIM = "/usr/sbin/opendkim";
const GENKEY = "/usr/sbin/opendkim-genkey";
const installed = existsSync(OPENDKIM) && existsSync(GENKEY);
const te = new TextEncoder();
const td = new TextDecoder();

/** Header fields as on the wire: name, then the value after ": ". */
const HEADERS: [string, string][] = [
  ["From", "Alice <alice@example.org>"],
  ["To", "bob@example.com"],
  ["Subject", "A subject long enough\r\n to be folded"],
  ["Date", "Sat, 05 Dec 2026 12:00:00 +0000"],
  ["Message-ID", "<signed.1@example.org>"],
];
const BODY = "Hello Bob,\r\n\r\nthe report is attached.\r\n  -- Alice\r\n";

/** The header block of HEADERS. */
function block(): string {
  return HEADERS.map(([n, v]) => `${n}: ${v}\r\n`).join("");
}

/** Sends the message from `client` through a new session; the outcome. */
async function sign(address: string, client: string, from = HEADERS) {
  const m = new MilterClient({ address });
  try {
    await m.connect(
      { hostname: "localhost", family: "4", port: 40000, address: client },
      { j: "mx.example.org" },
    );
    await m.helo("localhost");
    await m.mail("<alice@example.org>", []);
    await m.rcpt("<bob@example.com>", []);
    await m.data();
    for (const [name, value] of from) await m.header(name, value);
    await m.endOfHeaders();
    await m.body(te.encode(BODY));
    const eom = await m.endOfMessage({ i: "4Bdkim" });
    assert.equal(m.failure, undefined);
    return eom;
  } finally {
    await m.close();
  }
}

describe("milter client with OpenDKIM", {
  skip: !installed && `${OPENDKIM} or ${GENKEY} is not installed`,
}, () => {
  let dir: string;
  let opendkim: Daemon;
  let address: string;
  let txt: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "smtpd-opendkim-"));
    execFileSync(GENKEY, ["-D", dir, "-d", "example.org", "-s", "sel"]);
    // sel.txt is a zone-file record: the TXT value is its quoted strings.
    txt = [...readFileSync(join(dir, "sel.txt"), "utf8").matchAll(/"([^"]*)"/g)]
      .map((x) => x[1]).join("");
    const port = await freePort();
    const conf = join(dir, "opendkim.conf");
    writeFileSync(
      conf,
      [
        `Socket inet:${port}@127.0.0.1`,
        "Mode sv",
        "Domain example.org",
        "Selector sel",
        `KeyFile ${join(dir, "sel.private")}`,
        // The key lives under the world-writable temporary directory.
        "RequireSafeKeys no",
        "Syslog no",
        "",
      ].join("\n"),
    );
    opendkim = startDaemon(OPENDKIM, ["-f", "-x", conf]);
    try {
      await waitListening(port, 30_000, opendkim.alive);
    } catch (e) {
      throw new Error(`${(e as Error).message}\n${opendkim.output()}`);
    }
    address = `inet:${port}@127.0.0.1`;
  });

  after(async () => {
    // OpenDKIM takes some 6 s to wind down its threads after SIGTERM;
    // nothing of it outlives the temporary directory.
    await opendkim?.stop(500);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("signs a message from an internal client; the applied signature verifies", async () => {
    const eom = await sign(address, "127.0.0.1");
    assert.equal(eom.verdict.action, "accept");
    assert.deepEqual(
      eom.modifications.map((x) => [x.type, "name" in x ? x.name : ""]),
      [["insert-header", "DKIM-Signature"]],
    );
    const block = HEADERS.map(([n, v]) => `${n}: ${v}\r\n`).join("");
    const headers = applyHeaderModifications(
      te.encode(block),
      eom.modifications as never,
    );
    const message = td.decode(headers) + "\r\n" + BODY;
    assert.match(
      message,
      /^DKIM-Signature: v=1; a=rsa-sha256; [^]*d=example\.org; s=sel;/,
    );
    const lookups: string[] = [];
    const result = await dkimVerify(message, {
      resolver: (name: string, type: string) => {
        lookups.push(`${type} ${name}`);
        if (type === "TXT" && name === "sel._domainkey.example.org") {
          return Promise.resolve([[txt]]);
        }
        return Promise.reject(
          Object.assign(new Error("not found"), { code: "ENOTFOUND" }),
        );
      },
    } as never);
    assert.deepEqual(lookups, ["TXT sel._domainkey.example.org"]);
    assert.equal(result.results.length, 1);
    assert.equal(result.results[0].status.result, "pass");
    assert.equal(result.results[0].signingDomain, "example.org");

    // One byte of the body changed, and the signature no longer verifies
    // (mailauth says neutral: the body hash does not match).
    const tampered = message.replace("attached", "attacked");
    const bad = await dkimVerify(tampered, {
      resolver: () => Promise.resolve([[txt]]),
    } as never);
    assert.notEqual(bad.results[0].status.result, "pass");
  });

  it("does not sign mail from a domain it does not sign for", async () => {
    const other: [string, string][] = [
      ["From", "mallory@example.net"],
      ...HEADERS.slice(1),
    ];
    const eom = await sign(address, "127.0.0.1", other);
    assert.equal(eom.verdict.action, "accept");
    assert.deepEqual(eom.modifications, []);
  });
  it("through serve(): the message onMessage gets is signed, and the signature verifies", async () => {
    const got: string[] = [];
    const server = await serve({
      port: 0,
      serverName: "mx.example.org",
      milters: [{ address }],
      async onMessage(m) {
        got.push(await m.text());
      },
    });
    try {
      const c = await connect(server.addr.port);
      await c.reply();
      for (
        const line of [
          "EHLO localhost",
          "MAIL FROM:<alice@example.org>",
          "RCPT TO:<bob@example.com>",
          "DATA",
        ]
      ) {
        await c.send(line + "\r\n");
        assert.match(await c.reply(), /^[23]\d\d[ -]/, line);
      }
      await c.send(block() + "\r\n" + BODY + ".\r\n");
      assert.match(await c.reply(), /^250 /);
      await c.close();
    } finally {
      await server.close();
    }
    assert.equal(got.length, 1);
    const message = got[0];
    assert.match(message, /^DKIM-Signature: v=1; a=rsa-sha256; [^]*s=sel;/);
    assert.ok(message.endsWith(block() + "\r\n" + BODY));
    const result = await dkimVerify(message, {
      resolver: (name: string, type: string) =>
        type === "TXT" && name === "sel._domainkey.example.org"
          ? Promise.resolve([[txt]])
          : Promise.reject(
            Object.assign(new Error("not found"), { code: "ENOTFOUND" }),
          ),
    } as never);
    assert.equal(result.results.length, 1);
    assert.equal(result.results[0].status.result, "pass");
  });
});
