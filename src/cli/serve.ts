/**
 * `smtpd [options]`: the server that delivers into a Maildir, until SIGINT
 * or SIGTERM.
 *
 * @module
 */

import { resolve as resolvePath } from "node:path";
import process from "node:process";
import { serve } from "../../mod.ts";
import type { Message } from "../message.ts";
import type { ServeOptions, Server } from "../server.ts";
import { SmtpError } from "../errors.ts";
import { CliError, type CliOptions, VERSION } from "./args.ts";
import { listenError, loadFiles, openMaildir } from "./files.ts";
import { checkCredentials } from "./password.ts";
import { duration, errorText, hostPort, Log, serverLogger } from "./log.ts";
import { workerChannel } from "./workers.ts";

function runtimeName(runtime: string | undefined): string {
  const versions = process.versions as Record<string, string | undefined>;
  const name = runtime ??
    (versions.bun ? "bun" : versions.deno ? "deno" : "node");
  const version = versions[name];
  return version ? `${name} ${version}` : name;
}

/** "1 message", "2 messages". */
function count(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

export async function serveCommand(o: CliOptions): Promise<number> {
  const log = new Log(o);
  const started = Date.now();
  const maildirPath = resolvePath(o.maildir);
  // Everything that can fail because of a flag fails here, before listening.
  const loaded = await loadFiles(o);
  const maildir = await openMaildir(o, maildirPath);
  for (const warning of loaded.warnings) {
    log.warn("warning", warning, { warning });
  }

  const stats = { messages: 0, bytes: 0, failed: 0 };
  // Under --workers: the port the parent chose, and a channel to report on.
  const worker = workerChannel();
  const listen: { runtime?: string } = {};

  const options: ServeOptions = {
    hostname: o.host,
    port: worker?.port ?? o.port,
    serverName: o.serverName,
    ...(worker?.reusePort ? { reusePort: true } : {}),
    ...(o.size !== undefined ? { maxMessageSize: o.size } : {}),
    ...(o.maxRecipients !== undefined
      ? { maxRecipients: o.maxRecipients }
      : {}),
    ...(o.maxConnections !== undefined
      ? { maxConnections: o.maxConnections }
      : {}),
    ...(loaded.tls !== undefined
      ? { tls: loaded.tls, implicitTls: o.tlsImplicit }
      : {}),
    // The engine enforces these: MAIL (and AUTH) before STARTTLS get 530
    // 5.7.0; with an auth file, MAIL before a successful AUTH gets 530.
    requireTls: o.requireTls,
    allowInsecureAuth: o.allowInsecureAuth,
    dsn: o.dsn,
    // The auth file holds scrypt hashes, never passwords, so CRAM-MD5
    // (which needs the plaintext password) is not offered.
    ...(loaded.users !== undefined
      ? {
        auth: {
          required: true,
          mechanisms: ["PLAIN", "LOGIN"],
          verify: ({ username, password }) =>
            checkCredentials(loaded.users!, username, password ?? ""),
        },
      }
      : {}),
    logger: serverLogger(log, listen),
    async onMessage(message: Message) {
      try {
        const delivery = await maildir.deliver(message);
        stats.messages++;
        stats.bytes += message.size;
        log.info(
          "message",
          `message id=${message.id} from=<${message.from}> to=${
            message.to.map((a) => `<${a}>`).join(",")
          } size=${message.size} file=${delivery.path}`,
          {
            id: message.id,
            from: message.from,
            to: message.to,
            size: message.size,
            file: delivery.path,
          },
        );
      } catch (error) {
        if (error instanceof SmtpError && error.cause !== undefined) {
          stats.failed++;
          log.error(
            "delivery-failed",
            `delivery failed id=${message.id} from=<${message.from}>: ${
              errorText(error.cause)
            } (replied ${error.toString()})`,
            {
              id: message.id,
              from: message.from,
              to: message.to,
              error: errorText(error.cause),
              reply: error.toString(),
            },
          );
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
  const handlers = (["SIGINT", "SIGTERM"] as const).map((signal) => {
    const handler = () => onSignal(signal);
    try {
      process.on(signal, handler);
    } catch { /* a signal this platform cannot watch */ }
    return () => {
      try {
        process.off(signal, handler);
      } catch { /* never added */ }
    };
  });
  worker?.onStop((why) => signalled(why));

  let server: Server;
  try {
    server = await serve(options);
  } catch (error) {
    for (const remove of handlers) remove();
    if (error instanceof CliError) throw error;
    throw listenError(error, o);
  }

  const where = hostPort(server.addr.hostname, server.addr.port);
  const runtime = runtimeName(listen.runtime);
  const tlsMode = loaded.tls === undefined
    ? ""
    : o.tlsImplicit
    ? ", implicit TLS"
    : ", STARTTLS";
  log.info(
    "listening",
    `smtpd ${VERSION} listening on ${where} (${runtime}${tlsMode}), Maildir ${maildirPath}`,
    {
      version: VERSION,
      host: server.addr.hostname,
      port: server.addr.port,
      runtime,
      tls: loaded.tls === undefined
        ? "none"
        : o.tlsImplicit
        ? "implicit"
        : "starttls",
      maildir: maildirPath,
    },
  );
  worker?.listening(server.addr.port);
  const why = await Promise.race([
    stopSignal,
    server.finished.then(() => "listener closed"),
  ]);
  log.info("stopping", `${why}: closing (messages in transfer may finish)`, {
    reason: why,
  });
  await server.close();
  for (const remove of handlers) remove();
  const uptime = Date.now() - started;
  // A worker reports to the parent, which prints one summary for all.
  if (worker) {
    await worker.stopped(stats);
    return why === "listener closed" ? 1 : 0;
  }
  log.info(
    "stopped",
    `stopped after ${duration(uptime)}: ${count(stats.messages, "message")}, ${
      count(stats.bytes, "byte")
    }` +
      (stats.failed > 0
        ? `, ${count(stats.failed, "failed delivery", "failed deliveries")}`
        : ""),
    {
      messages: stats.messages,
      bytes: stats.bytes,
      failed: stats.failed,
      uptime: uptime / 1000,
    },
  );
  return why === "listener closed" ? 1 : 0;
}
