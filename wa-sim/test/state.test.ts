import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { linkWithQr, loginClient, type Simulator, startSimulator, trustSimulatorRoot, waitFor } from '../src/index.ts';
import { writeJsonAtomic } from '../src/state-file.ts';
import { freshNumber, quietSignalLogs } from './helpers.ts';

let dir: string;
beforeAll(async () => {
  quietSignalLogs();
  dir = await mkdtemp(path.join(os.tmpdir(), 'wa-sim-state-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function withSim<T>(stateFile: string, fn: (sim: Simulator) => Promise<T>): Promise<T> {
  const sim = await startSimulator({ stateFile, receiptDelays: { deliveredMs: 0, readMs: null } });
  const restore = trustSimulatorRoot(sim.rootPublicKey);
  try {
    return await fn(sim);
  } finally {
    restore();
    await sim.stop();
  }
}

describe('state file', () => {
  it('a restarted simulator keeps its root key, phones, linked devices, contacts and Signal sessions', async () => {
    const stateFile = path.join(dir, 'sim.json');
    const phoneNumber = freshNumber();
    const contactNumber = freshNumber();
    const first = await withSim(stateFile, async (sim) => {
      const phone = sim.createPhone({ number: phoneNumber });
      const contact = sim.createContact({ number: contactNumber, name: 'Bob' });
      const { auth, deviceJid } = await linkWithQr(sim, phone);
      const session = await loginClient(sim, auth);
      await session.sock.sendMessage(contact.jid, { text: 'before restart' }, { messageId: 'R-1' });
      await waitFor(() => contact.received().some((m) => m.id === 'R-1'), { timeoutMs: 5_000 });
      await session.end();
      return { auth, deviceJid, root: sim.rootPublicKeyBase64 };
    });

    const saved = JSON.parse(await readFile(stateFile, 'utf8')) as { version: number };
    expect(saved.version).toBe(1);

    await withSim(stateFile, async (sim) => {
      expect(sim.rootPublicKeyBase64).toBe(first.root);
      const phone = sim.phone(phoneNumber);
      const contact = sim.contact(contactNumber);
      expect(phone.linkedDevices().map((d) => d.deviceJid)).toEqual([first.deviceJid]);
      expect(phone.linkedDevices()[0]!.uploadedPreKeys).toBeGreaterThan(0);
      expect(contact.name).toBe('Bob');
      // Login with the stored creds works against the restarted server (same root, same device record).
      const session = await loginClient(sim, first.auth);
      expect(sim.stats(first.deviceJid).logins).toBe(1);
      // Sessions survived on both sides: messages flow both ways.
      await session.sock.sendMessage(contact.jid, { text: 'after restart' }, { messageId: 'R-2' });
      await waitFor(() => contact.received().some((m) => m.id === 'R-2' && m.text === 'after restart'), { timeoutMs: 5_000 });
      const { id } = await contact.sendText(phoneNumber, 'welcome back');
      await waitFor(() => session.inbound(id).length === 1, { timeoutMs: 5_000 });
      expect(sim.decryptErrors()).toEqual([]);
      await session.end();
    });
  });

  it('writes atomically: no temp files are left behind and the file is always complete JSON', async () => {
    const file = path.join(dir, 'atomic.json');
    await Promise.all(Array.from({ length: 10 }, (_, i) => writeJsonAtomic(file, { i, pad: 'x'.repeat(10_000) })));
    const parsed = JSON.parse(await readFile(file, 'utf8')) as { i: number };
    expect(parsed.i).toBeGreaterThanOrEqual(0);
    expect((await readdir(dir)).filter((f) => f.includes('atomic'))).toEqual(['atomic.json']);
  });
});
