// Testing code that sends mail: a test inbox (a real SMTP server inside the
// test process) receives what the code under test sends, and the test
// asserts on it. This file is itself a test, for the runtime's own runner:
//   node --import tsx --test examples/test_inbox.ts   # Node 23.6+: node --test examples/test_inbox.ts
//   deno test -A examples/test_inbox.ts
//   bun test ./examples/test_inbox.ts
// In your project: import { createTestInbox } from "smtpd/testing" (npm)
// or "jsr:@smtpd/smtpd/testing"; nodemailer plays the application here.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import nodemailer from "nodemailer";
import { createTestInbox, type TestInbox } from "../src/testing.ts";

/** The code under test: sends a welcome mail through the SMTP server it is given. */
async function sendWelcome(
  smtp: { host: string; port: number },
  to: string,
): Promise<void> {
  const transport = nodemailer.createTransport({
    host: smtp.host,
    port: smtp.port,
    secure: false,
    ignoreTLS: true,
  });
  try {
    await transport.sendMail({
      from: "Example App <app@example.com>",
      to,
      subject: "Welcome",
      text: `Hello ${to}, welcome aboard.`,
    });
  } finally {
    transport.close();
  }
}

describe("welcome mail", () => {
  let inbox: TestInbox;
  before(async () => {
    inbox = await createTestInbox();
  });
  after(() => inbox.close());

  it("reaches the new user", async () => {
    await sendWelcome(
      { host: inbox.hostname, port: inbox.port },
      "a@example.org",
    );
    const mail = await inbox.waitFor((m) => m.to.includes("a@example.org"), {
      timeout: 5000,
    });
    assert.equal(mail.from, "app@example.com");
    assert.equal(mail.subject, "Welcome");
    assert.match(mail.text ?? "", /Hello a@example\.org, welcome aboard\./);
  });

  it("fails loudly when the mail server refuses it", async () => {
    inbox.failNext(); // the next message gets 451 4.3.0
    await assert.rejects(
      sendWelcome({ host: inbox.hostname, port: inbox.port }, "b@example.org"),
      (error: { responseCode?: number }) => error.responseCode === 451,
    );
  });
});
