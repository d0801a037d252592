// The milter client (src/milter/client.ts) against a fake filter
// (test/helpers/fake_milter.ts): what it sends at each stage, the verdicts
// it returns, the modifications it collects, and every error path (down,
// garbage, closed mid-stage, silent) under each error policy.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as net from "node:net";
import { join } from "node:path";
import {
  MilterClient,
  type MilterOptions,
  type MilterVerdict,
} from "../src/milter/client.ts";
import {
  encodePacket,
  encodeStrings,
  type MilterCommand,
  OFFERED_PROTOCOL,
  SMFIF,
  SMFIP,
} from "../src/milter/protocol.ts";
import { applyHeaderModifications } from "../src/milter/headers.ts";
import {
  be32,
  type FakeAction,
  type FakeMilter,
  startFakeMilter,
} from "./helpers/fake_milter.ts";

const te = new TextEncoder();
const td = new TextDecoder();
const CLIENT = {
  hostname: "mail.example.net",
  family: "4",
  port: 40000,
  address: "192.0.2.7",
} as const;
const TEMPFAIL = {
  action: "tempfail",
  code: 451,
  enhancedCode: "4.7.1",
  text: "Service unavailable - try again later",
};

async function withFilter(
  fake: Parameters<typeof startFakeMilter>[0],
  options: Partial<MilterOptions>,
  body: (m: MilterClient, f: FakeMilter) => Promise<void>,
): Promise<void> {
  const f = await startFakeMilter(fake);
  const m = new MilterClient({ address: f.address, ...options });
  try {
    await body(m, f);
  } finally {
    await m.close();
    await f.close();
  }
}

/** Every stage of one message; the verdict of each. */
async function message(
  m: MilterClient,
  rcpts = ["<b@example.org>"],
): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  out.mail = (await m.mail("<a@example.org>", ["BODY=8BITMIME"], {
    "{mail_addr}": "a@example.org",
  })).action;
  out.rcpt = [];
  for (const r of rcpts) {
    (out.rcpt as string[]).push((await m.rcpt(r, [])).action);
  }
  out.data = (await m.data()).action;
  out.header = (await m.header("Subject", "hi")).action;
  out.eoh = (await m.endOfHeaders()).action;
  out.body = (await m.body(te.encode("Hello\r\n"))).action;
  out.eom = await m.endOfMessage({ i: "Q1" });
  return out;
}

/**
 * How many times `fn` writes to a socket connected to `port` (the
 * client's writes to the filter; the filter's own sockets are connected
 * to the client's port).
 */
async function countWrites(
  port: number,
  fn: () => Promise<void>,
): Promise<number> {
  let n = 0;
  const original = net.Socket.prototype.write;
  // deno-lint-ignore no-explicit-any
  net.Socket.prototype.write = function (this: net.Socket, ...args: any[]) {
    if (this.remotePort === port) n++;
    // deno-lint-ignore no-explicit-any
    return (original as any).apply(this, args);
  };
  try {
    await fn();
  } finally {
    net.Socket.prototype.write = original;
  }
  return n;
}

function types(log: MilterCommand[]): string[] {
  return log.map((c) => c.type);
}

describe("milter client stages", () => {
  it("negotiates version 6, sends macros before their stage and every stage in order", async () => {
    await withFilter({}, {}, async (m, f) => {
      assert.deepEqual(
        await m.connect(CLIENT, { j: "mx.example.org" }),
        { action: "continue" },
      );
      assert.deepEqual(await m.helo("client.example"), { action: "continue" });
      const r = await message(m);
      assert.deepEqual(r.eom, {
        verdict: { action: "continue" },
        modifications: [],
      });
      await m.close();
      const log = f.connections[0];
      assert.deepEqual(types(log), [
        "optneg",
        "macro",
        "connect",
        "helo",
        "macro",
        "mail",
        "rcpt",
        "data",
        "header",
        "eoh",
        "body",
        "macro",
        "eob",
        "quit",
      ]);
      assert.deepEqual(log[0], {
        type: "optneg",
        version: 6,
        actions: 0x1ff,
        protocol: OFFERED_PROTOCOL,
      });
      assert.deepEqual(log[1], {
        type: "macro",
        stage: "C",
        macros: { j: "mx.example.org" },
      });
      assert.deepEqual(log[2], { type: "connect", ...CLIENT });
      assert.deepEqual(log[5], {
        type: "mail",
        args: ["<a@example.org>", "BODY=8BITMIME"],
      });
      assert.deepEqual(log[8], {
        type: "header",
        name: "Subject",
        value: "hi",
      });
      assert.equal(
        td.decode((log[10] as { chunk: Uint8Array }).chunk),
        "Hello\r\n",
      );
      assert.deepEqual(log[11], {
        type: "macro",
        stage: "E",
        macros: { i: "Q1" },
      });
      assert.equal(m.negotiation?.version, 6);
    });
  });

  it("sends a stage's macros and its command in one write: the filter reads them together", async () => {
    await withFilter({}, {}, async (m, f) => {
      await m.connect(CLIENT, { j: "mx.example.org" });
      await m.helo("client.example");
      await message(m);
      await m.close();
      // Every stage awaits its reply, so each read holds one stage whole;
      // a macro packet written apart from its command would wait for the
      // peer's delayed ACK under Nagle's algorithm.
      assert.deepEqual(f.reads[0], [
        ["optneg"],
        ["macro", "connect"],
        ["helo"],
        ["macro", "mail"],
        ["rcpt"],
        ["data"],
        ["header"],
        ["eoh"],
        ["body"],
        ["macro", "eob"],
        ["quit"],
      ]);
    });
  });

  it("sends the stages a filter does not answer with the next one it answers, in one write", async () => {
    // rspamd's negotiation: no reply before end-of-message.
    const protocol = SMFIP.NR_CONN | SMFIP.NR_HELO | SMFIP.NR_MAIL |
      SMFIP.NR_RCPT | SMFIP.NR_DATA | SMFIP.NR_HDR | SMFIP.NR_EOH |
      SMFIP.NR_BODY;
    await withFilter({ protocol }, {}, async (m, f) => {
      const port = Number(/^inet:(\d+)@/.exec(f.address)![1]);
      const writes = await countWrites(port, async () => {
        await m.connect(CLIENT, { j: "mx.example.org" });
        await m.helo("client.example");
        assert.equal((await message(m)).body, "continue");
      });
      // The option negotiation, then everything up to end-of-message.
      assert.equal(writes, 2);
      assert.deepEqual(types(f.connections[0]), [
        "optneg",
        "macro",
        "connect",
        "helo",
        "macro",
        "mail",
        "rcpt",
        "data",
        "header",
        "eoh",
        "body",
        "macro",
        "eob",
      ]);
      // A large body is not held back whole: written once 64 KB wait.
      const log = f.connections[0];
      const before = log.length;
      await m.mail("<a@example.org>", []);
      await m.rcpt("<b@example.org>", []);
      await m.data();
      const chunk = new Uint8Array(40_000).fill(0x78);
      await m.body(chunk);
      await m.body(chunk);
      const arrived = async (n: number) => {
        for (let i = 0; i < 500 && log.length < n; i++) {
          await new Promise((r) => setTimeout(r, 10));
        }
      };
      await arrived(before + 5);
      assert.deepEqual(types(log.slice(before)), [
        "mail",
        "rcpt",
        "data",
        "body",
        "body",
      ]);
      // An abort is not held: the filter frees the message at once.
      await m.mail("<a@example.org>", []);
      await m.abort();
      await arrived(before + 7);
      assert.deepEqual(types(log.slice(before + 5)), ["mail", "abort"]);
      await m.close();
      assert.equal(log.at(-1)?.type, "quit");
    });
  });

  it("turns Nagle's algorithm off on a TCP filter connection", async () => {
    const calls: unknown[] = [];
    const original = net.Socket.prototype.setNoDelay;
    net.Socket.prototype.setNoDelay = function (
      this: net.Socket,
      ...args: Parameters<typeof original>
    ) {
      calls.push(args[0]);
      return original.apply(this, args);
    };
    try {
      await withFilter({}, {}, async (m) => {
        assert.equal((await m.connect(CLIENT)).action, "continue");
      });
    } finally {
      net.Socket.prototype.setNoDelay = original;
    }
    assert.deepEqual(calls, [true]);
  });

  it("sends no stage the filter skips and waits for no reply it said it will not send", async () => {
    const protocol = SMFIP.NOHELO | SMFIP.NOHDRS | SMFIP.NR_CONN |
      SMFIP.NR_MAIL | SMFIP.NR_RCPT | SMFIP.NR_DATA | SMFIP.NR_EOH |
      SMFIP.NR_BODY;
    // A short command timeout: waiting for a reply that never comes would
    // turn into the tempfail policy.
    await withFilter(
      { protocol },
      { timeouts: { command: 2000 } },
      async (m, f) => {
        assert.equal((await m.connect(CLIENT)).action, "continue");
        assert.equal((await m.helo("client.example")).action, "continue");
        const r = await message(m);
        assert.deepEqual(r, {
          mail: "continue",
          rcpt: ["continue"],
          data: "continue",
          header: "continue",
          eoh: "continue",
          body: "continue",
          eom: { verdict: { action: "continue" }, modifications: [] },
        });
        assert.deepEqual(types(f.connections[0]), [
          "optneg",
          "connect",
          "macro",
          "mail",
          "rcpt",
          "data",
          "eoh",
          "body",
          "macro",
          "eob",
        ]);
        assert.equal(m.failure, undefined);
      },
    );
  });

  it("a reply code or reject at RCPT rejects that recipient only", async () => {
    const handler = (c: MilterCommand): FakeAction =>
      c.type === "rcpt" && c.args[0] === "<bad@example.org>"
        ? [encodeStrings("y", ["550 5.1.1 No such user here"])]
        : c.type === "rcpt" && c.args[0] === "<worse@example.org>"
        ? [encodePacket("r")]
        : undefined;
    await withFilter({ handler }, {}, async (m, f) => {
      await m.connect(CLIENT);
      await m.mail("<a@example.org>", []);
      assert.deepEqual(await m.rcpt("<bad@example.org>", []), {
        action: "reject",
        code: 550,
        enhancedCode: "5.1.1",
        text: "No such user here",
      });
      assert.deepEqual(await m.rcpt("<worse@example.org>", []), {
        action: "reject",
        code: 550,
        enhancedCode: "5.7.1",
        text: "Command rejected",
      });
      assert.deepEqual(await m.rcpt("<b@example.org>", []), {
        action: "continue",
      });
      assert.equal(
        f.connections[0].filter((c) => c.type === "rcpt").length,
        3,
      );
    });
  });

  it("a multi-line reply code keeps every line and its own codes", async () => {
    const handler = (c: MilterCommand): FakeAction =>
      c.type === "mail"
        ? [encodeStrings("y", ["452-4.3.1 line one\r\n452 4.3.1 line two"])]
        : undefined;
    await withFilter({ handler }, {}, async (m) => {
      await m.connect(CLIENT);
      assert.deepEqual(await m.mail("<a@example.org>", []), {
        action: "tempfail",
        code: 452,
        enhancedCode: "4.3.1",
        text: "line one\nline two",
      });
    });
  });

  it("tempfail, discard and accept hold for the rest of the message; the next message is sent again", async () => {
    let n = 0;
    const handler = (c: MilterCommand): FakeAction => {
      if (c.type === "mail") n++;
      if (n === 1 && c.type === "data") return [encodePacket("t")];
      if (n === 2 && c.type === "eoh") return [encodePacket("d")];
      if (n === 3 && c.type === "rcpt") return [encodePacket("a")];
      return undefined;
    };
    await withFilter({ handler }, {}, async (m, f) => {
      await m.connect(CLIENT);
      // A verdict holds for the rest of its message, end-of-message
      // included, and nothing more of that message goes to the filter.
      const first = await message(m);
      assert.equal(first.data, "tempfail");
      assert.equal(first.header, "tempfail");
      assert.equal(first.body, "tempfail");
      assert.equal(
        (first.eom as { verdict: MilterVerdict }).verdict.action,
        "tempfail",
      );
      await m.abort();
      const second = await message(m);
      assert.equal(second.eoh, "discard");
      assert.deepEqual(second.eom, {
        verdict: { action: "discard" },
        modifications: [],
      });
      await m.abort();
      const third = await message(m);
      assert.deepEqual(third.rcpt, ["accept"]);
      assert.equal(third.data, "accept");
      assert.deepEqual(third.eom, {
        verdict: { action: "accept" },
        modifications: [],
      });
      const fourth = await message(m);
      assert.deepEqual(fourth.eom, {
        verdict: { action: "continue" },
        modifications: [],
      });
      const log = types(f.connections[0]);
      // One connection for all four; after the verdicts nothing more of
      // that message went to the filter.
      assert.equal(f.connections.length, 1);
      assert.deepEqual(log.slice(log.indexOf("connect") + 1), [
        "macro",
        "mail",
        "rcpt",
        "data",
        "abort",
        "macro",
        "mail",
        "rcpt",
        "data",
        "header",
        "eoh",
        "abort",
        "macro",
        "mail",
        "rcpt",
        "macro",
        "mail",
        "rcpt",
        "data",
        "header",
        "eoh",
        "body",
        "macro",
        "eob",
      ]);
    });
  });

  it("a reject at connect holds for the whole session", async () => {
    const handler = (c: MilterCommand): FakeAction =>
      c.type === "connect"
        ? [encodeStrings("y", ["554 5.7.1 Not from you"])]
        : undefined;
    await withFilter({ handler }, {}, async (m, f) => {
      const rejected = {
        action: "reject",
        code: 554,
        enhancedCode: "5.7.1",
        text: "Not from you",
      };
      assert.deepEqual(await m.connect(CLIENT), rejected);
      assert.deepEqual(await m.helo("client.example"), rejected);
      assert.deepEqual(await m.mail("<a@example.org>", []), rejected);
      assert.deepEqual((await m.endOfMessage()).verdict, rejected);
      assert.deepEqual(types(f.connections[0]), ["optneg", "connect"]);
    });
  });

  it("collects every modification action in order at end-of-message", async () => {
    const idx = (i: number, ...s: string[]) =>
      new Uint8Array([
        ...be32(i),
        ...te.encode(s.map((x) => x + "\0").join("")),
      ]);
    const mods = [
      encodeStrings("h", ["X-Spam", "No"]),
      encodePacket("i", idx(0, "DKIM-Signature", "v=1;\n\tb=abc")),
      encodePacket("m", idx(1, "Subject", "[ok] hi")),
      encodePacket("m", idx(1, "X-Old", "")),
      encodeStrings("+", ["<c@example.org>"]),
      encodeStrings("2", ["<d@example.org>", "NOTIFY=NEVER"]),
      encodeStrings("-", ["<b@example.org>"]),
      encodeStrings("e", ["<bounce@example.org>", "SIZE=10"]),
      encodePacket("b", te.encode("new ")),
      encodePacket("b", te.encode("body\r\n")),
      encodeStrings("q", ["held for review"]),
      encodePacket("p"),
      encodePacket("a"),
    ];
    const handler = (c: MilterCommand): FakeAction =>
      c.type === "eob" ? mods : undefined;
    await withFilter({ handler }, {}, async (m) => {
      await m.connect(CLIENT);
      const r = await message(m);
      const eom = r.eom as {
        verdict: MilterVerdict;
        modifications: { type: string; chunk?: Uint8Array }[];
      };
      assert.deepEqual(eom.verdict, {
        action: "quarantine",
        reason: "held for review",
      });
      assert.deepEqual(
        eom.modifications.map((x) =>
          x.chunk ? { ...x, chunk: td.decode(x.chunk) } : x
        ),
        [
          { type: "add-header", name: "X-Spam", value: "No" },
          {
            type: "insert-header",
            index: 0,
            name: "DKIM-Signature",
            value: "v=1;\n\tb=abc",
          },
          {
            type: "change-header",
            index: 1,
            name: "Subject",
            value: "[ok] hi",
          },
          { type: "delete-header", index: 1, name: "X-Old" },
          { type: "add-recipient", recipient: "<c@example.org>" },
          {
            type: "add-recipient",
            recipient: "<d@example.org>",
            params: "NOTIFY=NEVER",
          },
          { type: "delete-recipient", recipient: "<b@example.org>" },
          {
            type: "change-sender",
            sender: "<bounce@example.org>",
            params: "SIZE=10",
          },
          { type: "replace-body", chunk: "new " },
          { type: "replace-body", chunk: "body\r\n" },
          { type: "quarantine", reason: "held for review" },
        ],
      );
      const headers = applyHeaderModifications(
        te.encode("Subject: hi\r\nX-Old: 1\r\n"),
        eom.modifications.filter((x) => x.type.endsWith("-header")) as never,
      );
      assert.equal(
        td.decode(headers),
        "DKIM-Signature: v=1;\r\n\tb=abc\r\nSubject: [ok] hi\r\nX-Spam: No\r\n",
      );
    });
  });

  it("drops the modifications of a message the filter rejects at end-of-message", async () => {
    const handler = (c: MilterCommand): FakeAction =>
      c.type === "eob"
        ? [
          encodeStrings("h", ["X-A", "1"]),
          encodeStrings("y", ["554 5.7.1 Spam"]),
        ]
        : undefined;
    await withFilter({ handler }, {}, async (m) => {
      await m.connect(CLIENT);
      assert.deepEqual((await message(m)).eom, {
        verdict: {
          action: "reject",
          code: 554,
          enhancedCode: "5.7.1",
          text: "Spam",
        },
        modifications: [],
      });
    });
  });

  it("sends a large body in chunks of at most 65,535 bytes and stops after skip", async () => {
    const big = new Uint8Array(150000).fill(0x61);
    await withFilter({}, {}, async (m, f) => {
      await m.connect(CLIENT);
      await m.mail("<a@example.org>", []);
      assert.equal((await m.body(big)).action, "continue");
      const sizes = f.connections[0].filter((c) => c.type === "body").map((
        c,
      ) => (c as { chunk: Uint8Array }).chunk.length);
      assert.deepEqual(sizes, [65535, 65535, 18930]);
    });
    const handler = (c: MilterCommand): FakeAction =>
      c.type === "body" ? [encodePacket("s")] : undefined;
    await withFilter(
      { handler, protocol: SMFIP.SKIP },
      {},
      async (m, f) => {
        await m.connect(CLIENT);
        await m.mail("<a@example.org>", []);
        assert.equal((await m.body(big)).action, "continue");
        assert.equal((await m.body(big)).action, "continue");
        assert.equal((await m.endOfMessage()).verdict.action, "continue");
        assert.deepEqual(
          types(f.connections[0]).filter((t) => t === "body" || t === "eob"),
          ["body", "eob"],
        );
      },
    );
  });

  it("talks to a filter on a Unix socket", async () => {
    const dir = mkdtempSync(join(tmpdir(), "smtpd-milter-"));
    try {
      await withFilter({ path: join(dir, "f.sock") }, {}, async (m, f) => {
        assert.equal((await m.connect(CLIENT)).action, "continue");
        assert.equal((await m.helo("client.example")).action, "continue");
        assert.deepEqual(types(f.connections[0]), [
          "optneg",
          "connect",
          "helo",
        ]);
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("milter client error paths", () => {
  const garbage = te.encode("220 mail.example ESMTP\r\n");
  const cases: {
    name: string;
    fake: Parameters<typeof startFakeMilter>[0];
    options?: Partial<MilterOptions>;
    failure: RegExp;
  }[] = [
    {
      name: "garbage instead of option negotiation",
      fake: { optneg: [garbage] },
      failure: /Cannot parse packet: length \d+ exceeds/,
    },
    {
      name: "an unknown response code",
      fake: {
        handler: (c) => c.type === "mail" ? [encodePacket("Z")] : undefined,
      },
      failure: /unknown code 0x5a/,
    },
    {
      name: "a reply code that is not 4xx or 5xx",
      fake: {
        handler: (c) =>
          c.type === "rcpt" ? [encodeStrings("y", ["250 ok"])] : undefined,
      },
      failure: /"250 ok" is not a 4xx or 5xx reply/,
    },
    {
      name: "a modification before end-of-message",
      fake: {
        handler: (c) =>
          c.type === "helo" ? [encodeStrings("h", ["X", "y"])] : undefined,
      },
      failure: /at helo: unexpected add-header/,
    },
    {
      name: "a modification the filter did not negotiate",
      fake: {
        actions: SMFIF.ADDHDRS,
        handler: (c) =>
          c.type === "eob"
            ? [encodeStrings("e", ["<x@example.org>"]), encodePacket("a")]
            : undefined,
      },
      failure: /change-sender: not negotiated/,
    },
    {
      name: "modifications beyond maxModificationBytes",
      fake: {
        handler: (c) =>
          c.type === "eob"
            ? [
              encodePacket("b", new Uint8Array(40000)),
              encodePacket("b", new Uint8Array(40000)),
              encodePacket("a"),
            ]
            : undefined,
      },
      options: { maxModificationBytes: 70000 },
      failure: /modifications: more than 70000 bytes/,
    },
    {
      name: "protocol steps that were not offered",
      fake: { protocol: SMFIP.RCPT_REJ },
      failure: /includes steps not offered/,
    },
    {
      name: "a connection closed mid-stage",
      fake: { handler: (c) => (c.type === "rcpt" ? "close" : undefined) },
      failure: /the filter closed the connection|ECONNRESET|reset/i,
    },
    {
      name: "a filter silent at a stage",
      fake: { handler: (c) => (c.type === "data" ? "silent" : undefined) },
      options: { timeouts: { command: 300 } },
      failure: /no reply within 300 ms/,
    },
    {
      name: "a filter silent at end-of-message",
      fake: { handler: (c) => (c.type === "eob" ? "silent" : undefined) },
      options: { timeouts: { endOfMessage: 300 } },
      failure: /no reply within 300 ms/,
    },
  ];

  for (const c of cases) {
    it(`${c.name} gives 451 4.7.1 by default, and so does every later stage`, async () => {
      await withFilter(c.fake, c.options ?? {}, async (m) => {
        const seen: unknown[] = [
          await m.connect(CLIENT),
          await m.helo("client.example"),
        ];
        const r = await message(m);
        const eom = r.eom as { verdict: MilterVerdict; modifications: [] };
        assert.deepEqual(eom.modifications, []);
        seen.push(eom.verdict);
        const failed = seen.find((v) =>
          (v as MilterVerdict).action !== "continue"
        ) ??
          eom.verdict;
        assert.match(m.failure ?? "", c.failure);
        const { failure, ...reply } = failed as { failure: string };
        assert.equal(failure, m.failure);
        assert.deepEqual(reply, TEMPFAIL);
        // Once failed, the client answers by its policy without the filter.
        assert.deepEqual(
          { ...(await m.helo("again")), failure: undefined },
          { ...TEMPFAIL, failure: undefined },
        );
        assert.equal((await m.endOfMessage()).verdict.action, "tempfail");
      });
    });
  }

  it("a filter that is down gives the policy: tempfail, accept or reject", async () => {
    const f = await startFakeMilter();
    await f.close();
    const down = new MilterClient({ address: f.address });
    const v = await down.connect(CLIENT);
    assert.equal(v.action, "tempfail");
    assert.match(down.failure ?? "", /Cannot talk to milter: .*ECONNREFUSED/);
    await down.close();

    const accept = new MilterClient({ address: f.address, onError: "accept" });
    assert.deepEqual(await accept.connect(CLIENT), { action: "accept" });
    assert.deepEqual(await accept.mail("<a@example.org>", []), {
      action: "accept",
    });
    assert.deepEqual(await accept.endOfMessage(), {
      verdict: { action: "accept" },
      modifications: [],
    });
    await accept.close();

    const reject = new MilterClient({ address: f.address, onError: "reject" });
    const r = await reject.connect(CLIENT);
    assert.equal(r.action, "reject");
    assert.deepEqual(
      { ...r, failure: undefined },
      {
        action: "reject",
        code: 550,
        enhancedCode: "5.7.1",
        text: "Command rejected",
        failure: undefined,
      },
    );
    await reject.close();
  });

  it("a filter that fails mid-session under policy accept is left out of the rest", async () => {
    const fake = {
      handler: (c: MilterCommand): FakeAction =>
        c.type === "eoh" ? "close" : undefined,
    };
    await withFilter(fake, { onError: "accept" }, async (m, f) => {
      await m.connect(CLIENT);
      const r = await message(m);
      assert.equal(r.header, "continue");
      assert.equal(r.eoh, "accept");
      assert.deepEqual(r.eom, {
        verdict: { action: "accept" },
        modifications: [],
      });
      assert.equal(f.connections.length, 1);
      assert.equal(f.connections[0].at(-1)?.type, "eoh");
    });
  });
});
