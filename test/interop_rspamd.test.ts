// The milter client against a real rspamd (Debian's /usr/bin/rspamd,
// installed by .ci/run): its proxy worker in milter mode in front of a
// normal worker, no Redis, ports and a temporary directory of the test's
// own, started once for the file. GTUBE gets a 5xx; ham gets rspamd's
// headers, applied here to the header block. Then through serve({ milters })
// and the CLI's --milter: ham reaches onMessage and the Maildir with
// rspamd's headers; GTUBE gets 5xx at the end of data and is not delivered.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { MilterClient, type MilterModification } from "../src/milter/client.ts";
import { applyHeaderModifications } from "../src/milter/headers.ts";
import {
  type Daemon,
  freePort,
  startDaemon,
  waitListening,
} from "./helpers/daemon.ts";
import { type Message, serve } from "../mod.ts";
import { type Client, connect } from "./helpers/client.ts";
import { startListeningCli } from "./helpers/cli.ts";

const RSPAMD = "/usr/bin/rspamd";
const installed = existsSync(RSPAMD);
// rspamd compiles its Hyperscan databases when it starts (the public
// suffix list's 9,628 TLDs above all: some 10 s on a CI machine) into its
// hs_cache_dir (DBDIR here), and loads them from there when they are
// already there (well under a second). The compiled
// files, each named by a hash of what it holds, are kept in HS_CACHE
// between the runs (one per runtime): copied into the daemon's own fresh
// DBDIR before it starts, the new ones copied back after it stops. rspamd
// itself checks that a file fits its rules and this CPU, and compiles the
// ones that do not.
const HS_CACHE = join(
  fileURLToPath(new URL("..", import.meta.url)),
  "node_modules",
  ".cache",
  "smtpd-test-rspamd-hs",
);
const HS_FILE = /^[0-9a-f]{64}\.hs[a-z]*$/;

/** Copies the compiled files of `from` missing in `to` (each whole, by a rename). */
function copyCompiled(from: string, to: string, owner?: [number, number]) {
  if (!existsSync(from)) return;
  mkdirSync(to, { recursive: true });
  const have = new Set(readdirSync(to));
  for (const name of readdirSync(from)) {
    if (!HS_FILE.test(name) || have.has(name)) continue;
    const part = join(to, `.${name}.${process.pid}`);
    copyFileSync(join(from, name), part);
    if (owner) chownSync(part, ...owner);
    renameSync(part, join(to, name));
  }
}
const te = new TextEncoder();
const td = new TextDecoder();
const GTUBE =
  "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
const HEADERS: [string, string][] = [
  ["From", "Alice <alice@example.org>"],
  ["To", "bob@example.com"],
  ["Subject", "Lunch on Friday"],
  ["Date", "Sat, 05 Dec 2026 12:00:00 +0000"],
  ["Message-ID", "<lunch.1@example.org>"],
];

/** One message through `m`; the end-of-message outcome. */
async function send(m: MilterClient, body: string, queueId: string) {
  for (
    const v of [
      await m.mail("<alice@example.org>", [], {
        "{mail_addr}": "alice@example.org",
      }),
      await m.rcpt("<bob@example.com>", [], {
        "{rcpt_addr}": "bob@example.com",
      }),
      await m.data(),
    ]
  ) assert.equal(v.action, "continue");
  for (const [name, value] of HEADERS) await m.header(name, value);
  await m.endOfHeaders();
  await m.body(te.encode(body));
  return await m.endOfMessage({ i: queueId });
}

async function session(address: string): Promise<MilterClient> {
  const m = new MilterClient({ address });
  assert.equal(
    (await m.connect(
      {
        hostname: "mail.example.net",
        family: "4",
        port: 40000,
        address: "192.0.2.7",
      },
      { j: "mx.example.com", "{daemon_name}": "smtpd" },
    )).action,
    "continue",
  );
  assert.equal((await m.helo("mail.example.net")).action, "continue");
  return m;
}

function names(mods: MilterModification[]): string[] {
  return mods.map((x) => "name" in x ? `${x.type} ${x.name}` : x.type);
}

/** The message of HEADERS and `body`, as sent after DATA (dot-stuffing aside). */
function wire(body: string): string {
  return HEADERS.map(([n, v]) => `${n}: ${v}\r\n`).join("") + "\r\n" + body;
}

/** One SMTP transaction over `c` (greeted); the end-of-data reply. */
async function smtpSend(c: Client, body: string): Promise<string> {
  for (
    const line of [
      "MAIL FROM:<alice@example.org>",
      "RCPT TO:<bob@example.com>",
      "DATA",
    ]
  ) {
    await c.send(line + "\r\n");
    assert.match(await c.reply(), /^[23]\d\d /, line);
  }
  await c.send(wire(body) + ".\r\n");
  return await c.reply();
}

/** A greeted client of `port`. */
async function client(port: number): Promise<Client> {
  const c = await connect(port);
  assert.match(await c.reply(), /^220 /);
  await c.send("EHLO mail.example.net\r\n");
  assert.match(await c.reply(), /^250/);
  return c;
}

describe("milter client with rspamd", {
  skip: !installed && `${RSPAMD} is not installed`,
}, () => {
  let dir: string;
  let rspamd: Daemon;
  let address: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "smtpd-rspamd-"));
    chmodSync(dir, 0o755);
    for (const d of ["local.d", "run", "db", "log"]) mkdirSync(join(dir, d));
    const [proxy, normal, controller] = [
      await freePort(),
      await freePort(),
      await freePort(),
    ];
    const local = join(dir, "local.d");
    writeFileSync(
      join(local, "worker-proxy.inc"),
      `bind_socket = "127.0.0.1:${proxy}";\nmilter = yes;\n` +
        `upstream "local" {\n  default = yes;\n  hosts = "127.0.0.1:${normal}";\n}\n`,
    );
    writeFileSync(
      join(local, "worker-normal.inc"),
      `bind_socket = "127.0.0.1:${normal}";\n`,
    );
    writeFileSync(
      join(local, "worker-controller.inc"),
      `bind_socket = "127.0.0.1:${controller}";\n`,
    );
    // The X-Spamd-Result, X-Rspamd-* headers on every message, whatever
    // the client's address.
    writeFileSync(
      join(local, "milter_headers.conf"),
      "extended_spam_headers = true;\nskip_local = false;\nskip_authenticated = false;\n",
    );
    const args = [
      "-f",
      `--var=LOCAL_CONFDIR=${dir}`,
      `--var=RUNDIR=${dir}/run`,
      `--var=DBDIR=${dir}/db`,
      `--var=LOGDIR=${dir}/log`,
    ];
    // As root, rspamd must be told whom to run as (and that user must own
    // its directories); as anyone else it runs as that user.
    let owner: [number, number] | undefined;
    if (process.getuid?.() === 0) {
      const uid = Number(execFileSync("id", ["-u", "_rspamd"]).toString());
      const gid = Number(execFileSync("id", ["-g", "_rspamd"]).toString());
      for (const d of ["run", "db", "log"]) chownSync(join(dir, d), uid, gid);
      args.unshift("-u", "_rspamd", "-g", "_rspamd");
      owner = [uid, gid];
    }
    copyCompiled(HS_CACHE, join(dir, "db"), owner);
    const started = Date.now();
    rspamd = startDaemon(RSPAMD, args);
    try {
      await waitListening(proxy, 90_000, rspamd.alive);
      await waitListening(normal, 90_000, rspamd.alive);
    } catch (e) {
      throw new Error(`${(e as Error).message}\n${rspamd.output()}`);
    }
    console.log(`rspamd listening after ${Date.now() - started} ms`);
    address = `inet:${proxy}@127.0.0.1`;
  });

  after(async () => {
    await rspamd?.stop();
    if (dir) {
      try {
        copyCompiled(join(dir, "db"), HS_CACHE);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  });

  it("ham is accepted with rspamd's headers, which apply to the header block", async () => {
    const m = await session(address);
    try {
      const eom = await send(m, "See you at noon.\r\n", "4Bham1");
      assert.equal(eom.verdict.action, "accept");
      assert.equal(m.negotiation?.version, 6);
      const added = names(eom.modifications);
      assert.ok(added.includes("add-header X-Spamd-Result"), added.join());
      // The queue id went over as macro i.
      assert.ok(
        eom.modifications.some((x) =>
          x.type === "add-header" && x.name === "X-Rspamd-Queue-Id" &&
          x.value === "4Bham1"
        ),
      );
      const block = HEADERS.map(([n, v]) => `${n}: ${v}\r\n`).join("");
      const out = td.decode(
        applyHeaderModifications(
          te.encode(block),
          eom.modifications.filter((x) => x.type.endsWith("-header")) as never,
        ),
      );
      assert.ok(out.startsWith(block));
      assert.match(out, /\r\nX-Spamd-Result: default: False \[[^\]]+\];\r\n\t/);
      assert.doesNotMatch(out, /[^\r]\n/);
    } finally {
      await m.close();
    }
  });

  it("GTUBE is rejected with rspamd's 5xx and nothing to apply", async () => {
    const m = await session(address);
    try {
      const eom = await send(m, `Buy now\r\n${GTUBE}\r\n`, "4Bspam1");
      assert.equal(eom.verdict.action, "reject");
      assert.ok(eom.verdict.action === "reject");
      assert.equal(Math.floor(eom.verdict.code / 100), 5);
      assert.match(eom.verdict.enhancedCode, /^5\./);
      assert.deepEqual(eom.modifications, []);
    } finally {
      await m.close();
    }
  });

  it("one connection carries a session's transactions: aborted, ham, then spam", async () => {
    const m = await session(address);
    try {
      assert.equal((await m.mail("<x@example.org>", [])).action, "continue");
      assert.equal((await m.rcpt("<y@example.com>", [])).action, "continue");
      await m.abort();
      assert.equal(
        (await send(m, "Second try.\r\n", "4Bham2")).verdict.action,
        "accept",
      );
      assert.equal(
        (await send(m, `${GTUBE}\r\n`, "4Bspam2")).verdict.action,
        "reject",
      );
      assert.equal(m.failure, undefined);
    } finally {
      await m.close();
    }
  });
  it("through serve(): ham reaches onMessage with rspamd's headers, GTUBE gets 5xx at the end of data and is not delivered", async () => {
    const got: { text: string; milter: Message["milter"] }[] = [];
    const server = await serve({
      port: 0,
      serverName: "mx.example.com",
      milters: [{ address }],
      async onMessage(m) {
        got.push({ text: await m.text(), milter: m.milter });
      },
    });
    try {
      const c = await client(server.addr.port);
      const ham = await smtpSend(c, "See you at noon.\r\n");
      assert.match(ham, /^250 /);
      const id = /OK (\S+)/.exec(ham)![1];
      const spam = await smtpSend(c, `Buy now\r\n${GTUBE}\r\n`);
      assert.match(spam, /^5\d\d 5\.\d+\.\d+ /);
      await c.close();
      assert.equal(got.length, 1);
      const text = got[0].text;
      assert.match(text, /^X-Spamd-Result: default: False \[/m);
      assert.match(text, new RegExp(`^X-Rspamd-Queue-Id: ${id}\r$`, "m"));
      assert.ok(text.endsWith("\r\n\r\nSee you at noon.\r\n"));
      assert.equal(got[0].milter?.[0].verdict.action, "accept");
      assert.ok(
        got[0].milter![0].addedHeaders.some((h) => h.name === "X-Spamd-Result"),
      );
    } finally {
      await server.close();
    }
  });

  it("the CLI with --milter: ham lands in the Maildir with rspamd's headers, GTUBE is refused and nothing is in new/ or tmp/", async () => {
    const maildir = join(dir, "maildir-cli");
    const cli = await startListeningCli([
      "--maildir",
      maildir,
      "--server-name",
      "mx.example.com",
      "--milter",
      address,
    ]);
    try {
      const c = await client(cli.port);
      const spam = await smtpSend(c, `${GTUBE}\r\n`);
      assert.match(spam, /^5\d\d 5\.\d+\.\d+ /);
      assert.deepEqual(readdirSync(join(maildir, "new")), []);
      assert.deepEqual(readdirSync(join(maildir, "tmp")), []);
      await cli.waitFor(/rejected by milter [^\n]* at eom: 5\d\d /);
      const ham = await smtpSend(c, "See you at noon.\r\n");
      assert.match(ham, /^250 /);
      const id = /OK (\S+)/.exec(ham)![1];
      await c.close();
      const line = await cli.waitFor(
        new RegExp(`message id=${id} .* milter=accept`),
      );
      assert.ok(line);
      const [name, ...more] = readdirSync(join(maildir, "new"));
      assert.deepEqual(more, []);
      assert.deepEqual(readdirSync(join(maildir, "tmp")), []);
      const file = readFileSync(join(maildir, "new", name), "utf8");
      assert.match(file, /^X-Spamd-Result: default: False \[/m);
      assert.ok(file.endsWith("\r\n\r\nSee you at noon.\r\n"));
    } finally {
      await cli.stop();
    }
  });
});
