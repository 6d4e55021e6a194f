/**
 * Several reconcilers (issue 13): three child processes with their own disks share 18 accounts
 * (MAX_ACCOUNTS=10 each). One kill -9 per round, of the instance holding the most accounts; the
 * figure is kill → every one of its accounts connected on another instance, minus LEASE_TTL_MS
 * (the wait that is the lease's by design): what placement, restore from the backup and the
 * connect governors cost. The killed instance is started again on its disk between rounds.
 *
 * Before those, drains (issue 13 item 5): one round per instance, the one holding the most accounts is
 * drained (drainRequestedAt, as the drainInstance callable writes it) and un-drained once empty.
 * `drainAllMovedMs`: request → every one of its accounts connected elsewhere. `handoverMs`: per
 * account, the simulator's close of the giver's connection → the receiver's login: the time the
 * account is offline.
 */
import { appendFileSync } from 'node:fs';
import path from 'node:path';
import type { Firestore } from 'firebase-admin/firestore';
import { Timestamp } from 'firebase-admin/firestore';
import { freePort } from '../tools/dev/ports.ts';
import { spawnReconciler, type ReconcilerProcess } from '../tools/dev/reconciler-process.ts';
import { waitFor } from '../wa-sim/src/index.ts';
import { type BenchSuite, type Figure, median, percentile, reconcilerEnv, withBenchEnvironment } from './suite.ts';

const ACCOUNTS = Number(process.env.FLEET_BENCH_ACCOUNTS ?? 18);
const ROUNDS = Number(process.env.FLEET_BENCH_ROUNDS ?? 3);
const TTL_MS = 10_000;
const INSTANCES = ['vm-a', 'vm-b', 'vm-c'];

async function holders(db: Firestore): Promise<Map<string, string>> {
  const snap = await db.collection('leases').get();
  return new Map(snap.docs.filter((d) => d.get('holder')).map((d) => [d.id, d.get('holder') as string]));
}

async function connectedSince(db: Firestore, ids: string[], since: number, on: string[]): Promise<boolean> {
  const [statuses, lease] = await Promise.all([db.collection('accountStatus').get(), holders(db)]);
  return ids.every((id) => {
    const s = statuses.docs.find((d) => d.id === id);
    return s?.get('phase') === 'connected' && ((s.get('lastConnectedAt') as Timestamp | null)?.toMillis() ?? 0) >= since && on.includes(lease.get(id) ?? '');
  });
}

export const fleetBench: BenchSuite = {
  name: 'fleet',
  needsEmulators: true,
  run: () =>
    withBenchEnvironment('fleet', INSTANCES.length, async ({ db, projectId, sim, dirs }) => {
      const running = new Map<string, ReconcilerProcess>();
      const start = async (i: number) => {
        // FLEET_BENCH_LOG_DIR: each instance's log (at info) in a file there, to explain a slow figure.
        const logDir = process.env.FLEET_BENCH_LOG_DIR;
        const env = reconcilerEnv({ projectId, sim, sessionsPath: dirs[i]!, httpPort: await freePort(), extra: { INSTANCE_ID: INSTANCES[i], MAX_ACCOUNTS: '10', LEASE_TTL_MS: String(TTL_MS), LEASE_RENEW_MS: '2000', ...(logDir ? { LOG_LEVEL: 'info' } : {}) } });
        const onLine = logDir ? (line: string) => appendFileSync(path.join(logDir, `${INSTANCES[i]}.log`), `${line}\n`) : undefined;
        running.set(INSTANCES[i]!, spawnReconciler({ env, ...(onLine ? { onLine } : {}) }));
      };
      try {
        for (let i = 0; i < INSTANCES.length; i++) await start(i);
        const ids = Array.from({ length: ACCOUNTS }, (_, i) => `fb-${String(i + 1).padStart(2, '0')}`);
        const now = Timestamp.now();
        await Promise.all(ids.map((id) => db.doc(`accounts/${id}`).set({ displayName: id, desiredState: 'connected', createdAt: now, updatedAt: now, updatedBy: 'bench' })));
        await Promise.all(
          ids.map(async (id, i) => {
            const qr = await waitFor(async () => (await db.doc(`accountQr/${id}`).get()).get('qr') as string | undefined, { timeoutMs: 120_000, intervalMs: 200 });
            await sim.createPhone({ number: `1555002${String(i).padStart(4, '0')}` }).scanQr(qr);
          }),
        );
        await waitFor(() => connectedSince(db, ids, 0, INSTANCES), { timeoutMs: 180_000, intervalMs: 250 });
        const spread = [...(await holders(db)).values()].reduce<Record<string, number>>((m, h) => ((m[h] = (m[h] ?? 0) + 1), m), {});
        process.stdout.write(`   linked ${ACCOUNTS} accounts over ${INSTANCES.length} instances: ${JSON.stringify(spread)}\n`);

        // ---- drains, first: after a kill -9 the dead process's open transactions lock the leases
        // they touched for about a minute (the emulator's lock timeout), which a handover would wait out
        const phoneOf = (id: string) => `1555002${String(ids.indexOf(id)).padStart(4, '0')}`;
        const drains: number[] = [];
        const gaps: number[] = [];
        for (let round = 0; round < INSTANCES.length; round++) {
          const before = await holders(db);
          const counts = [...before.values()].reduce<Record<string, number>>((m, h) => ((m[h] = (m[h] ?? 0) + 1), m), {});
          const target = Object.entries(counts).sort((a, b) => b[1] - a[1])[0]![0];
          const theirs = [...before.entries()].filter(([, h]) => h === target).map(([id]) => id);
          const others = INSTANCES.filter((i) => i !== target);
          const at = Date.now();
          await db.doc(`reconcilers/${target}`).update({ drainRequestedAt: Timestamp.now() });
          await waitFor(() => connectedSince(db, theirs, at, others), { timeoutMs: 180_000, intervalMs: 100 }).catch((err: Error) => {
            throw new Error(`${err.message}: draining ${target}\n${INSTANCES.map((o) => `--- ${o}\n${running.get(o)!.tail(30)}`).join('\n')}`);
          });
          drains.push(Date.now() - at);
          for (const id of theirs) {
            const device = `${phoneOf(id)}:`;
            const closed = sim.events({ type: 'close' }).find((e) => e.at >= at && e.deviceJid?.startsWith(device));
            const login = closed && sim.events({ type: 'login' }).find((e) => e.at >= closed.at && e.deviceJid?.startsWith(device));
            if (closed && login) gaps.push(login.at - closed.at);
          }
          process.stdout.write(`   drain ${round + 1}: ${target} (${theirs.length} accounts) → all connected elsewhere in ${drains.at(-1)} ms\n`);
          await db.doc(`reconcilers/${target}`).update({ drainRequestedAt: null });
        }

        const failover: number[] = [];
        const moved: number[] = [];
        for (let round = 0; round < ROUNDS; round++) {
          const before = await holders(db);
          const counts = [...before.values()].reduce<Record<string, number>>((m, h) => ((m[h] = (m[h] ?? 0) + 1), m), {});
          const victim = Object.entries(counts).sort((a, b) => b[1] - a[1])[0]![0];
          const theirs = [...before.entries()].filter(([, h]) => h === victim).map(([id]) => id);
          const others = INSTANCES.filter((i) => i !== victim);
          // A kill right after linking can beat the first backup: nothing to restore from then.
          await waitFor(async () => (await Promise.all(theirs.map((id) => db.doc(`sessionBackups/${id}`).get()))).every((d) => d.get('linked') === true), { timeoutMs: 60_000, intervalMs: 250 });
          const killedAt = Date.now();
          running.get(victim)!.child.kill('SIGKILL');
          await running.get(victim)!.exited;
          await waitFor(() => connectedSince(db, theirs, killedAt, others), { timeoutMs: 180_000, intervalMs: 100 }).catch(async (err: Error) => {
            const [statuses, lease] = await Promise.all([db.collection('accountStatus').get(), holders(db)]);
            const state = theirs.map((id) => {
              const s = statuses.docs.find((d) => d.id === id);
              return `${id}:${s?.get('phase')}/${s?.get('reason')}@${lease.get(id) ?? '-'}`;
            });
            throw new Error(`${err.message}: ${victim}'s accounts after the kill: ${state.join(' ')}\n${others.map((o) => `--- ${o}\n${running.get(o)!.tail(30)}`).join('\n')}`);
          });
          failover.push(Date.now() - killedAt - TTL_MS);
          moved.push(theirs.length);
          process.stdout.write(`   round ${round + 1}: killed ${victim} (${theirs.length} accounts) → all connected elsewhere ${Date.now() - killedAt} ms after the kill\n`);
          await start(INSTANCES.indexOf(victim));
          await waitFor(async () => (await db.doc(`reconcilers/${victim}`).get()).get('stoppedAt') === null && (await db.doc(`reconcilers/${victim}`).get()).get('slotsUsed') !== undefined, { timeoutMs: 60_000, intervalMs: 500 });
        }
        const figures: Record<string, Figure> = {
          drainAllMovedMs: {
            value: Math.round(median(drains)),
            note: `drainRequestedAt → every account of the drained instance connected on another; median of ${drains.length} drains (${drains.join(', ')} ms), 3 handovers per round`,
          },
          handoverMsP50: { value: Math.round(percentile(gaps, 50)), note: `per account, the giver's connection closed → the receiver's login (the simulator's clock): the time offline; ${gaps.length} handovers in drains` },
          handoverMsP99: { value: Math.round(percentile(gaps, 99)), note: `as handoverMsP50; max ${Math.round(Math.max(...gaps))} ms` },
          failoverAllConnectedMs: {
            value: Math.round(median(failover)),
            note: `kill -9 → every account of the killed instance connected on another, minus LEASE_TTL_MS (${TTL_MS}); median of ${ROUNDS} rounds (${failover.map((v) => Math.round(v)).join(', ')} ms; ${moved.join(', ')} accounts moved); ${ACCOUNTS} accounts on 3 instances, MAX_ACCOUNTS 10`,
          },
        };
        return figures;
      } finally {
        await Promise.all([...running.values()].map((p) => p.stop(20_000)));
      }
    }),
};
