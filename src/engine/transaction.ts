/**
 * One mail transaction, from an accepted MAIL to its end: the envelope and
 * the state that lives as long as it. The engine replaces it (RSET, a new
 * greeting, STARTTLS, the end of a message) instead of clearing fields.
 *
 * @module
 */

import type { Mailbox } from "../address.ts";
import { SmtpError } from "../errors.ts";
import type { Body } from "./body.ts";
import type { BdatReader } from "./body_bdat.ts";
import type { BodyType, MailParams, Recipient } from "./types.ts";

/**
 * The envelope and state of one transaction.
 *
 * @example
 * ```ts
 * import { Transaction } from "./transaction.ts";
 *
 * const from = { address: "a@b.test", localPart: "a", domain: "b.test" };
 * const tx = new Transaction(from, { smtputf8: false, params: {} });
 * tx.noRecipients(false); // 503 5.5.1 Send RCPT first
 * ```
 */
export class Transaction {
  /** The sender (MAIL FROM). */
  readonly from: Mailbox;
  /** The MAIL parameters. */
  readonly mailParams: MailParams;
  /** The accepted recipients, in RCPT order. */
  readonly recipients: Recipient[] = [];
  /** RCPT commands that came to a decision or to "too many recipients". */
  rcptAttempts = 0;
  /** The body, from DATA's 354 or the first accepted BDAT chunk on. */
  body: Body | null = null;
  /** The body goes by BDAT: the reader of its chunks (the first was accepted). */
  bdat: BdatReader | null = null;

  /**
   * @param from the sender
   * @param mailParams the MAIL parameters
   */
  constructor(from: Mailbox, mailParams: MailParams) {
    this.from = from;
    this.mailParams = mailParams;
  }

  /** The body type (BODY=), `"7BIT"` when the client declared none. */
  get bodyType(): BodyType {
    return this.mailParams.body ?? "7BIT";
  }

  /**
   * The envelope as `message-start` carries it. After DATA the recipients
   * are the transaction's own array: no RCPT is read while the body
   * arrives, and the transaction ends with it (a new one has a new
   * array). After BDAT a RCPT may still come between chunks: a copy.
   */
  envelope(): {
    from: Mailbox;
    mailParams: MailParams;
    recipients: readonly Recipient[];
  } {
    return {
      from: this.from,
      mailParams: this.mailParams,
      recipients: this.bdat === null
        ? this.recipients
        : this.recipients.slice(),
    };
  }

  /** The refusal of a body without accepted recipients, or null. */
  noRecipients(lmtp: boolean): SmtpError | null {
    if (this.recipients.length > 0) return null;
    // RFC 2033 §4.2: in LMTP, 503 whether or not RCPT was tried.
    return this.rcptAttempts === 0 || lmtp
      ? new SmtpError(
        503,
        "5.5.1",
        this.rcptAttempts === 0 ? "Send RCPT first" : "No valid recipients",
      )
      : new SmtpError(554, "5.5.1", "No valid recipients");
  }
}
