// A local HTTP endpoint for the webhook tests (the CLI's --webhook and
// examples/webhook.ts): it records each request and answers with `status`
// (and `headers`) after `delay` ms, or after `hold` resolves.
import * as http from "node:http";
import type { AddressInfo } from "node:net";

/** One request as the endpoint received it. */
export interface EndpointRequest {
  method: string;
  /** The path and query. */
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** The endpoint; set `status`, `headers`, `delay` or `hold` to say how it answers. */
export interface Endpoint {
  url: string;
  status: number;
  /** Response headers (a redirect's `location`, say). */
  headers: Record<string, string>;
  delay: number;
  /**
   * Called with each request once its body is in; the answer waits for it
   * and has the status it returns, if any (else `status`).
   */
  hold: ((request: EndpointRequest) => Promise<number | void>) | null;
  requests: EndpointRequest[];
  close(): Promise<void>;
}

/** Starts an endpoint on 127.0.0.1 at a free port, path `/inbound`. */
export async function startEndpoint(): Promise<Endpoint> {
  const state: Endpoint = {
    url: "",
    status: 200,
    headers: {},
    delay: 0,
    hold: null,
    requests: [],
    close: () => Promise.resolve(),
  };
  const server = http.createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (d: string) => (body += d));
    req.on("end", async () => {
      const request = {
        method: req.method ?? "",
        url: req.url ?? "",
        headers: req.headers,
        body,
      };
      state.requests.push(request);
      const status = await state.hold?.(request) ?? state.status;
      setTimeout(() => {
        res.writeHead(status, {
          "content-type": "text/plain",
          ...state.headers,
        });
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
