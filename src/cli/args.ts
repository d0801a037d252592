/**
 * The command line: flags, usage text, and their parsing into a
 * {@link CliCommand}. Every mistake is a {@link CliError} naming the flag.
 *
 * @module
 */

import * as os from "node:os";
import { parseArgs } from "node:util";
import { CidrSet } from "../exports/transport.ts";
import { suggest } from "../keys.ts";

/**
 * The version of smtpd (the same as in `package.json` and `deno.json`).
 *
 * @example
 * ```ts
 * import { VERSION } from "@smtpd/smtpd/cli";
 *
 * console.log(`smtpd ${VERSION}`);
 * ```
 */
export const VERSION: string = "0.1.0";

/**
 * The text of `smtpd --help`: the flags in groups, durations and sizes
 * with their units, and what the signals do.
 *
 * @example
 * ```ts
 * import { USAGE } from "./args.ts";
 *
 * console.log(USAGE.split("\n")[0]); // "Usage: smtpd [options]"
 * ```
 */
export const USAGE: string = `Usage: smtpd [options]
       smtpd hash-password [USER] < password-file

Receives mail over SMTP and stores every message in a Maildir, posts it
to a webhook, or both.

A TIME is a whole number with a unit: 500ms, 30s, 5m or 1h (a number
without one is in the unit the flag took before units, shown as "bare").
BYTES take K, M or G for KiB, MiB, GiB.

Listening:
  --host ADDRESS         interface to listen on (default 127.0.0.1;
                         0.0.0.0 or :: for every interface)
  --port PORT            port to listen on, 0 for any free one (default
                         2525; the listening line names the one chosen)
  --socket PATH          listen on a Unix domain socket instead of
                         --host/--port (a stale socket file is replaced;
                         removed on exit)
  --server-name NAME     name in the greeting and in Received headers
                         (default: this machine's host name)
  --lmtp                 speak LMTP (RFC 2033; LHLO, one reply per
                         recipient): each recipient gets its own copy in
                         the Maildir, and its own reply
  --dsn                  offer DSN (RFC 3461): accept RET, ENVID, NOTIFY
                         and ORCPT (default off)
  --no-chunking          do not offer CHUNKING (BDAT) and BINARYMIME
                         (RFC 3030; offered by default)
  --greeting-delay TIME  wait this long before the greeting; clients that
                         talk first get 554 and are disconnected
                         (default 0s; bare: ms)

Delivery:
  --maildir DIR          Maildir to deliver into, created when missing
                         (default ./maildir)
  --no-maildir           store nothing (needs --webhook)
  --webhook URL          post each message as JSON to this http(s) URL;
                         the sender gets 250 only after a 2xx answer
                         (redirects are not followed), else 451 4.3.0;
                         with a Maildir the file enters new/ only after
                         the 2xx; user:password@ in the URL is sent as
                         Basic auth
  --webhook-timeout TIME how long to wait for the webhook's answer
                         (default 30s; bare: ms)
  --webhook-header "NAME: VALUE"
                         send this header with each post (repeatable)
  --webhook-secret-file FILE
                         sign each post with the secret in FILE (or in
                         $SMTPD_WEBHOOK_SECRET): X-Smtpd-Timestamp and
                         X-Smtpd-Signature: v1=HMAC-SHA256 hex

Limits:
  --size BYTES           largest message accepted (default 25M)
  --max-recipients N     recipients per message (default 100)
  --max-connections N    connections at once (default 1000)
  --max-connections-per-ip N
                         connections at once from one client (an IPv4
                         address, an IPv6 /64; default 50; raise it behind
                         a relay or a load balancer that does not send the
                         PROXY protocol)
  --max-auth-failures-per-ip N
                         failed AUTH attempts per client (an IPv4 address,
                         an IPv6 /64) in 15 minutes before AUTH from it
                         gets 454 4.7.0 for 15 minutes (default 10; 0
                         turns it off)
  --command-timeout TIME time a command line may take from its first byte
                         (default 1m; bare: seconds)
  --session-timeout TIME time a whole session may take (default 30m;
                         0 turns it off; bare: seconds)

TLS and AUTH:
  --tls-cert FILE        PEM certificate chain: offer STARTTLS
  --tls-key FILE         PEM private key of --tls-cert
  --tls-implicit         TLS from the first byte (port 465 style) instead
                         of STARTTLS
  --require-tls          refuse mail before STARTTLS (530 5.7.0)
  --auth-file FILE       require AUTH with these users: one user:hash per
                         line, hashes made by "smtpd hash-password"
  --allow-insecure-auth  allow AUTH without TLS (for local testing)

Proxy and processes:
  --proxy-protocol       every connection starts with a PROXY protocol v1
                         or v2 header (HAProxy send-proxy[-v2]); the
                         client's address comes from it (on a --socket,
                         from any peer)
  --proxy-trusted LIST   comma-separated addresses and CIDR ranges allowed
                         to send the header (default 127.0.0.0/8,::1;
                         not with --socket)
  --workers N|auto       server processes sharing the port (default 1;
                         auto: one per core); one that dies is replaced;
                         the per-client limits count across the workers,
                         --max-connections per worker

Logging:
  --log text|json        log format (default text)
  --quiet                log the listening line and errors of the server
                         only (failures of clients and AUTH lock-outs are
                         summarised in one line a minute at most)
  --verbose              also log connections, the SMTP dialogue and each
                         failure of a client

  -h, --help             show this help
  --version              show the version

Commands:
  hash-password [USER]   read a password from standard input and print its
                         scrypt hash (as USER:hash when USER is given)

Signals: SIGINT and SIGTERM stop the server gracefully (messages in
transfer finish, then a summary; a second signal stops at once). SIGHUP
reloads --tls-cert, --tls-key and --auth-file for new connections; when
one cannot be read or is invalid, the old ones stay and the log says why.`;

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
  /** `--log`. */
  log: "text" | "json";
  /** `--quiet`. */
  quiet: boolean;
  /** `--verbose`. */
  verbose: boolean;
}

/**
 * What the command line asks for.
 *
 * @example
 * ```ts
 * import { parseCliArgs } from "./args.ts";
 *
 * parseCliArgs(["hash-password", "alice"]); // { command: "hash-password", user: "alice" }
 * ```
 */
export type CliCommand =
  | { command: "serve"; options: CliOptions }
  | { command: "help" }
  | { command: "version" }
  | { command: "hash-password"; user?: string };

/**
 * A bad command line or an unusable file: printed as one line,
 * `smtpd: --flag: what is wrong`, before anything listens.
 *
 * @example
 * ```ts
 * import { CliError } from "./args.ts";
 *
 * const error = new CliError("--port", "must be a number from 0 to 65535");
 * console.log(error.message); // "--port: must be a number from 0 to 65535"
 * ```
 */
export class CliError extends Error {
  /** The flag (or command) at fault, such as `"--port"`, or `null`. */
  readonly flag: string | null;

  /**
   * Makes the error; its message is `flag: text`.
   *
   * @param flag the flag at fault, or `null`
   * @param text what is wrong with it
   */
  constructor(flag: string | null, text: string) {
    super(flag === null ? text : `${flag}: ${text}`);
    this.name = "CliError";
    this.flag = flag;
  }
}

const SERVE_FLAGS = {
  host: { type: "string" },
  port: { type: "string" },
  socket: { type: "string" },
  lmtp: { type: "boolean" },
  "no-chunking": { type: "boolean" },
  maildir: { type: "string" },
  "no-maildir": { type: "boolean" },
  webhook: { type: "string" },
  "webhook-timeout": { type: "string" },
  "webhook-header": { type: "string", multiple: true },
  "webhook-secret-file": { type: "string" },
  "server-name": { type: "string" },
  size: { type: "string" },
  "max-recipients": { type: "string" },
  "max-connections": { type: "string" },
  workers: { type: "string" },
  "max-connections-per-ip": { type: "string" },
  "max-auth-failures-per-ip": { type: "string" },
  "command-timeout": { type: "string" },
  "session-timeout": { type: "string" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  "tls-implicit": { type: "boolean" },
  "require-tls": { type: "boolean" },
  "auth-file": { type: "string" },
  "allow-insecure-auth": { type: "boolean" },
  dsn: { type: "boolean" },
  "proxy-protocol": { type: "boolean" },
  "proxy-trusted": { type: "string" },
  "greeting-delay": { type: "string" },
  log: { type: "string" },
  quiet: { type: "boolean" },
  verbose: { type: "boolean" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean" },
} as const;

const HASH_PASSWORD_FLAGS = { help: { type: "boolean", short: "h" } } as const;

/** parseArgs' errors, reworded to name the flag first (`known`: the flags parsed). */
function argsError(error: unknown, known: object = SERVE_FLAGS): CliError {
  const e = error as { code?: string; message?: string };
  const message = String(e?.message ?? error);
  const quoted = /'([^']*)'/.exec(message)?.[1] ?? "";
  const flag = quoted.split(" ")[0] || null;
  switch (e?.code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION": {
      const near = flag === null ? undefined : suggest(
        flag.replace(/^-+/, "").split("=")[0],
        Object.keys(known),
      );
      return new CliError(
        flag,
        near !== undefined
          ? `unknown option (did you mean --${near}?)`
          : "unknown option (see smtpd --help)",
      );
    }
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE":
      return /does not take an argument/.test(message)
        ? new CliError(flag, "takes no value")
        : new CliError(flag, "needs a value");
    case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL":
      return new CliError(
        quoted || null,
        "unexpected argument (see smtpd --help)",
      );
    default:
      return new CliError(null, message.split("\n")[0]);
  }
}

/** `--webhook-header "Name: value"`s as headers; an error names the header, never its value. */
function headerFlags(list: readonly string[]): Record<string, string> {
  const headers: Record<string, string> = {};
  const seen = new Set<string>();
  for (const item of list) {
    const colon = item.indexOf(":");
    const name = colon < 0 ? "" : item.slice(0, colon).trim();
    const value = colon < 0 ? "" : item.slice(colon + 1).trim();
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) {
      throw new CliError(
        "--webhook-header",
        'must be "Name: value" with a header name before the colon',
      );
    }
    if (value === "" || /[^\t\x20-\x7e\x80-\xff]/.test(value)) {
      throw new CliError(
        "--webhook-header",
        `${name} needs a value of one line of Latin-1 text`,
      );
    }
    const key = name.toLowerCase();
    if (
      [
        "content-type",
        "content-length",
        "host",
        "x-smtpd-timestamp",
        "x-smtpd-signature",
      ].includes(key)
    ) {
      throw new CliError("--webhook-header", `${name} is set by smtpd`);
    }
    if (seen.has(key)) {
      throw new CliError("--webhook-header", `${name} is given twice`);
    }
    seen.add(key);
    headers[name] = value;
  }
  return headers;
}

function integerFlag(
  flag: string,
  value: string | undefined,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): number | undefined {
  if (value === undefined) return undefined;
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!(n >= min && n <= max)) {
    throw new CliError(
      flag,
      max === Number.MAX_SAFE_INTEGER
        ? `must be a whole number of at least ${min}, not "${value}"`
        : `must be a whole number from ${min} to ${max}, not "${value}"`,
    );
  }
  return n;
}

const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;

/** `90000` → `"90s"`, `1800000` → `"30m"`: the largest unit that divides it. */
function formatDuration(ms: number): string {
  for (const unit of ["h", "m", "s"] as const) {
    if (ms >= UNIT_MS[unit] && ms % UNIT_MS[unit] === 0) {
      return `${ms / UNIT_MS[unit]}${unit}`;
    }
  }
  return ms === 0 ? "0s" : `${ms}ms`;
}

/**
 * A duration flag in milliseconds: a whole number with a unit (`500ms`,
 * `30s`, `5m`, `1h`), or a bare number in `bare` (the flag's unit before
 * units), from `min` to `max` milliseconds.
 */
function durationFlag(
  flag: string,
  value: string | undefined,
  bare: "ms" | "s",
  min: number,
  max: number,
): number | undefined {
  if (value === undefined) return undefined;
  const m = /^(\d+)(ms|s|m|h)?$/.exec(value.trim());
  const ms = m === null ? NaN : Number(m[1]) * UNIT_MS[
    (m[2] ?? bare) as keyof typeof UNIT_MS
  ];
  if (!(ms >= min && ms <= max)) {
    throw new CliError(
      flag,
      `must be a time from ${formatDuration(min)} to ${
        formatDuration(max)
      } such as 500ms, 30s, 5m or 1h (a bare number is in ${
        bare === "ms" ? "milliseconds" : "seconds"
      }), not "${value}"`,
    );
  }
  return ms;
}

/** The flags of per-address limits and deadlines; 0 means off where allowed. */
function abuseFlags(values: {
  "max-connections-per-ip"?: string;
  "max-auth-failures-per-ip"?: string;
  "command-timeout"?: string;
  "session-timeout"?: string;
}): Partial<CliOptions> {
  const out: Partial<CliOptions> = {};
  const perIp = integerFlag(
    "--max-connections-per-ip",
    values["max-connections-per-ip"],
    1,
  );
  if (perIp !== undefined) out.maxConnectionsPerIp = perIp;
  const failures = integerFlag(
    "--max-auth-failures-per-ip",
    values["max-auth-failures-per-ip"],
    0,
  );
  if (failures !== undefined) {
    out.maxAuthFailuresPerIp = failures === 0 ? Infinity : failures;
  }
  const command = durationFlag(
    "--command-timeout",
    values["command-timeout"],
    "s",
    1000,
    86_400_000,
  );
  if (command !== undefined) out.commandTimeout = command;
  const session = durationFlag(
    "--session-timeout",
    values["session-timeout"],
    "s",
    0,
    864_000_000,
  );
  if (session !== undefined) {
    out.sessionTimeout = session === 0 ? Infinity : session;
  }
  return out;
}

function sizeFlag(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const m = /^(\d+)([kmg])?$/i.exec(value);
  const unit = m?.[2]?.toLowerCase();
  const n = m === null ? NaN : Number(m[1]) *
    (unit === "k"
      ? 1024
      : unit === "m"
      ? 1024 ** 2
      : unit === "g"
      ? 1024 ** 3
      : 1);
  if (!(n >= 1 && n <= Number.MAX_SAFE_INTEGER)) {
    throw new CliError(
      "--size",
      `must be a positive number of bytes (K, M or G allowed), not "${value}"`,
    );
  }
  return n;
}

function textFlag(flag: string, value: string | undefined): string | undefined {
  // deno-lint-ignore no-control-regex
  if (value !== undefined && (value === "" || /[\x00-\x20\x7f]/.test(value))) {
    throw new CliError(flag, "must be a non-empty value without spaces");
  }
  return value;
}

/** `--workers N` or `auto` (one per core). */
function workersFlag(value: string | undefined): number {
  if (value === undefined) return 1;
  if (value === "auto") {
    try {
      return Math.max(1, os.availableParallelism?.() ?? os.cpus().length);
    } catch {
      return 1;
    }
  }
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!(n >= 1 && n <= 1024)) {
    throw new CliError(
      "--workers",
      `must be "auto" or a whole number from 1 to 1024, not "${value}"`,
    );
  }
  return n;
}

/** The machine's name when it makes a valid server name, else `localhost`. */
function defaultServerName(): string {
  try {
    const name = os.hostname();
    return /^[A-Za-z0-9_.-]+$/.test(name) ? name : "localhost";
  } catch {
    return "localhost";
  }
}

/**
 * Parses and checks the command line (without reading any file). Throws
 * {@link CliError} naming the flag for anything wrong: an unknown flag, a
 * missing or malformed value, or flags that need each other.
 *
 * @param argv the arguments after the program name
 *
 * @example
 * ```ts
 * import { parseCliArgs } from "./args.ts";
 *
 * const c = parseCliArgs(["--port", "0", "--maildir", "/tmp/mail", "--log", "json"]);
 * // { command: "serve", options: { port: 0, maildir: "/tmp/mail", log: "json", ... } }
 * parseCliArgs(["--port", "http"]); // throws CliError "--port: must be ..."
 * ```
 */
export function parseCliArgs(argv: readonly string[]): CliCommand {
  if (argv[0] === "hash-password") {
    let parsed;
    try {
      parsed = parseArgs({
        args: argv.slice(1),
        options: HASH_PASSWORD_FLAGS,
        strict: true,
        allowPositionals: true,
      });
    } catch (error) {
      throw argsError(error, HASH_PASSWORD_FLAGS);
    }
    if (parsed.values.help) return { command: "help" };
    if (parsed.positionals.length > 1) {
      throw new CliError(
        "hash-password",
        `takes at most one argument (the user), not ${parsed.positionals.length}`,
      );
    }
    const user = parsed.positionals[0];
    if (user !== undefined && (user === "" || /[:\s]/.test(user))) {
      throw new CliError(
        "hash-password",
        "the user must not be empty or contain ':' or spaces",
      );
    }
    return user === undefined
      ? { command: "hash-password" }
      : { command: "hash-password", user };
  }
  let values;
  try {
    values = parseArgs({
      args: [...argv],
      options: SERVE_FLAGS,
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (error) {
    throw argsError(error);
  }
  if (values.help) return { command: "help" };
  if (values.version) return { command: "version" };
  const log = values.log ?? "text";
  if (log !== "text" && log !== "json") {
    throw new CliError("--log", `must be "text" or "json", not "${log}"`);
  }
  if (values.quiet && values.verbose) {
    throw new CliError("--quiet", "cannot be used with --verbose");
  }
  if (values.maildir === "") {
    throw new CliError("--maildir", "must not be empty");
  }
  if (values.socket !== undefined) {
    if (values.socket === "") {
      throw new CliError("--socket", "must name a file");
    }
    if (values.host !== undefined || values.port !== undefined) {
      throw new CliError(
        "--socket",
        `cannot be used with --${
          values.host !== undefined ? "host" : "port"
        } (listen on a Unix socket or on TCP)`,
      );
    }
  }
  const webhook = values.webhook;
  if (webhook !== undefined) {
    let url: URL | null = null;
    try {
      url = new URL(webhook);
    } catch { /* reported below */ }
    if (
      url === null || (url.protocol !== "http:" && url.protocol !== "https:")
    ) {
      // Not the value: it may hold a password.
      throw new CliError(
        "--webhook",
        `must be an http:// or https:// URL${
          url === null ? "" : `, not ${url.protocol}`
        }`,
      );
    }
  }
  for (
    const flag of [
      "webhook-timeout",
      "webhook-header",
      "webhook-secret-file",
    ] as const
  ) {
    if (values[flag] !== undefined && webhook === undefined) {
      throw new CliError(`--${flag}`, "needs --webhook");
    }
  }
  if (values["webhook-secret-file"] === "") {
    throw new CliError("--webhook-secret-file", "must name a file");
  }
  if (values["no-maildir"] && webhook === undefined) {
    throw new CliError(
      "--no-maildir",
      "needs --webhook (messages would go nowhere)",
    );
  }
  if (webhook !== undefined && values.lmtp) {
    throw new CliError(
      "--webhook",
      "cannot be used with --lmtp (LMTP answers each recipient on its own; the webhook takes the message whole)",
    );
  }
  if (values["no-maildir"] && values.maildir !== undefined) {
    throw new CliError("--no-maildir", "cannot be used with --maildir");
  }
  for (const flag of ["tls-cert", "tls-key", "auth-file"] as const) {
    if (values[flag] === "") {
      throw new CliError(`--${flag}`, "must name a file");
    }
  }
  const options: CliOptions = {
    host: textFlag("--host", values.host) ?? "127.0.0.1",
    port: integerFlag("--port", values.port, 0, 65535) ?? 2525,
    socket: values.socket,
    lmtp: values.lmtp ?? false,
    chunking: !(values["no-chunking"] ?? false),
    maildir: values.maildir ?? "./maildir",
    ...(values["no-maildir"] ? { noMaildir: true } : {}),
    ...(webhook !== undefined
      ? {
        webhook,
        webhookTimeout: durationFlag(
          "--webhook-timeout",
          values["webhook-timeout"],
          "ms",
          1,
          600_000,
        ) ?? 30000,
        ...(values["webhook-header"] !== undefined
          ? { webhookHeaders: headerFlags(values["webhook-header"]) }
          : {}),
        ...(values["webhook-secret-file"] !== undefined
          ? { webhookSecretFile: values["webhook-secret-file"] }
          : {}),
      }
      : {}),
    serverName: textFlag("--server-name", values["server-name"]) ??
      defaultServerName(),
    size: sizeFlag(values.size),
    maxRecipients: integerFlag("--max-recipients", values["max-recipients"], 1),
    maxConnections: integerFlag(
      "--max-connections",
      values["max-connections"],
      1,
    ),
    workers: workersFlag(values.workers),
    ...abuseFlags(values),
    tlsCert: values["tls-cert"],
    tlsKey: values["tls-key"],
    tlsImplicit: values["tls-implicit"] ?? false,
    requireTls: values["require-tls"] ?? false,
    authFile: values["auth-file"],
    allowInsecureAuth: values["allow-insecure-auth"] ?? false,
    dsn: values.dsn ?? false,
    proxyProtocol: values["proxy-protocol"] ?? false,
    proxyTrusted: values["proxy-trusted"]?.split(",").map((t) => t.trim()),
    greetingDelay: durationFlag(
      "--greeting-delay",
      values["greeting-delay"],
      "ms",
      0,
      600_000,
    ),
    log,
    quiet: values.quiet ?? false,
    verbose: values.verbose ?? false,
  };
  const hookAuth = Object.keys(options.webhookHeaders ?? {})
    .some((n) => n.toLowerCase() === "authorization");
  if (hookAuth && /^[^:]+:\/\/[^/?#]*@/.test(options.webhook ?? "")) {
    throw new CliError(
      "--webhook-header",
      "Authorization cannot be given with a user name in the --webhook URL (sent as Basic auth)",
    );
  }
  if (options.workers > 1 && options.socket !== undefined) {
    throw new CliError(
      "--workers",
      "cannot be used with --socket (processes share TCP ports only)",
    );
  }
  if (
    options.serverName !== undefined && /^[.-]|[.-]$/.test(options.serverName)
  ) {
    throw new CliError(
      "--server-name",
      `"${options.serverName}" is not a host name`,
    );
  }
  if (options.tlsCert !== undefined && options.tlsKey === undefined) {
    throw new CliError("--tls-key", "is needed with --tls-cert");
  }
  if (options.tlsKey !== undefined && options.tlsCert === undefined) {
    throw new CliError("--tls-cert", "is needed with --tls-key");
  }
  const tls = options.tlsCert !== undefined;
  if (options.tlsImplicit && !tls) {
    throw new CliError("--tls-implicit", "needs --tls-cert and --tls-key");
  }
  if (options.requireTls && !tls) {
    throw new CliError("--require-tls", "needs --tls-cert and --tls-key");
  }
  if (options.proxyTrusted !== undefined) {
    if (!options.proxyProtocol) {
      throw new CliError("--proxy-trusted", "needs --proxy-protocol");
    }
    if (options.socket !== undefined) {
      throw new CliError(
        "--proxy-trusted",
        "cannot be used with --socket (on a Unix socket every peer may send the PROXY header: the socket file's permissions say who connects)",
      );
    }
    if (options.proxyTrusted.some((t) => t === "")) {
      throw new CliError("--proxy-trusted", "has an empty entry");
    }
    try {
      new CidrSet(options.proxyTrusted);
    } catch (error) {
      throw new CliError("--proxy-trusted", (error as Error).message);
    }
  }
  if (options.allowInsecureAuth && options.authFile === undefined) {
    throw new CliError("--allow-insecure-auth", "needs --auth-file");
  }
  if (options.authFile !== undefined && !tls && !options.allowInsecureAuth) {
    throw new CliError(
      "--auth-file",
      "AUTH is offered only over TLS: add --tls-cert and --tls-key " +
        "(or --allow-insecure-auth for local testing)",
    );
  }
  return { command: "serve", options };
}
