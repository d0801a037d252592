// A program started by a test (the CLI, npm start), its output collected
// as it comes, waited for by pattern; killed at the end of the test file.
import { type ChildProcess, spawn } from "node:child_process";
import process from "node:process";
import { after } from "node:test";
import { cliCommand } from "./run.ts";

/** How a started program ended. */
export interface Exit {
  code: number | null;
  signal: string | null;
}

/** A running program and what it printed so far. */
export interface Program {
  readonly child: ChildProcess;
  /** Everything printed on standard output so far. */
  stdout(): string;
  /** Everything printed on standard error so far. */
  stderr(): string;
  /** Resolves when the stream has a match of `re` (rejects after 20 s or at exit). */
  waitFor(re: RegExp, stream?: "stdout" | "stderr"): Promise<RegExpExecArray>;
  /** Resolves once the program has exited and both streams have closed. */
  readonly exited: Promise<Exit>;
}

const running = new Set<ChildProcess>();
after(() => {
  for (const child of running) child.kill("SIGKILL");
});

/** Starts `cmd args` in `cwd` with output piped (NO_COLOR=1 and `env` added). */
export function startProgram(
  cmd: string,
  args: readonly string[],
  options: { cwd: string; env?: Record<string, string> },
): Program {
  const child = spawn(cmd, [...args], {
    cwd: options.cwd,
    env: { ...process.env, NO_COLOR: "1", ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  running.add(child);
  const out = { stdout: "", stderr: "" };
  const waiters: (() => void)[] = [];
  const wake = () => {
    for (const w of waiters.splice(0)) w();
  };
  child.stdout!.setEncoding("utf8");
  child.stderr!.setEncoding("utf8");
  child.stdout!.on("data", (d: string) => {
    out.stdout += d;
    wake();
  });
  child.stderr!.on("data", (d: string) => {
    out.stderr += d;
    wake();
  });
  let done = false;
  const exited = new Promise<Exit>((resolve) => {
    // "close": exited, and every process holding its output is gone too.
    child.on("close", (code, signal) => {
      done = true;
      running.delete(child);
      resolve({ code, signal });
      wake();
    });
  });
  const waitFor = async (
    re: RegExp,
    stream: "stdout" | "stderr" = "stdout",
  ): Promise<RegExpExecArray> => {
    const deadline = Date.now() + 20000;
    for (;;) {
      const m = re.exec(out[stream]);
      if (m !== null) return m;
      if (done || Date.now() > deadline) {
        throw new Error(
          `${
            done ? "exited before printing" : "did not print"
          } ${re}: ${out.stdout}${out.stderr}`,
        );
      }
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 200);
      });
    }
  };
  return {
    child,
    stdout: () => out.stdout,
    stderr: () => out.stderr,
    waitFor,
    exited,
  };
}

/** The CLI (src/cli/main.ts) on the runtime that runs the tests. */
export function startCli(
  args: readonly string[],
  options: { cwd: string; env?: Record<string, string> },
): Program {
  const { cmd, args: base } = cliCommand();
  return startProgram(cmd, [...base, ...args], options);
}

/** The port of a listening line (text or JSON). */
export const LISTENING =
  /listening on \[?[^\s\]]+?\]?:(\d+) |"event":"listening".*"port":(\d+)/;

/** The port the CLI's listening line names. */
export async function listeningPort(p: Program): Promise<number> {
  const m = await p.waitFor(LISTENING);
  return Number(m[1] ?? m[2]);
}
