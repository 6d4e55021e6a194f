/**
 * Issue 11 item 4: what /metrics exports. The heartbeat age is measured at scrape time (its
 * source, a real heartbeat against the emulator, is tested in heartbeat.test.ts), Node's
 * default metrics keep their standard names, `wafleet_build_info` names what runs, and the
 * readiness checks are exported as `wafleet_ready`.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { createMetrics, type FleetView } from '../src/metrics.ts';

const view: FleetView = { phases: () => ['connected', 'connected', 'banned'], leasesHeld: () => 3, heartbeatLastSuccessAt: () => 0 };

/** The value of one sample in the text format, e.g. `wafleet_ready` or `wafleet_sessions{phase="banned"}`. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

function metricNames(text: string): string[] {
  return text
    .split('\n')
    .filter((l) => l.startsWith('# TYPE '))
    .map((l) => l.split(' ')[2]!);
}

describe('default metrics', () => {
  it('keep their standard names, with no wafleet_process_ prefix', async () => {
    const text = await createMetrics(view).registry.metrics();
    const names = metricNames(text);
    for (const standard of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'process_start_time_seconds', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_seconds', 'nodejs_version_info']) {
      expect(names).toContain(standard);
    }
    expect(text).not.toMatch(/wafleet_process_/);
    // Everything else is ours.
    expect(names.filter((n) => !/^(process|nodejs)_/.test(n) && !n.startsWith('wafleet_'))).toEqual([]);
  });

  it('can be served from two registries in one process (two apps in a test)', async () => {
    const a = await createMetrics(view).registry.metrics();
    const b = await createMetrics(view).registry.metrics();
    expect(metricNames(a)).toEqual(metricNames(b));
  });
});

describe('wafleet_build_info', () => {
  it('is 1, labelled with the reconciler, Node and Baileys versions actually installed', async () => {
    const read = (rel: string) => (JSON.parse(readFileSync(fileURLToPath(new URL(rel, import.meta.url)), 'utf8')) as { version: string }).version;
    const version = read('../package.json');
    const baileys = read('../../node_modules/@whiskeysockets/baileys/package.json');
    expect(version).toMatch(/^\d+\.\d+\.\d+/);
    expect(baileys).toMatch(/^\d+\.\d+\.\d+/);
    const text = await createMetrics(view).registry.metrics();
    expect(sample(text, `wafleet_build_info{version="${version}",node="${process.versions.node}",baileys="${baileys}"}`)).toBe(1);
  });
});

describe('wafleet_heartbeat_age_seconds', () => {
  it('is measured at scrape time from the last successful heartbeat', async () => {
    let now = 1_700_000_000_000;
    let last = now - 5_000;
    const m = createMetrics({ ...view, heartbeatLastSuccessAt: () => last }, { now: () => now });
    expect(sample(await m.registry.metrics(), 'wafleet_heartbeat_age_seconds')).toBe(5);
    now += 37_500;
    expect(sample(await m.registry.metrics(), 'wafleet_heartbeat_age_seconds')).toBe(42.5);
    last = now - 1_000;
    expect(sample(await m.registry.metrics(), 'wafleet_heartbeat_age_seconds')).toBe(1);
  });

  it('counts from the process start before the first successful beat', async () => {
    const m = createMetrics({ ...view, heartbeatLastSuccessAt: () => 0 }, { now: () => performance.timeOrigin + 90_000 });
    expect(sample(await m.registry.metrics(), 'wafleet_heartbeat_age_seconds')).toBeCloseTo(90, 2);
  });
});

describe('readiness', () => {
  it('is not exported until the checks are wired (an unset gauge would read 0, "not ready")', async () => {
    const text = await createMetrics(view).registry.metrics();
    expect(metricNames(text)).not.toContain('wafleet_ready');
    expect(metricNames(text)).not.toContain('wafleet_readiness_check');
  });

  it('exports /readyz: 1 when every check passes, 0 when one fails or throws, each check by name', async () => {
    const m = createMetrics(view);
    let firestore = false;
    const checks = () => [
      { name: 'booted', check: () => true },
      { name: 'firestore', check: async () => firestore },
      {
        name: 'storage',
        check: (): boolean => {
          throw new Error('EACCES');
        },
      },
    ];
    expect(m.readiness(checks)).toBe(checks);
    let text = await m.registry.metrics();
    expect(sample(text, 'wafleet_ready')).toBe(0);
    expect(sample(text, 'wafleet_readiness_check{check="booted"}')).toBe(1);
    expect(sample(text, 'wafleet_readiness_check{check="firestore"}')).toBe(0);
    expect(sample(text, 'wafleet_readiness_check{check="storage"}')).toBe(0);

    firestore = true;
    const m2 = createMetrics(view);
    m2.readiness(() => checks().filter((c) => c.name !== 'storage'));
    text = await m2.registry.metrics();
    expect(sample(text, 'wafleet_ready')).toBe(1);
    expect(sample(text, 'wafleet_readiness_check{check="firestore"}')).toBe(1);
    expect(text).not.toContain('check="storage"');
  });

  it('evaluates the checks once per scrape, so wafleet_ready agrees with the checks it reports', async () => {
    const m = createMetrics(view);
    let calls = 0;
    m.readiness(() => [{ name: 'flips', check: () => ++calls % 2 === 1 }]);
    for (let scrape = 1; scrape <= 4; scrape++) {
      const text = await m.registry.metrics();
      expect(calls).toBe(scrape);
      const ok = scrape % 2 === 1 ? 1 : 0;
      expect(sample(text, 'wafleet_readiness_check{check="flips"}')).toBe(ok);
      expect(sample(text, 'wafleet_ready')).toBe(ok);
    }
  });

  it('reports no checks as not ready, like /readyz', async () => {
    const m = createMetrics(view);
    m.readiness(() => []);
    expect(sample(await m.registry.metrics(), 'wafleet_ready')).toBe(0);
  });
});

describe('fleet metrics', () => {
  it('count owned accounts by phase, every phase present', async () => {
    const text = await createMetrics(view).registry.metrics();
    expect(sample(text, 'wafleet_sessions{phase="connected"}')).toBe(2);
    expect(sample(text, 'wafleet_sessions{phase="banned"}')).toBe(1);
    expect(sample(text, 'wafleet_sessions{phase="needsLink"}')).toBe(0);
    expect(sample(text, 'wafleet_leases_held')).toBe(3);
  });
});

describe('wafleet_disconnects_total', () => {
  it('starts at 0 for the closes that alerts count (logged out, banned, 405), so the first one shows as an increase', async () => {
    const m = createMetrics(view);
    let text = await m.registry.metrics();
    expect(sample(text, 'wafleet_disconnects_total{code="401",reason="LoggedOut"}')).toBe(0);
    expect(sample(text, 'wafleet_disconnects_total{code="403",reason="Banned"}')).toBe(0);
    expect(sample(text, 'wafleet_disconnects_total{code="405",reason="ClientOutdated"}')).toBe(0);
    m.disconnect(405, 'ClientOutdated');
    text = await m.registry.metrics();
    expect(sample(text, 'wafleet_disconnects_total{code="405",reason="ClientOutdated"}')).toBe(1);
  });
});
