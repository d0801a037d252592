// A tiny raw SMTP client for tests, over `node:net` (Deno, Bun and Node all
// provide it). Byte-exact: what `send()` gets goes out unchanged, and
// `reply()` returns the reply bytes as they came (latin1-decoded, CRLFs kept).
import assert from "node:assert/strict";
import * as net from "node:net";
import { Buffer } from "node:buffer";
import nodemailer from "nodemailer";
import {
  type Message,
  serve,
  type ServeOptions,
  type Server,
  type Session,
} from "../../mod.ts";

/** A connected test client. */
export interface Client {
  /** The underlying socket (for its local port, or to destroy it). */
  readonly socket: net.Socket;
  /** Writes bytes (a string is sent as latin1: one char, one byte); resolves when flushed. */
  send(data: string | Uint8Array): Promise<void>;
  /** Reads one complete reply (every line of a multi-line reply, CRLFs kept). */
  reply(): Promise<string>;
  /** Reads `n` complete replies. */
  replies(n: number): Promise<string[]>;
  /** Everything received and not yet read by `reply()`. */
  pending(): string;
  /** Half-closes: sends FIN after what was written; replies can still come. */
  end(): void;
  /** Resolves when the server has closed the connection. */
  closed(): Promise<void>;
  /** Closes the connection at once (and resolves once it is closed). */
  close(): Promise<void>;
}

/** A complete reply at the start of `buf`: its length, or -1. */
export function replyLength(buf: string): number {
  let at = 0;
  for (;;) {
    const eol = buf.indexOf("\r\n", at);
    if (eol < 0) return -1;
    // "250-..." continues; "250 ..." or a bare "250" ends the reply.
    const last = eol - at === 3 || buf[at + 3] !== "-";
    at = eol + 2;
    if (last) return at;
  }
}

/** Connects to `port` on 127.0.0.1 and resolves once connected. */
export function connect(port: number, host = "127.0.0.1"): Promise<Client> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host });
    let buf = "";
    let ended = false;
    let error: Error | null = null;
    let wake: (() => void) | null = null;
    const notify = () => {
      const w = wake;
      wake = null;
      w?.();
    };
    const isClosed = new Promise<void>((r) => socket.once("close", () => r()));
    socket.on("data", (d: Buffer) => {
      buf += d.toString("latin1");
      notify();
    });
    socket.on("error", (e) => {
      error = e;
      notify();
    });
    socket.on("close", () => {
      ended = true;
      notify();
    });

    const reply = async (): Promise<string> => {
      for (;;) {
        const n = replyLength(buf);
        if (n >= 0) {
          const r = buf.slice(0, n);
          buf = buf.slice(n);
          return r;
        }
        if (ended || error) {
          throw new Error(
            `Connection closed before a complete reply (got ${
              JSON.stringify(buf)
            })${error ? `: ${error.message}` : ""}`,
          );
        }
        await new Promise<void>((r) => (wake = r));
      }
    };

    const client: Client = {
      socket,
      send(data) {
        const bytes = typeof data === "string"
          ? Buffer.from(data, "latin1")
          : data;
        return new Promise((res, rej) => {
          socket.write(bytes, (err) => (err ? rej(err) : res()));
        });
      },
      reply,
      async replies(n) {
        const out: string[] = [];
        for (let i = 0; i < n; i++) out.push(await reply());
        return out;
      },
      pending: () => buf,
      end() {
        socket.end();
      },
      closed: () => isClosed,
      close() {
        socket.destroy();
        return isClosed;
      },
    };
    socket.once("connect", () => {
      socket.off("error", reject);
      resolve(client);
    });
    socket.once("error", reject);
  });
}

/**
 * Starts a server on 127.0.0.1:0 (server name mx.test), runs `fn` with an
 * `open()` that connects clients through `connectTo`, then closes every
 * client and the server.
 */
export async function withServerUsing<C extends { close(): Promise<void> }>(
  options: ServeOptions,
  connectTo: (port: number) => Promise<C>,
  fn: (server: Server, open: () => Promise<C>) => Promise<void>,
): Promise<void> {
  const server = await serve({
    hostname: "127.0.0.1",
    port: 0,
    serverName: "mx.test",
    ...options,
  });
  const clients: C[] = [];
  const open = async () => {
    const c = await connectTo(server.addr.port);
    clients.push(c);
    return c;
  };
  try {
    await fn(server, open);
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await server.close();
  }
}

/**
 * Starts a server (see {@link withServerUsing}), runs `fn` with an `open()`
 * that connects raw clients, then closes every client and the server.
 */
export function withServer(
  options: ServeOptions,
  fn: (server: Server, open: () => Promise<Client>) => Promise<void>,
): Promise<void> {
  return withServerUsing(options, (port) => connect(port), fn);
}

/** Connects, reads the greeting and sends EHLO. */
export async function greeted(
  open: () => Promise<Client>,
  name = "client.test",
): Promise<Client> {
  const c = await open();
  assert.match(await c.reply(), /^220 /);
  await c.send(`EHLO ${name}\r\n`);
  assert.match(await c.reply(), /^250 HELP\r\n$|^250-/);
  return c;
}

/** A message as {@link collector} keeps it: its body read in full. */
export interface Collected {
  from: string;
  to: readonly string[];
  size: number;
  body: Buffer;
  session: Session;
}

/** A message sink for onMessage, made by {@link collector}. */
export interface Collector {
  /** Every message, in the order their bodies were read. */
  readonly got: Collected[];
  /** The hook: reads the body in full and keeps the message. */
  onMessage(m: Message): Promise<void>;
  /** Resolves once `n` messages are kept. */
  waitFor(n: number): Promise<void>;
}

/** A message sink for onMessage: every body read in full, in order. */
export function collector(): Collector {
  const got: Collected[] = [];
  let wake: (() => void) | null = null;
  return {
    got,
    async onMessage(m: Message) {
      const body = Buffer.from(await m.bytes());
      got.push({
        from: m.from,
        to: m.to,
        size: m.size,
        body,
        session: m.session,
      });
      wake?.();
    },
    async waitFor(n: number) {
      while (got.length < n) await new Promise<void>((r) => (wake = r));
    },
  };
}

/** A short message, as nodemailer's `raw`. */
export const SHORT_MESSAGE: string =
  "From: a@example.org\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nHello.\r\n";

/**
 * Sends `count` copies of {@link SHORT_MESSAGE} with nodemailer, one
 * connection each, from `from` to b@example.org; the first failure throws.
 */
export async function sendWithNodemailer(
  port: number,
  count: number,
  from = "a@example.org",
): Promise<void> {
  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    port,
    secure: false,
    ignoreTLS: true,
    name: "nodemailer.test",
  });
  try {
    for (let i = 0; i < count; i++) {
      await transport.sendMail({
        envelope: { from, to: ["b@example.org"] },
        raw: SHORT_MESSAGE,
      });
    }
  } finally {
    transport.close();
  }
}
