// For tests that measure what the server keeps in memory while a large body
// goes through: a full garbage collection on demand, the peak RSS sampled
// between collections, and a slow reader of the body.
import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import process from "node:process";
import v8 from "node:v8";
import vm from "node:vm";

/** A function that runs a full garbage collection, on Deno, Bun or Node. */
export function findGc(): () => void {
  const g = globalThis as {
    gc?: () => void;
    Bun?: { gc(force: boolean): void };
  };
  if (g.Bun) return () => g.Bun!.gc(true);
  if (g.gc) return g.gc;
  v8.setFlagsFromString("--expose-gc");
  return vm.runInNewContext("gc") as () => void;
}

const MiB = 1024 * 1024;

/**
 * A slow reader of a message body: reads `raw` to its end with the default
 * reader, hashing it (SHA-256), and pauses `pauseMs` after each MiB. `seen`
 * counts the bytes read so far (a test compares it with what the client
 * sent: how far the client got ahead), `digest` is the hash once the body
 * ended.
 */
export class SlowReader {
  seen = 0;
  digest = "";
  readonly pauseMs: number;
  constructor(pauseMs: number) {
    this.pauseMs = pauseMs;
  }

  /** Reads `raw` to its end (the onMessage hook awaits it). */
  async read(raw: ReadableStream<Uint8Array>): Promise<void> {
    const hash = createHash("sha256");
    const reader = raw.getReader();
    let pauses = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      hash.update(value);
      this.seen += value.byteLength;
      if (this.seen >= (pauses + 1) * MiB) {
        pauses++;
        await sleep(this.pauseMs);
      }
    }
    this.digest = hash.digest("hex");
  }
}

/**
 * The peak RSS of this process from now on, sampled every 20 ms and on
 * each `sample()`; `stop()` ends the sampling and gives the growth over
 * the RSS at the start, in MiB.
 */
export class RssPeak {
  readonly base: number = process.memoryUsage().rss;
  #peak = this.base;
  #timer = setInterval(() => this.sample(), 20);

  /** Takes one sample now. */
  sample(): void {
    this.#peak = Math.max(this.#peak, process.memoryUsage().rss);
  }

  /** Ends the sampling (once more now): the growth in MiB. */
  stop(): number {
    clearInterval(this.#timer);
    this.sample();
    return (this.#peak - this.base) / MiB;
  }
}
