/**
 * The application's decisions on the pending event: `accept()` with the
 * default reply (or another text), `reject()` with an error's reply, and
 * LMTP's answer recipient by recipient; each moves the session on.
 *
 * @module
 */

import { formatReply, SmtpError } from "../errors.ts";
import { encodeBase64Text } from "../sasl.ts";
import { ehloReply } from "./capabilities.ts";
import {
  defaultHeloReply,
  fixedBytes,
  fixedReply,
  greeting,
} from "./fixed_replies.ts";
import { assertNever, type EngineCore } from "./core.ts";
import { acceptedForEach, eachReply } from "./lmtp.ts";
import { Transaction } from "./transaction.ts";

// The fixed replies, formatted once.
const SENDER_OK = fixedReply(250, "2.1.0", "Sender OK");
const RECIPIENT_OK = fixedReply(250, "2.1.5", "Recipient OK");
const MESSAGE_OK = fixedReply(250, "2.0.0", "Message accepted");
const SENDER_OK_BYTES = fixedBytes(SENDER_OK)!;
const RECIPIENT_OK_BYTES = fixedBytes(RECIPIENT_OK)!;
const MESSAGE_OK_BYTES = fixedBytes(MESSAGE_OK)!;
const AUTH_OK = formatReply(235, "2.7.0", "Authentication successful");
const TLS_READY = formatReply(220, "2.0.0", "Ready to start TLS");
/** The XOAUTH2 failure challenge: {"status":"401","schemes":"bearer"}. */
const XOAUTH2_FAILURE = encodeBase64Text('{"status":"401","schemes":"bearer"}');

/**
 * Accepts the pending decision (see `SmtpEngine.accept`).
 *
 * @example
 * ```ts
 * import { resolveEngineOptions } from "../options.ts";
 * import { EngineCore } from "./core.ts";
 * import { accept } from "./decisions.ts";
 *
 * const core = new EngineCore(resolveEngineOptions({}), 0);
 * core.decide({ type: "connect" });
 * accept(core); // core.out: the 220 greeting
 * ```
 */
export function accept(core: EngineCore, text?: string): void {
  const ev = core.takeDecision("accept");
  if (ev === null) return;
  const o = core.options;
  switch (ev.type) {
    case "connect":
      if (text === undefined) {
        // The default greeting: formatted and encoded once per server.
        const g = greeting(o);
        core.writeFixed(g.text, g.bytes);
      } else core.write(formatReply(220, null, text));
      core.mode = "command";
      return;
    case "helo": {
      core.heloName = ev.hostname;
      core.esmtp = ev.verb !== "HELO";
      core.showState();
      if (text === undefined) {
        // The default reply: formatted and encoded once per client name.
        const r = defaultHeloReply(o, core.secure, core.esmtp, ev.hostname);
        core.writeFixed(r.text, r.bytes);
      } else {
        core.write(
          core.esmtp
            ? ehloReply(o, core.secure, text)
            : formatReply(250, null, text),
        );
      }
      core.badCommands = 0;
      return;
    }
    case "mail":
      core.tx = new Transaction(ev.from, ev.params);
      okOr(core, SENDER_OK, SENDER_OK_BYTES, 250, "2.1.0", text);
      return;
    case "rcpt":
      core.tx!.recipients.push({ mailbox: ev.to, params: ev.params });
      okOr(core, RECIPIENT_OK, RECIPIENT_OK_BYTES, 250, "2.1.5", text);
      return;
    case "message-end": {
      // RFC 2033 §4.2: in LMTP one reply per accepted recipient, in RCPT order.
      if (o.lmtp) {
        const out = acceptedForEach(core.tx!.recipients, text);
        core.resetTransaction(false);
        core.ok(out);
      } else {
        core.resetTransaction(false);
        okOr(core, MESSAGE_OK, MESSAGE_OK_BYTES, 250, "2.0.0", text);
      }
      return;
    }
    case "auth":
      core.user = ev.credentials.username;
      core.showState();
      core.ok(orText(AUTH_OK, 235, "2.7.0", text));
      return;
    case "starttls":
      core.ok(orText(TLS_READY, 220, "2.0.0", text));
      core.mode = "tls";
      // RFC 3207 §4.2: nothing sent before the handshake may be acted upon.
      core.dropInput();
      return;
    default:
      return assertNever(ev);
  }
}

/**
 * Accepts the pending SMTP `message-end` with `reply`, already encoded as
 * `bytes` (see `SmtpEngine.acceptQueued`): what accept(core, text) does
 * for it, without formatting and encoding the text.
 *
 * @example
 * ```ts
 * import { resolveEngineOptions } from "../options.ts";
 * import { EngineCore } from "./core.ts";
 * import { acceptEncoded } from "./decisions.ts";
 *
 * const core = new EngineCore(resolveEngineOptions({}), 0);
 * const reply = "250 2.0.0 OK 1\r\n";
 * // ... on a message-end event:
 * // acceptEncoded(core, reply, new TextEncoder().encode(reply));
 * ```
 */
export function acceptEncoded(
  core: EngineCore,
  reply: string,
  bytes: Uint8Array,
): void {
  if (core.takeDecision("accept") === null) return;
  core.resetTransaction(false);
  core.okFixed(reply, bytes);
}

/**
 * Rejects the pending decision with `error`'s reply (see `SmtpEngine.reject`).
 *
 * @example
 * ```ts
 * import { SmtpError } from "../errors.ts";
 * import { resolveEngineOptions } from "../options.ts";
 * import { EngineCore } from "./core.ts";
 * import { reject } from "./decisions.ts";
 *
 * const core = new EngineCore(resolveEngineOptions({}), 0);
 * core.decide({ type: "connect" });
 * reject(core, new SmtpError(554, "5.7.1", "No")); // 554, then closed
 * ```
 */
export function reject(core: EngineCore, error: SmtpError): void {
  const ev = core.takeDecision("reject");
  if (ev === null) return;
  const decision = ev.type;
  if (decision === "auth") {
    if (ev.credentials.mechanism === "XOAUTH2") {
      // XOAUTH2: a failure is a 334 with an error; the client answers with
      // an empty line, then gets the final reply.
      core.write(`334 ${XOAUTH2_FAILURE}\r\n`);
      core.authState().error = error;
      core.mode = "sasl-failed";
      return;
    }
    core.authFailed(error);
    return;
  }
  const reply = formatReply(error.code, error.enhancedCode, error.message);
  core.write(
    decision === "message-end" ? core.perRecipient(reply) : reply,
  );
  switch (decision) {
    case "connect":
      core.close("rejected");
      return;
    case "helo":
    case "mail":
    case "rcpt":
    case "starttls":
      return;
    case "message-end":
      core.resetTransaction(false);
      return;
    default:
      return assertNever(decision);
  }
}

/**
 * Answers the pending LMTP `message-end` recipient by recipient (see
 * `SmtpEngine.acceptEach`, which documents when it throws).
 *
 * @example
 * ```ts
 * import { SmtpError } from "../errors.ts";
 * import { resolveEngineOptions } from "../options.ts";
 * import { EngineCore } from "./core.ts";
 * import { acceptEach } from "./decisions.ts";
 *
 * const core = new EngineCore(resolveEngineOptions({ lmtp: true }), 0);
 * // ... on a message-end event with two recipients:
 * // acceptEach(core, [null, new SmtpError(452, "4.2.2", "Mailbox full")]);
 * ```
 */
export function acceptEach(
  core: EngineCore,
  results: readonly (SmtpError | string | null)[],
): void {
  if (core.mode === "closed") return;
  if (core.pending?.type !== "message-end") {
    throw new Error(
      "Cannot answer per recipient: no message-end decision is pending",
    );
  }
  if (!core.options.lmtp) {
    throw new Error("Cannot answer per recipient: LMTP is off");
  }
  const recipients = core.tx!.recipients;
  if (!Array.isArray(results) || results.length !== recipients.length) {
    throw new TypeError(
      `Cannot answer per recipient: ${
        Array.isArray(results) ? results.length : "no"
      } results for ${recipients.length} recipients`,
    );
  }
  const out = eachReply(recipients, results);
  core.pending = null;
  core.resetTransaction(false);
  // Any accepted recipient makes it a success for the bad-command count.
  if (results.some((r) => !(r instanceof SmtpError))) core.ok(out);
  else core.write(out);
}

/**
 * Queues the positive reply `fixed` (its bytes `bytes`), or the
 * application's `text` in its place (see orText).
 */
function okOr(
  core: EngineCore,
  fixed: string,
  bytes: Uint8Array,
  code: number,
  enhanced: string,
  text: string | undefined,
): void {
  if (text === undefined || text === null) core.okFixed(fixed, bytes);
  else core.ok(formatReply(code, enhanced, text));
}

/** A default reply, or the same codes with the text given to `accept(text)`. */
function orText(
  fixed: string,
  code: number,
  enhanced: string,
  text: string | undefined,
): string {
  // `??` semantics, as before: null means "the default" too.
  return text === undefined || text === null
    ? fixed
    : formatReply(code, enhanced, text);
}
