/**
 * The kinds of value a command-line flag takes (a switch, a name, a
 * bounded whole number, BYTES, a TIME with its bare unit, a list, a
 * repeatable header, …): how each is given to `parseArgs` and checked.
 * Every mistake is a {@link CliError} naming the flag.
 *
 * @module
 */

import * as os from "node:os";
import {
  CidrSet,
  dnsServersOption,
  parseMilterAddress,
} from "../exports/transport.ts";
import { checkWebhookHeaders, webhookUrl } from "../webhook.ts";

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

/**
 * How a flag's value is given and read: `parseArgs`' type (a `boolean`
 * flag takes no value), whether it may be repeated, the placeholder of
 * its value in `--help` (when the kind has one of its own), and the check
 * and conversion of what was given.
 *
 * @example
 * ```ts
 * import { integer } from "./flag_kinds.ts";
 *
 * integer(1).parse("5", "--max-recipients"); // 5
 * ```
 */
export interface Kind<T> {
  /** `parseArgs`' type. */
  readonly type: "boolean" | "string";
  /** Every occurrence is kept (`raw` is then a list). */
  readonly multiple?: boolean;
  /** The value's placeholder in `--help`, such as `TIME`. */
  readonly arg?: string;
  /**
   * The value as given (a string, strings when `multiple`, `true` for a
   * boolean flag), checked and converted.
   *
   * @param raw what `parseArgs` read
   * @param flag the flag, such as `"--port"`, for the error
   */
  parse(raw: unknown, flag: string): T;
}

/**
 * A switch: `true` when given.
 *
 * @example
 * ```ts
 * import { on } from "./flag_kinds.ts";
 *
 * on.parse(true, "--lmtp"); // true
 * ```
 */
export const on: Kind<boolean> = { type: "boolean", parse: () => true };

/**
 * A switch that turns something off: `false` when given.
 *
 * @example
 * ```ts
 * import { off } from "./flag_kinds.ts";
 *
 * off.parse(true, "--no-chunking"); // false
 * ```
 */
export const off: Kind<boolean> = { type: "boolean", parse: () => false };

/**
 * A string as given, refused when empty with `empty` (such as `"must name
 * a file"`).
 *
 * @param empty what the error says of an empty value
 *
 * @example
 * ```ts
 * import { nonEmpty } from "./flag_kinds.ts";
 *
 * nonEmpty("must name a file").parse("users", "--auth-file"); // "users"
 * ```
 */
export function nonEmpty(empty: string): Kind<string> {
  return {
    type: "string",
    parse(raw, flag) {
      if (raw === "") throw new CliError(flag, empty);
      return raw as string;
    },
  };
}

/**
 * A non-empty word without spaces or control characters.
 *
 * @example
 * ```ts
 * import { word } from "./flag_kinds.ts";
 *
 * word.parse("::1", "--host"); // "::1"
 * ```
 */
export const word: Kind<string> = {
  type: "string",
  parse(raw, flag) {
    const value = raw as string;
    // deno-lint-ignore no-control-regex
    if (value === "" || /[\x00-\x20\x7f]/.test(value)) {
      throw new CliError(flag, "must be a non-empty value without spaces");
    }
    return value;
  },
};

/**
 * A host name: a {@link word} that neither starts nor ends with `.` or `-`.
 *
 * @example
 * ```ts
 * import { hostName } from "./flag_kinds.ts";
 *
 * hostName.parse("mx.example.org", "--server-name"); // "mx.example.org"
 * ```
 */
export const hostName: Kind<string> = {
  type: "string",
  parse(raw, flag) {
    const value = word.parse(raw, flag);
    if (/^[.-]|[.-]$/.test(value)) {
      throw new CliError(flag, `"${value}" is not a host name`);
    }
    return value;
  },
};

/**
 * One of a few words.
 *
 * @param choices the words allowed
 *
 * @example
 * ```ts
 * import { oneOf } from "./flag_kinds.ts";
 *
 * oneOf("text", "json").parse("json", "--log"); // "json"
 * ```
 */
export function oneOf<const C extends string>(...choices: C[]): Kind<C> {
  return {
    type: "string",
    parse(raw, flag) {
      if (!(choices as string[]).includes(raw as string)) {
        throw new CliError(
          flag,
          `must be ${choices.map((c) => `"${c}"`).join(" or ")}, not "${raw}"`,
        );
      }
      return raw as C;
    },
  };
}

/**
 * An http:// or https:// URL. The error never repeats the value: it may
 * hold a password.
 *
 * @example
 * ```ts
 * import { httpUrl } from "./flag_kinds.ts";
 *
 * httpUrl.parse("https://example.org/in", "--webhook");
 * ```
 */
export const httpUrl: Kind<string> = {
  type: "string",
  parse(raw, flag) {
    try {
      webhookUrl(raw as string);
    } catch {
      let protocol: string | null = null;
      try {
        protocol = new URL(raw as string).protocol;
      } catch { /* not a URL at all */ }
      throw new CliError(
        flag,
        `must be an http:// or https:// URL${
          protocol === null ? "" : `, not ${protocol}`
        }`,
      );
    }
    return raw as string;
  },
};

/**
 * A whole number from `min` to `max`; with `zeroIsOff`, 0 reads as
 * `Infinity` (no limit).
 *
 * @param min the smallest allowed
 * @param max the largest allowed
 * @param zeroIsOff whether 0 means off
 *
 * @example
 * ```ts
 * import { integer } from "./flag_kinds.ts";
 *
 * integer(0, 65535).parse("2525", "--port"); // 2525
 * integer(0, undefined, true).parse("0", "--max-auth-failures-per-ip"); // Infinity
 * ```
 */
export function integer(
  min: number,
  max: number = Number.MAX_SAFE_INTEGER,
  zeroIsOff = false,
): Kind<number> {
  return {
    type: "string",
    parse(raw, flag) {
      const value = raw as string;
      const n = /^\d+$/.test(value) ? Number(value) : NaN;
      if (!(n >= min && n <= max)) {
        throw new CliError(
          flag,
          max === Number.MAX_SAFE_INTEGER
            ? `must be a whole number of at least ${min}, not "${value}"`
            : `must be a whole number from ${min} to ${max}, not "${value}"`,
        );
      }
      return zeroIsOff && n === 0 ? Infinity : n;
    },
  };
}

/**
 * `N` from 1 to 1024, or `auto`: one per core.
 *
 * @example
 * ```ts
 * import { processes } from "./flag_kinds.ts";
 *
 * processes.parse("4", "--workers"); // 4
 * ```
 */
export const processes: Kind<number> = {
  type: "string",
  parse(raw, flag) {
    if (raw === "auto") {
      try {
        return Math.max(1, os.availableParallelism?.() ?? os.cpus().length);
      } catch {
        return 1;
      }
    }
    const value = raw as string;
    const n = /^\d+$/.test(value) ? Number(value) : NaN;
    if (!(n >= 1 && n <= 1024)) {
      throw new CliError(
        flag,
        `must be "auto" or a whole number from 1 to 1024, not "${value}"`,
      );
    }
    return n;
  },
};

const BYTE_UNITS = { k: 1024, m: 1024 ** 2, g: 1024 ** 3 } as const;

/**
 * BYTES: a positive whole number, with K, M or G for KiB, MiB, GiB.
 *
 * @example
 * ```ts
 * import { bytes } from "./flag_kinds.ts";
 *
 * bytes.parse("10M", "--size"); // 10485760
 * ```
 */
export const bytes: Kind<number> = {
  type: "string",
  arg: "BYTES",
  parse(raw, flag) {
    const value = raw as string;
    const m = /^(\d+)([kmg])?$/i.exec(value);
    const unit = m?.[2]?.toLowerCase() as keyof typeof BYTE_UNITS | undefined;
    const n = m === null
      ? NaN
      : Number(m[1]) * (unit === undefined ? 1 : BYTE_UNITS[unit]);
    if (!(n >= 1 && n <= Number.MAX_SAFE_INTEGER)) {
      throw new CliError(
        flag,
        `must be a positive number of bytes (K, M or G allowed), not "${value}"`,
      );
    }
    return n;
  },
};

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
 * TIME, in milliseconds: a whole number with a unit (`500ms`, `30s`, `5m`,
 * `1h`), or a bare number in `bare` (the flag's unit before units), from
 * `min` to `max` milliseconds; with `zeroIsOff`, 0 reads as `Infinity`.
 *
 * @param bare the unit of a number without one
 * @param min the shortest allowed, in milliseconds
 * @param max the longest allowed, in milliseconds
 * @param zeroIsOff whether 0 means off
 *
 * @example
 * ```ts
 * import { time } from "./flag_kinds.ts";
 *
 * time("s", 1000, 86_400_000).parse("90", "--command-timeout"); // 90000
 * time("ms", 1, 600_000).parse("30s", "--webhook-timeout"); // 30000
 * ```
 */
export function time(
  bare: "ms" | "s",
  min: number,
  max: number,
  zeroIsOff = false,
): Kind<number> {
  return {
    type: "string",
    arg: "TIME",
    parse(raw, flag) {
      const value = raw as string;
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
      return zeroIsOff && ms === 0 ? Infinity : ms;
    },
  };
}

/**
 * A comma-separated list of addresses and CIDR ranges, each trimmed.
 *
 * @example
 * ```ts
 * import { cidrList } from "./flag_kinds.ts";
 *
 * cidrList.parse("10.0.0.0/8, ::1", "--proxy-trusted"); // ["10.0.0.0/8", "::1"]
 * ```
 */
export const cidrList: Kind<string[]> = {
  type: "string",
  parse(raw, flag) {
    const list = (raw as string).split(",").map((t) => t.trim());
    if (list.some((t) => t === "")) {
      throw new CliError(flag, "has an empty entry");
    }
    try {
      new CidrSet(list);
    } catch (error) {
      throw new CliError(flag, (error as Error).message);
    }
    return list;
  },
};

/**
 * What a `checkWebhookHeaders` error says, without its "Cannot use
 * option headers: " (for a {@link CliError} naming the flag).
 *
 * @param error what it threw
 *
 * @example
 * ```ts
 * import { webhookProblem } from "./flag_kinds.ts";
 *
 * webhookProblem(new TypeError("Cannot use option headers: Host is set by smtpd"));
 * // "Host is set by smtpd"
 * ```
 */
export function webhookProblem(error: unknown): string {
  return String((error as Error)?.message ?? error)
    .replace(/^Cannot use option headers: /, "");
}

/**
 * Repeatable `"Name: value"`s as headers, each checked as `postWebhook`
 * checks it (`checkWebhookHeaders`); an error names the header, never its
 * value.
 *
 * @example
 * ```ts
 * import { headers } from "./flag_kinds.ts";
 *
 * headers.parse(["X-Team: mail"], "--webhook-header"); // { "X-Team": "mail" }
 * ```
 */
export const headers: Kind<Record<string, string>> = {
  type: "string",
  multiple: true,
  parse(raw, flag) {
    const out: Record<string, string> = {};
    const seen = new Set<string>();
    for (const item of raw as string[]) {
      const colon = item.indexOf(":");
      const name = colon < 0 ? "" : item.slice(0, colon).trim();
      const value = colon < 0 ? "" : item.slice(colon + 1).trim();
      if (name === "") {
        throw new CliError(
          flag,
          'must be "Name: value" with a header name before the colon',
        );
      }
      if (value === "") throw new CliError(flag, `${name} needs a value`);
      try {
        checkWebhookHeaders({ [name]: value });
      } catch (error) {
        throw new CliError(flag, webhookProblem(error));
      }
      const key = name.toLowerCase();
      if (seen.has(key)) throw new CliError(flag, `${name} is given twice`);
      seen.add(key);
      out[name] = value;
    }
    return out;
  },
};

/**
 * Milter filter addresses (`inet:PORT@HOST`, `inet:HOST:PORT`,
 * `unix:/path`), repeatable, in the order given.
 *
 * @example
 * ```ts
 * import { milterAddresses } from "./flag_kinds.ts";
 *
 * milterAddresses.parse(["inet:11332@127.0.0.1"], "--milter"); // ["inet:11332@127.0.0.1"]
 * ```
 */
export const milterAddresses: Kind<string[]> = {
  type: "string",
  multiple: true,
  parse(raw, flag) {
    return (raw as string[]).map((address) => {
      try {
        parseMilterAddress(address);
      } catch (e) {
        throw new CliError(
          flag,
          (e as Error).message.replace(/^Cannot parse milter address /, ""),
        );
      }
      return address;
    });
  },
};

/** An address and port to listen on, as {@link hostAndPort} reads it. */
export interface HostAndPort {
  /** The host name or IP address (an IPv6 address without brackets). */
  host: string;
  /** The port (0: any free one). */
  port: number;
}

/**
 * `HOST:PORT` (`[IPv6]:PORT` for an IPv6 address), a port from 0 to 65535.
 *
 * @example
 * ```ts
 * import { hostAndPort } from "./flag_kinds.ts";
 *
 * hostAndPort.parse("127.0.0.1:9465", "--metrics"); // { host: "127.0.0.1", port: 9465 }
 * hostAndPort.parse("[::1]:9465", "--metrics"); // { host: "::1", port: 9465 }
 * ```
 */
export const hostAndPort: Kind<HostAndPort> = {
  type: "string",
  arg: "HOST:PORT",
  parse(raw, flag) {
    const value = word.parse(raw, flag);
    const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+)):([0-9]{1,5})$/.exec(value);
    const port = m === null ? NaN : Number(m[3]);
    if (m === null || !(port <= 65535)) {
      throw new CliError(
        flag,
        `must be HOST:PORT (such as 127.0.0.1:9465, [::1]:9465), not "${value}"`,
      );
    }
    return { host: m[1] ?? m[2], port };
  },
};

/**
 * A repeatable DNS server, `IP` or `IP:PORT` (`[IPv6]:PORT`), checked as
 * the library's `dnsServers` option checks it.
 *
 * @example
 * ```ts
 * import { dnsServers } from "./flag_kinds.ts";
 *
 * dnsServers.parse(["127.0.0.1:5353"], "--dns-server"); // ["127.0.0.1:5353"]
 * ```
 */
export const dnsServers: Kind<string[]> = {
  type: "string",
  multiple: true,
  arg: "IP[:PORT]",
  parse(raw, flag) {
    try {
      return dnsServersOption(raw);
    } catch (error) {
      throw new CliError(
        flag,
        (error as Error).message.replace(/^Cannot use option dnsServers: /, ""),
      );
    }
  },
};
