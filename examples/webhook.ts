// Forwards each message to an HTTP endpoint as JSON (an inbound-mail
// webhook: envelope, parsed headers, subject, text, html, attachment
// metadata, the raw message in base64; see WebhookPayload in
// src/webhook.ts). The sender gets 250 only after the endpoint answered 2xx;
// any other status (a redirect too), a network error or no answer within
// the timeout gets 451 4.3.0, and the sending server retries later.
//
// The endpoint can tell it is us: user:password@ in the URL goes as Basic
// auth, and with $WEBHOOK_SECRET each post is signed (X-Smtpd-Timestamp,
// X-Smtpd-Signature: v1=HMAC-SHA256 of timestamp + "." + body; the README
// shows the endpoint's check).
//
// From a checkout (URL as the argument or $WEBHOOK_URL; $PORT, default
// 2525; $WEBHOOK_TIMEOUT in ms, default 30000):
//   node --import tsx examples/webhook.ts http://127.0.0.1:8080/inbound
//   deno run -A examples/webhook.ts http://127.0.0.1:8080/inbound
//   bun examples/webhook.ts http://127.0.0.1:8080/inbound
// In your project: import { serve } from "smtpd" and { postWebhook,
// webhookPayload } from "smtpd/webhook" (npm), or "jsr:@smtpd/smtpd" and
// "jsr:@smtpd/smtpd/webhook". The CLI does the same: smtpd --webhook URL.
import process from "node:process";
import { serve } from "../mod.ts";
import { postWebhook, webhookPayload, webhookUrl } from "../src/webhook.ts";

const url = webhookUrl(process.argv[2] ?? process.env.WEBHOOK_URL ?? "");
const timeout = Number(process.env.WEBHOOK_TIMEOUT ?? 30000);
const secret = process.env.WEBHOOK_SECRET || undefined;

const server = await serve({
  port: Number(process.env.PORT ?? 2525),
  async onMessage(message) {
    const payload = await webhookPayload(message, await message.bytes());
    try {
      const { status } = await postWebhook(url, payload, {
        timeout,
        secret,
        signal: message.signal, // the sender gave up: stop posting
      });
      console.log(`message id=${message.id} posted: HTTP ${status}`);
    } catch (error) {
      const why = (error as Error).cause ?? error;
      // The texts name neither the URL's password and query nor the secret.
      console.log(`message id=${message.id} not posted (${why}): ${error}`);
      throw error; // the SmtpError 451 4.3.0 that postWebhook throws
    }
  },
});

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => server.close());
}
// Printed once the signals are watched, so that none is missed.
console.log(`listening on ${server.addr.hostname}:${server.addr.port}`);
