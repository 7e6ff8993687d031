// A forwarding HTTP proxy in front of a test server that records each request ("METHOD path"):
// what an operation costs the server, counted on the wire.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface CountingProxy {
  url: string;
  requests: string[];
  close(): Promise<void>;
}

/**
 * A proxy to `target` that records each request as "METHOD path". `refuse` may answer a request
 * itself with an HTTP status (given the requests so far, this one included) instead of forwarding it.
 */
export async function countingProxy(target: string, refuse?: (requests: readonly string[]) => number | undefined): Promise<CountingProxy> {
  const requests: string[] = [];
  const to = new URL(target);
  const server = http.createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    const status = refuse?.(requests);
    if (status !== undefined) {
      req.resume();
      res.writeHead(status).end();
      return;
    }
    const upstream = http.request({ host: to.hostname, port: to.port, path: req.url, method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
