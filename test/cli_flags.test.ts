// The table of the CLI's flags (src/cli/flags.ts) and what it yields: the
// --help entries, parseArgs' options, the values read into CliOptions and
// the server options that are a field as is.
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { CliError, USAGE } from "../src/cli/args.ts";
import {
  FLAGS,
  flagSpec,
  helpEntry,
  PARSE_OPTIONS,
  readFlags,
  serveOptionsOf,
} from "../src/cli/flags.ts";

describe("cli: the table of flags", () => {
  it("lists every flag once in --help and in parseArgs' options, each field set by one flag", () => {
    const names = FLAGS.map((f) => f.name);
    assert.equal(new Set(names).size, names.length);
    assert.deepEqual(Object.keys(PARSE_OPTIONS), names);
    for (const f of FLAGS) {
      assert.match(USAGE, new RegExp(`^ {2}(-\\w, )?--${f.name}\\b`, "m"));
      if (f.needs !== undefined) assert.ok(names.includes(f.needs), f.name);
    }
    const fields = FLAGS.flatMap((f) => f.field ?? []);
    assert.equal(new Set(fields).size, fields.length);
    assert.equal(PARSE_OPTIONS.help.short, "h");
    assert.equal(PARSE_OPTIONS["webhook-header"].multiple, true);
  });

  it("helpEntry puts a long flag on its own line, wraps at 75 columns, never at a no-break space", () => {
    const words = "word ".repeat(30).trim();
    const short = helpEntry("--port PORT", words).split("\n");
    assert.match(short[0], /^ {2}--port PORT {12}word/);
    const long = helpEntry("--max-connections-per-ip N", words).split("\n");
    assert.equal(long[0], "  --max-connections-per-ip N");
    for (const line of [...short.slice(1), ...long.slice(1)]) {
      assert.match(line, /^ {25}word/);
    }
    for (const line of [...short, ...long]) assert.ok(line.length <= 75);
    const glued = helpEntry(
      "--x",
      `${"w".repeat(44)} (default\u00a030s; bare: ms)`,
    );
    assert.equal(
      glued,
      `  --x                    ${"w".repeat(44)}\n` +
        " ".repeat(25) + "(default 30s; bare: ms)",
    );
  });

  it("reads the values given, the defaults otherwise, and leaves out a field without either", () => {
    const o = readFlags({ size: "2K", "session-timeout": "0" });
    assert.equal(o.size, 2048);
    assert.equal(o.sessionTimeout, Infinity);
    assert.equal(o.port, 2525);
    assert.equal(o.chunking, true);
    assert.equal(o.workers, 1);
    assert.ok("socket" in o && o.socket === undefined);
    assert.ok(!("webhook" in o));
    assert.ok(!("maxRecipients" in o));
  });

  it("refuses a flag without the one it needs, and applies its default only with it", () => {
    assert.throws(
      () => readFlags({ "webhook-timeout": "5s" }),
      (e) =>
        e instanceof CliError &&
        e.message === "--webhook-timeout: needs --webhook",
    );
    assert.throws(
      () => readFlags({ "proxy-trusted": "10.0.0.0/8" }),
      /^CliError: --proxy-trusted: needs --proxy-protocol$/,
    );
    assert.ok(!("webhookTimeout" in readFlags({})));
    assert.equal(
      readFlags({ webhook: "https://example.org/" }).webhookTimeout,
      30_000,
    );
  });

  it("gives the server options that are a field as is, those set only", () => {
    const none = serveOptionsOf(readFlags({}));
    assert.deepEqual(none, {
      serverName: none.serverName,
      lmtp: false,
      dsn: false,
      chunking: true,
      requireTls: false,
      allowInsecureAuth: false,
      reverseDns: false,
    });
    const o = serveOptionsOf(readFlags({
      "no-chunking": true,
      size: "1M",
      "max-recipients": "5",
      "max-connections": "9",
      "max-connections-per-ip": "3",
      "max-auth-failures-per-ip": "0",
      "command-timeout": "2m",
      "session-timeout": "1h",
      "greeting-delay": "500ms",
      "server-name": "mx.test",
      port: "25",
      host: "::1",
    }));
    assert.deepEqual(o, {
      serverName: "mx.test",
      lmtp: false,
      dsn: false,
      chunking: false,
      greetingDelay: 500,
      maxMessageSize: 1024 * 1024,
      maxRecipients: 5,
      maxConnections: 9,
      maxConnectionsPerIp: 3,
      maxAuthFailuresPerIp: Infinity,
      commandTimeout: 120_000,
      sessionTimeout: 3_600_000,
      requireTls: false,
      allowInsecureAuth: false,
      reverseDns: false,
    });
  });

  it("is what README's flag tables list, group by group, each flag with its value", () => {
    const readme = readFileSync(
      new URL("../README.md", import.meta.url),
      "utf8",
    );
    const listed = new Map<string, string[]>();
    for (
      const [, group, table] of readme.matchAll(
        /\*\*([^*\n]+)\*\*\n\n((?:\|.*\n)+)/g,
      )
    ) {
      const specs = table.split("\n").flatMap((row) =>
        /^\| `(--[^|]*?)` +\|/.exec(row.replaceAll("\\|", "/"))?.[1] ?? []
      ).flatMap((cell) => cell.split(/ (?=--)/));
      listed.set(group, specs.map((spec) => spec.replaceAll("/", "|")));
    }
    const expected = new Map<string, string[]>();
    for (const f of FLAGS) {
      if (f.group === "") continue;
      const specs = expected.get(f.group) ?? [];
      specs.push(flagSpec(f));
      expected.set(f.group, specs);
    }
    const inReadme = [...expected.keys()].map((
      group,
    ) => [group, (listed.get(group) ?? []).sort()]);
    const inTable = [...expected].map((
      [group, specs],
    ) => [group, specs.sort()]);
    assert.deepEqual(inReadme, inTable);
  });
});
