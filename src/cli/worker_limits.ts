/**
 * The per-address limits of `smtpd --workers`, shared by every worker: the
 * supervisor holds the counts ({@link LimitsHolder}), each worker asks it
 * over its IPC channel ({@link SupervisorLimits}, the `limits` option of
 * its `serve()`), so that `--max-connections-per-ip` and
 * `--max-auth-failures-per-ip` count across the workers, as in one
 * process.
 *
 * When the supervisor does not answer within {@link LIMITS_TIMEOUT_MS}
 * (or is gone): AUTH fails closed (454 4.7.0, the password is not
 * checked); a connection is counted by the worker alone, against the same
 * limit (a worker keeps serving while its supervisor is slow, at worst
 * with the limit per worker). An answer that comes too late is undone.
 *
 * @module
 */

import type { AuthStart, ClientLimits, FailureCount } from "../limits.ts";
import { LocalClientLimits } from "../exports/engine.ts";
import type { CliOptions } from "./args.ts";

/** How long a worker waits for the supervisor's answer. */
export const LIMITS_TIMEOUT_MS = 2000;

/** A worker's question about the limits. */
export type LimitsRequest =
  | { smtpd: "limits"; id: number; op: "connect"; key: string }
  | { smtpd: "limits"; id: 0; op: "disconnect"; key: string }
  | { smtpd: "limits"; id: number; op: "auth-start"; key: string }
  | {
    smtpd: "limits";
    id: number;
    op: "auth-end";
    key: string;
    failed: boolean;
  };

/** The supervisor's answer to the request with the same `id`. */
export type LimitsReply =
  & { smtpd: "limits-reply"; id: number }
  & (
    | { op: "connect"; ok: boolean }
    | ({ op: "auth-start" } & AuthStart)
    | ({ op: "auth-end" } & FailureCount)
  );

/** The limits the command line sets (the library's defaults otherwise). */
export function cliLimits(o: CliOptions): LocalClientLimits {
  return new LocalClientLimits({
    maxConnectionsPerIp: o.maxConnectionsPerIp,
    maxAuthFailuresPerIp: o.maxAuthFailuresPerIp,
    now: Date.now,
  });
}

/** A timer that does not keep the process alive. */
function unref<T>(timer: T): T {
  (timer as { unref?: () => void }).unref?.();
  return timer;
}

/** A request not answered yet. */
interface Waiting {
  request: LimitsRequest;
  answer: (reply: LimitsReply | null) => void;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * A worker's limits: asks the supervisor (see the module's doc for what
 * happens when it does not answer).
 */
export class SupervisorLimits implements ClientLimits {
  readonly #send: (m: LimitsRequest) => boolean;
  readonly #timeout: number;
  /** Connections counted by this worker alone (no answer in time). */
  readonly #local: LocalClientLimits;
  /** Connections the supervisor counted, per key. */
  readonly #remote = new Map<string, number>();
  readonly #waiting = new Map<number, Waiting>();
  #nextId = 1;
  #closed = false;

  /**
   * @param o the command line (for the limit per worker when unanswered)
   * @param send sends a request; false when the channel is gone
   * @param timeout milliseconds to wait for an answer
   */
  constructor(
    o: CliOptions,
    send: (m: LimitsRequest) => boolean,
    timeout = LIMITS_TIMEOUT_MS,
  ) {
    this.#send = send;
    this.#timeout = timeout;
    this.#local = cliLimits(o);
  }

  /**
   * The parent is gone: every question waiting is unanswered now, and
   * those to come are not asked (no timer keeps the process alive).
   */
  close(): void {
    this.#closed = true;
    for (const [id, w] of this.#waiting) {
      this.#waiting.delete(id);
      clearTimeout(w.timer);
      w.answer(null);
    }
  }

  /** Takes the supervisor's answer (a late one is undone). */
  handle(reply: LimitsReply): void {
    const w = this.#waiting.get(reply.id);
    if (w !== undefined) {
      this.#waiting.delete(reply.id);
      clearTimeout(w.timer);
      w.answer(reply);
    }
  }

  /** Sends `request`; resolves to the answer, or null (none in time). */
  #ask(request: LimitsRequest): Promise<LimitsReply | null> {
    return new Promise((resolve) => {
      if (this.#closed) return resolve(null);
      const timer = setTimeout(() => {
        this.#waiting.delete(request.id);
        // Asked in time or not: an answer that still comes is undone.
        this.#waiting.set(request.id, {
          request,
          answer: (late) => this.#undo(request, late),
          timer: unref(setTimeout(
            () => this.#waiting.delete(request.id),
            10 * this.#timeout,
          )),
        });
        resolve(null);
      }, this.#timeout);
      this.#waiting.set(request.id, { request, answer: resolve, timer });
      if (!this.#send(request)) {
        clearTimeout(timer);
        this.#waiting.delete(request.id);
        resolve(null);
      }
    });
  }

  /** Gives back what a late answer granted. */
  #undo(request: LimitsRequest, late: LimitsReply | null): void {
    if (late === null) return;
    if (late.op === "connect" && late.ok) {
      this.#send({
        smtpd: "limits",
        id: 0,
        op: "disconnect",
        key: request.key,
      });
    } else if (late.op === "auth-start" && late.verdict === "ok") {
      this.#send({
        smtpd: "limits",
        id: this.#nextId++,
        op: "auth-end",
        key: request.key,
        failed: false,
      });
    }
  }

  async connect(key: string): Promise<boolean> {
    const r = await this.#ask({
      smtpd: "limits",
      id: this.#nextId++,
      op: "connect",
      key,
    });
    if (r === null) return this.#local.connect(key);
    if (r.op === "connect" && r.ok) {
      this.#remote.set(key, (this.#remote.get(key) ?? 0) + 1);
      return true;
    }
    return false;
  }

  disconnect(key: string): void {
    const n = this.#remote.get(key) ?? 0;
    if (n === 0) return this.#local.disconnect(key);
    if (n === 1) this.#remote.delete(key);
    else this.#remote.set(key, n - 1);
    this.#send({ smtpd: "limits", id: 0, op: "disconnect", key });
  }

  async authStart(key: string): Promise<AuthStart> {
    const r = await this.#ask({
      smtpd: "limits",
      id: this.#nextId++,
      op: "auth-start",
      key,
    });
    if (r === null || r.op !== "auth-start") {
      return { verdict: "unavailable", failures: 0 };
    }
    return { verdict: r.verdict, failures: r.failures };
  }

  async authEnd(key: string, failed: boolean): Promise<FailureCount> {
    const r = await this.#ask({
      smtpd: "limits",
      id: this.#nextId++,
      op: "auth-end",
      key,
      failed,
    });
    if (r === null || r.op !== "auth-end") {
      return { failures: failed ? 1 : 0, lockedOut: false };
    }
    return { failures: r.failures, lockedOut: r.lockedOut };
  }
}

/**
 * The supervisor's side: one table for every worker, and what each
 * worker holds in it, given back when the worker exits (its connections
 * are closed; an AUTH attempt it had in flight counts as a failure, as
 * its password may have been checked).
 */
export class LimitsHolder {
  readonly limits: LocalClientLimits;
  /** Per worker: connections and AUTH attempts it holds, per key. */
  readonly #held = new Map<
    number,
    { open: Map<string, number>; auth: Map<string, number> }
  >();

  /** @param o the command line */
  constructor(o: CliOptions) {
    this.limits = cliLimits(o);
  }

  /** Answers `m` from worker `worker` (null: nothing to answer, or not a request). */
  handle(worker: number, m: unknown): LimitsReply | null {
    if (!isLimitsRequest(m)) return null;
    let held = this.#held.get(worker);
    if (held === undefined) {
      held = { open: new Map(), auth: new Map() };
      this.#held.set(worker, held);
    }
    const add = (map: Map<string, number>, key: string, d: number) => {
      const n = (map.get(key) ?? 0) + d;
      if (n <= 0) map.delete(key);
      else map.set(key, n);
    };
    const base = { smtpd: "limits-reply", id: m.id } as const;
    switch (m.op) {
      case "connect": {
        const ok = this.limits.connect(m.key);
        if (ok) add(held.open, m.key, 1);
        return { ...base, op: "connect", ok };
      }
      case "disconnect":
        if (held.open.has(m.key)) {
          add(held.open, m.key, -1);
          this.limits.disconnect(m.key);
        }
        return null;
      case "auth-start": {
        const r = this.limits.authStart(m.key);
        if (r.verdict === "ok") add(held.auth, m.key, 1);
        return { ...base, op: "auth-start", ...r };
      }
      case "auth-end": {
        if (!held.auth.has(m.key)) {
          return { ...base, op: "auth-end", failures: 0, lockedOut: false };
        }
        add(held.auth, m.key, -1);
        return {
          ...base,
          op: "auth-end",
          ...this.limits.authEnd(m.key, m.failed),
        };
      }
      default:
        return ((x: never) => x)(m);
    }
  }

  /** Worker `worker` has exited: gives back what it held. */
  release(worker: number): void {
    const held = this.#held.get(worker);
    if (held === undefined) return;
    this.#held.delete(worker);
    for (const [key, n] of held.open) {
      for (let i = 0; i < n; i++) this.limits.disconnect(key);
    }
    for (const [key, n] of held.auth) {
      for (let i = 0; i < n; i++) this.limits.authEnd(key, true);
    }
  }
}

function isLimitsRequest(m: unknown): m is LimitsRequest {
  if (typeof m !== "object" || m === null) return false;
  const r = m as Partial<LimitsRequest>;
  return r.smtpd === "limits" && typeof r.id === "number" &&
    typeof r.key === "string" &&
    (r.op === "connect" || r.op === "disconnect" || r.op === "auth-start" ||
      (r.op === "auth-end" && typeof r.failed === "boolean"));
}

/** Whether `m` is the supervisor's answer about the limits. */
export function isLimitsReply(m: unknown): m is LimitsReply {
  return typeof m === "object" && m !== null &&
    (m as { smtpd?: unknown }).smtpd === "limits-reply" &&
    typeof (m as { id?: unknown }).id === "number";
}
