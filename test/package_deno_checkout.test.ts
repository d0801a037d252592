// Deno from a checkout, as the README's Install section says: a Deno
// program outside the checkout that imports its mod.ts and src/testing.ts
// by path. The checkout's deno.json (its import map) does not apply to
// such a program, yet it type-checks (`deno test` checks by default) and
// parses messages through serve() (message.parse(), and src/webhook.ts)
// and through createTestInbox(). Runs from every runtime: the program runs
// under node_modules/.bin/deno in a temporary folder.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, sep } from "node:path";
import process from "node:process";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";

const ROOT = realpathSync(fileURLToPath(new URL("..", import.meta.url)));
const DENO = join(ROOT, "node_modules", ".bin", "deno");

/** The program: two Deno tests, one per way of receiving a message. */
function program(checkout: string): string {
  return `
import assert from "node:assert/strict";
import { serve } from "${checkout}/mod.ts";
import { createTestInbox } from "${checkout}/src/testing.ts";
import { webhookPayload } from "${checkout}/src/webhook.ts";

/** Sends one message over plain SMTP; resolves with the reply to the body. */
async function send(port: number, subject: string, text: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  const buffer = new Uint8Array(4096);
  let pending = "";
  const reply = async (): Promise<string> => {
    for (;;) {
      const last = /(?:^|\\r\\n)(\\d{3} [^\\r\\n]*)\\r\\n$/.exec(pending);
      if (last !== null) {
        pending = "";
        return last[1];
      }
      const n = await conn.read(buffer);
      if (n === null) throw new Error("Connection closed after: " + pending);
      pending += decoder.decode(buffer.subarray(0, n));
    }
  };
  const command = async (line: string): Promise<string> => {
    await conn.write(encoder.encode(line + "\\r\\n"));
    return reply();
  };
  try {
    assert.match(await reply(), /^220 /);
    assert.match(await command("EHLO deno.test"), /^250 /);
    assert.match(await command("MAIL FROM:<a@example.org>"), /^250 /);
    assert.match(await command("RCPT TO:<b@example.org>"), /^250 /);
    assert.match(await command("DATA"), /^354 /);
    const answer = await command(
      "From: a@example.org\\r\\nTo: b@example.org\\r\\nSubject: " + subject +
        "\\r\\n\\r\\n" + text + "\\r\\n.",
    );
    await command("QUIT");
    return answer;
  } finally {
    conn.close();
  }
}

Deno.test("serve(): message.parse() and webhookPayload() give the subject and the text", async () => {
  const parsed: { subject?: string | null; text?: string | null }[] = [];
  const server = await serve({
    hostname: "127.0.0.1",
    port: 0,
    async onMessage(message) {
      parsed.push(await message.parse());
      parsed.push(await webhookPayload(message, await message.bytes()));
    },
  });
  try {
    assert.match(await send(server.addr.port, "Via serve", "Body one"), /^250 /);
  } finally {
    await server.close();
  }
  assert.equal(parsed.length, 2);
  for (const email of parsed) {
    assert.equal(email.subject, "Via serve");
    assert.equal(email.text, "Body one\\n");
  }
});

Deno.test("createTestInbox(): the message arrives parsed", async () => {
  const inbox = await createTestInbox();
  try {
    assert.match(await send(inbox.port, "Via the inbox", "Body two"), /^250 /);
    const mail = await inbox.waitFor();
    assert.equal(mail.subject, "Via the inbox");
    assert.equal(mail.text, "Body two\\n");
  } finally {
    await inbox.close();
  }
});
`;
}

describe("Deno from a checkout", () => {
  it("a program outside the checkout that imports mod.ts and src/testing.ts by path type-checks and parses messages", async () => {
    const dir = realpathSync(mkdtempSync(join(tmpdir(), "smtpd-deno-")));
    try {
      assert.ok(!dir.startsWith(ROOT + sep), `${dir} is outside ${ROOT}`);
      // A relative path, as the README writes it ("../smtpd/mod.ts").
      const checkout = relative(dir, ROOT).split(sep).join("/");
      writeFileSync(join(dir, "app_test.ts"), program(checkout));
      // Plain output (FORCE_COLOR, even "0", makes Deno colour it).
      const env: Record<string, string | undefined> = {
        ...process.env,
        NO_COLOR: "1",
      };
      delete env.FORCE_COLOR;
      const { code, out } = await new Promise<{ code: number; out: string }>(
        (resolve) => {
          execFile(
            DENO,
            ["test", "--allow-net", "app_test.ts"],
            {
              cwd: dir,
              env,
              maxBuffer: 16 * 1024 * 1024,
            },
            (err, stdout, stderr) => {
              const code = err === null
                ? 0
                : typeof err.code === "number"
                ? err.code
                : -1;
              resolve({ code, out: `${stdout}\n${stderr}` });
            },
          );
        },
      );
      assert.equal(code, 0, out);
      assert.match(out, /ok \| 2 passed \| 0 failed/, out);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
