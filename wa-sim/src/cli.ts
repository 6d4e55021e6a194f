/**
 * Standalone simulator: `npm run sim`. Configuration by environment:
 *   WA_SIM_HOST (127.0.0.1), WA_SIM_PORT (7733), WA_SIM_CONTROL_PORT (7734),
 *   WA_SIM_STATE_FILE (.sessions/wa-sim-state.json; "" for in-memory only),
 *   WA_SIM_DELIVERED_MS (0), WA_SIM_READ_MS ("" = never read).
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { startSimulator } from './simulator.ts';

function intEnv(name: string, fallback: number | null): number | null {
  const raw = process.env[name];
  if (raw === undefined) return fallback;
  if (raw === '') return null;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got ${JSON.stringify(raw)}`);
  return n;
}

async function main(): Promise<void> {
  const stateFile = process.env['WA_SIM_STATE_FILE'] ?? path.join('.sessions', 'wa-sim-state.json');
  if (stateFile) await mkdir(path.dirname(path.resolve(stateFile)), { recursive: true });
  const sim = await startSimulator({
    host: process.env['WA_SIM_HOST'] ?? '127.0.0.1',
    port: intEnv('WA_SIM_PORT', 7733) ?? 0,
    controlPort: intEnv('WA_SIM_CONTROL_PORT', 7734) ?? 0,
    ...(stateFile ? { stateFile } : {}),
    receiptDelays: { deliveredMs: intEnv('WA_SIM_DELIVERED_MS', 0), readMs: intEnv('WA_SIM_READ_MS', null) },
  });
  // libsignal reports every session change on console.info; only the simulator's lines matter here.
  console.info = () => {};
  process.stdout.write(
    [
      'wa-sim: local WhatsApp protocol simulator',
      `  WebSocket URL:   ${sim.wsUrl}`,
      `  control API:     ${sim.controlUrl}`,
      `  root public key: ${sim.rootPublicKeyBase64}`,
      `  state file:      ${stateFile ? path.resolve(stateFile) : '(none, in memory)'}`,
      '',
      'For the reconciler:',
      `  WA_SOCKET_URL=${sim.wsUrl}`,
      `  WA_NOISE_ROOT_PUBKEY=${sim.rootPublicKeyBase64}`,
      '',
    ].join('\n'),
  );
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.stdout.write(`\nwa-sim: ${signal}, stopping\n`);
    sim.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        console.error(err);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
