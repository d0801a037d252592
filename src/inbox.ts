/**
 * The `for await (const message of server)` style: messages wait here for
 * the application's loop, and each is acknowledged (or refused) when the
 * loop moves on.
 *
 * @module
 */

import type { SmtpError } from "./errors.ts";
import type { IncomingMessage, Message } from "./message.ts";
import { TEMPORARY } from "./hooks.ts";

/**
 * A message as the `for await` loop gets it: it can also be refused
 * explicitly (and, with `lmtp`, for one recipient with
 * `rejectRecipient()`, before the loop moves on).
 *
 * @example
 * ```ts
 * import { serve, SmtpError } from "@smtpd/smtpd";
 *
 * const server = await serve({ lmtp: true, path: "/run/smtpd/lmtp.sock" });
 * for await (const message of server) {
 *   if (message.to.includes("full@example.org")) {
 *     message.rejectRecipient("full@example.org", new SmtpError(452, "4.2.2", "Mailbox full"));
 *   }
 * }
 * ```
 */
export interface LoopMessage extends Message {
  /** Refuses the message with this reply instead of accepting it when the loop moves on. */
  reject(error: SmtpError): void;
}

/** A message waiting for the loop, and how to answer its sender. */
interface Delivery {
  message: LoopMessage;
  settle: (error: SmtpError | null) => void;
}

/**
 * Waiting deliveries and takers for the `for await` style: a message
 * handed over with deliver() is answered when the loop takes the next one
 * (accepted), when the loop ends early (451 4.3.0), or when it calls
 * `message.reject()`.
 *
 * @example
 * ```ts
 * import { Inbox } from "./inbox.ts";
 *
 * const inbox = new Inbox();
 * inbox.end(); // no more messages: the loop ends
 * for await (const message of inbox) console.log(message.id);
 * ```
 */
export class Inbox implements AsyncIterable<LoopMessage> {
  #inbox: Delivery[] = [];
  #takers: ((d: Delivery | null) => void)[] = [];
  #ended = false;

  /** Hands a message to the loop; settles when the loop has answered it. */
  deliver(message: IncomingMessage): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const loopMessage = Object.assign(message, {
        reject(error: SmtpError) {
          if (settled) return;
          settled = true;
          reject(error);
        },
      }) as IncomingMessage & LoopMessage;
      const delivery: Delivery = {
        message: loopMessage,
        settle: (error) => {
          if (settled) return;
          settled = true;
          if (error === null) resolve();
          else reject(error);
        },
      };
      const taker = this.#takers.shift();
      if (taker) taker(delivery);
      else this.#inbox.push(delivery);
    });
  }

  /** Takes a message out of the inbox, if it is still there (451 to its sender). */
  withdraw(message: IncomingMessage): void {
    const i = this.#inbox.findIndex((d) => d.message === (message as Message));
    if (i >= 0) this.#inbox.splice(i, 1)[0].settle(TEMPORARY);
  }

  /** No more messages will come: the loops waiting end. */
  end(): void {
    this.#ended = true;
    for (const taker of this.#takers.splice(0)) taker(null);
  }

  /** Messages nobody took: their senders get 451 and retry. */
  refuseWaiting(): void {
    for (const d of this.#inbox.splice(0)) d.settle(TEMPORARY);
  }

  [Symbol.asyncIterator](): AsyncIterator<LoopMessage> {
    let current: Delivery | null = null;
    let ended = false;
    return {
      next: async () => {
        current?.settle(null);
        current = null;
        if (ended) return { done: true, value: undefined };
        const next = this.#inbox.shift() ??
          (this.#ended
            ? null
            : await new Promise<Delivery | null>((resolve) => {
              this.#takers.push(resolve);
            }));
        if (next === null) return { done: true, value: undefined };
        current = next;
        return { done: false, value: next.message };
      },
      return: () => {
        ended = true;
        current?.settle(TEMPORARY);
        current = null;
        return Promise.resolve({ done: true, value: undefined });
      },
    };
  }
}
