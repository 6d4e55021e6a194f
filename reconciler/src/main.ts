/**
 * The reconciler process. Exit codes: 0 after a graceful stop, 1 on a failure or a forced stop,
 * 2 on invalid configuration (the message says which variable and how to fix it).
 */
import { ReconcilerApp, VERSION } from './app.ts';
import { ConfigError, configSummary, loadConfig } from './config.ts';
import { createLogger, routeConsoleToLogger } from './log.ts';
import { trustNoiseRoot } from './session/noise-root.ts';

let config;
try {
  config = await loadConfig();
} catch (err) {
  if (err instanceof ConfigError) {
    console.error(err.message);
    process.exit(2);
  }
  throw err;
}

// Against the emulator there are no Google credentials to find: skip the metadata-server probe,
// which otherwise delays the first Firestore call by seconds.
if (config.firestore.emulatorHost) process.env.METADATA_SERVER_DETECTION ??= 'none';

const log = createLogger({ level: config.logLevel, service: { service: 'wafleet-reconciler', version: VERSION } });
// libsignal prints session keys with console.info; from here on the console goes through the scrubber.
routeConsoleToLogger(log);
for (const warning of config.warnings) log.warn(warning);
log.info({ config: configSummary(config) }, 'configuration');
if (config.waSimulator) {
  log.warn({ socketUrl: config.waSimulator.socketUrl }, 'connecting to a WhatsApp SIMULATOR, not WhatsApp');
  trustNoiseRoot(config.waSimulator.noiseRootPubKey);
}

const app = new ReconcilerApp({ config, log });
let signals = 0;
const onSignal = (signal: NodeJS.Signals) => {
  signals++;
  if (signals > 1) {
    log.warn({ signal }, 'second signal: exiting now');
    process.exit(1);
  }
  // DRAIN_ON_SIGTERM: a SIGTERM hands every account over first (bounded by DRAIN_TIMEOUT_MS);
  // SIGINT (a person at a terminal) stops at once.
  const drain = signal === 'SIGTERM' && config.fleet.drainOnSigterm;
  const force = setTimeout(() => {
    log.error('shutdown exceeded its bound; exiting');
    process.exit(1);
  }, config.shutdownTimeoutMs + (drain ? config.fleet.drainTimeoutMs : 0) + 5_000);
  force.unref();
  void app.stop(signal, { drain }).then(({ graceful }) => {
    log.flush?.();
    process.exit(graceful ? (process.exitCode ?? 0) : 1);
  });
};
process.on('SIGTERM', onSignal);
process.on('SIGINT', onSignal);
process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection'));

try {
  await app.start();
} catch (err) {
  log.fatal({ err }, 'start failed');
  await app.stop('start failed').catch(() => undefined);
  process.exit(1);
}
