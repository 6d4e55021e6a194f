/**
 * `npm run dev`: the local system on embedded defaults — the emulator suite with the functions
 * loaded, the operator console (tools/dev/console-dev.ts) and the demo users, and
 * (tools/dev-stack.ts) everything else. Ctrl-C stops it all.
 */
import { execWithEmulators } from './emulators.ts';

// Ctrl-C goes to the console wrapper first, which passes it to the dev stack: it stops the
// reconciler while Firestore is still up.
process.exit(await execWithEmulators('node --import tsx tools/dev/console-dev.ts', { signalCommand: true }));
