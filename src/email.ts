/**
 * The parsed message: postal-mime's `Email` type, and postal-mime itself,
 * loaded on first use.
 *
 * Deno resolves the bare name `postal-mime` through an import map, and the
 * map that applies is the one of the program being run, not this package's
 * `deno.json`: a Deno program outside a checkout that imports its `mod.ts`
 * by path cannot resolve `postal-mime`. So the types also name
 * `npm:postal-mime` (`@ts-types`, a comment to other tools), and the loader
 * falls back to `npm:postal-mime` when the bare name does not resolve. On
 * Node and Bun (and from JSR or npm) the bare name resolves and the
 * fallback is never tried.
 *
 * @module
 */

// @ts-types="npm:postal-mime@^4.0.0"
import type { Address, Email } from "postal-mime";

export type { Address, Email };

/** What this package uses of postal-mime's default export. */
interface PostalMimeParser {
  parse(raw: Uint8Array): Promise<Email>;
}

/**
 * postal-mime's parser, loaded on first use: `PostalMime.parse(raw)`
 * loads postal-mime (the first time) and parses `raw`. Rejects with an
 * error that names the cause when postal-mime cannot be loaded.
 *
 * @example
 * ```ts
 * import { PostalMime } from "./email.ts";
 *
 * const email = await PostalMime.parse(
 *   new TextEncoder().encode("Subject: Hello\r\n\r\nHi\r\n"),
 * );
 * console.log(email.subject, email.text);
 * ```
 */
export const PostalMime: PostalMimeParser = {
  async parse(raw: Uint8Array): Promise<Email> {
    const parser = await load();
    return parser.parse(raw);
  },
};

/** postal-mime's default export: by its bare name, else by `npm:` (Deno). */
async function load(): Promise<PostalMimeParser> {
  let first: unknown;
  try {
    return (await import("postal-mime")).default;
  } catch (err) {
    first = err;
  }
  try {
    // A literal, so that Deno fetches it with the program's other
    // dependencies (`deno install`, `--cached-only` and the lock file see
    // it); Node and Bun reject the scheme, and tsc does not know it.
    // @ts-ignore: tsc cannot resolve npm: specifiers; Deno can
    const mod = await import("npm:postal-mime@^4.0.0");
    return (mod as { default: PostalMimeParser }).default;
  } catch (second) {
    throw new Error(
      `Cannot load postal-mime to parse the message: ${describe(first)}; ` +
        `as npm:postal-mime@^4.0.0: ${describe(second)}`,
      {
        cause: new AggregateError(
          [first, second],
          "postal-mime by its bare name, then as npm:postal-mime@^4.0.0",
        ),
      },
    );
  }
}

/** The first line of an error's message (or of the thrown value as text). */
function describe(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.split(/\r\n|\r|\n/, 1)[0];
}
