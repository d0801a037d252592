/**
 * A received message's body taken without a stream, lent part by part: the
 * way {@link Maildir.deliver} writes a body to its file straight from the
 * server's read buffer. Not a public API: a `Message` the server made has
 * the {@link LENT_BODY} method; any other message is read through `raw`.
 *
 * Why not `raw`'s BYOB reader: on Bun a byte stream copies the reader's
 * whole buffer twice per read (its "transfer" of the `ArrayBuffer` is a
 * copy), so a 100 MB body made some 200 MB of garbage on top of the
 * received chunks, and the garbage collector's old generation filled with
 * the chunks that were live at each collection.
 *
 * @module
 */

/**
 * The body, lent part by part (see {@link LENT_BODY}).
 *
 * @example
 * ```ts
 * import type { LentBody } from "./lent_body.ts";
 *
 * async function count(body: LentBody): Promise<number> {
 *   let n = 0;
 *   for (let part = await body.read(); part !== null; part = await body.read()) {
 *     n += part.byteLength; // part is valid until the next read() or cancel()
 *   }
 *   return n;
 * }
 * ```
 */
export interface LentBody {
  /**
   * The next part of the body, `null` at its end; rejects with the reason
   * the body did not complete. A part is lent: valid until the next
   * `read()` or `cancel()` (the server reads nothing from the client
   * meanwhile), so it is written or copied before asking for the next.
   */
  read(): Promise<Uint8Array | null>;
  /** Nothing more is read: the rest of the body is dropped. */
  cancel(): void;
}

/**
 * The method of a server's `Message` that takes its body as a
 * {@link LentBody}, or returns `null` when the body is taken already
 * (`raw` opened, `bytes()` called, taken before). Once taken, `raw` and
 * `bytes()` behave as if a reader of `raw` took the body: `raw` is locked
 * (and `bytes()` rejects) while the LentBody reads, then a stream read to
 * its end (errored if the body failed), `bytes()` empty.
 *
 * @example
 * ```ts
 * import { LENT_BODY, type LentBody } from "./lent_body.ts";
 *
 * function lentBody(message: object): LentBody | null {
 *   const take = (message as { [LENT_BODY]?: () => LentBody | null })[LENT_BODY];
 *   return typeof take === "function" ? take.call(message) : null;
 * }
 * ```
 */
export const LENT_BODY: unique symbol = Symbol("smtpd.lentBody");
