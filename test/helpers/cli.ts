// A program started by a test as a child process (the CLI, an example, a
// fixture, `npm start`): its output collected as it comes, waited for by
// pattern, its listening line read, stopped by a signal; whatever a test
// file leaves running is killed when the file ends.
import { type ChildProcess, spawn } from "node:child_process";
import * as net from "node:net";
import process from "node:process";
import { after } from "node:test";
import { fileURLToPath } from "node:url";
import { cliCommand, tsCommand } from "./run.ts";

/** The repository's root: where programs start unless told otherwise. */
export const ROOT: string = fileURLToPath(new URL("../..", import.meta.url));

/** How a started program ended. */
export interface Exit {
  code: number | null;
  signal: string | null;
}

/** Where to look: one stream, or both in the order they came ("output"). */
export type Stream = "stdout" | "stderr" | "output";

/** What `waitFor` looks at and for how long. */
export interface WaitOptions {
  /** The stream to search (default: "output", both). */
  stream?: Stream;
  /** Milliseconds before giving up (default: 60000). */
  timeout?: number;
}

/** A signal a test sends. */
export type Signal = "SIGTERM" | "SIGINT" | "SIGHUP" | "SIGKILL";

/** A running program and what it printed so far. */
export interface Program {
  readonly child: ChildProcess;
  /** Everything printed on standard output so far. */
  stdout(): string;
  /** Everything printed on standard error so far. */
  stderr(): string;
  /**
   * Both streams in the order they came, and `[killed by SIGNAL]` when a
   * signal ended the program.
   */
  output(): string;
  /**
   * Resolves with the first match of `re` (rejects at the timeout, or once
   * the program has exited without printing it).
   */
  waitFor(
    re: RegExp,
    options?: Stream | WaitOptions,
  ): Promise<RegExpExecArray>;
  /** Resolves with all matches of `re` once there are at least `count`. */
  waitForAll(
    re: RegExp,
    count: number,
    options?: Stream | WaitOptions,
  ): Promise<RegExpExecArray[]>;
  /**
   * Sends `signal` with `process.kill` (Deno's `child.kill()` reports a
   * child that caught the signal and exited 0 as killed), to the whole
   * process group when started with `group`.
   */
  signal(signal: Signal): void;
  /**
   * Sends `signal` (default SIGTERM) unless the program has exited, and
   * resolves with `exited`; after `timeout` ms (default 45000) kills it and
   * rejects.
   */
  stop(signal?: Signal, timeout?: number): Promise<Exit>;
  /** Resolves once the program has exited and its output is closed. */
  readonly exited: Promise<Exit>;
  /**
   * Resolves once the program itself has exited, even while processes it
   * started still hold its output open (`exited` waits for those too).
   */
  readonly processExited: Promise<Exit>;
}

/** How to start a program. */
export interface StartOptions {
  /** The working directory (default: the repository's root). */
  cwd?: string;
  /** Added to this process's environment (and NO_COLOR=1); undefined removes. */
  env?: Record<string, string | undefined>;
  /** In a process group of its own: `signal` and the end of the file reach the whole group. */
  group?: boolean;
}

/** Kills what a test left running: each program, or its whole group. */
const leftovers = new Set<() => void>();
after(() => {
  for (const kill of leftovers) kill();
});

/** Starts `cmd args` with its output piped. */
export function startProgram(
  cmd: string,
  args: readonly string[],
  options: StartOptions = {},
): Program {
  const env: Record<string, string> = {};
  for (
    const [k, v] of Object.entries({
      ...process.env,
      NO_COLOR: "1",
      ...options.env,
    })
  ) if (v !== undefined) env[k] = v;
  const group = options.group === true;
  const child = spawn(cmd, [...args], {
    cwd: options.cwd ?? ROOT,
    env,
    stdio: ["ignore", "pipe", "pipe"],
    detached: group,
  });
  const kill = () => {
    if (!group) child.kill("SIGKILL");
    else {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch { /* gone */ }
    }
  };
  leftovers.add(kill);
  const out: Record<Stream, string> = { stdout: "", stderr: "", output: "" };
  const waiters: (() => void)[] = [];
  const wake = () => {
    for (const w of waiters.splice(0)) w();
  };
  for (const stream of ["stdout", "stderr"] as const) {
    child[stream]!.setEncoding("utf8");
    child[stream]!.on("data", (d: string) => {
      out[stream] += d;
      out.output += d;
      wake();
    });
  }
  let done = false;
  const processExited = new Promise<Exit>((resolve) => {
    child.on("exit", (code, signal) => resolve({ code, signal }));
  });
  const exited = new Promise<Exit>((resolve) => {
    // "close": exited, and every process holding its output is gone too.
    child.on("close", (code, signal) => {
      if (signal !== null) out.output += `\n[killed by ${signal}]\n`;
      done = true;
      if (!group) leftovers.delete(kill);
      resolve({ code, signal });
      wake();
    });
  });
  const waitForAll = async (
    re: RegExp,
    count: number,
    options: Stream | WaitOptions = {},
  ): Promise<RegExpExecArray[]> => {
    const { stream = "output", timeout = 60000 } = typeof options === "string"
      ? { stream: options }
      : options;
    const all = new RegExp(re.source, re.flags.replace("g", "") + "g");
    const deadline = Date.now() + timeout;
    for (;;) {
      const found = [...out[stream].matchAll(all)];
      if (found.length >= count) return found;
      if (done || Date.now() > deadline) {
        throw new Error(
          `${done ? "exited before printing" : "did not print"} ${re}${
            count > 1 ? ` (${found.length} of ${count})` : ""
          }: ${out.output}`,
        );
      }
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 200);
      });
    }
  };
  const signal = (sig: Signal) => {
    process.kill(group ? -child.pid! : child.pid!, sig);
  };
  const program: Program = {
    child,
    stdout: () => out.stdout,
    stderr: () => out.stderr,
    output: () => out.output,
    waitFor: async (re, options) => (await waitForAll(re, 1, options))[0],
    waitForAll,
    signal,
    async stop(sig = "SIGTERM", timeout = 45000) {
      if (child.exitCode === null && child.signalCode === null) signal(sig);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const exit = await Promise.race([
        exited,
        new Promise<null>((r) => (timer = setTimeout(() => r(null), timeout))),
      ]);
      clearTimeout(timer);
      if (exit === null) {
        signal("SIGKILL");
        throw new Error(`did not exit after ${sig}: ${out.output}`);
      }
      return exit;
    },
    exited,
    processExited,
  };
  return program;
}

/** Starts a TypeScript file of the repository (a path from its root) on the runtime that runs the tests. */
export function startTs(
  file: string,
  args: readonly string[],
  options?: StartOptions,
): Program {
  const { cmd, args: base } = tsCommand(file);
  return startProgram(cmd, [...base, ...args], options);
}

/** The CLI (src/cli/main.ts) on the runtime that runs the tests. */
export function startCli(
  args: readonly string[],
  options?: StartOptions,
): Program {
  const { cmd, args: base } = cliCommand();
  return startProgram(cmd, [...base, ...args], options);
}

/**
 * The CLI on a port it picks (`--port 0` before `args`), once it prints its
 * listening line.
 */
export function startListeningCli(
  args: readonly string[],
  options?: StartOptions,
): Promise<Listening> {
  return listening(startCli(["--port", "0", ...args], options));
}

/** The port of a listening line (text or JSON). */
export const LISTENING =
  /listening on \[?[^\s\]]+?\]?:(\d+)(?=\s|$)|"event":"listening".*"port":(\d+)/;

/** The port the program's listening line names. */
export async function listeningPort(p: Program): Promise<number> {
  const m = await p.waitFor(LISTENING, "stdout");
  return Number(m[1] ?? m[2]);
}

/** A program that listens, with the port its listening line names. */
export interface Listening extends Program {
  readonly port: number;
}

/** Resolves with `p` and its port once it prints its listening line. */
export async function listening(p: Program): Promise<Listening> {
  return Object.assign(p, { port: await listeningPort(p) });
}

/** A port on 127.0.0.1 that was free a moment ago, for a program told its port. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}
