/**
 * The command handlers: reading a command line (CRLF-framed, bounded by
 * maxLineLength), the line that is too long, and one function per verb
 * that checks the session state in the engine core and either replies or
 * hands a decision event out.
 *
 * @module
 */

import { isDomainOrLiteral, type Mailbox } from "../address.ts";
import { formatReply, SmtpError } from "../errors.ts";
import { NEED_DATA, TOO_LARGE } from "./body.ts";
import { BdatReader, SkippedChunk } from "./body_bdat.ts";
import { DataReader } from "./body_data.ts";
import { helpLines } from "./capabilities.ts";
import { decodeCommandLine, isAuthLine } from "./command_line.ts";
import { EMPTY, type EngineCore } from "./core.ts";
import { bye, fixedBytes, fixedReply } from "./fixed_replies.ts";
import { perRecipient } from "./lmtp.ts";
import {
  mailPathEnd,
  noMailParams,
  noRcptParams,
  parseChunkSize,
  parseEnvelopeArg,
  parseMailParams,
  parsePlainEnvelope,
  parsePlainMailParams,
  parseRcptParams,
} from "./params.ts";
import { auth, saslResponse } from "./sasl_exchange.ts";
import { TextScanner } from "./scanner.ts";
import type { MailParams, RcptParams, SmtpEvent } from "./types.ts";

// Byte values as module-local constants (see body_data.ts).
const CR = 13;
const LF = 10;

const OK = fixedReply(250, "2.0.0", "OK");
const DATA_GO_AHEAD = fixedReply(
  354,
  "2.0.0",
  "End data with <CR><LF>.<CR><LF>",
);
const DATA_GO_AHEAD_BYTES = fixedBytes(DATA_GO_AHEAD)!;
const VRFY_REPLY = formatReply(
  252,
  "2.5.0",
  "Cannot VRFY user, but will accept message and attempt delivery",
);
// deno-lint-ignore no-control-regex
const NON_ASCII = /[^\x00-\x7f]/;
const HELO_NAME = /^[A-Za-z0-9_.-]+$/;
const NOT_IMPLEMENTED = new Set([
  "EXPN",
  "TURN",
  "ETRN",
  "ATRN",
  "SEND",
  "SOML",
  "SAML",
]);
/** RFC 4954 §4: AUTH lines and SASL responses may be this long. */
const AUTH_LINE_MAX = 12288;

/**
 * Reads one command line; returns an event, or null to go on reading.
 *
 * @example
 * ```ts
 * import { resolveEngineOptions } from "../options.ts";
 * import { readCommand } from "./commands.ts";
 * import { EngineCore } from "./core.ts";
 *
 * const core = new EngineCore(resolveEngineOptions({}), 0);
 * core.mode = "command";
 * core.buf = new TextEncoder().encode("NOOP\r\n");
 * readCommand(core); // null; core.out is "250 2.0.0 OK\r\n"
 * ```
 */
export function readCommand(core: EngineCore): SmtpEvent | null {
  const buf = core.buf;
  const start = core.pos;
  if (start >= buf.length) {
    // All read: let go of the chunk, which an idle session would
    // otherwise keep (with the memory of the read it is a view of).
    core.buf = EMPTY;
    core.pos = 0;
    core.text?.release();
    return NEED_DATA;
  }
  let from = start;
  let lf = -1;
  // A command ends only at CRLF; a bare LF is part of the line (and an error).
  for (;;) {
    lf = buf.indexOf(LF, from);
    if (lf < 0 || (lf > start && buf[lf - 1] === CR)) break;
    from = lf + 1;
  }
  const max = core.mode !== "command" || isAuthLine(buf, start)
    ? Math.max(AUTH_LINE_MAX, core.options.maxLineLength)
    : core.options.maxLineLength;
  if (lf < 0) {
    const avail = buf.length - start;
    const content = avail - (avail > 0 && buf[buf.length - 1] === CR ? 1 : 0);
    if (content > max - 2) {
      // Too long: drop what we have and discard up to the next CRLF.
      core.discardCR = buf[buf.length - 1] === CR;
      core.buf = EMPTY;
      core.pos = 0;
      core.mode = "discard-line";
      return null;
    }
    return NEED_DATA;
  }
  core.pos = lf + 1;
  // A line is complete: what follows (pipelined) came with the last chunk.
  core.lineStarted = core.lastActivity;
  if (lf + 1 - start > max) {
    core.endSasl();
    return core.fail(500, "5.5.2", "Line too long");
  }
  // The line is buf[start, lf - 1): no subarray view, which costs up to
  // 0.4 µs on a small chunk (Bun and V8 then move its bytes off the heap).
  if (core.mode === "sasl") return saslResponse(core, buf, start, lf - 1);
  if (core.mode === "sasl-failed") {
    const error = core.auth!.error!;
    core.endSasl();
    core.authFailed(error);
    return null;
  }
  return command(core, buf, start, lf - 1);
}

/**
 * Reads up to the end of a line that is too long, then replies 500 5.5.2.
 *
 * @example
 * ```ts
 * import { resolveEngineOptions } from "../options.ts";
 * import { discardLine } from "./commands.ts";
 * import { EngineCore } from "./core.ts";
 *
 * const core = new EngineCore(resolveEngineOptions({}), 0);
 * core.mode = "discard-line";
 * core.buf = new TextEncoder().encode("xyz\r\n");
 * discardLine(core); // null; core.out is "500 5.5.2 Line too long\r\n"
 * ```
 */
export function discardLine(core: EngineCore): SmtpEvent | null {
  const buf = core.buf;
  let i = core.pos;
  if (i >= buf.length) return NEED_DATA;
  if (core.discardCR && buf[i] === LF) {
    i += 1;
  } else {
    let found = -1;
    for (let from = i;;) {
      const lf = buf.indexOf(LF, from);
      if (lf < 0) break;
      if (lf > i && buf[lf - 1] === CR) {
        found = lf + 1;
        break;
      }
      from = lf + 1;
    }
    if (found < 0) {
      core.discardCR = buf[buf.length - 1] === CR;
      core.buf = EMPTY;
      core.pos = 0;
      return NEED_DATA;
    }
    i = found;
  }
  core.pos = i;
  core.lineStarted = core.lastActivity;
  core.discardCR = false;
  core.endSasl();
  return core.fail(500, "5.5.2", "Line too long");
}

/**
 * Decodes and dispatches one command line: `buf[start, end)`, without CRLF.
 *
 * @example
 * ```ts
 * import { resolveEngineOptions } from "../options.ts";
 * import { command } from "./commands.ts";
 * import { EngineCore } from "./core.ts";
 *
 * const core = new EngineCore(resolveEngineOptions({}), 0);
 * const line = new TextEncoder().encode("EHLO c.test");
 * command(core, line, 0, line.length); // the "helo" decision event
 * ```
 */
export function command(
  core: EngineCore,
  buf: Uint8Array,
  start: number,
  end: number,
): SmtpEvent | null {
  // A known verb in ASCII is read from the bytes: only its argument is
  // made a string (no line, slice or toUpperCase per command). Anything
  // else (and a traced line) takes the general path below.
  const known = core.options.traceCommands ? null : knownVerb(buf, start, end);
  if (known !== null) {
    const from = start + known.length + 1;
    // MAIL and RCPT with a plain address (nearly every one), and no
    // parameters or (MAIL) the ones clients send (SIZE=, BODY=): read
    // from the bytes, no argument string.
    if ((known === "MAIL" || known === "RCPT") && from < end) {
      const recipient = known === "RCPT";
      const pathEnd = recipient ? end : mailPathEnd(buf, from, end);
      const params = pathEnd === end ? null : parsePlainMailParams(
        buf,
        pathEnd,
        end,
        core.options,
        core.esmtp,
      );
      const plain = pathEnd === end || params !== null
        ? parsePlainEnvelope(buf, from, pathEnd, recipient)
        : null;
      if (plain !== null) {
        // What dispatch() does for MAIL and RCPT, without its switch.
        core.owedReplies = 0;
        return recipient
          ? rcpt(core, "", true, plain)
          : mail(core, "", true, plain, params);
      }
    }
    const arg = from > end ? "" : decodeCommandLine(buf, from, end);
    if (typeof arg !== "string") return core.failWith(arg);
    // UTF-8 takes more bytes than UTF-16 code units for anything above
    // U+007F: a line with as many characters as bytes is ASCII.
    return dispatch(core, known, arg, false, arg.length === end - from);
  }
  const line = decodeCommandLine(buf, start, end);
  if (typeof line !== "string") return core.failWith(line);
  const sp = line.indexOf(" ");
  const verb = (sp < 0 ? line : line.slice(0, sp)).toUpperCase();
  const arg = sp < 0 ? "" : line.slice(sp + 1);
  if (core.options.traceCommands) {
    // Never hand credentials to a logger: keep only "AUTH <mechanism>".
    const shown = verb === "AUTH" && arg.includes(" ")
      ? `${line.slice(0, sp)} ${arg.slice(0, arg.indexOf(" "))} ***`
      : line;
    core.events().push({ type: "command", verb, line: shown });
  }
  return dispatch(core, verb, arg, line === "", line.length === end - start);
}

/** Four ASCII letters as one number, each folded to lower case. */
function word(s: string): number {
  return (s.charCodeAt(0) << 24 | s.charCodeAt(1) << 16 |
    s.charCodeAt(2) << 8 | s.charCodeAt(3)) >>> 0;
}

const W_MAIL = word("mail");
const W_RCPT = word("rcpt");
const W_DATA = word("data");
const W_BDAT = word("bdat");
const W_EHLO = word("ehlo");
const W_HELO = word("helo");
const W_LHLO = word("lhlo");
const W_RSET = word("rset");
const W_NOOP = word("noop");
const W_QUIT = word("quit");
const W_VRFY = word("vrfy");
const W_HELP = word("help");
const W_AUTH = word("auth");
const W_STAR = word("star");
const W_TTLS = word("ttls");

/** The four bytes at `i` as one number, ASCII letters folded to lower case. */
function foldedWord(buf: Uint8Array, i: number): number {
  return ((buf[i] | 0x20) << 24 | (buf[i + 1] | 0x20) << 16 |
    (buf[i + 2] | 0x20) << 8 | (buf[i + 3] | 0x20)) >>> 0;
}

/**
 * The verb of the line `buf[start, end)` when it is one that command()
 * handles, in ASCII letters of any case and followed by a space or the
 * end of the line; else null. (`| 0x20` maps no byte but the two cases
 * of a letter to a lower-case letter.)
 */
function knownVerb(buf: Uint8Array, start: number, end: number): string | null {
  if (end - start < 4) return null;
  let verb: string;
  switch (foldedWord(buf, start)) {
    case W_MAIL:
      verb = "MAIL";
      break;
    case W_RCPT:
      verb = "RCPT";
      break;
    case W_DATA:
      verb = "DATA";
      break;
    case W_BDAT:
      verb = "BDAT";
      break;
    case W_EHLO:
      verb = "EHLO";
      break;
    case W_HELO:
      verb = "HELO";
      break;
    case W_LHLO:
      verb = "LHLO";
      break;
    case W_RSET:
      verb = "RSET";
      break;
    case W_NOOP:
      verb = "NOOP";
      break;
    case W_QUIT:
      verb = "QUIT";
      break;
    case W_VRFY:
      verb = "VRFY";
      break;
    case W_HELP:
      verb = "HELP";
      break;
    case W_AUTH:
      verb = "AUTH";
      break;
    case W_STAR:
      if (end - start < 8 || foldedWord(buf, start + 4) !== W_TTLS) {
        return null;
      }
      verb = "STARTTLS";
      break;
    default:
      return null;
  }
  const after = start + verb.length;
  return after === end || buf[after] === 0x20 ? verb : null;
}

/**
 * Runs the command `verb` (upper case) with its argument; `ascii`: the
 * line has no character above U+007F.
 */
function dispatch(
  core: EngineCore,
  verb: string,
  arg: string,
  empty: boolean,
  ascii: boolean,
): SmtpEvent | null {
  if (verb !== "BDAT") core.owedReplies = 0;
  switch (verb) {
    case "EHLO":
    case "HELO":
      if (core.options.lmtp) {
        return core.fail(500, "5.5.1", "This is LMTP: send LHLO");
      }
      return helo(core, verb, arg);
    case "LHLO":
      if (!core.options.lmtp) {
        return core.fail(500, "5.5.1", "Command unrecognized");
      }
      return helo(core, verb, arg);
    case "BDAT":
      return bdatCommand(core, arg);
    case "MAIL":
      return mail(core, arg, ascii, null, null);
    case "RCPT":
      return rcpt(core, arg, ascii, null);
    case "DATA":
      return data(core, arg);
    case "RSET":
      if (arg !== "") {
        return core.fail(501, "5.5.4", "RSET takes no arguments");
      }
      core.resetTransaction(true);
      core.ok(OK);
      return null;
    case "NOOP":
      core.ok(OK);
      return null;
    case "QUIT":
      if (arg !== "") {
        return core.fail(501, "5.5.4", "QUIT takes no arguments");
      }
      {
        // Formatted and encoded once per server.
        const b = bye(core.options);
        core.writeFixed(b.text, b.bytes);
      }
      core.resetTransaction(true);
      core.close("quit");
      return null;
    case "VRFY":
      if (arg.trim() === "") {
        return core.fail(501, "5.5.4", "VRFY needs an argument");
      }
      core.ok(VRFY_REPLY);
      return null;
    case "HELP":
      core.ok(
        formatReply(214, "2.0.0", helpLines(core.options, core.secure)),
      );
      return null;
    case "STARTTLS":
      return starttls(core, arg);
    case "AUTH":
      return auth(core, arg);
    default:
      if (NOT_IMPLEMENTED.has(verb)) {
        return core.fail(502, "5.5.1", "Command not implemented");
      }
      if (empty) return core.fail(500, "5.5.2", "Empty command");
      return core.fail(500, "5.5.1", "Command unrecognized");
  }
}

function helo(
  core: EngineCore,
  verb: "EHLO" | "HELO" | "LHLO",
  arg: string,
): SmtpEvent | null {
  const name = arg.trim();
  if (name === "") {
    return core.fail(501, "5.5.4", `${verb} needs a domain name`);
  }
  const valid = name[0] === "["
    ? isDomainOrLiteral(name, false)
    : HELO_NAME.test(name) ||
      (core.options.smtputf8 && !name.includes(" ") &&
        isDomainOrLiteral(name, true));
  if (!valid) return core.fail(501, "5.5.4", "Invalid domain name");
  core.resetTransaction(true);
  return core.decide({ type: "helo", verb, hostname: name });
}

/**
 * MAIL FROM; `ascii`: `arg` has no character above U+007F (nor, then, the
 * address, which is not read again to tell); `plain`: the address when
 * command() had it from the bytes (`arg` unused), with `plainParams` its
 * parameters (null: none).
 */
function mail(
  core: EngineCore,
  arg: string,
  ascii: boolean,
  plain: Mailbox | null,
  plainParams: MailParams | null,
): SmtpEvent | null {
  if (core.heloName === null) {
    return core.fail(503, "5.5.1", "Send EHLO or HELO first");
  }
  if (core.tx !== null) {
    return core.fail(503, "5.5.1", "Nested MAIL command");
  }
  if (core.options.requireTls && !core.secure) {
    return core.fail(530, "5.7.0", "Must issue a STARTTLS command first");
  }
  if (core.options.authRequired && core.user === null) {
    return core.fail(530, "5.7.0", "Authentication required");
  }
  if (plain !== null) {
    return core.decide({
      type: "mail",
      from: plain,
      params: plainParams ?? noMailParams(),
    });
  }
  const env = parseEnvelopeArg(arg, false);
  if (env instanceof SmtpError) return core.failWith(env);
  const params = parseMailParams(
    env.params,
    core.options,
    core.esmtp,
    core.authOffered(),
  );
  if (params instanceof SmtpError) return core.failWith(params);
  if (!ascii && !params.smtputf8 && NON_ASCII.test(env.mailbox.address)) {
    return core.fail(553, "5.6.7", "UTF-8 address needs SMTPUTF8");
  }
  return core.decide({ type: "mail", from: env.mailbox, params });
}

/** RCPT TO; `ascii` and `plain` as for {@link mail}. */
function rcpt(
  core: EngineCore,
  arg: string,
  ascii: boolean,
  plain: Mailbox | null,
): SmtpEvent | null {
  const tx = core.tx;
  if (tx === null) return core.fail(503, "5.5.1", "Send MAIL first");
  let to: Mailbox;
  let params: RcptParams;
  if (plain !== null) {
    to = plain;
    params = noRcptParams();
  } else {
    const env = parseEnvelopeArg(arg, true);
    if (env instanceof SmtpError) return core.failWith(env);
    const p = parseRcptParams(env.params, core.esmtp, core.options.dsn);
    if (p instanceof SmtpError) return core.failWith(p);
    if (
      !ascii && !tx.mailParams.smtputf8 &&
      NON_ASCII.test(env.mailbox.address)
    ) {
      return core.fail(553, "5.6.7", "UTF-8 address needs SMTPUTF8");
    }
    to = env.mailbox;
    params = p;
  }
  tx.rcptAttempts++;
  if (tx.recipients.length >= core.options.maxRecipients) {
    // Not a protocol error: the client sends the rest in another transaction.
    core.write(formatReply(452, "4.5.3", "Too many recipients"));
    return null;
  }
  return core.decide({ type: "rcpt", to, params });
}

function data(core: EngineCore, arg: string): SmtpEvent | null {
  if (arg !== "") return core.fail(501, "5.5.4", "DATA takes no arguments");
  const tx = core.tx;
  if (tx === null) return core.fail(503, "5.5.1", "Send MAIL first");
  if (tx.bdat !== null) {
    // RFC 3030 §2: DATA and BDAT do not mix in one transaction.
    return core.fail(503, "5.5.1", "DATA cannot follow BDAT");
  }
  if (tx.mailParams.body === "BINARYMIME") {
    return core.fail(503, "5.5.1", "BODY=BINARYMIME needs BDAT, not DATA");
  }
  const refused = tx.noRecipients(core.options.lmtp);
  if (refused !== null) return core.failWith(refused);
  core.okFixed(DATA_GO_AHEAD, DATA_GO_AHEAD_BYTES);
  core.mode = "data";
  const body = tx.body = core.newBody("DATA");
  const reader = core.dataReader;
  if (reader !== null) reader.start(body);
  else {
    core.dataReader = new DataReader(
      body,
      core.text ??= new TextScanner(),
      core.events(),
    );
  }
  core.dataStarted = core.lastActivity;
  return {
    type: "message-start",
    command: "DATA",
    body: tx.bodyType,
    envelope: tx.envelope(),
  };
}

/**
 * BDAT <size> [LAST] (RFC 3030). The chunk is always read before the
 * reply, also when it is refused: its octets must never run as commands.
 * Only a size that cannot be parsed (or counted exactly) leaves the end
 * of the chunk unknown: 501 5.5.4, then 421 4.7.0 and a close.
 */
function bdatCommand(core: EngineCore, arg: string): SmtpEvent | null {
  if (!core.options.chunking) {
    return core.fail(502, "5.5.1", "Command not implemented");
  }
  const sp = arg.indexOf(" ");
  const size = parseChunkSize(sp < 0 ? arg : arg.slice(0, sp));
  if (size < 0) {
    core.write(formatReply(501, "5.5.4", "Bad BDAT chunk size"));
    core.write(
      formatReply(
        421,
        "4.7.0",
        `${core.options.serverName} Cannot find the end of the BDAT chunk, closing connection`,
      ),
    );
    core.openBody()?.abort(
      new SmtpError(501, "5.5.4", "Bad BDAT chunk size"),
    );
    core.close("protocol-error");
    return null;
  }
  const rest = sp < 0 ? null : arg.slice(sp + 1);
  const last = rest !== null && rest.toUpperCase() === "LAST";
  core.mode = "bdat";
  const tx = core.tx;
  const reader = tx?.bdat ?? null;
  let error: SmtpError | null = null;
  if (rest !== null && !last) {
    error = new SmtpError(501, "5.5.4", "Syntax: BDAT size [LAST]");
  } else if (tx === null) {
    error = new SmtpError(503, "5.5.1", "Send MAIL first");
  } else error = tx.noRecipients(core.options.lmtp);
  if (
    error === null &&
    (reader?.octets ?? 0) + size > core.options.maxMessageSize
  ) {
    error = new SmtpError(552, "5.3.4", TOO_LARGE);
  }
  if (error !== null) {
    // RFC 3030 §2: a refused chunk fails the transaction in progress.
    const reply = formatReply(error.code, error.enhancedCode, error.message);
    // RFC 2033 §4.3: in LMTP the LAST chunk gets one reply per accepted
    // recipient, so none when none was accepted (a pipelining client
    // counts its accepted RCPTs and reads that many replies; it then
    // takes the transaction as over). Any other chunk gets one reply.
    const lmtp = core.options.lmtp;
    const owed = tx !== null ? tx.recipients.length : core.owedReplies;
    core.skipped = new SkippedChunk(
      size,
      perRecipient(reply, lmtp && last, owed),
    );
    if (reader !== null || error.code === 552 || (lmtp && last)) {
      core.openBody()?.abort(error);
      core.resetTransaction(false);
      core.owedReplies = lmtp && !last ? owed : 0;
    }
    return null;
  }
  if (reader !== null) {
    reader.startChunk(size, last);
    return null;
  }
  const body = tx!.body = core.newBody("BDAT");
  const bdat = tx!.bdat = new BdatReader(
    body,
    core.text ??= new TextScanner(),
    core.events(),
    tx!.mailParams.body === "BINARYMIME",
  );
  bdat.startChunk(size, last);
  core.dataStarted = core.lastActivity;
  return {
    type: "message-start",
    command: "BDAT",
    body: tx!.bodyType,
    envelope: tx!.envelope(),
  };
}

function starttls(core: EngineCore, arg: string): SmtpEvent | null {
  // Already encrypted (implicit TLS or after STARTTLS): 503, whether or
  // not STARTTLS would be offered in plaintext.
  if (core.secure) return core.fail(503, "5.5.1", "TLS already active");
  if (!core.options.startTls) {
    return core.fail(502, "5.5.1", "Command not implemented");
  }
  if (arg !== "") {
    return core.fail(501, "5.5.4", "STARTTLS takes no arguments");
  }
  return core.decide({ type: "starttls" });
}
