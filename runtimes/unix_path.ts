/**
 * The socket file of a Unix domain socket listener, shared by the shims:
 * before listening, a stale file from a crashed run is removed (only when
 * nothing answers on it), a live server's socket or a file that is not a
 * socket is refused; after closing, the file is removed (only if it is
 * still ours). Uses `node:fs` and `node:net`, which Deno, Bun and Node
 * all have.
 *
 * @module
 */

import * as fs from "node:fs";
import * as net from "node:net";
import { basename, resolve } from "node:path";
import type { Connection, NetAddress } from "../src/transport.ts";

/** What `session.remoteAddress` and `localAddress` are on a Unix socket. */
export const UNIX_HOSTNAME = "unix";

/**
 * Makes `path` free for a new listener: nothing there, or a stale socket
 * file (connecting to it is refused, and no listening socket is bound to
 * it) which is removed. Rejects with an `Error` when a server listens on
 * it (answering or not) or when it is not a socket.
 *
 * @example
 * ```ts
 * import { prepareSocketPath } from "./unix_path.ts";
 *
 * await prepareSocketPath("/tmp/lmtp.sock");
 * ```
 */
export async function prepareSocketPath(path: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(path);
  } catch (error) {
    if ((error as { code?: string }).code === "ENOENT") return;
    throw error;
  }
  if (!st.isSocket()) {
    throw new Error(
      `Cannot listen on ${path}: the path exists and is not a socket`,
    );
  }
  const answer = await new Promise<string | null>((resolve) => {
    const s = net.connect({ path });
    s.once("connect", () => {
      s.destroy();
      resolve(null);
    });
    s.once("error", (error: Error & { code?: string }) => {
      s.destroy();
      resolve(error.code ?? "EUNKNOWN");
    });
  });
  if (answer === null) {
    throw new Error(
      `Cannot listen on ${path}: a server is listening on it`,
    );
  }
  // ECONNREFUSED: a socket file nobody listens on (a crashed run). Any
  // other failure (EAGAIN from a full backlog, EACCES) may be a live
  // server: leave it alone.
  if (answer !== "ECONNREFUSED") {
    throw new Error(
      `Cannot listen on ${path}: cannot tell whether a server uses it (${answer})`,
    );
  }
  // Bun reports a full backlog (EAGAIN) as ECONNREFUSED too: where the
  // kernel lists its listening sockets, a listed one is a live server.
  if (listeningOn(path)) {
    throw new Error(
      `Cannot listen on ${path}: a server is listening on it (its backlog is full)`,
    );
  }
  try {
    fs.unlinkSync(path);
  } catch (error) {
    if ((error as { code?: string }).code !== "ENOENT") throw error;
  }
}

/** `__SO_ACCEPTCON` in the Flags column of `/proc/net/unix`: a listening socket. */
const SO_ACCEPTCON = 0x10000;
/** A line of `/proc/net/unix` with a path: its Flags and its Path. */
const PROC_NET_UNIX_LINE =
  /^\s*\S+:\s+\S+\s+\S+\s+(\S+)\s+\S+\s+\S+\s+\S+ (.+)$/;

/**
 * Whether a socket listens on `path`, as Linux's `/proc/net/unix` lists
 * them (false where there is no such file). A socket bound by a relative
 * name counts when its last component is the same (its directory is the
 * binder's working directory, unknown here): never take a live server for
 * a stale one.
 */
function listeningOn(path: string): boolean {
  let table: string;
  try {
    table = fs.readFileSync("/proc/net/unix", "latin1");
  } catch {
    return false;
  }
  const abs = resolve(path);
  const base = basename(abs);
  for (const line of table.split("\n")) {
    // Num RefCount Protocol Flags Type St Inode Path
    const m = PROC_NET_UNIX_LINE.exec(line);
    if (m === null || (parseInt(m[1], 16) & SO_ACCEPTCON) === 0) continue;
    const bound = m[2];
    if (
      bound.startsWith("/") ? resolve(bound) === abs : basename(bound) === base
    ) {
      return true;
    }
  }
  return false;
}

/**
 * The identity of the socket file just bound at `path` (to remove only
 * our own file on close), or null when it cannot be read.
 */
export function socketFileId(path: string): string | null {
  try {
    const st = fs.statSync(path);
    return `${st.dev}:${st.ino}`;
  } catch {
    return null;
  }
}

/**
 * Removes the socket file at `path` if it is still the one `id` names
 * (another server may have taken the path since). Never throws.
 */
export function removeSocketPath(path: string, id: string | null): void {
  try {
    const st = fs.lstatSync(path);
    if (!st.isSocket()) return;
    if (id !== null && `${st.dev}:${st.ino}` !== id) return;
    fs.unlinkSync(path);
  } catch { /* gone already */ }
}

/** The listener address of a Unix socket at `path`. */
export function unixAddr(path: string): NetAddress {
  return { hostname: UNIX_HOSTNAME, port: 0, path };
}

/**
 * A connection accepted on a Unix socket, with the addresses the driver
 * shows (`"unix"`, port 0) in place of what the runtime reports (Deno
 * gives a path and no hostname, Node and Bun nothing useful).
 */
export function unixConnection(conn: Connection, path: string): Connection {
  // Own properties: the shims' connections are classes whose addresses are
  // getters (made on first use), which an assignment could not replace.
  return Object.defineProperties(conn, {
    remoteAddr: {
      value: { hostname: UNIX_HOSTNAME, port: 0 },
      enumerable: true,
    },
    localAddr: { value: unixAddr(path), enumerable: true },
  });
}

/**
 * A listener's socket file, for the shims: made ready before the listen
 * (`UnixSocketFile.prepare`), its identity recorded once bound, its
 * connections given Unix addresses, and the file removed on close if it
 * is still ours.
 *
 * @example
 * ```ts
 * import { UnixSocketFile } from "./unix_path.ts";
 *
 * const file = await UnixSocketFile.prepare("/tmp/smtpd.sock");
 * // ... listen on file.path, then:
 * file.bound();
 * file.remove();
 * ```
 */
export class UnixSocketFile {
  /** The socket file's path. */
  readonly path: string;
  /** The listener address (`"unix"`, port 0, the path). */
  readonly addr: NetAddress;
  #id: string | null = null;

  private constructor(path: string) {
    this.path = path;
    this.addr = unixAddr(path);
  }

  /** Checks the path and removes a stale socket file there (see prepareSocketPath). */
  static async prepare(path: string): Promise<UnixSocketFile> {
    await prepareSocketPath(path);
    return new UnixSocketFile(path);
  }

  /** The listener is bound: remember which file is ours. */
  bound(): void {
    this.#id = socketFileId(this.path);
  }

  /** A connection accepted on it, with Unix addresses (see unixConnection). */
  wrap(conn: Connection): Connection {
    return unixConnection(conn, this.path);
  }

  /** Removes the file if it is still the one bound (never throws). */
  remove(): void {
    removeSocketPath(this.path, this.#id);
  }
}
