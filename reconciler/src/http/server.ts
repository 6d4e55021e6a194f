/**
 * /healthz (the process is alive), /readyz (it can do its job: Firestore reachable, storage
 * writable, listener healthy) and /metrics. Serves from the first moment of boot.
 */
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';

export interface ReadinessCheck {
  name: string;
  check(): Promise<boolean> | boolean;
}

/** A check that takes longer than this counts as failed. */
const READINESS_TIMEOUT_MS = 3_000;

async function passes(check: ReadinessCheck): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), READINESS_TIMEOUT_MS);
    timer.unref();
  });
  try {
    // Through a promise, so a check that throws (even synchronously) counts as failing.
    return await Promise.race([Promise.resolve().then(() => check.check()).catch(() => false), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Each check by name, passing or not: what /readyz answers and `wafleet_ready` exports. */
export function runReadinessChecks(checks: readonly ReadinessCheck[]): Promise<Array<readonly [string, boolean]>> {
  return Promise.all(checks.map(async (c) => [c.name, await passes(c)] as const));
}

export async function startHttpServer(opts: { host: string; port: number; registry: Registry; checks: () => ReadinessCheck[] }): Promise<Server & { port: number }> {
  const server = createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET') {
      res.writeHead(405, { allow: 'GET' }).end();
      return;
    }
    if (url === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    if (url === '/readyz') {
      void runReadinessChecks(opts.checks()).then((results) => {
        const ready = results.length > 0 && results.every(([, ok]) => ok);
        res.writeHead(ready ? 200 : 503, { 'content-type': 'application/json' }).end(`${JSON.stringify({ ready, checks: Object.fromEntries(results) })}\n`);
      });
      return;
    }
    if (url === '/metrics') {
      opts.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': opts.registry.contentType }).end(text),
        () => res.writeHead(500).end(),
      );
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  });
  // Slow or stuck clients must not hold the process open at shutdown.
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : opts.port;
  return Object.assign(server, { port });
}
