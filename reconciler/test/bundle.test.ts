/**
 * The deployable bundle (reconciler/dist/main.js, what the Dockerfile runs) starts with plain Node:
 * no TypeScript workspace import may be left for Node to load at run time.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect, it } from 'vitest';
import { buildReconciler } from '../../tools/build.ts';

it('builds a bundle that plain node runs up to its configuration check', { timeout: 60_000 }, async () => {
  await buildReconciler();
  const dir = mkdtempSync(path.join(tmpdir(), 'wafleet-bundle-'));
  try {
    const r = spawnSync(process.execPath, [path.resolve(import.meta.dirname, '../dist/main.js')], {
      env: { PATH: process.env.PATH, NODE_ENV: 'production', SESSIONS_PATH: dir },
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(r.stderr).toContain('Invalid reconciler configuration');
    expect(r.stderr).toContain('BACKUP_KEY: is required');
    expect(r.status).toBe(2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
