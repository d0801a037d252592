// SMTP AUTH (RFC 4954) through the engine, and the SASL step functions.
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { describe, it } from "node:test";
import { SmtpError } from "../mod.ts";
import {
  decodeBase64Text,
  encodeBase64Text,
  SaslExchange,
} from "../src/exports/engine.ts";
import {
  bytes,
  codes,
  type Decide,
  run,
  transcript,
} from "./helpers/transcript.ts";

const b64 = encodeBase64Text;
const AUTH = {
  authMechanisms: ["PLAIN", "LOGIN", "XOAUTH2"] as const,
  secure: true,
};
const EHLO = "EHLO c.test\r\n";
const GOOD = "secret";
/** Accepts the password "secret" (or token "tok"), rejects the rest with 535. */
const verify: Decide = (ev) => {
  if (ev.type !== "auth") return;
  const c = ev.credentials;
  if (c.password === GOOD || c.token === "tok") return;
  return new SmtpError(535, "5.7.8", "Authentication credentials invalid");
};

describe("sasl: step functions", () => {
  it("PLAIN parses authzid, user and password", () => {
    assert.deepEqual(new SaslExchange("PLAIN", "").start("admin\0u\0p"), {
      type: "done",
      credentials: {
        mechanism: "PLAIN",
        username: "u",
        password: "p",
        authorizationId: "admin",
      },
    });
    assert.deepEqual(new SaslExchange("PLAIN", "").start("u\0p"), {
      type: "error",
      reason: "syntax",
    });
  });

  it("LOGIN asks for user name then password", () => {
    const x = new SaslExchange("LOGIN", "");
    assert.deepEqual(x.start(null), {
      type: "challenge",
      text: b64("Username:"),
    });
    assert.deepEqual(x.next("u"), {
      type: "challenge",
      text: b64("Password:"),
    });
    assert.deepEqual(x.next("p"), {
      type: "done",
      credentials: { mechanism: "LOGIN", username: "u", password: "p" },
    });
  });

  it("XOAUTH2 extracts user and bearer token", () => {
    const step = new SaslExchange("XOAUTH2", "").start(
      "user=u@x.test\x01auth=Bearer abc.def\x01\x01",
    );
    assert.deepEqual(step, {
      type: "done",
      credentials: {
        mechanism: "XOAUTH2",
        username: "u@x.test",
        token: "abc.def",
      },
    });
  });

  it("base64 decoding is strict", () => {
    assert.equal(decodeBase64Text(b64("héllo")), "héllo");
    assert.equal(decodeBase64Text("abc"), null);
    assert.equal(decodeBase64Text("ab!="), null);
    assert.equal(decodeBase64Text("/w=="), null); // 0xff is not UTF-8
  });
});

describe("engine: AUTH", () => {
  it("EHLO advertises AUTH only over TLS unless insecure auth is allowed", () => {
    const plain = transcript(EHLO, { authMechanisms: ["PLAIN"] });
    assert.doesNotMatch(plain.output, /AUTH/);
    const tls = transcript(EHLO, {
      authMechanisms: ["PLAIN", "LOGIN"],
      secure: true,
    });
    assert.match(tls.output, /250-AUTH PLAIN LOGIN\r\n/);
    const insecure = transcript(EHLO, {
      authMechanisms: ["PLAIN"],
      allowInsecureAuth: true,
    });
    assert.match(insecure.output, /250-AUTH PLAIN\r\n/);
  });

  it("AUTH over plaintext gets 538 5.7.11, and 530 5.7.0 with requireTls", () => {
    const r = transcript(EHLO + `AUTH PLAIN ${b64("\0u\0secret")}\r\n`, {
      authMechanisms: ["PLAIN"],
    });
    assert.deepEqual(codes(r.output).slice(2), ["538 5.7.11"]);
    const t = transcript(EHLO + "AUTH PLAIN\r\nMAIL FROM:<a@b.test>\r\n", {
      authMechanisms: ["PLAIN"],
      startTls: true,
      requireTls: true,
    });
    assert.deepEqual(codes(t.output).slice(2), ["530 5.7.0", "530 5.7.0"]);
  });

  it("PLAIN with an initial response succeeds and sets the user", () => {
    const r = transcript(
      EHLO + `AUTH PLAIN ${b64("\0alice\0secret")}\r\n`,
      AUTH,
      verify,
    );
    assert.deepEqual(codes(r.output).slice(2), ["235 2.7.0"]);
    assert.ok(r.events.includes("auth:PLAIN alice secret"));
  });

  it("PLAIN without an initial response sends an empty 334", () => {
    const r = transcript(
      EHLO + `AUTH plain\r\n${b64("\0alice\0secret")}\r\n`,
      AUTH,
      verify,
    );
    assert.match(r.output, /\r\n334 \r\n235 2\.7\.0/);
  });

  it("LOGIN runs its two challenges", () => {
    const r = transcript(
      EHLO + `AUTH LOGIN\r\n${b64("bob")}\r\n${b64("secret")}\r\n`,
      AUTH,
      verify,
    );
    assert.match(
      r.output,
      /334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 2\.7\.0/,
    );
    assert.ok(r.events.includes("auth:LOGIN bob secret"));
  });

  it("LOGIN takes the user name as initial response", () => {
    const r = transcript(
      EHLO + `AUTH LOGIN ${b64("bob")}\r\n${b64("secret")}\r\n`,
      AUTH,
      verify,
    );
    assert.deepEqual(codes(r.output).slice(2), ["334", "235 2.7.0"]);
  });

  it("wrong credentials get 535 5.7.8, and the third failure closes with 421 4.7.0", () => {
    const bad = `AUTH PLAIN ${b64("\0u\0wrong")}\r\n`;
    const r = transcript(EHLO + bad + bad + bad + "NOOP\r\n", AUTH, verify);
    assert.deepEqual(codes(r.output).slice(2), [
      "535 5.7.8",
      "535 5.7.8",
      "535 5.7.8",
      "421 4.7.0",
    ]);
    assert.equal(r.closed, "too-many-errors");
  });

  it("unknown mechanism gets 504 5.5.4, '*' cancels with 501 5.7.0, bad base64 gets 501 5.5.2", () => {
    const r = transcript(
      EHLO +
        "AUTH GSSAPI\r\nAUTH LOGIN\r\n*\r\nAUTH PLAIN !!!\r\nAUTH LOGIN\r\n!!!\r\n",
      AUTH,
      verify,
    );
    assert.deepEqual(codes(r.output).slice(2), [
      "504 5.5.4",
      "334",
      "501 5.7.0",
      "501 5.5.2",
      "334",
      "501 5.5.2",
    ]);
  });

  it("AUTH twice gets 503, AUTH inside a transaction gets 503, AUTH before EHLO gets 503", () => {
    const ok = `AUTH PLAIN ${b64("\0u\0secret")}\r\n`;
    const twice = transcript(EHLO + ok + ok, AUTH, verify);
    assert.deepEqual(codes(twice.output).slice(2), ["235 2.7.0", "503 5.5.1"]);
    const inTx = transcript(
      EHLO + "MAIL FROM:<a@b.test>\r\n" + ok,
      AUTH,
      verify,
    );
    assert.deepEqual(codes(inTx.output).slice(2), ["250 2.1.0", "503 5.5.1"]);
    const early = transcript(ok, AUTH, verify);
    assert.deepEqual(codes(early.output).slice(1), ["503 5.5.1"]);
  });

  it("authRequired: MAIL without AUTH gets 530 5.7.0, after AUTH it works", () => {
    const r = transcript(
      EHLO + "MAIL FROM:<a@b.test>\r\n" +
        `AUTH PLAIN ${b64("\0u\0secret")}\r\n` +
        "MAIL FROM:<a@b.test> AUTH=u+40b.test\r\n",
      { ...AUTH, authRequired: true },
      verify,
    );
    assert.deepEqual(codes(r.output).slice(2), [
      "530 5.7.0",
      "235 2.7.0",
      "250 2.1.0",
    ]);
    const mail = r.raw.find((e) => e.type === "mail");
    assert.equal(mail?.type === "mail" && mail.params.auth, "u@b.test");
  });

  it("the AUTH= parameter is refused when AUTH is not offered", () => {
    const r = transcript(EHLO + "MAIL FROM:<a@b.test> AUTH=<>\r\n");
    assert.deepEqual(codes(r.output).slice(2), ["555 5.5.4"]);
  });

  it("XOAUTH2 failure sends a 334 error challenge, then 535 after the empty line", () => {
    const ir = b64("user=u\x01auth=Bearer bad\x01\x01");
    const r = transcript(EHLO + `AUTH XOAUTH2 ${ir}\r\n\r\n`, AUTH, verify);
    assert.deepEqual(codes(r.output).slice(2), ["334", "535 5.7.8"]);
    const ok = transcript(
      EHLO + `AUTH XOAUTH2 ${b64("user=u\x01auth=Bearer tok\x01\x01")}\r\n`,
      AUTH,
      verify,
    );
    assert.deepEqual(codes(ok.output).slice(2), ["235 2.7.0"]);
  });

  it("CRAM-MD5 sends a challenge and hands over the digest to check", () => {
    const engine = run([bytes(EHLO + "AUTH CRAM-MD5\r\n")], {
      authMechanisms: ["CRAM-MD5"],
      secure: true,
    });
    const challengeB64 = /334 (\S+)\r\n$/.exec(engine.output)![1];
    const challenge = decodeBase64Text(challengeB64)!;
    assert.match(challenge, /^<\d+\.\d+@localhost>$/);
    const digest = createHmac("md5", "secret").update(challenge).digest("hex");
    // A second run answers with the digest; the challenge differs per
    // session, so check the credentials against its own challenge.
    let seen: { challenge?: string; response?: string } | null = null;
    const r = run(
      [bytes(EHLO + "AUTH CRAM-MD5\r\n")],
      { authMechanisms: ["CRAM-MD5"], secure: true },
    );
    const c2 = decodeBase64Text(/334 (\S+)\r\n$/.exec(r.output)![1])!;
    assert.notEqual(c2, challenge, "each exchange gets a fresh challenge");
    const full = run(
      [bytes(EHLO + "AUTH CRAM-MD5\r\n"), bytes(b64(`u ${digest}`) + "\r\n")],
      { authMechanisms: ["CRAM-MD5"], secure: true },
      (ev) => {
        if (ev.type === "auth") seen = ev.credentials;
      },
    );
    assert.ok(seen);
    const s = seen as { challenge?: string; response?: string };
    assert.equal(s.response, digest);
    assert.match(s.challenge!, /^<\d+\.\d+@localhost>$/);
    assert.match(full.output, /235 2\.7\.0/);
  });

  it("a logged AUTH command never contains the credentials", () => {
    const secret = b64("\0alice\0secret");
    const r = transcript(EHLO + `AUTH PLAIN ${secret}\r\n`, {
      ...AUTH,
      traceCommands: true,
    }, verify);
    const logged = r.events.filter((e) => e.startsWith("command:"));
    assert.deepEqual(logged, ["command:EHLO c.test", "command:AUTH PLAIN ***"]);
  });

  it("AUTH lines up to 12288 octets are accepted (RFC 4954 §4)", () => {
    const token = "t".repeat(4000);
    const ir = b64(`user=u\x01auth=Bearer ${token}\x01\x01`);
    const r = run([bytes(EHLO + `AUTH XOAUTH2 ${ir}\r\n`)], AUTH, (ev) => {
      if (ev.type === "auth") assert.equal(ev.credentials.token, token);
    });
    assert.deepEqual(codes(r.output).slice(2), ["235 2.7.0"]);
  });

  it("STARTTLS resets the authenticated user", () => {
    const r = run(
      [
        bytes("EHLO c.test\r\nSTARTTLS\r\n"),
        bytes(`EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n`),
      ],
      { authMechanisms: ["PLAIN"], startTls: true, authRequired: true },
    );
    assert.deepEqual(codes(r.output).slice(2), [
      "220 2.0.0",
      "250",
      "530 5.7.0",
    ]);
  });
});
