// LMTP (RFC 2033) through the driver, and Unix domain socket listeners, on
// whichever runtime runs this file: per-recipient decisions
// (message.rejectRecipient) over a raw client, Python's smtplib.LMTP on TCP
// and on a Unix socket, swaks --protocol LMTP, and the socket file's life
// (stale file replaced, live server or non-socket refused, removed on close).
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { execFile, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as tls from "node:tls";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  type LoopMessage,
  type Message,
  serve,
  type ServeOptions,
  type Server,
  type Session,
  SmtpError,
} from "../mod.ts";
import { type Client, connect, withServerUsing } from "./helpers/client.ts";
import { TLS } from "./helpers/tls.ts";

const here = dirname(fileURLToPath(import.meta.url));
const FULL = new SmtpError(452, "4.2.2", "Mailbox full");
const NO_USER = new SmtpError(550, "5.1.1", "No such user");

let dir = "";
let counter = 0;
before(() => {
  dir = fs.mkdtempSync(join(tmpdir(), "smtpd-lmtp-"));
});
after(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});
/** A fresh socket path (not created). */
const sockPath = () => join(dir, `s${++counter}.sock`);

function withServer(
  options: ServeOptions,
  fn: (server: Server, open: () => Promise<Client>) => Promise<void>,
): Promise<void> {
  return withServerUsing(
    { lmtp: true, ...options },
    (port) => connect(port),
    fn,
  );
}

/** Runs a program; resolves with its output, rejects (with stderr) on failure. */
function run(file: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      { timeout: 60000, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error) {
          reject(new Error(`${file} failed: ${error.message}\n${stderr}`));
        } else resolve(String(stdout));
      },
    );
  });
}

/** Connects, reads the greeting, sends LHLO, MAIL and the RCPTs. */
async function transaction(
  open: () => Promise<Client>,
  rcpts: string[],
): Promise<{ c: Client; rcpt: string[] }> {
  const c = await open();
  assert.match(await c.reply(), /^220 mx\.test LMTP smtpd\r\n$/);
  await c.send("LHLO client.test\r\n");
  assert.match(await c.reply(), /^250-mx\.test greets client\.test/);
  await c.send(
    "MAIL FROM:<a@example.org>\r\n" +
      rcpts.map((r) => `RCPT TO:<${r}>\r\n`).join(""),
  );
  assert.match(await c.reply(), /^250 /);
  return { c, rcpt: await c.replies(rcpts.length) };
}

const firstLine = (r: string) => r.split("\r\n")[0];

describe("LMTP: per-recipient replies through the driver", () => {
  it("rejectRecipient refuses one recipient; the others are accepted, in RCPT order", async () => {
    let session: Session | null = null;
    await withServer({
      onRcptTo(address) {
        if (address.startsWith("no@")) throw NO_USER;
      },
      async onMessage(m) {
        session = m.session;
        await m.bytes();
        m.rejectRecipient("FULL@Example.org", FULL); // case does not matter
      },
    }, async (_server, open) => {
      const { c, rcpt } = await transaction(open, [
        "x@example.org",
        "no@example.org",
        "full@example.org",
        "z@example.org",
      ]);
      assert.deepEqual(rcpt.map((r) => r.slice(0, 9)), [
        "250 2.1.5",
        "550 5.1.1",
        "250 2.1.5",
        "250 2.1.5",
      ]);
      await c.send("DATA\r\n");
      assert.match(await c.reply(), /^354 /);
      await c.send("Subject: x\r\n\r\nhi\r\n.\r\n");
      const r = (await c.replies(3)).map(firstLine);
      assert.match(r[0], /^250 2\.0\.0 OK \S+ <x@example\.org>$/);
      assert.equal(r[1], "452 4.2.2 Mailbox full");
      assert.match(r[2], /^250 2\.0\.0 OK \S+ <z@example\.org>$/);
      // Nothing more: the recipient refused at RCPT got no reply.
      await c.send("NOOP\r\n");
      assert.match(await c.reply(), /^250 /);
      assert.equal(c.pending(), "");
    });
    assert.equal(session!.esmtp, true, "LHLO counts as ESMTP");
    assert.equal(session!.lmtp, true);
    assert.equal(session!.messages, 1);
  });

  it("rejectRecipient takes an index, and works after BDAT ... LAST", async () => {
    const seen: [string, string][] = [];
    await withServer({
      onMessage(m) {
        seen.push([m.command, m.bodyType]);
        m.rejectRecipient(0, FULL);
      },
    }, async (_server, open) => {
      const { c } = await transaction(open, ["a@example.org", "b@example.org"]);
      await c.send("BDAT 3\r\nabcBDAT 2 LAST\r\nde");
      const r = (await c.replies(3)).map(firstLine);
      assert.match(r[0], /^250 2\.0\.0 3 octets received/);
      assert.equal(r[1], "452 4.2.2 Mailbox full");
      assert.match(r[2], /^250 2\.0\.0 OK \S+ <b@example\.org>$/);
    });
    assert.deepEqual(seen, [["BDAT", "7BIT"]]);
  });

  it("a thrown error answers every recipient with it, whatever was refused", async () => {
    await withServer({
      onMessage(m) {
        m.rejectRecipient(0, FULL);
        throw new SmtpError(554, "5.6.0", "Bad content");
      },
    }, async (_server, open) => {
      const { c } = await transaction(open, ["a@example.org", "b@example.org"]);
      await c.send("DATA\r\nx\r\n.\r\n");
      const r = (await c.replies(3)).map(firstLine);
      assert.deepEqual(r.slice(1), [
        "554 5.6.0 Bad content",
        "554 5.6.0 Bad content",
      ]);
    });
  });

  it("every recipient refused one by one: nothing is counted as delivered", async () => {
    let session: Session | null = null;
    await withServer({
      onMessage(m) {
        session = m.session;
        m.rejectRecipient(0, FULL);
        m.rejectRecipient(1, NO_USER);
      },
    }, async (_server, open) => {
      const { c } = await transaction(open, ["a@example.org", "b@example.org"]);
      await c.send("DATA\r\nx\r\n.\r\n");
      const r = (await c.replies(3)).map(firstLine);
      assert.deepEqual(r.slice(1), [
        "452 4.2.2 Mailbox full",
        "550 5.1.1 No such user",
      ]);
    });
    assert.equal(session!.messages, 0);
  });

  it("rejectRecipient refuses what is not a recipient, and calls after the reply", async () => {
    const errors: unknown[] = [];
    let kept: Message | null = null;
    await withServer({
      onMessage(m) {
        kept = m;
        for (
          const [r, e] of [
            ["nobody@example.org", FULL],
            [2, FULL],
            [-1, FULL],
            [0.5, FULL],
            ["a@example.org", { code: 452 }],
          ] as const
        ) {
          try {
            m.rejectRecipient(r, e as SmtpError);
          } catch (error) {
            errors.push(error);
          }
        }
      },
    }, async (_server, open) => {
      const { c } = await transaction(open, ["a@example.org", "b@example.org"]);
      await c.send("DATA\r\nx\r\n.\r\n");
      const r = (await c.replies(3)).map(firstLine);
      assert.match(r[1], /^250 /);
      assert.match(r[2], /^250 /);
    });
    assert.equal(errors.length, 5);
    for (const e of errors) assert.ok(e instanceof TypeError, String(e));
    assert.match(
      String(errors[0]),
      /Cannot reject recipient: "nobody@example\.org" is not a recipient/,
    );
    assert.throws(
      () => kept!.rejectRecipient(0, FULL),
      /already been answered/,
    );
  });

  it("the for await loop refuses one recipient with rejectRecipient", async () => {
    await withServer({}, async (server, open) => {
      const loop = (async () => {
        for await (const m of server as AsyncIterable<LoopMessage>) {
          assert.equal(await m.text(), "x\r\n");
          m.rejectRecipient("b@example.org", FULL);
        }
      })();
      const { c } = await transaction(open, ["a@example.org", "b@example.org"]);
      await c.send("DATA\r\nx\r\n.\r\n");
      const r = (await c.replies(3)).map(firstLine);
      assert.match(r[1], /^250 2\.0\.0 OK /);
      assert.equal(r[2], "452 4.2.2 Mailbox full");
      await c.close();
      await server.close();
      await loop;
    });
  });

  it("rejectRecipient throws a TypeError in SMTP mode, and the message is accepted", async () => {
    let error: unknown = null;
    await withServerUsing(
      {
        onMessage(m) {
          assert.equal(m.to.length, 1);
          try {
            m.rejectRecipient(0, FULL);
          } catch (e) {
            error = e;
          }
        },
      },
      (port) => connect(port),
      async (_server, open) => {
        const c = await open();
        await c.reply();
        await c.send(
          "EHLO client.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n",
        );
        await c.replies(4);
        await c.send("x\r\n.\r\n");
        assert.match(await c.reply(), /^250 2\.0\.0 OK /);
      },
    );
    assert.ok(error instanceof TypeError);
    assert.match(String(error), /not an LMTP server/);
  });
});

/** What lmtp_send.py prints. */
interface LmtpResult {
  lhlo: number;
  chunking: boolean;
  messages: {
    rcpt: Record<string, [number, string]>;
    data: Record<string, [number, string]>;
    after?: [number, string];
  }[];
}

describe("LMTP: Python's smtplib.LMTP", () => {
  const options = (got: string[]): ServeOptions => ({
    onRcptTo(address) {
      if (address.startsWith("no@")) throw NO_USER;
    },
    async onMessage(m) {
      got.push(Buffer.from(await m.bytes()).toString("latin1"));
      if (m.to.includes("full@example.org")) {
        m.rejectRecipient("full@example.org", FULL);
      }
    },
  });
  const MESSAGES = [{
    from: "py@example.org",
    to: ["x@example.org", "no@example.org", "full@example.org"],
    data: "Subject: lmtp\r\n\r\n.leading dot\r\ncaf\xe9\r\n",
  }, {
    from: "py@example.org",
    to: ["no@example.org"],
    data: "Subject: nobody\r\n\r\nx\r\n",
  }, {
    // Pipelined with BDAT LAST: no recipient accepted, so no reply for it.
    from: "py@example.org",
    to: ["no@example.org", "no@example.net"],
    data: "Subject: nobody, pipelined\r\n\r\nx\r\n",
    pipelined: true,
  }, {
    from: "py@example.org",
    to: ["no@example.org", "y@example.org"],
    data: "Subject: pipelined\r\n\r\ny\r\n",
    pipelined: true,
  }];

  function check(out: string, got: string[]): void {
    const r = JSON.parse(out) as LmtpResult;
    assert.equal(r.lhlo, 250);
    assert.equal(r.chunking, true);
    assert.deepEqual(r.messages[0].rcpt, {
      "x@example.org": [250, "2.1.5 Recipient OK"],
      "no@example.org": [550, "5.1.1 No such user"],
      "full@example.org": [250, "2.1.5 Recipient OK"],
    });
    // One status per accepted recipient, none for the refused one.
    const data = r.messages[0].data;
    assert.deepEqual(Object.keys(data), ["x@example.org", "full@example.org"]);
    assert.equal(data["x@example.org"][0], 250);
    assert.match(data["x@example.org"][1], /^2\.0\.0 OK \S+ <x@example\.org>$/);
    assert.deepEqual(data["full@example.org"], [452, "4.2.2 Mailbox full"]);
    // No recipient accepted: no body sent, nothing delivered.
    assert.deepEqual(r.messages[1].data, {});
    // Pipelined BDAT LAST: one reply per accepted recipient (none for the
    // first), and nothing left over before the NOOP's reply.
    assert.deepEqual(r.messages[2].data, {});
    assert.deepEqual(r.messages[2].after, [250, "2.0.0 OK"]);
    assert.deepEqual(Object.keys(r.messages[3].data), ["y@example.org"]);
    assert.equal(r.messages[3].data["y@example.org"][0], 250);
    assert.deepEqual(r.messages[3].after, [250, "2.0.0 OK"]);
    assert.deepEqual(got, [MESSAGES[0].data, MESSAGES[3].data]);
  }

  it("over TCP: one status per recipient", async () => {
    const got: string[] = [];
    await withServer(options(got), async (server) => {
      const out = await run("python3", [
        join(here, "fixtures", "lmtp_send.py"),
        "127.0.0.1",
        String(server.addr.port),
        JSON.stringify(MESSAGES),
      ]);
      check(out, got);
    });
  });

  it("over a Unix socket: one status per recipient", async () => {
    const got: string[] = [];
    const path = sockPath();
    const server = await serve({ lmtp: true, path, ...options(got) });
    try {
      const out = await run("python3", [
        join(here, "fixtures", "lmtp_send.py"),
        path,
        "0",
        JSON.stringify(MESSAGES),
      ]);
      check(out, got);
    } finally {
      await server.close();
    }
  });
});

describe("LMTP: swaks --protocol LMTP", () => {
  it("delivers to two recipients and reads a reply for each", async () => {
    const got: { to: readonly string[]; body: string }[] = [];
    await withServer({
      async onMessage(m) {
        got.push({ to: m.to, body: await m.text() });
        m.rejectRecipient(1, FULL);
      },
    }, async (server) => {
      let out = "";
      try {
        out = await run("swaks", [
          "--server",
          "127.0.0.1",
          "--port",
          String(server.addr.port),
          "--protocol",
          "LMTP",
          "--helo",
          "swaks.test",
          "--from",
          "s@example.org",
          "--to",
          "a@example.org,b@example.org",
          "--body",
          "hello over LMTP",
          "--header",
          "Subject: swaks",
        ]);
      } catch (error) {
        // swaks exits non-zero when a recipient is refused after the body.
        out = String(error);
      }
      assert.match(out, /-> LHLO swaks\.test/);
      assert.match(out, /<- {2}250 2\.0\.0 OK \S+ <a@example\.org>/);
      assert.match(out, /<\*\* 452 4\.2\.2 Mailbox full/);
      assert.equal(got.length, 1);
      assert.deepEqual(got[0].to, ["a@example.org", "b@example.org"]);
      assert.match(got[0].body, /Subject: swaks\r\n[\s\S]*hello over LMTP\r\n/);
    });
  });
});

/** Connects to a Unix socket, sends `input`, and resolves with all it got until the server closes. */
function talkUnix(path: string, input: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ path });
    let out = "";
    s.setEncoding("latin1");
    s.on("data", (d: string) => {
      out += d;
    });
    s.on("error", reject);
    s.on("close", () => resolve(out));
    s.write(input);
  });
}

describe("Unix domain socket listener", () => {
  it("listens on the path, shows 'unix' as the addresses, and removes the file on close", async () => {
    const path = sockPath();
    const sessions: Session[] = [];
    const server = await serve({
      path,
      serverName: "mx.test",
      onConnect(s) {
        sessions.push(s);
      },
    });
    try {
      assert.deepEqual(server.addr, { hostname: "unix", port: 0, path });
      assert.ok(fs.lstatSync(path).isSocket());
      const out = await talkUnix(path, "EHLO c.test\r\nQUIT\r\n");
      assert.match(
        out,
        /^220 mx\.test ESMTP smtpd\r\n250-mx\.test greets c\.test/,
      );
      assert.match(out, /221 2\.0\.0 /);
      assert.equal(sessions.length, 1);
      assert.equal(sessions[0].remoteAddress, "unix");
      assert.equal(sessions[0].remotePort, 0);
      assert.equal(sessions[0].localAddress, "unix");
      assert.equal(sessions[0].localPort, 0);
    } finally {
      await server.close();
    }
    assert.equal(fs.existsSync(path), false, "the socket file is still there");
  });

  it("STARTTLS works on a Unix socket (the node:tls listener)", async () => {
    const path = sockPath();
    const sessions: Session[] = [];
    const server = await serve({
      path,
      lmtp: true,
      tls: TLS,
      serverName: "mx.test",
      onHelo(_name, s) {
        sessions.push(s);
      },
    });
    const plain = net.connect({ path });
    try {
      let buf = "";
      const waitFor = (re: RegExp) =>
        new Promise<void>((resolve, reject) => {
          const check = () => {
            if (re.test(buf)) {
              plain.off("data", onData);
              resolve();
            }
          };
          const onData = (d: Buffer) => {
            buf += d.toString("latin1");
            check();
          };
          plain.on("data", onData);
          plain.once("error", reject);
          check();
        });
      await waitFor(/^220 /);
      plain.write("LHLO c.test\r\n");
      await waitFor(/250 HELP\r\n/);
      assert.match(buf, /250-STARTTLS\r\n/);
      buf = "";
      plain.write("STARTTLS\r\n");
      await waitFor(/^220 /);
      const secure = tls.connect({ socket: plain, rejectUnauthorized: false });
      await new Promise<void>((r, j) => {
        secure.once("secureConnect", r);
        secure.once("error", j);
      });
      const answer = new Promise<string>((resolve) => {
        let out = "";
        secure.setEncoding("latin1");
        secure.on("data", (d: string) => {
          out += d;
          if (/\r\n221 /.test(out)) resolve(out);
        });
      });
      secure.write("LHLO c.test\r\nQUIT\r\n");
      assert.match(await answer, /^250-mx\.test greets c\.test[\s\S]*221 /);
      secure.destroy();
      assert.equal(sessions.at(-1)!.secure, true);
      assert.equal(sessions.at(-1)!.remoteAddress, "unix");
    } finally {
      plain.destroy();
      await server.close();
    }
    assert.equal(fs.existsSync(path), false);
  });

  it("maxConnectionsPerIp does not limit a Unix socket's clients", async () => {
    const path = sockPath();
    const server = await serve({ path, maxConnectionsPerIp: 1 });
    const socks: net.Socket[] = [];
    try {
      const greetings = await Promise.all(
        [0, 1, 2].map(() =>
          new Promise<string>((resolve, reject) => {
            const s = net.connect({ path });
            socks.push(s);
            s.setEncoding("latin1");
            s.once("data", (d: string) => resolve(d));
            s.on("error", reject);
          })
        ),
      );
      for (const g of greetings) assert.match(g, /^220 /);
    } finally {
      for (const s of socks) s.destroy();
      await server.close();
    }
  });

  it("replaces a stale socket file that nothing answers on", async () => {
    const path = sockPath();
    // A socket file left behind: bound, never listened on, process gone.
    await run("python3", [
      "-c",
      "import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])",
      path,
    ]);
    assert.ok(fs.lstatSync(path).isSocket());
    const server = await serve({ path, lmtp: true });
    try {
      const out = await talkUnix(path, "LHLO c.test\r\nQUIT\r\n");
      assert.match(out, /^220 \S+ LMTP smtpd\r\n250-/);
    } finally {
      await server.close();
    }
    assert.equal(fs.existsSync(path), false);
  });

  it("refuses a path that exists and is not a socket, and leaves it alone", async () => {
    const path = sockPath();
    fs.writeFileSync(path, "precious");
    await assert.rejects(
      serve({ path }),
      (e: Error) =>
        /^Cannot listen on .*: the path exists and is not a socket$/.test(
          e.message,
        ),
    );
    assert.equal(fs.readFileSync(path, "utf8"), "precious");
  });

  for (const mode of ["full", "idle"] as const) {
    it(`refuses the socket of a server that never accepts (backlog ${mode}), and leaves it alone`, async () => {
      const path = sockPath();
      const holder = spawn("python3", [
        join(here, "fixtures", "unix_backlog.py"),
        path,
        mode,
      ], { stdio: ["pipe", "pipe", "inherit"] });
      try {
        await new Promise<void>((resolve, reject) => {
          holder.once("error", reject);
          holder.once("exit", (code) => reject(new Error(`exited ${code}`)));
          holder.stdout!.once("data", () => resolve());
        });
        const before = fs.lstatSync(path).ino;
        await assert.rejects(
          serve({ path }),
          (e: Error) =>
            /^Cannot listen on .*: (a server is listening on it|cannot tell whether a server uses it)/
              .test(e.message),
        );
        assert.equal(fs.lstatSync(path).ino, before);
      } finally {
        holder.stdin!.end();
        await new Promise((resolve) => holder.once("close", resolve));
        fs.rmSync(path, { force: true });
      }
    });
  }

  it("refuses a path a live server answers on, which keeps working", async () => {
    const path = sockPath();
    const first = await serve({ path });
    try {
      await assert.rejects(
        serve({ path }),
        (e: Error) =>
          /^Cannot listen on .*: a server is listening on it$/.test(e.message),
      );
      const out = await talkUnix(path, "QUIT\r\n");
      assert.match(out, /^220 .*\r\n221 /);
    } finally {
      await first.close();
    }
    assert.equal(fs.existsSync(path), false);
  });

  it("path is checked: not with hostname or port, not empty, a string", async () => {
    await assert.rejects(
      serve({ path: sockPath(), port: 0 }),
      /^TypeError: Cannot use option path: port is given too/,
    );
    await assert.rejects(
      serve({ path: sockPath(), hostname: "127.0.0.1" }),
      /^TypeError: Cannot use option path: hostname is given too/,
    );
    await assert.rejects(
      serve({ path: "" }),
      /^TypeError: Cannot use option path: value is not a file path/,
    );
    await assert.rejects(
      serve({ path: 42 as unknown as string }),
      /^TypeError: Cannot use option path: value is not a string/,
    );
  });
});
