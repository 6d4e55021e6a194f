/**
 * `npm run emulators:exec -- "<command>"`: runs a command with the emulator suite up.
 * WAFLEET_EMULATORS_ONLY=firestore (a comma-separated list) starts fewer emulators, e.g. for a
 * reconciler test that needs neither Auth nor the callables (and so skips building them).
 */
import { execWithEmulators } from './emulators.ts';

const command = process.argv.slice(2).join(' ').trim();
if (!command) {
  console.error('usage: npm run emulators:exec -- "<command>"');
  process.exit(2);
}
const only = process.env.WAFLEET_EMULATORS_ONLY?.split(',').map((s) => s.trim()).filter(Boolean);
process.exit(await execWithEmulators(command, only?.length ? { only } : {}));
