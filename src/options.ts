/**
 * Engine options, their documented defaults, and their validation.
 *
 * Every limit is validated when the engine (or `serve()`) is created: zero,
 * negative, NaN, a fraction or a non-number throws a `TypeError`, never
 * silently means "unlimited". `Infinity` is accepted where a limit may be
 * switched off on purpose.
 *
 * @module
 */

import { type AuthMechanism, SUPPORTED_AUTH_MECHANISMS } from "./sasl.ts";
import { checkKeys } from "./keys.ts";

/** What the engine does with a CR or LF that is not part of a CRLF pair inside a message body. */
export type BareLineEndingPolicy = "reject" | "normalize";

/**
 * Options of the protocol engine. All are optional.
 *
 * @example
 * ```ts
 * import { SmtpEngine } from "@smtpd/smtpd/engine";
 *
 * const engine = new SmtpEngine({ serverName: "mx.example.org", maxRecipients: 50 });
 * ```
 */
export interface EngineOptions {
  /** Name the server gives in its greeting and EHLO reply. Default `"localhost"`. */
  serverName?: string;
  /** Text after the server name in the 220 greeting. Default `"ESMTP smtpd"` (`"LMTP smtpd"` with `lmtp`). */
  greeting?: string;
  /** Longest command line in octets, CRLF included (RFC 5321 §4.5.3.1.4). Default 512. */
  maxLineLength?: number;
  /** Recipients accepted per transaction; more get 452 4.5.3. Default 100. */
  maxRecipients?: number;
  /** Largest message in octets (advertised with SIZE); larger gets 552 5.3.4. Default 26214400 (25 MiB). */
  maxMessageSize?: number;
  /** Consecutive bad commands before 421 4.7.0 and close. Default 10. */
  maxBadCommands?: number;
  /** Bare CR or LF in a body: `"reject"` the message with 550 5.6.0 (default) or `"normalize"` it to CRLF. */
  bareLineEnding?: BareLineEndingPolicy;
  /** Advertise DSN (RFC 3461) and accept RET, ENVID, NOTIFY and ORCPT. Default `false`. */
  dsn?: boolean;
  /** Advertise SMTPUTF8 (RFC 6531) and accept UTF-8 addresses with it. Default `true`. */
  smtputf8?: boolean;
  /** Advertise STARTTLS (set by the server when a certificate is configured). Default `false`. */
  startTls?: boolean;
  /** The connection is already encrypted (implicit TLS). Default `false`. */
  secure?: boolean;
  /** Milliseconds without client input before 421 4.4.2 (RFC 5321 §4.5.3.2: 5 minutes). Default 300000. */
  idleTimeout?: number;
  /** Milliseconds allowed for a whole DATA phase (RFC 5321 §4.5.3.2.6). Default 600000. */
  dataTimeout?: number;
  /**
   * Milliseconds a command line (and an AUTH response line) may take from
   * its first byte to its CRLF; past it, 421 4.4.2 and close. A client that
   * dribbles a line byte by byte keeps resetting `idleTimeout`, not this
   * (Postfix's per-record deadline). Message bodies are bounded by
   * `dataTimeout` instead, not by this. Time the server spends in a hook
   * does not count. `Infinity` turns it off. Default 60000.
   */
  commandTimeout?: number;
  /**
   * Milliseconds a whole session may last, from the connection to the
   * last reply; past it, 421 4.4.2 and close (a message in transfer is
   * aborted; a hook in progress is waited for first). `Infinity` turns it
   * off. Default 1800000 (30 minutes).
   */
  sessionTimeout?: number;
  /** SASL mechanisms to offer with AUTH (RFC 4954); empty turns AUTH off. Default `[]`. */
  authMechanisms?: readonly AuthMechanism[];
  /** Offer and accept AUTH without TLS (otherwise 538 5.7.11). Default `false`. */
  allowInsecureAuth?: boolean;
  /** MAIL needs a successful AUTH first (530 5.7.0). Default `false`. */
  authRequired?: boolean;
  /** MAIL and AUTH need TLS first (530 5.7.0). Default `false`. */
  requireTls?: boolean;
  /** Failed AUTH attempts per connection before 421 4.7.0 and close. Default 3. */
  maxAuthFailures?: number;
  /** Emit a `command` event for every command line (for logging). Default `false`. */
  traceCommands?: boolean;
  /** Advertise CHUNKING and accept BDAT (RFC 3030). Default `true`. */
  chunking?: boolean;
  /** Advertise BINARYMIME and accept `BODY=BINARYMIME` (RFC 3030); only with `chunking`. Default `true`. */
  binaryMime?: boolean;
  /**
   * Speak LMTP (RFC 2033) instead of SMTP: `LHLO` replaces EHLO and HELO,
   * and the end of each message gets one reply per accepted recipient.
   * The default greeting text becomes `"LMTP smtpd"`. Default `false`.
   */
  lmtp?: boolean;
}

/** {@link EngineOptions} with every default filled in. */
export type ResolvedEngineOptions = Required<EngineOptions>;

/**
 * The documented defaults of {@link EngineOptions}.
 *
 * @example
 * ```ts
 * import { ENGINE_DEFAULTS } from "@smtpd/smtpd/engine";
 *
 * console.log(ENGINE_DEFAULTS.maxLineLength); // 512
 * ```
 */
export const ENGINE_DEFAULTS: Readonly<ResolvedEngineOptions> = Object.freeze({
  serverName: "localhost",
  greeting: "ESMTP smtpd",
  maxLineLength: 512,
  maxRecipients: 100,
  maxMessageSize: 26214400,
  maxBadCommands: 10,
  bareLineEnding: "reject",
  dsn: false,
  smtputf8: true,
  startTls: false,
  secure: false,
  idleTimeout: 300000,
  dataTimeout: 600000,
  commandTimeout: 60000,
  sessionTimeout: 1800000,
  authMechanisms: [],
  allowInsecureAuth: false,
  authRequired: false,
  requireTls: false,
  maxAuthFailures: 3,
  traceCommands: false,
  chunking: true,
  binaryMime: true,
  lmtp: false,
});

const ENGINE_KEYS: ReadonlySet<string> = new Set(Object.keys(ENGINE_DEFAULTS));

/**
 * Validates a numeric limit: a positive integer (or `Infinity` when
 * `allowInfinity`), at least `min`. Returns `fallback` when `value` is
 * `undefined`.
 *
 * @example
 * ```ts
 * import { limitOption } from "@smtpd/smtpd/engine";
 *
 * limitOption("maxRecipients", undefined, 100); // 100
 * limitOption("maxRecipients", 0, 100); // throws TypeError
 * ```
 */
export function limitOption(
  name: string,
  value: unknown,
  fallback: number,
  { min = 1, allowInfinity = false }: {
    min?: number;
    allowInfinity?: boolean;
  } = {},
): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || Number.isNaN(value)) {
    throw new TypeError(`Cannot use option ${name}: value is not a number`);
  }
  if (value === Infinity && allowInfinity) return value;
  if (!Number.isInteger(value)) {
    throw new TypeError(`Cannot use option ${name}: value is not an integer`);
  }
  if (value < min) {
    throw new TypeError(
      `Cannot use option ${name}: value is less than ${min}`,
    );
  }
  return value;
}

function boolOption(name: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== "boolean") {
    throw new TypeError(`Cannot use option ${name}: value is not a boolean`);
  }
  return value;
}

// deno-lint-ignore no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/;

function textOption(name: string, value: unknown, fallback: string): string {
  if (value === undefined) return fallback;
  if (
    typeof value !== "string" || value === "" || CONTROL.test(value)
  ) {
    throw new TypeError(
      `Cannot use option ${name}: value is not a non-empty single-line string`,
    );
  }
  return value;
}

function mechanismsOption(value: unknown): readonly AuthMechanism[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) {
    throw new TypeError(
      "Cannot use option authMechanisms: value is not an array",
    );
  }
  const out: AuthMechanism[] = [];
  for (const m of value) {
    const name = typeof m === "string" ? m.toUpperCase() : m;
    if (!SUPPORTED_AUTH_MECHANISMS.includes(name as AuthMechanism)) {
      throw new TypeError(
        `Cannot use option authMechanisms: unknown mechanism ${String(m)}`,
      );
    }
    if (!out.includes(name as AuthMechanism)) out.push(name as AuthMechanism);
  }
  return out;
}

/** Resolved options that engines may share as they are (see sharedEngineOptions). */
const SHARED = new WeakSet<object>();

/**
 * Resolves engine options once for many engines: the result is frozen and
 * every engine made with it keeps it as its `options` (no copy and no
 * validation per connection). Not a public API: the server's drivers use
 * it; `new SmtpEngine(options)` copies any other object.
 *
 * @example
 * ```ts
 * import { sharedEngineOptions } from "./options.ts";
 *
 * const options = sharedEngineOptions({ serverName: "mx.example.org" });
 * Object.isFrozen(options); // true
 * ```
 */
export function sharedEngineOptions(
  options: EngineOptions,
): ResolvedEngineOptions {
  const resolved = Object.freeze(resolveEngineOptions(options));
  SHARED.add(resolved);
  return resolved;
}

/**
 * Whether `options` came from {@link sharedEngineOptions}.
 *
 * @example
 * ```ts
 * import { isSharedEngineOptions } from "./options.ts";
 *
 * isSharedEngineOptions({}); // false
 * ```
 */
export function isSharedEngineOptions(
  options: EngineOptions,
): options is ResolvedEngineOptions {
  return SHARED.has(options);
}

/**
 * Validates engine options and fills in the defaults.
 *
 * @example
 * ```ts
 * import { resolveEngineOptions } from "@smtpd/smtpd/engine";
 *
 * resolveEngineOptions({ maxMessageSize: 1024 }).maxMessageSize; // 1024
 * ```
 */
export function resolveEngineOptions(
  options: EngineOptions = {},
): ResolvedEngineOptions {
  const d = ENGINE_DEFAULTS;
  if (typeof options !== "object" || options === null) {
    throw new TypeError("Cannot use options: value is not an object");
  }
  checkKeys(options, ENGINE_KEYS);
  const policy = options.bareLineEnding ?? d.bareLineEnding;
  if (policy !== "reject" && policy !== "normalize") {
    throw new TypeError(
      `Cannot use option bareLineEnding: value is not "reject" or "normalize"`,
    );
  }
  const lmtp = boolOption("lmtp", options.lmtp, d.lmtp);
  return {
    serverName: textOption("serverName", options.serverName, d.serverName),
    greeting: textOption(
      "greeting",
      options.greeting,
      lmtp ? "LMTP smtpd" : d.greeting,
    ),
    // A line must at least hold "MAIL FROM:<>" and CRLF.
    maxLineLength: limitOption(
      "maxLineLength",
      options.maxLineLength,
      d.maxLineLength,
      { min: 64 },
    ),
    maxRecipients: limitOption(
      "maxRecipients",
      options.maxRecipients,
      d.maxRecipients,
    ),
    maxMessageSize: limitOption(
      "maxMessageSize",
      options.maxMessageSize,
      d.maxMessageSize,
      { allowInfinity: true },
    ),
    maxBadCommands: limitOption(
      "maxBadCommands",
      options.maxBadCommands,
      d.maxBadCommands,
    ),
    bareLineEnding: policy,
    dsn: boolOption("dsn", options.dsn, d.dsn),
    smtputf8: boolOption("smtputf8", options.smtputf8, d.smtputf8),
    startTls: boolOption("startTls", options.startTls, d.startTls),
    secure: boolOption("secure", options.secure, d.secure),
    idleTimeout: limitOption(
      "idleTimeout",
      options.idleTimeout,
      d.idleTimeout,
      {
        allowInfinity: true,
      },
    ),
    dataTimeout: limitOption(
      "dataTimeout",
      options.dataTimeout,
      d.dataTimeout,
      {
        allowInfinity: true,
      },
    ),
    commandTimeout: limitOption(
      "commandTimeout",
      options.commandTimeout,
      d.commandTimeout,
      { allowInfinity: true },
    ),
    sessionTimeout: limitOption(
      "sessionTimeout",
      options.sessionTimeout,
      d.sessionTimeout,
      { allowInfinity: true },
    ),
    authMechanisms: mechanismsOption(options.authMechanisms),
    allowInsecureAuth: boolOption(
      "allowInsecureAuth",
      options.allowInsecureAuth,
      d.allowInsecureAuth,
    ),
    authRequired: boolOption(
      "authRequired",
      options.authRequired,
      d.authRequired,
    ),
    requireTls: boolOption("requireTls", options.requireTls, d.requireTls),
    maxAuthFailures: limitOption(
      "maxAuthFailures",
      options.maxAuthFailures,
      d.maxAuthFailures,
    ),
    traceCommands: boolOption(
      "traceCommands",
      options.traceCommands,
      d.traceCommands,
    ),
    chunking: boolOption("chunking", options.chunking, d.chunking),
    binaryMime: boolOption("binaryMime", options.binaryMime, d.binaryMime),
    lmtp,
  };
}
