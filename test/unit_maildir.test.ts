// Maildir delivery (src/maildir.ts), in process: real files in a temporary
// directory, and wrapped file systems that fail on cue (full disk, I/O
// errors) or record the order of the calls.
import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { after, before, describe, it } from "node:test";
import { serve, SmtpError } from "../mod.ts";
import {
  type DeliverableMessage,
  Maildir,
  type MaildirFile,
  type MaildirFs,
  maildirName,
  receivedProtocol,
  rfc5322Date,
  traceHeaders,
} from "../src/maildir.ts";
import { IncomingMessage } from "../src/message.ts";
import type { Session } from "../src/session.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

let root = "";
let counter = 0;
before(async () => {
  root = await fs.mkdtemp(`${tmpdir()}/smtpd-maildir-test-`);
});
after(async () => {
  await fs.chmod(root, 0o700).catch(() => {});
  await fs.rm(root, { recursive: true, force: true });
});

/** A fresh directory path (not created) for one test. */
function dirPath(): string {
  return `${root}/md${++counter}`;
}

interface FakeOptions {
  from?: string;
  to?: string[];
  helo?: string | null;
  remote?: string;
  esmtp?: boolean;
  secure?: boolean;
  tls?: { version: string; cipher: string } | null;
  user?: string | null;
  smtputf8?: boolean;
  id?: string;
}

/** A message as `onMessage` would get it, with the body in the given chunks. */
function fakeMessage(
  chunks: (Uint8Array | string)[] | ReadableStream<Uint8Array>,
  o: FakeOptions = {},
): DeliverableMessage {
  const from = o.from ?? "sender@example.org";
  const raw = chunks instanceof ReadableStream ? chunks : new ReadableStream<
    Uint8Array
  >({
    start(c) {
      for (const chunk of chunks) {
        c.enqueue(typeof chunk === "string" ? enc.encode(chunk) : chunk);
      }
      c.close();
    },
  });
  const at = from.lastIndexOf("@");
  return {
    id: o.id ?? "msgid1",
    from,
    to: o.to ?? ["rcpt@example.net"],
    mailFrom: {
      mailbox: {
        address: from,
        localPart: at < 0 ? from : from.slice(0, at),
        domain: at < 0 ? "" : from.slice(at + 1),
      },
      params: { smtputf8: o.smtputf8 ?? false, params: {} },
    },
    session: {
      heloName: o.helo === undefined ? "client.example.org" : o.helo,
      remoteAddress: o.remote ?? "192.0.2.7",
      esmtp: o.esmtp ?? true,
      secure: o.secure ?? false,
      tls: o.tls ?? null,
      user: o.user ?? null,
    },
    raw,
  };
}

/** The bytes after the trace headers (the first two header fields, folded). */
function belowTrace(file: Uint8Array): Uint8Array {
  const text = dec.decode(file.subarray(0, Math.min(file.length, 2000)));
  const m =
    /^Return-Path: [^\r\n]*\r\nReceived: [^\r\n]*(?:\r\n\t[^\r\n]*)*\r\n/
      .exec(text);
  assert.ok(
    m,
    `trace headers at the top of ${JSON.stringify(text.slice(0, 300))}`,
  );
  // A plain Uint8Array (readFile gives a Buffer) so that deepEqual compares bytes.
  return new Uint8Array(file.subarray(enc.encode(m[0]).length));
}

async function list(dir: string): Promise<string[]> {
  return (await fs.readdir(dir)).sort();
}

function fsError(code: string): Error {
  return Object.assign(new Error(`${code}: simulated`), { code });
}

/** node:fs/promises with hooks to fail or record each call. */
function wrappedFs(hooks: {
  onOpen?: (path: string, flags: string) => void;
  onWrite?: (path: string, length: number) => void;
  onSync?: (path: string) => void;
  onRename?: (from: string, to: string) => void;
  log?: string[];
}): MaildirFs {
  const log = hooks.log ?? [];
  return {
    mkdir: (path, options) => fs.mkdir(path, options),
    async open(path, flags, mode) {
      log.push(`open ${flags} ${path}`);
      hooks.onOpen?.(path, flags);
      const file = await fs.open(path, flags, mode);
      const wrapped: MaildirFile = {
        write(data, offset, length) {
          log.push(`write ${length}`);
          hooks.onWrite?.(path, length);
          return file.write(data, offset, length);
        },
        sync() {
          log.push(`sync ${path}`);
          hooks.onSync?.(path);
          return file.sync();
        },
        close() {
          log.push(`close ${path}`);
          return file.close();
        },
      };
      return wrapped;
    },
    rename(from, to) {
      log.push(`rename ${from} ${to}`);
      hooks.onRename?.(from, to);
      return fs.rename(from, to);
    },
    unlink(path) {
      log.push(`unlink ${path}`);
      return fs.unlink(path);
    },
  };
}

describe("Maildir.create", () => {
  it("creates cur, new and tmp, parents included", async () => {
    const path = `${dirPath()}/deep/inbox`;
    await new Maildir(path).create();
    assert.deepEqual(await list(path), ["cur", "new", "tmp"]);
    // Idempotent.
    await new Maildir(path).create();
  });

  it("rejects an empty path", () => {
    assert.throws(() => new Maildir(""), TypeError);
  });
});

describe("Maildir.deliver", () => {
  it("stores the message in new/ byte-exact below the trace headers", async () => {
    const path = dirPath();
    const maildir = new Maildir(path, { serverName: "mx.example.org" });
    await maildir.create();
    const body =
      "Subject: hi\r\n\r\n.leading dot stays unstuffed\r\nünïcödé\r\n";
    const d = await maildir.deliver(
      fakeMessage([body.slice(0, 5), body.slice(5)]),
    );
    assert.deepEqual(await list(`${path}/tmp`), []);
    assert.deepEqual(await list(`${path}/new`), [d.name]);
    assert.equal(d.path, `${path}/new/${d.name}`);
    const file = await fs.readFile(d.path);
    assert.equal(d.size, file.length);
    assert.deepEqual(belowTrace(file), enc.encode(body));
    const head = dec.decode(file).split("\r\n\r\n")[0];
    assert.match(head, /^Return-Path: <sender@example\.org>\r\n/);
    assert.match(
      head,
      /\r\nReceived: from client\.example\.org \(\[192\.0\.2\.7\]\)\r\n\tby mx\.example\.org with ESMTP id msgid1\r\n\tfor <rcpt@example\.net>; /,
    );
  });

  it("names files sec.MusecPpidRrandom.host and never reuses a name", async () => {
    const path = dirPath();
    const maildir = new Maildir(path, { hostname: "a/b:c", pid: 4242 });
    const names = new Set<string>();
    for (let i = 0; i < 20; i++) {
      names.add((await maildir.deliver(fakeMessage(["x\r\n"]))).name);
    }
    assert.equal(names.size, 20);
    for (const name of names) {
      assert.match(name, /^\d+\.M\d{1,6}P4242R[0-9a-f]{16}\.a\\057b\\072c$/);
    }
    assert.equal((await list(`${path}/new`)).length, 20);
  });

  it("keeps binary bodies exact across many chunks, writing in bounded pieces", async () => {
    const path = dirPath();
    const writes: number[] = [];
    const maildir = new Maildir(path, {
      fs: wrappedFs({ onWrite: (_p, n) => writes.push(n) }),
    });
    await maildir.create();
    const chunks: Uint8Array[] = [];
    let total = 0;
    for (let i = 0; total < 3 * 1024 * 1024; i++) {
      const chunk = new Uint8Array(1 + ((i * 7919) % 20000));
      crypto.getRandomValues(chunk);
      chunks.push(chunk);
      total += chunk.length;
    }
    const d = await maildir.deliver(fakeMessage(chunks));
    const stored = belowTrace(await fs.readFile(d.path));
    const expected = new Uint8Array(total);
    let at = 0;
    for (const c of chunks) {
      expected.set(c, at);
      at += c.length;
    }
    assert.equal(stored.length, total);
    assert.deepEqual(stored, expected);
    // Small chunks are gathered, and no write holds more than ~one piece.
    assert.ok(writes.length < chunks.length / 4, `${writes.length} writes`);
    assert.ok(Math.max(...writes) < 64 * 1024 + 20000);
  });

  it("syncs the file before renaming it into new/, then syncs new/", async () => {
    const path = dirPath();
    const log: string[] = [];
    const maildir = new Maildir(path, { fs: wrappedFs({ log }) });
    await maildir.create();
    const d = await maildir.deliver(fakeMessage(["body\r\n"]));
    const tmp = `${path}/tmp/${d.name}`;
    const steps = log.filter((l) => !l.startsWith("write"));
    assert.deepEqual(steps, [
      `open wx ${tmp}`,
      `sync ${tmp}`,
      `close ${tmp}`,
      `rename ${tmp} ${path}/new/${d.name}`,
      `open r ${path}/new`,
      `sync ${path}/new`,
      `close ${path}/new`,
    ]);
  });

  it("leaves out the trace headers when asked", async () => {
    const maildir = new Maildir(dirPath(), { traceHeaders: false });
    const d = await maildir.deliver(fakeMessage(["Subject: x\r\n\r\nhi\r\n"]));
    assert.equal(
      dec.decode(await fs.readFile(d.path)),
      "Subject: x\r\n\r\nhi\r\n",
    );
  });

  it("creates the Maildir on first delivery, and again if it is removed", async () => {
    const path = dirPath();
    const maildir = new Maildir(path);
    await maildir.deliver(fakeMessage(["one\r\n"]));
    await fs.rm(path, { recursive: true });
    const d = await maildir.deliver(fakeMessage(["two\r\n"]));
    assert.deepEqual(
      belowTrace(await fs.readFile(d.path)),
      enc.encode("two\r\n"),
    );
  });

  it("retries with a new name when the name exists", async () => {
    const path = dirPath();
    let collisions = 0;
    const maildir = new Maildir(path, {
      fs: wrappedFs({
        onOpen: (_p, flags) => {
          if (flags === "wx" && collisions++ < 2) throw fsError("EEXIST");
        },
      }),
    });
    await maildir.create();
    await maildir.deliver(fakeMessage(["x\r\n"]));
    assert.equal((await list(`${path}/new`)).length, 1);
  });

  it("confirm runs with the complete file in tmp/; new/ gets it only after", async () => {
    const path = dirPath();
    const maildir = new Maildir(path);
    await maildir.create();
    let seen: { tmp: string[]; new: string[]; content: string } | null = null;
    const delivery = await maildir.deliver(fakeMessage(["Subject: a\r\n"]), {
      confirm: async (pending) => {
        const tmp = await list(`${path}/tmp`);
        seen = {
          tmp,
          new: await list(`${path}/new`),
          content: await fs.readFile(`${path}/tmp/${tmp[0]}`, "utf8"),
        };
        assert.equal(pending.path, `${path}/new/${tmp[0]}`);
      },
    });
    assert.ok(seen !== null);
    const at = seen as { tmp: string[]; new: string[]; content: string };
    assert.deepEqual(at.new, []);
    assert.deepEqual(at.tmp, [delivery.name]);
    assert.ok(at.content.endsWith("Subject: a\r\n"));
    assert.deepEqual(await list(`${path}/new`), [delivery.name]);
    assert.deepEqual(await list(`${path}/tmp`), []);
  });

  it("a confirm that throws leaves nothing in tmp/ or new/, and its error passes through", async () => {
    const path = dirPath();
    const maildir = new Maildir(path);
    await maildir.create();
    const refused = new SmtpError(451, "4.3.0", "Endpoint refused");
    await assert.rejects(
      maildir.deliver(fakeMessage(["x\r\n"]), {
        confirm: () => Promise.reject(refused),
      }),
      (error) => error === refused,
    );
    const odd = new Error("not an SmtpError");
    await assert.rejects(
      maildir.deliver(fakeMessage(["x\r\n"]), {
        confirm: () => Promise.reject(odd),
      }),
      (error) => error === odd,
    );
    assert.deepEqual(await list(`${path}/new`), []);
    assert.deepEqual(await list(`${path}/tmp`), []);
  });

  it("a signal that aborts while confirm runs keeps the message out of new/", async () => {
    const path = dirPath();
    const maildir = new Maildir(path);
    await maildir.create();
    const abort = new AbortController();
    const reason = new SmtpError(451, "4.4.2", "Timeout");
    await assert.rejects(
      maildir.deliver({ ...fakeMessage(["x\r\n"]), signal: abort.signal }, {
        confirm: () => {
          abort.abort(reason);
          return Promise.resolve();
        },
      }),
      (error) => error === reason,
    );
    assert.deepEqual(await list(`${path}/new`), []);
    assert.deepEqual(await list(`${path}/tmp`), []);
  });
});

/** A message as the server makes it (its body lent part by part), with a session for the trace headers. */
function serverMessage(): IncomingMessage {
  return new IncomingMessage(
    "msgid2",
    {
      mailbox: {
        address: "sender@example.org",
        localPart: "sender",
        domain: "example.org",
      },
      params: { smtputf8: false, params: {} },
    } as never,
    [{
      mailbox: { address: "rcpt@example.net" },
      params: { params: {} },
    }] as never,
    {
      heloName: "client.example.org",
      remoteAddress: "192.0.2.7",
      esmtp: true,
      secure: false,
      tls: null,
      user: null,
    } as Session,
  );
}

/**
 * Pushes `body` into `m` as the driver does from a reused read buffer: each
 * piece a view of one buffer, overwritten with "#" once push() settles (a
 * piece written to the file later would come out as "#"), then ends it.
 */
async function pushLent(
  m: IncomingMessage,
  body: Uint8Array,
  cuts: readonly number[],
): Promise<void> {
  const buf = new Uint8Array(body.length);
  let at = 0;
  for (const end of [...cuts, body.length]) {
    buf.fill(35);
    buf.set(body.subarray(at, end));
    const wait = m.push(buf.subarray(0, end - at));
    if (wait !== undefined) await wait;
    at = end;
  }
  buf.fill(35);
  m.end();
}

describe("Maildir.deliver of a message the server made (its body lent, no stream)", () => {
  /** `n` bytes of lines, different at every offset. */
  function lines(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      out[i] = i % 80 === 78 ? 13 : i % 80 === 79 ? 10 : 33 + (i * 7) % 90;
    }
    return out;
  }

  it("stores the body byte-exact, split at every offset", async () => {
    const path = dirPath();
    const maildir = new Maildir(path);
    await maildir.create();
    const body = enc.encode("Subject: lent\r\n\r\nline one\r\n.two\r\n");
    for (let cut = 0; cut <= body.length; cut++) {
      const m = serverMessage();
      const delivering = maildir.deliver(m);
      await pushLent(m, body, [cut]);
      const d = await delivering;
      assert.deepEqual(
        belowTrace(await fs.readFile(d.path)),
        body,
        `cut ${cut}`,
      );
      assert.equal(m.raw.locked, false); // read to its end, as by a reader
      assert.equal((await m.bytes()).byteLength, 0);
    }
    assert.deepEqual(await list(`${path}/tmp`), []);
  });

  it("stores a large body exact, in parts smaller and larger than a write, and writes each part before the next read", async () => {
    const path = dirPath();
    const log: string[] = [];
    const maildir = new Maildir(path, { fs: wrappedFs({ log }) });
    await maildir.create();
    const body = lines(700_000);
    const cuts = [10, 65_536, 65_546, 300_000, 300_001, 500_000];
    for (const early of [false, true]) {
      const m = serverMessage();
      if (early) m.push(body.slice(0, 5)); // queued before delivery starts
      const delivering = maildir.deliver(m);
      await pushLent(m, early ? body.subarray(5) : body, cuts);
      const d = await delivering;
      const file = await fs.readFile(d.path);
      assert.equal(d.size, file.length);
      assert.deepEqual(belowTrace(file), body, early ? "early" : "lent");
    }
    // A part of a whole write or more, when the buffer is empty, went as it is.
    assert.ok(log.some((l) => /^write (\d+)$/.exec(l)?.[1] === "200000"));
  });

  it("a body that does not complete removes the file and throws the reason; the waiting driver goes on", async () => {
    const path = dirPath();
    const maildir = new Maildir(path);
    await maildir.create();
    const m = serverMessage();
    const delivering = maildir.deliver(m);
    assert.equal(await m.push(enc.encode("Subject: x\r\n")), undefined);
    const reason = new Error("client gone");
    m.abort(reason);
    await assert.rejects(delivering, (e) => e === reason);
    assert.deepEqual(await list(`${path}/tmp`), []);
    assert.deepEqual(await list(`${path}/new`), []);
  });

  it("a write failure mid-body gives 452 4.3.1, lets the driver go on and drops the rest", async () => {
    const path = dirPath();
    let writes = 0;
    const maildir = new Maildir(path, {
      fs: wrappedFs({
        onWrite: () => {
          if (++writes === 2) throw fsError("ENOSPC");
        },
      }),
    });
    await maildir.create();
    const m = serverMessage();
    const delivering = maildir.deliver(m).then(() => null, (e) => e);
    const body = lines(400_000);
    await pushLent(m, body, [100_000, 200_000, 300_000]); // never left waiting
    const error = await delivering;
    assert.ok(error instanceof SmtpError);
    assert.equal(error.code, 452);
    assert.equal(m.size, body.length);
    assert.deepEqual(await list(`${path}/tmp`), []);
    assert.deepEqual(await list(`${path}/new`), []);
  });
});

describe("Maildir.deliver failures", () => {
  async function failing(
    hooks: Parameters<typeof wrappedFs>[0],
    message = fakeMessage(["a".repeat(100_000), "b\r\n"]),
  ): Promise<{ error: unknown; path: string }> {
    const path = dirPath();
    const maildir = new Maildir(path, { fs: wrappedFs(hooks) });
    await maildir.create();
    const error = await maildir.deliver(message).then(
      () => assert.fail("delivery succeeded"),
      (e) => e,
    );
    return { error, path };
  }

  function assertReply(error: unknown, code: number, enhanced: string) {
    assert.ok(error instanceof SmtpError, `an SmtpError: ${error}`);
    assert.equal(error.code, code);
    assert.equal(error.enhancedCode, enhanced);
  }

  it("a full disk gives 452 4.3.1 and removes the file from tmp/", async () => {
    let n = 0;
    const { error, path } = await failing({
      onWrite: () => {
        if (n++ > 0) throw fsError("ENOSPC");
      },
    });
    assertReply(error, 452, "4.3.1");
    assert.equal(
      (error as { cause?: { code?: string } }).cause?.code,
      "ENOSPC",
    );
    assert.deepEqual(await list(`${path}/tmp`), []);
    assert.deepEqual(await list(`${path}/new`), []);
  });

  it("an exceeded quota gives 452 4.3.1", async () => {
    const { error, path } = await failing({
      onSync: () => {
        throw fsError("EDQUOT");
      },
    });
    assertReply(error, 452, "4.3.1");
    assert.deepEqual(await list(`${path}/tmp`), []);
  });

  for (const code of ["EACCES", "EROFS", "EIO"]) {
    it(`${code} when opening the file gives 451 4.3.0`, async () => {
      const { error, path } = await failing({
        onOpen: () => {
          throw fsError(code);
        },
      });
      assertReply(error, 451, "4.3.0");
      assert.deepEqual(await list(`${path}/tmp`), []);
    });
  }

  it("a failed fsync gives 451 4.3.0 and nothing in new/", async () => {
    const { error, path } = await failing({
      onSync: (p) => {
        if (p.includes("/tmp/")) throw fsError("EIO");
      },
    });
    assertReply(error, 451, "4.3.0");
    assert.deepEqual(await list(`${path}/tmp`), []);
    assert.deepEqual(await list(`${path}/new`), []);
  });

  it("a failed rename gives 451 4.3.0 and removes the file from tmp/", async () => {
    const { error, path } = await failing({
      onRename: () => {
        throw fsError("EXDEV");
      },
    });
    assertReply(error, 451, "4.3.0");
    assert.deepEqual(await list(`${path}/tmp`), []);
  });

  it("a directory sync the runtime cannot do is skipped", async () => {
    for (const code of ["EISDIR", "EINVAL"]) {
      const path = dirPath();
      const maildir = new Maildir(path, {
        fs: wrappedFs({
          onOpen: (_p, flags) => {
            if (flags === "r") throw fsError(code);
          },
          onSync: (p) => {
            if (p.endsWith("/new")) throw fsError(code);
          },
        }),
      });
      const d = await maildir.deliver(fakeMessage(["x\r\n"]));
      assert.deepEqual(await list(`${path}/new`), [d.name]);
    }
  });

  it("a failed directory sync takes the message back (451)", async () => {
    const { error, path } = await failing({
      onSync: (p) => {
        if (p.endsWith("/new")) throw fsError("EIO");
      },
    });
    assertReply(error, 451, "4.3.0");
    assert.deepEqual(await list(`${path}/new`), []);
  });

  it("tmp/ being a file (unwritable) gives 451 4.3.0", async () => {
    const path = dirPath();
    const maildir = new Maildir(path);
    await maildir.create();
    await fs.rm(`${path}/tmp`, { recursive: true });
    await fs.writeFile(`${path}/tmp`, "not a directory");
    const error = await maildir.deliver(fakeMessage(["x\r\n"])).catch((e) => e);
    assertReply(error, 451, "4.3.0");
    assert.deepEqual(await list(`${path}/new`), []);
  });

  it("a body that does not complete is not stored, and its error passes through", async () => {
    const path = dirPath();
    const maildir = new Maildir(path);
    await maildir.create();
    const abort = new SmtpError(451, "4.3.0", "client went away");
    const raw = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(enc.encode("partial body\r\n"));
        setTimeout(() => c.error(abort), 10);
      },
    });
    const error = await maildir.deliver(fakeMessage(raw)).catch((e) => e);
    assert.equal(error, abort);
    assert.deepEqual(await list(`${path}/tmp`), []);
    assert.deepEqual(await list(`${path}/new`), []);
  });
});

describe("trace headers", () => {
  const date = new Date(Date.UTC(2025, 5, 3, 8, 4, 5));

  it("name the protocol per RFC 3848 and RFC 6531", () => {
    const p = (
      esmtp: boolean,
      secure: boolean,
      user: string | null,
      u = false,
    ) => receivedProtocol({ esmtp, secure, user }, u);
    assert.equal(p(false, false, null), "SMTP");
    assert.equal(p(true, false, null), "ESMTP");
    assert.equal(p(true, true, null), "ESMTPS");
    assert.equal(p(true, false, "u"), "ESMTPA");
    assert.equal(p(true, true, "u"), "ESMTPSA");
    assert.equal(p(true, true, "u", true), "UTF8SMTPSA");
    assert.equal(p(true, false, null, true), "UTF8SMTP");
    const l = (secure: boolean, user: string | null, u = false) =>
      receivedProtocol({ esmtp: true, lmtp: true, secure, user }, u);
    assert.equal(l(false, null), "LMTP");
    assert.equal(l(true, null), "LMTPS");
    assert.equal(l(false, "u"), "LMTPA");
    assert.equal(l(true, "u"), "LMTPSA");
    assert.equal(l(true, "u", true), "UTF8LMTPSA");
    assert.equal(
      receivedProtocol({ esmtp: true, lmtp: false, secure: false, user: null }),
      "ESMTP",
    );
  });

  it("give Return-Path and a folded Received line", () => {
    const h = traceHeaders(fakeMessage([], { id: "ID9" }), {
      serverName: "mx.test",
      date,
    });
    assert.equal(
      h,
      "Return-Path: <sender@example.org>\r\n" +
        "Received: from client.example.org ([192.0.2.7])\r\n" +
        "\tby mx.test with ESMTP id ID9\r\n" +
        `\tfor <rcpt@example.net>; ${rfc5322Date(date)}\r\n`,
    );
  });

  it("name TLS, IPv6 literals and the null sender", () => {
    const h = traceHeaders(
      fakeMessage([], {
        from: "",
        remote: "::1",
        secure: true,
        user: "alice",
        tls: { version: "TLSv1.3", cipher: "TLS_AES_128_GCM_SHA256" },
      }),
      { serverName: "mx.test", date },
    );
    assert.match(h, /^Return-Path: <>\r\n/);
    assert.match(h, /Received: from client\.example\.org \(\[IPv6:::1\]\)\r\n/);
    assert.match(
      h,
      /\r\n\t\(using TLSv1\.3 with cipher TLS_AES_128_GCM_SHA256\)\r\n/,
    );
    assert.match(h, /\tby mx\.test with ESMTPSA id /);
  });

  it("name the client by its reverse DNS name as Postfix does, when the session has one", () => {
    const received = (remote: string, clientHostname: string | null) => {
      const m = fakeMessage([], { remote });
      const h = traceHeaders(
        { ...m, session: { ...m.session, clientHostname } },
        { serverName: "mx.test", date },
      );
      return /^Received: ([^\r]*)\r\n/m.exec(h)?.[1];
    };
    assert.equal(
      received("192.0.2.7", "mail.example.org"),
      "from client.example.org (mail.example.org [192.0.2.7])",
    );
    assert.equal(
      received("2001:db8::7", "unknown"),
      "from client.example.org (unknown [IPv6:2001:db8::7])",
    );
    // No lookup (reverseDns off): as without the field.
    assert.equal(
      received("192.0.2.7", null),
      "from client.example.org ([192.0.2.7])",
    );
    // A name cannot break the header line.
    assert.equal(
      received("192.0.2.7", "evil\r\nBcc: x"),
      "from client.example.org (evilBcc: x [192.0.2.7])",
    );
  });

  it("leave out 'for' with several recipients (Bcc stays private)", () => {
    const h = traceHeaders(fakeMessage([], { to: ["a@x.test", "b@x.test"] }), {
      serverName: "mx.test",
      date,
    });
    assert.doesNotMatch(h, /for </);
    assert.match(h, /id msgid1;\r\n\t[A-Z][a-z]{2}, /);
  });

  it("cannot be broken by control characters", () => {
    const h = traceHeaders(
      fakeMessage([], { helo: "evil\r\nX-Injected: 1", id: "a\nb" }),
      { serverName: "mx.test", date },
    );
    assert.doesNotMatch(h, /\r\nX-Injected/);
    assert.equal(
      h.split("\r\n").filter((l) =>
        l !== "" && !/^(\t|Return-Path: |Received: )/.test(l)
      ).length,
      0,
    );
  });

  it("date the message per RFC 5322", () => {
    const s = rfc5322Date(date);
    assert.match(
      s,
      /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d [+-]\d{4}$/,
    );
    assert.equal(Date.parse(s), date.getTime());
  });
});

describe("maildirName", () => {
  it("follows the Maildir spec and escapes / and : in the host name", () => {
    assert.equal(
      maildirName(1700000000123.456, 42, "mx:1/a", "9f3c"),
      "1700000000.M123456P42R9f3c.mx\\0721\\057a",
    );
    assert.equal(maildirName(5000, 1, "h", "0"), "5.M0P1R0.h");
  });
});

describe("Maildir behind serve()", () => {
  /** Sends one message over a raw socket; resolves to every reply. */
  function send(port: number, body: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ port, host: "127.0.0.1" });
      let got = "";
      sock.setEncoding("latin1");
      sock.on("data", (d: string) => {
        got += d;
        if (/^354 /m.test(got) && !got.includes("#sent")) {
          got += "#sent\r\n";
          sock.write(body + ".\r\nQUIT\r\n");
        }
        if (/^221 /m.test(got)) sock.end();
      });
      sock.on("error", reject);
      sock.on("close", () => resolve(got));
      sock.write(
        "EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n",
      );
    });
  }

  it("a full disk reaches the client as 452 4.3.1, and the next message is stored", async () => {
    const path = dirPath();
    let full = true;
    const maildir = new Maildir(path, {
      fs: wrappedFs({
        onWrite: () => {
          if (full) throw fsError("ENOSPC");
        },
      }),
    });
    await maildir.create();
    const server = await serve({
      port: 0,
      async onMessage(m) {
        await maildir.deliver(m);
      },
    });
    try {
      const first = await send(server.addr.port, "Subject: 1\r\n\r\nx\r\n");
      assert.match(first, /\r\n452 4\.3\.1 /);
      assert.doesNotMatch(first, /\r\n250 2\.0\.0 /);
      assert.deepEqual(await list(`${path}/new`), []);
      full = false;
      const second = await send(server.addr.port, "Subject: 2\r\n\r\ny\r\n");
      assert.match(second, /\r\n250 2\.0\.0 /);
      const [name] = await list(`${path}/new`);
      assert.deepEqual(
        belowTrace(await fs.readFile(`${path}/new/${name}`)),
        enc.encode("Subject: 2\r\n\r\ny\r\n"),
      );
      assert.deepEqual(await list(`${path}/tmp`), []);
    } finally {
      await server.close();
    }
  });
});
