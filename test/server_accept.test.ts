// The listener outlives clients that are gone before their connection is
// accepted: on Deno, accept() then fails for that one connection (it cannot
// read the peer's address), which used to end the server's accepting for
// good (found behind HAProxy: smtp-source's last sessions got no greeting).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as net from "node:net";
import { describe, it } from "node:test";
import { serve } from "../mod.ts";
import {
  type Connection,
  createServer,
  type Listener,
  type ListenFn,
} from "../src/exports/transport.ts";
import { listen as listenNode } from "../runtimes/node.ts";
import {
  ACCEPT,
  ConnectionQueue,
  type DirectListener,
  fixedLocalAddr,
  InputQueue,
  MAX_READ,
  MIN_READ,
  nextReadSize,
  ReadSizer,
  type ReadWaiter,
  ShimConnection,
} from "../src/shim_kit.ts";
import type { NetAddress } from "../src/transport.ts";

/** Connects `n` times and resets each connection (SO_LINGER 0), from another process. */
const RESETS = `
import socket, struct, sys
port = int(sys.argv[1])
for _ in range(int(sys.argv[2])):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.connect(("127.0.0.1", port))
    s.close()
`;

function greeting(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: "127.0.0.1" });
    const timer = setTimeout(() => {
      s.destroy();
      resolve("no greeting within 3 s");
    }, 3000);
    s.once("data", (d) => {
      clearTimeout(timer);
      s.destroy();
      resolve(String(d));
    });
    s.on("error", (e) => {
      clearTimeout(timer);
      resolve(`error: ${e.message}`);
    });
  });
}

describe("accepting", () => {
  it("goes on after connections that were reset before they were accepted", async () => {
    const errors: string[] = [];
    const server = await serve({
      hostname: "127.0.0.1",
      port: 0,
      logger: (e) => {
        if (e.type === "error") errors.push(e.message);
      },
    });
    try {
      const port = server.addr.port;
      assert.match(await greeting(port), /^220 /);
      // execFileSync holds this process (the server) while another one
      // connects and resets: the connections wait in the accept queue,
      // already reset, when the server gets to them.
      execFileSync("python3", ["-c", RESETS, String(port), "200"]);
      for (let i = 0; i < 3; i++) {
        assert.match(await greeting(port), /^220 /);
      }
      assert.deepEqual(
        errors.filter((m) => m.startsWith("listener failed")),
        [],
      );
    } finally {
      await server.close();
    }
  });

  it("a listener whose iteration throws is iterated again; a connection that cannot be admitted is closed alone", async () => {
    const errors: string[] = [];
    let throws = 1;
    // The node:net listener, wrapped: its first iteration fails, and its
    // first connection has an address that throws when read.
    const flaky: ListenFn = async (options) => {
      const real = await listenNode(options);
      let broken = 1;
      const listener: Listener = {
        get addr() {
          return real.addr;
        },
        close: () => real.close(),
        async *[Symbol.asyncIterator]() {
          if (throws-- > 0) throw new Error("accept failed");
          for await (const conn of real) {
            if (broken-- > 0) {
              yield Object.defineProperty(conn, "remoteAddr", {
                get() {
                  throw new Error("no address");
                },
              }) as Connection;
            } else yield conn;
          }
        },
      };
      return listener;
    };
    const server = await createServer(flaky, "node", {
      hostname: "127.0.0.1",
      port: 0,
      logger: (e) => {
        if (e.type === "error") errors.push(e.message);
      },
    });
    try {
      const port = server.addr.port;
      const first = await greeting(port);
      assert.doesNotMatch(first, /^220 /, "the broken connection is closed");
      assert.match(await greeting(port), /^220 /);
      assert.match(await greeting(port), /^220 /);
      assert.deepEqual(errors, [
        "listener failed; accepting again",
        "could not admit a connection",
      ]);
    } finally {
      await server.close();
    }
  });
});

describe("the Deno listener's iteration", () => {
  it(
    "ends when the listener closes, and after return(); goes on after a connection it could not take",
    {
      skip: (globalThis as { Deno?: unknown }).Deno === undefined,
    },
    async () => {
      const { listen: denoListen } = await import("../runtimes/deno.ts");
      const listener = await denoListen({ hostname: "127.0.0.1", port: 0 });
      const port = listener.addr.port;
      const it = listener[Symbol.asyncIterator]();
      try {
        // Clients reset before their accept, then one that stays.
        execFileSync("python3", ["-c", RESETS, String(port), "20"]);
        const client = net.connect({ port, host: "127.0.0.1" });
        const first = await it.next();
        assert.equal(first.done, false);
        const conn = first.value as Connection;
        client.write("NOOP\r\n");
        let got = "";
        while (!got.endsWith("\r\n")) {
          const chunk = await conn.read!();
          if (chunk === null) break;
          got += new TextDecoder().decode(chunk);
        }
        // A reset client's connection may have been taken (its read ends
        // at once): the one that stays is found by what it sent.
        if (got !== "NOOP\r\n") {
          for (;;) {
            conn.close();
            const next = await it.next();
            assert.equal(next.done, false);
            const c = next.value as Connection;
            const chunk = await c.read!();
            if (chunk !== null) {
              assert.equal(new TextDecoder().decode(chunk), "NOOP\r\n");
              c.close();
              break;
            }
          }
        } else conn.close();
        client.destroy();
        // A pending accept ends when the listener closes.
        const pending = it.next();
        listener.close();
        assert.deepEqual(await pending, { done: true, value: undefined });
        assert.deepEqual(await it.next(), { done: true, value: undefined });
      } finally {
        listener.close();
      }
      // return() ends an iteration whose listener is still open.
      const open = await denoListen({ hostname: "127.0.0.1", port: 0 });
      try {
        const it2 = open[Symbol.asyncIterator]();
        await it2.return!();
        assert.deepEqual(await it2.next(), { done: true, value: undefined });
      } finally {
        open.close();
      }
    },
  );
});

describe("the Deno listener's direct accept", () => {
  it(
    "hands each connection to take, goes on after a connection it could not take, resolves when the listener closes",
    {
      skip: (globalThis as { Deno?: unknown }).Deno === undefined,
    },
    async () => {
      const { listen: denoListen } = await import("../runtimes/deno.ts");
      const listener = await denoListen({ hostname: "127.0.0.1", port: 0 });
      const direct = (listener as DirectListener)[ACCEPT];
      assert.equal(typeof direct, "function");
      const port = listener.addr.port;
      const got: Connection[] = [];
      let taken = () => {};
      let ended = false;
      const taking = direct!.call(listener, (c) => {
        got.push(c);
        taken();
      }).then(() => ended = true);
      const nextConn = async () => {
        while (got.length === 0) {
          await new Promise<void>((r) => taken = r);
        }
        return got.shift()!;
      };
      try {
        // Clients reset before their accept, then one that stays.
        execFileSync("python3", ["-c", RESETS, String(port), "20"]);
        const client = net.connect({ port, host: "127.0.0.1" });
        client.write("NOOP\r\n");
        // A reset client's connection may have been taken (its read ends
        // at once): the one that stays is found by what it sent.
        for (;;) {
          const c = await nextConn();
          const chunk = await c.read!();
          c.close();
          if (chunk !== null) {
            assert.equal(new TextDecoder().decode(chunk), "NOOP\r\n");
            break;
          }
        }
        client.destroy();
        assert.equal(ended, false);
        listener.close();
        await taking;
        assert.equal(ended, true);
      } finally {
        listener.close();
      }
    },
  );
});

describe("nextReadSize", () => {
  it("grows 4-fold after a full read (up to MAX_READ), shrinks to MIN_READ after 8 small reads in a row", () => {
    const step = (size: number, n: number, small: number) => {
      const next = nextReadSize(size, n, small);
      return [next >>> 4, next & 15];
    };
    assert.deepEqual(step(MIN_READ, MIN_READ, 0), [1024, 0]);
    assert.deepEqual(step(16384, 16384, 3), [MAX_READ, 0]);
    assert.deepEqual(step(MAX_READ, MAX_READ, 0), [MAX_READ, 0]);
    assert.deepEqual(step(MIN_READ, 10, 0), [MIN_READ, 0]); // small already
    assert.deepEqual(step(1024, 10, 0), [1024, 1]);
    assert.deepEqual(step(1024, 300, 5), [1024, 0]); // not small: count again
    assert.deepEqual(step(1024, 10, 7), [MIN_READ, 0]); // the 8th
  });

  it("agrees with ReadSizer read after read", () => {
    const sizer = new ReadSizer();
    let size = MIN_READ;
    let packed = size << 4;
    let seed = 7;
    for (let i = 0; i < 2000; i++) {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      // Mostly small reads, some full ones, some in between.
      const n = seed % 5 === 0
        ? size
        : seed % 7 === 0
        ? 1 + seed % size
        : 1 + seed % 64;
      const a = sizer.next(size, n);
      packed = nextReadSize(size, n, packed & 15);
      assert.equal(packed >>> 4, a, `read ${i}`);
      size = a;
    }
  });
});

describe("fixedLocalAddr", () => {
  it("gives one address as the kernel writes it", () => {
    for (
      const [given, written] of [
        ["127.0.0.1", "127.0.0.1"],
        ["0:0:0:0:0:0:0:1", "::1"],
        ["2001:DB8::0001", "2001:db8::1"],
        ["::ffff:192.0.2.1", "192.0.2.1"],
      ]
    ) {
      assert.deepEqual(fixedLocalAddr(given, 25), {
        hostname: written,
        port: 25,
      }, given);
    }
  });

  it("gives null for a wildcard or a name (each connection is asked)", () => {
    for (
      const h of ["0.0.0.0", "::", "::ffff:0.0.0.0", "localhost", "fe80::1%lo"]
    ) {
      assert.equal(fixedLocalAddr(h, 25), null, h);
    }
  });
});

describe("ShimConnection", () => {
  /** A connection with one chunk to read, counting what the base asks. */
  class Counted extends ShimConnection {
    asked = { peer: 0, own: 0, closed: 0 };
    sent: Uint8Array[] = [];
    #input: Uint8Array | null = new Uint8Array([1, 2]);
    read(): Uint8Array | null {
      const chunk = this.#input;
      this.#input = null;
      return chunk;
    }
    write(bytes: Uint8Array): void {
      this.sent.push(bytes);
    }
    close(): void {
      this.asked.closed++;
    }
    protected peerAddr(): NetAddress {
      this.asked.peer++;
      return { hostname: "192.0.2.1", port: 40000 };
    }
    protected ownAddr(): NetAddress {
      this.asked.own++;
      return { hostname: "192.0.2.25", port: 25 };
    }
  }

  it("asks the runtime for each address once, not at all for a local address given", () => {
    const conn = new Counted(null);
    assert.equal(conn.remoteAddr, conn.remoteAddr);
    assert.deepEqual(conn.localAddr, { hostname: "192.0.2.25", port: 25 });
    conn.localAddr;
    assert.deepEqual(conn.asked, { peer: 1, own: 1, closed: 0 });
    const known = { hostname: "127.0.0.1", port: 2525 };
    const given = new Counted(null, known);
    assert.equal(given.localAddr, known);
    assert.equal(given.asked.own, 0);
  });

  it("makes its streams once, over read() and write(); cancelling closes", async () => {
    const conn = new Counted({ version: "TLSv1.3", cipher: "x" });
    assert.equal(conn.tls?.version, "TLSv1.3");
    assert.equal(conn.readable, conn.readable);
    assert.equal(conn.writable, conn.writable);
    const reader = conn.readable.getReader();
    assert.deepEqual(await reader.read(), {
      done: false,
      value: new Uint8Array([1, 2]),
    });
    assert.deepEqual(await reader.read(), { done: true, value: undefined });
    const writer = conn.writable.getWriter();
    await writer.write(new Uint8Array([3]));
    assert.deepEqual(conn.sent, [new Uint8Array([3])]);
    const other = new Counted(null);
    await other.readable.cancel();
    assert.equal(other.asked.closed, 1);
  });
});

describe("a listener's direct accept", () => {
  /** A connection that records what the server writes; its input never comes. */
  class Recorder extends ShimConnection {
    written = "";
    readonly input = new InputQueue({ pause() {}, resume() {} });
    read(): Uint8Array | null | Promise<Uint8Array | null> {
      return this.input.read();
    }
    readOr(waiter: ReadWaiter): Uint8Array | null | undefined {
      return this.input.readOr(waiter);
    }
    write(bytes: Uint8Array): void {
      this.written += new TextDecoder().decode(bytes);
    }
    close(): void {
      this.input.end();
    }
    protected peerAddr(): NetAddress {
      return { hostname: "192.0.2.1", port: 40000 };
    }
    protected ownAddr(): NetAddress {
      return { hostname: "192.0.2.25", port: 25 };
    }
  }

  it("the server takes each connection as it is pushed: greeted before push() returns", async () => {
    const queue = new ConnectionQueue();
    const listener: DirectListener = {
      addr: { hostname: "192.0.2.25", port: 25 },
      close: () => void queue.close(),
      [Symbol.asyncIterator]: () => queue[Symbol.asyncIterator](),
      [ACCEPT]: (take) => queue[ACCEPT](take),
    };
    const server = await createServer(
      () => Promise.resolve(listener),
      "memory",
      { serverName: "mx.test" },
    );
    const conn = new Recorder(null);
    queue.push(conn);
    // No microtask turn in between: no promise per accepted connection.
    assert.equal(conn.written, "220 mx.test ESMTP smtpd\r\n");
    assert.equal(server.connections, 1);
    await server.close();
    assert.match(conn.written, /^421 4\.3\.2 /m);
    assert.equal(server.connections, 0);
  });
  it("the node:net listener offers it: the server greets a connection without iterating the listener", async () => {
    const listener = await listenNode({ hostname: "127.0.0.1", port: 0 });
    assert.equal(typeof (listener as DirectListener)[ACCEPT], "function");
    let iterated = false;
    const iterate = listener[Symbol.asyncIterator];
    listener[Symbol.asyncIterator] = () => {
      iterated = true;
      return iterate.call(listener);
    };
    const server = await createServer(
      () => Promise.resolve(listener),
      "node",
      { serverName: "mx.test" },
    );
    try {
      const client = net.connect({ port: server.addr.port, host: "127.0.0.1" });
      const greeting = await new Promise<string>((resolve, reject) => {
        client.once("data", (d) => resolve(String(d)));
        client.once("error", reject);
      });
      client.destroy();
      assert.match(greeting, /^220 mx\.test /);
      assert.equal(iterated, false);
    } finally {
      await server.close();
    }
  });
});

describe("ConnectionQueue", () => {
  /** A connection that only counts its close() calls. */
  class Stub extends ShimConnection {
    closed = 0;
    read(): null {
      return null;
    }
    write(_bytes: Uint8Array): void {}
    close(): void {
      this.closed++;
    }
    protected peerAddr(): NetAddress {
      return { hostname: "192.0.2.1", port: 40000 };
    }
    protected ownAddr(): NetAddress {
      return { hostname: "192.0.2.25", port: 25 };
    }
  }

  /** Microtask turns until `done()` (at most 20). */
  async function turnsUntil(done: () => boolean): Promise<number> {
    let turns = 0;
    while (!done() && turns < 20) {
      await Promise.resolve();
      turns++;
    }
    return turns;
  }

  it("hands a connection pushed while the loop waits to its for await in one microtask turn", async () => {
    const queue = new ConnectionQueue();
    const got: Connection[] = [];
    const loop = (async () => {
      for await (const c of queue) got.push(c);
    })();
    await turnsUntil(() => false); // the loop waits for a connection
    const a = new Stub(null);
    queue.push(a);
    // An async generator in between took 3 turns (its await, its yield's
    // await, then the loop's).
    assert.equal(await turnsUntil(() => got.length === 1), 1);
    assert.equal(got[0], a);
    queue.close();
    await loop;
  });

  it("yields what was pushed before, in order; close() ends every waiting next() and closes later pushes", async () => {
    const queue = new ConnectionQueue();
    const a = new Stub(null);
    const b = new Stub(null);
    queue.push(a);
    queue.push(b);
    const it = queue[Symbol.asyncIterator]();
    assert.deepEqual(await it.next(), { value: a, done: false });
    assert.deepEqual(await it.next(), { value: b, done: false });
    const waiting = [it.next(), it.next()];
    const c = new Stub(null);
    queue.push(c);
    assert.deepEqual(await waiting[0], { value: c, done: false });
    assert.equal(queue.close(), true);
    assert.equal(queue.close(), false);
    assert.deepEqual(await waiting[1], { value: undefined, done: true });
    assert.deepEqual(await it.next(), { value: undefined, done: true });
    const late = new Stub(null);
    queue.push(late);
    assert.equal(late.closed, 1);
    assert.equal(queue.closed, true);
  });

  it("its iterator is iterable itself", async () => {
    const queue = new ConnectionQueue();
    const a = new Stub(null);
    queue.push(a);
    queue.close();
    const it = queue[Symbol.asyncIterator]();
    assert.equal(it[Symbol.asyncIterator](), it);
    const got: Connection[] = [];
    for await (const c of it) got.push(c);
    assert.deepEqual(got, [a]);
  });

  it("[ACCEPT] takes what was pushed before, then each push in push() itself; resolves on close()", async () => {
    const queue = new ConnectionQueue();
    const [a, b] = [new Stub(null), new Stub(null)];
    queue.push(a);
    const got: Connection[] = [];
    let ended = false;
    const taking = queue[ACCEPT]((c) => got.push(c)).then(() => ended = true);
    assert.deepEqual(got, [a]);
    queue.push(b);
    assert.deepEqual(got, [a, b]);
    await turnsUntil(() => false);
    assert.equal(ended, false);
    queue.close();
    await taking;
    const late = new Stub(null);
    queue.push(late);
    assert.equal(late.closed, 1);
    assert.deepEqual(got, [a, b]);
  });

  it("a loop left with break can be started again", async () => {
    const queue = new ConnectionQueue();
    const [a, b] = [new Stub(null), new Stub(null)];
    queue.push(a);
    queue.push(b);
    for await (const c of queue) {
      assert.equal(c, a);
      break;
    }
    for await (const c of queue) {
      assert.equal(c, b);
      break;
    }
  });
});
