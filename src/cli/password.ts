/**
 * Password hashes (scrypt) and the `--auth-file` format: one `user:hash`
 * line per user, made by `smtpd hash-password`.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { randomBytes, scrypt, timingSafeEqual } from "node:crypto";

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
 * import { hashPassword } from "./password.ts";
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
 * import { hashPassword, verifyPassword } from "./password.ts";
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
 * import { parseAuthFile } from "./password.ts";
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
 * import { checkCredentials, hashPassword } from "./password.ts";
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
