// A minimal receiver on Deno: prints one line per message, stops on
// SIGINT/SIGTERM. From a checkout (port from argv, $PORT, or 2525):
//   deno run --allow-net --allow-env examples/minimal_deno.ts 2525
// In your project: import from "jsr:@smtpd/smtpd/deno".
import { serve } from "../runtimes/deno.ts";

const port = Number(Deno.args[0] ?? Deno.env.get("PORT") ?? 2525);
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

const stop = async () => {
  Deno.removeSignalListener("SIGINT", stop);
  Deno.removeSignalListener("SIGTERM", stop);
  await server.close();
  console.log("stopped");
};
Deno.addSignalListener("SIGINT", stop);
Deno.addSignalListener("SIGTERM", stop);
// Printed once the signals are watched, so that none is missed.
console.log(`listening on ${server.addr.hostname}:${server.addr.port}`);
