// The `milters` option through a real listening server and the fake filter
// (test/helpers/fake_milter.ts): the stages and macros a filter sees, its
// verdicts applied at each stage, every modification reflected in what
// onMessage gets, a large body held in a temporary file, the error policy
// for a filter that is down, slow, closes or speaks garbage, and one filter
// connection per SMTP session.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import process from "node:process";
import {
  type LogEntry,
  type Message,
  serve,
  type ServeOptions,
  type Server,
  SmtpError,
} from "../mod.ts";
import { type Client, connect, withServerUsing } from "./helpers/client.ts";
import { createMetrics } from "../src/exports/metrics.ts";
import { newId } from "../src/session_state.ts";
import { TLS } from "./helpers/tls.ts";
import {
  be32,
  type FakeAction,
  type FakeMilter,
  startFakeMilter,
} from "./helpers/fake_milter.ts";
import {
  encodePacket,
  encodeStrings,
  type MilterCommand,
} from "../src/milter/protocol.ts";

const te = new TextEncoder();
const td = new TextDecoder();

interface Got {
  from: string;
  to: readonly string[];
  text: string;
  milter: Message["milter"];
}

const MESSAGE = "From: a@example.org\r\nTo: b@example.org\r\n" +
  "Subject: hi\r\n\r\nHello\r\n";

/**
 * This process's temporary files of held bodies in the temporary directory
 * (named by message id; the ids of a process share their first 16
 * characters, so that another test process's files do not count).
 */
function heldFiles(): string[] {
  const mine = `smtpd-milter-${newId().slice(0, 16)}`;
  return readdirSync(tmpdir()).filter((f) => f.startsWith(mine));
}

/**
 * Runs `fn` with a fake filter (`filter` options) and a server using it
 * (`options`, plus an onMessage that collects into `got`).
 */
async function withMilter(
  filter: Parameters<typeof startFakeMilter>[0],
  options: Partial<ServeOptions> & {
    onError?: "tempfail" | "accept" | "reject";
  },
  fn: (ctx: {
    fake: FakeMilter;
    server: Server;
    open: () => Promise<Client>;
    got: Got[];
    log: LogEntry[];
  }) => Promise<void>,
): Promise<void> {
  const fake = await startFakeMilter(filter);
  const got: Got[] = [];
  const log: LogEntry[] = [];
  const { onError, ...rest } = options;
  try {
    await withServerUsing(
      {
        milters: [{
          address: fake.address,
          ...(onError !== undefined ? { onError } : {}),
          timeouts: { command: 2000, endOfMessage: 2000 },
        }],
        logger: (e) => log.push(e),
        async onMessage(m) {
          const text = await m.text();
          got.push({ from: m.from, to: m.to, text, milter: m.milter });
        },
        ...rest,
      },
      connect,
      async (server, open) => {
        await fn({
          fake,
          server,
          open: async () => {
            const c = await open();
            return c;
          },
          got,
          log,
        });
      },
    );
  } finally {
    await fake.close();
  }
}

/** Greeting and EHLO; the greeting. */
async function hello(c: Client): Promise<string> {
  const greeting = await c.reply();
  if (!greeting.startsWith("220")) return greeting;
  await c.send("EHLO client.example\r\n");
  await c.reply();
  return greeting;
}

/** One transaction; the replies to MAIL, each RCPT, DATA and the end of data. */
async function transaction(
  c: Client,
  to: string[] = ["b@example.org"],
  body = MESSAGE,
): Promise<string[]> {
  const out: string[] = [];
  await c.send("MAIL FROM:<a@example.org>\r\n");
  out.push(await c.reply());
  if (!out[0].startsWith("250")) return out;
  let ok = 0;
  for (const r of to) {
    await c.send(`RCPT TO:<${r}>\r\n`);
    const reply = await c.reply();
    out.push(reply);
    if (reply.startsWith("250")) ok++;
  }
  if (ok === 0) return out;
  await c.send("DATA\r\n");
  out.push(await c.reply());
  await c.send(body + ".\r\n");
  out.push(await c.reply());
  return out;
}

const types = (cmds: MilterCommand[]) => cmds.map((c) => c.type);
/** The macros sent before command `stage`'s packet (by its code). */
function macros(
  cmds: MilterCommand[],
  stage: string,
): Record<string, string> {
  const m = cmds.find((c) => c.type === "macro" && c.stage === stage);
  return m?.type === "macro" ? m.macros : {};
}

/** A reply a filter gives with SMFIR_REPLYCODE. */
const replycode = (text: string): Uint8Array[] => [encodeStrings("y", [text])];
const REJECT = [encodePacket("r")];
const TEMPFAIL = [encodePacket("t")];

describe("serve({ milters })", () => {
  it("shows each stage to the filter with Postfix's macros, then delivers", async () => {
    await withMilter({}, {}, async ({ fake, open, got }) => {
      const c = await open();
      const port = c.socket.localPort;
      await hello(c);
      const r = await transaction(c);
      assert.match(r.at(-1)!, /^250 /);
      const id = /OK (\S+)/.exec(r.at(-1)!)![1];
      await c.send("QUIT\r\n");
      await c.reply();
      assert.equal(fake.connections.length, 1);
      const cmds = fake.connections[0];
      // The session's end says goodbye to the filter.
      while (!types(cmds).includes("quit")) {
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.deepEqual(
        types(cmds).filter((t) => t !== "macro"),
        [
          "optneg",
          "connect",
          "helo",
          "mail",
          "rcpt",
          "data",
          "header",
          "header",
          "header",
          "eoh",
          "body",
          "eob",
          "quit",
        ],
      );
      const connect = macros(cmds, "C");
      assert.equal(connect.j, "mx.test");
      assert.equal(connect["{daemon_name}"], "smtpd");
      assert.equal(connect["{client_addr}"], "127.0.0.1");
      assert.equal(connect["{client_port}"], String(port));
      assert.equal(connect["{client_name}"], "unknown");
      assert.equal(connect._, "unknown [127.0.0.1]");
      assert.equal(connect["{if_addr}"], "127.0.0.1");
      const conn = cmds.find((x) => x.type === "connect");
      assert.deepEqual(conn, {
        type: "connect",
        hostname: "[127.0.0.1]",
        family: "4",
        port,
        address: "127.0.0.1",
      });
      assert.equal(macros(cmds, "M")["{mail_addr}"], "a@example.org");
      assert.equal(macros(cmds, "R")["{rcpt_addr}"], "b@example.org");
      // The queue id is the message id the client was given.
      assert.equal(macros(cmds, "E").i, id);
      assert.deepEqual(
        cmds.filter((x) => x.type === "header").map((x) =>
          x.type === "header" ? [x.name, x.value] : []
        ),
        [["From", "a@example.org"], ["To", "b@example.org"], [
          "Subject",
          "hi",
        ]],
      );
      const body = cmds.find((x) => x.type === "body");
      assert.equal(
        body?.type === "body" ? td.decode(body.chunk) : "",
        "Hello\r\n",
      );
      assert.equal(got.length, 1);
      assert.equal(got[0].text, MESSAGE);
      assert.deepEqual(got[0].milter, [{
        address: fake.address,
        verdict: { action: "continue" },
        modifications: [],
        addedHeaders: [],
      }]);
    });
  });

  it("tells the filter who authenticated, and how, at MAIL", async () => {
    await withMilter({}, {
      allowInsecureAuth: true,
      auth: { verify: () => true },
    }, async ({ open, fake }) => {
      const c = await open();
      await hello(c);
      const plain = btoa("\0alice\0secret");
      await c.send(`AUTH PLAIN ${plain}\r\n`);
      assert.match(await c.reply(), /^235 /);
      assert.match((await transaction(c)).at(-1)!, /^250 /);
      const m = macros(fake.connections[0], "M");
      assert.equal(m["{auth_authen}"], "alice");
      assert.equal(m["{auth_type}"], "PLAIN");
    });
  });

  it("tells the filter the TLS version and cipher after STARTTLS (swaks --tls)", async () => {
    await withMilter({}, { tls: TLS }, async ({ server, fake, got }) => {
      const out = await new Promise<string>((resolve) => {
        execFile("swaks", [
          "--server",
          "127.0.0.1",
          "--port",
          String(server.addr.port),
          "--tls",
          "--from",
          "a@example.org",
          "--to",
          "b@example.org",
        ], (_err, stdout, stderr) => resolve(stdout + stderr));
      });
      assert.match(out, /<~ {2}250 2\.0\.0 OK/, out);
      assert.equal(got.length, 1);
      const cmds = fake.connections[0];
      // HELO twice (before and after STARTTLS); the second one with TLS.
      const helos = cmds.filter((x) => x.type === "macro" && x.stage === "H");
      const last = helos.at(-1);
      assert.ok(last?.type === "macro");
      assert.match(last.macros["{tls_version}"], /^TLSv1\.[23]$/);
      assert.ok(last.macros["{cipher}"].length > 0);
      assert.equal(
        macros(cmds, "M")["{tls_version}"],
        last.macros["{tls_version}"],
      );
    });
  });

  it("refuses the greeting when a filter rejects (554 5.7.1) or tempfails (421 4.7.1) at connect", async () => {
    for (
      const [answer, reply] of [
        [REJECT, /^554 5\.7\.1 /],
        [TEMPFAIL, /^421 4\.7\.1 /],
        [replycode("521 5.7.0 Not you"), /^521 5\.7\.0 Not you\r\n$/],
      ] as const
    ) {
      await withMilter(
        {
          handler: (cmd) => cmd.type === "connect" ? [...answer] : undefined,
        },
        {},
        async ({ open, got }) => {
          const c = await open();
          assert.match(await c.reply(), reply);
          await c.closed();
          assert.equal(got.length, 0);
        },
      );
    }
  });

  it("applies a filter's reject, tempfail or own reply at HELO and MAIL", async () => {
    for (
      const [stage, answer, reply] of [
        ["helo", REJECT, /^550 5\.7\.1 Command rejected/],
        ["helo", TEMPFAIL, /^451 4\.7\.1 /],
        [
          "mail",
          replycode("553 5.1.8 Bad sender domain"),
          /^553 5\.1\.8 Bad sender domain/,
        ],
        ["mail", TEMPFAIL, /^451 4\.7\.1 /],
      ] as const
    ) {
      await withMilter(
        {
          handler: (cmd) => cmd.type === stage ? [...answer] : undefined,
        },
        {},
        async ({ open, got, log }) => {
          const c = await open();
          await c.reply();
          await c.send("EHLO client.example\r\n");
          const helo = await c.reply();
          if (stage === "helo") {
            assert.match(helo, reply);
          } else {
            assert.match(helo, /^250/);
            await c.send("MAIL FROM:<a@example.org>\r\n");
            assert.match(await c.reply(), reply);
          }
          assert.equal(got.length, 0);
          assert.ok(
            log.some((e) => e.type === "milter" && e.stage === stage),
            "the refusal is logged",
          );
        },
      );
    }
  });

  it("refuses one recipient at RCPT and delivers to the others", async () => {
    await withMilter(
      {
        handler: (cmd) =>
          cmd.type === "rcpt" && cmd.args[0] === "<spam@example.org>"
            ? replycode("550 5.1.1 No such user here")
            : undefined,
      },
      {},
      async ({ open, got }) => {
        const c = await open();
        await hello(c);
        const r = await transaction(c, ["b@example.org", "spam@example.org"]);
        assert.match(r[1], /^250/);
        assert.match(r[2], /^550 5\.1\.1 No such user here/);
        assert.match(r.at(-1)!, /^250 /);
        assert.deepEqual(got.map((g) => g.to), [["b@example.org"]]);
      },
    );
  });

  it("answers a reject at DATA, a header, end-of-headers, the body or end-of-message after the body, and delivers nothing", async () => {
    for (
      const [stage, answer, reply] of [
        ["data", REJECT, /^550 5\.7\.1 /],
        ["header", TEMPFAIL, /^451 4\.7\.1 /],
        ["eoh", replycode("554 5.7.1 No thanks"), /^554 5\.7\.1 No thanks/],
        ["body", REJECT, /^550 5\.7\.1 /],
        [
          "eob",
          replycode("554 5.7.1 Gtube pattern"),
          /^554 5\.7\.1 Gtube pattern/,
        ],
      ] as const
    ) {
      let once = false;
      await withMilter(
        {
          handler: (cmd) =>
            cmd.type === stage && !once
              ? (once = true, [...answer])
              : undefined,
        },
        {},
        async ({ open, got, fake }) => {
          const c = await open();
          await hello(c);
          const r = await transaction(c);
          assert.match(r.at(-2)!, /^354/);
          assert.match(r.at(-1)!, reply, stage);
          assert.equal(got.length, 0, stage);
          // The session goes on: the next message is accepted.
          assert.match((await transaction(c)).at(-1)!, /^250 /);
          assert.equal(got.length, 1);
          // The refused message ended with an abort before the next MAIL.
          const t = types(fake.connections[0]).filter((x) => x !== "macro");
          const second = t.lastIndexOf("mail");
          if (stage !== "eob") assert.equal(t[second - 1], "abort", stage);
          assert.deepEqual(heldFiles(), []);
        },
      );
    }
  });

  it("discards: the client gets 250 and the application nothing", async () => {
    for (const stage of ["mail", "rcpt", "body", "eob"] as const) {
      await withMilter(
        {
          handler: (cmd) =>
            cmd.type === stage ? [encodePacket("d")] : undefined,
        },
        {},
        async ({ open, got, log }) => {
          const c = await open();
          await hello(c);
          const r = await transaction(c);
          assert.match(r.at(-1)!, /^250 /, stage);
          assert.equal(got.length, 0, stage);
          assert.ok(
            log.some((e) => e.type === "milter" && e.action === "discard"),
          );
          assert.ok(
            log.some((e) => e.type === "message" && e.milter === "discard"),
            stage,
          );
        },
      );
    }
  });

  it("gives onMessage the message as every modification left it", async () => {
    const idx = (i: number, ...s: string[]) =>
      new Uint8Array([
        ...be32(i),
        ...te.encode(s.map((x) => x + "\0").join("")),
      ]);
    const mods = [
      encodeStrings("h", ["X-Spam", "No"]),
      encodePacket("i", idx(0, "Authentication-Results", "mx.test; dkim=pass")),
      encodePacket("m", idx(1, "Subject", "[ok] hi")),
      encodePacket("m", idx(1, "To", "")),
      encodeStrings("+", ["<c@example.org>"]),
      encodeStrings("-", ["<b@example.org>"]),
      encodeStrings("e", ["<bounce@example.org>"]),
      encodePacket("b", te.encode("new ")),
      encodePacket("b", te.encode("body\r\n")),
      encodeStrings("q", ["held for review"]),
      encodePacket("a"),
    ];
    await withMilter(
      {
        handler: (cmd) => cmd.type === "eob" ? mods : undefined,
      },
      {},
      async ({ open, got, fake, log }) => {
        const c = await open();
        await hello(c);
        const r = await transaction(c, ["b@example.org", "x@example.org"]);
        assert.match(r.at(-1)!, /^250 /);
        assert.equal(got.length, 1);
        const g = got[0];
        assert.equal(g.from, "bounce@example.org");
        assert.deepEqual(g.to, ["x@example.org", "c@example.org"]);
        // The log entry tells the envelope delivered, not the client's.
        const entry = log.find((e) => e.type === "message");
        assert.ok(entry?.type === "message");
        assert.equal(entry.from, "bounce@example.org");
        assert.deepEqual(entry.to, ["x@example.org", "c@example.org"]);
        assert.equal(
          g.text,
          "Authentication-Results: mx.test; dkim=pass\r\n" +
            "From: a@example.org\r\nSubject: [ok] hi\r\nX-Spam: No\r\n\r\nnew body\r\n",
        );
        const m = g.milter![0];
        assert.equal(m.address, fake.address);
        assert.deepEqual(m.verdict, {
          action: "quarantine",
          reason: "held for review",
        });
        assert.equal(m.quarantine, "held for review");
        assert.deepEqual(m.addedHeaders, [
          { name: "X-Spam", value: "No" },
          { name: "Authentication-Results", value: "mx.test; dkim=pass" },
        ]);
        assert.equal(m.modifications.length, 10);
      },
    );
  });

  it("holds a large body in a temporary file, streams it to the filter in chunks of 64 KB at most and to onMessage, and removes the file", async () => {
    const line = "x".repeat(998) + "\r\n";
    const body = "Subject: big\r\n\r\n" + line.repeat(5 * 1024); // ~5 MB
    let held: string[] = [];
    let largest = 0;
    let bodyBytes = 0;
    await withMilter(
      {
        handler: (cmd) => {
          if (cmd.type === "body") {
            largest = Math.max(largest, cmd.chunk.length);
            bodyBytes += cmd.chunk.length;
          }
          if (cmd.type === "eob") held = heldFiles();
          return undefined;
        },
      },
      {},
      async ({ open, got }) => {
        const c = await open();
        await hello(c);
        const r = await transaction(c, ["b@example.org"], body);
        assert.match(r.at(-1)!, /^250 /);
        assert.equal(got.length, 1);
        assert.equal(got[0].text.length, body.length);
        assert.equal(got[0].text, body);
      },
    );
    assert.equal(held.length, 1, "the body was in a file at end-of-message");
    assert.ok(largest <= 65535, `body chunks of ${largest} bytes`);
    assert.equal(bodyBytes, body.length - "Subject: big\r\n\r\n".length);
    assert.deepEqual(heldFiles(), []);
  });

  it("applies the error policy to a filter that is down, closes mid-stage, speaks garbage or times out; nothing half-delivered", async () => {
    const cases: [
      string,
      ((cmd: MilterCommand) => FakeAction) | "down",
      "tempfail" | "accept" | "reject",
      RegExp,
    ][] = [
      ["down", "down", "tempfail", /^421 4\.7\.1 /],
      ["down", "down", "reject", /^554 5\.7\.1 /],
      [
        "close at header",
        (c) => c.type === "header" ? "close" : undefined,
        "tempfail",
        /^451 4\.7\.1 /,
      ],
      [
        "garbage at body",
        (c) =>
          c.type === "body"
            ? [new Uint8Array([0, 0, 0, 2, 0x5a, 0x5a])]
            : undefined,
        "reject",
        /^550 5\.7\.1 /,
      ],
      [
        "silent at end-of-message",
        (c) => c.type === "eob" ? "silent" : undefined,
        "tempfail",
        /^451 4\.7\.1 /,
      ],
      [
        "silent at end-of-message, accepted",
        (c) => c.type === "eob" ? "silent" : undefined,
        "accept",
        /^250 /,
      ],
    ];
    for (const [name, handler, onError, reply] of cases) {
      const fake = await startFakeMilter(
        handler === "down" ? {} : { handler },
      );
      if (handler === "down") await fake.close();
      const got: string[] = [];
      await withServerUsing(
        {
          milters: [{
            address: fake.address,
            onError,
            timeouts: { command: 500, endOfMessage: 500 },
          }],
          async onMessage(m) {
            got.push(await m.text());
          },
        },
        connect,
        async (_server, open) => {
          const c = await open();
          const greeting = await hello(c);
          if (name === "down") {
            assert.match(greeting, reply, name);
            return;
          }
          const r = await transaction(c);
          assert.match(r.at(-1)!, reply, name);
          assert.equal(got.length, onError === "accept" ? 1 : 0, name);
        },
      );
      await fake.close();
      assert.deepEqual(heldFiles(), [], name);
    }
  });

  it("aborts the filter's transaction at RSET and reuses one filter connection per session, never sharing it", async () => {
    await withMilter({}, {}, async ({ open, fake, got }) => {
      const a = await open();
      await hello(a);
      await a.send("MAIL FROM:<a@example.org>\r\n");
      await a.reply();
      await a.send("RSET\r\n");
      assert.match(await a.reply(), /^250/);
      assert.match((await transaction(a)).at(-1)!, /^250 /);
      assert.match((await transaction(a)).at(-1)!, /^250 /);
      const b = await open();
      await hello(b);
      assert.match((await transaction(b)).at(-1)!, /^250 /);
      assert.equal(got.length, 3);
      assert.equal(fake.connections.length, 2);
      const first = types(fake.connections[0]).filter((x) => x !== "macro");
      assert.deepEqual(first.slice(0, 6), [
        "optneg",
        "connect",
        "helo",
        "mail",
        "abort",
        "mail",
      ]);
      assert.equal(first.filter((x) => x === "eob").length, 2);
      assert.equal(
        types(fake.connections[1]).filter((x) => x === "eob").length,
        1,
      );
    });
  });

  it("answers LMTP per recipient with the filters' changes applied", async () => {
    await withMilter({
      handler: (cmd) =>
        cmd.type === "eob"
          ? [encodeStrings("h", ["X-Filtered", "yes"]), encodePacket("c")]
          : undefined,
    }, {
      lmtp: true,
      onMessage(m) {
        m.rejectRecipient(
          "full@example.org",
          new SmtpError(452, "4.2.2", "Mailbox full"),
        );
      },
    }, async ({ open, log }) => {
      const c = await open();
      await c.reply();
      await c.send("LHLO client.example\r\n");
      await c.reply();
      await c.send("MAIL FROM:<a@example.org>\r\n");
      await c.reply();
      await c.send("RCPT TO:<b@example.org>\r\n");
      await c.reply();
      await c.send("RCPT TO:<full@example.org>\r\n");
      await c.reply();
      await c.send("DATA\r\n");
      await c.reply();
      await c.send(MESSAGE + ".\r\n");
      const [one, two] = await c.replies(2);
      assert.match(one, /^250 /);
      assert.match(two, /^452 4\.2\.2 Mailbox full/);
      const entry = log.find((e) => e.type === "message");
      assert.ok(entry?.type === "message");
      assert.deepEqual(entry.to, ["b@example.org"]);
    });
  });

  it("finds the header fields when the header block comes a byte at a time", async () => {
    const headers = "From: a@example.org\r\nSubject: a long subject\r\n" +
      " folded\r\nX-Empty:\r\n\r\n";
    const body = "Line one\r\n\r\nLine three\r\n";
    await withMilter({}, {}, async ({ open, got, fake }) => {
      const c = await open();
      await hello(c);
      for (
        const line of [
          "MAIL FROM:<a@example.org>",
          "RCPT TO:<b@example.org>",
          "DATA",
        ]
      ) {
        await c.send(line + "\r\n");
        await c.reply();
      }
      for (const ch of headers) await c.send(ch);
      await c.send(body + ".\r\n");
      assert.match(await c.reply(), /^250 /);
      assert.equal(got[0].text, headers + body);
      const cmds = fake.connections[0];
      assert.deepEqual(
        cmds.flatMap((x) => x.type === "header" ? [[x.name, x.value]] : []),
        [
          ["From", "a@example.org"],
          ["Subject", "a long subject\r\n folded"],
          ["X-Empty", ""],
        ],
      );
      assert.equal(
        td.decode(
          new Uint8Array(
            cmds.flatMap((x) => x.type === "body" ? [...x.chunk] : []),
          ),
        ),
        body,
      );
    });
  });

  it("aborts the application's message.signal when the filters and onMessage outlast hookTimeout", async () => {
    let aborted: boolean | null = null;
    await withMilter({}, {
      hookTimeout: 300,
      async onMessage(m) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 5000);
          m.signal.addEventListener("abort", () => {
            clearTimeout(timer);
            resolve();
          });
        });
        aborted = m.signal.aborted;
      },
    }, async ({ open }) => {
      const c = await open();
      await hello(c);
      assert.match((await transaction(c)).at(-1)!, /^451 4\.3\.0 /);
      while (aborted === null) await new Promise((r) => setTimeout(r, 10));
      assert.equal(aborted, true);
    });
  });

  it("talks to a filter on a Unix socket, and hands the changed message to the for await loop", async () => {
    const path = `${tmpdir()}/smtpd-milter-test-${process.pid}.sock`;
    const fake = await startFakeMilter({
      path,
      handler: (cmd) =>
        cmd.type === "eob"
          ? [encodeStrings("h", ["X-Scanned", "yes"]), encodePacket("a")]
          : undefined,
    });
    const server = await serve({
      port: 0,
      milters: [{ address: `unix:${path}` }],
    });
    // The loop takes the message, then asks for the next one (which
    // acknowledges it).
    const messages = server[Symbol.asyncIterator]();
    const loop = (async () => {
      const { value: m } = await messages.next();
      const text = await m!.text();
      void messages.next();
      return { text, milter: m!.milter };
    })();
    try {
      const c = await connect(server.addr.port);
      await hello(c);
      assert.match((await transaction(c)).at(-1)!, /^250 /);
      await c.close();
      const got = await loop;
      assert.equal(
        got?.text,
        MESSAGE.replace("\r\n\r\n", "\r\nX-Scanned: yes\r\n\r\n"),
      );
      assert.equal(got?.milter?.[0].address, `unix:${path}`);
    } finally {
      await server.close();
      await fake.close();
    }
  });

  it("closes the server past closeTimeout while a filter keeps it waiting", async () => {
    const fake = await startFakeMilter({
      handler: (cmd) => cmd.type === "helo" ? "silent" : undefined,
    });
    const server = await serve({
      port: 0,
      closeTimeout: 100,
      milters: [{ address: fake.address, timeouts: { command: 600_000 } }],
    });
    try {
      const c = await connect(server.addr.port);
      assert.match(await c.reply(), /^220 /);
      await c.send("EHLO client.example\r\n");
      // The filter has the HELO stage and does not answer.
      while (!types(fake.connections[0] ?? []).includes("helo")) {
        await new Promise((r) => setTimeout(r, 10));
      }
      await server.close();
      await c.closed();
    } finally {
      await fake.close();
    }
  });

  it("times each filter stage in server.stats(), which createMetrics() shows as one family", async () => {
    await withMilter({}, {}, async ({ open, server, fake }) => {
      const c = await open();
      await hello(c);
      await transaction(c);
      const f = server.stats().find((x) =>
        x.name === "smtpd_milter_duration_seconds"
      );
      assert.ok(f);
      const eom = f.series.find((s) =>
        s.labels.stage === "eom" && s.labels.milter === fake.address
      ) as { count: number } | undefined;
      assert.equal(eom?.count, 1);
      const metrics = createMetrics({ server });
      metrics.observeMilter("other", "eom", 0.01);
      const families = metrics.snapshot().filter((x) =>
        x.name === "smtpd_milter_duration_seconds"
      );
      assert.equal(families.length, 1);
      assert.deepEqual(
        families[0].series.filter((x) => x.labels.stage === "eom").map((x) =>
          x.labels.milter
        ),
        [fake.address, "other"],
      );
    });
  });

  it("asks several filters in order: the first refusal ends the round, and every filter's changes apply", async () => {
    const a = await startFakeMilter({
      handler: (cmd) =>
        cmd.type === "rcpt" && cmd.args[0] === "<no@example.org>"
          ? [encodePacket("r")]
          : cmd.type === "eob"
          ? [encodeStrings("h", ["X-A", "1"]), encodePacket("c")]
          : undefined,
    });
    const b = await startFakeMilter({
      handler: (cmd) =>
        cmd.type === "eob"
          ? [encodeStrings("h", ["X-B", "2"]), encodePacket("c")]
          : undefined,
    });
    const got: Got[] = [];
    try {
      await withServerUsing(
        {
          milters: [{ address: a.address }, { address: b.address }],
          async onMessage(m) {
            const text = await m.text();
            got.push({ from: m.from, to: m.to, text, milter: m.milter });
          },
        },
        connect,
        async (_server, open) => {
          const c = await open();
          await hello(c);
          const r = await transaction(c, ["no@example.org", "b@example.org"]);
          assert.match(r[1], /^550 5\.7\.1 /);
          assert.match(r.at(-1)!, /^250 /);
        },
      );
      assert.equal(
        got[0].text,
        MESSAGE.replace("\r\n\r\n", "\r\nX-A: 1\r\nX-B: 2\r\n\r\n"),
      );
      assert.deepEqual(got[0].milter!.map((m) => m.address), [
        a.address,
        b.address,
      ]);
      // B never heard of the recipient A refused.
      assert.deepEqual(
        b.connections[0].flatMap((x) => x.type === "rcpt" ? [x.args[0]] : []),
        ["<b@example.org>"],
      );
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("checks the option at serve()", async () => {
    for (
      const [milters, message] of [
        ["inet:1@h", /milters: value is not an array/],
        [[{ address: "tcp:1" }], /Cannot parse milter address "tcp:1"/],
        [[{ address: "inet:1@h", onError: "ignore" }], /onError/],
        [
          [{ address: "inet:1@h", timeouts: { command: 0 } }],
          /timeouts\.command/,
        ],
        [[5], /Cannot use milter options/],
      ] as const
    ) {
      await assert.rejects(
        serve({ port: 0, milters: milters as never }),
        (e: Error) => e instanceof TypeError && message.test(e.message),
      );
    }
    // An empty list is no filter at all.
    const server = await serve({ port: 0, milters: [] });
    await server.close();
  });
});
