#!/usr/bin/env node
/**
 * The command-line server: receives mail over SMTP and stores every message
 * in a Maildir (see {@link Maildir}). The same program on each runtime:
 *
 * ```sh
 * npx smtpd --port 2525 --maildir ./maildir
 * deno run -A src/cli.ts --port 2525
 * bun src/cli.ts --port 2525
 * node --import tsx src/cli.ts --port 2525   # Node 24: node src/cli.ts
 * ```
 *
 * It prints one line when listening and one per message; SIGINT and SIGTERM
 * close it gracefully (a message in transfer finishes or gets a temporary
 * error) and print a summary. `smtpd hash-password` makes the password
 * hashes of an `--auth-file`. Run `smtpd --help` for every option.
 *
 * @example
 * ```ts
 * import { main } from "@smtpd/smtpd/cli";
 *
 * // Runs until SIGINT or SIGTERM; resolves to the exit code.
 * const code = await main(["--port", "2525", "--maildir", "./maildir"]);
 * ```
 *
 * @module
 */

import { Buffer } from "node:buffer";
import {
  createPrivateKey,
  randomBytes,
  scrypt,
  timingSafeEqual,
  X509Certificate,
} from "node:crypto";
import { realpathSync } from "node:fs";
import { access, constants, readFile, stat } from "node:fs/promises";
import { hostname as osHostname } from "node:os";
import { resolve as resolvePath } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import {
  type LogEntry,
  type Message,
  serve,
  type ServeOptions,
  type Server,
  SmtpError,
  type TlsOptions,
} from "../mod.ts";
import { Maildir } from "./maildir.ts";

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

const USAGE = `Usage: smtpd [options]
       smtpd hash-password [USER] < password-file

Receives mail over SMTP and stores every message in a Maildir.

Options:
  --host ADDRESS         interface to listen on (default 127.0.0.1;
                         0.0.0.0 or :: for every interface)
  --port PORT            port to listen on, 0 for any free one (default 2525)
  --maildir DIR          Maildir to deliver into, created when missing
                         (default ./maildir)
  --server-name NAME     name in the greeting and in Received headers
                         (default: this machine's host name)
  --size BYTES           largest message accepted; K, M or G for KiB, MiB,
                         GiB (default 25M)
  --max-recipients N     recipients per message (default 100)
  --max-connections N    connections at once (default 1000)
  --tls-cert FILE        PEM certificate chain: offer STARTTLS
  --tls-key FILE         PEM private key of --tls-cert
  --tls-implicit         TLS from the first byte (port 465 style) instead
                         of STARTTLS
  --require-tls          refuse mail before STARTTLS (530 5.7.0)
  --auth-file FILE       require AUTH with these users: one user:hash per
                         line, hashes made by "smtpd hash-password"
  --allow-insecure-auth  allow AUTH without TLS (for local testing)
  --log text|json        log format (default text)
  --quiet                log errors only
  --verbose              also log connections and the SMTP dialogue
  -h, --help             show this help
  --version              show the version

Commands:
  hash-password [USER]   read a password from standard input and print its
                         scrypt hash (as USER:hash when USER is given)

Signals: SIGINT and SIGTERM stop the server gracefully.`;

/**
 * The server's settings, as the command line gives them.
 *
 * @example
 * ```ts
 * import { parseCliArgs } from "@smtpd/smtpd/cli";
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
  /** `--maildir`: the Maildir directory, as given. */
  maildir: string;
  /** `--server-name`: name in the greeting and the Received headers. */
  serverName: string;
  /** `--size`: largest message in bytes, or `undefined` for the default. */
  size?: number;
  /** `--max-recipients`. */
  maxRecipients?: number;
  /** `--max-connections`. */
  maxConnections?: number;
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
 * import { parseCliArgs } from "@smtpd/smtpd/cli";
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
 * import { CliError } from "@smtpd/smtpd/cli";
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
  maildir: { type: "string" },
  "server-name": { type: "string" },
  size: { type: "string" },
  "max-recipients": { type: "string" },
  "max-connections": { type: "string" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  "tls-implicit": { type: "boolean" },
  "require-tls": { type: "boolean" },
  "auth-file": { type: "string" },
  "allow-insecure-auth": { type: "boolean" },
  log: { type: "string" },
  quiet: { type: "boolean" },
  verbose: { type: "boolean" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean" },
} as const;

/** parseArgs' errors, reworded to name the flag first. */
function argsError(error: unknown): CliError {
  const e = error as { code?: string; message?: string };
  const message = String(e?.message ?? error);
  const quoted = /'([^']*)'/.exec(message)?.[1] ?? "";
  const flag = quoted.split(" ")[0] || null;
  switch (e?.code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return new CliError(flag, "unknown option (see smtpd --help)");
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

/** The machine's name when it makes a valid server name, else `localhost`. */
function defaultServerName(): string {
  try {
    const name = osHostname();
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
 * import { parseCliArgs } from "@smtpd/smtpd/cli";
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
        options: { help: { type: "boolean", short: "h" } },
        strict: true,
        allowPositionals: true,
      });
    } catch (error) {
      throw argsError(error);
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
  for (const flag of ["tls-cert", "tls-key", "auth-file"] as const) {
    if (values[flag] === "") {
      throw new CliError(`--${flag}`, "must name a file");
    }
  }
  const options: CliOptions = {
    host: textFlag("--host", values.host) ?? "127.0.0.1",
    port: integerFlag("--port", values.port, 0, 65535) ?? 2525,
    maildir: values.maildir ?? "./maildir",
    serverName: textFlag("--server-name", values["server-name"]) ??
      defaultServerName(),
    size: sizeFlag(values.size),
    maxRecipients: integerFlag("--max-recipients", values["max-recipients"], 1),
    maxConnections: integerFlag(
      "--max-connections",
      values["max-connections"],
      1,
    ),
    tlsCert: values["tls-cert"],
    tlsKey: values["tls-key"],
    tlsImplicit: values["tls-implicit"] ?? false,
    requireTls: values["require-tls"] ?? false,
    authFile: values["auth-file"],
    allowInsecureAuth: values["allow-insecure-auth"] ?? false,
    log,
    quiet: values.quiet ?? false,
    verbose: values.verbose ?? false,
  };
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

// ---------------------------------------------------------------------------
// Password hashes (scrypt) and the auth file

const SCRYPT = { N: 16384, r: 8, p: 1 } as const;
const HASH_PREFIX = "$scrypt$";
const B64 = "[A-Za-z0-9+/]+={0,2}";
const HASH_FORMAT = new RegExp(
  `^\\$scrypt\\$N=(\\d+),r=(\\d+),p=(\\d+)\\$(${B64})\\$(${B64})$`,
);

interface ScryptHash {
  N: number;
  r: number;
  p: number;
  salt: Uint8Array;
  key: Uint8Array;
}

function scryptKey(
  password: string,
  salt: Uint8Array,
  length: number,
  { N, r, p }: { N: number; r: number; p: number },
): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    scrypt(
      password.normalize("NFC"),
      salt,
      length,
      { N, r, p, maxmem: 256 * N * r + 1024 * 1024 },
      (error, key) => (error ? reject(error) : resolve(new Uint8Array(key))),
    );
  });
}

function base64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("base64").replace(/=+$/, "");
}

/** Reads `$scrypt$N=..,r=..,p=..$salt$key`; throws an Error saying what is wrong. */
function parseScryptHash(text: string): ScryptHash {
  const m = HASH_FORMAT.exec(text);
  if (m === null) {
    throw new Error(
      "the hash is not in the form $scrypt$N=16384,r=8,p=1$<salt>$<hash>",
    );
  }
  const [N, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (!(N >= 2 && N <= 2 ** 20 && (N & (N - 1)) === 0)) {
    throw new Error(`scrypt N=${m[1]} is not a power of 2 from 2 to 1048576`);
  }
  if (!(r >= 1 && r <= 64)) {
    throw new Error(`scrypt r=${m[2]} is not from 1 to 64`);
  }
  if (!(p >= 1 && p <= 16)) {
    throw new Error(`scrypt p=${m[3]} is not from 1 to 16`);
  }
  const salt = new Uint8Array(Buffer.from(m[4], "base64"));
  const key = new Uint8Array(Buffer.from(m[5], "base64"));
  if (salt.length < 8) throw new Error("the salt is shorter than 8 bytes");
  if (key.length < 16 || key.length > 128) {
    throw new Error("the hash is not 16 to 128 bytes long");
  }
  return { N, r, p, salt, key };
}

/**
 * Hashes a password with scrypt (N=16384, r=8, p=1, a 16-byte random salt,
 * a 32-byte key) in the form an `--auth-file` takes:
 * `$scrypt$N=16384,r=8,p=1$<salt base64>$<hash base64>`.
 *
 * @param password the password (normalized to Unicode NFC)
 *
 * @example
 * ```ts
 * import { hashPassword } from "@smtpd/smtpd/cli";
 *
 * const line = `alice:${await hashPassword("correct horse")}`;
 * ```
 */
export async function hashPassword(password: string): Promise<string> {
  if (typeof password !== "string" || password === "") {
    throw new TypeError("Cannot hash password: value is empty");
  }
  const salt = new Uint8Array(randomBytes(16));
  const key = await scryptKey(password, salt, 32, SCRYPT);
  return `${HASH_PREFIX}N=${SCRYPT.N},r=${SCRYPT.r},p=${SCRYPT.p}$${
    base64(salt)
  }$${base64(key)}`;
}

/**
 * Checks a password against a hash made by {@link hashPassword}, in
 * constant time. Resolves to `false` for a wrong password or a malformed
 * hash.
 *
 * @example
 * ```ts
 * import { hashPassword, verifyPassword } from "@smtpd/smtpd/cli";
 *
 * const hash = await hashPassword("secret");
 * await verifyPassword("secret", hash); // true
 * await verifyPassword("guess", hash); // false
 * ```
 */
export async function verifyPassword(
  password: string,
  hash: string,
): Promise<boolean> {
  let h: ScryptHash;
  try {
    h = parseScryptHash(hash);
  } catch {
    return false;
  }
  const key = await scryptKey(password, h.salt, h.key.length, h);
  return timingSafeEqual(key, h.key);
}

/**
 * Parses the text of an `--auth-file`: one `user:hash` per line, hashes
 * made by {@link hashPassword} (`smtpd hash-password`); blank lines and
 * lines starting with `#` are skipped. Throws an Error naming the line for
 * anything else: a plaintext password (refused), a bcrypt or unknown hash,
 * a malformed hash, a user listed twice. Never repeats a password in its
 * messages.
 *
 * @returns the hash of each user
 *
 * @example
 * ```ts
 * import { parseAuthFile } from "@smtpd/smtpd/cli";
 *
 * const users = parseAuthFile(
 *   "# users\nalice:$scrypt$N=16384,r=8,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g\n",
 * );
 * users.has("alice"); // true
 * ```
 */
export function parseAuthFile(text: string): Map<string, string> {
  const users = new Map<string, string>();
  const lines = text.replace(/^\uFEFF/, "").split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === "" || line.startsWith("#")) continue;
    const n = i + 1;
    const colon = line.indexOf(":");
    if (colon <= 0) throw new Error(`line ${n}: expected user:hash`);
    const user = line.slice(0, colon);
    const hash = line.slice(colon + 1).trim();
    if (/\s/.test(user)) {
      throw new Error(`line ${n}: the user name contains a space`);
    }
    if (!hash.startsWith("$")) {
      throw new Error(
        `line ${n}: the password of "${user}" is not a hash (plaintext passwords are refused); make one with "smtpd hash-password"`,
      );
    }
    if (/^\$2[abxy]?\$/.test(hash)) {
      throw new Error(
        `line ${n}: bcrypt hashes are not supported; make an scrypt hash with "smtpd hash-password"`,
      );
    }
    if (!hash.startsWith(HASH_PREFIX)) {
      throw new Error(
        `line ${n}: unknown hash scheme "${
          hash.split("$")[1]
        }" (only scrypt, made by "smtpd hash-password")`,
      );
    }
    try {
      parseScryptHash(hash);
    } catch (error) {
      throw new Error(`line ${n}: ${(error as Error).message}`);
    }
    if (users.has(user)) {
      throw new Error(`line ${n}: "${user}" is listed twice`);
    }
    users.set(user, hash);
  }
  return users;
}

let dummyHash: Promise<string> | null = null;

/**
 * Checks a user's password against the users of an auth file (from
 * {@link parseAuthFile}). An unknown user costs as much time as a known
 * one, so that timing does not tell which users exist.
 *
 * @example
 * ```ts
 * import { checkCredentials, hashPassword } from "@smtpd/smtpd/cli";
 *
 * const users = new Map([["alice", await hashPassword("secret")]]);
 * await checkCredentials(users, "alice", "secret"); // true
 * await checkCredentials(users, "mallory", "secret"); // false
 * ```
 */
export async function checkCredentials(
  users: ReadonlyMap<string, string>,
  username: string,
  password: string,
): Promise<boolean> {
  const hash = users.get(username);
  if (hash === undefined) {
    dummyHash ??= hashPassword("not a password");
    await verifyPassword(password, await dummyHash);
    return false;
  }
  return await verifyPassword(password, hash);
}

// ---------------------------------------------------------------------------
// Files named on the command line

function fileProblem(error: unknown): string {
  const code = (error as { code?: string } | null)?.code;
  switch (code) {
    case "ENOENT":
      return "no such file";
    case "EACCES":
    case "EPERM":
      return "permission denied";
    case "EISDIR":
      return "is a directory";
    case "ENOTDIR":
      return "a part of the path is not a directory";
    default:
      return (error as Error)?.message ?? String(error);
  }
}

async function readFlagFile(flag: string, path: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    throw new CliError(flag, `cannot read ${path}: ${fileProblem(error)}`);
  }
}

interface Loaded {
  tls?: TlsOptions;
  users?: Map<string, string>;
  warnings: string[];
}

/** Reads and checks the certificate, key and auth files. */
async function loadFiles(o: CliOptions): Promise<Loaded> {
  const loaded: Loaded = { warnings: [] };
  if (o.tlsCert !== undefined && o.tlsKey !== undefined) {
    const cert = await readFlagFile("--tls-cert", o.tlsCert);
    const key = await readFlagFile("--tls-key", o.tlsKey);
    let x509: X509Certificate;
    try {
      x509 = new X509Certificate(cert);
    } catch {
      throw new CliError("--tls-cert", `${o.tlsCert} is not a PEM certificate`);
    }
    let privateKey;
    try {
      privateKey = createPrivateKey(key);
    } catch {
      throw new CliError(
        "--tls-key",
        `${o.tlsKey} is not a PEM private key (or it is encrypted)`,
      );
    }
    if (!x509.checkPrivateKey(privateKey)) {
      throw new CliError(
        "--tls-key",
        `${o.tlsKey} does not match the certificate in ${o.tlsCert}`,
      );
    }
    const expires = new Date(x509.validTo);
    if (expires.getTime() < Date.now()) {
      loaded.warnings.push(
        `--tls-cert: the certificate expired on ${expires.toISOString()}`,
      );
    }
    loaded.tls = { cert, key };
  }
  if (o.authFile !== undefined) {
    const text = await readFlagFile("--auth-file", o.authFile);
    try {
      loaded.users = parseAuthFile(text);
    } catch (error) {
      throw new CliError(
        "--auth-file",
        `${o.authFile} ${(error as Error).message}`,
      );
    }
    if (loaded.users.size === 0) {
      throw new CliError("--auth-file", `${o.authFile} lists no users`);
    }
    try {
      const mode = (await stat(o.authFile)).mode;
      if (process.platform !== "win32" && (mode & 0o004) !== 0) {
        loaded.warnings.push(
          `--auth-file: ${o.authFile} is readable by every user (chmod 600 it)`,
        );
      }
    } catch { /* read above; a stat failure is no reason to stop */ }
  }
  return loaded;
}

async function openMaildir(
  o: CliOptions,
  path: string,
): Promise<Maildir> {
  const maildir = new Maildir(path, { serverName: o.serverName });
  try {
    await maildir.create();
  } catch (error) {
    throw new CliError(
      "--maildir",
      `cannot create ${path}: ${fileProblem(error)}`,
    );
  }
  for (const sub of ["tmp", "new"]) {
    try {
      await access(`${path}/${sub}`, constants.W_OK);
    } catch (error) {
      throw new CliError(
        "--maildir",
        `cannot write to ${path}/${sub}: ${fileProblem(error)}`,
      );
    }
  }
  return maildir;
}

/** Turns a failure to listen into a one-line error naming the flag. */
function listenError(error: unknown, o: CliOptions): CliError {
  const e = error as { code?: string; name?: string; message?: string } | null;
  const message = String(e?.message ?? error);
  const code = e?.code ?? "";
  const where = `${o.host.includes(":") ? `[${o.host}]` : o.host}:${o.port}`;
  if (
    code === "EADDRINUSE" || e?.name === "AddrInUse" || /in use/i.test(message)
  ) {
    return new CliError(
      "--port",
      `cannot listen on ${where}: address already in use`,
    );
  }
  if (code === "EACCES" || e?.name === "PermissionDenied") {
    return new CliError(
      "--port",
      `cannot listen on ${where}: permission denied` +
        (o.port < 1024 ? " (ports below 1024 need privileges)" : ""),
    );
  }
  if (
    code === "EADDRNOTAVAIL" || code === "ENOTFOUND" || code === "EAI_AGAIN" ||
    e?.name === "AddrNotAvailable" ||
    /not available|resolve|lookup|getaddrinfo|invalid/i.test(message)
  ) {
    return new CliError(
      "--host",
      `cannot listen on ${where}: ${message.split("\n")[0]}`,
    );
  }
  if (o.tlsCert !== undefined && /tls|ssl|certificate|key|pem/i.test(message)) {
    return new CliError("--tls-cert", message.split("\n")[0]);
  }
  return new CliError(
    null,
    `cannot listen on ${where}: ${message.split("\n")[0]}`,
  );
}

// ---------------------------------------------------------------------------
// Logging

type Fields = Record<string, unknown>;

class Log {
  readonly #json: boolean;
  readonly #quiet: boolean;
  readonly verbose: boolean;

  constructor(o: Pick<CliOptions, "log" | "quiet" | "verbose">) {
    this.#json = o.log === "json";
    this.#quiet = o.quiet;
    this.verbose = o.verbose;
  }

  #write(toErr: boolean, event: string, text: string, fields: Fields): void {
    const time = new Date().toISOString();
    const line = this.#json
      ? JSON.stringify({ time, event, ...fields })
      : `${time} ${text}`;
    (toErr ? process.stderr : process.stdout).write(line + "\n");
  }

  info(event: string, text: string, fields: Fields = {}): void {
    if (!this.#quiet) this.#write(false, event, text, fields);
  }

  debug(event: string, text: string, fields: Fields = {}): void {
    if (this.verbose) this.#write(false, event, text, fields);
  }

  warn(event: string, text: string, fields: Fields = {}): void {
    this.#write(true, event, `warning: ${text}`, fields);
  }

  error(event: string, text: string, fields: Fields = {}): void {
    this.#write(true, event, `error: ${text}`, fields);
  }
}

function errorText(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return typeof code === "string" && !error.message.includes(code)
      ? `${code}: ${error.message}`
      : error.message;
  }
  return String(error);
}

function duration(ms: number): string {
  let s = Math.round(ms / 1000);
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  return h > 0 ? `${h}h ${m}m ${s}s` : m > 0 ? `${m}m ${s}s` : `${s}s`;
}

const hostPort = (host: string, port: number) =>
  `${host.includes(":") ? `[${host}]` : host}:${port}`;

/** The server's log entries, in the CLI's log. */
function serverLogger(log: Log, listen: { runtime?: string }) {
  return (entry: LogEntry): void => {
    switch (entry.type) {
      case "listen":
        listen.runtime = entry.runtime;
        break;
      case "error":
        log.error(
          "error",
          `${
            entry.session ? `session=${entry.session} ` : ""
          }${entry.message}: ${errorText(entry.error)}`,
          {
            session: entry.session,
            message: entry.message,
            error: errorText(entry.error),
          },
        );
        break;
      case "refused":
        log.warn(
          "refused",
          `refused ${entry.remoteAddress}: ${entry.reason}`,
          { remoteAddress: entry.remoteAddress, reason: entry.reason },
        );
        break;
      case "connect":
        log.debug(
          "connect",
          `session=${entry.session} connect from ${
            hostPort(entry.remoteAddress, entry.remotePort)
          }`,
          entry,
        );
        break;
      case "close":
        log.debug(
          "close",
          `session=${entry.session} close (${entry.reason}, ${entry.messages} messages)`,
          entry,
        );
        break;
      case "command":
        log.debug("command", `session=${entry.session} < ${entry.line}`, entry);
        break;
      case "reply":
        log.debug(
          "reply",
          `session=${entry.session} > ${
            entry.text.replace(/\r\n$/, "").replace(/\r\n/g, "\\r\\n")
          }`,
          entry,
        );
        break;
      case "message":
        break; // the CLI logs the delivered message itself, with its file
      case "auth":
        log.info(
          "auth",
          `session=${entry.session} auth ${entry.mechanism} user=${entry.username} ${
            entry.success ? "ok" : "failed"
          }`,
          entry,
        );
        break;
      default:
        ((x: never) => x)(entry);
    }
  };
}

// ---------------------------------------------------------------------------
// Commands

function runtimeName(runtime: string | undefined): string {
  const versions = process.versions as Record<string, string | undefined>;
  const name = runtime ??
    (versions.bun ? "bun" : versions.deno ? "deno" : "node");
  const version = versions[name];
  return version ? `${name} ${version}` : name;
}

async function readStdin(): Promise<string> {
  const parts: Uint8Array[] = [];
  for await (const chunk of process.stdin) {
    parts.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
  }
  return Buffer.concat(parts).toString("utf8");
}

/** Reads a line from the terminal without echoing it. */
function promptHidden(prompt: string): Promise<string> {
  const stdin = process.stdin as typeof process.stdin & {
    setRawMode(mode: boolean): unknown;
  };
  return new Promise((resolve, reject) => {
    process.stderr.write(prompt);
    stdin.setRawMode(true);
    stdin.resume();
    let value = "";
    const decoder = new TextDecoder();
    const finish = () => {
      stdin.off("data", onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write("\n");
    };
    const onData = (data: Uint8Array | string) => {
      const text = typeof data === "string"
        ? data
        : decoder.decode(data, { stream: true });
      for (const ch of text) {
        if (ch === "\r" || ch === "\n" || ch === "\x04") {
          finish();
          resolve(value);
          return;
        }
        if (ch === "\x03") {
          finish();
          reject(new CliError("hash-password", "interrupted"));
          return;
        }
        if (ch === "\x7f" || ch === "\b") {
          value = [...value].slice(0, -1).join("");
        } else if (ch >= " ") value += ch;
      }
    };
    stdin.on("data", onData);
  });
}

async function hashPasswordCommand(user: string | undefined): Promise<number> {
  let password: string;
  const stdin = process.stdin as typeof process.stdin & {
    setRawMode?: unknown;
  };
  if (stdin.isTTY && typeof stdin.setRawMode === "function") {
    password = await promptHidden("Password: ");
    if (password !== "" && password !== await promptHidden("Again: ")) {
      throw new CliError("hash-password", "the passwords do not match");
    }
  } else {
    password = (await readStdin()).replace(/\r?\n$/, "");
    if (/[\r\n]/.test(password)) {
      throw new CliError(
        "hash-password",
        "the password on standard input spans more than one line",
      );
    }
  }
  if (password === "") {
    throw new CliError("hash-password", "the password is empty");
  }
  const hash = await hashPassword(password);
  process.stdout.write(`${user === undefined ? "" : `${user}:`}${hash}\n`);
  return 0;
}

async function serveCommand(o: CliOptions): Promise<number> {
  const log = new Log(o);
  const started = Date.now();
  const maildirPath = resolvePath(o.maildir);
  // Everything that can fail because of a flag fails here, before listening.
  const loaded = await loadFiles(o);
  const maildir = await openMaildir(o, maildirPath);
  for (const warning of loaded.warnings) {
    log.warn("warning", warning, { warning });
  }

  const stats = { messages: 0, bytes: 0, failed: 0 };
  const listen: { runtime?: string } = {};

  const options: ServeOptions = {
    hostname: o.host,
    port: o.port,
    serverName: o.serverName,
    ...(o.size !== undefined ? { maxMessageSize: o.size } : {}),
    ...(o.maxRecipients !== undefined
      ? { maxRecipients: o.maxRecipients }
      : {}),
    ...(o.maxConnections !== undefined
      ? { maxConnections: o.maxConnections }
      : {}),
    ...(loaded.tls !== undefined
      ? { tls: loaded.tls, implicitTls: o.tlsImplicit }
      : {}),
    // The engine enforces these: MAIL (and AUTH) before STARTTLS get 530
    // 5.7.0; with an auth file, MAIL before a successful AUTH gets 530.
    requireTls: o.requireTls,
    allowInsecureAuth: o.allowInsecureAuth,
    // The auth file holds scrypt hashes, never passwords, so CRAM-MD5
    // (which needs the plaintext password) is not offered.
    ...(loaded.users !== undefined
      ? {
        auth: {
          required: true,
          mechanisms: ["PLAIN", "LOGIN"],
          verify: ({ username, password }) =>
            checkCredentials(loaded.users!, username, password ?? ""),
        },
      }
      : {}),
    logger: serverLogger(log, listen),
    async onMessage(message: Message) {
      try {
        const delivery = await maildir.deliver(message);
        stats.messages++;
        stats.bytes += message.size;
        log.info(
          "message",
          `message id=${message.id} from=<${message.from}> to=${
            message.to.map((a) => `<${a}>`).join(",")
          } size=${message.size} file=${delivery.path}`,
          {
            id: message.id,
            from: message.from,
            to: message.to,
            size: message.size,
            file: delivery.path,
          },
        );
      } catch (error) {
        if (error instanceof SmtpError && error.cause !== undefined) {
          stats.failed++;
          log.error(
            "delivery-failed",
            `delivery failed id=${message.id} from=<${message.from}>: ${
              errorText(error.cause)
            } (replied ${error.toString()})`,
            {
              id: message.id,
              from: message.from,
              to: message.to,
              error: errorText(error.cause),
              reply: error.toString(),
            },
          );
        } else {
          log.debug(
            "message-aborted",
            `message id=${message.id} not received: ${errorText(error)}`,
            {
              id: message.id,
              error: errorText(error),
            },
          );
        }
        throw error;
      }
    },
  };

  // Stop on SIGINT or SIGTERM (watched before listening, so that a signal
  // right after the listening line is not lost); a second one stops at once.
  let signalled: (signal: string) => void = () => {};
  const stopSignal = new Promise<string>((resolve) => (signalled = resolve));
  let signals = 0;
  const onSignal = (signal: string) => {
    signals++;
    if (signals === 1) signalled(signal);
    else {
      log.error("exit", `${signal} again: exiting without waiting`, { signal });
      process.exit(1);
    }
  };
  const handlers = (["SIGINT", "SIGTERM"] as const).map((signal) => {
    const handler = () => onSignal(signal);
    try {
      process.on(signal, handler);
    } catch { /* a signal this platform cannot watch */ }
    return () => {
      try {
        process.off(signal, handler);
      } catch { /* never added */ }
    };
  });

  let server: Server;
  try {
    server = await serve(options);
  } catch (error) {
    for (const remove of handlers) remove();
    if (error instanceof CliError) throw error;
    throw listenError(error, o);
  }

  const where = hostPort(server.addr.hostname, server.addr.port);
  const runtime = runtimeName(listen.runtime);
  const tlsMode = loaded.tls === undefined
    ? ""
    : o.tlsImplicit
    ? ", implicit TLS"
    : ", STARTTLS";
  log.info(
    "listening",
    `smtpd ${VERSION} listening on ${where} (${runtime}${tlsMode}), Maildir ${maildirPath}`,
    {
      version: VERSION,
      host: server.addr.hostname,
      port: server.addr.port,
      runtime,
      tls: loaded.tls === undefined
        ? "none"
        : o.tlsImplicit
        ? "implicit"
        : "starttls",
      maildir: maildirPath,
    },
  );
  const why = await Promise.race([
    stopSignal,
    server.finished.then(() => "listener closed"),
  ]);
  log.info("stopping", `${why}: closing (messages in transfer may finish)`, {
    reason: why,
  });
  await server.close();
  for (const remove of handlers) remove();
  const uptime = Date.now() - started;
  log.info(
    "stopped",
    `stopped after ${
      duration(uptime)
    }: ${stats.messages} messages, ${stats.bytes} bytes` +
      (stats.failed > 0 ? `, ${stats.failed} failed deliveries` : ""),
    {
      messages: stats.messages,
      bytes: stats.bytes,
      failed: stats.failed,
      uptime: uptime / 1000,
    },
  );
  return why === "listener closed" ? 1 : 0;
}

/**
 * Runs the command line: `smtpd [options]` serves until SIGINT or SIGTERM,
 * `smtpd hash-password` prints a hash, `--help` and `--version` print and
 * return. Resolves to the exit code (0 on a clean stop); errors in the
 * command line or its files print one line, `smtpd: --flag: problem`, to
 * standard error and resolve to 2 (1 for other failures), before anything
 * listens.
 *
 * @param argv the arguments after the program name (`process.argv.slice(2)`)
 *
 * @example
 * ```ts
 * import { main } from "@smtpd/smtpd/cli";
 *
 * const code = await main(["--version"]); // prints "smtpd 0.1.0", resolves to 0
 * ```
 */
export async function main(argv: string[]): Promise<number> {
  try {
    const command = parseCliArgs(argv);
    switch (command.command) {
      case "help":
        process.stdout.write(USAGE + "\n");
        return 0;
      case "version":
        process.stdout.write(`smtpd ${VERSION}\n`);
        return 0;
      case "hash-password":
        return await hashPasswordCommand(command.user);
      case "serve":
        return await serveCommand(command.options);
      default:
        return ((x: never) => x)(command);
    }
  } catch (error) {
    const line = error instanceof CliError
      ? error.message
      : `error: ${errorText(error).split("\n")[0]}`;
    process.stderr.write(`smtpd: ${line}\n`);
    return error instanceof CliError ? 2 : 1;
  }
}

/** Whether this module is the program being run (not imported). */
function isEntryPoint(): boolean {
  // Property accesses only: a bundler building CommonJS replaces them.
  const main: unknown = (import.meta as { main?: unknown }).main;
  if (typeof main === "boolean") return main;
  try {
    const url: unknown = import.meta.url;
    const script = process.argv[1];
    if (!script || typeof url !== "string") return false;
    return realpathSync(script) === realpathSync(fileURLToPath(url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (error) => {
      process.stderr.write(`smtpd: error: ${errorText(error)}\n`);
      process.exitCode = 1;
    },
  );
}
