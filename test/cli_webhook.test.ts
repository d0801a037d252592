// The CLI's --webhook: the flags in process, and the program as a child
// process under the same runtime as the tests, posting to a local HTTP
// endpoint (node:http on 127.0.0.1) while nodemailer sends.
import assert from "node:assert/strict";
import { createHmac, timingSafeEqual } from "node:crypto";
import * as fs from "node:fs/promises";
import { tmpdir } from "node:os";
import { Buffer } from "node:buffer";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import nodemailer from "nodemailer";
import { CliError, parseCliArgs, USAGE } from "../src/cli/args.ts";
import { postWebhook, type WebhookPayload } from "../src/webhook.ts";
import { type Listening, startListeningCli } from "./helpers/cli.ts";
import { type Endpoint, startEndpoint } from "./helpers/http.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

let tmp = "";
let counter = 0;
before(async () => {
  tmp = await fs.mkdtemp(`${tmpdir()}/smtpd-cli-webhook-test-`);
});
after(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

const MESSAGE = [
  "From: Alice <sender@example.org>",
  "To: Bob <rcpt@example.net>",
  "Subject: smtpd webhook test",
  "Message-ID: <webhook-test@example.org>",
  "MIME-Version: 1.0",
  "Content-Type: text/plain; charset=utf-8",
  "Content-Transfer-Encoding: 8bit",
  "",
  "Hello from the test.",
  ".A line that starts with a dot.",
  "Grüße",
  "",
].join("\r\n");

/** Sends MESSAGE (or `raw`); resolves to the final reply line (failures included). */
async function send(port: number, raw = MESSAGE): Promise<string> {
  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    port,
    secure: false,
    ignoreTLS: true,
    name: "client.example.com",
  });
  try {
    const info = await transport.sendMail({
      envelope: { from: "sender@example.org", to: ["rcpt@example.net"] },
      raw,
    });
    return info.response;
  } catch (error) {
    const e = error as { responseCode?: number; response?: string };
    if (e.responseCode === undefined) throw error;
    return e.response ?? String(e.responseCode);
  } finally {
    transport.close();
  }
}

async function listNew(maildir: string): Promise<string[]> {
  return await fs.readdir(`${maildir}/new`);
}

// ---------------------------------------------------------------------------

describe("cli: --webhook arguments", () => {
  it("reads --webhook, --webhook-timeout and --no-maildir", () => {
    const c = parseCliArgs([
      "--webhook",
      "https://example.org/inbound",
      "--webhook-timeout",
      "5000",
      "--no-maildir",
    ]);
    assert.equal(c.command, "serve");
    if (c.command !== "serve") return;
    assert.equal(c.options.webhook, "https://example.org/inbound");
    assert.equal(c.options.webhookTimeout, 5000);
    assert.equal(c.options.noMaildir, true);
  });

  it("defaults the timeout to 30000 and leaves the options alone without --webhook", () => {
    const c = parseCliArgs(["--webhook", "http://127.0.0.1:8080/"]);
    assert.ok(c.command === "serve");
    assert.equal(c.options.webhookTimeout, 30000);
    assert.equal(c.options.noMaildir, undefined);
    const plain = parseCliArgs([]);
    assert.ok(plain.command === "serve");
    assert.ok(!("webhook" in plain.options));
    assert.ok(!("webhookTimeout" in plain.options));
    assert.ok(!("noMaildir" in plain.options));
  });

  it("refuses what cannot work, naming the flag", () => {
    const cases: [string[], RegExp][] = [
      [["--webhook", "example.org/x"], /^--webhook: must be an http/],
      [["--webhook", "ftp://example.org/"], /^--webhook: must be an http/],
      [["--webhook"], /^--webhook: needs a value/],
      [["--webhook-timeout", "100"], /^--webhook-timeout: needs --webhook/],
      [
        ["--webhook", "http://h/", "--webhook-timeout", "0"],
        /^--webhook-timeout: must be a time from 1ms to 10m such as 500ms, 30s, 5m or 1h \(a bare number is in milliseconds\)/,
      ],
      [
        ["--webhook", "http://h/", "--webhook-timeout", "1d"],
        /^--webhook-timeout: must be a time/,
      ],
      [["--no-maildir"], /^--no-maildir: needs --webhook/],
      [
        ["--webhook", "http://h/", "--no-maildir", "--maildir", "x"],
        /^--no-maildir: cannot be used with --maildir/,
      ],
      [
        ["--webhook", "http://h/", "--lmtp"],
        /^--webhook: cannot be used with --lmtp/,
      ],
    ];
    for (const [argv, re] of cases) {
      assert.throws(() => parseCliArgs(argv), (error: unknown) => {
        assert.ok(error instanceof CliError, String(error));
        assert.match(error.message, re, argv.join(" "));
        return true;
      });
    }
  });

  it("reads --webhook-header (repeated) and --webhook-secret-file", () => {
    const c = parseCliArgs([
      "--webhook",
      "https://example.org/inbound",
      "--webhook-header",
      "X-Api-Key:  k-123 ",
      "--webhook-header",
      "Authorization: Bearer b-456",
      "--webhook-secret-file",
      "/run/secrets/hook",
    ]);
    assert.ok(c.command === "serve");
    assert.deepEqual(c.options.webhookHeaders, {
      "X-Api-Key": "k-123",
      Authorization: "Bearer b-456",
    });
    assert.equal(c.options.webhookSecretFile, "/run/secrets/hook");
  });

  it("refuses header and secret mistakes without repeating a value", () => {
    const hook = ["--webhook", "http://h/"];
    const cases: [string[], RegExp][] = [
      [["--webhook-header", "X-A: v"], /^--webhook-header: needs --webhook/],
      [["--webhook-secret-file", "f"], /^--webhook-secret-file: needs --/],
      [[...hook, "--webhook-secret-file", ""], /: must name a file/],
      [[...hook, "--webhook-header", "no colon sEcReT"], /"Name: value"/],
      [
        [...hook, "--webhook-header", "Bad Name: sEcReT"],
        /"Bad Name" is not a header name/,
      ],
      [[...hook, "--webhook-header", ": sEcReT"], /"Name: value"/],
      [[...hook, "--webhook-header", "X-A:"], /X-A needs a value/],
      [
        [...hook, "--webhook-header", "X-A: sEcReT \u20ac"],
        /the value of X-A is not one line of text/,
      ],
      [
        [...hook, "--webhook-header", "Content-Type: sEcReT"],
        /Content-Type is set by smtpd/,
      ],
      [
        [
          ...hook,
          "--webhook-header",
          "X-A: sEcReT",
          "--webhook-header",
          "x-a: b",
        ],
        /x-a is given twice/,
      ],
      [
        [
          "--webhook",
          "http://u:sEcReT@h/",
          "--webhook-header",
          "Authorization: Bearer x",
        ],
        /^--webhook-header: Authorization is set by the URL's user name in --webhook/,
      ],
      [["--webhook", "http://u:sEcReT@[bad/"], /^--webhook: must be an http/],
      [["--webhook", "ftp://u:sEcReT@h/"], /^--webhook: .* not ftp:$/],
    ];
    for (const [argv, re] of cases) {
      assert.throws(() => parseCliArgs(argv), (error: unknown) => {
        assert.ok(error instanceof CliError, String(error));
        assert.match(error.message, re, argv.join(" "));
        assert.ok(!error.message.includes("sEcReT"), error.message);
        return true;
      });
    }
  });

  it("refuses exactly the headers postWebhook refuses (its own checks)", async () => {
    // [--webhook, --webhook-header]: the CLI's verdict must be the
    // library's (a post with a fetch that answers 204 at once).
    const cases: [string, string][] = [
      ["http://127.0.0.1/in", "X-Team: mail"],
      ["http://127.0.0.1/in", "Bad Name: x"],
      ["http://127.0.0.1/in", "Host: example.org"],
      ["http://127.0.0.1/in", "X-A: caf\u00e9"],
      ["http://127.0.0.1/in", "X-A: \u20ac"],
      ["http://u:p@127.0.0.1/in", "Authorization: Bearer x"],
      ["http://u@127.0.0.1/in", "authorization: Bearer x"],
      // An empty user name sends no Basic auth: the header is the one.
      ["http://@127.0.0.1/in", "Authorization: Bearer x"],
      ["http://:@127.0.0.1/in", "Authorization: Bearer x"],
    ];
    const payload = {} as WebhookPayload;
    for (const [url, header] of cases) {
      let cli: string | null = null;
      try {
        parseCliArgs(["--webhook", url, "--webhook-header", header]);
      } catch (error) {
        assert.ok(error instanceof CliError, String(error));
        cli = error.message;
      }
      const colon = header.indexOf(":");
      let library: string | null = null;
      try {
        await postWebhook(url, payload, {
          headers: {
            [header.slice(0, colon)]: header.slice(colon + 1).trim(),
          },
          fetch: () => Promise.resolve(new Response(null, { status: 204 })),
        });
      } catch (error) {
        assert.ok(error instanceof TypeError, String(error));
        library = error.message;
      }
      assert.equal(
        cli !== null,
        library !== null,
        `${url} ${header}: CLI ${cli}, library ${library}`,
      );
    }
  });

  it("documents the flags in --help", () => {
    for (
      const line of [
        "\n  --webhook URL          post each message as JSON",
        "\n  --webhook-timeout TIME how long to wait for the webhook's answer",
        "\n  --no-maildir           store nothing (needs --webhook)",
        '\n  --webhook-header "NAME: VALUE"\n',
        "\n  --webhook-secret-file FILE\n",
      ]
    ) assert.ok(USAGE.includes(line), line);
  });
});

describe("cli: --webhook", () => {
  let endpoint: Endpoint;
  let cli: Listening;
  let maildir = "";
  before(async () => {
    endpoint = await startEndpoint();
    maildir = `${tmp}/md${++counter}`;
    cli = await startListeningCli([
      "--maildir",
      maildir,
      "--webhook",
      endpoint.url,
      "--webhook-timeout",
      "1000",
    ]);
  });
  after(async () => {
    if (cli) assert.equal((await cli.stop()).code, 0);
    await endpoint?.close();
  });

  it("says where it delivers in the listening line", () => {
    assert.match(
      cli.output(),
      new RegExp(
        `listening on .*, Maildir ${maildir}, webhook ${endpoint.url}\\n`,
      ),
    );
  });

  it("2xx: answers 250, posts the message as JSON, keeps the Maildir file", async () => {
    endpoint.status = 200;
    endpoint.requests.length = 0;
    const reply = await send(cli.port);
    assert.match(reply, /^250 /);
    assert.equal(endpoint.requests.length, 1);
    const { headers, body } = endpoint.requests[0];
    assert.equal(headers["content-type"], "application/json");
    const p = JSON.parse(body) as WebhookPayload;
    assert.equal(p.envelope.from, "sender@example.org");
    assert.deepEqual(p.envelope.to, ["rcpt@example.net"]);
    assert.equal(p.envelope.remoteAddress, "127.0.0.1");
    assert.equal(p.envelope.heloName, "client.example.com");
    assert.equal(p.subject, "smtpd webhook test");
    assert.equal(p.messageId, "<webhook-test@example.org>");
    assert.deepEqual(p.from, { name: "Alice", address: "sender@example.org" });
    assert.match(
      p.text ?? "",
      /^Hello from the test\.\n\.A line that starts with a dot\.\nGrüße/,
    );
    assert.equal(p.html, null);
    assert.deepEqual(p.attachments, []);
    const raw = Uint8Array.from(atob(p.raw), (c) => c.charCodeAt(0));
    assert.equal(new TextDecoder().decode(raw), MESSAGE);
    assert.equal(p.size, raw.byteLength);
    // The Maildir file is there too, and the payload says where.
    const files = await listNew(maildir);
    assert.equal(files.length, 1);
    assert.equal(p.file, `${maildir}/new/${files[0]}`);
    const stored = await fs.readFile(p.file!, "utf8");
    assert.ok(stored.endsWith(MESSAGE));
    await cli.waitFor(/message id=\S+ .* file=\S+ webhook=200\n/);
  });

  it("500: answers 451 4.3.0 and takes the Maildir file back", async () => {
    endpoint.status = 500;
    endpoint.requests.length = 0;
    const before = await listNew(maildir);
    const reply = await send(cli.port);
    endpoint.status = 200;
    assert.match(reply, /^451 4\.3\.0 /);
    assert.equal(endpoint.requests.length, 1);
    assert.deepEqual(await listNew(maildir), before);
    assert.deepEqual(await fs.readdir(`${maildir}/tmp`), []);
    await cli.waitFor(
      /delivery failed id=\S+ from=<sender@example\.org>: Cannot post webhook: endpoint answered 500 \(replied 451 4\.3\.0 /,
    );
  });

  it("the file waits in tmp/ while the post is pending, enters new/ after the 2xx", async () => {
    endpoint.status = 200;
    endpoint.requests.length = 0;
    const before = await listNew(maildir);
    let pending: { new: string[]; tmp: string[] } | null = null;
    endpoint.hold = async () => {
      pending = {
        new: await listNew(maildir),
        tmp: await fs.readdir(`${maildir}/tmp`),
      };
    };
    try {
      assert.match(await send(cli.port), /^250 /);
    } finally {
      endpoint.hold = null;
    }
    assert.ok(pending !== null);
    const seen = pending as { new: string[]; tmp: string[] };
    assert.deepEqual(seen.new, before);
    assert.equal(seen.tmp.length, 1);
    const after = await listNew(maildir);
    assert.deepEqual(after.filter((n) => !before.includes(n)), seen.tmp);
    assert.deepEqual(await fs.readdir(`${maildir}/tmp`), []);
    // The payload names the file as it is once the message is taken.
    const p = JSON.parse(endpoint.requests[0].body) as WebhookPayload;
    assert.equal(p.file, `${maildir}/new/${seen.tmp[0]}`);
  });

  for (const status of [301, 302, 303, 307, 308]) {
    it(`a redirect (${status}) is a failure: 451 4.3.0, nothing in new/ or tmp/`, async () => {
      endpoint.status = status;
      endpoint.headers = { location: "/landed" };
      endpoint.requests.length = 0;
      const before = await listNew(maildir);
      let reply;
      try {
        reply = await send(cli.port);
      } finally {
        endpoint.status = 200;
        endpoint.headers = {};
      }
      assert.match(reply, /^451 4\.3\.0 /);
      assert.deepEqual(
        endpoint.requests.map((r) => `${r.method} ${r.url}`),
        ["POST /inbound"],
      );
      assert.deepEqual(await listNew(maildir), before);
      assert.deepEqual(await fs.readdir(`${maildir}/tmp`), []);
      await cli.waitFor(
        new RegExp(`endpoint answered ${status}, a redirect to \\S+/landed`),
      );
    });
  }

  it("no answer within --webhook-timeout: 451 4.3.0, nothing kept", async () => {
    endpoint.status = 200;
    endpoint.delay = 3000;
    const before = await listNew(maildir);
    const reply = await send(cli.port);
    endpoint.delay = 0;
    assert.match(reply, /^451 4\.3\.0 /);
    assert.deepEqual(await listNew(maildir), before);
    assert.deepEqual(await fs.readdir(`${maildir}/tmp`), []);
    await cli.waitFor(/no answer within 1000 ms/);
  });
});

describe("cli: --webhook --no-maildir", () => {
  it("posts only, creates no Maildir; 451 when the endpoint is down", async () => {
    const endpoint = await startEndpoint();
    const cwdMaildir = `${ROOT}maildir`;
    const existed = await fs.stat(cwdMaildir).then(() => true, () => false);
    const cli = await startListeningCli([
      "--webhook",
      endpoint.url,
      "--no-maildir",
      "--log",
      "json",
    ]);
    try {
      const listening = JSON.parse(cli.output().split("\n")[0]);
      assert.equal(listening.webhook, endpoint.url);
      assert.equal(listening.maildir, undefined);
      assert.match(await send(cli.port), /^250 /);
      const p = JSON.parse(endpoint.requests[0].body) as WebhookPayload;
      assert.equal(p.file, undefined);
      assert.equal(p.subject, "smtpd webhook test");
      const line = await cli.waitFor(/\{[^\n]*"event":"message"[^\n]*\}/);
      const entry = JSON.parse(line[0]);
      assert.equal(entry.webhook, 200);
      assert.equal(entry.file, undefined);
      if (!existed) {
        assert.equal(
          await fs.stat(cwdMaildir).then(() => true, () => false),
          false,
        );
      }
      await endpoint.close(); // now nobody answers
      assert.match(await send(cli.port), /^451 4\.3\.0 /);
    } finally {
      assert.equal((await cli.stop()).code, 0);
      await endpoint.close();
    }
  });
});

describe("cli: webhook authentication", () => {
  const PASSWORD = "pw-secret-7c1e";
  const TOKEN = "token-secret-a93b";
  const HEADER = "key-secret-52d0";
  const SECRET = "hmac-secret-e8f4";

  /** The receiver's check of X-Smtpd-Signature, with its own HMAC. */
  const verify = (
    request: Endpoint["requests"][number],
    secret: string,
  ): boolean => {
    const timestamp = String(request.headers["x-smtpd-timestamp"]);
    if (Math.abs(Date.now() / 1000 - Number(timestamp)) > 300) return false;
    const expected = Buffer.from(
      "v1=" +
        createHmac("sha256", secret).update(`${timestamp}.${request.body}`)
          .digest("hex"),
    );
    const given = Buffer.from(String(request.headers["x-smtpd-signature"]));
    return given.length === expected.length &&
      timingSafeEqual(given, expected);
  };

  it("Basic auth, a header and a signature arrive; no secret in any log line", async () => {
    const endpoint = await startEndpoint();
    const secretFile = `${tmp}/secret${++counter}`;
    await fs.writeFile(secretFile, `${SECRET}\n`, { mode: 0o600 });
    const url = new URL(endpoint.url);
    url.username = "hookuser";
    url.password = PASSWORD;
    url.search = `?token=${TOKEN}`;
    const maildir = `${tmp}/md${++counter}`;
    const cli = await startListeningCli([
      "--maildir",
      maildir,
      "--webhook",
      url.href,
      "--webhook-timeout",
      "1000",
      "--webhook-header",
      `X-Api-Key: ${HEADER}`,
      "--webhook-secret-file",
      secretFile,
    ]);
    try {
      assert.match(await send(cli.port), /^250 /);
      const [request] = endpoint.requests;
      assert.equal(request.url, `/inbound?token=${TOKEN}`);
      assert.equal(
        request.headers.authorization,
        `Basic ${btoa(`hookuser:${PASSWORD}`)}`,
      );
      assert.equal(request.headers["x-api-key"], HEADER);
      assert.ok(verify(request, SECRET), "signature verifies");
      assert.ok(!verify(request, "another secret"));
      // Failures of every kind, each logged.
      endpoint.status = 500;
      assert.match(await send(cli.port), /^451 4\.3\.0 /);
      endpoint.status = 302;
      endpoint.headers = { location: `/elsewhere?token=${TOKEN}` };
      assert.match(await send(cli.port), /^451 4\.3\.0 /);
      endpoint.status = 200;
      endpoint.headers = {};
      endpoint.delay = 2000;
      assert.match(await send(cli.port), /^451 4\.3\.0 /);
      endpoint.delay = 0;
      await endpoint.close();
      assert.match(await send(cli.port), /^451 4\.3\.0 /);
      await cli.waitFor(/(delivery failed[^\n]*\n[^]*){4}/);
    } finally {
      assert.equal((await cli.stop()).code, 0);
      await endpoint.close();
    }
    const out = cli.output();
    assert.match(out, new RegExp(`webhook ${endpoint.url}\\n`));
    for (const secret of [PASSWORD, TOKEN, HEADER, SECRET]) {
      assert.ok(!out.includes(secret), `${secret} in:\n${out}`);
    }
  });

  it(`takes the secret from $SMTPD_WEBHOOK_SECRET; --no-maildir`, async () => {
    const endpoint = await startEndpoint();
    const cli = await startListeningCli(
      ["--webhook", endpoint.url, "--no-maildir"],
      { env: { SMTPD_WEBHOOK_SECRET: SECRET } },
    );
    try {
      assert.match(await send(cli.port), /^250 /);
      assert.ok(verify(endpoint.requests[0], SECRET), "signature verifies");
    } finally {
      assert.equal((await cli.stop()).code, 0);
      await endpoint.close();
    }
  });

  it("refuses an empty or unreadable secret file before listening", async () => {
    const empty = `${tmp}/empty${++counter}`;
    await fs.writeFile(empty, "\n");
    for (
      const [file, re] of [
        [empty, /--webhook-secret-file: \S+ must hold the secret on one line/],
        [`${tmp}/missing`, /--webhook-secret-file: cannot read \S+: no such/],
      ] as const
    ) {
      await assert.rejects(
        startListeningCli([
          "--webhook",
          "http://127.0.0.1:9/",
          "--no-maildir",
          "--webhook-secret-file",
          file,
        ]),
        (error: Error) => {
          assert.match(error.message, re);
          return true;
        },
      );
    }
  });
});

describe("cli: webhook durability under SIGKILL", () => {
  // Clients send without pause while the server is killed (SIGKILL) at
  // random moments and started again on the same Maildir; the endpoint is
  // slow, refuses one post in five and redirects one in seven. Afterwards: every message that got
  // 250 was taken by the endpoint (a 2xx) and is in new/, no message that
  // got 451 is in new/, and new/ holds only messages the endpoint took.
  for (const mode of ["maildir", "no-maildir"] as const) {
    it(`${mode}: every 250 is stored, no 451 is in new/`, async () => {
      const endpoint = await startEndpoint();
      const maildir = `${tmp}/md${++counter}`;
      let posts = 0;
      const taken = new Set<string | null>(); // answered 2xx
      // A redirect's landing page answers 200 too, to a GET without the message.
      endpoint.headers = { location: "/landed" };
      endpoint.hold = async (request) => {
        if (request.method !== "POST") return 200;
        await new Promise((r) => setTimeout(r, Math.random() * 40));
        if (++posts % 5 === 0) return 500;
        if (posts % 7 === 0) return 302;
        taken.add((JSON.parse(request.body) as WebhookPayload).subject);
        return 200;
      };
      const args = [
        "--webhook",
        endpoint.url,
        "--webhook-timeout",
        "2000",
        ...(mode === "maildir" ? ["--maildir", maildir] : ["--no-maildir"]),
      ];
      const replies = new Map<string, string>();
      let cli = await startListeningCli(args);
      let stop = false;
      let n = 0;
      const client = async () => {
        while (!stop) {
          const tag = `d${++n}`;
          const raw = MESSAGE.replace(
            "Subject: smtpd webhook test",
            `Subject: ${tag}`,
          );
          try {
            replies.set(tag, await send(cli.port, raw));
          } catch {
            replies.set(tag, "dropped"); // no reply: a sender retries
            await new Promise((r) => setTimeout(r, 20));
          }
        }
      };
      const clients = [client(), client(), client()];
      try {
        for (let round = 0; round < 2; round++) {
          await new Promise((r) => setTimeout(r, 150 + Math.random() * 350));
          await cli.stop("SIGKILL");
          cli = await startListeningCli(args);
        }
        await new Promise((r) => setTimeout(r, 200));
      } finally {
        stop = true;
        await Promise.all(clients);
        assert.equal((await cli.stop()).code, 0);
        await endpoint.close();
      }
      const stored = new Set<string>();
      if (mode === "maildir") {
        for (const name of await listNew(maildir)) {
          const text = await fs.readFile(`${maildir}/new/${name}`, "utf8");
          stored.add(/^Subject: (\S+)/m.exec(text)![1]);
        }
      }
      const acked = [...replies].filter(([, r]) => r.startsWith("250"));
      const refused = [...replies].filter(([, r]) => r.startsWith("451"));
      assert.ok(acked.length > 0 && refused.length > 0, `${[...replies]}`);
      for (const [tag] of acked) {
        assert.ok(taken.has(tag), `${tag} got 250, the endpoint never took it`);
        if (mode === "maildir") {
          assert.ok(stored.has(tag), `${tag} got 250, not in new/`);
        }
      }
      for (const [tag] of refused) {
        assert.ok(!stored.has(tag), `${tag} got 451, is in new/`);
      }
      for (const tag of stored) {
        assert.ok(taken.has(tag), `${tag} in new/, the endpoint never took it`);
      }
    });
  }
});
