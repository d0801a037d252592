/**
 * Files named on the command line (certificate, key, auth file, Maildir),
 * read and checked before anything listens, and listen errors as one line
 * naming the flag.
 *
 * @module
 */

import { createPrivateKey, X509Certificate } from "node:crypto";
import { access, constants, readFile, stat } from "node:fs/promises";
import type { TlsOptions } from "../transport.ts";
import { Maildir } from "../maildir.ts";
import { CliError, type CliOptions } from "./args.ts";
import { parseAuthFile } from "./password.ts";

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

export interface Loaded {
  tls?: TlsOptions;
  users?: Map<string, string>;
  warnings: string[];
}

/** Reads and checks the certificate, key and auth files. */
export async function loadFiles(o: CliOptions): Promise<Loaded> {
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

/**
 * The environment variable that holds the webhook's signing secret when
 * `--webhook-secret-file` is not given (so that it is not in `ps`).
 */
export const WEBHOOK_SECRET_ENV = "SMTPD_WEBHOOK_SECRET";

/**
 * The webhook's signing secret: `--webhook-secret-file`'s content (less its
 * line end) or the environment's. Read once at start-up (SIGHUP reloads
 * {@link loadFiles}' files only).
 */
export async function webhookSecret(
  o: CliOptions,
): Promise<string | undefined> {
  if (o.webhookSecretFile === undefined) {
    const env = process.env[WEBHOOK_SECRET_ENV];
    return env === undefined || env === "" ? undefined : env;
  }
  const text = (await readFlagFile(
    "--webhook-secret-file",
    o.webhookSecretFile,
  )).replace(/\r?\n$/, "");
  if (text === "" || /[\r\n]/.test(text)) {
    throw new CliError(
      "--webhook-secret-file",
      `${o.webhookSecretFile} must hold the secret on one line`,
    );
  }
  return text;
}

export async function openMaildir(
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
export function listenError(error: unknown, o: CliOptions): CliError {
  const e = error as { code?: string; name?: string; message?: string } | null;
  const message = String(e?.message ?? error);
  const code = e?.code ?? "";
  if (o.socket !== undefined) {
    // prepareSocketPath's errors name the path already.
    const text = message.split("\n")[0];
    return new CliError(
      "--socket",
      text.startsWith("Cannot listen on ")
        ? `cannot listen on ${text.slice(17)}`
        : `cannot listen on ${o.socket}: ${text}`,
    );
  }
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
