/**
 * The command line's flags in one table, {@link FLAGS}, and what it
 * yields: the flags' part of `--help` ({@link flagsHelp}), the options of
 * `parseArgs` ({@link PARSE_OPTIONS}), each value read and checked into
 * {@link CliOptions} ({@link readFlags}), and the server options that are
 * a field as is ({@link serveOptionsOf}). The rules between flags (which
 * cannot go together, which needs which beyond a bare "needs --flag") are
 * code in args.ts, after the table.
 *
 * A new flag is a row here and its field in {@link CliOptions} (the
 * compiler checks that the row's kind gives the field's type); a rule
 * between it and others goes into `parseCliArgs`, a mapping to the server
 * other than "this field is that option" into serve.ts.
 *
 * @module
 */

import * as os from "node:os";
import type { ServeOptions } from "../../mod.ts";
import {
  bytes,
  cidrList,
  CliError,
  dnsServers,
  headers,
  type HostAndPort,
  hostAndPort,
  hostName,
  httpUrl,
  integer,
  type Kind,
  milterAddresses,
  nonEmpty,
  off,
  on,
  oneOf,
  processes,
  time,
  word,
} from "./flag_kinds.ts";

/**
 * The server's settings, as the command line gives them.
 *
 * @example
 * ```ts
 * import { parseCliArgs } from "./args.ts";
 *
 * const command = parseCliArgs(["--port", "2525"]);
 * if (command.command === "serve") console.log(command.options.port); // 2525
 * ```
 */
export interface CliOptions {
  /** `--host`: interface to listen on. */
  host: string;
  /** `--port`: port to listen on (0: any free one). */
  port: number;
  /** `--socket`: a Unix domain socket's path to listen on instead of `host`/`port`. */
  socket?: string;
  /** `--lmtp`: speak LMTP, one Maildir file and one reply per recipient. */
  lmtp: boolean;
  /** CHUNKING and BINARYMIME offered (`--no-chunking` turns them off). */
  chunking: boolean;
  /** `--maildir`: the Maildir directory, as given. */
  maildir: string;
  /** `--no-maildir`: store nothing, post to the webhook only (set only when given). */
  noMaildir?: boolean;
  /** `--webhook`: the URL each message is posted to as JSON (set only when given). */
  webhook?: string;
  /** `--webhook-timeout`: milliseconds to wait for the webhook (set with `webhook`; default 30000). */
  webhookTimeout?: number;
  /** `--webhook-header`: extra headers of each post (set only when given). */
  webhookHeaders?: Record<string, string>;
  /** `--webhook-secret-file`: the file holding the signing secret (set only when given). */
  webhookSecretFile?: string;
  /** `--milter`: milter filters, in order (set only when given). */
  milter?: string[];
  /** `--milter-on-error`: what a filter that fails gives (set with `milter`; default tempfail). */
  milterOnError?: "tempfail" | "accept" | "reject";
  /** `--server-name`: name in the greeting and the Received headers. */
  serverName: string;
  /** `--size`: largest message in bytes, or `undefined` for the default. */
  size?: number;
  /** `--max-recipients`. */
  maxRecipients?: number;
  /** `--max-connections`. */
  maxConnections?: number;
  /** `--workers`: server processes sharing the port (`auto` resolved to the number of cores). */
  workers: number;
  /** `--max-connections-per-ip`. */
  maxConnectionsPerIp?: number;
  /** `--max-auth-failures-per-ip` (`Infinity` for 0: off). */
  maxAuthFailuresPerIp?: number;
  /** `--command-timeout`, in milliseconds. */
  commandTimeout?: number;
  /** `--session-timeout`, in milliseconds (`Infinity` for 0: off). */
  sessionTimeout?: number;
  /** `--tls-cert`: path of the PEM certificate chain. */
  tlsCert?: string;
  /** `--tls-key`: path of the PEM private key. */
  tlsKey?: string;
  /** `--tls-implicit`. */
  tlsImplicit: boolean;
  /** `--require-tls`. */
  requireTls: boolean;
  /** `--auth-file`: path of the users file. */
  authFile?: string;
  /** `--allow-insecure-auth`. */
  allowInsecureAuth: boolean;
  /** `--dsn`: offer DSN. */
  dsn: boolean;
  /** `--proxy-protocol`. */
  proxyProtocol: boolean;
  /** `--proxy-trusted`: the list, split at commas (`undefined`: loopback). */
  proxyTrusted?: string[];
  /** `--greeting-delay`: milliseconds before the greeting. */
  greetingDelay?: number;
  /** `--reverse-dns`: look up each client's name (forward-confirmed). */
  reverseDns: boolean;
  /** `--dns-server`: the DNS servers it asks (set only when given). */
  dnsServers?: string[];
  /** `--metrics`: where to serve `/metrics` and `/healthz` (set only when given). */
  metrics?: HostAndPort;
  /** `--log`. */
  log: "text" | "json";
  /** `--quiet`. */
  quiet: boolean;
  /** `--verbose`. */
  verbose: boolean;
}

type Field = keyof CliOptions;
type ValueOf<F extends Field> = Exclude<CliOptions[F], undefined>;
/** The server options a field of type `T` can be given to as is. */
type ServeKey<T> = {
  [K in keyof ServeOptions]-?: T extends Exclude<ServeOptions[K], undefined> ? K
    : never;
}[keyof ServeOptions];

/**
 * One flag of the command line: a row of {@link FLAGS}.
 *
 * @example
 * ```ts
 * import { FLAGS } from "./flags.ts";
 *
 * const port = FLAGS.find((f) => f.name === "port");
 * console.log(port?.field, port?.default); // "port" 2525
 * ```
 */
export interface Flag<F extends Field = Field> {
  /** The flag without its dashes, such as `"max-recipients"`. */
  readonly name: string;
  /** Its one-letter alias (`h` for `-h`). */
  readonly short?: string;
  /** The heading it is listed under in `--help` (`""`: after the groups). */
  readonly group: string;
  /** Its value's placeholder in `--help`, when its kind has none (`FILE`). */
  readonly arg?: string;
  /** What it takes and how that is checked. */
  readonly kind: Kind<ValueOf<F>>;
  /** The field of {@link CliOptions} it sets (none: `--help`, `--version`). */
  readonly field?: F;
  /**
   * The field's value when the flag is not given (a function: computed
   * then). A row without `default` leaves the field out; `undefined` is a
   * default too: the field is there, undefined.
   */
  readonly default?: CliOptions[F] | (() => CliOptions[F]);
  /**
   * Another flag this one is meaningless without: given alone, it is
   * refused ("needs --webhook"), and its field, default included, is set
   * only with it (so only a field optional in {@link CliOptions} may).
   */
  readonly needs?: undefined extends CliOptions[F] ? string : never;
  /** The server option the field is, as is (set when the field is defined). */
  readonly serve?: ServeKey<ValueOf<F>>;
  /**
   * Its description in `--help`, one paragraph, wrapped there (a no-break
   * space, `\u00a0`, keeps two words on one line).
   */
  readonly help: string;
}

/** A row, typed by its field (so that kind, default and serve agree with it). */
function flag<F extends Field>(row: Flag<F>): Flag {
  return row as unknown as Flag;
}

/** The machine's name when it makes a valid server name, else `localhost`. */
function defaultServerName(): string {
  try {
    const name = os.hostname();
    return /^[A-Za-z0-9_.-]+$/.test(name) && !/^[.-]|[.-]$/.test(name)
      ? name
      : "localhost";
  } catch {
    return "localhost";
  }
}

const LISTENING = "Listening";
const DELIVERY = "Delivery";
const LIMITS = "Limits";
const TLS_AUTH = "TLS and AUTH";
const PROXY = "Proxy and processes";
const LOGGING = "Logging";
const FILE = "must name a file";

/**
 * The flags of `smtpd [options]`, in the order of `--help`: name, group,
 * kind of value, default, help text, the {@link CliOptions} field and,
 * where the field is one as is, the server option.
 *
 * @example
 * ```ts
 * import { FLAGS } from "./flags.ts";
 *
 * console.log(FLAGS.map((f) => `--${f.name}`).join(" "));
 * ```
 */
export const FLAGS: readonly Flag[] = [
  flag({
    name: "host",
    group: LISTENING,
    arg: "ADDRESS",
    kind: word,
    field: "host",
    default: "127.0.0.1",
    help:
      "interface to listen on (default 127.0.0.1; 0.0.0.0\u00a0or :: for every interface)",
  }),
  flag({
    name: "port",
    group: LISTENING,
    arg: "PORT",
    kind: integer(0, 65535),
    field: "port",
    default: 2525,
    help:
      "port to listen on, 0 for any free one (default 2525; the listening line names the one chosen)",
  }),
  flag({
    name: "socket",
    group: LISTENING,
    arg: "PATH",
    kind: nonEmpty(FILE),
    field: "socket",
    default: undefined,
    help:
      "listen on a Unix domain socket instead of --host/--port (a stale socket file is replaced; removed on exit)",
  }),
  flag({
    name: "server-name",
    group: LISTENING,
    arg: "NAME",
    kind: hostName,
    field: "serverName",
    default: defaultServerName,
    serve: "serverName",
    help:
      "name in the greeting and in Received headers (default: this machine's host name)",
  }),
  flag({
    name: "lmtp",
    group: LISTENING,
    kind: on,
    field: "lmtp",
    default: false,
    serve: "lmtp",
    help:
      "speak LMTP (RFC 2033; LHLO, one reply per recipient): each recipient gets its own copy in the Maildir, and its own reply",
  }),
  flag({
    name: "dsn",
    group: LISTENING,
    kind: on,
    field: "dsn",
    default: false,
    serve: "dsn",
    help:
      "offer DSN (RFC 3461): accept RET, ENVID, NOTIFY and ORCPT (default off)",
  }),
  flag({
    name: "no-chunking",
    group: LISTENING,
    kind: off,
    field: "chunking",
    default: true,
    serve: "chunking",
    help:
      "do not offer CHUNKING (BDAT) and BINARYMIME (RFC\u00a03030; offered by default)",
  }),
  flag({
    name: "greeting-delay",
    group: LISTENING,
    kind: time("ms", 0, 600_000),
    field: "greetingDelay",
    serve: "greetingDelay",
    help:
      "wait this long before the greeting; clients that talk first get 554 and are disconnected (default\u00a00s; bare: ms)",
  }),
  flag({
    name: "reverse-dns",
    group: LISTENING,
    kind: on,
    field: "reverseDns",
    default: false,
    serve: "reverseDns",
    help:
      "look up each client's name before the greeting (PTR, confirmed by its A/AAAA records), for the Received header and the log (default off)",
  }),
  flag({
    name: "dns-server",
    group: LISTENING,
    kind: dnsServers,
    field: "dnsServers",
    needs: "reverse-dns",
    serve: "dnsServers",
    help:
      "the DNS server --reverse-dns asks (repeatable; default: the system's)",
  }),
  flag({
    name: "maildir",
    group: DELIVERY,
    arg: "DIR",
    kind: nonEmpty("must not be empty"),
    field: "maildir",
    default: "./maildir",
    help: "Maildir to deliver into, created when missing (default ./maildir)",
  }),
  flag({
    name: "no-maildir",
    group: DELIVERY,
    kind: on,
    field: "noMaildir",
    help: "store nothing (needs --webhook)",
  }),
  flag({
    name: "webhook",
    group: DELIVERY,
    arg: "URL",
    kind: httpUrl,
    field: "webhook",
    help:
      "post each message as JSON to this http(s) URL; the\u00a0sender gets 250 only after a 2xx answer (redirects are not followed), else 451 4.3.0; with\u00a0a Maildir the file enters new/ only after the\u00a02xx; user:password@ in the URL is sent as Basic auth",
  }),
  flag({
    name: "webhook-timeout",
    group: DELIVERY,
    kind: time("ms", 1, 600_000),
    field: "webhookTimeout",
    default: 30_000,
    needs: "webhook",
    help:
      "how long to wait for the webhook's answer (default\u00a030s; bare: ms)",
  }),
  flag({
    name: "webhook-header",
    group: DELIVERY,
    arg: '"NAME: VALUE"',
    kind: headers,
    field: "webhookHeaders",
    needs: "webhook",
    help: "send this header with each post (repeatable)",
  }),
  flag({
    name: "webhook-secret-file",
    group: DELIVERY,
    arg: "FILE",
    kind: nonEmpty(FILE),
    field: "webhookSecretFile",
    needs: "webhook",
    help:
      "sign each post with the secret in FILE (or in $SMTPD_WEBHOOK_SECRET): X-Smtpd-Timestamp and X-Smtpd-Signature: v1=HMAC-SHA256 hex",
  }),
  flag({
    name: "milter",
    group: DELIVERY,
    arg: "ADDRESS",
    kind: milterAddresses,
    field: "milter",
    help:
      "pass each message through this milter filter (rspamd, OpenDKIM, ...) at inet:PORT@HOST, inet:HOST:PORT or\u00a0unix:/path, before it is delivered (repeatable, asked in order)",
  }),
  flag({
    name: "milter-on-error",
    group: DELIVERY,
    arg: "tempfail|accept|reject",
    kind: oneOf("tempfail", "accept", "reject"),
    field: "milterOnError",
    default: "tempfail",
    needs: "milter",
    help:
      "when a filter is down, slow or speaks garbage: tempfail (451\u00a04.7.1, the default), accept (go on without it) or reject (550\u00a05.7.1)",
  }),
  flag({
    name: "size",
    group: LIMITS,
    kind: bytes,
    field: "size",
    serve: "maxMessageSize",
    help: "largest message accepted (default 25M)",
  }),
  flag({
    name: "max-recipients",
    group: LIMITS,
    arg: "N",
    kind: integer(1),
    field: "maxRecipients",
    serve: "maxRecipients",
    help: "recipients per message (default 100)",
  }),
  flag({
    name: "max-connections",
    group: LIMITS,
    arg: "N",
    kind: integer(1),
    field: "maxConnections",
    serve: "maxConnections",
    help: "connections at once (default 1000)",
  }),
  flag({
    name: "max-connections-per-ip",
    group: LIMITS,
    arg: "N",
    kind: integer(1),
    field: "maxConnectionsPerIp",
    serve: "maxConnectionsPerIp",
    help:
      "connections at once from one client (an IPv4 address, an IPv6 /64; default 50; raise it behind a relay or a load balancer that does not send the PROXY protocol)",
  }),
  flag({
    name: "max-auth-failures-per-ip",
    group: LIMITS,
    arg: "N",
    kind: integer(0, undefined, true),
    field: "maxAuthFailuresPerIp",
    serve: "maxAuthFailuresPerIp",
    help:
      "failed AUTH attempts per client (an IPv4 address, an IPv6 /64) in 15 minutes before AUTH from it gets 454 4.7.0 for 15 minutes (default 10; 0 turns\u00a0it off)",
  }),
  flag({
    name: "command-timeout",
    group: LIMITS,
    kind: time("s", 1000, 86_400_000),
    field: "commandTimeout",
    serve: "commandTimeout",
    help:
      "time a command line may take from its first byte (default 1m; bare: seconds)",
  }),
  flag({
    name: "session-timeout",
    group: LIMITS,
    kind: time("s", 0, 864_000_000, true),
    field: "sessionTimeout",
    serve: "sessionTimeout",
    help:
      "time a whole session may take (default 30m; 0\u00a0turns it off; bare: seconds)",
  }),
  flag({
    name: "tls-cert",
    group: TLS_AUTH,
    arg: "FILE",
    kind: nonEmpty(FILE),
    field: "tlsCert",
    help: "PEM certificate chain: offer STARTTLS",
  }),
  flag({
    name: "tls-key",
    group: TLS_AUTH,
    arg: "FILE",
    kind: nonEmpty(FILE),
    field: "tlsKey",
    help: "PEM private key of --tls-cert",
  }),
  flag({
    name: "tls-implicit",
    group: TLS_AUTH,
    kind: on,
    field: "tlsImplicit",
    default: false,
    help: "TLS from the first byte (port 465 style) instead of STARTTLS",
  }),
  flag({
    name: "require-tls",
    group: TLS_AUTH,
    kind: on,
    field: "requireTls",
    default: false,
    // The engine enforces it: MAIL (and AUTH) before STARTTLS get 530 5.7.0.
    serve: "requireTls",
    help: "refuse mail before STARTTLS (530 5.7.0)",
  }),
  flag({
    name: "auth-file",
    group: TLS_AUTH,
    arg: "FILE",
    kind: nonEmpty(FILE),
    field: "authFile",
    help:
      'require AUTH with these users: one user:hash per line, hashes made by "smtpd hash-password"',
  }),
  flag({
    name: "allow-insecure-auth",
    group: TLS_AUTH,
    kind: on,
    field: "allowInsecureAuth",
    default: false,
    serve: "allowInsecureAuth",
    help: "allow AUTH without TLS (for local testing)",
  }),
  flag({
    name: "proxy-protocol",
    group: PROXY,
    kind: on,
    field: "proxyProtocol",
    default: false,
    help:
      "every connection starts with a PROXY protocol v1 or v2 header (HAProxy send-proxy[-v2]); the client's address comes from it (on a --socket, from any peer)",
  }),
  flag({
    name: "proxy-trusted",
    group: PROXY,
    arg: "LIST",
    kind: cidrList,
    field: "proxyTrusted",
    needs: "proxy-protocol",
    help:
      "comma-separated addresses and CIDR ranges allowed to send the header (default 127.0.0.0/8,::1; not\u00a0with --socket)",
  }),
  flag({
    name: "workers",
    group: PROXY,
    arg: "N|auto",
    kind: processes,
    field: "workers",
    default: 1,
    help:
      "server processes sharing the port (default 1; auto: one per core); one that dies is replaced; the per-client limits count across the workers, --max-connections per worker",
  }),
  flag({
    name: "log",
    group: LOGGING,
    arg: "text|json",
    kind: oneOf("text", "json"),
    field: "log",
    default: "text",
    help: "log format (default text)",
  }),
  flag({
    name: "metrics",
    group: LOGGING,
    kind: hostAndPort,
    field: "metrics",
    help:
      "serve Prometheus metrics on http://HOST:PORT/metrics and /healthz (such as 127.0.0.1:9465; keep it on a loopback or internal address); under --workers, summed and per worker",
  }),
  flag({
    name: "quiet",
    group: LOGGING,
    kind: on,
    field: "quiet",
    default: false,
    help:
      "log the listening line and errors of the server only (failures of clients and AUTH lock-outs are summarised in one line a minute at most)",
  }),
  flag({
    name: "verbose",
    group: LOGGING,
    kind: on,
    field: "verbose",
    default: false,
    help:
      "also log connections, the SMTP dialogue and each failure of a client",
  }),
  flag({
    name: "help",
    short: "h",
    group: "",
    kind: on,
    help: "show this help",
  }),
  flag({ name: "version", group: "", kind: on, help: "show the version" }),
];

/** Where a flag's description starts in `--help`, and the lines' width. */
const COLUMN = 25;
const WIDTH = 75;

/**
 * One entry of `--help`: `spec` indented by two, its description from
 * column 25 (on the next line when `spec` leaves no room), wrapped at 75
 * columns (never at a no-break space).
 *
 * @param spec the flag with its value, such as `--port PORT`
 * @param text its description
 *
 * @example
 * ```ts
 * import { helpEntry } from "./flags.ts";
 *
 * helpEntry("--version", "show the version");
 * // "  --version              show the version"
 * ```
 */
export function helpEntry(spec: string, text: string): string {
  const lines: string[] = [];
  const indent = " ".repeat(COLUMN);
  let line = `  ${spec}`;
  if (line.length < COLUMN) line = line.padEnd(COLUMN);
  else {
    lines.push(line);
    line = indent;
  }
  for (const word of text.split(/[ \t\n]+/)) {
    if (line === indent || line.length === COLUMN) line += word;
    else if (line.length + 1 + word.length <= WIDTH) line += ` ${word}`;
    else {
      lines.push(line);
      line = indent + word;
    }
  }
  lines.push(line);
  return lines.join("\n").replaceAll("\u00a0", " ");
}

/**
 * A flag as `--help` and the README show it: with its value's placeholder.
 *
 * @param f the flag
 *
 * @example
 * ```ts
 * import { FLAGS, flagSpec } from "./flags.ts";
 *
 * flagSpec(FLAGS.find((f) => f.name === "size")!); // "--size BYTES"
 * ```
 */
export function flagSpec(f: Flag): string {
  const value = f.arg ?? f.kind.arg;
  return `--${f.name}${value !== undefined ? ` ${value}` : ""}`;
}

/**
 * The flags' part of `--help`: each group under its heading, groups apart
 * by a blank line.
 *
 * @param flags the table
 *
 * @example
 * ```ts
 * import { FLAGS, flagsHelp } from "./flags.ts";
 *
 * console.log(flagsHelp(FLAGS).split("\n")[0]); // "Listening:"
 * ```
 */
export function flagsHelp(flags: readonly Flag[] = FLAGS): string {
  const groups = new Map<string, string[]>();
  for (const f of flags) {
    const spec = `${f.short !== undefined ? `-${f.short}, ` : ""}${
      flagSpec(f)
    }`;
    const entries = groups.get(f.group) ?? [];
    entries.push(helpEntry(spec, f.help));
    groups.set(f.group, entries);
  }
  return [...groups].map(([group, entries]) =>
    (group === "" ? "" : `${group}:\n`) + entries.join("\n")
  ).join("\n\n");
}

/**
 * `parseArgs`' options for the table.
 *
 * @example
 * ```ts
 * import { parseArgs } from "node:util";
 * import { PARSE_OPTIONS } from "./flags.ts";
 *
 * parseArgs({ args: ["--port", "25"], options: PARSE_OPTIONS }).values.port; // "25"
 * ```
 */
export const PARSE_OPTIONS: Record<
  string,
  { type: "boolean" | "string"; multiple?: boolean; short?: string }
> = Object.fromEntries(
  FLAGS.map((f) => [f.name, {
    type: f.kind.type,
    ...(f.kind.multiple ? { multiple: true } : {}),
    ...(f.short !== undefined ? { short: f.short } : {}),
  }]),
);

/**
 * The values `parseArgs` read, checked and converted into
 * {@link CliOptions}: first every flag given without the one it
 * `needs`, then each value in the table's order, then the defaults. The
 * first mistake is a `CliError` naming the flag.
 *
 * @param values `parseArgs`' values, by flag name
 *
 * @example
 * ```ts
 * import { readFlags } from "./flags.ts";
 *
 * readFlags({ port: "25" }).port; // 25
 * readFlags({ port: "http" }); // throws CliError "--port: must be ..."
 * ```
 */
export function readFlags(values: Record<string, unknown>): CliOptions {
  for (const f of FLAGS) {
    if (
      f.needs !== undefined && values[f.name] !== undefined &&
      values[f.needs] === undefined
    ) {
      throw new CliError(`--${f.name}`, `needs --${f.needs}`);
    }
  }
  const options: Record<string, unknown> = {};
  for (const f of FLAGS) {
    if (f.field === undefined) continue;
    const raw = values[f.name];
    if (raw !== undefined) {
      options[f.field] = f.kind.parse(raw, `--${f.name}`);
    } else if (
      "default" in f && (f.needs === undefined || values[f.needs] !== undefined)
    ) {
      options[f.field] = typeof f.default === "function"
        ? f.default()
        : f.default;
    }
  }
  return options as unknown as CliOptions;
}

/**
 * The server options that are a field of the command line as is (those
 * set: the library's defaults otherwise). The others (where to listen,
 * TLS, AUTH, the PROXY protocol, the hooks) serve.ts makes.
 *
 * @param o the command line's settings
 *
 * @example
 * ```ts
 * import { readFlags, serveOptionsOf } from "./flags.ts";
 *
 * serveOptionsOf(readFlags({ size: "10M" })).maxMessageSize; // 10485760
 * ```
 */
export function serveOptionsOf(o: CliOptions): Partial<ServeOptions> {
  const out: Record<string, unknown> = {};
  for (const f of FLAGS) {
    if (f.serve === undefined || f.field === undefined) continue;
    if (o[f.field] !== undefined) out[f.serve] = o[f.field];
  }
  return out as Partial<ServeOptions>;
}
