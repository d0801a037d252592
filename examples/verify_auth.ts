// A receiver that checks SPF, DKIM and DMARC of every incoming message with
// the `mailauth` package (npm install mailauth; 4.13.x runs on Node 20):
// smtpd gives it what it needs, the client's IP (session.remoteAddress),
// the HELO name (session.heloName), MAIL FROM (message.from) and the raw
// message (await message.bytes()). It prints one line of verdicts per
// message and hands the message on with `Authentication-Results` and
// `Received-SPF` prepended. Mail that fails DMARC when the From domain
// publishes `p=reject` is refused with `550 5.7.1` after DATA (the sending
// server then bounces it); set REJECT_DMARC=0 to only log it.
//
// From a checkout (port from $PORT, default 2525; real DNS):
//   node --import tsx examples/verify_auth.ts   # Node 23.6+: node examples/verify_auth.ts
//   deno run -A examples/verify_auth.ts
//   bun examples/verify_auth.ts
// In your project: import { serve, SmtpError } from "smtpd" (npm) or
// "jsr:@smtpd/smtpd", and startVerifier from a copy of this file.
import { Buffer } from "node:buffer";
import { realpathSync } from "node:fs";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { authenticate, type DNSResolver } from "mailauth";
import { type Message, serve, type Server, SmtpError } from "../mod.ts";

/**
 * The verdicts of one message.
 *
 * @example
 * ```ts
 * const verdict: Verdict = { dkim: "pass", spf: "pass", dmarc: "pass", policy: "reject", domain: "example.com", rejected: false };
 * ```
 */
export interface Verdict {
  /** `pass` when a signature verified, else the first signature's result (`fail`, `neutral`, ...), `none` without any. */
  dkim: string;
  /** The SPF result of MAIL FROM (or of the HELO name for `<>`). */
  spf: string;
  /** The DMARC result of the From domain (`none` when it has no record). */
  dmarc: string;
  /** The DMARC policy that applies (`none`, `quarantine`, `reject`), `""` without a record. */
  policy: string;
  /** The From header's domain. */
  domain: string;
  /** Whether the message was refused (DMARC fail with `p=reject`). */
  rejected: boolean;
}

/**
 * Options of {@link startVerifier}.
 *
 * @example
 * ```ts
 * const options: VerifierOptions = { port: 2525, rejectDmarc: true };
 * ```
 */
export interface VerifierOptions {
  /** Port to listen on (0: any free one). Default 2525. */
  port?: number;
  /** Interface to listen on. Default `127.0.0.1`. */
  hostname?: string;
  /** This server's name, in the greeting and in `Authentication-Results`. Default `localhost`. */
  serverName?: string;
  /** DNS lookups: `(name, rrtype) => records` (default: the system resolver). */
  resolver?: DNSResolver;
  /** Refuse DMARC failures of `p=reject` domains with 550 5.7.1. Default `true`. */
  rejectDmarc?: boolean;
  /**
   * Gets each accepted message with the authentication headers prepended
   * (default: nothing; the verdict line is printed either way). Throw an
   * `SmtpError` to refuse it.
   */
  deliver?: (
    message: Message,
    authenticated: Uint8Array,
    verdict: Verdict,
  ) => void | Promise<void>;
  /** Gets each verdict, refused messages included (default: prints a line). */
  onVerdict?: (message: Message, verdict: Verdict) => void;
}

/**
 * Starts an SMTP server that checks SPF, DKIM and DMARC of each message.
 *
 * @example
 * ```ts
 * const server = await startVerifier({
 *   port: 2525,
 *   deliver: (message, authenticated, verdict) => console.log(message.id, verdict.dmarc, authenticated.length),
 * });
 * ```
 */
export function startVerifier(options: VerifierOptions = {}): Promise<Server> {
  const serverName = options.serverName ?? "localhost";
  const rejectDmarc = options.rejectDmarc ?? true;
  const onVerdict = options.onVerdict ?? ((message, v) =>
    console.log(
      `message id=${message.id} from=<${message.from}> domain=${v.domain} ` +
        `dkim=${v.dkim} spf=${v.spf} dmarc=${v.dmarc} policy=${
          v.policy || "-"
        }` +
        (v.rejected ? " rejected" : ""),
    ));
  return serve({
    port: options.port ?? 2525,
    hostname: options.hostname ?? "127.0.0.1",
    serverName,
    async onMessage(message) {
      const raw = await message.bytes();
      const result = await authenticate(
        Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength),
        {
          ip: message.session.remoteAddress,
          helo: message.session.heloName ?? undefined,
          sender: message.from || undefined,
          mta: serverName,
          disableArc: true,
          disableBimi: true,
          ...(options.resolver ? { resolver: options.resolver } : {}),
        },
      );
      const dkim = result.dkim.results.map((r) => r.status.result);
      const verdict: Verdict = {
        dkim: dkim.includes("pass") ? "pass" : dkim[0] ?? "none",
        spf: result.spf ? result.spf.status.result : "none",
        dmarc: result.dmarc ? result.dmarc.status.result : "none",
        policy: result.dmarc ? result.dmarc.policy ?? "" : "",
        domain: result.dkim.headerFrom?.[0]?.split("@").pop() ?? "",
        rejected: false,
      };
      verdict.rejected = rejectDmarc && verdict.dmarc === "fail" &&
        verdict.policy === "reject";
      onVerdict(message, verdict);
      if (verdict.rejected) {
        throw new SmtpError(
          550,
          "5.7.1",
          `Message rejected: DMARC policy of ${verdict.domain} (dkim=${verdict.dkim}, spf=${verdict.spf})`,
        );
      }
      // result.headers: "Received-SPF: ...\r\nAuthentication-Results: ...\r\n"
      const head = new TextEncoder().encode(result.headers);
      const authenticated = new Uint8Array(head.byteLength + raw.byteLength);
      authenticated.set(head);
      authenticated.set(raw, head.byteLength);
      await options.deliver?.(message, authenticated, verdict);
    },
  });
}

/** Whether this file is the program being run (import.meta.main, or argv[1] on Node before 24.2). */
function isMain(): boolean {
  const main = (import.meta as { main?: unknown }).main;
  if (typeof main === "boolean") return main;
  try {
    return realpathSync(process.argv[1]) ===
      realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) {
  const server = await startVerifier({
    port: Number(process.env.PORT ?? 2525),
    rejectDmarc: process.env.REJECT_DMARC !== "0",
  });
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => server.close());
  }
  // Printed once the signals are watched, so that none is missed.
  console.log(`listening on ${server.addr.hostname}:${server.addr.port}`);
}
