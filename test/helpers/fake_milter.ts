// A fake milter filter for tests: a node:net server that negotiates, logs
// every command it receives (per connection) and answers each one with
// what the test's handler returns (by default `continue`, or nothing for
// the stages it said it does not answer).
import * as net from "node:net";
import {
  encodePacket,
  type MilterCommand,
  MilterDecoder,
  parseCommand,
  SMFIP,
} from "../../src/milter/protocol.ts";

/** What the handler wants done with one command. */
export type FakeAction =
  /** Write these bytes (packets, or garbage). */
  | Uint8Array[]
  /** Close the connection now. */
  | "close"
  /** Write nothing (a filter that hangs). */
  | "silent"
  /** The default answer. */
  | undefined;

/** A running fake filter. */
export interface FakeMilter {
  /** Its address for the client, such as `inet:PORT@127.0.0.1`. */
  address: string;
  /** The commands each connection received, in order. */
  connections: MilterCommand[][];
  /**
   * Per connection, the command types of each TCP read that completed
   * packets (which commands arrived together).
   */
  reads: MilterCommand["type"][][][];
  /** Stops listening and drops every connection. */
  close(): Promise<void>;
}

const NO_REPLY: Partial<Record<MilterCommand["type"], number>> = {
  connect: SMFIP.NR_CONN,
  helo: SMFIP.NR_HELO,
  mail: SMFIP.NR_MAIL,
  rcpt: SMFIP.NR_RCPT,
  data: SMFIP.NR_DATA,
  header: SMFIP.NR_HDR,
  eoh: SMFIP.NR_EOH,
  body: SMFIP.NR_BODY,
};

/**
 * Starts a fake filter on a loopback port (or the Unix socket `path`) that
 * negotiates `actions` and `protocol` (its optneg reply is `optneg` bytes
 * if given) and answers each command with `handler`'s result.
 */
export function startFakeMilter(
  options: {
    actions?: number;
    protocol?: number;
    path?: string;
    optneg?: Uint8Array[];
    handler?: (cmd: MilterCommand, index: number) => FakeAction;
  } = {},
): Promise<FakeMilter> {
  const connections: MilterCommand[][] = [];
  const reads: MilterCommand["type"][][][] = [];
  const sockets = new Set<net.Socket>();
  const protocol = options.protocol ?? 0;
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    const log: MilterCommand[] = [];
    connections.push(log);
    const readLog: MilterCommand["type"][][] = [];
    reads.push(readLog);
    const decoder = new MilterDecoder();
    socket.on("data", (chunk: Uint8Array) => {
      const packets = decoder.push(chunk);
      if (packets.length > 0) readLog.push([]);
      for (const packet of packets) {
        const cmd = parseCommand(packet);
        readLog.at(-1)!.push(cmd.type);
        log.push(
          cmd.type === "body" ? { ...cmd, chunk: cmd.chunk.slice() } : cmd,
        );
        let action = options.handler?.(cmd, log.length - 1);
        if (action === undefined && cmd.type === "quit") {
          socket.end();
          return;
        }
        if (action === undefined) {
          if (cmd.type === "optneg") {
            action = options.optneg ?? [
              encodePacket(
                "O",
                new Uint8Array([
                  0,
                  0,
                  0,
                  6,
                  ...be32(options.actions ?? 0x1ff),
                  ...be32(protocol),
                ]),
              ),
            ];
          } else if (
            cmd.type === "macro" || cmd.type === "abort" ||
            cmd.type === "quit" || cmd.type === "quit-nc"
          ) action = [];
          else if ((protocol & (NO_REPLY[cmd.type] ?? 0)) !== 0) action = [];
          else action = [encodePacket("c")];
        }
        if (action === "close") {
          socket.destroy();
          return;
        }
        if (action === "silent") continue;
        for (const b of action) socket.write(b);
      }
    });
  });
  return new Promise((resolve) => {
    const listening = () => {
      const address = options.path !== undefined
        ? `unix:${options.path}`
        : `inet:${(server.address() as net.AddressInfo).port}@127.0.0.1`;
      resolve({
        address,
        connections,
        reads,
        close: () =>
          new Promise<void>((done) => {
            for (const s of sockets) s.destroy();
            server.close(() => done());
          }),
      });
    };
    if (options.path !== undefined) server.listen(options.path, listening);
    else server.listen(0, "127.0.0.1", listening);
  });
}

/** Four big-endian bytes. */
export function be32(n: number): number[] {
  return [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
}
