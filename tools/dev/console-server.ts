/**
 * The operator console (console/) for the dev stack and the browser tests: builds it with Vite and
 * serves console/dist the way Firebase Hosting does (SPA fallback to index.html), plus Hosting's
 * reserved /__/firebase/init.json naming the emulator project and, in its extra `emulators` field,
 * where the emulators listen. Production gets init.json from Hosting itself (firebase.json `hosting`).
 * Responses carry the headers of firebase.json `hosting.headers` (the Content-Security-Policy among
 * them), so the dev stack and the browser tests run the console under production's policy.
 */
import { readFile, stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const FIREBASE_JSON = path.join(root, 'firebase.json');
export const CONSOLE_DIR = path.join(root, 'console');
export const CONSOLE_DIST = path.join(CONSOLE_DIR, 'dist');

/** `vite build` of console/ into console/dist. */
export async function buildConsole(): Promise<void> {
  const { build } = await import('vite');
  await build({ configFile: path.join(CONSOLE_DIR, 'vite.config.ts'), logLevel: 'warn' });
}

export interface EmulatorHosts {
  projectId: string;
  /** host:port of each emulator, as in FIREBASE_AUTH_EMULATOR_HOST / FIRESTORE_EMULATOR_HOST. */
  auth: string;
  firestore: string;
  functions: string;
}

/** The emulators as the environment of `emulators:exec` names them. */
export function emulatorHostsFromEnv(env: NodeJS.ProcessEnv = process.env): EmulatorHosts {
  const auth = env.FIREBASE_AUTH_EMULATOR_HOST;
  const firestore = env.FIRESTORE_EMULATOR_HOST;
  const functionsUrl = env.WAFLEET_FUNCTIONS_URL;
  if (!auth || !firestore || !functionsUrl) throw new Error('the console needs the Auth, Firestore and Functions emulators (run inside emulators:exec)');
  return { projectId: env.GCLOUD_PROJECT ?? 'demo-wafleet', auth, firestore, functions: new URL(functionsUrl).host };
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.ico': 'image/x-icon',
};

interface HeaderRule {
  source: string;
  headers: Array<{ key: string; value: string }>;
}

/** Hosting's glob (`**` any path, `*` one segment) as a regular expression over the URL path. */
function globToRegExp(glob: string): RegExp {
  const pattern = glob.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*\*|\*/g, (m) => (m === '**' ? '.*' : '[^/]*'));
  return new RegExp(`^${glob.startsWith('/') || glob.startsWith('**') ? '' : '/'}${pattern}$`);
}

/** firebase.json `hosting.headers`, in order: for a path, every matching rule applies, later ones winning. */
export async function hostingHeaders(file = FIREBASE_JSON): Promise<(urlPath: string) => Record<string, string>> {
  const config = JSON.parse(await readFile(file, 'utf8')) as { hosting?: { headers?: HeaderRule[] } };
  const rules = (config.hosting?.headers ?? []).map((r) => ({ re: globToRegExp(r.source), headers: r.headers }));
  return (urlPath) => {
    const out: Record<string, string> = {};
    for (const r of rules) if (r.re.test(urlPath)) for (const { key, value } of r.headers) out[key.toLowerCase()] = value;
    return out;
  };
}

/**
 * The one difference from production: connect-src also names the emulators this server's init.json
 * points the page at, which production's policy has no business allowing.
 */
export function withEmulatorOrigins(csp: string, origins: string[]): string {
  return csp
    .split(';')
    .map((d) => d.trim())
    .map((d) => (d.startsWith('connect-src ') ? `${d} ${origins.join(' ')}` : d))
    .join('; ');
}

export interface ConsoleServer {
  url: string;
  server: Server;
  close(): Promise<void>;
}

export async function serveConsole(hosts: EmulatorHosts, opts: { port?: number; host?: string } = {}): Promise<ConsoleServer> {
  const host = opts.host ?? '127.0.0.1';
  const init = JSON.stringify({
    projectId: hosts.projectId,
    // The Auth emulator takes any API key; a real project's comes from Hosting's init.json.
    apiKey: 'demo-api-key',
    authDomain: `${hosts.projectId}.firebaseapp.com`,
    emulators: { auth: hosts.auth, firestore: hosts.firestore, functions: hosts.functions },
  });
  const headersFor = await hostingHeaders();
  const emulatorOrigins = [hosts.auth, hosts.firestore, hosts.functions].map((hp) => `http://${hp.replace(/^https?:\/\//, '')}`);
  const policy = (urlPath: string, defaults: Record<string, string>) => {
    const hs = { ...defaults, ...headersFor(urlPath) };
    if (hs['content-security-policy']) hs['content-security-policy'] = withEmulatorOrigins(hs['content-security-policy'], emulatorOrigins);
    return hs;
  };
  const server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/__/firebase/init.json') {
      res.writeHead(200, policy(url.pathname, { 'content-type': 'application/json', 'cache-control': 'no-store' }));
      res.end(init);
      return;
    }
    const rel = path.normalize(decodeURIComponent(url.pathname)).replace(/^(\.\.[/\\])+/, '');
    let file = path.join(CONSOLE_DIST, rel);
    if (!file.startsWith(CONSOLE_DIST)) file = path.join(CONSOLE_DIST, 'index.html');
    const isFile = await stat(file).then((s) => s.isFile(), () => false);
    if (!isFile) file = path.join(CONSOLE_DIST, 'index.html'); // the SPA rewrite
    try {
      const body = await readFile(file);
      const immutable = file.includes(`${path.sep}assets${path.sep}`);
      res.writeHead(200, policy(url.pathname, { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'cache-control': immutable ? 'public, max-age=31536000, immutable' : 'no-cache' }));
      res.end(body);
    } catch {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('console not built: npm run build --workspace console');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `http://${host}:${port}`,
    server,
    close: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}
