/** Which WhatsApp Web version the fleet announces: start-up resolution and the live override. */
import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { BUNDLED_WA_VERSION, resolveStartupVersion, WaVersionState, type LatestVersionFetcher } from '../src/session/wa-version.ts';

function capture() {
  const lines: Array<{ level: number; msg: string; [k: string]: unknown }> = [];
  const log = pino(
    { level: 'info' },
    new Writable({
      write(chunk, _enc, done) {
        lines.push(JSON.parse(String(chunk)));
        done();
      },
    }),
  );
  return { log, lines };
}

const NEWER = [BUNDLED_WA_VERSION[0], BUNDLED_WA_VERSION[1], BUNDLED_WA_VERSION[2] + 7] as [number, number, number];

describe('resolveStartupVersion', () => {
  it('check off: the bundled version, and no fetch at all', async () => {
    const { log } = capture();
    let fetched = 0;
    const fetcher: LatestVersionFetcher = async () => (fetched++, { version: NEWER, isLatest: true });
    expect(await resolveStartupVersion({ check: 'off', log, fetcher })).toEqual({ version: BUNDLED_WA_VERSION, source: 'bundled' });
    expect(fetched).toBe(0);
  });

  it('check latest: the fetched version', async () => {
    const { log, lines } = capture();
    expect(await resolveStartupVersion({ check: 'latest', log, fetcher: async () => ({ version: NEWER, isLatest: true }) })).toEqual({ version: NEWER, source: 'latest' });
    expect(lines.at(-1)).toMatchObject({ version: NEWER.join('.'), msg: expect.stringContaining('using the current WhatsApp Web version') });
  });

  it.each([
    ['a network error', (async () => Promise.reject(new Error('getaddrinfo ENOTFOUND web.whatsapp.com'))) as LatestVersionFetcher, 'fetching the current WhatsApp Web version failed'],
    ['a page Baileys could not read', (async () => ({ version: NEWER, isLatest: false, error: new Error('no client_revision') })) as LatestVersionFetcher, 'could not read the current WhatsApp Web version'],
    ['a nonsense version', (async () => ({ version: [2, -1, 0.5], isLatest: true })) as unknown as LatestVersionFetcher, 'is not a valid version'],
  ])('check latest with %s: the bundled version, with a warning', async (_what, fetcher, message) => {
    const { log, lines } = capture();
    expect(await resolveStartupVersion({ check: 'latest', log, fetcher })).toEqual({ version: BUNDLED_WA_VERSION, source: 'bundled' });
    expect(lines.at(-1)).toMatchObject({ level: 40, bundled: BUNDLED_WA_VERSION.join('.'), msg: expect.stringContaining(message) });
  });

  it('check latest with a fetch that hangs: the bundled version once the timeout passes, and the fetch is aborted', async () => {
    const { log, lines } = capture();
    let aborted = false;
    const fetcher: LatestVersionFetcher = ({ signal }) =>
      new Promise((_resolve, reject) => {
        signal.addEventListener('abort', () => {
          aborted = true;
          reject(new Error('aborted'));
        });
      });
    const started = Date.now();
    expect(await resolveStartupVersion({ check: 'latest', log, fetcher, timeoutMs: 50 })).toEqual({ version: BUNDLED_WA_VERSION, source: 'bundled' });
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(aborted).toBe(true);
    expect(lines.at(-1)?.msg).toContain('fetching the current WhatsApp Web version failed');
  });
});

describe('WaVersionState', () => {
  it('the override wins while set; clearing it goes back to the start-up version', () => {
    const state = new WaVersionState({ version: BUNDLED_WA_VERSION, source: 'bundled' });
    expect(state.setOverride(NEWER)).toBe(true);
    expect(state.current()).toEqual({ version: NEWER, source: 'override' });
    expect(state.setOverride([...NEWER] as typeof NEWER)).toBe(false);
    expect(state.setOverride(null)).toBe(true);
    expect(state.current()).toEqual({ version: BUNDLED_WA_VERSION, source: 'bundled' });
    // An override equal to the start-up version changes nothing a session announces.
    expect(state.setOverride([...BUNDLED_WA_VERSION] as typeof NEWER)).toBe(false);
  });

  it('a copy: changing the array given does not change the version in use', () => {
    const state = new WaVersionState({ version: BUNDLED_WA_VERSION, source: 'bundled' });
    const v = [...NEWER] as typeof NEWER;
    state.setOverride(v);
    v[2] = 1;
    expect(state.current().version).toEqual(NEWER);
  });

  it('the ClientOutdated incident is resolved by the first open after start and after each 405, not by every open', () => {
    const state = new WaVersionState({ version: BUNDLED_WA_VERSION, source: 'bundled' });
    expect(state.takeResolve()).toBe(true);
    expect(state.takeResolve()).toBe(false);
    state.markOutdated();
    expect(state.takeResolve()).toBe(true);
    expect(state.takeResolve()).toBe(false);
  });
});
