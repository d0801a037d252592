/**
 * SMTP replies as values: {@link SmtpError} carries a reply code, an enhanced
 * status code (RFC 3463) and a human-readable text.
 *
 * @module
 */

const ENHANCED = /^([245])\.(\d{1,3})\.(\d{1,3})$/;
/**
 * Text that {@link formatReply} must split, clean or trim: a control
 * character (line breaks included), trailing white space (what `trimEnd`
 * removes: `\s` is the same set), or nothing at all.
 */
// deno-lint-ignore no-control-regex
const NOT_PLAIN = /[\x00-\x1f\x7f]|\s$|^$/;

/**
 * An SMTP error reply. Throw it from a hook (or pass it to the engine's
 * `reject()`) to send exactly this reply to the client.
 *
 * The reply code must be 4xx (temporary: the client retries) or 5xx
 * (permanent), and the class of the enhanced status code must match it.
 *
 * @example
 * ```ts
 * import { SmtpError } from "@smtpd/smtpd";
 *
 * const noSuchUser = new SmtpError(550, "5.1.1", "No such user here");
 * console.log(noSuchUser.toString()); // "550 5.1.1 No such user here"
 * ```
 */
export class SmtpError extends Error {
  /** The three-digit reply code, 400 to 599. */
  readonly code: number;
  /** The enhanced status code, such as `"5.1.1"`; its class matches `code`. */
  readonly enhancedCode: string;

  /**
   * Makes a reply; throws a `RangeError` when the codes do not fit together.
   *
   * @param code reply code, 400 to 599
   * @param enhancedCode enhanced status code whose class (first digit) equals
   *   the first digit of `code`
   * @param text the human-readable text; line breaks make a multi-line reply
   */
  constructor(code: number, enhancedCode: string, text: string) {
    if (!Number.isInteger(code) || code < 400 || code > 599) {
      throw new RangeError(
        `Cannot create SmtpError: code ${code} is not between 400 and 599`,
      );
    }
    const m = ENHANCED.exec(enhancedCode);
    if (m === null || Number(m[1]) !== Math.floor(code / 100)) {
      throw new RangeError(
        `Cannot create SmtpError: enhanced code "${enhancedCode}" does not match code ${code}`,
      );
    }
    super(text);
    this.name = "SmtpError";
    this.code = code;
    this.enhancedCode = enhancedCode;
  }

  /** The reply as it appears on the wire, without the final CRLF. */
  override toString(): string {
    return formatReply(this.code, this.enhancedCode, this.message).slice(0, -2);
  }
}

/**
 * Whether `text` is one reply line {@link formatReply} takes as it is (no
 * line break or other control character, no trailing white space, not
 * empty): then its reply is `${code} ${text}\r\n`.
 *
 * @example
 * ```ts
 * import { isPlainReplyText } from "./errors.ts";
 *
 * isPlainReplyText("mx.test greets c.test"); // true
 * isPlainReplyText("two\nlines"); // false
 * ```
 */
export function isPlainReplyText(text: string): boolean {
  return !NOT_PLAIN.test(text);
}

/**
 * Formats one SMTP reply: every line carries the code (with `-` on all lines
 * but the last) and, when given, the enhanced status code. Control characters
 * in the text are replaced by spaces so that a reply can never inject a line.
 *
 * @example
 * ```ts
 * import { formatReply } from "@smtpd/smtpd/engine";
 *
 * formatReply(250, "2.1.0", "OK"); // "250 2.1.0 OK\r\n"
 * ```
 */
export function formatReply(
  code: number,
  enhancedCode: string | null,
  text: string | readonly string[],
): string {
  const prefix = enhancedCode === null ? "" : enhancedCode + " ";
  // The common case, one line with nothing to clean: no split, replace or
  // trim (the same result, without the work).
  if (typeof text === "string" && !NOT_PLAIN.test(text)) {
    return `${code} ${prefix}${text}\r\n`;
  }
  const lines = typeof text === "string" ? text.split(/\r\n|\r|\n/) : text;
  let out = "";
  for (let i = 0; i < lines.length; i++) {
    // deno-lint-ignore no-control-regex
    const line = lines[i].replace(/[\x00-\x1f\x7f]/g, " ");
    out += `${code}${i === lines.length - 1 ? " " : "-"}${prefix}${line}`
      .trimEnd() + "\r\n";
  }
  return out;
}
