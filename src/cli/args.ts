/**
 * The command line: `--help`, and its parsing into a {@link CliCommand}.
 * The flags themselves (their values, defaults, help texts) are the
 * table of flags.ts; the rules between flags are here, after it. Every
 * mistake is a {@link CliError} naming the flag.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { suggest } from "../keys.ts";
import { CliError, webhookProblem } from "./flag_kinds.ts";
import { checkWebhookHeaders } from "../webhook.ts";
import {
  type CliOptions,
  flagsHelp,
  helpEntry,
  PARSE_OPTIONS,
  readFlags,
} from "./flags.ts";

export { CliError } from "./flag_kinds.ts";
export type { CliOptions } from "./flags.ts";

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

${flagsHelp()}

Commands:
${
  helpEntry(
    "hash-password [USER]",
    "read a password from standard input and print its scrypt hash (as USER:hash when USER is given)",
  )
}

Signals: SIGINT and SIGTERM stop the server gracefully (messages in
transfer finish, then a summary; a second signal stops at once). SIGHUP
reloads --tls-cert, --tls-key and --auth-file for new connections; when
one cannot be read or is invalid, the old ones stay and the log says why.`;

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

const HASH_PASSWORD_FLAGS = { help: { type: "boolean", short: "h" } } as const;

/** parseArgs' errors, reworded to name the flag first (`known`: the flags parsed). */
function argsError(error: unknown, known: object = PARSE_OPTIONS): CliError {
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
      options: PARSE_OPTIONS,
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (error) {
    throw argsError(error);
  }
  if (values.help) return { command: "help" };
  if (values.version) return { command: "version" };
  const options = readFlags(values);
  // The rules between flags.
  if (options.quiet && options.verbose) {
    throw new CliError("--quiet", "cannot be used with --verbose");
  }
  if (
    options.socket !== undefined &&
    (values.host !== undefined || values.port !== undefined)
  ) {
    throw new CliError(
      "--socket",
      `cannot be used with --${
        values.host !== undefined ? "host" : "port"
      } (listen on a Unix socket or on TCP)`,
    );
  }
  if (options.noMaildir && options.webhook === undefined) {
    throw new CliError(
      "--no-maildir",
      "needs --webhook (messages would go nowhere)",
    );
  }
  if (options.webhook !== undefined && options.lmtp) {
    throw new CliError(
      "--webhook",
      "cannot be used with --lmtp (LMTP answers each recipient on its own; the webhook takes the message whole)",
    );
  }
  if (options.noMaildir && values.maildir !== undefined) {
    throw new CliError("--no-maildir", "cannot be used with --maildir");
  }
  if (options.webhook !== undefined) {
    // As postWebhook checks them: Authorization and a user name in the URL.
    try {
      checkWebhookHeaders(
        options.webhookHeaders ?? {},
        new URL(options.webhook),
      );
    } catch (error) {
      throw new CliError(
        "--webhook-header",
        `${webhookProblem(error)} in --webhook (sent as Basic auth)`,
      );
    }
  }
  if (options.workers > 1 && options.socket !== undefined) {
    throw new CliError(
      "--workers",
      "cannot be used with --socket (processes share TCP ports only)",
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
  if (options.proxyTrusted !== undefined && options.socket !== undefined) {
    throw new CliError(
      "--proxy-trusted",
      "cannot be used with --socket (on a Unix socket every peer may send the PROXY header: the socket file's permissions say who connects)",
    );
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
