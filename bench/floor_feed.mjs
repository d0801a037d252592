// What the runtime floor (bench/floor.mjs) answers, apart from its
// listeners so that a test can feed it bytes: `feed()` for the floor and
// `contractFeed()` for the contract floor (`--contract`). Both answer a
// fixed reply per line (354 after DATA, 250 after the body's "\r\n.\r\n",
// 221 after QUIT, else 250) with no parsing, no state machine and no
// limits. The contract floor adds only what smtpd's public contract makes
// every conforming server do:
// - per MAIL and RCPT, a hook call that returns a promise, awaited before
//   the reply (as an application's `onMailFrom`/`onRcptTo` is);
// - per message, the body handed to the application as a byte stream
//   (`new ReadableStream({ type: "bytes" })`, what `message.raw` is) that
//   gets each body chunk of a read as a copy the application owns (a byte
//   stream takes over the buffer of what is enqueued, so a view of the
//   read would hand it the read buffer) and is closed at the body's end;
//   the message hook, called when the body starts, reads it to the end
//   with the default reader (as bench/server.mjs's smtpd hook does), and
//   the 250 goes out only once its promise has resolved.
// The body's bytes are what lies between the DATA line and the final
// ".\r\n" in each read, no dot-unstuffing; a terminator cut by a read may
// leave its first bytes in the stream (the floor measures cost, not
// content).

const enc = new TextEncoder();
export const GREETING = enc.encode("220 floor ESMTP\r\n");
const EHLO = enc.encode("250-floor\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
const OK = enc.encode("250 2.0.0 OK\r\n");
const GO = enc.encode("354 Go ahead\r\n");
const BYE = enc.encode("221 2.0.0 Bye\r\n");
const CR = 13, LF = 10, DOT = 46;
/** The first letters the floors tell apart, lower-cased. */
const D = 0x64, E = 0x65, H = 0x68, Q = 0x71, M = 0x6d, R = 0x72, S = 0x73;

/**
 * One connection's state: `body` while a body arrives; `tail` the last
 * four bytes seen (to find "\r\n.\r\n" across reads); `partial` the first
 * letter of a command line that a read cut.
 */
export const state = () => ({ body: false, tail: 0, partial: null });

/**
 * The floor: the replies for the bytes in `chunk`, in one array (or null).
 * Line ends are found with indexOf (memchr-like), as a receiver that cares
 * about large bodies would.
 */
export function feed(s, chunk) {
  let out = null;
  let i = 0;
  const n = chunk.length;
  while (i < n) {
    const j = chunk.indexOf(LF, i);
    if (j < 0) {
      if (!s.body && s.partial === null) s.partial = chunk[i] | 0x20;
      break;
    }
    if (s.body) {
      // "\r\n.\r" then LF: the end of the body (the CRLF before the dot
      // may be DATA's own).
      if (last4(s.tail, chunk, j) === END) {
        s.body = false;
        out = add(out, OK);
      }
    } else {
      // The first letter tells the command apart (D is only DATA).
      const c0 = s.partial ?? (chunk[i] | 0x20);
      s.partial = null;
      if (c0 === D) {
        s.body = true;
        out = add(out, GO);
      } else if (c0 === E || c0 === H) out = add(out, EHLO);
      else if (c0 === Q) out = add(out, BYE);
      else out = add(out, OK);
    }
    i = j + 1;
  }
  s.tail = last4(s.tail, chunk, n);
  return out;
}

/**
 * The contract floor's state of one connection: the floor's, `write`
 * (sends replies), `onMessage` (the message hook, given the body's
 * stream), `onCommand` (the MAIL and RCPT hook); while a body arrives
 * `raw` (its stream's controller) and `done` (the message hook's
 * promise); `busy` while contractFeed() runs and `queue` the reads that
 * came meanwhile (Node and Bun hand reads over by event).
 */
export const contractState = (
  write,
  { onMessage = readToEnd, onCommand = accept } = {},
) => ({
  ...state(),
  write,
  onMessage,
  onCommand,
  raw: null,
  done: null,
  busy: false,
  queue: [],
});

/** The MAIL and RCPT hook: accepts (a resolved promise, as an async hook returns). */
async function accept() {}

/** The message hook: reads the body's stream to the end with the default reader. */
export async function readToEnd(raw) {
  const reader = raw.getReader();
  while (!(await reader.read()).done) { /* discard */ }
}

/**
 * The contract floor on Node and Bun, per read: contractFeed(), or the
 * read queued while an earlier one awaits a hook (the runtime hands over
 * a fresh buffer per read: the queue may keep it).
 */
export function contractRead(s, chunk) {
  if (s.busy) s.queue.push(chunk);
  else contractFeed(s, chunk);
}

/**
 * The contract floor: the floor's replies for `chunk` (and then for each
 * read queued meanwhile), written with `s.write` once per read; the MAIL
 * and RCPT hook awaited before their 250, the body enqueued into the
 * message's byte stream and the message hook awaited before the 250 that
 * ends it. `chunk` may be a view of a reused read buffer that the caller
 * reads into again only once the returned promise has resolved (Deno's
 * loop); what the stream gets is a copy.
 */
export async function contractFeed(s, chunk) {
  s.busy = true;
  for (;;) {
    let out = null;
    let i = 0;
    const n = chunk.length;
    // Where the body's bytes start in this read.
    let from = 0;
    while (i < n) {
      const j = chunk.indexOf(LF, i);
      if (j < 0) {
        if (!s.body && s.partial === null) s.partial = chunk[i] | 0x20;
        break;
      }
      if (s.body) {
        if (last4(s.tail, chunk, j) === END) {
          s.body = false;
          // The body ends before the final ".\r\n".
          enqueue(s.raw, chunk, from, j - 2);
          s.raw.close();
          s.raw = null;
          const done = s.done;
          s.done = null;
          await done;
          out = add(out, OK);
        }
      } else {
        const cut = s.partial;
        const c0 = cut ?? (chunk[i] | 0x20);
        s.partial = null;
        if (c0 === D) {
          s.body = true;
          out = add(out, GO);
          from = j + 1;
          const raw = new ReadableStream({
            type: "bytes",
            start: (c) => {
              s.raw = c;
            },
          });
          s.done = s.onMessage(raw);
        } else if (c0 === E || c0 === H) out = add(out, EHLO);
        else if (c0 === Q) out = add(out, BYE);
        else {
          // MAIL, or R but RSET (second letter S; unknown on a cut line).
          if (
            c0 === M ||
            (c0 === R && (cut !== null || (chunk[i + 1] | 0x20) !== S))
          ) await s.onCommand();
          out = add(out, OK);
        }
      }
      i = j + 1;
    }
    if (s.body) enqueue(s.raw, chunk, from, n);
    s.tail = last4(s.tail, chunk, chunk.length);
    if (out !== null) s.write(out);
    if (s.queue.length === 0) break;
    chunk = s.queue.shift();
  }
  s.busy = false;
}

/** Enqueues a copy of `chunk[from, to)` into the body's stream (nothing when empty). */
function enqueue(raw, chunk, from, to) {
  if (to > from) raw.enqueue(new Uint8Array(chunk.subarray(from, to)));
}

/** "\r\n.\r" as four bytes. */
const END = ((CR << 24) | (LF << 16) | (DOT << 8) | CR) >>> 0;

/** The four bytes before `end` in `chunk`, earlier reads' from `prev`. */
function last4(prev, chunk, end) {
  if (end >= 4) {
    return ((chunk[end - 4] << 24) | (chunk[end - 3] << 16) |
      (chunk[end - 2] << 8) | chunk[end - 1]) >>> 0;
  }
  let t = prev;
  for (let k = 0; k < end; k++) t = ((t << 8) | chunk[k]) >>> 0;
  return t;
}

function add(out, reply) {
  if (out === null) return reply;
  const r = new Uint8Array(out.length + reply.length);
  r.set(out);
  r.set(reply, out.length);
  return r;
}
