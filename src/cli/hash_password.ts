/**
 * `smtpd hash-password [user]`: reads a password (prompting without echo
 * in a terminal, else from standard input) and prints its scrypt hash.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import process from "node:process";
import { CliError } from "./args.ts";
import { hashPassword } from "./password.ts";

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

export async function hashPasswordCommand(
  user: string | undefined,
): Promise<number> {
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
