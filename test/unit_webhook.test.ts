// postWebhook against a local HTTP endpoint (node:http on 127.0.0.1): no
// redirect is followed, Basic auth from the URL, extra headers, the HMAC
// signature checked as a receiver would (with node:crypto, not with the
// code under test), and error texts that name none of the secrets.
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHmac, timingSafeEqual } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { after, before, describe, it } from "node:test";
import { SmtpError } from "../src/errors.ts";
import {
  postWebhook,
  type PostWebhookOptions,
  safeUrl,
  type WebhookPayload,
  webhookPayload,
  webhookSignature,
  webhookUrl,
} from "../src/webhook.ts";
import { type Endpoint, startEndpoint } from "./helpers/http.ts";

const PASSWORD = "pass-W0rd-secret";
const TOKEN = "token-value-secret";
const HEADER_VALUE = "Bearer header-secret-9f2c";
const SECRET = "hmac-shared-secret-41d7";

let payload: WebhookPayload;
let endpoint: Endpoint;
before(async () => {
  endpoint = await startEndpoint();
  payload = await webhookPayload(
    {
      id: "m1",
      from: "alice@example.com",
      to: ["bob@example.org"],
      session: {
        remoteAddress: "192.0.2.1",
        remotePort: 40000,
        heloName: "client.example.com",
        secure: false,
        user: null,
      },
    },
    new TextEncoder().encode("Subject: hi\r\n\r\nhello\r\n"),
  );
});
after(async () => {
  await endpoint?.close();
});

function reset(status = 200): void {
  endpoint.status = status;
  endpoint.headers = {};
  endpoint.delay = 0;
  endpoint.hold = null;
  endpoint.requests.length = 0;
}

/** Every text an error gives away: its message, its cause's, the stacks. */
function texts(error: unknown): string {
  const e = error as Error;
  const cause = e.cause as Error | undefined;
  return [
    String(e),
    e.stack,
    String(cause),
    cause?.stack,
    JSON.stringify(e),
  ].join("\n");
}

/** postWebhook's rejection, checked to be 451 4.3.0. */
async function failure(
  url: string,
  options?: PostWebhookOptions,
): Promise<SmtpError> {
  try {
    await postWebhook(url, payload, options);
  } catch (error) {
    assert.ok(error instanceof SmtpError, String(error));
    assert.equal(error.code, 451);
    assert.equal(error.enhancedCode, "4.3.0");
    return error;
  }
  assert.fail("postWebhook resolved");
}

describe("postWebhook: redirects", () => {
  for (const status of [301, 302, 303, 307, 308]) {
    it(`${status}: is a failure (451 4.3.0), and the redirect is not followed`, async () => {
      reset(status);
      endpoint.headers = { location: "/landed?x=1" };
      const error = await failure(endpoint.url);
      assert.deepEqual(
        endpoint.requests.map((r) => `${r.method} ${r.url}`),
        ["POST /inbound"],
      );
      assert.equal(
        (error.cause as Error).message,
        `Cannot post webhook: endpoint answered ${status}, a redirect to ${new URL(
          "/landed",
          endpoint.url,
        )} (redirects are not followed: give the final URL)`,
      );
    });
  }

  it("a fetch that followed a redirect anyway is a failure too", async () => {
    reset(200);
    const followed: typeof fetch = async (input, init) => {
      const response = await fetch(input, init);
      Object.defineProperty(response, "redirected", { value: true });
      return response;
    };
    const error = await failure(endpoint.url, { fetch: followed });
    assert.match((error.cause as Error).message, /redirect/);
  });
});

describe("postWebhook: authentication", () => {
  it("sends the URL's user name and password as Basic auth, not in the URL", async () => {
    reset(200);
    const url = new URL(endpoint.url);
    url.username = "hook%40user";
    url.password = `${PASSWORD}%C3%A4`;
    url.search = `?token=${TOKEN}`;
    assert.deepEqual(await postWebhook(url, payload), { status: 200 });
    assert.equal(endpoint.requests.length, 1);
    const { url: path, headers } = endpoint.requests[0];
    assert.equal(path, `/inbound?token=${TOKEN}`);
    const [scheme, encoded] = (headers.authorization ?? "").split(" ");
    assert.equal(scheme, "Basic");
    assert.equal(
      new TextDecoder().decode(
        Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0)),
      ),
      `hook@user:${PASSWORD}ä`,
    );
  });

  it("sends extra headers", async () => {
    reset(202);
    await postWebhook(endpoint.url, payload, {
      headers: { Authorization: HEADER_VALUE, "X-Tenant": "acme" },
    });
    const { headers } = endpoint.requests[0];
    assert.equal(headers.authorization, HEADER_VALUE);
    assert.equal(headers["x-tenant"], "acme");
    assert.equal(headers["content-type"], "application/json");
  });

  it("signs the body: the receiver's HMAC-SHA256 of timestamp.body matches", async () => {
    reset(200);
    const before = Math.floor(Date.now() / 1000);
    await postWebhook(endpoint.url, payload, { secret: SECRET });
    const after = Math.ceil(Date.now() / 1000);
    const { headers, body } = endpoint.requests[0];
    const timestamp = String(headers["x-smtpd-timestamp"]);
    assert.match(timestamp, /^\d+$/);
    assert.ok(Number(timestamp) >= before && Number(timestamp) <= after);
    // What a receiver does, with its own HMAC (node:crypto).
    const expected = "v1=" +
      createHmac("sha256", SECRET).update(`${timestamp}.${body}`).digest(
        "hex",
      );
    const given = String(headers["x-smtpd-signature"]);
    assert.equal(given.length, expected.length);
    assert.ok(timingSafeEqual(Buffer.from(given), Buffer.from(expected)));
    assert.equal(JSON.parse(body).id, "m1");
    // The exported helper computes the same, from a string or from bytes.
    assert.equal(await webhookSignature(SECRET, timestamp, body), expected);
    assert.equal(
      await webhookSignature(
        new TextEncoder().encode(SECRET),
        Number(timestamp),
        new TextEncoder().encode(body),
      ),
      expected,
    );
    // Another secret or body does not verify.
    assert.notEqual(await webhookSignature("other", timestamp, body), expected);
    assert.notEqual(
      await webhookSignature(SECRET, timestamp, body + " "),
      expected,
    );
  });

  it("refuses headers it cannot send or sets itself", async () => {
    const cases: [PostWebhookOptions, RegExp][] = [
      [{ headers: { "bad name": "x" } }, /"bad name" is not a header name/],
      [{ headers: { "X-A": "a\r\nX-B: b" } }, /X-A is not one line of text/],
      [{ headers: { "X-E": "sEcReT \u20ac" } }, /X-E is not one line of text/],
      [{ headers: { "Content-Type": "text/plain" } }, /Content-Type is set/],
      [{ headers: { "X-Smtpd-Signature": "v1=0" } }, /is set by smtpd/],
      [{ secret: "" }, /Cannot use option secret/],
    ];
    for (const [options, re] of cases) {
      await assert.rejects(postWebhook(endpoint.url, payload, options), (e) => {
        assert.ok(e instanceof TypeError);
        assert.match(e.message, re);
        return true;
      });
    }
    const withUser = new URL(endpoint.url);
    withUser.username = "u";
    await assert.rejects(
      postWebhook(withUser, payload, { headers: { authorization: "x" } }),
      /authorization is set by the URL's user name/,
    );
  });
});

describe("postWebhook: no secret in an error text", () => {
  const secretUrl = (base: string) => {
    const url = new URL(base);
    url.username = "hookuser";
    url.password = PASSWORD;
    url.search = `?token=${TOKEN}`;
    return url.href;
  };
  const options: PostWebhookOptions = {
    headers: { authorization: "x", "X-Api-Key": HEADER_VALUE },
    secret: SECRET,
    timeout: 500,
  };
  const check = (error: SmtpError) => {
    const text = texts(error);
    for (const secret of [PASSWORD, TOKEN, HEADER_VALUE, SECRET, "hookuser"]) {
      assert.ok(!text.includes(secret), `${secret} in: ${text}`);
    }
  };

  it("endpoint down, 500, redirect, timeout", async () => {
    const { headers: _, ...basic } = options;
    const down = await startEndpoint();
    await down.close();
    check(await failure(secretUrl(down.url), basic));
    reset(500);
    check(await failure(secretUrl(endpoint.url), basic));
    reset(302);
    endpoint.headers = { location: `/elsewhere?token=${TOKEN}` };
    check(await failure(secretUrl(endpoint.url), basic));
    reset(200);
    endpoint.delay = 2000;
    check(await failure(secretUrl(endpoint.url), basic));
    // Header values: with no user name in the URL.
    reset(500);
    check(await failure(`${endpoint.url}?token=${TOKEN}`, options));
    check(await failure(`${down.url}?token=${TOKEN}`, options));
  });

  it("a URL that does not parse is not repeated", () => {
    assert.throws(() => webhookUrl(`http://u:${PASSWORD}@[bad/`), (e) => {
      assert.ok(e instanceof TypeError);
      assert.ok(!e.message.includes(PASSWORD), e.message);
      return true;
    });
    assert.equal(
      safeUrl(
        new URL(`https://u:${PASSWORD}@example.org:8443/in?t=${TOKEN}#f`),
      ),
      "https://example.org:8443/in",
    );
  });
});

describe("README: the receiver's check", () => {
  it("accepts a signed post, refuses another secret, a changed body and an old timestamp", async () => {
    const readme = await readFile(
      new URL("../README.md", import.meta.url),
      "utf8",
    );
    const code = /```js\n([^]*?function verifySmtpd[^]*?)```/.exec(readme)?.[1];
    assert.ok(code, "the README shows verifySmtpd");
    const dir = await mkdtemp(join(tmpdir(), "smtpd-verify-"));
    try {
      const file = join(dir, "verify.mjs");
      await writeFile(file, `${code}\nexport { verifySmtpd };\n`);
      const { verifySmtpd } = await import(pathToFileURL(file).href) as {
        verifySmtpd: (
          headers: Record<string, unknown>,
          body: string | Uint8Array,
          secret: string,
        ) => boolean;
      };
      reset(200);
      await postWebhook(endpoint.url, payload, { secret: SECRET });
      const { headers, body } = endpoint.requests[0];
      assert.equal(verifySmtpd(headers, body, SECRET), true);
      assert.equal(
        verifySmtpd(headers, new TextEncoder().encode(body), SECRET),
        true,
      );
      assert.equal(verifySmtpd(headers, body, "another secret"), false);
      assert.equal(
        verifySmtpd(headers, body.replace("m1", "m2"), SECRET),
        false,
      );
      assert.equal(verifySmtpd({}, body, SECRET), false);
      // The same signature, ten minutes old.
      const old = String(Math.floor(Date.now() / 1000) - 600);
      assert.equal(
        verifySmtpd(
          {
            "x-smtpd-timestamp": old,
            "x-smtpd-signature": await webhookSignature(SECRET, old, body),
          },
          body,
          SECRET,
        ),
        false,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
