/**
 * `smtpd [options]`: the server that delivers into a Maildir, posts to a
 * webhook (`--webhook`), or both, until SIGINT or SIGTERM. SIGHUP
 * reloads the certificate and the auth file.
 *
 * With both, each message is written and synced into the Maildir's `tmp/`,
 * then posted, then renamed into `new/` (and `new/` synced) just before
 * the 250: a Maildir reader never sees a message whose sender was not
 * acknowledged. When the post fails (not 2xx, a redirect, a network error,
 * `--webhook-timeout`), the file is removed from `tmp/` and the sender gets
 * 451 4.3.0: the message is delivered once (file and post) or not at all
 * in `new/`, and the sender's retry delivers it anew. A crash during the
 * post leaves a file in `tmp/` only (swept when 36 hours old).
 *
 * @module
 */

import { open } from "node:fs/promises";
import { resolve as resolvePath } from "node:path";
import process from "node:process";
import { serve, SmtpError } from "../../mod.ts";
import type { Message } from "../message.ts";
import type { ServeOptions, Server } from "../server.ts";
import type { DeliverableMessage, Delivery, Maildir } from "../maildir.ts";
import {
  postWebhook,
  safeUrl,
  type WebhookPayload,
  webhookPayload,
} from "../webhook.ts";
import { CliError, type CliOptions, VERSION } from "./args.ts";
import { serveOptionsOf } from "./flags.ts";
import { listenError, loadFiles, openMaildir, webhookSecret } from "./files.ts";
import { checkCredentials } from "./password.ts";
import { startTmpSweep } from "./abuse.ts";
import {
  errorText,
  hookErrorLogger,
  hostPort,
  Log,
  serverLogger,
  stoppedText,
  watchReloadSignal,
  watchStopSignals,
} from "./log.ts";
import { subjectOf, subjectOfFile } from "./subject.ts";
import { workerChannel } from "./workers.ts";
import { createMetrics } from "../exports/metrics.ts";
import { type MetricsEndpoint, serveMetrics } from "./metrics.ts";

function runtimeName(runtime: string | undefined): string {
  const versions = process.versions as Record<string, string | undefined>;
  const name = runtime ??
    (versions.bun ? "bun" : versions.deno ? "deno" : "node");
  const version = versions[name];
  return version ? `${name} ${version}` : name;
}

/**
 * The bytes of a file from `offset` on, as a stream read in 64 KiB pieces
 * (the body of a copy already delivered, past its trace headers).
 */
function fileBody(path: string, offset: number): ReadableStream<Uint8Array> {
  let file: Awaited<ReturnType<typeof open>> | null = null;
  let at = offset;
  const close = () => {
    const f = file;
    file = null;
    return f?.close().catch(() => {});
  };
  return new ReadableStream<Uint8Array>({
    async pull(c) {
      try {
        file ??= await open(path, "r");
        const buf = new Uint8Array(64 * 1024);
        const { bytesRead } = await file.read(buf, 0, buf.byteLength, at);
        if (bytesRead === 0) {
          await close();
          c.close();
          return;
        }
        at += bytesRead;
        c.enqueue(buf.subarray(0, bytesRead));
      } catch (error) {
        await close();
        throw error;
      }
    },
    cancel: () => close(),
  });
}

/**
 * LMTP into one Maildir: one file per accepted recipient, as LMTP
 * delivery agents (Dovecot) write one copy per mailbox, each with its own
 * `Received: ... for <recipient>`; and one reply per recipient. The
 * first copy is written from the incoming body, the others are copied
 * from it: a failure of the first answers every recipient (there is no
 * body to copy), a failure of a later copy answers its recipient only.
 */
async function deliverEach(
  maildir: Maildir,
  message: Message,
  delivered: (to: string, delivery: Delivery) => Promise<void>,
  failed: (to: string, error: SmtpError) => void,
): Promise<void> {
  let first: Delivery | null = null;
  for (let i = 0; i < message.to.length; i++) {
    const to = message.to[i];
    const copy = {
      id: message.id,
      from: message.from,
      mailFrom: message.mailFrom,
      session: message.session,
      signal: message.signal,
      to: [to],
      raw: first === null
        ? message.raw
        : fileBody(first.path, first.size - message.size),
    };
    if (first === null) {
      first = await maildir.deliver(copy);
      await delivered(to, first);
      continue;
    }
    try {
      await delivered(to, await maildir.deliver(copy));
    } catch (error) {
      // The sender gave up meanwhile (or shutdown): every recipient fails.
      if (message.signal.aborted) throw error;
      const reply = error instanceof SmtpError
        ? error
        : new SmtpError(451, "4.3.0", "Temporary local problem");
      failed(to, reply);
      message.rejectRecipient(i, reply);
    }
  }
}

/** The message with its body already read, for Maildir delivery. */
function withBody(message: Message, raw: Uint8Array): DeliverableMessage {
  return {
    id: message.id,
    from: message.from,
    to: message.to,
    mailFrom: message.mailFrom,
    session: message.session,
    signal: message.signal,
    raw: new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(raw);
        controller.close();
      },
    }),
  };
}

/** What the CLI posts to: `--webhook` and its flags. */
interface Webhook {
  url: URL;
  timeout: number;
  headers: Record<string, string>;
  secret: string | undefined;
}

/**
 * Stores the message (when there is a Maildir) and posts it (when there
 * is a webhook). With both, the file waits in `tmp/` while the post is
 * pending and enters `new/` only after the 2xx; a failed post removes it.
 */
async function deliver(
  message: Message,
  maildir: Maildir | null,
  webhook: Webhook | null,
): Promise<
  { delivery: Delivery | null; status: number | null; raw?: Uint8Array }
> {
  if (webhook === null) {
    return { delivery: await maildir!.deliver(message), status: null };
  }
  const raw = await message.bytes();
  let payload: WebhookPayload;
  try {
    payload = await webhookPayload(message, raw);
  } catch (error) {
    const reply = new SmtpError(
      451,
      "4.3.0",
      "Local error in processing, try again later",
    );
    reply.cause = error;
    throw reply;
  }
  let status = 0;
  const post = async () => {
    ({ status } = await postWebhook(webhook.url, payload, {
      timeout: webhook.timeout,
      headers: webhook.headers,
      ...(webhook.secret !== undefined ? { secret: webhook.secret } : {}),
      signal: message.signal,
    }));
  };
  if (maildir === null) {
    await post();
    return { delivery: null, status, raw };
  }
  const delivery = await maildir.deliver(withBody(message, raw), {
    confirm: async (pending) => {
      // Where the file will be once the endpoint took the message.
      payload.file = pending.path;
      await post();
    },
  });
  return { delivery, status, raw };
}

export async function serveCommand(o: CliOptions): Promise<number> {
  const log = new Log(o);
  const started = Date.now();
  // Under --workers: the port the parent chose, a channel to report on,
  // and the parent watched from now on (before anything can take time).
  const worker = workerChannel(o);
  const maildirPath = resolvePath(o.maildir);
  // Everything that can fail because of a flag fails here, before listening.
  const loaded = await loadFiles(o);
  const maildir = o.noMaildir ? null : await openMaildir(o, maildirPath);
  const webhook: Webhook | null = o.webhook === undefined ? null : {
    url: new URL(o.webhook),
    timeout: o.webhookTimeout ?? 30000,
    headers: o.webhookHeaders ?? {},
    secret: await webhookSecret(o),
  };
  for (const warning of loaded.warnings) {
    log.warn("warning", warning, { warning });
  }
  // Replaced by a reload (SIGHUP).
  let users = loaded.users;
  const stats = { messages: 0, bytes: 0, failed: 0 };
  const listen: { runtime?: string } = {};

  const deliveryFailed =
    (message: Message, to: readonly string[]) => (error: SmtpError) => {
      stats.failed++;
      const cause = error.cause !== undefined ? error.cause : error;
      log.error(
        "delivery-failed",
        `delivery failed id=${message.id} from=<${message.from}>${
          o.lmtp ? ` to=${to.map((a) => `<${a}>`).join(",")}` : ""
        }: ${errorText(cause)} (replied ${error.toString()})`,
        {
          id: message.id,
          from: message.from,
          to,
          error: errorText(cause),
          reply: error.toString(),
        },
      );
    };
  /**
   * Logs a delivered message (or one recipient's copy under LMTP): one
   * line with its Subject, read once per message from the header block
   * (of the bytes in memory, or of the stored file).
   */
  const delivered = (message: Message) => {
    let subject: Promise<string | null> | null = null;
    return async (
      to: readonly string[],
      delivery: Delivery | null,
      status: number | null,
      raw?: Uint8Array,
    ): Promise<void> => {
      stats.messages++;
      stats.bytes += message.size;
      subject ??= raw !== undefined
        ? Promise.resolve(subjectOf(raw))
        : delivery !== null
        ? subjectOfFile(delivery.path)
        : Promise.resolve(null);
      const s = await subject;
      const q = message.milter?.find((r) => r.quarantine !== undefined);
      const milter = q !== undefined
        ? `quarantine quarantine="${q.quarantine!.replace(/"/g, '\\"')}"`
        : "accept";
      // The client's name, when --reverse-dns confirmed one.
      const client = message.session.reverseDns?.status === "confirmed"
        ? message.session.clientHostname
        : null;
      log.info(
        "message",
        `message id=${message.id} from=<${message.from}> to=${
          to.map((a) => `<${a}>`).join(",")
        } size=${message.size}` +
          (client !== null ? ` client=${client}` : "") +
          (s !== null ? ` subject="${s.replace(/"/g, '\\"')}"` : "") +
          (delivery !== null ? ` file=${delivery.path}` : "") +
          (status !== null ? ` webhook=${status}` : "") +
          (message.milter !== undefined ? ` milter=${milter}` : ""),
        {
          id: message.id,
          from: message.from,
          to,
          size: message.size,
          ...(client !== null ? { client } : {}),
          ...(s !== null ? { subject: s } : {}),
          ...(delivery !== null ? { file: delivery.path } : {}),
          ...(status !== null ? { webhook: status } : {}),
          ...(message.milter !== undefined
            ? {
              milter: q !== undefined ? "quarantine" : "accept",
              ...(q !== undefined ? { quarantine: q.quarantine } : {}),
            }
            : {}),
        },
      );
    };
  };

  const options: ServeOptions = {
    // The flags that are a server option as is (lmtp, chunking, dsn, the
    // limits and deadlines, requireTls, ...; see flags.ts).
    ...serveOptionsOf(o),
    ...(o.socket !== undefined
      ? { path: o.socket }
      : { hostname: o.host, port: worker?.port ?? o.port }),
    ...(worker?.reusePort ? { reusePort: true } : {}),
    // Counted by the parent for every worker.
    ...(worker !== null ? { limits: worker.limits } : {}),
    ...(loaded.tls !== undefined
      ? { tls: loaded.tls, implicitTls: o.tlsImplicit }
      : {}),
    ...(o.proxyProtocol
      ? {
        proxyProtocol: o.proxyTrusted !== undefined
          ? { trusted: o.proxyTrusted }
          : true,
      }
      : {}),
    // The auth file holds scrypt hashes, never passwords, so CRAM-MD5
    // (which needs the plaintext password) is not offered.
    ...(loaded.users !== undefined
      ? {
        auth: {
          required: true,
          mechanisms: ["PLAIN", "LOGIN"],
          verify: ({ username, password }) =>
            checkCredentials(users!, username, password ?? ""),
        },
      }
      : {}),
    // The hook waits for the webhook: give it the webhook's time and more.
    ...(webhook !== null && webhook.timeout + 30000 > 60000
      ? { hookTimeout: webhook.timeout + 30000 }
      : {}),
    ...(o.milter !== undefined
      ? {
        milters: o.milter.map((address) => ({
          address,
          onError: o.milterOnError ?? "tempfail",
        })),
      }
      : {}),
    logger: serverLogger(log, listen),
    onError: hookErrorLogger(log),
    async onMessage(message: Message) {
      try {
        if (o.lmtp) {
          const logCopy = delivered(message);
          await deliverEach(
            maildir!,
            message,
            (to, d) => logCopy([to], d, null),
            (to, error) => deliveryFailed(message, [to])(error),
          );
        } else {
          const { delivery, status, raw } = await deliver(
            message,
            maildir,
            webhook,
          );
          await delivered(message)(message.to, delivery, status, raw);
        }
      } catch (error) {
        if (error instanceof SmtpError && error.cause !== undefined) {
          deliveryFailed(message, message.to)(error);
        } else {
          log.debug(
            "message-aborted",
            `message id=${message.id} not received: ${errorText(error)}`,
            {
              id: message.id,
              error: errorText(error),
            },
          );
        }
        throw error;
      }
    },
  };

  // Stop on SIGINT or SIGTERM (watched before listening, so that a signal
  // right after the listening line is not lost); a second one stops at once.
  let signalled: (signal: string) => void = () => {};
  const stopSignal = new Promise<string>((resolve) => (signalled = resolve));
  let signals = 0;
  const onSignal = (signal: string) => {
    signals++;
    if (signals === 1) signalled(signal);
    else {
      log.error("exit", `${signal} again: exiting without waiting`, { signal });
      process.exit(1);
    }
  };
  const unwatch = watchStopSignals(onSignal);
  // A worker whose parent is already gone (it died while this one
  // started) does not listen at all.
  let orphan = false;
  let server: Server | null = null;
  let stopping = false;
  worker?.onStop((why) => {
    orphan = why === "parent gone";
    signalled(why);
  });
  if (orphan) {
    unwatch();
    log.info("stopping", "parent gone: not listening", {
      reason: "parent gone",
    });
    log.flush();
    await worker!.stopped(stats);
    return 0;
  }
  const unwatchReload = watchReloadSignal(() => {
    if (server !== null) void reload(server);
  });

  // SIGHUP: the certificate and the auth file are read and checked again,
  // as at start-up, and used for new connections; when one fails, the old
  // ones stay and the log says why.
  let reloading = false;
  const reload = async (server: Server): Promise<void> => {
    if (reloading) return;
    reloading = true;
    const files = [
      ...(o.tlsCert !== undefined ? ["--tls-cert", "--tls-key"] : []),
      ...(o.authFile !== undefined ? ["--auth-file"] : []),
    ];
    try {
      if (files.length === 0) {
        log.info(
          "reload",
          "SIGHUP: nothing to reload (no --tls-cert or --auth-file)",
        );
        return;
      }
      const next = await loadFiles(o);
      if (next.tls !== undefined) server.setTls(next.tls);
      users = next.users;
      for (const warning of next.warnings) {
        log.warn("warning", warning, { warning });
      }
      log.info("reload", `SIGHUP: reloaded ${files.join(", ")}`, { files });
    } catch (error) {
      log.error(
        "reload-failed",
        `SIGHUP: reload failed, still using the previous ${files.join(", ")}: ${
          errorText(error)
        }`,
        { files, error: errorText(error) },
      );
    } finally {
      reloading = false;
    }
  };

  try {
    server = await serve(options);
  } catch (error) {
    unwatch();
    unwatchReload();
    if (error instanceof CliError) throw error;
    throw listenError(error, o);
  }
  // --metrics: served here, or by the parent with every worker's counts.
  const metrics = o.metrics !== undefined ? createMetrics({ server }) : null;
  let endpoint: MetricsEndpoint | null = null;
  if (worker !== null) {
    if (metrics !== null) worker.onStats(() => metrics.snapshot());
  } else if (metrics !== null) {
    try {
      endpoint = await serveMetrics(
        o.metrics!,
        () => metrics.render(),
        () => !stopping,
      );
    } catch (error) {
      unwatch();
      unwatchReload();
      await server.close();
      throw error;
    }
  }

  const where = server.addr.path ??
    hostPort(server.addr.hostname, server.addr.port);
  const runtime = runtimeName(listen.runtime);
  const tlsMode = loaded.tls === undefined
    ? ""
    : o.tlsImplicit
    ? ", implicit TLS"
    : ", STARTTLS";
  log.notice(
    "listening",
    `smtpd ${VERSION} listening on ${where} (${runtime}${tlsMode}${
      o.lmtp ? ", LMTP" : ""
    }), ` +
      [
        ...(maildir !== null ? [`Maildir ${maildirPath}`] : []),
        ...(webhook !== null ? [`webhook ${safeUrl(webhook.url)}`] : []),
      ].join(", "),
    {
      version: VERSION,
      ...(server.addr.path !== undefined
        ? { socket: server.addr.path }
        : { host: server.addr.hostname, port: server.addr.port }),
      protocol: o.lmtp ? "lmtp" : "smtp",
      runtime,
      tls: loaded.tls === undefined
        ? "none"
        : o.tlsImplicit
        ? "implicit"
        : "starttls",
      ...(maildir !== null ? { maildir: maildirPath } : {}),
      ...(webhook !== null ? { webhook: safeUrl(webhook.url) } : {}),
    },
  );
  if (endpoint !== null) {
    log.notice(
      "metrics",
      `metrics on http://${hostPort(o.metrics!.host, endpoint.port)}/metrics`,
      { host: o.metrics!.host, port: endpoint.port },
    );
  }
  worker?.listening(server.addr.port);
  // The tmp/ sweep starts once the server listens (see startTmpSweep).
  const stopSweep = maildir === null ? () => {} : startTmpSweep(maildir, log);
  const why = await Promise.race([
    stopSignal,
    server.finished.then(() => "listener closed"),
  ]);
  stopping = true;
  log.info("stopping", `${why}: closing (messages in transfer may finish)`, {
    reason: why,
  });
  await server.close();
  await endpoint?.close();
  unwatch();
  unwatchReload();
  stopSweep();
  log.flush();
  const uptime = Date.now() - started;
  // A worker reports to the parent, which prints one summary for all.
  if (worker) {
    await worker.stopped(stats);
    return why === "listener closed" ? 1 : 0;
  }
  log.info(
    "stopped",
    stoppedText(uptime, stats),
    {
      messages: stats.messages,
      bytes: stats.bytes,
      failed: stats.failed,
      uptime: uptime / 1000,
    },
  );
  return why === "listener closed" ? 1 : 0;
}
