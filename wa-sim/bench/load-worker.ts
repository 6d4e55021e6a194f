/**
 * Load generator for the simulator benchmark (bench/sim.bench.ts), run as a child process so
 * Baileys' own CPU cost does not share a core with the simulator being measured.
 * Speaks a tiny IPC protocol: link → login → send (repeatable) → relogin → stop.
 */
import { randomBytes } from 'node:crypto';
import { type AuthenticationState, type BinaryNode, encodeSignedDeviceIdentity, encodeWAMessage, jidDecode, proto } from '@whiskeysockets/baileys';
import { connectClient, memoryAuthState, type SimClient, trustSimulatorRoot } from '../src/index.ts';
import { startCpuProfile } from './cpu-profile.ts';

export type WorkerCommand =
  | { cmd: 'init'; wsUrl: string; rootKeyBase64: string }
  | { cmd: 'link'; count: number }
  | { cmd: 'login' }
  | { cmd: 'relogin' }
  | { cmd: 'send'; perSession: number; to: string[]; window: number; runId: string }
  | { cmd: 'prepare'; perSession: number; to: string[]; runId: string }
  | { cmd: 'blast'; window: number; runId: string }
  | { cmd: 'stop' };

export type WorkerEvent =
  | { evt: 'ready' }
  | { evt: 'qr'; index: number; qr: string }
  | { evt: 'linked'; ms: number }
  | { evt: 'loggedIn'; ms: number; open: number }
  | { evt: 'sent'; ms: number; sent: number; errors: number; firstError?: string; cpuMs: number }
  | { evt: 'prepared'; ms: number; stanzas: number; cpuMs: number }
  | { evt: 'error'; message: string };

const TIMEOUTS = { keepAliveIntervalMs: 30_000, connectTimeoutMs: 20_000, defaultQueryTimeoutMs: 20_000, qrTimeout: 20_000 };
// The benchmark measures the server; the sender's own upsert events are not needed.
const EXTRA = { emitOwnEvents: false };

let wsUrl = '';
const auths: AuthenticationState[] = [];
let clients: SimClient[] = [];
/** Per session, message stanzas built ahead of a timed run (see 'prepare'). */
let prepared: BinaryNode[][] = [];

/**
 * Builds the stanza Baileys' relayMessage would send for a 1:1 text, encrypting with the socket's
 * own Signal repository (real ciphertexts, in chain order), for the contact and for the
 * account's phone (device-sent copy). Sending these later isolates the simulator's cost from
 * Baileys' per-message overhead.
 */
async function buildStanza(c: SimClient, to: string, id: string, text: string): Promise<BinaryNode> {
  const creds = c.auth.creds;
  const me = jidDecode(creds.me!.id)!;
  const ownPhone = `${me.user}@s.whatsapp.net`;
  const message: proto.IMessage = { extendedTextMessage: { text }, messageContextInfo: { messageSecret: randomBytes(32) } };
  const toContact = await c.sock.signalRepository.encryptMessage({ jid: to, data: encodeWAMessage(message) });
  const toPhone = await c.sock.signalRepository.encryptMessage({
    jid: ownPhone,
    data: encodeWAMessage({ deviceSentMessage: { destinationJid: to, message } }),
  });
  const participant = (jid: string, enc: { type: string; ciphertext: Uint8Array }): BinaryNode => ({
    tag: 'to',
    attrs: { jid },
    content: [{ tag: 'enc', attrs: { v: '2', type: enc.type }, content: enc.ciphertext }],
  });
  const content: BinaryNode[] = [{ tag: 'participants', attrs: {}, content: [participant(to, toContact), participant(ownPhone, toPhone)] }];
  if (toContact.type === 'pkmsg' || toPhone.type === 'pkmsg') {
    content.push({ tag: 'device-identity', attrs: {}, content: encodeSignedDeviceIdentity(creds.account!, true) });
  }
  return { tag: 'message', attrs: { id, to, type: 'text' }, content };
}

function describe(c: SimClient): string {
  const ws = c.sock.ws as unknown as { isOpen: boolean; isClosing: boolean; isClosed: boolean };
  return `connection=${c.connection()} closeCode=${c.closeCode()} open=${ws.isOpen} closing=${ws.isClosing} closed=${ws.isClosed}`;
}

function post(e: WorkerEvent): void {
  process.send?.(e);
}

async function loginAll(): Promise<number> {
  const started = performance.now();
  clients = auths.map((auth) => connectClient(wsUrl, auth, { ...TIMEOUTS, extra: EXTRA }));
  await Promise.all(clients.map((c) => c.waitForOpen(120_000)));
  return performance.now() - started;
}

async function endAll(): Promise<void> {
  await Promise.all(clients.map((c) => c.end()));
  clients = [];
}

async function handle(msg: WorkerCommand): Promise<void> {
  switch (msg.cmd) {
    case 'init':
      wsUrl = msg.wsUrl;
      trustSimulatorRoot(msg.rootKeyBase64);
      post({ evt: 'ready' });
      return;
    case 'link': {
      const started = performance.now();
      const linking = Array.from({ length: msg.count }, async (_, index) => {
        const auth = memoryAuthState();
        const c = connectClient(wsUrl, auth, TIMEOUTS);
        post({ evt: 'qr', index, qr: await c.waitForQr(30_000) });
        const code = await c.waitForClose(60_000);
        if (code !== 515) throw new Error(`link ${index}: expected 515, got ${code}`);
        auths[index] = auth;
      });
      await Promise.all(linking);
      post({ evt: 'linked', ms: performance.now() - started });
      return;
    }
    case 'login': {
      const ms = await loginAll();
      post({ evt: 'loggedIn', ms, open: clients.filter((c) => c.connection() === 'open').length });
      return;
    }
    case 'relogin': {
      await endAll();
      const ms = await loginAll();
      post({ evt: 'loggedIn', ms, open: clients.filter((c) => c.connection() === 'open').length });
      return;
    }
    case 'send': {
      const profile = await startCpuProfile();
      const cpu = process.cpuUsage();
      const started = performance.now();
      let sent = 0;
      let errors = 0;
      let firstError: string | undefined;
      await Promise.all(
        clients.map(async (c, i) => {
          const to = msg.to[i % msg.to.length]!;
          let next = 0;
          // A small window per session keeps several messages in flight, as a busy account would.
          const lanes = Array.from({ length: msg.window }, async () => {
            while (next < msg.perSession) {
              const n = next++;
              try {
                await c.sock.sendMessage(to, { text: `bench ${msg.runId} ${i} ${n}` }, { messageId: `B${msg.runId}S${i}N${n}` });
                sent++;
              } catch (err) {
                errors++;
                firstError ??= `${err instanceof Error ? err.message : String(err)} (session ${i}: ${describe(c)})`;
              }
            }
          });
          await Promise.all(lanes);
        }),
      );
      const used = process.cpuUsage(cpu);
      await profile?.(`send-${msg.runId}`);
      post({ evt: 'sent', ms: performance.now() - started, sent, errors, ...(firstError ? { firstError } : {}), cpuMs: (used.user + used.system) / 1000 });
      return;
    }
    case 'prepare': {
      const cpu = process.cpuUsage();
      const started = performance.now();
      prepared = await Promise.all(
        clients.map(async (c, i) => {
          const to = msg.to[i % msg.to.length]!;
          const out: BinaryNode[] = [];
          for (let n = 0; n < msg.perSession; n++) {
            out.push(await buildStanza(c, to, `P${msg.runId}S${i}N${n}`, `bench ${msg.runId} ${i} ${n}`));
            // Encryption is a chain of already-resolved promises; without yielding, socket I/O
            // (keep-alive replies) starves and Baileys declares the connections lost.
            await new Promise((resolve) => setImmediate(resolve));
          }
          return out;
        }),
      );
      const used = process.cpuUsage(cpu);
      post({ evt: 'prepared', ms: performance.now() - started, stanzas: prepared.flat().length, cpuMs: (used.user + used.system) / 1000 });
      return;
    }
    case 'blast': {
      const cpu = process.cpuUsage();
      const started = performance.now();
      let sent = 0;
      let errors = 0;
      let firstError: string | undefined;
      await Promise.all(
        clients.map(async (c, i) => {
          const queue = prepared[i] ?? [];
          let next = 0;
          const lanes = Array.from({ length: msg.window }, async () => {
            while (next < queue.length) {
              const node = queue[next++]!;
              try {
                await c.sock.sendNode(node);
                sent++;
              } catch (err) {
                errors++;
                firstError ??= `${err instanceof Error ? err.message : String(err)} (session ${i}: ${describe(c)})`;
              }
            }
          });
          await Promise.all(lanes);
        }),
      );
      prepared = [];
      const used = process.cpuUsage(cpu);
      post({ evt: 'sent', ms: performance.now() - started, sent, errors, ...(firstError ? { firstError } : {}), cpuMs: (used.user + used.system) / 1000 });
      return;
    }
    case 'stop':
      await endAll();
      process.exit(0);
  }
}


console.info = () => {};
console.warn = () => {};
process.on('message', (msg: WorkerCommand) => {
  handle(msg).catch((err: unknown) => post({ evt: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) }));
});
process.on('disconnect', () => process.exit(0));
