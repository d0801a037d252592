// Deno's shim through the ops under `Deno.Conn.read` and `Deno.Conn.write`
// (`Deno[Deno.internal].core`, runtimes/deno.ts), and through those methods
// where the ops are hidden: whole sessions with bodies split at odd
// places, partial writes to a paused client, a reset client. Deno only.
import assert from "node:assert/strict";
import * as net from "node:net";
import { describe, it } from "node:test";
import type { serve } from "../mod.ts";
import type { listen } from "../runtimes/node_net.ts";
import type { Connection } from "../src/transport.ts";
import {
  bodyOf,
  openData,
  readKept,
  receiveInOrder,
  sendInPieces,
} from "./helpers/read_path.ts";
import { RUNTIME } from "./helpers/run.ts";

const dec = new TextDecoder();

describe("Deno: reads and writes through the ops under Conn.read and Conn.write, or those themselves", () => {
  /** The Deno namespace as far as this test changes it. */
  type DenoNs = {
    listen: (options: unknown) => unknown;
    internal?: symbol;
  };
  const ns = () => (globalThis as unknown as { Deno: DenoNs }).Deno;
  /** The calls of `read` and `write` on the Deno connections accepted. */
  type Calls = { reads: number; writes: number };

  /**
   * Runs `fn` with every Deno connection accepted by a listener that
   * `Deno.listen` opens meanwhile counted in `calls` (its `read` and
   * `write`); `hide`: Deno.internal is hidden during `fn` (the shim looks
   * for the ops at its first connection).
   */
  async function counted<T>(
    calls: Calls,
    hide: boolean,
    fn: () => Promise<T>,
  ): Promise<T> {
    const deno = ns();
    const realListen = deno.listen;
    const realInternal = deno.internal;
    type Conn = {
      read(b: Uint8Array): Promise<number | null>;
      write(b: Uint8Array): Promise<number>;
    };
    deno.listen = (options: unknown) => {
      const l = realListen.call(deno, options) as { accept(): Promise<Conn> };
      const accept = l.accept.bind(l);
      l.accept = async () => {
        const conn = await accept();
        const read = conn.read.bind(conn);
        const write = conn.write.bind(conn);
        Object.defineProperty(conn, "read", {
          value: (b: Uint8Array) => (calls.reads++, read(b)),
        });
        Object.defineProperty(conn, "write", {
          value: (b: Uint8Array) => (calls.writes++, write(b)),
        });
        return conn;
      };
      return l;
    };
    if (hide) deno.internal = undefined;
    try {
      return await fn();
    } finally {
      deno.listen = realListen;
      deno.internal = realInternal;
    }
  }

  /**
   * Runs one session through the `serve` of `shim` (a module instance of
   * runtimes/deno.ts), with `read` and `write` of every accepted Deno
   * connection counted; `hide`: Deno.internal is hidden meanwhile.
   */
  function session(
    shim: { serve: typeof serve },
    hide: boolean,
  ): Promise<Calls & { got: string[] }> {
    const calls = { reads: 0, writes: 0 };
    const got: string[] = [];
    return counted(calls, hide, async () => {
      const server = await shim.serve({
        hostname: "127.0.0.1",
        port: 0,
        serverName: "mx.test",
        onMessage: async (m) => void got.push(await readKept(m.raw)),
      });
      try {
        const c = await openData(server.addr.port);
        // A body larger than the read buffers, in pieces, with the next
        // transaction pipelined behind it.
        await sendInPieces(
          c,
          `${
            bodyOf(3000).wire
          }.\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n`,
          [1, 7, 1000, 65537, 3],
        );
        const r = await c.replies(4);
        assert.match(r[0], /^250 2\.0\.0 OK /);
        assert.match(r[3], /^354 /);
        await c.send(`${bodyOf(5).wire}.\r\nQUIT\r\n`);
        assert.match(await c.reply(), /^250 2\.0\.0 OK /);
        assert.match(await c.reply(), /^221 /);
        await c.close();
      } finally {
        await server.close();
      }
      return { ...calls, got };
    });
  }

  it(
    "through the ops where this Deno has them: Conn.read and Conn.write are not called, the bodies and replies are exact",
    {
      skip: RUNTIME !== "deno",
    },
    async () => {
      const shim = await import("../runtimes/deno.ts");
      const { reads, writes, got } = await session(shim, false);
      assert.equal(reads, 0);
      assert.equal(writes, 0);
      assert.deepEqual(got, [bodyOf(3000).text, bodyOf(5).text]);
    },
  );

  it(
    "through Conn.read and Conn.write where the ops are not found: the same bodies and replies",
    {
      skip: RUNTIME !== "deno",
    },
    async () => {
      // A module instance of its own: the shim looks for the ops once, at
      // its first connection.
      const spec = "../runtimes/deno.ts?conn-read";
      const shim = await import(spec) as { serve: typeof serve };
      const { reads, writes, got } = await session(shim, true);
      assert.ok(reads >= 4, `Conn.read called ${reads} times`);
      // The greeting, EHLO, 250 ×3, 354, 250 ×2, 354, 250, 221 (some may
      // go out together).
      assert.ok(writes >= 4, `Conn.write called ${writes} times`);
      assert.deepEqual(got, [bodyOf(3000).text, bodyOf(5).text]);
    },
  );

  /**
   * Through `shim` (a module instance of runtimes/deno.ts): writes larger
   * than the sockets' buffers while the client does not read (the op and
   * Conn.write take part of a chunk) all go out whole and in order; then,
   * the client gone, a write queued behind a pending one rejects and the
   * connection closes (its read ends). Returns the calls counted.
   */
  function writes(
    shim: { listen: typeof listen },
    hide: boolean,
  ): Promise<Calls> {
    const calls = { reads: 0, writes: 0 };
    return counted(calls, hide, async () => {
      const listener = await shim.listen({ hostname: "127.0.0.1", port: 0 });
      const client = net.connect({
        port: listener.addr.port,
        host: "127.0.0.1",
      });
      client.pause();
      const { value } = await listener[Symbol.asyncIterator]().next();
      const conn = value as Connection;
      try {
        const sizes = [8 * 1024 * 1024, 3, 1024 * 1024];
        const chunks = sizes.map((n, i) => new Uint8Array(n).fill(i + 1));
        const pending = chunks.map((c) => conn.write!(c));
        assert.equal(pending[0], undefined);
        await receiveInOrder(client, sizes, pending);
        // The client leaves with bytes unread: its end resets the
        // connection, and writes fail.
        client.pause();
        client.write("NOOP\r\n");
        assert.equal(dec.decode((await conn.read!())!), "NOOP\r\n");
        const read = conn.read!();
        const big = new Uint8Array(8 * 1024 * 1024);
        assert.equal(conn.write!(big), undefined);
        const after = conn.write!(new Uint8Array(3));
        assert.ok(after instanceof Promise);
        client.destroy();
        await assert.rejects(after);
        // The failed write closed the connection: its read ends.
        assert.equal(await read, null);
      } finally {
        client.destroy();
        conn.close(true);
        listener.close();
      }
      return calls;
    });
  }

  it(
    "writes through the op go out whole and in order, and a failed one rejects and closes the connection",
    { skip: RUNTIME !== "deno", timeout: 20_000 },
    async () => {
      const shim = await import("../runtimes/deno.ts");
      const calls = await writes(shim, false);
      assert.equal(calls.writes, 0);
      assert.equal(calls.reads, 0);
    },
  );

  it(
    "writes through Conn.write where the op is not found: the same",
    { skip: RUNTIME !== "deno", timeout: 20_000 },
    async () => {
      const spec = "../runtimes/deno.ts?conn-write";
      const shim = await import(spec) as { listen: typeof listen };
      const calls = await writes(shim, true);
      // Parts of the large chunks, at least one write each.
      assert.ok(calls.writes >= 4, `Conn.write called ${calls.writes} times`);
      assert.ok(calls.reads >= 1, `Conn.read called ${calls.reads} times`);
    },
  );
});
