import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SimConflictError, SimInputError, SimNotFoundError } from './errors.ts';
import type { ConnectionEventType } from './events.ts';
import type { InjectFaultInput } from './faults.ts';
import type { Simulator } from './simulator.ts';
import type { Addressing, ReceiptDelays } from './world.ts';

const MAX_BODY = 1024 * 1024;

type Params = Record<string, string>;
type Handler = (ctx: { params: Params; query: URLSearchParams; body: () => Promise<Record<string, unknown>> }) => Promise<[number, unknown]> | [number, unknown];

interface Route {
  method: string;
  pattern: RegExp;
  keys: string[];
  handler: Handler;
}

function route(method: string, path: string, handler: Handler): Route {
  const keys: string[] = [];
  const pattern = new RegExp(
    `^${path.replace(/:(\w+)/g, (_m, key: string) => {
      keys.push(key);
      return '([^/]+)';
    })}/?$`,
  );
  return { method, pattern, keys, handler };
}

async function readBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).byteLength;
    if (size > MAX_BODY) throw new SimInputError('body too large');
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (!text) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new SimInputError('body is not valid JSON');
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new SimInputError('body must be a JSON object');
  return parsed as Record<string, unknown>;
}

function str(body: Record<string, unknown>, key: string, required = true): string | undefined {
  const v = body[key];
  if (v === undefined && !required) return undefined;
  if (typeof v !== 'string' || v.length === 0) throw new SimInputError(`${key} must be a non-empty string`);
  return v;
}

function routes(sim: Simulator): Route[] {
  const userRoutes = (prefix: 'phones' | 'contacts', kind: 'phone' | 'contact'): Route[] => [
    route('GET', `/${prefix}`, () => [200, sim.users(kind).map((u) => u.info())]),
    route('POST', `/${prefix}`, async ({ body }) => {
      const b = await body();
      const input = { number: str(b, 'number')!, ...(b['name'] !== undefined ? { name: str(b, 'name')! } : {}) };
      const u =
        kind === 'phone'
          ? sim.createPhone(input)
          : sim.createContact({ ...input, ...(b['receiptDelays'] ? { receiptDelays: b['receiptDelays'] as ReceiptDelays } : {}) });
      return [201, u.info()];
    }),
    route('GET', `/${prefix}/:number`, ({ params }) => [200, sim.user(params['number']!).info()]),
    route('GET', `/${prefix}/:number/messages`, ({ params }) => [200, sim.user(params['number']!).received()]),
    route('GET', `/${prefix}/:number/sent`, ({ params }) => [200, sim.user(params['number']!).sentMessages()]),
    route('POST', `/${prefix}/:number/send`, async ({ params, body }) => {
      const b = await body();
      const id = str(b, 'id', false);
      return [200, await sim.user(params['number']!).sendText(str(b, 'to')!, str(b, 'text')!, id ? { id } : {})];
    }),
    route('POST', `/${prefix}/:number/redeliver`, async ({ params, body }) => [200, await sim.user(params['number']!).redeliver(str(await body(), 'id')!)]),
    route('PUT', `/${prefix}/:number/receipt-delays`, async ({ params, body }) => {
      const b = await body();
      const u = sim.user(params['number']!);
      u.setReceiptDelays(b['default'] === true ? undefined : (b as unknown as ReceiptDelays));
      return [200, u.info()];
    }),
    route('PUT', `/${prefix}/:number/addressing`, async ({ params, body }) => {
      const u = sim.user(params['number']!);
      u.setAddressing(str(await body(), 'mode') as Addressing);
      return [200, u.info()];
    }),
    route('POST', `/${prefix}/:number/scan`, async ({ params, body }) => [200, await sim.user(params['number']!).scanQr(str(await body(), 'qr')!)]),
    route('POST', `/${prefix}/:number/pairing-code`, async ({ params, body }) => [
      200,
      await sim.user(params['number']!).enterPairingCode(str(await body(), 'code')!),
    ]),
    route('GET', `/${prefix}/:number/devices`, ({ params }) => [200, sim.user(params['number']!).linkedDevices()]),
    route('DELETE', `/${prefix}/:number/devices/:deviceJid`, ({ params }) => {
      sim.user(params['number']!).removeDevice(params['deviceJid']!);
      return [200, { removed: params['deviceJid'] }];
    }),
  ];

  return [
    route('GET', '/health', () => [200, { ok: true }]),
    route('GET', '/info', () => [
      200,
      { wsUrl: sim.wsUrl, controlUrl: sim.controlUrl, rootPublicKeyBase64: sim.rootPublicKeyBase64, acceptingConnections: sim.acceptingConnections },
    ]),
    ...userRoutes('phones', 'phone'),
    ...userRoutes('contacts', 'contact'),
    route('GET', '/pairing-requests', ({ query }) => [200, sim.pairingCodeRequests(query.get('number') ?? undefined)]),
    route('GET', '/faults', () => [200, sim.faults()]),
    route('POST', '/faults', async ({ body }) => {
      // The record as injected: immediate faults may already be used up by the time we answer.
      const fault = sim.core.injectFault((await body()) as unknown as InjectFaultInput);
      return [201, { ...fault }];
    }),
    route('DELETE', '/faults', ({ query }) => [200, { cleared: sim.clearFaults(query.get('target') ?? undefined) }]),
    route('DELETE', '/faults/:id', ({ params }) => {
      const n = sim.clearFaults(params['id']!);
      if (n === 0) throw new SimNotFoundError(`no fault ${params['id']}`);
      return [200, { cleared: n }];
    }),
    route('GET', '/stats', () => [200, { global: sim.stats(), devices: sim.deviceStats() }]),
    route('GET', '/stats/:deviceJid', ({ params }) => [200, sim.stats(params['deviceJid']!)]),
    route('GET', '/events', ({ query }) => {
      const since = query.get('since');
      if (since !== null && !/^\d+$/.test(since)) throw new SimInputError('since must be an event seq number');
      return [
        200,
        sim.events({
          ...(query.get('deviceJid') ? { deviceJid: query.get('deviceJid')! } : {}),
          ...(query.get('type') ? { type: query.get('type') as ConnectionEventType } : {}),
          ...(since !== null ? { sinceSeq: Number(since) } : {}),
        }),
      ];
    }),
    route('GET', '/decrypt-errors', () => [200, sim.decryptErrors()]),
    route('PUT', '/receipt-delays', async ({ body }) => [200, sim.setReceiptDelays((await body()) as Partial<ReceiptDelays>)]),
    route('GET', '/client-version-policy', () => [200, sim.clientVersionPolicy()]),
    route('PUT', '/client-version-policy', async ({ body }) => [200, sim.setClientVersionPolicy(await body())]),
    route('POST', '/server', async ({ body }) => {
      const b = await body();
      if (typeof b['accepting'] !== 'boolean') throw new SimInputError('accepting must be a boolean');
      await sim.setAcceptingConnections(b['accepting']);
      return [200, { acceptingConnections: sim.acceptingConnections }];
    }),
  ];
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, null, 2);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** JSON-over-HTTP control API (node:http, no framework); see README for every endpoint. */
export async function startControlApi(sim: Simulator, host: string, port: number): Promise<{ server: Server; url: string }> {
  const table = routes(sim);
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const method = req.method ?? 'GET';
    let pathMatched = false;
    for (const r of table) {
      const m = r.pattern.exec(url.pathname);
      if (!m) continue;
      pathMatched = true;
      if (r.method !== method) continue;
      const params: Params = {};
      r.keys.forEach((k, i) => (params[k] = decodeURIComponent(m[i + 1]!)));
      Promise.resolve()
        .then(() => r.handler({ params, query: url.searchParams, body: () => readBody(req) }))
        .then(([status, body]) => send(res, status, body))
        .catch((err: unknown) => {
          const status = err instanceof SimInputError || err instanceof SimNotFoundError || err instanceof SimConflictError ? err.status : 500;
          send(res, status, { error: err instanceof Error ? err.message : String(err) });
        });
      return;
    }
    send(res, pathMatched ? 405 : 404, { error: pathMatched ? `method ${method} not allowed` : `no route ${url.pathname}` });
  });
  server.requestTimeout = 30_000;
  server.headersTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const h = host.includes(':') ? `[${host}]` : host;
  return { server, url: `http://${h}:${address.port}` };
}
