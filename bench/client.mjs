// The pipelining load client (workload W5) and the big-message sender (the
// memory bench). smtp-source sends HELO and waits for every reply; this
// client sends EHLO and then one write per message: the body, ".", and the
// next transaction's MAIL, RCPT and DATA (RFC 2920: DATA ends a group, and
// the message content may start the next one). One round trip per message.
//
//   node bench/client.mjs --port P --sessions 20 --messages 20000 --size 1024
//   node bench/client.mjs --port P --big 100        # one 100 MB message
//
//   node bench/client.mjs --port P --sessions 20 --messages 20000 --size 1024 --bdat
//   node bench/client.mjs --port P --idle 1000     # hold 1000 idle sessions
//   node bench/client.mjs --port P --probe         # the EHLO keywords
//
// --bdat (workload W6): RFC 3030 instead of DATA, one write per message:
// `MAIL`, `RCPT`, `BDAT <size> LAST` and the message bytes pipelined, then
// three replies. When the server's EHLO reply has no CHUNKING the client
// sends QUIT, prints {"skipped":"no CHUNKING"} and exits 3.
//
// --idle N: opens N sessions (200 at a time), reads each greeting, sends
// EHLO and reads its reply, then prints {"held":N} and keeps them open
// until stdin ends; then closes them and exits.
//
// --probe: prints {"ehlo":["PIPELINING",...]} (the EHLO keywords).
//
// --messages is the total over all sessions. Prints one JSON line:
// {"messages":N,"bytes":B,"ms":T}. Exits 1 on any unexpected reply, a
// closed connection, or when --timeout (ms, default 600000) passes.
// Connects to 127.0.0.1 only.
import net from "node:net";
import process from "node:process";

const args = process.argv.slice(2);
function opt(name, fallback) {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
}
const port = opt("port", 0);
const sessions = opt("sessions", 1);
const total = opt("messages", 1);
const size = opt("size", 1024);
const bigMb = opt("big", 0);
const idle = opt("idle", 0);
const bdat = args.includes("--bdat");
const probe = args.includes("--probe");
const timeout = opt("timeout", 600000);
if (!(port > 0)) {
  console.error(
    "Usage: client.mjs --port P [--sessions N --messages M --size S | --big MB]",
  );
  process.exit(2);
}

const FROM = "MAIL FROM:<sender@bench.example>\r\n";
const RCPT = "RCPT TO:<rcpt@bench.example>\r\n";
const GROUP = FROM + RCPT + "DATA\r\n";

/** A message of `bytes` bytes: a few headers, then 76-character lines. */
function message(bytes) {
  let s = "From: <sender@bench.example>\r\nTo: <rcpt@bench.example>\r\n" +
    "Subject: bench\r\n\r\n";
  const line = "0123456789abcdefghijklmnopqrstuvwxyz".repeat(3).slice(0, 76);
  while (s.length + 78 <= bytes) s += line + "\r\n";
  s += "x".repeat(Math.max(0, bytes - s.length - 2)) + "\r\n";
  return s;
}

/** Collects replies; resolves `want` complete replies at a time. */
class Replies {
  buf = "";
  codes = [];
  /** Every line of the last multi-line reply, for the EHLO keywords. */
  lines = [];
  current = [];
  waiter = null;
  want = 0;
  failed = null;
  constructor(sock) {
    sock.setEncoding("latin1");
    sock.on("data", (d) => {
      this.buf += d;
      let nl;
      while ((nl = this.buf.indexOf("\r\n")) >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 2);
        this.current.push(line);
        if (line[3] !== "-") {
          this.codes.push(line);
          this.lines = this.current;
          this.current = [];
        }
      }
      this.check();
    });
    const fail = () => {
      this.failed ??= new Error("connection closed");
      this.check();
    };
    sock.on("close", fail);
    sock.on("error", (e) => {
      this.failed ??= e;
      this.check();
    });
  }
  check() {
    if (!this.waiter) return;
    if (this.codes.length >= this.want) {
      const w = this.waiter;
      this.waiter = null;
      w.resolve(this.codes.splice(0, this.want));
    } else if (this.failed) {
      const w = this.waiter;
      this.waiter = null;
      w.reject(this.failed);
    }
  }
  /** The next `n` replies; each must start with the matching code class. */
  async expect(...classes) {
    this.want = classes.length;
    const got = await new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
      this.check();
    });
    classes.forEach((c, i) => {
      if (!got[i].startsWith(c)) {
        throw new Error(
          `unexpected reply ${JSON.stringify(got[i])} (want ${c}xx)`,
        );
      }
    });
  }
}

function connect() {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: "127.0.0.1" });
    sock.setNoDelay(true);
    const replies = new Replies(sock);
    sock.once("connect", () => resolve({ sock, replies }));
    sock.once("error", reject);
  });
}

async function pipelined(count, msg) {
  const { sock, replies } = await connect();
  await replies.expect("2");
  sock.write("EHLO client.bench.example\r\n");
  await replies.expect("2");
  sock.write(GROUP);
  await replies.expect("2", "2", "3");
  const next = Buffer.from(msg + ".\r\n" + GROUP, "latin1");
  const last = Buffer.from(msg + ".\r\nQUIT\r\n", "latin1");
  for (let i = 1; i < count; i++) {
    sock.write(next);
    await replies.expect("2", "2", "2", "3");
  }
  sock.write(last);
  await replies.expect("2", "2");
  sock.end();
}

/** EHLO keywords from the last reply (first word of each line after the first). */
function keywords(replies) {
  return replies.lines.slice(1).map((l) =>
    l.slice(4).split(" ")[0].toUpperCase()
  );
}

const SKIPPED = new Error("skipped");

async function chunked(count, msg) {
  const { sock, replies } = await connect();
  await replies.expect("2");
  sock.write("EHLO client.bench.example\r\n");
  await replies.expect("2");
  if (!keywords(replies).includes("CHUNKING")) {
    sock.end("QUIT\r\n");
    throw SKIPPED;
  }
  const body = Buffer.from(msg, "latin1");
  const one = Buffer.concat([
    Buffer.from(`${FROM}${RCPT}BDAT ${body.length} LAST\r\n`, "latin1"),
    body,
  ]);
  for (let i = 0; i < count; i++) {
    sock.write(one);
    await replies.expect("2", "2", "2");
  }
  sock.write("QUIT\r\n");
  await replies.expect("2");
  sock.end();
}

async function hold(n) {
  const socks = [];
  for (let done = 0; done < n;) {
    const batch = Math.min(200, n - done);
    const opened = await Promise.all(
      Array.from({ length: batch }, async () => {
        const c = await connect();
        await c.replies.expect("2");
        c.sock.write("EHLO client.bench.example\r\n");
        await c.replies.expect("2");
        return c;
      }),
    );
    socks.push(...opened);
    done += batch;
  }
  clearTimeout(timer);
  console.log(JSON.stringify({ held: socks.length }));
  await new Promise((r) => {
    process.stdin.on("data", () => {});
    process.stdin.on("end", r);
    process.stdin.on("close", r);
  });
  for (const { sock } of socks) sock.destroy();
}

async function probeEhlo() {
  const { sock, replies } = await connect();
  await replies.expect("2");
  sock.write("EHLO client.bench.example\r\n");
  await replies.expect("2");
  const kw = keywords(replies);
  sock.write("QUIT\r\n");
  await replies.expect("2").catch(() => {});
  sock.end();
  return kw;
}

async function big(mb) {
  const { sock, replies } = await connect();
  await replies.expect("2");
  sock.write("EHLO client.bench.example\r\n");
  await replies.expect("2");
  sock.write(GROUP);
  await replies.expect("2", "2", "3");
  const chunk = Buffer.from(
    message(1024 * 1024).split("\r\n\r\n")[1],
    "latin1",
  );
  for (let i = 0; i < mb; i++) {
    if (!sock.write(chunk)) await new Promise((r) => sock.once("drain", r));
  }
  sock.write(".\r\nQUIT\r\n");
  await replies.expect("2", "2");
  sock.end();
}

const timer = setTimeout(() => {
  console.error(`client: timed out after ${timeout} ms`);
  process.exit(1);
}, timeout);
const t0 = performance.now();
try {
  if (probe) {
    console.log(JSON.stringify({ ehlo: await probeEhlo() }));
  } else if (idle > 0) {
    await hold(idle);
  } else if (bigMb > 0) {
    await big(bigMb);
    console.log(JSON.stringify({
      messages: 1,
      bytes: bigMb * 1024 * 1024,
      ms: performance.now() - t0,
    }));
  } else {
    const msg = message(size);
    const per = Math.floor(total / sessions);
    const jobs = [];
    for (let s = 0; s < sessions; s++) {
      const n = per + (s < total % sessions ? 1 : 0);
      if (n > 0) jobs.push(bdat ? chunked(n, msg) : pipelined(n, msg));
    }
    await Promise.all(jobs);
    console.log(JSON.stringify({
      messages: total,
      bytes: total * size,
      ms: performance.now() - t0,
    }));
  }
} catch (e) {
  if (e === SKIPPED) {
    console.log(JSON.stringify({ skipped: "no CHUNKING" }));
    process.exit(3);
  }
  console.error(`client: ${e.message}`);
  process.exit(1);
}
clearTimeout(timer);
