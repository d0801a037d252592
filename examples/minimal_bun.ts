// A minimal receiver on Bun (its native Bun.listen): prints one line per
// message, stops on SIGINT/SIGTERM. From a checkout (port from argv, $PORT,
// or 2525):
//   bun examples/minimal_bun.ts 2525
// In your project: `bun add smtpd`, then import from "smtpd/bun".
import process from "node:process";
import { serve } from "../runtimes/bun.ts";

const port = Number(process.argv[2] ?? process.env.PORT ?? 2525);
const server = await serve({
  port,
  async onMessage(message) {
    const email = await message.parse();
    console.log(
      `message from=<${message.from}> to=<${message.to.join(">,<")}> ` +
        `subject=${JSON.stringify(email.subject ?? "")} size=${message.size}`,
    );
  },
});

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, async () => {
    await server.close();
    console.log("stopped");
  });
}
// Printed once the signals are watched, so that none is missed.
console.log(`listening on ${server.addr.hostname}:${server.addr.port}`);
