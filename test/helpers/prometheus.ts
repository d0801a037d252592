// Debian's `prometheus` package in the tests (.ci/run installs it):
// `promtool check metrics` on an exposition, and a real Prometheus on a
// loopback port of its own scraping one target every second, queried
// through its HTTP API. Without them, the tests that need them skip.
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { type AddressInfo, createServer as createNetServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** The first of `paths` that exists, or null. */
function which(...paths: string[]): string | null {
  return paths.find((p) => existsSync(p)) ?? null;
}
/** promtool's path, or null when not installed. */
export const PROMTOOL: string | null = which(
  "/usr/bin/promtool",
  "/usr/local/bin/promtool",
);
/** prometheus' path, or null when not installed. */
export const PROMETHEUS: string | null = which(
  "/usr/bin/prometheus",
  "/usr/local/bin/prometheus",
);

/** Runs a program with `input` on stdin; resolves with its exit code and output. */
export function run(
  file: string,
  args: string[],
  input = "",
): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      { timeout: 60000 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : (error as { code?: unknown }).code;
        if (typeof code !== "number") reject(error);
        else resolve({ code, out: String(stdout) + String(stderr) });
      },
    );
    child.stdin!.end(input);
  });
}

/** `promtool check metrics` on `text`: its exit code and what it printed. */
export function promtoolCheck(
  text: string,
): Promise<{ code: number; out: string }> {
  return run(PROMTOOL!, ["check", "metrics"], text);
}

/** A running Prometheus scraping one target. */
export interface Prometheus {
  /** The first value of instant query `q`, or null (no result, not up yet). */
  query(q: string): Promise<string | null>;
  /** Polls `q` until it gives `want` (or 50 s have passed); resolves with the last value. */
  waitFor(q: string, want: string): Promise<string | null>;
  /** What it printed last. */
  log(): string;
  /** Stops it and removes its files. */
  stop(): Promise<void>;
}

/** Starts Prometheus scraping 127.0.0.1:`targetPort` (job `smtpd`) every second. */
export async function startPrometheus(targetPort: number): Promise<Prometheus> {
  const dir = mkdtempSync(join(tmpdir(), "smtpd-prometheus-"));
  // A free loopback port for Prometheus' own web server.
  const probe = createNetServer();
  await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
  const promPort = (probe.address() as AddressInfo).port;
  await new Promise((r) => probe.close(r));
  writeFileSync(
    join(dir, "prometheus.yml"),
    [
      "global:",
      "  scrape_interval: 1s",
      "scrape_configs:",
      "  - job_name: smtpd",
      "    static_configs:",
      `      - targets: ["127.0.0.1:${targetPort}"]`,
      "",
    ].join("\n"),
  );
  let log = "";
  const prom = spawn(PROMETHEUS!, [
    `--config.file=${join(dir, "prometheus.yml")}`,
    `--storage.tsdb.path=${join(dir, "data")}`,
    `--web.listen-address=127.0.0.1:${promPort}`,
  ], { stdio: ["ignore", "ignore", "pipe"] });
  prom.stderr!.on("data", (d) => log = (log + String(d)).slice(-4000));
  const exited = new Promise((r) => prom.once("exit", r));
  const query = async (q: string): Promise<string | null> => {
    try {
      const res = await fetch(
        `http://127.0.0.1:${promPort}/api/v1/query?query=${
          encodeURIComponent(q)
        }`,
      );
      const body = await res.json() as {
        data?: { result?: { value: [number, string] }[] };
      };
      return body.data?.result?.[0]?.value[1] ?? null;
    } catch {
      return null; // not listening yet
    }
  };
  return {
    query,
    async waitFor(q, want) {
      let got: string | null = null;
      for (let i = 0; i < 200 && got !== want; i++) {
        if (prom.exitCode !== null) assert.fail(`prometheus exited:\n${log}`);
        await new Promise((r) => setTimeout(r, 250));
        got = await query(q);
      }
      return got;
    },
    log: () => log,
    async stop() {
      prom.kill();
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
