/**
 * LMTP's replies to the end of a message (RFC 2033 §4.2, §4.3): one per
 * accepted recipient, in RCPT order, where SMTP has one per message.
 *
 * @module
 */

import { formatReply, SmtpError } from "../errors.ts";
import type { Recipient } from "./types.ts";

/**
 * The reply to the end of a message: once, or once per accepted recipient
 * when `each` (LMTP).
 *
 * @example
 * ```ts
 * import { perRecipient } from "./lmtp.ts";
 *
 * perRecipient("452 4.2.2 Mailbox full\r\n", true, 2); // the reply twice
 * ```
 */
export function perRecipient(
  reply: string,
  each: boolean,
  count: number,
): string {
  return each ? reply.repeat(count) : reply;
}

/**
 * The replies that accept a message for every recipient: the default text
 * names each recipient, or `text` for all.
 *
 * @example
 * ```ts
 * import { acceptedForEach } from "./lmtp.ts";
 *
 * const mailbox = { address: "a@b.test", localPart: "a", domain: "b.test" };
 * acceptedForEach([{ mailbox, params: { params: {} } }], undefined);
 * // "250 2.0.0 Message accepted for <a@b.test>\r\n"
 * ```
 */
export function acceptedForEach(
  recipients: readonly Recipient[],
  text: string | undefined,
): string {
  let out = "";
  for (const r of recipients) {
    out += text === undefined || text === null
      ? acceptedFor(r)
      : formatReply(250, "2.0.0", text);
  }
  return out;
}

/**
 * The replies of `SmtpEngine.acceptEach()`: `results[i]` answers the i-th
 * recipient (`null`: the default reply, a string: 250 with that text, an
 * `SmtpError`: its reply). Throws a `TypeError` on any other result.
 *
 * @example
 * ```ts
 * import { SmtpError } from "../errors.ts";
 * import { eachReply } from "./lmtp.ts";
 *
 * const mailbox = { address: "a@b.test", localPart: "a", domain: "b.test" };
 * const r = { mailbox, params: { params: {} } };
 * eachReply([r, r], [null, new SmtpError(452, "4.2.2", "Mailbox full")]);
 * ```
 */
export function eachReply(
  recipients: readonly Recipient[],
  results: readonly (SmtpError | string | null)[],
): string {
  let out = "";
  for (let i = 0; i < results.length; i++) {
    const r = results[i];
    if (r instanceof SmtpError) {
      out += formatReply(r.code, r.enhancedCode, r.message);
    } else if (typeof r === "string") {
      out += formatReply(250, "2.0.0", r);
    } else if (r === null || r === undefined) {
      out += acceptedFor(recipients[i]);
    } else {
      throw new TypeError(
        `Cannot answer per recipient: result ${i} is not an SmtpError, a string or null`,
      );
    }
  }
  return out;
}

/** The default reply that accepts a message for one recipient. */
function acceptedFor(r: Recipient): string {
  return formatReply(
    250,
    "2.0.0",
    `Message accepted for <${r.mailbox.address}>`,
  );
}
