/**
 * The engine's public types: events, decisions, close reasons, and the
 * envelope (MAIL and RCPT parameters, recipients, the body type).
 *
 * @module
 */

import type { Mailbox } from "../address.ts";
import type { SmtpError } from "../errors.ts";
import type { AuthCredentials } from "../sasl.ts";

/**
 * The body type of a transaction (BODY= of MAIL: RFC 6152, RFC 3030):
 * `"7BIT"` when the client declared none. A `"BINARYMIME"` body came with
 * BDAT and may hold any octets, bare CR and LF included.
 *
 * @example
 * ```ts
 * import type { BodyType } from "@smtpd/smtpd";
 *
 * const body: BodyType = "BINARYMIME";
 * ```
 */
export type BodyType = "7BIT" | "8BITMIME" | "BINARYMIME";

/** Parameters of MAIL FROM, decoded. `params` has every parameter as sent. */
export interface MailParams {
  /** Declared message size (SIZE=, RFC 1870). */
  size?: number;
  /** Declared body type (BODY=, RFC 6152; BINARYMIME: RFC 3030), when the client sent one. */
  body?: BodyType;
  /** The transaction may carry UTF-8 in addresses and headers (RFC 6531). */
  smtputf8: boolean;
  /** DSN return type (RET=, RFC 3461), only when DSN is enabled. */
  ret?: "FULL" | "HDRS";
  /** DSN envelope id (ENVID=, xtext-decoded), only when DSN is enabled. */
  envid?: string;
  /** The AUTH= identity (RFC 4954 §5, xtext-decoded; `"<>"` for none), only when AUTH is offered. */
  auth?: string;
  /** Every parameter by upper-cased keyword; `true` for a keyword without a value. */
  params: Record<string, string | true>;
}

/** Parameters of RCPT TO, decoded. */
export interface RcptParams {
  /** DSN notify conditions (NOTIFY=), only when DSN is enabled. */
  notify?: ("NEVER" | "SUCCESS" | "FAILURE" | "DELAY")[];
  /** DSN original recipient (ORCPT=addr-type;xtext), only when DSN is enabled. */
  orcpt?: { type: string; address: string };
  /** Every parameter by upper-cased keyword. */
  params: Record<string, string | true>;
}

/** An accepted recipient: the address and its parameters. */
export interface Recipient {
  /** The parsed address. */
  mailbox: Mailbox;
  /** The RCPT parameters. */
  params: RcptParams;
}

/** Why the engine asks for the connection to be closed. */
export type CloseReason =
  | "quit"
  | "rejected"
  | "too-many-errors"
  | "timeout"
  | "eof"
  | "shutdown"
  /** The session cannot go on: a BDAT chunk whose size cannot be parsed (its end is unknown). */
  | "protocol-error";

/**
 * What the engine has to tell. Events marked "decision" wait for
 * {@link SmtpEngine.accept} or {@link SmtpEngine.reject} before the engine
 * reads further; the others are information.
 */
export type SmtpEvent =
  /** Nothing to do until more bytes arrive (or a timeout). */
  | { type: "need-data" }
  /** Decision: a client connected; accept sends the 220 greeting. */
  | { type: "connect" }
  /** Decision: EHLO or HELO (LHLO in LMTP) with the client's name. */
  | { type: "helo"; verb: "EHLO" | "HELO" | "LHLO"; hostname: string }
  /** Decision: MAIL FROM. */
  | { type: "mail"; from: Mailbox; params: MailParams }
  /** Decision: RCPT TO. */
  | { type: "rcpt"; to: Mailbox; params: RcptParams }
  /**
   * A body starts: DATA was accepted (354 sent), or the first chunk of a
   * BDAT transaction is on its way. Body chunks follow. `body` is the
   * transaction's body type, `envelope` its sender, MAIL parameters and
   * the recipients accepted so far (in RCPT order).
   */
  | {
    type: "message-start";
    command: "DATA" | "BDAT";
    body: BodyType;
    envelope: {
      from: Mailbox;
      mailParams: MailParams;
      recipients: readonly Recipient[];
    };
  }
  /** A piece of the body (dot-unstuffed after DATA, as sent after BDAT); a view into received bytes (or, where a DATA line in it lost a stuffed dot, a new array of them), valid until the next `receive()`. */
  | { type: "data"; chunk: Uint8Array }
  /**
   * Decision: the body ended (CRLF.CRLF, or the end of the BDAT ... LAST
   * chunk); accept sends 250. `recipients` are the accepted recipients in
   * RCPT order: in LMTP each gets its own reply (see
   * {@link SmtpEngine.acceptEach}).
   */
  | {
    type: "message-end";
    size: number;
    recipients: readonly Recipient[];
  }
  /**
   * The body in transfer is refused or dropped (too large, bare line
   * ending, timeout, disconnect, RSET or QUIT between BDAT chunks); nothing
   * is to be delivered. The engine sends the reply itself, when it is due.
   */
  | { type: "message-abort"; error: SmtpError }
  /** The transaction (if any) was dropped by RSET, HELO/EHLO or STARTTLS. */
  | { type: "reset" }
  /** Decision: STARTTLS; accept sends 220, then the driver upgrades and calls `tlsStarted()`. */
  | { type: "starttls" }
  /** Decision: AUTH credentials to verify; accept sends 235, reject sends the error (535 5.7.8 for wrong credentials). */
  | { type: "auth"; credentials: AuthCredentials }
  /** A command line, for logging (only with `traceCommands`). */
  | { type: "command"; verb: string; line: string }
  /** Write what `takeOutput()` has, then close the connection. */
  | { type: "close"; reason: CloseReason };

/**
 * What an engine keeps up to date of the protocol state it owns (see the
 * third argument of `new SmtpEngine()`): the driver's session, whose
 * hooks read these as plain data.
 */
export interface SessionView {
  /** The name the client gave with HELO/EHLO/LHLO, or `null`. */
  heloName: string | null;
  /** Whether the client greeted with EHLO (or LHLO). */
  esmtp: boolean;
  /** Whether the connection is encrypted. */
  secure: boolean;
  /** The authenticated user, or `null`. */
  user: string | null;
}

/** The kinds of event that wait for `accept()` or `reject()`. */
export type Decision =
  | "connect"
  | "helo"
  | "mail"
  | "rcpt"
  | "message-end"
  | "starttls"
  | "auth";
