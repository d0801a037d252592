/**
 * SASL mechanisms of SMTP AUTH (RFC 4954): PLAIN (RFC 4616), LOGIN,
 * CRAM-MD5 (RFC 2195) and XOAUTH2, as pure step functions over the decoded
 * client responses. The engine drives the exchange; nothing here does I/O.
 *
 * @module
 */

/** Mechanisms the engine knows. */
export type AuthMechanism = "PLAIN" | "LOGIN" | "CRAM-MD5" | "XOAUTH2";

/** The mechanisms, in the order they are advertised. */
export const SUPPORTED_AUTH_MECHANISMS: readonly AuthMechanism[] = [
  "PLAIN",
  "LOGIN",
  "CRAM-MD5",
  "XOAUTH2",
];

/**
 * Credentials as the client sent them, handed to the application to verify.
 *
 * - PLAIN and LOGIN: `username` and `password` (and `authorizationId` for
 *   PLAIN when the client asked to act as another identity).
 * - XOAUTH2: `username` and `token` (the bearer token).
 * - CRAM-MD5: `username`, `challenge` and `response` (the hex HMAC-MD5 the
 *   client computed over the challenge); verify it against the stored
 *   password.
 */
export interface AuthCredentials {
  /** The mechanism used. */
  mechanism: AuthMechanism;
  /** The authentication identity. */
  username: string;
  /** The password (PLAIN, LOGIN). */
  password?: string;
  /**
   * PLAIN only: the identity the client asks to act as (the SASL
   * authorization identity, RFC 4616 §2), present only when it is not
   * empty and differs from `username`. `verify` sees it, but returning
   * `true` accepts the login only: unless `auth.authorize` allows this
   * identity for this login, the attempt fails with 535 5.7.8.
   */
  authorizationId?: string;
  /** The bearer token (XOAUTH2). */
  token?: string;
  /** The challenge sent (CRAM-MD5). */
  challenge?: string;
  /** The client's hex digest (CRAM-MD5). */
  response?: string;
}

/** One step of an exchange: send a challenge, finish, or fail. */
export type SaslStep =
  | { type: "challenge"; text: string } // base64 text after "334 "
  | { type: "done"; credentials: AuthCredentials }
  | { type: "error"; reason: "syntax" };

const B64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const UTF8 = new TextDecoder("utf-8", { fatal: true });
const ENC = new TextEncoder();

/**
 * Decodes strict base64 to UTF-8 text; `null` when it is not valid base64
 * or not valid UTF-8.
 *
 * @example
 * ```ts
 * import { decodeBase64Text } from "@smtpd/smtpd/engine";
 *
 * decodeBase64Text("dXNlcg=="); // "user"
 * decodeBase64Text("not base64!"); // null
 * ```
 */
export function decodeBase64Text(s: string): string | null {
  if (!B64.test(s)) return null;
  try {
    const bin = atob(s);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return UTF8.decode(bytes);
  } catch {
    return null;
  }
}

/**
 * Encodes UTF-8 text as base64.
 *
 * @example
 * ```ts
 * import { encodeBase64Text } from "@smtpd/smtpd/engine";
 *
 * encodeBase64Text("Username:"); // "VXNlcm5hbWU6"
 * ```
 */
export function encodeBase64Text(s: string): string {
  let bin = "";
  for (const b of ENC.encode(s)) bin += String.fromCharCode(b);
  return btoa(bin);
}

/**
 * A SASL exchange in progress. Feed it the client's decoded responses;
 * `start` takes the initial response (or `null` when none was sent).
 *
 * @example
 * ```ts
 * import { SaslExchange } from "@smtpd/smtpd/engine";
 *
 * const x = new SaslExchange("PLAIN", "<1.2@mx>");
 * const step = x.start("\0user\0secret");
 * // { type: "done", credentials: { mechanism: "PLAIN", username: "user", password: "secret" } }
 * ```
 */
export class SaslExchange {
  /** The mechanism of this exchange. */
  readonly mechanism: AuthMechanism;
  #challenge: string;
  #username: string | null = null;

  /**
   * Starts an exchange for one AUTH command.
   *
   * @param mechanism the mechanism the client chose
   * @param challenge the CRAM-MD5 challenge (`<random.time@host>`); unused by
   *   the other mechanisms
   */
  constructor(mechanism: AuthMechanism, challenge: string) {
    this.mechanism = mechanism;
    this.#challenge = challenge;
  }

  /** Starts with the initial response (decoded), or `null` if none. */
  start(initial: string | null): SaslStep {
    switch (this.mechanism) {
      case "PLAIN":
      case "XOAUTH2":
        return initial === null
          ? { type: "challenge", text: "" }
          : this.next(initial);
      case "LOGIN":
        if (initial === null || initial === "") {
          return { type: "challenge", text: encodeBase64Text("Username:") };
        }
        return this.next(initial);
      case "CRAM-MD5":
        // RFC 2195: no initial response; the server speaks first.
        if (initial !== null) return { type: "error", reason: "syntax" };
        return { type: "challenge", text: encodeBase64Text(this.#challenge) };
    }
  }

  /** The client's next (decoded) response. */
  next(response: string): SaslStep {
    const m = this.mechanism;
    switch (m) {
      case "PLAIN": {
        const parts = response.split("\0");
        if (parts.length !== 3 || parts[1] === "") {
          return { type: "error", reason: "syntax" };
        }
        const [authzid, username, password] = parts;
        return {
          type: "done",
          credentials: {
            mechanism: m,
            username,
            password,
            ...(authzid !== "" && authzid !== username
              ? { authorizationId: authzid }
              : {}),
          },
        };
      }
      case "LOGIN":
        if (this.#username === null) {
          if (response === "") return { type: "error", reason: "syntax" };
          this.#username = response;
          return { type: "challenge", text: encodeBase64Text("Password:") };
        }
        return {
          type: "done",
          credentials: {
            mechanism: m,
            username: this.#username,
            password: response,
          },
        };
      case "CRAM-MD5": {
        const sp = response.lastIndexOf(" ");
        const digest = response.slice(sp + 1).toLowerCase();
        if (sp <= 0 || !/^[0-9a-f]{32}$/.test(digest)) {
          return { type: "error", reason: "syntax" };
        }
        return {
          type: "done",
          credentials: {
            mechanism: m,
            username: response.slice(0, sp),
            challenge: this.#challenge,
            response: digest,
          },
        };
      }
      case "XOAUTH2": {
        // "user=" user ^A "auth=Bearer " token ^A ^A
        const fields = response.split("\x01");
        let username: string | null = null;
        let token: string | null = null;
        for (const f of fields) {
          if (f.startsWith("user=")) username = f.slice(5);
          else if (/^auth=Bearer /i.test(f)) token = f.slice(12);
        }
        if (!username || !token) return { type: "error", reason: "syntax" };
        return { type: "done", credentials: { mechanism: m, username, token } };
      }
    }
  }
}
