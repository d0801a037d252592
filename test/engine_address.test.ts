// Unit tests of the envelope address and parameter parsers.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  decodeXtext,
  isDomainOrLiteral,
  parseParams,
  parsePath,
  type PathResult,
} from "../src/exports/engine.ts";

const MAIL = { allowNull: true, allowPostmaster: false, utf8: false };
const RCPT = { allowNull: false, allowPostmaster: true, utf8: false };
const RCPT_UTF8 = { ...RCPT, utf8: true };

/** The address of a parsed path, or the error. */
function address(
  line: string,
  opts: Parameters<typeof parsePath>[2] = RCPT,
): string {
  const r: PathResult = parsePath(line, 0, opts);
  return r.ok ? r.mailbox.address : `error:${r.error}`;
}

describe("parsePath", () => {
  it("parses a plain address and returns the index after >", () => {
    const r = parsePath("TO:<a@example.org> NOTIFY=NEVER", 3, RCPT);
    assert.deepEqual(r, {
      ok: true,
      mailbox: {
        address: "a@example.org",
        localPart: "a",
        domain: "example.org",
      },
      end: 18,
    });
  });

  it("requires angle brackets", () => {
    assert.equal(address("a@example.org"), "error:syntax");
    assert.equal(address("<a@example.org"), "error:syntax");
    assert.equal(address(" <a@example.org>"), "error:syntax");
    assert.equal(address("a@example.org>"), "error:syntax");
  });

  it("accepts the null path <> only when allowed (MAIL)", () => {
    const r = parsePath("<>", 0, MAIL);
    assert.deepEqual(r, {
      ok: true,
      mailbox: { address: "", localPart: "", domain: "" },
      end: 2,
    });
    assert.equal(address("<>", RCPT), "error:syntax");
  });

  it("accepts <postmaster> in any case only when allowed (RCPT)", () => {
    assert.equal(address("<postmaster>"), "postmaster");
    assert.equal(address("<POSTMASTER>"), "POSTMASTER");
    assert.equal(address("<PostMaster>"), "PostMaster");
    const r = parsePath("<Postmaster>", 0, RCPT);
    assert.ok(r.ok);
    assert.equal(r.mailbox.domain, "");
    assert.equal(address("<postmaster>", MAIL), "error:syntax");
    assert.equal(address("<postmistress>"), "error:syntax");
  });

  it("accepts the usual atoms of a local part", () => {
    for (
      const local of ["a.b", "a+tag", "o'brien", "x_y-z", "!#$%&*/=?^`{|}~"]
    ) {
      assert.equal(address(`<${local}@example.org>`), `${local}@example.org`);
    }
  });

  it("rejects dots at the ends or doubled in a dot-string", () => {
    for (const local of [".a", "a.", "a..b", ""]) {
      assert.equal(address(`<${local}@example.org>`), "error:syntax", local);
    }
  });

  it("accepts quoted local parts and keeps the quotes", () => {
    const r = parsePath('<"john doe"@example.org>', 0, RCPT);
    assert.ok(r.ok);
    assert.equal(r.mailbox.localPart, '"john doe"');
    assert.equal(r.mailbox.address, '"john doe"@example.org');
    assert.equal(
      address('<"a\\"b"@example.org>'),
      '"a\\"b"@example.org',
    );
    assert.equal(address('<"a@b"@example.org>'), '"a@b"@example.org');
    assert.equal(address('<"a>b"@example.org>'), '"a>b"@example.org');
    assert.equal(address('<""@example.org>'), '""@example.org');
  });

  it("rejects broken quoted local parts", () => {
    assert.equal(address('<"abc@example.org>'), "error:syntax");
    assert.equal(address('<"a"b"@example.org>'), "error:syntax");
    assert.equal(address('<"a\tb"@example.org>'), "error:syntax");
    assert.equal(address('<a"b"@example.org>'), "error:syntax");
  });

  it("accepts address literals", () => {
    for (
      const lit of [
        "[192.0.2.1]",
        "[IPv6:2001:db8::1]",
        "[IPv6:::ffff:192.0.2.1]",
        "[IPv6:2001:db8:0:0:0:0:0:1]",
        "[IPv6:::1]",
        "[ipv6:FE80::1]",
      ]
    ) {
      assert.equal(address(`<a@${lit}>`), `a@${lit}`, lit);
    }
  });

  it("rejects invalid address literals", () => {
    for (
      const lit of [
        "[300.1.1.1]",
        "[1.2.3]",
        "[1.2.3.4.5]",
        "[IPv6:1::2::3]",
        "[IPv6:12345::1]",
        "[IPv6:1:2:3:4:5:6:7:8:9]",
        "[IPv6:1:2:3:4:5:6:7]",
        "[IPv6:::ffff:300.0.2.1]",
        "[192.0.2.1",
        "[]",
      ]
    ) {
      assert.equal(address(`<a@${lit}>`), "error:syntax", lit);
    }
  });

  it("ignores a source route", () => {
    const r = parsePath("<@a.test,@b.test:u@c.test>", 0, RCPT);
    assert.ok(r.ok);
    assert.deepEqual(r.mailbox, {
      address: "u@c.test",
      localPart: "u",
      domain: "c.test",
    });
    assert.equal(r.end, 26);
    assert.equal(address("<@a.test:u@c.test>", MAIL), "u@c.test");
    assert.equal(address("<@a.test:postmaster>"), "postmaster");
  });

  it("rejects a broken source route", () => {
    assert.equal(address("<@a.test u@c.test>"), "error:syntax");
    assert.equal(address("<@a.test,b.test:u@c.test>"), "error:syntax");
    assert.equal(address("<@-a.test:u@c.test>"), "error:syntax");
    assert.equal(address("<@:u@c.test>"), "error:syntax");
  });

  it("rejects a local part over 64 octets", () => {
    assert.equal(
      address(`<${"a".repeat(64)}@example.org>`),
      `${"a".repeat(64)}@example.org`,
    );
    assert.equal(address(`<${"a".repeat(65)}@example.org>`), "error:too-long");
    // Octets, not characters: 33 two-octet characters are 66 octets.
    assert.equal(
      address(`<${"é".repeat(33)}@example.org>`, RCPT_UTF8),
      "error:too-long",
    );
  });

  it("rejects a path over 256 octets", () => {
    // 64 + 1 + 189 = 254 octets inside the brackets: 256 with them.
    const label = "b".repeat(60);
    const domain = `${label}.${label}.${label}.${"c".repeat(6)}`;
    assert.equal(domain.length, 189);
    const ok = `${"a".repeat(64)}@${domain}`;
    assert.equal(address(`<${ok}>`), ok);
    assert.equal(address(`<${ok}x>`), "error:too-long");
  });

  it("measures in octets a character escaped in a quoted string", () => {
    // 209 characters inside the brackets, but each escaped "é" is 3
    // octets: 309.
    const path = `<"${"\\é".repeat(100)}"@x.test>`;
    assert.equal(path.length, 211);
    assert.equal(address(path), "error:too-long");
  });

  it("rejects domain labels that start or end with a hyphen", () => {
    assert.equal(address("<a@b-.test>"), "error:syntax");
    assert.equal(address("<a@-b.test>"), "error:syntax");
    assert.equal(address("<a@b.test->"), "error:syntax");
    assert.equal(address("<a@b-c.test>"), "a@b-c.test");
  });

  it("rejects bad domains", () => {
    for (
      const domain of ["", "b..test", ".b.test", "b.test.", "b_c.test", "b c"]
    ) {
      assert.equal(address(`<a@${domain}>`), "error:syntax", domain);
    }
    assert.equal(address("<a>"), "error:syntax");
    assert.equal(address("<@b.test>"), "error:syntax");
  });

  it("reports UTF-8 addresses as utf8 when SMTPUTF8 is off", () => {
    assert.equal(address("<jürgen@example.org>"), "error:utf8");
    assert.equal(address("<a@bücher.test>"), "error:utf8");
    assert.equal(
      address("<jürgen@example.org>", RCPT_UTF8),
      "jürgen@example.org",
    );
    assert.equal(address("<a@bücher.test>", RCPT_UTF8), "a@bücher.test");
    assert.equal(address("<用户@例子.广告>", RCPT_UTF8), "用户@例子.广告");
    assert.equal(
      address('<"ü x"@example.org>', RCPT_UTF8),
      '"ü x"@example.org',
    );
  });

  it("rejects malformed UTF-8 addresses even with SMTPUTF8", () => {
    assert.equal(address("<a b@bücher.test>", RCPT_UTF8), "error:syntax");
    assert.equal(address("<ü@-bücher.test>", RCPT_UTF8), "error:syntax");
    assert.equal(address("<ü@bücher.test>x", RCPT_UTF8), "ü@bücher.test");
  });

  it("starts at the given index", () => {
    const line = "FROM:<a@b.test> SIZE=1";
    const r = parsePath(line, 5, MAIL);
    assert.ok(r.ok);
    assert.equal(line.slice(r.end), " SIZE=1");
  });
});

describe("isDomainOrLiteral", () => {
  it("accepts domains and address literals", () => {
    for (
      const s of [
        "example.org",
        "a",
        "a-b.c-d",
        "123.example",
        "[192.0.2.1]",
        "[IPv6:2001:db8::1]",
        "[IPv6:::]",
        "[x-tag:some-thing]",
      ]
    ) {
      assert.equal(isDomainOrLiteral(s, false), true, s);
    }
  });

  it("rejects malformed domains and literals", () => {
    for (
      const s of [
        "",
        "-bad-.example",
        "bad-.example",
        "a..b",
        "a.",
        "[300.1.1.1]",
        "[IPv6:1::2::3]",
        "[192.0.2.1",
        "192.0.2.1]",
        "[no-colon]",
        "exa mple.org",
      ]
    ) {
      assert.equal(isDomainOrLiteral(s, false), false, s);
    }
  });

  it("accepts UTF-8 labels only in UTF-8 mode", () => {
    assert.equal(isDomainOrLiteral("bücher.test", false), false);
    assert.equal(isDomainOrLiteral("bücher.test", true), true);
    assert.equal(isDomainOrLiteral("bücher-.test", true), false);
  });
});

describe("parseParams", () => {
  it("parses keyword=value and bare keywords, upper-casing keywords", () => {
    const r = parseParams(" size=1000 Body=8BITMIME SMTPUTF8");
    assert.ok(r.ok);
    assert.deepEqual(
      [...r.params],
      [["SIZE", "1000"], ["BODY", "8BITMIME"], ["SMTPUTF8", true]],
    );
  });

  it("gives no parameters for an empty rest", () => {
    const r = parseParams("");
    assert.ok(r.ok);
    assert.equal(r.params.size, 0);
  });

  it("tolerates runs of spaces", () => {
    const r = parseParams("  A=1   B");
    assert.ok(r.ok);
    assert.deepEqual([...r.params], [["A", "1"], ["B", true]]);
  });

  it("requires a space before the first parameter", () => {
    assert.deepEqual(parseParams("SIZE=1"), { ok: false, error: "syntax" });
  });

  it("rejects bad keywords and values", () => {
    for (
      const rest of [
        " =1",
        " -A=1",
        " A_B=1",
        " A=",
        " A=b=c",
        " A=\x01",
        " A=\x7f",
      ]
    ) {
      assert.deepEqual(parseParams(rest), { ok: false, error: "syntax" }, rest);
    }
  });

  it("accepts UTF-8 values", () => {
    const r = parseParams(" X=ü");
    assert.ok(r.ok);
    assert.equal(r.params.get("X"), "ü");
  });

  it("reports duplicates, whatever their case", () => {
    assert.deepEqual(parseParams(" SIZE=1 size=2"), {
      ok: false,
      error: "duplicate",
    });
  });
});

describe("decodeXtext", () => {
  it("decodes +XX escapes", () => {
    assert.equal(decodeXtext("a+2Bb"), "a+b");
    assert.equal(decodeXtext("+3D+20+2B"), "= +");
    assert.equal(decodeXtext("plain"), "plain");
    assert.equal(decodeXtext(""), "");
  });

  it("rejects bad escapes and characters outside xtext", () => {
    for (const s of ["a+", "a+2", "a+2b", "a+G0", "a=b", "a b", "ü", "a\x7f"]) {
      assert.equal(decodeXtext(s), null, s);
    }
  });
});
