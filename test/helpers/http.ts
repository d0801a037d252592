// A local HTTP endpoint for the webhook tests (the CLI's --webhook and
// examples/webhook.ts): it records each request and answers with `status`
// after `delay` ms.
import * as http from "node:http";
import type { AddressInfo } from "node:net";

/** The endpoint; set `status` and `delay` to say how it answers. */
export interface Endpoint {
  url: string;
  status: number;
  delay: number;
  requests: { headers: http.IncomingHttpHeaders; body: string }[];
  close(): Promise<void>;
}

/** Starts an endpoint on 127.0.0.1 at a free port, path `/inbound`. */
export async function startEndpoint(): Promise<Endpoint> {
  const state: Endpoint = {
    url: "",
    status: 200,
    delay: 0,
    requests: [],
    close: () => Promise.resolve(),
  };
  const server = http.createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (d: string) => (body += d));
    req.on("end", () => {
      state.requests.push({ headers: req.headers, body });
      setTimeout(() => {
        res.writeHead(state.status, { "content-type": "text/plain" });
        res.end("answer");
      }, state.delay);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  state.url = `http://127.0.0.1:${
    (server.address() as AddressInfo).port
  }/inbound`;
  state.close = () =>
    new Promise<void>((r) => {
      server.closeAllConnections?.();
      server.close(() => r());
    });
  return state;
}
