/**
 * Maildir delivery: each message is streamed into `tmp/` under a unique
 * name, synced to disk, then renamed into `new/` (the Maildir format that
 * mutt, Dovecot, Python's `mailbox` and other mail tools read). Trace
 * headers (`Return-Path` and `Received`, RFC 5321 §4.4) are prepended; the
 * body is otherwise stored byte-exact, as received (CRLF line ends).
 *
 * Call {@link Maildir.deliver} inside `onMessage`: the hook resolves only
 * after the rename (and the directory sync), so a message that got 250
 * survives a crash one instant later. A full disk becomes 452 4.3.1, any
 * other file-system failure 451 4.3.0: the sender retries, nothing is lost.
 *
 * Uses `node:fs/promises` (Deno, Bun and Node all provide it), or any
 * {@link MaildirFs} given in the options.
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd";
 * import { Maildir } from "@smtpd/smtpd/maildir";
 *
 * const maildir = new Maildir("./maildir", { serverName: "mx.example.org" });
 * await maildir.create();
 * await serve({
 *   serverName: "mx.example.org",
 *   onMessage: (message) => maildir.deliver(message).then(() => {}),
 * });
 * ```
 *
 * @module
 */

import * as nodeFs from "node:fs/promises";
import { hostname as osHostname } from "node:os";
import process from "node:process";
import { SmtpError } from "./errors.ts";
import type { Message } from "./message.ts";
import type { Session } from "./session.ts";
import { clean, receivedFrom } from "./rdns.ts";
import { LENT_BODY, type LentBody } from "./lent_body.ts";

// The types a deliverable message is made of, for this entry point's docs.
export type * from "./api.ts";

/**
 * An open file, as {@link MaildirFs.open} returns it (the subset of
 * `node:fs/promises` `FileHandle` that delivery uses).
 *
 * @example
 * ```ts
 * import type { MaildirFile } from "@smtpd/smtpd/maildir";
 * import { open } from "node:fs/promises";
 *
 * const file: MaildirFile = await open("/tmp/example", "w");
 * await file.close();
 * ```
 */
export interface MaildirFile {
  /** Writes `length` bytes of `data` from `offset` at the current position. */
  write(
    data: Uint8Array,
    offset: number,
    length: number,
  ): Promise<{ bytesWritten: number }>;
  /** Flushes the file (or directory) to disk (`fsync`). */
  sync(): Promise<void>;
  /** Closes the file. */
  close(): Promise<void>;
}

/**
 * The file-system calls delivery makes (a subset of `node:fs/promises`).
 * Pass your own to {@link Maildir} to deliver elsewhere or to test failures.
 *
 * @example
 * ```ts
 * import type { MaildirFs } from "@smtpd/smtpd/maildir";
 * import * as fs from "node:fs/promises";
 *
 * const full: MaildirFs = {
 *   mkdir: fs.mkdir,
 *   rename: fs.rename,
 *   unlink: fs.unlink,
 *   open: () => Promise.reject(Object.assign(new Error("full"), { code: "ENOSPC" })),
 * };
 * ```
 */
export interface MaildirFs {
  /** Creates a directory and its parents (`{ recursive: true }`). */
  mkdir(
    path: string,
    options: { recursive: true; mode: number },
  ): Promise<unknown>;
  /** Opens a file: `"wx"` (create, fail if it exists) or `"r"` (a directory, to sync it). */
  open(path: string, flags: string, mode?: number): Promise<MaildirFile>;
  /** Renames a file (atomically, within one file system). */
  rename(oldPath: string, newPath: string): Promise<void>;
  /** Removes a file. */
  unlink(path: string): Promise<void>;
  /** Lists a directory's entries (for {@link Maildir.sweepTmp}). */
  readdir?(path: string): Promise<string[]>;
  /** A file's modification time and type, not following a symbolic link (for {@link Maildir.sweepTmp}). */
  lstat?(
    path: string,
  ): Promise<{ mtimeMs: number; isFile(): boolean; isDirectory(): boolean }>;
}

/**
 * How old a file in `tmp/` must be before {@link Maildir.sweepTmp} removes
 * it: 36 hours, the Maildir convention (a delivery that writes keeps its
 * file's modification time fresh, and none takes hours).
 *
 * @example
 * ```ts
 * import { TMP_MAX_AGE } from "@smtpd/smtpd/maildir";
 *
 * console.log(TMP_MAX_AGE / 3_600_000); // 36
 * ```
 */
export const TMP_MAX_AGE: number = 36 * 3600 * 1000;

/**
 * How many files of `tmp/` {@link Maildir.sweepTmp} looks at before it
 * lets the event loop run (a timer turn): a sweep of 200,000 orphans does
 * not hold up connections or timers.
 */
const SWEEP_BATCH = 256;

/**
 * Options of {@link Maildir}.
 *
 * @example
 * ```ts
 * import { Maildir } from "@smtpd/smtpd/maildir";
 *
 * const maildir = new Maildir("/var/mail/inbox", {
 *   serverName: "mx.example.org",
 *   fileMode: 0o640,
 * });
 * ```
 */
export interface MaildirOptions {
  /** The server's name in the `Received` header ("by ..."). Default `"localhost"`. */
  serverName?: string;
  /** The host name in file names. Default: the machine's (`os.hostname()`). */
  hostname?: string;
  /** The process id in file names. Default: this process's. */
  pid?: number;
  /** Prepend `Return-Path` and `Received`. Default `true`. */
  traceHeaders?: boolean;
  /** Permissions of message files. Default `0o600`. */
  fileMode?: number;
  /** Permissions of the directories it creates. Default `0o700`. */
  dirMode?: number;
  /** The file system. Default `node:fs/promises`. */
  fs?: MaildirFs;
  /** The clock, in milliseconds since the epoch (may have a fraction). Default: the system clock. */
  now?: () => number;
}

/**
 * A delivered message: where it is and how big the file is.
 *
 * @example
 * ```ts
 * import type { Delivery } from "@smtpd/smtpd/maildir";
 *
 * function describe(d: Delivery): string {
 *   return `${d.name} (${d.size} bytes) in ${d.path}`;
 * }
 * ```
 */
export interface Delivery {
  /** The file's unique name (the same in `tmp/` and `new/`). */
  name: string;
  /** The file's path in `new/`. */
  path: string;
  /** Bytes in the file, trace headers included. */
  size: number;
}

/** What the trace headers are made of: the parts of a {@link Message} they need. */
export type TraceMessage = Pick<Message, "id" | "from" | "to" | "mailFrom"> & {
  readonly session:
    & Pick<
      Session,
      "heloName" | "remoteAddress" | "esmtp" | "secure" | "tls" | "user"
    >
    & Partial<Pick<Session, "lmtp" | "clientHostname">>;
};

/** What {@link Maildir.deliver} reads of a {@link Message}: the trace header parts and the body. */
export type DeliverableMessage =
  & TraceMessage
  & Pick<Message, "raw">
  & Partial<Pick<Message, "signal">>;

/** Write in pieces of at least this size (fewer system calls for small chunks). */
const WRITE_SIZE = 64 * 1024;

/** Errors of a directory sync that mean "not supported here", not "failed". */
const SYNC_UNSUPPORTED = new Set([
  "EISDIR",
  "EINVAL",
  "ENOTSUP",
  "EOPNOTSUPP",
  "EBADF",
  "EPERM",
  "EACCES",
  "ENOSYS",
]);

/**
 * A Maildir: `cur/`, `new/` and `tmp/` under one directory.
 *
 * @example
 * ```ts
 * import { serve } from "@smtpd/smtpd";
 * import { Maildir } from "@smtpd/smtpd/maildir";
 *
 * const maildir = new Maildir("./maildir");
 * await maildir.create();
 * await serve({
 *   port: 2525,
 *   async onMessage(message) {
 *     const { path } = await maildir.deliver(message);
 *     console.log(message.id, "stored in", path);
 *   },
 * });
 * ```
 */
export class Maildir {
  /** The Maildir's directory, as given. */
  readonly path: string;
  #fs: MaildirFs;
  #serverName: string;
  #hostname: string;
  #pid: number;
  #trace: boolean;
  #fileMode: number;
  #dirMode: number;
  #now: () => number;

  /**
   * Describes a Maildir; nothing is touched on disk until
   * {@link Maildir.create} or the first delivery.
   *
   * @param path the Maildir's directory (created by {@link Maildir.create}
   *   or on the first delivery)
   * @param options see {@link MaildirOptions}
   */
  constructor(path: string, options: MaildirOptions = {}) {
    if (typeof path !== "string" || path === "") {
      throw new TypeError(
        "Cannot use Maildir path: value is not a non-empty string",
      );
    }
    this.path = path.length > 1 ? path.replace(/\/+$/, "") : path;
    this.#fs = options.fs ?? nodeFs;
    this.#serverName = options.serverName ?? "localhost";
    this.#hostname = options.hostname ?? osHostname();
    this.#pid = options.pid ?? process.pid;
    this.#trace = options.traceHeaders ?? true;
    this.#fileMode = options.fileMode ?? 0o600;
    this.#dirMode = options.dirMode ?? 0o700;
    this.#now = options.now ??
      (() => performance.timeOrigin + performance.now());
  }

  /**
   * Creates `cur/`, `new/` and `tmp/` (and the Maildir itself) where
   * missing. Throws the file system's error when it cannot.
   *
   * @example
   * ```ts
   * import { Maildir } from "@smtpd/smtpd/maildir";
   *
   * await new Maildir("./maildir").create();
   * ```
   */
  async create(): Promise<void> {
    for (const sub of ["cur", "new", "tmp"]) {
      await this.#fs.mkdir(`${this.path}/${sub}`, {
        recursive: true,
        mode: this.#dirMode,
      });
    }
  }

  /**
   * Stores a message: streams `message.raw` (never buffering the whole
   * body; a message the server made lends its body straight from the
   * read buffer instead, with no stream, and `raw` then reads as taken)
   * into `tmp/` after the trace headers, syncs the file, renames it into
   * `new/` and syncs `new/`. Resolves once the message is safely on
   * disk. Throws {@link SmtpError} 452 4.3.1 when the disk is full (or the
   * quota reached), 451 4.3.0 on any other file-system error, or the
   * stream's own error when the body did not complete; the file in `tmp/`
   * is removed on failure. The thrown `SmtpError`'s `cause` is the
   * file system's error. When `message.signal` has aborted by the time the
   * file is complete (the server gave up on the message: the sender got a
   * failure and will retry), the file is removed and the signal's reason
   * thrown: no second copy lands.
   *
   * With `options.confirm`, the message must be accepted somewhere else
   * too (a webhook) before it enters `new/`: `confirm` is called once the
   * file is complete and synced in `tmp/`, and the rename follows only if
   * it resolves (and the signal has not aborted meanwhile). If it throws,
   * the file in `tmp/` is removed and its error thrown as it is. So a
   * Maildir reader never sees a message the sender was not acknowledged
   * for; a crash while `confirm` runs leaves a file in `tmp/` only, which
   * {@link Maildir.sweepTmp} removes later.
   *
   * @param message the message (a received `Message` will do)
   * @param options `confirm`: called with where the file will be, before
   *   it goes into `new/`
   *
   * @example
   * ```ts
   * import { serve } from "@smtpd/smtpd";
   * import { Maildir } from "@smtpd/smtpd/maildir";
   *
   * const maildir = new Maildir("./maildir");
   * await serve({ onMessage: async (m) => void (await maildir.deliver(m)) });
   *
   * // Into new/ only once a second store took it too:
   * await serve({
   *   port: 2526,
   *   async onMessage(m) {
   *     await maildir.deliver(m, {
   *       // In tmp/ until this resolves; removed if it throws.
   *       confirm: async (delivery) => console.log("will be", delivery.path),
   *     });
   *   },
   * });
   * ```
   */
  async deliver(
    message: DeliverableMessage,
    options: { confirm?: (delivery: Delivery) => Promise<void> } = {},
  ): Promise<Delivery> {
    const { name, file } = await this.#openTmp();
    const tmpPath = `${this.path}/tmp/${name}`;
    const newPath = `${this.path}/new/${name}`;
    let open = true;
    let size = 0;
    const stream: { error?: { value: unknown } } = {};
    // A server's message lends its body part by part, straight from the
    // read buffer; any other is read through `raw`.
    const lent = lentBody(message);
    const reader = lent === null ? bodyReader(message.raw) : null;
    const byob = reader?.byob ?? null;
    // Parts copied into the buffer: the server's lent ones, or a default
    // reader's chunks (the application's own); else the BYOB reader fills it.
    const parts = lent ?? (reader?.plain ? chunksOf(reader.plain) : null);
    try {
      // The body goes through one buffer of this delivery's own, written
      // whenever it is full: filled by copies of small parts (fewer system
      // calls), or by a BYOB reader of `raw` (nothing allocated per
      // chunk). A part of WRITE_SIZE or more that comes when the buffer is
      // empty is written as it is.
      let buf = new ArrayBuffer(WRITE_SIZE);
      let filled = 0;
      const flush = async (data: Uint8Array) => {
        await writeAll(file, data);
        size += data.byteLength;
      };
      /** Copies `chunk` into the buffer, flushing it when full. */
      const gather = async (chunk: Uint8Array) => {
        let at = 0;
        while (at < chunk.byteLength) {
          if (filled === 0 && chunk.byteLength - at >= WRITE_SIZE) {
            return flush(at === 0 ? chunk : chunk.subarray(at));
          }
          const n = Math.min(chunk.byteLength - at, WRITE_SIZE - filled);
          new Uint8Array(buf, filled, n).set(chunk.subarray(at, at + n));
          filled += n;
          at += n;
          if (filled === WRITE_SIZE) {
            await flush(new Uint8Array(buf));
            filled = 0;
          }
        }
      };
      if (this.#trace) {
        const head = new TextEncoder().encode(
          traceHeaders(message, {
            serverName: this.#serverName,
            date: new Date(this.#now()),
          }),
        );
        if (head.byteLength >= WRITE_SIZE) await flush(head);
        else {
          new Uint8Array(buf).set(head);
          filled = head.byteLength;
        }
      }
      if (parts !== null) {
        for (;;) {
          let part: Uint8Array | null;
          try {
            part = await parts.read();
          } catch (error) {
            stream.error = { value: error };
            throw error;
          }
          if (part === null) break;
          // Written or copied before the next read (a lent part is valid
          // till then).
          await gather(part);
        }
      } else {
        for (;;) {
          let r: ReadableStreamReadResult<Uint8Array>;
          try {
            r = await byob!.read(
              new Uint8Array(buf, filled, WRITE_SIZE - filled),
            );
          } catch (error) {
            stream.error = { value: error };
            throw error;
          }
          const value = r.value;
          // The read hands the buffer back (transferred) with the bytes
          // in; at the end, empty (undefined if the stream was cancelled).
          if (value !== undefined) buf = value.buffer as ArrayBuffer;
          if (r.done) break;
          filled += value!.byteLength;
          if (filled === WRITE_SIZE) {
            await flush(new Uint8Array(buf, 0, filled));
            filled = 0;
          }
        }
      }
      if (filled > 0) await flush(new Uint8Array(buf, 0, filled));
      await file.sync();
      open = false;
      await file.close();
      // The server gave up on the message meanwhile (hookTimeout): the
      // sender got a failure and will retry, so this copy must not land.
      const signal = message.signal;
      const given = () => {
        if (signal?.aborted) {
          stream.error = { value: signal.reason ?? new Error("aborted") };
          throw stream.error.value;
        }
      };
      given();
      if (options.confirm !== undefined) {
        try {
          await options.confirm({ name, path: newPath, size });
        } catch (error) {
          stream.error = { value: error }; // thrown as it is, like the body's
          throw error;
        }
        given();
      }
      await this.#renameIntoNew(tmpPath, newPath);
    } catch (error) {
      if (stream.error === undefined) {
        if (parts !== null) parts.cancel();
        else byob!.cancel().catch(() => {});
      }
      if (open) await file.close().catch(() => {});
      await this.#fs.unlink(tmpPath).catch(() => {});
      throw stream.error !== undefined
        ? stream.error.value
        : deliveryError(error);
    } finally {
      if (reader !== null) (reader.byob ?? reader.plain!).releaseLock();
    }
    try {
      await this.#syncDir(`${this.path}/new`);
    } catch (error) {
      // The rename may not be on disk: take the message back, the sender retries.
      await this.#fs.unlink(newPath).catch(() => {});
      throw deliveryError(error);
    }
    return { name, path: newPath, size };
  }

  /** Opens a new file in `tmp/` under a fresh unique name. */
  async #openTmp(): Promise<{ name: string; file: MaildirFile }> {
    let recreated = false;
    for (let attempt = 0;; attempt++) {
      const name = maildirName(
        this.#now(),
        this.#pid,
        this.#hostname,
        randomHex(8),
      );
      try {
        const file = await this.#fs.open(
          `${this.path}/tmp/${name}`,
          "wx",
          this.#fileMode,
        );
        return { name, file };
      } catch (error) {
        const code = errorCode(error);
        if (code === "EEXIST" && attempt < 3) continue;
        if (code === "ENOENT" && !recreated) {
          // Someone removed the Maildir (or tmp/): make it again, once.
          recreated = true;
          try {
            await this.create();
            continue;
          } catch { /* report the first error */ }
        }
        throw deliveryError(error);
      }
    }
  }

  async #renameIntoNew(tmpPath: string, newPath: string): Promise<void> {
    try {
      await this.#fs.rename(tmpPath, newPath);
    } catch (error) {
      if (errorCode(error) !== "ENOENT") throw error;
      // new/ was removed since create(): make it again, once.
      await this.create();
      await this.#fs.rename(tmpPath, newPath);
    }
  }

  /**
   * Removes the orphans of `tmp/`: regular files not modified for
   * `maxAge` milliseconds (default 36 hours, {@link TMP_MAX_AGE}), left by
   * deliveries that a crash or a kill interrupted. Resolves with the
   * number removed. A file another process (another worker, another
   * delivery agent on this Maildir) is still writing has a fresh
   * modification time, so it is never touched; the process id in a name is
   * not consulted (ids are reused, and the name of a file made by another
   * program may carry none). Files that vanish meanwhile are skipped; a
   * missing `tmp/` sweeps nothing. Run it at start-up and then every hour
   * or so.
   *
   * Nothing is followed: `tmp/` must be a directory itself (a symbolic
   * link there rejects with an `Error`, and nothing is removed), and only
   * regular files in it go (not links, directories or sockets). The files
   * are taken in batches of 256, with a turn of the event
   * loop after each (timers and connections are served while a large
   * `tmp/` is swept); `signal` stops it between two files, and it then
   * resolves with the number removed so far.
   *
   * @param now the time in milliseconds since the epoch; default: the clock
   *   of {@link MaildirOptions.now}
   * @param maxAge the age past which a file is an orphan, in milliseconds
   * @param options `signal`: stops the sweep
   *
   * @example
   * ```ts
   * import { Maildir } from "@smtpd/smtpd/maildir";
   *
   * const maildir = new Maildir("./maildir");
   * const removed = await maildir.sweepTmp();
   * console.log(`${removed} orphans removed from tmp/`);
   * ```
   */
  async sweepTmp(
    now: number = this.#now(),
    maxAge: number = TMP_MAX_AGE,
    options: { signal?: AbortSignal } = {},
  ): Promise<number> {
    if (!(maxAge >= 0)) {
      throw new TypeError("Cannot sweep tmp/: maxAge is not a number of ms");
    }
    const fs = this.#fs;
    if (fs.readdir === undefined || fs.lstat === undefined) {
      throw new TypeError(
        "Cannot sweep tmp/: the Maildir's fs has no readdir or lstat",
      );
    }
    const signal = options.signal;
    const dir = `${this.path}/tmp`;
    let names: string[];
    try {
      if (!(await fs.lstat(dir)).isDirectory()) {
        throw new Error(
          `Cannot sweep ${dir}: it is not a directory (a symbolic link is not followed)`,
        );
      }
      names = await fs.readdir(dir);
    } catch (error) {
      if (errorCode(error) === "ENOENT") return 0;
      throw error;
    }
    let removed = 0;
    for (let i = 0; i < names.length; i++) {
      if (signal?.aborted) break;
      if (i > 0 && i % SWEEP_BATCH === 0) {
        await new Promise((resolve) => setTimeout(resolve, 0));
        if (signal?.aborted) break;
      }
      const path = `${dir}/${names[i]}`;
      try {
        const st = await fs.lstat(path);
        if (!st.isFile() || now - st.mtimeMs < maxAge) continue;
        await fs.unlink(path);
        removed++;
      } catch (error) {
        if (errorCode(error) !== "ENOENT") throw error;
      }
    }
    return removed;
  }

  /** Syncs a directory so that a rename in it is on disk, where the runtime can. */
  async #syncDir(path: string): Promise<void> {
    let dir: MaildirFile;
    try {
      dir = await this.#fs.open(path, "r");
    } catch (error) {
      if (SYNC_UNSUPPORTED.has(errorCode(error) ?? "")) return;
      throw error;
    }
    try {
      await dir.sync();
    } catch (error) {
      if (!SYNC_UNSUPPORTED.has(errorCode(error) ?? "")) throw error;
    } finally {
      await dir.close().catch(() => {});
    }
  }
}

/**
 * A unique Maildir file name, `sec.MusecPpidRrandom.host`, as the Maildir
 * specification describes: the time in seconds and microseconds, the
 * process id, random hex digits and the host name (with `/` written as
 * `\057` and `:` as `\072`).
 *
 * @param time milliseconds since the epoch (a fraction gives the microseconds)
 * @param pid the process id
 * @param hostname the host name
 * @param random random hex digits
 *
 * @example
 * ```ts
 * import { maildirName } from "@smtpd/smtpd/maildir";
 *
 * maildirName(1700000000123.456, 42, "mx:1", "9f3c");
 * // "1700000000.M123456P42R9f3c.mx\\0721"
 * ```
 */
export function maildirName(
  time: number,
  pid: number,
  hostname: string,
  random: string,
): string {
  const sec = Math.floor(time / 1000);
  const usec = Math.min(
    999999,
    Math.max(0, Math.floor((time - sec * 1000) * 1000)),
  );
  const host = (hostname || "localhost").replace(/\//g, "\\057").replace(
    /:/g,
    "\\072",
  );
  return `${sec}.M${usec}P${pid}R${random}.${host}`;
}

/**
 * The protocol name for the `Received` header's "with" clause (RFC 3848,
 * and RFC 6531 for SMTPUTF8): `SMTP` after HELO, `ESMTP` after EHLO,
 * `LMTP` in an LMTP session, with `S` when TLS protects the session and
 * `A` when the client authenticated; `UTF8SMTP...` (`UTF8LMTP...`) when the
 * message uses SMTPUTF8.
 *
 * @example
 * ```ts
 * import { receivedProtocol } from "@smtpd/smtpd/maildir";
 *
 * receivedProtocol({ esmtp: true, secure: true, user: "alice" }); // "ESMTPSA"
 * receivedProtocol({ esmtp: false, secure: false, user: null }); // "SMTP"
 * receivedProtocol({ esmtp: true, lmtp: true, secure: false, user: null }); // "LMTP"
 * ```
 */
export function receivedProtocol(
  session:
    & Pick<Session, "esmtp" | "secure" | "user">
    & Partial<Pick<Session, "lmtp">>,
  smtputf8 = false,
): string {
  const suffix = (session.secure ? "S" : "") +
    (session.user !== null ? "A" : "");
  // RFC 3848 §2: LMTP, LMTPS, LMTPA, LMTPSA (RFC 6531 §3.7.3: UTF8LMTP...).
  if (session.lmtp === true) return (smtputf8 ? "UTF8LMTP" : "LMTP") + suffix;
  if (!session.esmtp) return smtputf8 ? "UTF8SMTP" : "SMTP";
  return (smtputf8 ? "UTF8SMTP" : "ESMTP") + suffix;
}

/**
 * The trace headers RFC 5321 §4.4 asks a receiving server to prepend, with
 * CRLF line ends:
 *
 * ```
 * Return-Path: <sender@example.org>
 * Received: from client.example.org ([192.0.2.1])
 *         by mx.example.org with ESMTPS id 3f2a9c
 *         for <rcpt@example.net>; Tue, 3 Jun 2025 10:00:00 +0200
 * ```
 *
 * The client is named as Postfix names it: its HELO name, then in
 * parentheses its name from reverse DNS (`session.clientHostname`, with
 * the server's `reverseDns` option: the forward-confirmed name or
 * `unknown`) and its address literal, `from client.example.org
 * (mail.example.org [192.0.2.1])`; without a lookup, the address literal
 * alone. TLS is named by version and cipher in a comment. `for` is given only for
 * a single recipient, so that Bcc recipients are not disclosed to each other.
 *
 * @example
 * ```ts
 * import { traceHeaders } from "@smtpd/smtpd/maildir";
 *
 * const message = {
 *   id: "abc123",
 *   from: "a@example.org",
 *   to: ["b@example.net"],
 *   mailFrom: { mailbox: { address: "a@example.org", localPart: "a", domain: "example.org" }, params: { smtputf8: false, params: {} } },
 *   session: { heloName: "client.example.org", remoteAddress: "192.0.2.1", esmtp: true, secure: false, tls: null, user: null },
 * };
 * traceHeaders(message, { serverName: "mx.example.org", date: new Date(0) });
 * ```
 */
export function traceHeaders(
  message: TraceMessage,
  options: { serverName: string; date: Date },
): string {
  const s = message.session;
  const smtputf8 = message.mailFrom.params.smtputf8 === true;
  let received = `Received: ${
    receivedFrom(s.heloName, s.clientHostname ?? null, s.remoteAddress)
  }`;
  if (s.tls !== null) {
    received += `\r\n\t(using ${clean(s.tls.version)} with cipher ${
      clean(s.tls.cipher)
    })`;
  }
  received += `\r\n\tby ${clean(options.serverName)} with ${
    receivedProtocol(s, smtputf8)
  } id ${clean(message.id)}`;
  received += message.to.length === 1
    ? `\r\n\tfor <${clean(message.to[0])}>; ${rfc5322Date(options.date)}`
    : `;\r\n\t${rfc5322Date(options.date)}`;
  return `Return-Path: <${clean(message.from)}>\r\n${received}\r\n`;
}

/**
 * A date as RFC 5322 §3.3 writes it, in the local time zone:
 * `Tue, 3 Jun 2025 10:00:00 +0200`.
 *
 * @example
 * ```ts
 * import { rfc5322Date } from "@smtpd/smtpd/maildir";
 *
 * rfc5322Date(new Date()); // e.g. "Tue, 3 Jun 2025 10:00:00 +0200"
 * ```
 */
export function rfc5322Date(date: Date): string {
  const days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
  const months = [
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
  ];
  const two = (n: number) => String(n).padStart(2, "0");
  const offset = -date.getTimezoneOffset();
  const abs = Math.abs(offset);
  const zone = `${offset < 0 ? "-" : "+"}${two(Math.floor(abs / 60))}${
    two(abs % 60)
  }`;
  return `${days[date.getDay()]}, ${date.getDate()} ${
    months[date.getMonth()]
  } ${date.getFullYear()} ${two(date.getHours())}:${two(date.getMinutes())}:${
    two(date.getSeconds())
  } ${zone}`;
}

/** The reply a file-system failure becomes; the error is kept as `cause`. */
function deliveryError(error: unknown): SmtpError {
  if (error instanceof SmtpError) return error;
  const code = errorCode(error);
  const reply = code === "ENOSPC" || code === "EDQUOT"
    ? new SmtpError(
      452,
      "4.3.1",
      "Insufficient system storage, try again later",
    )
    : new SmtpError(451, "4.3.0", "Local error in processing, try again later");
  reply.cause = error;
  return reply;
}

function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

/** The body of a message the server made, lent part by part (see lent_body.ts); else null. */
function lentBody(message: DeliverableMessage): LentBody | null {
  const take = (message as { [LENT_BODY]?: () => LentBody | null })[
    LENT_BODY
  ];
  return typeof take === "function" ? take.call(message) : null;
}

/** A default reader's chunks as parts (see {@link LentBody}); they are not lent. */
function chunksOf(reader: ReadableStreamDefaultReader<Uint8Array>): LentBody {
  return {
    read: () => reader.read().then((r) => r.done ? null : r.value),
    cancel: () => {
      reader.cancel().catch(() => {});
    },
  };
}

/**
 * A BYOB reader of `raw` when it is a byte stream (`message.raw` is), else
 * a default reader.
 */
function bodyReader(raw: ReadableStream<Uint8Array>): {
  byob: ReadableStreamBYOBReader | null;
  plain: ReadableStreamDefaultReader<Uint8Array> | null;
} {
  try {
    return { byob: raw.getReader({ mode: "byob" }), plain: null };
  } catch (error) {
    if (!(error instanceof TypeError)) throw error;
    return { byob: null, plain: raw.getReader() };
  }
}

async function writeAll(file: MaildirFile, data: Uint8Array): Promise<void> {
  let at = 0;
  while (at < data.byteLength) {
    const { bytesWritten } = await file.write(data, at, data.byteLength - at);
    if (!(bytesWritten > 0)) {
      throw Object.assign(new Error("Cannot write message file: no progress"), {
        code: "EIO",
      });
    }
    at += bytesWritten;
  }
}

function randomHex(bytes: number): string {
  const b = new Uint8Array(bytes);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}
