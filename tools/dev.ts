/**
 * `npm run dev`: the local system on embedded defaults — the emulator suite with the functions
 * loaded, a demo admin user, and (tools/dev-stack.ts) everything else. Ctrl-C stops it all.
 */
import { execWithEmulators } from './emulators.ts';

process.exit(await execWithEmulators('node --import tsx tools/dev-stack.ts'));
