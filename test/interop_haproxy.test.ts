// smtpd behind a real HAProxy (Debian's /usr/sbin/haproxy, installed by
// .ci/run), in TCP mode: send-proxy (v1) in front of two servers,
// send-proxy-v2 in front of a third, and send-proxy-v2 in front of an
// implicit-TLS server (HAProxy passes the TLS through), and send-proxy and
// send-proxy-v2 to servers on Unix sockets. HAProxy runs as a
// child process with a config in a temporary directory, stopped by PID.
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type LogEntry, serve, type Server, type Session } from "../mod.ts";
import { freePort, type Program, startProgram } from "./helpers/cli.ts";
import { connectPlain, connectTls, ehlo, TLS, Wire } from "./helpers/tls.ts";

const HAPROXY = "/usr/sbin/haproxy";
const installed = existsSync(HAPROXY);

async function waitListening(port: number, ms = 10000): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ port, host: "127.0.0.1" });
      s.once("connect", () => {
        s.destroy();
        resolve(true);
      });
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nothing listens on ${port}`);
    await sleep(50);
  }
}

/**
 * Starts HAProxy with `config` (written to `dir`) and resolves once it
 * listens on every port of `ports`.
 */
async function startHaproxy(
  dir: string,
  config: string,
  ports: number[],
): Promise<Program> {
  const cfg = join(dir, "haproxy.cfg");
  writeFileSync(cfg, config);
  const haproxy = startProgram(HAPROXY, ["-f", cfg, "-db"]);
  await Promise.all(ports.map((p) => waitListening(p)));
  return haproxy;
}

/** One backend smtpd and what it saw. */
interface Backend {
  server: Server;
  sessions: Session[];
  log: LogEntry[];
  /** Message ids (from the body's Message-ID) stored. */
  stored: string[];
}

async function backend(
  options: { implicitTls?: boolean; path?: string } = {},
): Promise<Backend> {
  const b: Backend = {
    server: undefined as unknown as Server,
    sessions: [],
    log: [],
    stored: [],
  };
  b.server = await serve({
    ...(options.path !== undefined
      ? { path: options.path }
      : { hostname: "127.0.0.1", port: 0 }),
    serverName: "mx.test",
    proxyProtocol: true,
    ...(options.implicitTls ? { tls: TLS, implicitTls: true } : {}),
    logger: (e) => b.log.push(e),
    onConnect(s) {
      b.sessions.push(s);
    },
    async onMessage(m) {
      const text = new TextDecoder().decode(await m.bytes());
      b.stored.push(/Message-ID: <([^>]+)>/.exec(text)?.[1] ?? "?");
    },
  });
  return b;
}

/** The sessions a backend saw, for a failure's message. */
function seen(sessions: Session[]): string {
  return "sessions (client port, proxy's port, health check, messages): " +
    sessions.map((s) =>
      `${s.remotePort}/${s.proxy?.port}/${s.proxy?.healthCheck}/${s.messages}`
    ).join(" ");
}

/** Sends one message on a new connection; resolves with the final reply. */
async function sendOne(w: Wire, id: string): Promise<string> {
  assert.match(await ehlo(w), /^250-/);
  assert.match(await w.command("MAIL FROM:<a@example.org>"), /^250 /);
  assert.match(await w.command("RCPT TO:<b@example.org>"), /^250 /);
  assert.match(await w.command("DATA"), /^354 /);
  return w.command(`Message-ID: <${id}>\r\nSubject: t\r\n\r\nhello\r\n.`);
}

describe("behind HAProxy", {
  skip: !installed && `${HAPROXY} is not installed`,
}, () => {
  let dir = "";
  let haproxy: Program | null = null;
  const ports = { v1: 0, v2: 0, tls: 0 };
  let a: Backend, b: Backend, c: Backend, d: Backend;

  before(async () => {
    [a, b, c, d] = await Promise.all([
      backend(),
      backend(),
      backend(),
      backend({ implicitTls: true }),
    ]);
    ports.v1 = await freePort();
    ports.v2 = await freePort();
    ports.tls = await freePort();
    dir = mkdtempSync(join(tmpdir(), "smtpd-haproxy-"));
    haproxy = await startHaproxy(
      dir,
      `global
  maxconn 200
defaults
  mode tcp
  timeout connect 2s
  timeout client 10s
  timeout server 10s
  retries 3
  option redispatch
frontend smtp_v1
  bind 127.0.0.1:${ports.v1}
  default_backend mx_v1
backend mx_v1
  balance roundrobin
  option smtpchk EHLO haproxy.test
  server a 127.0.0.1:${a.server.addr.port} send-proxy check inter 200 fall 1 rise 2
  server b 127.0.0.1:${b.server.addr.port} send-proxy check inter 200 fall 1 rise 2
frontend smtp_v2
  bind 127.0.0.1:${ports.v2}
  default_backend mx_v2
backend mx_v2
  option smtpchk EHLO haproxy.test
  server c 127.0.0.1:${c.server.addr.port} send-proxy-v2 check inter 200
frontend smtps
  bind 127.0.0.1:${ports.tls}
  default_backend mx_tls
backend mx_tls
  server d 127.0.0.1:${d.server.addr.port} send-proxy-v2 check inter 200
  server d2 127.0.0.1:${d.server.addr.port} send-proxy-v2 check inter 200 check-ssl verify none
`,
      Object.values(ports),
    );
    // Let the first health checks pass (rise 2 at 200 ms).
    await sleep(800);
  });

  after(async () => {
    await haproxy?.stop();
    await Promise.all([a, b, c, d].map((x) => x?.server.close()));
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("shows hooks the client's own source port over send-proxy and send-proxy-v2", async () => {
    for (
      const [port, backends] of [[ports.v1, [a, b]], [ports.v2, [c]]] as const
    ) {
      const w = await connectPlain(port);
      const clientPort = w.socket.localPort!;
      assert.match(
        await sendOne(w, `port-${port}@test`),
        /^250 /,
        haproxy!.stderr(),
      );
      await w.close();
      const s = backends.flatMap((x) => x.sessions).find((x) =>
        x.remotePort === clientPort && !x.proxy?.healthCheck
      );
      assert.ok(
        s,
        `no session saw port ${clientPort}: ${
          seen(backends.flatMap((x) => x.sessions))
        }`,
      );
      assert.equal(s.remoteAddress, "127.0.0.1");
      assert.notEqual(s.proxy?.port, clientPort);
      assert.equal(s.proxy?.healthCheck, false);
      assert.equal(s.proxy?.version, port === ports.v1 ? 1 : 2);
      assert.equal(s.proxy?.destination?.port, port);
    }
  });

  it("marks HAProxy's smtpchk health checks, v1 and v2, as health checks", () => {
    for (const x of [a, b, c]) {
      const checks = x.sessions.filter((s) => s.proxy?.healthCheck);
      assert.ok(checks.length > 0, "no health check seen");
      for (const s of checks) {
        assert.equal(s.messages, 0);
        assert.ok(s.heloName === null || s.heloName === "haproxy.test");
      }
      // Every session that is not marked came from a test client.
      for (const s of x.sessions.filter((s) => !s.proxy?.healthCheck)) {
        assert.notEqual(s.heloName, "haproxy.test");
      }
      // The connect log entries say the same.
      const byId = new Map(x.sessions.map((s) => [s.id, s]));
      for (const e of x.log) {
        if (e.type !== "connect" || !byId.has(e.session)) continue;
        assert.equal(
          e.proxy?.healthCheck,
          byId.get(e.session)!.proxy?.healthCheck,
        );
      }
    }
    for (const s of c.sessions.filter((s) => s.proxy?.healthCheck)) {
      assert.equal(s.proxy?.command, "local");
    }
  });

  it("runs implicit TLS through HAProxy with send-proxy-v2", async () => {
    for (let i = 0; i < 3; i++) {
      const t = new Wire(await connectTls(ports.tls));
      const clientPort = t.socket.localPort!;
      assert.match(await sendOne(t, `tls-${i}@test`), /^250 /);
      await t.close();
      const s = d.sessions.find((x) => x.remotePort === clientPort);
      assert.ok(s, `no session saw port ${clientPort}`);
      assert.equal(s.secure, true);
      assert.equal(s.remoteAddress, "127.0.0.1");
      assert.equal(s.proxy?.version, 2);
    }
    assert.equal(d.stored.filter((x) => x.startsWith("tls-")).length, 3);
    // Health checks: connect-only ones (header, then a reset) leave no
    // trace; TLS ones (check-ssl) are sessions marked as health checks.
    assert.deepEqual(d.log.filter((e) => e.type === "refused"), []);
    assert.ok(d.sessions.some((s) => s.proxy?.healthCheck));
    for (const s of d.sessions) assert.equal(s.remoteAddress, "127.0.0.1");
  });

  it("loses no acknowledged message when one of two backends stops", async () => {
    const acked: string[] = [];
    let failed = 0;
    let stopped: Promise<void> | null = null;
    for (let i = 0; i < 40; i++) {
      if (i === 10) stopped = a.server.close();
      const id = `ha-${i}@test`;
      try {
        const w = await connectPlain(ports.v1);
        try {
          if (/^250 /.test(await sendOne(w, id))) acked.push(id);
          else failed++;
        } finally {
          await w.close();
        }
      } catch {
        failed++; // not acknowledged: a real sender would retry
      }
    }
    await stopped;
    const stored = new Set([...a.stored, ...b.stored]);
    for (const id of acked) {
      assert.ok(
        stored.has(id),
        `${id} acknowledged, not stored; stored: ${[...stored].join(" ")}; ${
          seen([...a.sessions, ...b.sessions])
        }`,
      );
    }
    assert.ok(
      acked.length >= 30,
      `only ${acked.length} of 40 acknowledged (${failed} failed)`,
    );
    // HAProxy sent the later ones to the other backend.
    assert.ok(b.stored.includes("ha-39@test") || acked.at(-1) !== "ha-39@test");
    assert.ok(acked.slice(-10).every((id) => b.stored.includes(id)));
  });
});

describe("behind HAProxy, to Unix sockets", {
  skip: !installed && `${HAPROXY} is not installed`,
}, () => {
  let dir = "";
  let haproxy: Program | null = null;
  const ports = { v1: 0, v2: 0 };
  let v1: Backend, v2: Backend;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "smtpd-haproxy-unix-"));
    [v1, v2] = await Promise.all([
      backend({ path: join(dir, "v1.sock") }),
      backend({ path: join(dir, "v2.sock") }),
    ]);
    ports.v1 = await freePort();
    ports.v2 = await freePort();
    haproxy = await startHaproxy(
      dir,
      `global
  maxconn 50
defaults
  mode tcp
  timeout connect 2s
  timeout client 10s
  timeout server 10s
frontend smtp_v1
  bind 127.0.0.1:${ports.v1}
  default_backend mx_v1
backend mx_v1
  server u1 unix@${dir}/v1.sock send-proxy
frontend smtp_v2
  bind 127.0.0.1:${ports.v2}
  default_backend mx_v2
backend mx_v2
  option smtpchk EHLO haproxy.test
  server u2 unix@${dir}/v2.sock send-proxy-v2 check inter 200
`,
      Object.values(ports),
    );
    await sleep(500);
  });

  after(async () => {
    await haproxy?.stop();
    await Promise.all([v1, v2].map((x) => x?.server.close()));
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("takes the client's address from send-proxy and send-proxy-v2 over a Unix socket", async () => {
    for (
      const [port, b, version] of [[ports.v1, v1, 1], [
        ports.v2,
        v2,
        2,
      ]] as const
    ) {
      const w = await connectPlain(port);
      const clientPort = w.socket.localPort!;
      assert.match(
        await sendOne(w, `unix-${version}@test`),
        /^250 /,
        haproxy!.stderr(),
      );
      await w.close();
      const s = b.sessions.find((x) => x.remotePort === clientPort);
      assert.ok(s, `no session saw port ${clientPort}`);
      assert.equal(s.remoteAddress, "127.0.0.1");
      assert.equal(s.proxy?.version, version);
      assert.equal(s.proxy?.healthCheck, false);
      assert.ok(b.stored.includes(`unix-${version}@test`));
      assert.deepEqual(b.log.filter((e) => e.type === "refused"), []);
    }
    // The v2 health checks (LOCAL) are served, not refused.
    assert.ok(v2.sessions.some((s) => s.proxy?.healthCheck));
  });
});
