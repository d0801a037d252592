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
import { fixedLocalAddr, ShimConnection } from "../src/shim_kit.ts";
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
