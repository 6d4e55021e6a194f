// Installs the workspace's dependencies when they are missing or older than the lockfile,
// so `npm test`, `npm run dev` and friends work on a fresh clone. Plain Node, no dependencies:
// it must run before anything is installed.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const lock = path.join(root, 'package-lock.json');
const stamp = path.join(root, 'node_modules', '.wafleet-install-stamp');

const wanted = createHash('sha256').update(readFileSync(lock)).digest('hex');
const have = existsSync(stamp) ? readFileSync(stamp, 'utf8').trim() : '';
if (have !== wanted) {
  // A fresh clone gets exactly the lockfile (npm ci). An existing tree is brought up to date in
  // place: npm ci would first delete node_modules under anything else running from it.
  const fresh = !existsSync(path.join(root, 'node_modules'));
  const args = fresh ? ['ci', '--no-audit', '--no-fund'] : ['install', '--no-audit', '--no-fund'];
  console.log(`[wafleet] installing dependencies (npm ${args[0]})…`);
  const r = spawnSync('npm', args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`[wafleet] npm ${args[0]} failed; see the output above.`);
    process.exit(r.status ?? 1);
  }
  mkdirSync(path.dirname(stamp), { recursive: true });
  writeFileSync(stamp, `${wanted}\n`);
}
