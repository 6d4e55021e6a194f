/** `npm run emulators:exec -- "<command>"`: runs a command with the emulator suite up. */
import { execWithEmulators } from './emulators.ts';

const command = process.argv.slice(2).join(' ').trim();
if (!command) {
  console.error('usage: npm run emulators:exec -- "<command>"');
  process.exit(2);
}
process.exit(await execWithEmulators(command));
