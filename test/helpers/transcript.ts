// Runs byte transcripts through the engine, fed whole, byte by byte and split
// at every offset, and checks that every feeding gives the same result.
import assert from "node:assert/strict";
import { SmtpError } from "../../mod.ts";
import {
  type EngineOptions,
  SmtpEngine,
  type SmtpEvent,
} from "../../src/exports/engine.ts";

/**
 * Answers a decision: return an SmtpError to reject, a string to accept
 * with that text, nothing to accept; an array answers an LMTP message-end
 * recipient by recipient (acceptEach).
 */
export type Decide = (
  ev: SmtpEvent,
  engine: SmtpEngine,
) => SmtpError | string | void | (SmtpError | string | null)[];

/** What one run of a transcript produced. */
export interface TranscriptResult {
  /** Every reply the engine wrote, concatenated. */
  output: string;
  /** Events in order; consecutive data events merged into one `data:<text>`. */
  events: string[];
  /** Bodies of messages that reached an accepted message-end. */
  messages: string[];
  /** Every event except `data` and `need-data`, as the engine gave it (for parameter checks). */
  raw: SmtpEvent[];
  /** Why the engine closed, or null. */
  closed: string | null;
  /** Largest number of bytes the engine held at once. */
  maxBuffered: number;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Bytes of a transcript written as a string (latin1 for \xNN escapes above 0x7f use bytes()). */
export function bytes(s: string): Uint8Array {
  return enc.encode(s);
}

/** Runs the engine over `chunks` (each handed to receive() in turn). */
export function run(
  chunks: Uint8Array[],
  options: EngineOptions = {},
  decide: Decide = () => {},
): TranscriptResult {
  const engine = new SmtpEngine(options, 0);
  const events: string[] = [];
  const messages: string[] = [];
  const raw: SmtpEvent[] = [];
  let output = "";
  let body = "";
  let closed: string | null = null;
  let maxBuffered = 0;
  const pump = () => {
    for (;;) {
      const ev = engine.nextEvent();
      if (ev.type === "need-data") break;
      if (ev.type === "close") {
        closed = ev.reason;
        break;
      }
      if (ev.type === "data") {
        const text = dec.decode(ev.chunk);
        body += text;
        const last = events.length - 1;
        if (last >= 0 && events[last].startsWith("data:")) events[last] += text;
        else events.push("data:" + text);
        continue;
      }
      events.push(describe(ev));
      raw.push(ev);
      if (ev.type === "message-start") body = "";
      if (
        ev.type === "connect" || ev.type === "helo" || ev.type === "mail" ||
        ev.type === "rcpt" || ev.type === "message-end" ||
        ev.type === "starttls" || ev.type === "auth"
      ) {
        const answer = decide(ev, engine);
        if (Array.isArray(answer)) {
          if (answer.some((a) => !(a instanceof SmtpError))) {
            messages.push(body);
          }
          engine.acceptEach(answer);
        } else if (answer instanceof SmtpError) engine.reject(answer);
        else {
          if (ev.type === "message-end") messages.push(body);
          engine.accept(answer === undefined ? undefined : answer);
          // The driver upgrades the connection only after an accepted STARTTLS.
          if (ev.type === "starttls") engine.tlsStarted();
        }
      }
    }
    const out = engine.takeOutput();
    if (out !== null) output += dec.decode(out);
  };
  pump();
  for (const chunk of chunks) {
    if (closed !== null) break;
    engine.receive(chunk, 0);
    maxBuffered = Math.max(maxBuffered, engine.bufferedBytes);
    pump();
  }
  return { output, events, messages, raw, closed, maxBuffered };
}

function describe(ev: SmtpEvent): string {
  switch (ev.type) {
    case "helo":
      return `helo:${ev.verb} ${ev.hostname}`;
    case "mail":
      return `mail:<${ev.from.address}>${
        Object.keys(ev.params.params).length
          ? " " + JSON.stringify(ev.params.params)
          : ""
      }`;
    case "rcpt":
      return `rcpt:<${ev.to.address}>`;
    case "message-end":
      return `message-end:${ev.size}`;
    case "message-abort":
      return `message-abort:${ev.error.code} ${ev.error.enhancedCode}`;
    case "command":
      return `command:${ev.line}`;
    case "auth": {
      const c = ev.credentials;
      return `auth:${c.mechanism} ${c.username} ${
        c.password ?? c.token ?? c.response
      }${c.authorizationId ? " as " + c.authorizationId : ""}`;
    }
    default:
      return ev.type;
  }
}

/**
 * The ways to feed `segments`: each segment whole, byte by byte, and split
 * in two at every offset. Bytes of different segments never share a chunk
 * (a segment is what a client sends before it waits for a reply, such as
 * the bytes up to STARTTLS).
 */
export function* feedings(
  ...segments: Uint8Array[]
): Generator<Uint8Array[]> {
  yield segments.filter((s) => s.length > 0);
  const single: Uint8Array[] = [];
  for (const input of segments) {
    for (let i = 0; i < input.length; i++) {
      single.push(input.subarray(i, i + 1));
    }
  }
  yield single;
  for (let k = 0; k < segments.length; k++) {
    const input = segments[k];
    for (let i = 1; i < input.length; i++) {
      yield [
        ...segments.slice(0, k),
        input.subarray(0, i),
        input.subarray(i),
        ...segments.slice(k + 1),
      ].filter((s) => s.length > 0);
    }
  }
}

/**
 * Runs `input` every way it can be fed and asserts all runs agree; returns
 * the result of the whole feeding. An array of segments is fed with a chunk
 * boundary between segments (see {@link feedings}).
 */
export function transcript(
  input: string | Uint8Array | (string | Uint8Array)[],
  options: EngineOptions = {},
  decide: Decide = () => {},
): TranscriptResult {
  const segments = (Array.isArray(input) ? input : [input]).map((s) =>
    typeof s === "string" ? bytes(s) : s
  );
  let first: TranscriptResult | null = null;
  let n = 0;
  for (const chunks of feedings(...segments)) {
    const r = run(chunks, options, decide);
    if (first === null) first = r;
    else {
      const { maxBuffered: _a, ...a } = r;
      const { maxBuffered: _b, ...b } = first as TranscriptResult;
      assert.deepEqual(a, b, `feeding #${n} (${chunks.length} chunks) differs`);
    }
    n++;
  }
  return first!;
}

/** The reply lines of an output, e.g. ["220 ...", "250 2.1.0 Sender OK"]. */
export function replies(output: string): string[] {
  return output.split("\r\n").filter((l) => l !== "");
}

/** The reply codes (with enhanced code when present) of the final line of each reply. */
export function codes(output: string): string[] {
  return replies(output)
    .filter((l) => l[3] === " ")
    .map((l) => {
      const m = /^(\d{3}) (\d\.\d{1,3}\.\d{1,3})?/.exec(l)!;
      return m[2] ? `${m[1]} ${m[2]}` : m[1];
    });
}
