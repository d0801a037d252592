// Helpers for the TLS and AUTH tests: the test certificates, a line client
// that can move from a plaintext socket to TLS (STARTTLS), the runtime's
// own listener, and an async program runner (never a synchronous spawn:
// the server runs on this event loop).
import { Buffer } from "node:buffer";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import * as net from "node:net";
import * as tls from "node:tls";
import assert from "node:assert/strict";
import { replyLength, withServerUsing } from "./client.ts";
import type { ServeOptions, Server, TlsOptions } from "../../mod.ts";
import type { ListenFn } from "../../src/exports/transport.ts";

const fixtures = new URL("../fixtures/", import.meta.url);

/** The test certificate for localhost / 127.0.0.1 (RSA). */
export const TLS: TlsOptions = {
  key: readFileSync(new URL("tls/key.pem", fixtures), "utf8"),
  cert: readFileSync(new URL("tls/cert.pem", fixtures), "utf8"),
};

/** A second certificate, for other.test and *.other.test (EC). */
export const OTHER_TLS: TlsOptions = {
  key: readFileSync(new URL("tls/other-key.pem", fixtures), "utf8"),
  cert: readFileSync(new URL("tls/other-cert.pem", fixtures), "utf8"),
};

/** Path of a file under test/fixtures/. */
export function fixture(name: string): string {
  return decodeURIComponent(new URL(name, fixtures).pathname);
}

/** SHA-256 fingerprints (as node:tls prints them) of the two certificates. */
export const FINGERPRINT = {
  localhost:
    "CC:0F:72:A9:52:65:27:8E:3D:46:47:0E:9F:28:19:40:1A:98:C7:A3:54:EB:FD:83:8B:38:BE:4D:8C:8B:76:50",
  other:
    "7D:19:77:7B:3B:66:EB:92:11:7F:24:15:16:57:33:6A:76:EA:F4:5D:89:9E:AB:3F:0B:8F:43:86:B0:1C:FA:98",
};

/** The shim of the runtime running the tests (what `serve()` picks). */
export async function runtimeListen(): Promise<ListenFn> {
  const g = globalThis as { Deno?: unknown; Bun?: unknown };
  const shim = g.Deno !== undefined
    ? await import("../../runtimes/deno.ts")
    : g.Bun !== undefined
    ? await import("../../runtimes/bun.ts")
    : await import("../../runtimes/node.ts");
  return shim.listen;
}

/** The runtime running the tests. */
export function runtimeName(): "deno" | "bun" | "node" {
  const g = globalThis as { Deno?: unknown; Bun?: unknown };
  return g.Deno !== undefined ? "deno" : g.Bun !== undefined ? "bun" : "node";
}

/** What a program printed and how it ended. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program asynchronously; resolves also when it exits non-zero. */
export function run(
  file: string,
  args: string[],
  timeout = 30000,
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      { timeout, maxBuffer: 16 * 1024 * 1024, encoding: "latin1" },
      (error, stdout, stderr) => {
        const code = error === null
          ? 0
          : typeof (error as { code?: unknown }).code === "number"
          ? (error as { code: number }).code
          : -1;
        if (code === -1) {
          reject(
            new Error(`${file} failed: ${error?.message}\n${stderr}`, {
              cause: error,
            }),
          );
        } else {resolve({
            code,
            stdout: String(stdout),
            stderr: String(stderr),
          });}
      },
    );
  });
}

/**
 * An SMTP line client on a socket, plaintext or TLS. `detach()` stops it
 * reading, so that the socket can be handed to `tls.connect` (STARTTLS).
 */
export class Wire {
  readonly socket: net.Socket;
  #buf = "";
  #ended = false;
  #error: Error | null = null;
  #wake: (() => void) | null = null;
  readonly #onData = (d: Buffer) => {
    this.#buf += d.toString("latin1");
    this.#notify();
  };
  readonly #onEnd = () => {
    this.#ended = true;
    this.#notify();
  };
  readonly #onError = (e: Error) => {
    this.#error = e;
    this.#notify();
  };
  /** Resolves when the socket has closed. */
  readonly closed: Promise<void>;

  constructor(socket: net.Socket) {
    this.socket = socket;
    this.closed = new Promise((r) => {
      if (socket.destroyed) r();
      else socket.once("close", () => r());
    });
    socket.on("data", this.#onData);
    socket.on("end", this.#onEnd);
    socket.on("close", this.#onEnd);
    socket.on("error", this.#onError);
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }

  /** Bytes received and not read by `reply()`. */
  pending(): string {
    return this.#buf;
  }

  /** Whether the peer ended the connection. */
  get ended(): boolean {
    return this.#ended;
  }

  /** Sends text as latin1 (one char, one byte). */
  send(data: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.write(
        Buffer.from(data, "latin1"),
        (err) => (err ? reject(err) : resolve()),
      );
    });
  }

  /** Reads one complete reply (all lines, CRLFs kept). */
  async reply(): Promise<string> {
    for (;;) {
      const n = replyLength(this.#buf);
      if (n >= 0) {
        const r = this.#buf.slice(0, n);
        this.#buf = this.#buf.slice(n);
        return r;
      }
      if (this.#ended || this.#error) {
        throw new Error(
          `Connection closed before a complete reply (got ${
            JSON.stringify(this.#buf)
          })${this.#error ? `: ${this.#error.message}` : ""}`,
        );
      }
      await new Promise<void>((r) => (this.#wake = r));
    }
  }

  /** Sends a command and reads its reply. */
  async command(line: string): Promise<string> {
    await this.send(`${line}\r\n`);
    return this.reply();
  }

  /** Stops reading (the socket is about to be wrapped in TLS). */
  detach(): void {
    this.socket.off("data", this.#onData);
    this.socket.off("end", this.#onEnd);
    this.socket.off("close", this.#onEnd);
    this.socket.off("error", this.#onError);
  }

  /** Waits for the peer to close the connection (rejects after `ms`). */
  async waitClosed(ms = 5000): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        this.closed,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`connection still open after ${ms} ms`)),
            ms,
          );
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Closes the socket at once. */
  close(): Promise<void> {
    this.socket.destroy();
    return this.closed;
  }
}

/** Opens a plaintext connection to 127.0.0.1:port. */
export function connectPlain(port: number): Promise<Wire> {
  return connectWire({ port, host: "127.0.0.1" });
}

/**
 * Opens a plaintext connection as `net.connect` takes it: a Unix socket's
 * `path`, or a port with a `localAddress` to come from.
 */
export function connectWire(options: net.NetConnectOpts): Promise<Wire> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(options);
    socket.once("error", reject);
    socket.once("connect", () => {
      socket.off("error", reject);
      resolve(new Wire(socket));
    });
  });
}

/**
 * Runs a TLS client handshake on `socket` (a plaintext socket after the
 * 220 to STARTTLS) or, without `socket`, on a new connection to `port`
 * (implicit TLS). The server's certificate is not verified unless
 * `options` says so.
 */
export function connectTls(
  port: number,
  options: tls.ConnectionOptions = {},
): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: "127.0.0.1",
      port,
      rejectUnauthorized: false,
      ...options,
    });
    const fail = (err: Error) => {
      socket.destroy();
      reject(err);
    };
    socket.once("error", fail);
    socket.once("close", () => fail(new Error("closed during the handshake")));
    socket.once("secureConnect", () => {
      socket.off("error", fail);
      socket.removeAllListeners("close");
      resolve(socket);
    });
  });
}

/** Upgrades a plaintext {@link Wire} after the server's 220 to STARTTLS. */
export async function upgrade(
  wire: Wire,
  options: tls.ConnectionOptions = {},
): Promise<Wire> {
  wire.detach();
  const secure = await connectTls(0, { socket: wire.socket, ...options });
  return new Wire(secure);
}

/** Waits until the server has no open connection (rejects after `ms`). */
export async function idle(server: Server, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (server.connections > 0) {
    if (Date.now() > until) {
      throw new Error(
        `server still has ${server.connections} connection(s) after ${ms} ms`,
      );
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Starts a server, runs `fn`, then closes the clients and the server. */
export function withServer(
  options: ServeOptions,
  fn: (server: Server, open: () => Promise<Wire>) => Promise<void>,
): Promise<void> {
  return withServerUsing(options, connectPlain, fn);
}

/** Reads the greeting and sends EHLO; returns the EHLO reply. */
export async function ehlo(w: Wire, name = "client.test"): Promise<string> {
  assert.match(await w.reply(), /^220 /);
  return w.command(`EHLO ${name}`);
}

/** Connects, greets, STARTTLS, handshake, EHLO again: the TLS wire. */
export async function starttls(
  open: () => Promise<Wire>,
  options: tls.ConnectionOptions = {},
): Promise<Wire> {
  const w = await open();
  assert.match(await ehlo(w), /STARTTLS/);
  assert.match(await w.command("STARTTLS"), /^220 2\.0\.0 /);
  const s = await upgrade(w, options);
  assert.match(await s.command("EHLO client.test"), /^250-/);
  return s;
}
