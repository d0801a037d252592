// The driver's side of a message (src/message.ts) without sockets: the body
// fed in with push()/end()/abort()/drain() and read through `raw` or
// bytes(), in every order the driver and a hook can take.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { IncomingMessage } from "../src/message.ts";
import { LENT_BODY, type LentBody } from "../src/lent_body.ts";
import type { Session } from "../src/session.ts";

const HIGH_WATER_MARK = 256 * 1024;
const enc = new TextEncoder();
const dec = new TextDecoder();

function message(): IncomingMessage {
  return new IncomingMessage(
    "id1",
    { mailbox: { address: "a@b.test" } as never, params: {} as never },
    [{ mailbox: { address: "c@d.test" } as never, params: { params: {} } }],
    {} as Session,
  );
}

/** Chunks of `n` bytes, each filled with its own letter. */
function chunks(count: number, n: number): Uint8Array[] {
  return Array.from(
    { length: count },
    (_, i) => enc.encode(String.fromCharCode(97 + (i % 26)).repeat(n)),
  );
}

function join(parts: Uint8Array[]): string {
  return parts.map((p) => dec.decode(p)).join("");
}

async function readAll(stream: ReadableStream<Uint8Array>): Promise<string> {
  let out = "";
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return out;
    out += dec.decode(value);
  }
}

/** Whether `p` has settled after the pending microtasks and a macrotask. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(() => (done = true), () => (done = true));
  await new Promise((r) => setTimeout(r, 0));
  return done;
}

describe("IncomingMessage", () => {
  it("bytes() without raw returns the chunks pushed before and after the call, in order", async () => {
    const m = message();
    const body = chunks(6, 1000);
    for (const c of body.slice(0, 3)) assert.equal(m.push(c), undefined);
    const got = m.bytes();
    for (const c of body.slice(3)) assert.equal(m.push(c), undefined);
    m.end();
    assert.equal(dec.decode(await got), join(body));
    assert.equal(await m.text(), join(body));
    assert.equal(m.size, 6000);
  });

  it("bytes() keeps taking a body far larger than the queue without asking to wait", async () => {
    const m = message();
    const got = m.bytes();
    const body = chunks(40, 64 * 1024);
    for (const c of body) assert.equal(m.push(c), undefined);
    m.end();
    assert.equal((await got).byteLength, 40 * 64 * 1024);
  });

  it("push asks to wait once a queue's worth is unread, and raw releases it when read", async () => {
    const m = message();
    const body = chunks(8, 64 * 1024);
    let i = 0;
    let wait: Promise<void> | undefined;
    while (wait === undefined) wait = m.push(body[i++]);
    assert.equal(i * 64 * 1024, HIGH_WATER_MARK);
    assert.equal(await settled(wait), false);
    const reading = readAll(m.raw);
    await wait;
    for (; i < body.length; i++) {
      const w = m.push(body[i]);
      if (w !== undefined) await w;
    }
    m.end();
    assert.equal(await reading, join(body));
  });

  it("push asks to wait until bytes() is called when nobody reads", async () => {
    const m = message();
    const body = chunks(4, HIGH_WATER_MARK / 4);
    const waits = body.map((c) => m.push(c));
    assert.deepEqual(waits.slice(0, 3), [undefined, undefined, undefined]);
    assert.equal(await settled(waits[3]!), false);
    const got = m.bytes();
    await waits[3];
    m.end();
    assert.equal(dec.decode(await got), join(body));
  });

  it("drain() releases a waiting push and drops what comes next, still counting it", async () => {
    const m = message();
    const body = chunks(4, HIGH_WATER_MARK / 4);
    let wait: Promise<void> | undefined;
    for (const c of body) wait = m.push(c);
    m.drain();
    await wait;
    assert.equal(m.push(enc.encode("late")), undefined);
    m.end();
    assert.equal(m.size, HIGH_WATER_MARK + 4);
  });

  it("raw first used after the end yields the whole body, then closes", async () => {
    const m = message();
    const body = chunks(3, 100);
    for (const c of body) m.push(c);
    m.end();
    assert.equal(await readAll(m.raw), join(body));
    assert.equal(m.raw, m.raw);
  });

  it("bytes() after the end resolves the whole body", async () => {
    const m = message();
    const body = chunks(3, 100);
    for (const c of body) m.push(c);
    m.end();
    assert.equal(dec.decode(await m.bytes()), join(body));
    const empty = message();
    empty.end();
    assert.equal((await empty.bytes()).byteLength, 0);
  });

  it("bytes() through raw returns what raw has not given out yet", async () => {
    const m = message();
    const body = chunks(3, 100);
    m.push(body[0]);
    const reader = m.raw.getReader();
    assert.equal(
      dec.decode((await reader.read()).value!),
      join(body.slice(0, 1)),
    );
    reader.releaseLock();
    const got = m.bytes();
    m.push(body[1]);
    m.push(body[2]);
    m.end();
    assert.equal(dec.decode(await got), join(body.slice(1)));
  });

  it("abort() rejects bytes() and errors raw with its reason, before or after they are used", async () => {
    const reason = new Error("cut short");
    for (const order of ["read-first", "abort-first"]) {
      for (const how of ["bytes", "raw"]) {
        const m = message();
        m.push(enc.encode("x"));
        const read = () => how === "bytes" ? m.bytes() : readAll(m.raw);
        let got: Promise<unknown> | null = null;
        if (order === "read-first") got = read();
        m.abort(reason);
        m.end(); // ignored after abort
        got ??= read();
        await assert.rejects(got, (e) => e === reason, `${order} ${how}`);
      }
    }
  });

  it("raw is locked once bytes() has taken the body", async () => {
    const m = message();
    const got = m.bytes();
    m.push(enc.encode("body"));
    assert.equal(m.raw.locked, true);
    assert.throws(() => m.raw.getReader(), TypeError);
    m.end();
    assert.equal(dec.decode(await got), "body");
  });

  it("a cancelled raw drops the rest of the body and lets end() and abort() pass", async () => {
    const m = message();
    m.push(enc.encode("head"));
    const reader = m.raw.getReader();
    await reader.read();
    await reader.cancel();
    assert.equal(m.push(enc.encode("rest")), undefined);
    m.end();
    m.abort(new Error("ignored"));
    assert.equal(m.size, 8);
  });

  it("has the envelope", () => {
    const m = message();
    assert.equal(m.id, "id1");
    assert.equal(m.from, "a@b.test");
    assert.deepEqual(m.to, ["c@d.test"]);
  });
});

/**
 * Feeds `body` to `m` as the driver does from a reused read buffer: each
 * piece is a view of one buffer, lent until push() settles, and the buffer
 * is overwritten (with "#") before the next piece is read into it.
 */
async function pushLent(
  m: IncomingMessage,
  body: Uint8Array,
  cuts: readonly number[],
): Promise<void> {
  const buf = new Uint8Array(body.length + 1);
  let at = 0;
  for (const end of [...cuts, body.length]) {
    buf.fill(35);
    buf.set(body.subarray(at, end), 1);
    const wait = m.push(buf.subarray(1, 1 + end - at));
    if (wait !== undefined) await wait;
    at = end;
  }
  buf.fill(35);
  m.end();
}

/** Reads `stream` with a BYOB reader into buffers of `size` bytes. */
async function readByob(
  stream: ReadableStream<Uint8Array>,
  size: number,
): Promise<string> {
  const reader = stream.getReader({ mode: "byob" });
  let buf = new ArrayBuffer(size);
  let out = "";
  for (;;) {
    const { done, value } = await reader.read(new Uint8Array(buf));
    if (value !== undefined) buf = value.buffer as ArrayBuffer;
    if (done) return out;
    out += dec.decode(value);
  }
}

describe("IncomingMessage.raw as a byte stream", () => {
  const text = "Subject: lent\r\n\r\nline one\r\nline two\r\n";
  const body = enc.encode(text);

  it("a BYOB reader gets the body exact, split at every offset, into buffers of 1, 3, 7 and 64 bytes", async () => {
    for (const size of [1, 3, 7, 64]) {
      for (let cut = 0; cut <= body.length; cut++) {
        const m = message();
        const got = readByob(m.raw, size);
        await pushLent(m, body, [cut]);
        assert.equal(await got, text, `buffer ${size}, cut at ${cut}`);
        assert.equal(m.size, body.length);
      }
    }
  });

  it("a BYOB reader that starts late takes the chunk the driver still lends", async () => {
    const m = message();
    const raw = m.raw;
    const feeding = pushLent(m, body, [5, 20]);
    assert.equal(await settled(feeding), false); // the driver waits
    assert.equal(await readByob(raw, 4), text);
    await feeding;
  });

  it("a default reader gets chunks of its own: kept whole after the read buffer is reused", async () => {
    for (let cut = 0; cut <= body.length; cut++) {
      const m = message();
      const kept: Uint8Array[] = [];
      const reading = (async () => {
        for await (const chunk of m.raw) kept.push(chunk);
      })();
      await pushLent(m, body, [cut]);
      await reading;
      assert.equal(join(kept), text, `cut at ${cut}`);
    }
  });

  it("bytes() and text() get the body when every chunk was lent", async () => {
    for (const order of ["before", "after"]) {
      const m = message();
      const got = order === "before" ? m.text() : null;
      await pushLent(m, body, [3, 17, 30]);
      assert.equal(await (got ?? m.text()), text, order);
      assert.equal(dec.decode(await m.bytes()), text, order);
    }
  });

  it("a BYOB reader that cancels mid-body lets the waiting driver go on and drops the rest", async () => {
    const m = message();
    const reader = m.raw.getReader({ mode: "byob" });
    const feeding = pushLent(m, body, [10, 20]);
    const first = await reader.read(new Uint8Array(4));
    assert.equal(dec.decode(first.value), text.slice(0, 4));
    await reader.cancel();
    await feeding; // not left waiting
    assert.equal(m.size, body.length);
  });

  it("end() answers a BYOB read in progress with done", async () => {
    const m = message();
    const reader = m.raw.getReader({ mode: "byob" });
    const read = reader.read(new Uint8Array(8));
    m.end();
    const r = await read;
    assert.equal(r.done, true);
  });
});

/** Reads a LentBody to its end, decoding each part before the next read. */
async function readLent(body: LentBody): Promise<string> {
  let out = "";
  for (let part = await body.read(); part !== null; part = await body.read()) {
    out += dec.decode(part);
  }
  return out;
}

describe("IncomingMessage's body lent without a stream (LENT_BODY)", () => {
  const text = "Subject: lent\r\n\r\nline one\r\nline two\r\n";
  const body = enc.encode(text);

  it("gets the body exact, split at every offset, each part lent until the next read", async () => {
    for (let cut = 0; cut <= body.length; cut++) {
      for (let cut2 = cut; cut2 <= body.length; cut2 += 7) {
        const m = message();
        const lent = m[LENT_BODY]()!;
        const got = readLent(lent);
        // pushLent overwrites its buffer once push() settles: a part kept
        // past the next read would come out as "#".
        await pushLent(m, body, [cut, cut2]);
        assert.equal(await got, text, `cuts at ${cut}, ${cut2}`);
        assert.equal(m.size, body.length);
      }
    }
  });

  it("hands out what was queued before it was taken first, then the lent parts", async () => {
    const m = message();
    const early = chunks(3, 1000);
    for (const c of early) assert.equal(m.push(c), undefined);
    const lent = m[LENT_BODY]()!;
    const got = readLent(lent);
    await pushLent(m, body, [4, 30]);
    assert.equal(await got, join(early) + text);
  });

  it("lets a driver that waited on a full queue go on once taken", async () => {
    const m = message();
    const big = chunks(5, HIGH_WATER_MARK / 4);
    let wait: Promise<void> | undefined;
    for (const c of big) wait = m.push(c) ?? wait;
    assert.ok(wait, "the queue is full: the driver waits");
    assert.equal(await settled(wait), false);
    const lent = m[LENT_BODY]()!;
    assert.equal(await settled(wait), true);
    m.end();
    assert.equal(await readLent(lent), join(big));
  });

  it("cancel() mid-body lets the waiting driver go on and drops the rest", async () => {
    const m = message();
    const lent = m[LENT_BODY]()!;
    const feeding = pushLent(m, body, [10, 20]);
    const first = await lent.read();
    assert.equal(dec.decode(first!), text.slice(0, 10));
    lent.cancel();
    await feeding; // not left waiting
    assert.equal(m.size, body.length);
    assert.equal(await lent.read(), null);
  });

  it("end() answers a waiting read with null; abort() rejects it with the reason", async () => {
    const ended = message();
    const a = ended[LENT_BODY]()!.read();
    ended.end();
    assert.equal(await a, null);
    const aborted = message();
    const reason = new Error("client gone");
    const lent = aborted[LENT_BODY]()!;
    const b = lent.read();
    aborted.abort(reason);
    await assert.rejects(b, (e) => e === reason);
    await assert.rejects(lent.read(), (e) => e === reason);
  });

  it("a body aborted before it was taken rejects the first read, queued parts dropped", async () => {
    const m = message();
    m.push(enc.encode("some"));
    const reason = new Error("timeout");
    m.abort(reason);
    await assert.rejects(m[LENT_BODY]()!.read(), (e) => e === reason);
  });

  it("once taken, raw is locked and bytes() rejects until the body is read, then both are as after a reader of raw; not taken twice", async () => {
    const m = message();
    const lent = m[LENT_BODY]()!;
    assert.equal(m[LENT_BODY](), null);
    assert.equal(m.raw.locked, true);
    await assert.rejects(m.bytes(), TypeError);
    const first = lent.read();
    const wait = m.push(enc.encode("x"));
    assert.equal(dec.decode((await first)!), "x");
    const second = lent.read();
    await wait; // the driver goes on once the part is done with
    m.end();
    assert.equal(await second, null);
    assert.equal(m.raw.locked, false);
    assert.equal(await readAll(m.raw), "");
    for (const late of [true, false]) {
      // raw first asked for after (late) or while the body is read.
      const a = message();
      const body = a[LENT_BODY]()!;
      const raw = late ? null : a.raw;
      a.push(enc.encode("y"));
      const reason = new Error("gone");
      a.abort(reason);
      await assert.rejects(body.read(), (e) => e === reason);
      if (raw !== null) {
        await assert.rejects(readAll(raw), (e) => e === reason);
      } else await assert.rejects(a.bytes(), (e) => e === reason);
    }
    const done = message();
    const cancelled = done[LENT_BODY]()!;
    cancelled.cancel();
    assert.equal(dec.decode(await done.bytes()), "");
    const viaRaw = message();
    void viaRaw.raw;
    assert.equal(viaRaw[LENT_BODY](), null);
    const viaBytes = message();
    void viaBytes.bytes();
    assert.equal(viaBytes[LENT_BODY](), null);
  });
});
