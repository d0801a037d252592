#!/usr/bin/env node
/**
 * The command-line server: receives mail over SMTP and stores every message
 * in a Maildir. The same program on each runtime:
 *
 * ```sh
 * npx smtpd --port 2525 --maildir ./maildir
 * deno run -A src/cli/main.ts --port 2525
 * bun src/cli/main.ts --port 2525
 * node --import tsx src/cli/main.ts --port 2525   # Node 24: node src/cli/main.ts
 * ```
 *
 * It prints one line when listening and one per message; SIGINT and SIGTERM
 * close it gracefully (a message in transfer finishes or gets a temporary
 * error) and print a summary; SIGHUP reloads the certificate and the auth
 * file. `smtpd hash-password` makes the password
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

import { realpathSync } from "node:fs";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { CliError, parseCliArgs, USAGE, VERSION } from "./args.ts";
import { hashPasswordCommand } from "./hash_password.ts";
import { errorText } from "./log.ts";
import { serveCommand } from "./serve.ts";
import { isWorker, leaveParent, superviseWorkers } from "./workers.ts";

export { VERSION };

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
        if (command.options.workers > 1 && !isWorker()) {
          return await superviseWorkers(command.options);
        }
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

/**
 * Runs the command line as a program: {@link main} with the process's
 * exit code set from its result, and a worker of `--workers` let go of
 * its supervisor at the end. What `smtpd` does when it is started; also
 * for a launcher that loads this module instead of running it (the
 * checkout's `npm start`).
 *
 * @param argv the arguments after the program name (`process.argv.slice(2)`)
 *
 * @example
 * ```ts
 * import process from "node:process";
 * import { runProgram } from "@smtpd/smtpd/cli";
 *
 * await runProgram(process.argv.slice(2)); // process.exitCode is set
 * ```
 */
export async function runProgram(argv: string[]): Promise<void> {
  let code: number;
  try {
    code = await main(argv);
  } catch (error) {
    process.stderr.write(`smtpd: error: ${errorText(error)}\n`);
    code = 1;
  }
  process.exitCode = code;
  leaveParent(code);
}

if (isEntryPoint()) void runProgram(process.argv.slice(2));
