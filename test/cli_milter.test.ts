// The CLI's --milter and --milter-on-error with the fake filter
// (test/helpers/fake_milter.ts): what the log says of a quarantined, a
// discarded and a refused message, what lands in the Maildir, and the flag
// checks. (The CLI with a real rspamd: test/interop_rspamd.test.ts.)
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "./helpers/client.ts";
import { startCli, startListeningCli } from "./helpers/cli.ts";
import { startFakeMilter } from "./helpers/fake_milter.ts";
import { encodePacket, encodeStrings } from "../src/milter/protocol.ts";

let dir = "";
before(() => {
  dir = mkdtempSync(join(tmpdir(), "smtpd-cli-milter-"));
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** Sends one message with `subject` to `port`; the end-of-data reply. */
async function send(port: number, subject: string): Promise<string> {
  const c = await connect(port);
  try {
    await c.reply();
    for (
      const line of [
        "EHLO client.example",
        "MAIL FROM:<a@example.org>",
        "RCPT TO:<b@example.org>",
        "DATA",
      ]
    ) {
      await c.send(line + "\r\n");
      await c.reply();
    }
    await c.send(`Subject: ${subject}\r\n\r\nHello\r\n.\r\n`);
    return await c.reply();
  } finally {
    await c.close();
  }
}

describe("cli: --milter", () => {
  it("logs the filters' outcome: quarantined into the Maildir, discarded and refused not", async () => {
    // The Subject says what the filter does at end-of-message.
    const subjects: string[] = [];
    const filter = await startFakeMilter({
      handler(cmd) {
        if (cmd.type === "header" && cmd.name === "Subject") {
          subjects.push(cmd.value);
        }
        if (cmd.type !== "eob") return undefined;
        switch (subjects.at(-1)) {
          case "hold":
            return [encodeStrings("q", ["looks odd"]), encodePacket("c")];
          case "drop":
            return [encodePacket("d")];
          case "spam":
            return [encodeStrings("y", ["554 5.7.1 Spam here"])];
          default:
            return undefined;
        }
      },
    });
    const maildir = join(dir, "md");
    const cli = await startListeningCli([
      "--maildir",
      maildir,
      "--milter",
      filter.address,
    ]);
    try {
      assert.match(await send(cli.port, "hold"), /^250 /);
      await cli.waitFor(/milter=quarantine quarantine="looks odd"/);
      assert.equal(readdirSync(join(maildir, "new")).length, 1);

      const drop = await send(cli.port, "drop");
      assert.match(drop, /^250 /);
      const id = /OK (\S+)/.exec(drop)![1];
      await cli.waitFor(
        new RegExp(
          `message id=${id} from=<a@example\\.org> to=<b@example\\.org> discarded by milter ${filter.address} at eom`,
        ),
      );
      assert.match(await send(cli.port, "spam"), /^554 5\.7\.1 Spam here/);
      await cli.waitFor(/rejected by milter \S+ at eom: 554 5\.7\.1 Spam here/);
      const files = readdirSync(join(maildir, "new"));
      assert.equal(files.length, 1, "only the quarantined message");
      assert.match(
        readFileSync(join(maildir, "new", files[0]), "utf8"),
        /Subject: hold\r\n/,
      );
      assert.deepEqual(readdirSync(join(maildir, "tmp")), []);
    } finally {
      await cli.stop();
      await filter.close();
    }
  });

  it("answers 451 4.7.1, or accepts, as --milter-on-error says, when the filter is down", async () => {
    const down = await startFakeMilter();
    await down.close();
    for (
      const [policy, greeting] of [
        [[], /^421 4\.7\.1 /],
        [["--milter-on-error", "accept"], /^220 /],
      ] as const
    ) {
      const cli = await startListeningCli([
        "--maildir",
        join(dir, `down-${policy.length}`),
        "--milter",
        down.address,
        ...policy,
      ]);
      try {
        const c = await connect(cli.port);
        assert.match(await c.reply(), greeting);
        await c.close();
      } finally {
        await cli.stop();
      }
    }
  });

  it("refuses a bad address, and --milter-on-error without --milter", async () => {
    for (
      const [args, message] of [
        [["--milter", "tcp:1"], /--milter: .*expected inet:HOST:PORT/],
        [
          ["--milter", "inet:99999@127.0.0.1"],
          /--milter: .*not between 1 and 65535/,
        ],
        [["--milter-on-error", "accept"], /--milter-on-error.*needs --milter/],
        [
          ["--milter", "inet:1@h", "--milter-on-error", "ignore"],
          /--milter-on-error: must be "tempfail" or "accept" or "reject"/,
        ],
      ] as const
    ) {
      const p = startCli([...args]);
      const exit = await p.exited;
      assert.notEqual(exit.code, 0);
      assert.match(p.stderr(), message);
    }
  });
});
