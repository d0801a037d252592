/**
 * A connection's message in transfer: handed to the application when its
 * body begins (onMessage, or the `for await` loop), fed the body with
 * backpressure, given up when it cannot complete, and answered when the
 * body ends (one reply, or one per recipient in LMTP).
 *
 * @module
 */

import type { BodyType, SmtpEngine, SmtpEvent } from "./engine.ts";
import type { SmtpError } from "./errors.ts";
import { IncomingMessage } from "./message.ts";
import { now } from "./deadlines.ts";
import type { HookResult } from "./serve_options.ts";
import type { DriverHost } from "./host.ts";
import {
  FORCED,
  HOOK_TIMEOUT,
  type HookCalls,
  isThenable,
  TEMPORARY,
  toSmtpError,
  type WaitResult,
} from "./hooks.ts";
import { newMessageId, type SessionState } from "./session_state.ts";
import type { ServerCounters } from "./stats.ts";
import type { MilterSession } from "./milter/session.ts";
import { milterOutcome } from "./milter/options.ts";

/**
 * Deliveries of ended connections, for the next ones (see
 * MessageDelivery.release()): a connection that carries one message makes
 * none.
 */
const free: MessageDelivery[] = [];
const FREE_MAX = 256;

/** The driver's "the hook has answered" (see SmtpEngine.receive). */
const EMPTY_CHUNK = new Uint8Array(0);

/** The owner of a delivery in {@link free}: nobody's. */
const NO_OWNER = null as unknown as DeliveryOwner;

/** A message hook that has not settled yet (see MessageDelivery.end()). */
const PENDING: unique symbol = Symbol("pending");

/**
 * Accepts a message in the engine: one reply in SMTP (`each` null); in
 * LMTP one per recipient, in order, `OK <id> <recipient>` or the error
 * `rejectRecipient()` gave. Each reply is counted in `counters`. Returns
 * the recipients accepted.
 *
 * @example
 * ```ts
 * import { acceptMessage } from "./delivery.ts";
 * import type { SmtpEngine } from "./engine.ts";
 * import type { IncomingMessage } from "./message.ts";
 * import { ServerCounters } from "./stats.ts";
 *
 * declare const engine: SmtpEngine;
 * declare const msg: IncomingMessage;
 * const delivered = acceptMessage(engine, msg, msg.answer(), new ServerCounters());
 * ```
 */
export function acceptMessage(
  engine: SmtpEngine,
  msg: IncomingMessage,
  each: readonly (SmtpError | null)[] | null,
  counters: ServerCounters,
): readonly string[] {
  if (each === null) {
    engine.acceptQueued(msg.id);
    counters.endOfData(250, 1);
    return msg.to;
  }
  return acceptEach(engine, msg, each, counters);
}

/**
 * {@link acceptMessage} in LMTP. Apart: a function with closures makes
 * their scope at every call (JavaScriptCore), an SMTP message's too.
 */
function acceptEach(
  engine: SmtpEngine,
  msg: IncomingMessage,
  each: readonly (SmtpError | null)[],
  counters: ServerCounters,
): readonly string[] {
  engine.acceptEach(
    each.map((e, i) => {
      const reply = e === null
        ? `OK ${msg.id} <${msg.to[i]}>`
        : (toSmtpError(e) ?? TEMPORARY);
      counters.endOfData(typeof reply === "string" ? 250 : reply.code, 1);
      return reply;
    }),
  );
  return msg.to.filter((_, i) => !each[i]);
}

/**
 * The `kind` argument of `new IncomingMessage()`: one object, written
 * anew for each message (the constructor copies its fields and keeps
 * nothing of it), not one made per message.
 */
const KIND: {
  bodyType: BodyType;
  command: "DATA" | "BDAT";
  lmtp: boolean;
} = { bodyType: "7BIT", command: "DATA", lmtp: false };

/** {@link KIND} with these fields. */
function kindOf(
  bodyType: BodyType,
  command: "DATA" | "BDAT",
  lmtp: boolean,
): typeof KIND {
  KIND.bodyType = bodyType;
  KIND.command = command;
  KIND.lmtp = lmtp;
  return KIND;
}

/** What a {@link MessageDelivery} needs of its connection's driver. */
export interface DeliveryOwner {
  readonly host: DriverHost;
  readonly engine: SmtpEngine;
  readonly session: SessionState;
  readonly hooks: HookCalls;
  /** The session's `milters` filters, which see each message first; or null. */
  readonly milter: MilterSession | null;
  /** The answer that end() left pending was given: the session goes on. */
  goOn(): void;
  /** Giving the answer that end() left pending failed with `error`. */
  fail(error: unknown): void;
}

/**
 * The owner goes on in a microtask (see MessageDelivery's #answer): apart,
 * as its closure would make a context at every call of its caller.
 */
function goOnLater(
  owner: DeliveryOwner,
  failed: boolean,
  error: unknown,
): void {
  queueMicrotask(() => failed ? owner.fail(error) : owner.goOn());
}

/**
 * The message in transfer on one connection (at most one at a time).
 *
 * @example
 * ```ts
 * import { type DeliveryOwner, MessageDelivery } from "./delivery.ts";
 *
 * declare const driver: DeliveryOwner;
 * const delivery = new MessageDelivery(driver);
 * delivery.message; // null: no message in transfer
 * ```
 */
export class MessageDelivery {
  /** The message whose body is arriving, or null. */
  message: IncomingMessage | null = null;
  /** The message hook's outcome: the reply (null: accepted), or PENDING. */
  #result: SmtpError | null | typeof PENDING = null;
  /**
   * The message whose hook has not settled and whose outcome is still
   * wanted (null: none): its hook's answer goes to `#result`, or to
   * `#waiting` once the body has ended.
   */
  #pending: IncomingMessage | null = null;
  /** Ends the end-of-data wait (see end()); null when none is in progress. */
  #waiting: ((result: WaitResult) => void) | null = null;
  /** Set when the message hook stopped reading `raw` for hookTimeout. */
  #stalled: SmtpError | null = null;
  /** When the message hook in progress began (-1: timed already). */
  #since = -1;
  /** Message hooks whose promise has a reaction of this object's waiting. */
  #unsettled = 0;
  #owner: DeliveryOwner;

  /** The deliveries of `owner`'s connection. */
  constructor(owner: DeliveryOwner) {
    this.#owner = owner;
  }

  /**
   * The deliveries of `owner`'s connection: one that an ended connection
   * gave back (see {@link MessageDelivery.release}), else a new one.
   */
  static for(owner: DeliveryOwner): MessageDelivery {
    const d = free.pop();
    if (d === undefined) return new MessageDelivery(owner);
    d.#owner = owner;
    return d;
  }

  /**
   * The connection has ended: when nothing refers to this object any more
   * (no message in transfer, no hook's reaction or wait pending), it goes
   * to the next connection (see {@link MessageDelivery.for}) instead of
   * being made anew. The owner must not use it afterwards.
   */
  release(): void {
    if (
      this.message !== null || this.#unsettled !== 0 ||
      this.#waiting !== null || this.#pending !== null ||
      this.#reacting !== null || free.length >= FREE_MAX
    ) return;
    this.#result = null;
    this.#stalled = null;
    this.#since = -1;
    this.#reactingSince = -1;
    this.#endMsg = null;
    this.#endEv = null;
    this.#endSince = -1;
    this.#owner = NO_OWNER;
    free.push(this);
  }

  /** The engine aborted the message (`message-abort`): `error` to its reader. */
  aborted(error: SmtpError): void {
    this.abort(error);
    this.message = null;
    this.#result = null;
    this.#pending = null;
    this.#stalled = null;
  }

  /**
   * Waits until the message's reader wants more body. A hook that stops
   * reading `raw` without settling would otherwise stop the loop for good
   * (no more reads, so no idle timeout, no disconnect seen, and `close()`
   * never resolving): after hookTimeout without a read, the message is
   * given up (the reader gets an error, the rest of the body is dropped,
   * the client gets 451 4.3.0 at its end).
   */
  backpressure(wait: Promise<void>): Promise<void> {
    return this.#owner.hooks.wait(wait, false, "onMessage", this.#read);
  }

  /** Backpressure's wait ended (one function per connection, not per wait). */
  readonly #read = (w: WaitResult): void => {
    if (w !== HOOK_TIMEOUT) return;
    const d = this.#owner;
    d.host.counters.hookTimeouts++;
    d.host.logger?.({
      type: "error",
      session: d.session.id,
      message:
        `message hook did not read the body for ${d.host.options.hookTimeout} ms`,
      error: null,
    });
    this.#stalled = TEMPORARY;
    this.abort(TEMPORARY);
  };

  /**
   * The body will not complete: the reader of `raw` gets `error`, and a
   * message still waiting for the `for await` loop is withdrawn (the loop
   * used to get it later, already failed: a loop body without try/catch
   * around its read then ended the application's loop).
   */
  abort(error: SmtpError): void {
    const d = this.#owner;
    const msg = this.message;
    if (msg === null) return;
    // A body that never began: its hook is not called.
    this.#uncalled = null;
    msg.abort(error);
    msg.giveUp(error);
    d.host.withdraw(msg);
  }

  /**
   * A message begins: it goes to the application (onMessage or the loop)
   * with the first bytes of its body (see push()), or at its end if it
   * has none; with `milters`, at once (the filters see it first).
   */
  start(ev: Extract<SmtpEvent, { type: "message-start" }>): void {
    const d = this.#owner;
    const env = ev.envelope;
    const msg = new IncomingMessage(
      newMessageId(),
      { mailbox: env.from, params: env.mailParams },
      env.recipients,
      d.session,
      kindOf(ev.body, ev.command, d.engine.options.lmtp),
    );
    this.message = msg;
    this.#stalled = null;
    if (d.milter === null) this.#uncalled = msg;
    else this.#call(msg);
  }

  /**
   * The message whose hook is not called yet (null: none): it is, with
   * the first bytes of its body. A hook called as DATA began had its
   * first read of `raw` wait a round trip of the client for the body,
   * the stream's pull machinery and the hook's suspended call alive
   * meanwhile; called with the bytes there, that read takes them at once
   * (Bun 3–4 %, Deno 1–5 % less CPU per small message).
   */
  #uncalled: IncomingMessage | null = null;

  /**
   * Body bytes of the message in transfer (see IncomingMessage.push());
   * the first ones call its hook, which finds them in `raw`.
   */
  push(chunk: Uint8Array, owned: boolean): Promise<void> | undefined {
    const msg = this.message!;
    const pushed = msg.push(chunk, owned);
    if (this.#uncalled === msg) this.#call(msg);
    return pushed;
  }

  /** Hands `msg` to the application: onMessage (or the loop), or the filters. */
  #call(msg: IncomingMessage): void {
    const d = this.#owner;
    this.#uncalled = null;
    // The hook runs untimed while the body arrives (backpressure has its
    // own deadline); once it is done, nobody reads `raw`: drop the rest of
    // the body.
    let r: HookResult;
    const since = this.#since = performance.now();
    try {
      r = d.milter === null ? d.host.deliver(msg) : d.milter.message(msg);
    } catch (err) {
      this.#timed(since);
      msg.drain();
      this.#result = d.hooks.error(err, "onMessage", msg);
      return;
    }
    if (!isThenable(r)) {
      this.#timed(since);
      msg.drain();
      this.#result = null;
      return;
    }
    // One reaction on the hook's promise, which hands its outcome straight
    // to the end-of-data wait when the body has ended (no promise between).
    this.#result = PENDING;
    this.#pending = msg;
    // Promise.resolve: a thenable whose then() throws counts as a rejection.
    const p = Promise.resolve(r);
    this.#unsettled++;
    if (this.#reacting === null) {
      // The connection's own handlers: no closures per message.
      this.#reacting = msg;
      this.#reactingSince = since;
      p.then(this.#hookDone, this.#hookFailed);
    } else this.#react(p, msg, since);
  }

  /**
   * The connection's own handlers still wait on a hook given up on
   * (hookTimeout, an aborted body) that has not settled: the hook of `msg`
   * (begun at `since`) gets handlers of its own. Apart from start(): a
   * function with closures makes their scope at every call (JavaScriptCore).
   */
  #react(p: Promise<unknown>, msg: IncomingMessage, since: number): void {
    p.then(
      () => this.#settled(msg, since, false, undefined),
      (err) => this.#settled(msg, since, true, err),
    );
  }

  /**
   * The message whose hook's promise has the connection's own handlers
   * (#hookDone, #hookFailed) waiting on it, and when that hook began; null
   * when none does.
   */
  #reacting: IncomingMessage | null = null;
  #reactingSince = -1;

  /** The hook of the message in `#reacting` resolved. */
  readonly #hookDone = (): void => {
    const msg = this.#reacting!;
    this.#reacting = null;
    this.#settled(msg, this.#reactingSince, false, undefined);
  };

  /** The hook of the message in `#reacting` rejected with `error`. */
  readonly #hookFailed = (error: unknown): void => {
    const msg = this.#reacting!;
    this.#reacting = null;
    this.#settled(msg, this.#reactingSince, true, error);
  };

  /**
   * The hook of `msg` (begun at `since`) settled: rejected with `error`
   * when `failed`. Its outcome goes to the wait at the end of data, or is kept
   * for it; one given up on (hookTimeout, a forced close, an aborted
   * body) is only timed, drained and, if it failed, reported.
   */
  #settled(
    msg: IncomingMessage,
    since: number,
    failed: boolean,
    error: unknown,
  ): void {
    this.#unsettled--;
    const took = this.#timed(since);
    msg.drain();
    const reply = failed
      ? this.#owner.hooks.error(error, "onMessage", msg)
      : null;
    if (this.#pending !== msg) return;
    this.#pending = null;
    if (this.#waiting !== null) this.#answer(reply, true, took);
    else this.#result = reply;
  }

  /**
   * Counts the time the message hook that began at `since` took: once,
   * when it settles or its wait ends (hookTimeout, forced close), and not
   * when a hook given up on settles after the next message began.
   * Returns the time counted in milliseconds, NaN when it was not counted.
   */
  #timed(since: number): number {
    if (this.#since !== since) return NaN;
    this.#since = -1;
    const took = performance.now() - since;
    this.#owner.host.counters.hook("onMessage", took);
    return took;
  }

  /**
   * The body ended: answers with the hook's outcome, at once if it is
   * known (false). True when the answer waits for the hook: the owner's
   * goOn() (or fail()) is called once it is given. `at`: the driver's
   * time now (`now()`), when it read the clock in this run already (for
   * the chunk that ended the body): the hook deadline starts from it.
   */
  end(ev: Extract<SmtpEvent, { type: "message-end" }>, at?: number): boolean {
    const d = this.#owner;
    const msg = this.message!;
    if (this.#uncalled === msg) {
      // No body bytes: the hook gets the message ended.
      msg.end();
      this.#call(msg);
    }
    const result = this.#result;
    const stalled = this.#stalled;
    this.message = null;
    this.#result = null;
    this.#stalled = null;
    msg.end();
    // A hook that stopped reading already had its hookTimeout.
    if (stalled !== null) {
      this.#pending = null;
      this.#done(msg, ev, stalled);
      return false;
    }
    // Settled already (or synchronous): answered at once.
    if (result !== PENDING) {
      this.#done(msg, ev, result);
      return false;
    }
    // Ended by the hook's outcome (#settled), the hook deadline or a
    // forced close, whichever is first. The wait's state is kept in
    // fields and ended by one function per connection (#finish): no
    // promise or closures per message.
    this.#endMsg = msg;
    this.#endEv = ev;
    this.#endSince = this.#since;
    this.#waiting = this.#finish;
    d.hooks.begin(this.#finish, at);
    return true;
  }

  /** The end-of-data wait in progress (see end()): its message, event and hook start. */
  #endMsg: IncomingMessage | null = null;
  #endEv: Extract<SmtpEvent, { type: "message-end" }> | null = null;
  #endSince = -1;

  /**
   * Ends the end-of-data wait in progress with `w` (see end()): from the
   * hook deadline or a forced close, so the owner goes on in a microtask
   * (not inside the timer or close() that ended the wait).
   */
  readonly #finish = (w: WaitResult): void => this.#answer(w, false);

  /**
   * Ends the end-of-data wait in progress with `w`, and the owner goes
   * on: at once when `inReaction` (the hook's own reaction, which counted
   * the time the hook took already: `hookTook`, NaN if it did not), else
   * (the hook deadline or a forced close) in a microtask.
   */
  #answer(w: WaitResult, inReaction: boolean, hookTook = NaN): void {
    if (this.#waiting !== this.#finish) return;
    const d = this.#owner;
    const msg = this.#endMsg!;
    const ev = this.#endEv!;
    this.#endMsg = null;
    this.#endEv = null;
    this.#waiting = null;
    this.#pending = null;
    d.hooks.end(this.#finish);
    let failure: unknown = undefined;
    let failed = false;
    try {
      const took = inReaction ? hookTook : this.#timed(this.#endSince);
      const reply = d.hooks.reply(w);
      if (w === HOOK_TIMEOUT || w === FORCED) {
        // The sender gets a failure and will retry: the application
        // must not keep this copy (signal), and the loop must never
        // hand it out.
        msg.giveUp(reply!);
        d.host.withdraw(msg);
      }
      this.#done(msg, ev, reply);
      // The client's idle time starts when it has our answer, as after
      // the other hooks. A hook that took under a millisecond since the
      // message began moved the clock less than its resolution: no read.
      if (!(took < 1)) d.engine.receive(EMPTY_CHUNK, now());
    } catch (error) {
      // What fails here fails the owner's session, as in its own loop.
      failure = error;
      failed = true;
    }
    if (inReaction) {
      if (failed) d.fail(failure);
      else d.goOn();
    } else goOnLater(d, failed, failure);
  }

  /** Answers the message's sender: `error`, or accepted (see acceptMessage). */
  #done(
    msg: IncomingMessage,
    ev: Extract<SmtpEvent, { type: "message-end" }>,
    error: SmtpError | null,
  ): undefined {
    const d = this.#owner;
    const each = msg.answer();
    const counters = d.host.counters;
    // In LMTP one reply per recipient, each counted.
    const lmtp = d.engine.options.lmtp === true;
    if (error !== null) {
      counters.endOfData(error.code, lmtp ? msg.to.length : 1);
      d.engine.reject(error);
      return undefined;
    }
    const to = acceptMessage(d.engine, msg, each, counters);
    if (to.length > 0) {
      counters.acceptedBytes += ev.size;
      d.session.messages++;
      // With filters: the envelope they delivered (changed sender, added
      // or deleted recipients).
      const delivered = d.milter?.delivered(msg);
      d.host.logger?.({
        type: "message",
        session: d.session.id,
        id: msg.id,
        from: delivered?.from ?? msg.from,
        to: delivered?.to ?? to,
        size: ev.size,
        ...(msg.milter === undefined
          ? {}
          : { milter: milterOutcome(msg.milter) }),
      });
    }
    return undefined;
  }
}
