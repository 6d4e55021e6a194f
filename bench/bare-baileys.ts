/**
 * The baseline of `reconcilerRssMb` (bench/reconciler.bench.ts): N Baileys sockets and nothing
 * else, in a process of their own — Baileys' standard file auth state (useMultiFileAuthState behind
 * makeCacheableSignalKeyStore) and the socket options of the reconciler's session driver.
 *
 *   link <dir> <n>  links n devices: each QR string goes to the parent, whose simulated phones scan
 *                   it; after the 515 restart each logs in once (the first login uploads 812
 *                   pre-keys). On {cmd:'stop'} it closes the sockets, waits for the auth files, exits.
 *   hold <dir> <n>  logs the saved states in, reports {evt:'ready'} when all are open and keeps them
 *                   open until {cmd:'stop'}: what a restarted reconciler holds.
 *
 * Environment: WA_SOCKET_URL, WA_NOISE_ROOT_PUBKEY (the simulator's).
 */
import path from 'node:path';
import makeWASocket, { Browsers, makeCacheableSignalKeyStore, useMultiFileAuthState, WA_CERT_DETAILS, type WASocket } from '@whiskeysockets/baileys';

export type BareEvent = { evt: 'qr'; index: number; qr: string } | { evt: 'open'; index: number } | { evt: 'ready' } | { evt: 'error'; message: string };
export type BareCommand = { cmd: 'stop' };

const [mode, dir, countArg] = process.argv.slice(2);
const count = Number(countArg);
const socketUrl = process.env.WA_SOCKET_URL;
const rootKey = process.env.WA_NOISE_ROOT_PUBKEY;
if ((mode !== 'link' && mode !== 'hold') || !dir || !Number.isInteger(count) || !socketUrl || !rootKey) {
  console.error('usage: WA_SOCKET_URL=… WA_NOISE_ROOT_PUBKEY=… bare-baileys.ts link|hold <dir> <n>');
  process.exit(2);
}
// Loaded directly rather than through @wafleet/wa-sim, so the simulator's code is not in this process's RSS.
WA_CERT_DETAILS.PUBLIC_KEY = Buffer.from(rootKey, 'base64');

const silent = { level: 'silent', child: () => silent, trace() {}, debug() {}, info() {}, warn() {}, error() {}, fatal() {} };
const post = (e: BareEvent) => process.send?.(e);
const sockets: WASocket[] = [];
const saves: Array<Promise<void>> = [];

/** One socket; resolves with the close code, or when it opens if `untilOpen`. */
async function connect(index: number, untilOpen: boolean): Promise<number | 'open'> {
  const { state, saveCreds } = await useMultiFileAuthState(path.join(dir!, String(index)));
  const sock = makeWASocket({
    auth: { creds: state.creds, keys: makeCacheableSignalKeyStore(state.keys, silent as never) },
    logger: silent as never,
    browser: Browsers.ubuntu('wafleet'),
    markOnlineOnConnect: false,
    syncFullHistory: false,
    shouldSyncHistoryMessage: () => false,
    generateHighQualityLinkPreview: false,
    waWebSocketUrl: socketUrl,
  });
  sockets.push(sock);
  sock.ev.on('creds.update', () => void saves.push(saveCreds()));
  return new Promise((resolve) => {
    sock.ev.on('connection.update', (u) => {
      if (u.qr) post({ evt: 'qr', index, qr: u.qr });
      if (u.connection === 'open') {
        post({ evt: 'open', index });
        if (untilOpen) resolve('open');
      }
      if (u.connection === 'close') {
        resolve((u.lastDisconnect?.error as { output?: { statusCode?: number } } | undefined)?.output?.statusCode ?? -1);
      }
    });
  });
}

/**
 * Logs device `index` in, reconnecting after a transient close as any Baileys app does: thirty
 * first logins, each generating 812 pre-keys, can starve a 2-core machine past a socket timeout.
 */
async function login(index: number): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    const result = await connect(index, true);
    if (result === 'open') return;
    if (attempt === 3 || result === 401 || result === 403) throw new Error(`device ${index}: login closed with ${result} (attempt ${attempt})`);
  }
}

async function main(): Promise<void> {
  const indexes = Array.from({ length: count }, (_, i) => i);
  if (mode === 'link') {
    const linked = await Promise.all(
      indexes.map(async (i) => {
        const code = await connect(i, false);
        if (code !== 515) throw new Error(`device ${i}: expected the 515 restart after pairing, got ${code}`);
        return i;
      }),
    );
    // A few first logins at a time (the reconciler paces its logins too).
    const queue = [...linked];
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        for (let i = queue.shift(); i !== undefined; i = queue.shift()) await login(i);
      }),
    );
  } else {
    const opened = await Promise.all(indexes.map((i) => connect(i, true)));
    const failed = opened.filter((o) => o !== 'open');
    if (failed.length) throw new Error(`${failed.length} logins failed: ${failed.join(', ')}`);
  }
  post({ evt: 'ready' });
}

process.on('message', (msg: BareCommand) => {
  if (msg.cmd !== 'stop') return;
  for (const s of sockets) s.end(undefined);
  void Promise.allSettled(saves).then(() => process.exit(0));
});
process.on('disconnect', () => process.exit(0));

main().catch((err: unknown) => {
  post({ evt: 'error', message: err instanceof Error ? err.message : String(err) });
  process.exit(1);
});
