// What an idle session keeps: the parts of a connection that only a
// message or a hook needs are made when first needed, not with every
// connection (counted with node:v8's queryObjects, where the runtime has
// it: Node 22 and later).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as net from "node:net";
import * as v8 from "node:v8";
import { describe, it } from "node:test";
import { serve } from "../mod.ts";
import { MessageDelivery } from "../src/delivery.ts";
import { HookCalls } from "../src/hooks.ts";
import { connect } from "./helpers/client.ts";
import { RUNTIME } from "./helpers/run.ts";
import { listen as listenBun } from "../runtimes/bun.ts";
import type { ReadWaiter } from "../src/shim_kit.ts";
import type { Connection } from "../src/transport.ts";

type QueryObjects = (
  ctor: abstract new (...args: never[]) => unknown,
  options: { format: "count" },
) => number;
const queryObjects = (v8 as unknown as { queryObjects?: QueryObjects })
  .queryObjects;

/** Live instances of `ctor` (queryObjects collects garbage first). */
function live(ctor: abstract new (...args: never[]) => unknown): number {
  return queryObjects!(ctor, { format: "count" });
}

const needsQueryObjects =
  RUNTIME !== "node" || typeof queryObjects !== "function"
    ? "needs node:v8 queryObjects"
    : false;

/**
 * Opens a raw connection (no promise kept by the client while it idles)
 * and sends EHLO; resolves once the EHLO reply came.
 */
function idleAfterEhlo(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: "127.0.0.1" });
    let got = "";
    let greeted = false;
    const onData = (d: Uint8Array) => {
      got += new TextDecoder().decode(d);
      if (!greeted && /^220 .*\r\n$/.test(got)) {
        greeted = true;
        got = "";
        sock.write("EHLO client.test\r\n");
      } else if (greeted && /(^|\n)250 [^\r]*\r\n$/.test(got)) {
        sock.off("data", onData);
        sock.off("error", reject);
        resolve(sock);
      }
    };
    sock.on("data", onData);
    sock.on("error", reject);
  });
}

describe("idle session", () => {
  it(
    "an idle session keeps no promise: its read waits without one",
    { skip: needsQueryObjects },
    async () => {
      const server = await serve({ hostname: "127.0.0.1", port: 0 });
      const socks: net.Socket[] = [];
      try {
        // One session first: what the first connection makes once (the
        // accept loop's own promises) is not counted.
        socks.push(await idleAfterEhlo(server.addr.port));
        const before = live(Promise);
        const n = 20;
        for (let i = 0; i < n; i++) {
          socks.push(await idleAfterEhlo(server.addr.port));
        }
        // A pending read and the suspended loop were 2 promises a session.
        const added = live(Promise) - before;
        assert.ok(added < n, `${added} promises kept by ${n} idle sessions`);
      } finally {
        for (const s of socks) s.destroy();
        await server.close();
      }
    },
  );

  it(
    "a session idle after EHLO has no message delivery and no hook waiter; the first message makes its delivery",
    {
      skip: RUNTIME !== "node" || typeof queryObjects !== "function"
        ? "needs node:v8 queryObjects"
        : false,
    },
    async () => {
      const server = await serve({
        hostname: "127.0.0.1",
        port: 0,
        onMessage: async (message) => {
          for await (const _ of message.raw) { /* discard */ }
        },
      });
      // Counted before the connection: none of its objects exist yet.
      const deliveries = live(MessageDelivery);
      const hooks = live(HookCalls);
      const c = await connect(server.addr.port);
      try {
        assert.match(await c.reply(), /^220 /);
        await c.send("EHLO client.test\r\n");
        assert.match(await c.reply(), /^250-/);
        assert.equal(live(MessageDelivery), deliveries, "MessageDelivery");
        assert.equal(live(HookCalls), hooks, "HookCalls");
        await c.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
        assert.deepEqual((await c.replies(3)).map((r) => r.slice(0, 3)), [
          "250",
          "250",
          "354",
        ]);
        await c.send("Subject: x\r\n\r\nbody\r\n.\r\n");
        assert.match(await c.reply(), /^250 /);
        assert.equal(live(MessageDelivery), deliveries + 1);
        await c.send("QUIT\r\n");
        assert.match(await c.reply(), /^221 /);
      } finally {
        await c.close();
        await server.close();
      }
    },
  );
});

/** Opens `n` connections to `port` from another process and holds them until its stdin ends. */
const HOLD = `
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
held = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
print("held", flush=True)
sys.stdin.read()
`;

describe("idle connection on Bun", () => {
  it(
    "keeps one object, its connection (which is the socket's state), nothing more (no input queue or array of its own)",
    { skip: RUNTIME !== "bun" ? "needs bun:jsc" : false },
    async () => {
      type HeapStats = () => { objectTypeCounts: Record<string, number> };
      const jsc = "bun:jsc";
      const { heapStats, estimateShallowMemoryUsageOf: size } =
        (await import(jsc)) as {
          heapStats: HeapStats;
          estimateShallowMemoryUsageOf(o: object): number;
        };
      const gc = (globalThis as unknown as {
        Bun: { gc(full: boolean): void };
      }).Bun.gc;
      /** Live plain objects and arrays after a full collection. */
      const objects = () => {
        gc(true);
        const c = heapStats().objectTypeCounts;
        return (c.Object ?? 0) + (c.Array ?? 0);
      };
      const listener = await listenBun({ hostname: "127.0.0.1", port: 0 });
      const n = 50;
      const conns: Connection[] = [];
      let all!: () => void;
      const accepted = new Promise<void>((r) => (all = r));
      const waiter: ReadWaiter = { onRead() {} };
      const loop = (async () => {
        for await (const conn of listener) {
          conns.push(conn);
          // Waits for input as the driver does, without a promise.
          (conn as Connection & { readOr(w: ReadWaiter): unknown }).readOr(
            waiter,
          );
          if (conns.length === n) all();
        }
      })();
      const before = objects();
      const client = spawn("python3", [
        "-c",
        HOLD,
        String(listener.addr.port),
        String(n),
      ], { stdio: ["pipe", "pipe", "inherit"] });
      try {
        await accepted;
        const per = (objects() - before) / n;
        // The BunConnection, which is the socket's state and its input
        // queue; a SocketState apart made 2, an InputQueue and its array 4.
        assert.ok(per <= 1.5, `${per} objects per idle connection`);
        // Its heap cell: 18 fields; one more takes the next size. Apart,
        // SocketState and BunConnection took 112 + 80 bytes.
        const bytes = size(conns[0]);
        assert.ok(bytes <= 160, `${bytes} bytes of connection and state`);
      } finally {
        client.stdin!.end();
        for (const c of conns) c.close();
        listener.close();
        await loop;
      }
    },
  );
});
