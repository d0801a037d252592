// smtpd/testing: the test inbox, with real clients as "the application"
// (nodemailer, Python's smtplib, swaks), its waits and their error texts,
// AUTH, STARTTLS and implicit TLS, failNext, close and asyncDispose.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as net from "node:net";
import nodemailer from "nodemailer";
import {
  createTestInbox,
  type ReceivedMail,
  SmtpError,
  type TestInbox,
} from "../src/testing.ts";
import { run, TLS } from "./helpers/tls.ts";

/** Sends one message with nodemailer and closes the transport. */
async function nodemailerSend(
  transportOptions: Record<string, unknown>,
  mail: Record<string, unknown>,
): Promise<{ response: string }> {
  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    name: "nodemailer.test",
    ...transportOptions,
  });
  try {
    const info = await transport.sendMail(mail);
    return { response: String(info.response) };
  } finally {
    transport.close();
  }
}

/** Whether a TCP connection to 127.0.0.1:port is refused. */
function refused(port: number): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "ECONNREFUSED") resolve(true);
      else reject(err);
    });
  });
}

const SMTPLIB = `
import smtplib, sys
from email.message import EmailMessage
port = int(sys.argv[1])
msg = EmailMessage()
msg["From"] = "Py Sender <py@example.org>"
msg["To"] = "a@example.org"
msg["Subject"] = "From smtplib"
msg.set_content("Hello from Python\\n")
with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
    smtp.ehlo("python.test")
    smtp.send_message(msg, from_addr="py@example.org", to_addrs=["a@example.org", "bcc@example.org"])
print("sent")
`;

describe("test inbox", () => {
  let inbox: TestInbox;

  before(async () => {
    inbox = await createTestInbox();
  });

  after(async () => {
    await inbox?.close();
  });

  it("listens on 127.0.0.1 on a free port and says so in url", () => {
    assert.equal(inbox.hostname, "127.0.0.1");
    assert.ok(inbox.port > 0);
    assert.equal(inbox.url, `smtp://127.0.0.1:${inbox.port}`);
  });

  it("nodemailer sends; waitFor finds it, parsed, with its envelope", async () => {
    inbox.clear();
    const waiting = inbox.waitFor((m) => m.to.includes("a@example.org"), {
      timeout: 10000,
    });
    const { response } = await nodemailerSend({ port: inbox.port }, {
      from: "App <app@example.org>",
      to: "Ann <a@example.org>",
      cc: "c@example.org",
      bcc: "hidden@example.org",
      subject: "Welcome",
      text: "Hello Ann,\nwelcome aboard.",
      html: "<p>Hello Ann, <b>welcome</b> aboard.</p>",
      headers: { "X-App": "signup 1.0" },
      attachments: [{ filename: "terms.txt", content: "Be nice." }],
    });
    assert.match(response, /^250 /);
    const mail = await waiting;
    // The envelope: Bcc is there, as in RCPT TO.
    assert.equal(mail.from, "app@example.org");
    assert.deepEqual(mail.to, [
      "a@example.org",
      "c@example.org",
      "hidden@example.org",
    ]);
    assert.equal(mail.session.remoteAddress, "127.0.0.1");
    assert.equal(mail.session.helo, "nodemailer.test");
    assert.equal(mail.session.esmtp, true);
    assert.equal(mail.session.secure, false);
    assert.equal(mail.session.user, null);
    // The parsed message.
    assert.equal(mail.subject, "Welcome");
    assert.equal(mail.text?.trim(), "Hello Ann,\nwelcome aboard.");
    assert.equal(mail.html?.trim(), "<p>Hello Ann, <b>welcome</b> aboard.</p>");
    assert.equal(mail.attachments.length, 1);
    assert.equal(mail.attachments[0].filename, "terms.txt");
    assert.equal(mail.attachments[0].mimeType, "text/plain");
    assert.equal(
      new TextDecoder().decode(mail.attachments[0].content as ArrayBuffer),
      "Be nice.",
    );
    assert.deepEqual(mail.fromHeader, {
      name: "App",
      address: "app@example.org",
    });
    assert.deepEqual(mail.toHeader, [{
      name: "Ann",
      address: "a@example.org",
    }]);
    assert.deepEqual(mail.ccHeader, [{ name: "", address: "c@example.org" }]);
    assert.equal(mail.header("x-app"), "signup 1.0");
    assert.equal(mail.header("X-APP"), "signup 1.0");
    assert.equal(mail.header("x-missing"), undefined);
    assert.ok(mail.headers.some((h) => h.key === "subject"));
    assert.match(mail.messageId ?? "", /^<.+@.+>$/);
    assert.match(mail.date ?? "", /^\d{4}-\d\d-\d\dT/);
    assert.equal(mail.email.subject, "Welcome");
    assert.ok(mail.raw instanceof Uint8Array);
    assert.equal(mail.source, new TextDecoder().decode(mail.raw));
    assert.match(mail.source, /^Subject: Welcome\r$/m);
    assert.ok(mail.receivedAt instanceof Date);
    assert.equal(inbox.messages.length, 1);
    assert.equal(inbox.messages[0], mail);
  });

  it("Python smtplib sends; waitFor finds it", async () => {
    inbox.clear();
    const waiting = inbox.waitFor((m) => m.subject === "From smtplib", {
      timeout: 20000,
    });
    const r = await run("python3", ["-c", SMTPLIB, String(inbox.port)]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), "sent");
    const mail = await waiting;
    assert.equal(mail.from, "py@example.org");
    assert.deepEqual(mail.to, ["a@example.org", "bcc@example.org"]);
    assert.equal(mail.session.helo, "python.test");
    assert.equal(mail.text, "Hello from Python\n");
    assert.deepEqual(mail.fromHeader, {
      name: "Py Sender",
      address: "py@example.org",
    });
  });

  it("swaks sends; waitFor finds it", async () => {
    inbox.clear();
    const r = await run("swaks", [
      "--server",
      `127.0.0.1:${inbox.port}`,
      "--helo",
      "swaks.test",
      "--from",
      "s@example.org",
      "--to",
      "b@example.org",
      "--header",
      "Subject: From swaks",
      "--body",
      "swaks body",
    ]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    // Stored before the 250: no waiting needed once the client is done.
    assert.equal(inbox.messages.length, 1);
    const mail = await inbox.waitFor((m) => m.session.helo === "swaks.test");
    assert.equal(mail.subject, "From swaks");
    assert.equal(mail.from, "s@example.org");
    assert.deepEqual(mail.to, ["b@example.org"]);
    assert.equal(mail.text?.trim(), "swaks body");
  });

  it("waitFor resolves with a message that arrived before the call, the first that matches", async () => {
    inbox.clear();
    for (const subject of ["one", "two", "three"]) {
      await nodemailerSend({ port: inbox.port }, {
        from: "x@example.org",
        to: "y@example.org",
        subject,
        text: subject,
      });
    }
    const mail = await inbox.waitFor((m) => m.subject !== "one", {
      timeout: 0,
    });
    assert.equal(mail.subject, "two");
    assert.equal((await inbox.waitFor()).subject, "one");
    const all = await inbox.waitForCount(3, { timeout: 0 });
    assert.deepEqual(all.map((m) => m.subject), ["one", "two", "three"]);
  });

  it("waitForCount waits for messages still to come", async () => {
    inbox.clear();
    const waiting = inbox.waitForCount(2, { timeout: 10000 });
    for (const subject of ["first", "second"]) {
      await nodemailerSend({ port: inbox.port }, {
        from: "x@example.org",
        to: "y@example.org",
        subject,
        text: subject,
      });
    }
    const got = await waiting;
    assert.deepEqual(got.map((m) => m.subject), ["first", "second"]);
  });

  it("a timed-out waitFor lists what did arrive", async () => {
    inbox.clear();
    await assert.rejects(
      inbox.waitFor((m) => m.to.includes("nobody@example.org"), {
        timeout: 50,
      }),
      (err: Error) => {
        assert.match(
          err.message,
          /^Timed out after 50 ms waiting for a message matching/,
        );
        assert.match(err.message, /nobody@example\.org/); // the predicate's source
        assert.match(err.message, /nothing arrived$/);
        return true;
      },
    );
    await nodemailerSend({ port: inbox.port }, {
      from: "app@example.org",
      to: ["a@example.org", "b@example.org"],
      subject: "Welcome",
      text: "hi",
    });
    await nodemailerSend({ port: inbox.port }, {
      envelope: { from: "", to: ["c@example.org"] },
      raw: "From: x@example.org\r\nTo: c@example.org\r\n\r\nno subject\r\n",
    });
    await assert.rejects(
      inbox.waitFor((m) => m.to.includes("nobody@example.org"), {
        timeout: 50,
      }),
      (err: Error) => {
        assert.match(
          err.message,
          /; 2 messages arrived:\n {2}1\. app@example\.org → a@example\.org, b@example\.org: "Welcome"\n {2}2\. <> → c@example\.org: \(no subject\)$/,
        );
        return true;
      },
    );
    await assert.rejects(
      inbox.waitForCount(3, { timeout: 20 }),
      /^Error: Timed out after 20 ms waiting for 3 messages; 2 messages arrived:/,
    );
  });

  it("a predicate that throws rejects the wait, and the message is still accepted", async () => {
    inbox.clear();
    const waiting = inbox.waitFor((m) => {
      if (m.subject === "boom") throw new Error("predicate failed");
      return false;
    }, { timeout: 10000 });
    // Handled before it settles: it rejects while the message is sent.
    const rejected = assert.rejects(waiting, /^Error: predicate failed$/);
    await nodemailerSend({ port: inbox.port }, {
      from: "x@example.org",
      to: "y@example.org",
      subject: "boom",
      text: "boom",
    });
    await rejected;
    assert.equal(inbox.messages.length, 1);
    await assert.rejects(
      inbox.waitFor(() => {
        throw new Error("at once");
      }),
      /^Error: at once$/,
    );
  });

  it("clear() forgets what arrived; waitFor then waits for new mail", async () => {
    await nodemailerSend({ port: inbox.port }, {
      from: "x@example.org",
      to: "y@example.org",
      subject: "old",
      text: "old",
    });
    assert.ok(inbox.messages.length > 0);
    inbox.clear();
    assert.deepEqual(inbox.messages, []);
    await assert.rejects(
      inbox.waitFor(undefined, { timeout: 20 }),
      /nothing arrived/,
    );
    const waiting = inbox.waitFor(undefined, { timeout: 10000 });
    await nodemailerSend({ port: inbox.port }, {
      from: "x@example.org",
      to: "y@example.org",
      subject: "new",
      text: "new",
    });
    assert.equal((await waiting).subject, "new");
  });

  it("messages is a copy: changing it does not change the inbox", async () => {
    inbox.clear();
    await nodemailerSend({ port: inbox.port }, {
      from: "x@example.org",
      to: "y@example.org",
      subject: "copy",
      text: "copy",
    });
    const list = inbox.messages as ReceivedMail[];
    list.length = 0;
    assert.equal(inbox.messages.length, 1);
  });

  it("failNext refuses the next message with the given reply, then accepts again", async () => {
    inbox.clear();
    inbox.failNext(new SmtpError(550, "5.7.1", "Go away"));
    inbox.failNext(); // 451 4.3.0
    const send = () =>
      nodemailerSend({ port: inbox.port }, {
        from: "x@example.org",
        to: "y@example.org",
        subject: "retry me",
        text: "retry me",
      });
    await assert.rejects(send(), (err: { responseCode?: number }) => {
      assert.equal(err.responseCode, 550);
      return true;
    });
    await assert.rejects(send(), (err: { responseCode?: number }) => {
      assert.equal(err.responseCode, 451);
      return true;
    });
    assert.equal(inbox.messages.length, 0);
    await assert.rejects(
      inbox.waitFor(undefined, { timeout: 20 }),
      (err: Error) => {
        assert.match(
          err.message,
          /nothing arrived\n2 refused:\n {2}1\. x@example\.org → y@example\.org: refused with 550 Go away \(failNext\)\n {2}2\. .*451/,
        );
        return true;
      },
    );
    await send();
    assert.equal((await inbox.waitFor()).subject, "retry me");
  });

  it("a message that does not parse gets a 451 that says why, printed with its cause", async () => {
    inbox.clear();
    // Deeper MIME nesting than postal-mime parses (256 levels).
    let raw = "From: x@example.org\r\nSubject: too deep\r\n";
    for (let i = 0; i < 300; i++) {
      raw +=
        `Content-Type: multipart/mixed; boundary="b${i}"\r\n\r\n--b${i}\r\n`;
    }
    raw += "Content-Type: text/plain\r\n\r\nhi\r\n";
    const printed: unknown[][] = [];
    const consoleError = console.error;
    console.error = (...args: unknown[]) => void printed.push(args);
    try {
      await assert.rejects(
        nodemailerSend({ port: inbox.port }, {
          envelope: { from: "x@example.org", to: ["y@example.org"] },
          raw,
        }),
        (err: { responseCode?: number; response?: string }) => {
          assert.equal(err.responseCode, 451);
          assert.equal(
            err.response,
            "451 4.3.0 Test inbox cannot parse the message: Maximum MIME nesting depth of 256 levels exceeded",
          );
          return true;
        },
      );
    } finally {
      console.error = consoleError;
    }
    assert.equal(printed.length, 1);
    assert.equal(
      printed[0][0],
      "smtpd/testing: x@example.org → y@example.org: refused with 451, cannot parse the message:",
    );
    assert.ok(printed[0][1] instanceof Error);
    assert.equal(
      printed[0][1].message,
      "Maximum MIME nesting depth of 256 levels exceeded",
    );
    assert.equal(inbox.messages.length, 0);
  });

  it("prints nothing for the refusals it was asked for: they are listed by waitFor", async () => {
    inbox.clear();
    inbox.failNext(new SmtpError(554, "5.6.0", "Refused for the test"));
    const printed: unknown[][] = [];
    const error = console.error;
    console.error = (...args: unknown[]) => {
      printed.push(args);
    };
    try {
      await assert.rejects(
        nodemailerSend({ port: inbox.port }, {
          from: "x@example.org",
          to: "y@example.org",
          subject: "refused",
          text: "refused",
        }),
        (err: { responseCode?: number }) => err.responseCode === 554,
      );
    } finally {
      console.error = error;
    }
    assert.deepEqual(printed, []);
    await assert.rejects(
      inbox.waitFor(undefined, { timeout: 20 }),
      /1 refused:\n {2}1\. x@example\.org → y@example\.org: refused with 554 Refused for the test \(failNext\)/,
    );
  });

  it("checks its options and arguments", async () => {
    await assert.rejects(
      // @ts-expect-error: not an option
      createTestInbox({ hostnme: "127.0.0.1" }),
      /^TypeError: Cannot use test inbox option hostnme: unknown option \(did you mean "hostname"\?\)$/,
    );
    await assert.rejects(
      // @ts-expect-error: not an option
      createTestInbox({ auth: { users: { a: "b" }, requird: true } }),
      /auth\.requird: unknown option \(did you mean "required"\?\)/,
    );
    await assert.rejects(
      // @ts-expect-error: a password is a string
      createTestInbox({ auth: { users: { a: 1 } } }),
      /^TypeError: Cannot use option auth\.users\.a: value is not a string$/,
    );
    assert.throws(
      () => inbox.waitFor(undefined, { timeout: -1 }),
      /^TypeError: Cannot use wait option timeout/,
    );
    assert.throws(() => inbox.waitForCount(0), TypeError);
    // @ts-expect-error: not an SmtpError
    assert.throws(() => inbox.failNext("no"), TypeError);
  });
});

describe("test inbox with AUTH", () => {
  it("offers AUTH on loopback without TLS; the user is on the message; mail without AUTH still arrives", async () => {
    const inbox = await createTestInbox({
      auth: { users: { alice: "secret" } },
    });
    try {
      await nodemailerSend({
        port: inbox.port,
        auth: { user: "alice", pass: "secret" },
      }, {
        from: "alice@example.org",
        to: "b@example.org",
        subject: "authenticated",
        text: "hi",
      });
      const mail = await inbox.waitFor((m) => m.subject === "authenticated");
      assert.equal(mail.session.user, "alice");
      await assert.rejects(
        nodemailerSend({
          port: inbox.port,
          auth: { user: "alice", pass: "wrong" },
        }, { from: "a@example.org", to: "b@example.org", text: "x" }),
        (err: { responseCode?: number }) => {
          assert.equal(err.responseCode, 535);
          return true;
        },
      );
      await nodemailerSend({ port: inbox.port }, {
        from: "anon@example.org",
        to: "b@example.org",
        subject: "anonymous",
        text: "hi",
      });
      const anon = await inbox.waitFor((m) => m.subject === "anonymous");
      assert.equal(anon.session.user, null);
    } finally {
      await inbox.close();
    }
  });

  it("required: true refuses mail without AUTH (530)", async () => {
    const inbox = await createTestInbox({
      auth: { users: { alice: "secret" }, required: true },
    });
    try {
      await assert.rejects(
        nodemailerSend({ port: inbox.port }, {
          from: "anon@example.org",
          to: "b@example.org",
          text: "hi",
        }),
        (err: { responseCode?: number }) => {
          assert.equal(err.responseCode, 530);
          return true;
        },
      );
      assert.equal(inbox.messages.length, 0);
    } finally {
      await inbox.close();
    }
  });
});

describe("test inbox with TLS", () => {
  it("STARTTLS with the test certificate: the message says it came encrypted", async () => {
    const inbox = await createTestInbox({
      tls: TLS,
      auth: { users: { alice: "secret" } },
    });
    try {
      await nodemailerSend({
        port: inbox.port,
        requireTLS: true,
        tls: { ca: TLS.cert }, // verified: the certificate names 127.0.0.1
        auth: { user: "alice", pass: "secret" },
      }, {
        from: "alice@example.org",
        to: "b@example.org",
        subject: "over STARTTLS",
        text: "secret stuff",
      });
      const mail = await inbox.waitFor((m) => m.subject === "over STARTTLS");
      assert.equal(mail.session.secure, true);
      assert.match(mail.session.tls?.version ?? "", /^TLSv1\.[23]$/);
      assert.equal(mail.session.user, "alice");
    } finally {
      await inbox.close();
    }
  });

  it("implicit TLS: smtps:// url, encrypted from the first byte", async () => {
    const inbox = await createTestInbox({ tls: TLS, implicitTls: true });
    try {
      assert.equal(inbox.url, `smtps://127.0.0.1:${inbox.port}`);
      await nodemailerSend({
        port: inbox.port,
        secure: true,
        tls: { ca: TLS.cert },
      }, {
        from: "a@example.org",
        to: "b@example.org",
        subject: "implicit",
        text: "hi",
      });
      const mail = await inbox.waitFor();
      assert.equal(mail.subject, "implicit");
      assert.equal(mail.session.secure, true);
    } finally {
      await inbox.close();
    }
  });
});

describe("test inbox lifetime", () => {
  it("close() stops listening, rejects pending waits with what arrived, and may be called twice", async () => {
    const inbox = await createTestInbox();
    const port = inbox.port;
    await nodemailerSend({ port }, {
      from: "a@example.org",
      to: "b@example.org",
      subject: "before close",
      text: "hi",
    });
    const pending = inbox.waitFor((m) => m.subject === "never", {
      timeout: 10000,
    });
    const closing = inbox.close();
    await assert.rejects(
      pending,
      /^Error: The test inbox closed waiting for a message matching .*; 1 message arrived:\n {2}1\. a@example\.org → b@example\.org: "before close"$/,
    );
    await closing;
    await inbox.close();
    assert.equal(await refused(port), true);
    // What arrived stays readable after close.
    assert.equal((await inbox.waitFor()).subject, "before close");
    await assert.rejects(
      inbox.waitFor((m) => m.subject === "never"),
      /^Error: Cannot wait for a message matching .*: the test inbox is closed; 1 message arrived/,
    );
  });

  it("Symbol.asyncDispose closes it", async () => {
    const inbox = await createTestInbox();
    const port = inbox.port;
    assert.equal(typeof inbox[Symbol.asyncDispose], "function");
    assert.equal(await refused(port), false);
    await inbox[Symbol.asyncDispose]();
    assert.equal(await refused(port), true);
  });

  it("await using closes it at the end of the block", async () => {
    let port = 0;
    {
      await using inbox = await createTestInbox();
      port = inbox.port;
      await nodemailerSend({ port }, {
        from: "a@example.org",
        to: "b@example.org",
        subject: "using",
        text: "hi",
      });
      assert.equal((await inbox.waitFor()).subject, "using");
      assert.equal(await refused(port), false);
    }
    assert.equal(await refused(port), true);
  });

  it("takes messages from parallel connections, each once", async () => {
    const inbox = await createTestInbox();
    try {
      const big = Buffer.alloc(512 * 1024, "a").toString();
      await Promise.all(
        Array.from(
          { length: 5 },
          (_, i) =>
            nodemailerSend({ port: inbox.port }, {
              from: "a@example.org",
              to: "b@example.org",
              subject: `parallel ${i}`,
              text: i % 2 === 0 ? big : "small",
            }),
        ),
      );
      const got = await inbox.waitForCount(5);
      assert.deepEqual(
        got.map((m) => m.subject).sort(),
        [0, 1, 2, 3, 4].map((i) => `parallel ${i}`),
      );
      assert.deepEqual(inbox.messages.map((m) => m.id), got.map((m) => m.id));
    } finally {
      await inbox.close();
    }
  });
});
