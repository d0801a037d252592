/**
 * The application's side of SMTP AUTH: which mechanisms to offer, and how
 * credentials are checked (the "auth attempt → yes or no" event).
 *
 * @module
 */

import type * as nodeCrypto from "node:crypto";
import {
  type AuthCredentials,
  type AuthMechanism,
  SUPPORTED_AUTH_MECHANISMS,
} from "./sasl.ts";
import type { Session } from "./session.ts";

/**
 * AUTH settings of {@link serve}. AUTH is offered only over TLS unless
 * `allowInsecureAuth` is set.
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd";
 *
 * await serve({
 *   port: 0,
 *   auth: {
 *     // required: true is the default once auth is given
 *     verify: ({ username, password }) => username === "alice" && password === "s3cret",
 *   },
 *   allowInsecureAuth: true, // for a local test only
 * });
 * ```
 */
export interface AuthOptions {
  /**
   * Checks credentials: `true` accepts, `false` answers 535 5.7.8; a thrown
   * `SmtpError` is sent as is, any other error answers 454 4.7.0. Gets the
   * password (PLAIN, LOGIN), the token (XOAUTH2), or the CRAM-MD5 challenge
   * and digest when there is no `lookupPassword`. With AUTH PLAIN it also
   * sees `authorizationId` (the identity the client asks to act as), but
   * `true` accepts the login only: see `authorize`.
   */
  verify?: (
    credentials: AuthCredentials,
    session: Session,
  ) => boolean | Promise<boolean>;
  /**
   * AUTH PLAIN with an authorization identity (`credentials.authorizationId`:
   * log in as `credentials.username`, act as `authorizationId`): called
   * after the credentials checked out; `true` allows it. Without this
   * hook, such an attempt fails with 535 5.7.8 (RFC 4616 §2); an
   * authorization identity equal to the login (or empty) needs no hook.
   * `session.user` is the login either way. A thrown `SmtpError` is sent
   * as is, any other error answers 454 4.7.0.
   *
   * @example
   * ```ts
   * import { serve } from "@smtpd/smtpd";
   *
   * const admins = new Set(["root"]);
   * await serve({
   *   port: 0,
   *   auth: {
   *     lookupPassword: (user) => (user === "root" ? "s3cret" : null),
   *     authorize: (authorizationId, { username }) => admins.has(username),
   *   },
   * });
   * ```
   */
  authorize?: (
    authorizationId: string,
    credentials: AuthCredentials,
    session: Session,
  ) => boolean | Promise<boolean>;
  /**
   * Returns a user's password in clear (or `null` for no such user). Needed
   * for CRAM-MD5, which is offered only with it; without `verify`, PLAIN and
   * LOGIN passwords are compared with it too.
   */
  lookupPassword?: (
    username: string,
    session: Session,
  ) => string | null | undefined | Promise<string | null | undefined>;
  /**
   * Mechanisms to offer. Default: PLAIN and LOGIN, plus CRAM-MD5 when
   * `lookupPassword` is given. XOAUTH2 is offered only when listed.
   */
  mechanisms?: AuthMechanism[];
  /**
   * MAIL without a successful AUTH gets 530 5.7.0. Default `true`: a
   * server that is given `auth` requires it. Say `required: false` to offer
   * AUTH while still taking unauthenticated mail (a server that receives
   * mail from the Internet for its own domains and lets its users submit
   * too, say).
   */
  required?: boolean;
}

/** What the engine is told of {@link AuthOptions}. */
export interface ResolvedAuth {
  /** The mechanisms to offer in EHLO (empty: no AUTH). */
  mechanisms: AuthMechanism[];
  /** Whether MAIL needs a successful AUTH first. */
  required: boolean;
}

/**
 * Validates {@link AuthOptions}: the mechanisms to offer, and whether AUTH
 * is required (`true` unless `required: false` is given).
 *
 * @example
 * ```ts
 * import { resolveAuth } from "./auth.ts";
 *
 * resolveAuth({ verify: () => true }); // { mechanisms: ["PLAIN", "LOGIN"], required: true }
 * ```
 */
export function resolveAuth(auth: AuthOptions | undefined): ResolvedAuth {
  if (auth === undefined) return { mechanisms: [], required: false };
  if (typeof auth !== "object" || auth === null) {
    throw new TypeError("Cannot use option auth: value is not an object");
  }
  for (const hook of ["verify", "lookupPassword", "authorize"] as const) {
    if (auth[hook] !== undefined && typeof auth[hook] !== "function") {
      throw new TypeError(
        `Cannot use option auth.${hook}: value is not a function`,
      );
    }
  }
  if (!auth.verify && !auth.lookupPassword) {
    throw new TypeError(
      "Cannot use option auth: it needs verify or lookupPassword",
    );
  }
  if (auth.required !== undefined && typeof auth.required !== "boolean") {
    throw new TypeError(
      "Cannot use option auth.required: value is not a boolean",
    );
  }
  const wanted = auth.mechanisms ??
    (auth.lookupPassword ? ["PLAIN", "LOGIN", "CRAM-MD5"] : ["PLAIN", "LOGIN"]);
  if (!Array.isArray(wanted) || wanted.length === 0) {
    throw new TypeError(
      "Cannot use option auth.mechanisms: value is not a non-empty array",
    );
  }
  const out: AuthMechanism[] = [];
  for (const m of wanted) {
    const name = String(m).toUpperCase() as AuthMechanism;
    if (!SUPPORTED_AUTH_MECHANISMS.includes(name)) {
      throw new TypeError(
        `Cannot use option auth.mechanisms: unknown mechanism ${String(m)}`,
      );
    }
    if (name === "CRAM-MD5" && !auth.lookupPassword) {
      throw new TypeError(
        "Cannot use option auth.mechanisms: CRAM-MD5 needs auth.lookupPassword",
      );
    }
    if (name === "XOAUTH2" && !auth.verify) {
      throw new TypeError(
        "Cannot use option auth.mechanisms: XOAUTH2 needs auth.verify",
      );
    }
    if (!out.includes(name)) out.push(name);
  }
  return { mechanisms: out, required: auth.required ?? true };
}

/**
 * `node:crypto`, loaded at the first AUTH attempt that needs it: loading
 * it at start-up cost 2–5 MB of RSS.
 */
let cryptoModule: Promise<typeof nodeCrypto> | null = null;
const loadCrypto = (): Promise<typeof nodeCrypto> =>
  cryptoModule ??= import("node:crypto");

function sameText(
  { timingSafeEqual }: typeof nodeCrypto,
  a: string,
  b: string,
): boolean {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  // Compare in constant time for the length of the expected value.
  if (x.length !== y.length) {
    timingSafeEqual(y, y);
    return false;
  }
  return timingSafeEqual(x, y);
}

/**
 * Checks credentials with the application's hooks: CRAM-MD5 against the
 * looked-up password (HMAC-MD5 of the challenge, RFC 2195), the others with
 * `verify` (or against the looked-up password when there is no `verify`).
 * Credentials with an `authorizationId` pass only when `authorize` also
 * allows it.
 *
 * @example
 * ```ts
 * import type { Session } from "@smtpd/smtpd";
 * import { checkAuth } from "./auth.ts";
 *
 * declare const session: Session;
 * const ok = await checkAuth(
 *   { lookupPassword: () => "s3cret" },
 *   { mechanism: "PLAIN", username: "alice", password: "s3cret" },
 *   session,
 * ); // true
 * ```
 */
export async function checkAuth(
  auth: AuthOptions,
  credentials: AuthCredentials,
  session: Session,
): Promise<boolean> {
  if (!(await authenticate(auth, credentials, session))) return false;
  const authzid = credentials.authorizationId;
  if (authzid === undefined || authzid === "") return true;
  if (authzid === credentials.username) return true;
  // RFC 4616 §2: acting as another identity needs the server's consent.
  if (auth.authorize === undefined) return false;
  return (await auth.authorize(authzid, credentials, session)) === true;
}

/** Whether the credentials check out (who the client is). */
async function authenticate(
  auth: AuthOptions,
  credentials: AuthCredentials,
  session: Session,
): Promise<boolean> {
  const { mechanism, username } = credentials;
  if (mechanism === "CRAM-MD5" && auth.lookupPassword) {
    const password = await auth.lookupPassword(username, session);
    const crypto = await loadCrypto();
    const expected = crypto.createHmac("md5", password ?? "")
      .update(credentials.challenge ?? "").digest("hex");
    return sameText(crypto, credentials.response ?? "", expected) &&
      typeof password === "string";
  }
  if (auth.verify) return (await auth.verify(credentials, session)) === true;
  if (credentials.password === undefined) return false;
  const password = await auth.lookupPassword!(username, session);
  const crypto = await loadCrypto();
  return sameText(crypto, credentials.password, password ?? "") &&
    typeof password === "string";
}
