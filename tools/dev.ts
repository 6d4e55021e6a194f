/**
 * `npm run dev`: the local system on embedded defaults — the emulator suite with the functions
 * loaded, a demo admin user, and (tools/dev-stack.ts) everything else. Ctrl-C stops it all.
 */
import { execWithEmulators } from './emulators.ts';

// Ctrl-C goes to the dev stack first: it stops the reconciler while Firestore is still up.
process.exit(await execWithEmulators('node --import tsx tools/dev-stack.ts', { signalCommand: true }));
