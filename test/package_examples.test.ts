// The files in examples/ run as they stand, so that they cannot rot: each
// is started as a child process under the runtime that runs these tests
// (the per-runtime minimal receivers only under their own runtime), fed a
// message with nodemailer, and checked by its effect. verify_auth.ts is
// imported (its startVerifier takes the DNS resolver the test needs) and
// fed messages DKIM-signed here with a fresh RSA key.
import assert from "node:assert/strict";
import { createHmac, generateKeyPairSync } from "node:crypto";
import process from "node:process";
import { after, before, describe, it } from "node:test";
import { dkimSign } from "mailauth";
import nodemailer from "nodemailer";
import { startVerifier, type Verdict } from "../examples/verify_auth.ts";
import type { WebhookPayload } from "../src/webhook.ts";
import type { Message, Server } from "../mod.ts";
import {
  type Listening,
  listening,
  startProgram,
  startTs,
} from "./helpers/cli.ts";
import { type Endpoint, startEndpoint } from "./helpers/http.ts";
import { RUNTIME } from "./helpers/run.ts";

/** Starts examples/<file> and resolves once it prints its listening line. */
function startExample(
  file: string,
  args: string[] = [],
  env: Record<string, string> = {},
): Promise<Listening> {
  return listening(startTs(`examples/${file}`, args, { env }));
}

interface SmtpFailure {
  responseCode?: number;
  response?: string;
}

/** Sends one message with nodemailer; resolves to its final reply line. */
async function send(
  port: number,
  mail: {
    from: string;
    to: string[];
    raw?: string;
    subject?: string;
    text?: string;
    html?: string;
    attachments?: { filename: string; content: string }[];
  },
): Promise<string> {
  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    port,
    secure: false,
    ignoreTLS: true,
    name: "client.example.com",
  });
  try {
    const envelope = { from: mail.from, to: mail.to };
    const info = mail.raw !== undefined
      ? await transport.sendMail({ envelope, raw: mail.raw })
      : await transport.sendMail({
        envelope,
        from: `Alice <${mail.from}>`,
        to: mail.to.join(", "),
        subject: mail.subject,
        text: mail.text,
        html: mail.html,
        attachments: mail.attachments,
      });
    return info.response;
  } catch (error) {
    const e = error as SmtpFailure;
    if (e.responseCode === undefined) throw error;
    return e.response ?? String(e.responseCode);
  } finally {
    transport.close();
  }
}

// ---------------------------------------------------------------------------

describe("examples: minimal receivers", () => {
  for (const runtime of ["node", "deno", "bun"] as const) {
    const file = `minimal_${runtime}.ts`;
    it(`${file} prints one line per message and stops on SIGINT (runs under ${runtime} only)`, async (t) => {
      if (RUNTIME !== runtime) return t.skip(`runs under ${runtime} only`);
      const ex = await startExample(file, ["0"]);
      const reply = await send(ex.port, {
        from: "alice@example.com",
        to: ["bob@example.org", "carol@example.org"],
        subject: "Hello from the test",
        text: "Hi",
      });
      assert.match(reply, /^250 /);
      const line = await ex.waitFor(/^message .*$/m);
      assert.match(
        line[0],
        /^message from=<alice@example\.com> to=<bob@example\.org>,<carol@example\.org> subject="Hello from the test" size=\d+$/,
      );
      assert.equal((await ex.stop("SIGINT")).code, 0);
      assert.match(ex.output(), /\nstopped\n/);
    });

    it(`${file} takes the port from $PORT and stops on SIGTERM (runs under ${runtime} only)`, async (t) => {
      if (RUNTIME !== runtime) return t.skip(`runs under ${runtime} only`);
      const ex = await startExample(file, [], { PORT: "0" });
      assert.ok(ex.port > 0 && ex.port !== 2525);
      assert.equal((await ex.stop("SIGTERM")).code, 0, ex.output());
      assert.match(ex.output(), /\nstopped\n/);
    });
  }
});

// ---------------------------------------------------------------------------

describe("examples: webhook.ts", () => {
  let endpoint: Endpoint;
  let ex: Listening;
  before(async () => {
    endpoint = await startEndpoint();
    ex = await startExample("webhook.ts", [endpoint.url], {
      PORT: "0",
      WEBHOOK_TIMEOUT: "1000",
    });
  });
  after(async () => {
    if (ex) assert.equal((await ex.stop("SIGTERM")).code, 0);
    await endpoint?.close();
  });

  it("answers 250 after the endpoint's 2xx, with the message as JSON", async () => {
    endpoint.status = 202;
    endpoint.delay = 0;
    endpoint.requests.length = 0;
    const reply = await send(ex.port, {
      from: "alice@example.com",
      to: ["bob@example.org"],
      subject: "Webhook test",
      text: "Plain text body",
      html: "<p>HTML body</p>",
      attachments: [{ filename: "notes.txt", content: "twelve bytes" }],
    });
    assert.match(reply, /^250 /);
    assert.equal(endpoint.requests.length, 1);
    const { headers, body } = endpoint.requests[0];
    assert.equal(headers["content-type"], "application/json");
    const p = JSON.parse(body) as WebhookPayload;
    assert.equal(typeof p.id, "string");
    assert.ok(!Number.isNaN(Date.parse(p.receivedAt)));
    assert.deepEqual(p.envelope, {
      from: "alice@example.com",
      to: ["bob@example.org"],
      remoteAddress: "127.0.0.1",
      remotePort: p.envelope.remotePort,
      heloName: "client.example.com",
      secure: false,
      user: null,
    });
    assert.ok(p.envelope.remotePort > 0);
    assert.equal(p.subject, "Webhook test");
    assert.deepEqual(p.from, { name: "Alice", address: "alice@example.com" });
    assert.deepEqual(p.to, [{ name: "", address: "bob@example.org" }]);
    assert.equal(p.text?.trim(), "Plain text body");
    assert.equal(p.html?.trim(), "<p>HTML body</p>");
    assert.deepEqual(p.attachments, [{
      filename: "notes.txt",
      contentType: "text/plain",
      size: 12,
      disposition: "attachment",
      contentId: null,
    }]);
    assert.ok(
      p.headers.some((h) => h.name === "subject" && h.value === "Webhook test"),
    );
    const raw = Uint8Array.from(atob(p.raw), (c) => c.charCodeAt(0));
    assert.equal(raw.byteLength, p.size);
    assert.match(
      new TextDecoder().decode(raw),
      /\r\nSubject: Webhook test\r\n/,
    );
    await ex.waitFor(/posted: HTTP 202/);
  });

  it("answers 451 4.3.0 when the endpoint answers 500", async () => {
    endpoint.status = 500;
    endpoint.delay = 0;
    endpoint.requests.length = 0;
    const reply = await send(ex.port, {
      from: "alice@example.com",
      to: ["bob@example.org"],
      subject: "Refused",
      text: "x",
    });
    assert.match(reply, /^451 4\.3\.0 /);
    assert.equal(endpoint.requests.length, 1);
    await ex.waitFor(
      /not posted \(Error: Cannot post webhook: endpoint answered 500\)/,
    );
  });

  it("answers 451 4.3.0 when the endpoint does not answer in time", async () => {
    endpoint.status = 200;
    endpoint.delay = 3000;
    const reply = await send(ex.port, {
      from: "alice@example.com",
      to: ["bob@example.org"],
      subject: "Slow",
      text: "x",
    });
    endpoint.delay = 0;
    assert.match(reply, /^451 4\.3\.0 /);
    await ex.waitFor(/no answer within 1000 ms/);
  });

  it("sends the URL's password as Basic auth and signs with $WEBHOOK_SECRET", async () => {
    const url = new URL(endpoint.url);
    url.username = "hook";
    url.password = "pw-example-1";
    const ex2 = await startExample("webhook.ts", [url.href], {
      PORT: "0",
      WEBHOOK_SECRET: "example-secret",
    });
    try {
      endpoint.status = 200;
      endpoint.delay = 0;
      endpoint.requests.length = 0;
      const reply = await send(ex2.port, {
        from: "alice@example.com",
        to: ["bob@example.org"],
        subject: "Signed",
        text: "x",
      });
      assert.match(reply, /^250 /);
      const { headers, body } = endpoint.requests[0];
      assert.equal(headers.authorization, `Basic ${btoa("hook:pw-example-1")}`);
      const timestamp = String(headers["x-smtpd-timestamp"]);
      assert.equal(
        headers["x-smtpd-signature"],
        "v1=" + createHmac("sha256", "example-secret")
          .update(`${timestamp}.${body}`).digest("hex"),
      );
    } finally {
      assert.equal((await ex2.stop("SIGINT")).code, 0);
    }
  });

  it("answers 451 4.3.0 when the endpoint is down", async () => {
    const down = await startEndpoint();
    await down.close(); // a port nobody listens on now
    const ex2 = await startExample("webhook.ts", [], {
      PORT: "0",
      WEBHOOK_URL: down.url,
    });
    try {
      const reply = await send(ex2.port, {
        from: "alice@example.com",
        to: ["bob@example.org"],
        subject: "Nobody there",
        text: "x",
      });
      assert.match(reply, /^451 4\.3\.0 /);
    } finally {
      assert.equal((await ex2.stop("SIGINT")).code, 0);
    }
  });
});

// ---------------------------------------------------------------------------

describe("examples: verify_auth.ts (SPF, DKIM, DMARC with mailauth)", () => {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", {
    modulusLength: 2048,
  });
  const privatePem = privateKey.export({ type: "pkcs1", format: "pem" })
    .toString();
  const publicB64 = publicKey.export({ type: "spki", format: "der" })
    .toString("base64");
  const records: Record<string, string[][]> = {
    "TXT sel._domainkey.example.com": [[`v=DKIM1; k=rsa; p=${publicB64}`]],
    "TXT example.com": [["v=spf1 ip4:127.0.0.1 -all"]],
    "TXT _dmarc.example.com": [["v=DMARC1; p=reject"]],
    // Another domain whose SPF lets 127.0.0.1 send, but does not align with From.
    "TXT other.example": [["v=spf1 ip4:127.0.0.1 -all"]],
  };
  const lookups: string[] = [];
  const resolver = (name: string, rrtype: string): Promise<string[][]> => {
    lookups.push(`${rrtype} ${name}`);
    const found = records[`${rrtype} ${name.toLowerCase()}`];
    if (found) return Promise.resolve(found);
    const error = Object.assign(new Error(`no ${rrtype} for ${name}`), {
      code: "ENOTFOUND",
    });
    return Promise.reject(error);
  };

  const MESSAGE = [
    "From: Alice <alice@example.com>",
    "To: Bob <bob@example.org>",
    "Subject: Signed",
    "Date: Mon, 01 Jan 2024 00:00:00 +0000",
    "Message-ID: <signed@example.com>",
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=utf-8",
    "",
    "A signed message.",
    "",
  ].join("\r\n");

  async function signed(): Promise<string> {
    // mailauth 4.13 signs what `signatureData` lists; its index.d.ts
    // types the options as one signature (which signs nothing).
    // signTime given: without it mailauth 4.13 computes the signature's
    // t= twice, as Math.round(Date.now() / 1000), once for what it signs
    // and once for the header it writes, and when a half second passes
    // between the two (about 1 in 750 signatures here) the header it
    // writes is not the one it signed: "bad signature".
    const options = {
      canonicalization: "relaxed/relaxed",
      signTime: new Date(),
      signatureData: [{
        signingDomain: "example.com",
        selector: "sel",
        privateKey: privatePem,
      }],
    };
    const { signatures, errors } = await dkimSign(
      MESSAGE,
      options as unknown as Parameters<typeof dkimSign>[1],
    );
    assert.deepEqual(errors, []);
    assert.match(
      signatures,
      /^DKIM-Signature: v=1; a=rsa-sha256; c=relaxed\/relaxed; d=example\.com;/,
    );
    return signatures + MESSAGE;
  }

  const verdicts: Verdict[] = [];
  const delivered: string[] = [];
  let server: Server;
  let lenient: Server;
  before(async () => {
    const common = {
      port: 0,
      serverName: "mx.example.org",
      resolver,
      onVerdict: (_m: Message, v: Verdict) => void verdicts.push(v),
      deliver: (_m: Message, authenticated: Uint8Array) =>
        void delivered.push(new TextDecoder().decode(authenticated)),
    };
    server = await startVerifier(common);
    lenient = await startVerifier({ ...common, rejectDmarc: false });
  });
  after(async () => {
    await server?.close();
    await lenient?.close();
  });

  it("a message signed by the From domain, sent from an SPF-listed IP: dkim, spf and dmarc pass", async () => {
    verdicts.length = 0;
    delivered.length = 0;
    const raw = await signed();
    const reply = await send(server.addr.port, {
      from: "alice@example.com",
      to: ["bob@example.org"],
      raw,
    });
    assert.match(reply, /^250 /);
    // The verifier had the message as sent, byte for byte (then what it
    // said about it, with its own reasons when it is not a pass).
    assert.equal(delivered.length, 1);
    assert.ok(
      delivered[0].endsWith(raw),
      `delivered:\n${delivered[0]}\nsent:\n${raw}`,
    );
    assert.deepEqual(
      [...verdicts],
      [{
        dkim: "pass",
        spf: "pass",
        dmarc: "pass",
        policy: "reject",
        domain: "example.com",
        rejected: false,
      }],
      `what the verifier added: ${
        delivered[0].slice(0, delivered[0].length - raw.length)
      }`,
    );
    // The resolver the test gave was asked (no real DNS).
    assert.ok(lookups.includes("TXT sel._domainkey.example.com"));
    assert.ok(lookups.includes("TXT _dmarc.example.com"));
    assert.equal(delivered.length, 1);
    const head = delivered[0].slice(0, delivered[0].indexOf("\r\nFrom: "));
    assert.match(head, /^Received-SPF: pass \(mx\.example\.org: /);
    assert.match(head, /\r\nAuthentication-Results: mx\.example\.org;/);
    assert.match(head, /\bdkim=pass header\.i=@example\.com header\.s=sel\b/);
    assert.match(head, /\bspf=pass .*smtp\.mailfrom=alice@example\.com/);
    assert.match(head, /\bdmarc=pass \(p=REJECT/);
    assert.ok(delivered[0].endsWith(await signed().then((s) => s.slice(-40))));
  });

  it("a tampered body from an unaligned sender: dkim neutral (body hash), dmarc fail, 550 5.7.1 under p=reject", async () => {
    verdicts.length = 0;
    delivered.length = 0;
    const tampered = (await signed()).replace(
      "A signed message.",
      "A forged message.",
    );
    const reply = await send(server.addr.port, {
      from: "bounce@other.example",
      to: ["bob@example.org"],
      raw: tampered,
    });
    assert.match(
      reply,
      /^550 5\.7\.1 Message rejected: DMARC policy of example\.com/,
    );
    // mailauth reports a body hash mismatch as "neutral" (RFC 6376 leaves
    // the name to the verifier); a changed signed header gives "fail".
    assert.equal(verdicts.length, 1);
    assert.equal(verdicts[0].dkim, "neutral");
    assert.equal(verdicts[0].spf, "pass"); // other.example lets 127.0.0.1 send ...
    assert.equal(verdicts[0].dmarc, "fail"); // ... but does not align with From
    assert.equal(verdicts[0].rejected, true);
    assert.deepEqual(delivered, []);
  });

  it("a tampered signed header: dkim fail, dmarc fail, 550 5.7.1", async () => {
    verdicts.length = 0;
    const tampered = (await signed()).replace(
      "Subject: Signed",
      "Subject: Changed",
    );
    const reply = await send(server.addr.port, {
      from: "bounce@other.example",
      to: ["bob@example.org"],
      raw: tampered,
    });
    assert.match(reply, /^550 5\.7\.1 /);
    assert.equal(verdicts[0].dkim, "fail");
    assert.equal(verdicts[0].dmarc, "fail");
  });

  it("with rejectDmarc: false the same message is accepted and marked dmarc=fail", async () => {
    verdicts.length = 0;
    delivered.length = 0;
    const tampered = (await signed()).replace("Subject: Signed", "Subject: X");
    const reply = await send(lenient.addr.port, {
      from: "bounce@other.example",
      to: ["bob@example.org"],
      raw: tampered,
    });
    assert.match(reply, /^250 /);
    assert.equal(verdicts[0].dmarc, "fail");
    assert.equal(verdicts[0].rejected, false);
    assert.match(delivered[0], /\bdkim=fail\b/);
    assert.match(delivered[0], /\bdmarc=fail\b/);
  });
});

describe("examples: verify_auth.ts as a program", () => {
  it("starts from $PORT and stops on SIGTERM", async () => {
    const ex = await startExample("verify_auth.ts", [], { PORT: "0" });
    assert.ok(ex.port > 0);
    assert.equal((await ex.stop("SIGTERM")).code, 0, ex.output());
  });
});

describe("examples: test_inbox.ts", () => {
  it("passes under this runtime's own test runner", async () => {
    const file = "examples/test_inbox.ts";
    const [major, minor] = process.versions.node.split(".").map(Number);
    const args = RUNTIME === "deno"
      ? ["test", "-A", file]
      : RUNTIME === "bun"
      ? ["test", `./${file}`]
      : major > 23 || (major === 23 && minor >= 6)
      ? ["--test", file]
      : ["--import", "tsx", "--test", file];
    // Without NODE_TEST_CONTEXT: Node's runner, seeing it, would take the
    // child for one of its own files and run nothing.
    const child = startProgram(process.execPath, args, {
      env: { NODE_TEST_CONTEXT: undefined },
    });
    const result = { code: (await child.exited).code, out: child.output() };
    assert.equal(result.code, 0, result.out);
    // Both tests ran and passed, in the runner's own words.
    assert.match(
      // deno-lint-ignore no-control-regex
      result.out.replace(/\x1b\[[0-9;]*m/g, ""),
      /# pass 2|ℹ pass 2|\b2 pass\b|ok \| 1 passed \(2 steps\)/,
      result.out,
    );
  });
});
