import { createHash } from 'node:crypto';
import { chmod, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, DEV_BACKUP_KEY, VOLUME_MARKER, configSummary, loadConfig, type LoadConfigOptions } from '../src/config.ts';
import { tempDir } from './helpers.ts';

const KEY = Buffer.from('0123456789abcdef0123456789abcdef'); // 32 bytes
const ROOT_PUBKEY = Buffer.alloc(32, 7).toString('base64');

let dir: string;
let cleanup: () => Promise<void>;
beforeEach(async () => {
  ({ dir, cleanup } = await tempDir());
});
afterEach(async () => {
  await cleanup();
});

function prodEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { NODE_ENV: 'production', GCLOUD_PROJECT: 'wafleet-prod', SESSIONS_PATH: dir, BACKUP_KEY: KEY.toString('base64'), ...extra };
}

async function configError(env: NodeJS.ProcessEnv, options: LoadConfigOptions = {}): Promise<ConfigError> {
  try {
    await loadConfig(env, options);
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

function problemOf(error: ConfigError, variable: string): string {
  const issue = error.issues.find((i) => i.variable === variable);
  if (!issue) throw new Error(`no issue for ${variable} in:\n${error.message}`);
  return issue.message;
}

describe('loadConfig', () => {
  it('applies the documented defaults to a minimal production environment', async () => {
    const config = await loadConfig(prodEnv(), { hostname: 'node-a.internal' });
    expect(config).toMatchObject({
      nodeEnv: 'production',
      firestore: { projectId: 'wafleet-prod', emulatorHost: null },
      sessionsPath: dir,
      sessionsRequireVolume: false,
      instanceId: `node-a.internal-${createHash('sha256').update(dir).digest('hex').slice(0, 8)}`,
      http: { host: '0.0.0.0', port: 8080 },
      maxAccounts: 30,
      connect: { concurrency: 2, intervalMs: 250 },
      backup: { keySource: 'env' },
      waSimulator: null,
      waVersionCheck: 'off',
      logLevel: 'info',
      lease: { ttlMs: 120_000, renewMs: 40_000 },
      shutdownTimeoutMs: 20_000,
      fleet: { rebalance: true, rebalanceMinHoldMs: 600_000, drainOnSigterm: false, drainTimeoutMs: 120_000 },
      warnings: [],
    });
    expect(config.backup.key.equals(KEY)).toBe(true);
    expect(Object.isFrozen(config) && Object.isFrozen(config.http)).toBe(true);
    expect(await readdir(dir)).toEqual([]); // the write probe cleaned up after itself
  });

  it('parses every variable when set, trimming values and treating empty as unset', async () => {
    const config = await loadConfig(
      prodEnv({
        INSTANCE_ID: ' reconciler-0 ',
        HTTP_PORT: '0',
        HTTP_HOST: '127.0.0.1',
        MAX_ACCOUNTS: '60',
        CONNECT_CONCURRENCY: '4',
        CONNECT_INTERVAL_MS: '0',
        LOG_LEVEL: 'debug',
        LEASE_TTL_MS: '20000',
        LEASE_RENEW_MS: '10000',
        SHUTDOWN_TIMEOUT_MS: '5000',
        REBALANCE: 'off',
        REBALANCE_MIN_HOLD_MS: '0',
        DRAIN_ON_SIGTERM: 'true',
        DRAIN_TIMEOUT_MS: '30000',
        OUTBOX_RATE_PER_MINUTE: '0',
        OUTBOX_FLEET_RATE_PER_SECOND: '50',
        OUTBOX_MAX_ATTEMPTS: '3',
        OUTBOX_ACK_TIMEOUT_MS: '2000',
        OUTBOX_STUCK_AFTER_MS: '60000',
        INBOUND_RETENTION_DAYS: '0',
        FIRESTORE_EMULATOR_HOST: '',
      }),
    );
    expect(config).toMatchObject({
      instanceId: 'reconciler-0',
      http: { host: '127.0.0.1', port: 0 },
      maxAccounts: 60,
      connect: { concurrency: 4, intervalMs: 0 },
      logLevel: 'debug',
      lease: { ttlMs: 20_000, renewMs: 10_000 },
      shutdownTimeoutMs: 5_000,
      fleet: { rebalance: false, rebalanceMinHoldMs: 0, drainOnSigterm: true, drainTimeoutMs: 30_000 },
      outbox: { perAccountPerMinute: 0, fleetPerSecond: 50, maxAttempts: 3, ackTimeoutMs: 2_000, stuckAfterMs: 60_000 },
      inboundRetentionDays: 0,
      firestore: { emulatorHost: null },
    });
  });

  it('uses demo-wafleet with the emulator, and the public dev key with a loud warning in development', async () => {
    const config = await loadConfig({ NODE_ENV: 'test', FIRESTORE_EMULATOR_HOST: '127.0.0.1:8080', SESSIONS_PATH: dir });
    expect(config.firestore).toEqual({ projectId: 'demo-wafleet', emulatorHost: '127.0.0.1:8080' });
    expect(config.backup.keySource).toBe('development-default');
    expect(config.backup.key.equals(DEV_BACKUP_KEY)).toBe(true);
    expect(config.warnings.join('\n')).toMatch(/BACKUP_KEY is not set.*PUBLIC development key/);
  });

  it('reports every problem at once, each with a fix, without echoing the secret', async () => {
    const secret = 'c2VjcmV0LWJ1dC10b28tc2hvcnQ=';
    const error = await configError({
      NODE_ENV: 'production',
      GCLOUD_PROJECT: 'wafleet-prod',
      SESSIONS_PATH: path.join(dir, 'missing'),
      HTTP_PORT: 'http',
      HTTP_HOST: 'not a host!',
      MAX_ACCOUNTS: '0',
      CONNECT_CONCURRENCY: '-1',
      CONNECT_INTERVAL_MS: '1.5',
      INSTANCE_ID: 'bad id!',
      LOG_LEVEL: 'loud',
      LEASE_TTL_MS: '10',
      SHUTDOWN_TIMEOUT_MS: 'soon',
      OUTBOX_MAX_ATTEMPTS: '0',
      BACKUP_KEY: secret,
      FIRESTORE_EMULATOR_HOST: 'localhost',
    });
    const variables = error.issues.map((i) => i.variable).sort();
    expect(variables).toEqual(
      [
        'BACKUP_KEY',
        'CONNECT_CONCURRENCY',
        'CONNECT_INTERVAL_MS',
        'FIRESTORE_EMULATOR_HOST',
        'HTTP_HOST',
        'HTTP_PORT',
        'INSTANCE_ID',
        'LEASE_TTL_MS',
        'LOG_LEVEL',
        'MAX_ACCOUNTS',
        'OUTBOX_MAX_ATTEMPTS',
        'SESSIONS_PATH',
        'SHUTDOWN_TIMEOUT_MS',
      ].sort(),
    );
    expect(error.message).toMatch(/^Invalid reconciler configuration \(13 problems\):/);
    expect(error.message).toContain('reconciler/README.md');
    expect(problemOf(error, 'HTTP_PORT')).toMatch(/whole number from 0 to 65535.*"http"/);
    expect(problemOf(error, 'LOG_LEVEL')).toMatch(/fatal, error, warn, info, debug, trace, silent/);
    expect(problemOf(error, 'SESSIONS_PATH')).toContain(`mkdir -p ${path.join(dir, 'missing')} && chown`);
    expect(problemOf(error, 'BACKUP_KEY')).toMatch(/openssl rand -base64 32/);
    expect(error.message).not.toContain(secret);
  });

  it('SESSIONS_PATH: required, must exist, be a directory and be writable', async () => {
    expect(problemOf(await configError(prodEnv({ SESSIONS_PATH: undefined })), 'SESSIONS_PATH')).toMatch(/is required/);
    const file = path.join(dir, 'a-file');
    await writeFile(file, 'x');
    expect(problemOf(await configError(prodEnv({ SESSIONS_PATH: file })), 'SESSIONS_PATH')).toMatch(/is not a directory/);
    expect(problemOf(await configError(prodEnv({ SESSIONS_PATH: path.join(file, 'below') })), 'SESSIONS_PATH')).toMatch(/not a directory/);
    // Root ignores permission bits, so as root use a directory nobody can create files in.
    let unwritable = '/proc';
    if (process.getuid?.() !== 0) {
      unwritable = path.join(dir, 'locked');
      await mkdir(unwritable);
      await chmod(unwritable, 0o500);
    }
    expect(problemOf(await configError(prodEnv({ SESSIONS_PATH: unwritable })), 'SESSIONS_PATH')).toMatch(/not writable|read-only/);
  });

  it('BACKUP_KEY_FILE: the key read from a file, never echoed; exclusive with BACKUP_KEY; loose modes warned about', async () => {
    const keyDir = path.join(dir, 'secrets');
    await mkdir(keyDir);
    const file = path.join(keyDir, 'backup-key');
    await writeFile(file, `${KEY.toString('base64')}\n`, { mode: 0o400 });
    const config = await loadConfig(prodEnv({ BACKUP_KEY: undefined, BACKUP_KEY_FILE: file }));
    expect(config.backup.key.equals(KEY)).toBe(true);
    expect(config.backup.keySource).toBe('file');
    expect(config.warnings).toEqual([]);
    expect(JSON.stringify(configSummary(config))).toMatch(/"keySource":"file","keyFingerprint":"[0-9a-f]{8}"/);

    // Both set: which one wins is not guessed.
    expect(problemOf(await configError(prodEnv({ BACKUP_KEY_FILE: file })), 'BACKUP_KEY_FILE')).toMatch(/both set; set only one/);
    // Missing, a directory, not a key: refused with the fix named, the contents never shown.
    const missing = path.join(keyDir, 'nope');
    const noFile = problemOf(await configError(prodEnv({ BACKUP_KEY: undefined, BACKUP_KEY_FILE: missing })), 'BACKUP_KEY_FILE');
    expect(noFile).toContain(`${missing} does not exist. Fix:`);
    expect(noFile).toContain('gcloud secrets versions access latest --secret=wafleet-backup-key');
    expect(problemOf(await configError(prodEnv({ BACKUP_KEY: undefined, BACKUP_KEY_FILE: keyDir })), 'BACKUP_KEY_FILE')).toMatch(/is not a regular file/);
    const secret = 'c2VjcmV0LWJ1dC10b28tc2hvcnQ=';
    const bad = path.join(keyDir, 'bad');
    await writeFile(bad, secret, { mode: 0o400 });
    const badError = await configError(prodEnv({ BACKUP_KEY: undefined, BACKUP_KEY_FILE: bad }));
    expect(problemOf(badError, 'BACKUP_KEY_FILE')).toMatch(/must be 32 bytes.*holds 28 characters/);
    expect(badError.message).not.toContain(secret);
    const big = path.join(keyDir, 'big');
    await writeFile(big, 'x'.repeat(5000));
    expect(problemOf(await configError(prodEnv({ BACKUP_KEY: undefined, BACKUP_KEY_FILE: big })), 'BACKUP_KEY_FILE')).toMatch(/5000 bytes, too long to be a key/);
    // The public development key is refused in production from a file too.
    const dev = path.join(keyDir, 'dev');
    await writeFile(dev, DEV_BACKUP_KEY.toString('hex'), { mode: 0o400 });
    expect(problemOf(await configError(prodEnv({ BACKUP_KEY: undefined, BACKUP_KEY_FILE: dev })), 'BACKUP_KEY_FILE')).toMatch(/public development key/);
    // Readable by others: works, with a warning that names the chmod.
    await chmod(file, 0o644);
    const loose = await loadConfig(prodEnv({ BACKUP_KEY: undefined, BACKUP_KEY_FILE: file }));
    expect(loose.warnings).toEqual([`BACKUP_KEY_FILE ${file} is open to users other than its owner (mode 0644); \`chmod 400 ${file}\``]);
    if (process.getuid?.() !== 0) {
      await chmod(file, 0o000);
      expect(problemOf(await configError(prodEnv({ BACKUP_KEY: undefined, BACKUP_KEY_FILE: file })), 'BACKUP_KEY_FILE')).toMatch(/not readable by this process/);
    }
  });

  it('SESSIONS_REQUIRE_VOLUME: off by default; on, SESSIONS_PATH must be a mounted filesystem holding the disk marker', async () => {
    expect(problemOf(await configError(prodEnv({ SESSIONS_REQUIRE_VOLUME: 'yes' })), 'SESSIONS_REQUIRE_VOLUME')).toMatch(/must be true or false.*"yes"/);
    expect((await loadConfig(prodEnv({ SESSIONS_REQUIRE_VOLUME: 'false' }))).sessionsRequireVolume).toBe(false);

    // On the same filesystem as the root (here: its parent directory stands in for "/"): no disk is mounted.
    const sameFs = problemOf(await configError(prodEnv({ SESSIONS_REQUIRE_VOLUME: 'true' }), { rootPath: path.dirname(dir) }), 'SESSIONS_PATH');
    expect(sameFs).toContain(`${dir} is on the same filesystem as ${path.dirname(dir)}`);
    expect(sameFs).toMatch(/Fix: mount the sessions disk there.*findmnt -T/);
    // /proc is always another filesystem than a temp directory: a mount, but an empty one (no marker).
    const noMarker = problemOf(await configError(prodEnv({ SESSIONS_REQUIRE_VOLUME: 'true' }), { rootPath: '/proc' }), 'SESSIONS_PATH');
    expect(noMarker).toContain(`${dir} has no ${VOLUME_MARKER} file`);
    expect(noMarker).toMatch(/deploy\/prepare-disk\.sh/);
    // A directory named like the marker is not the marker.
    await mkdir(path.join(dir, VOLUME_MARKER));
    expect(problemOf(await configError(prodEnv({ SESSIONS_REQUIRE_VOLUME: 'true' }), { rootPath: '/proc' }), 'SESSIONS_PATH')).toContain(`has no ${VOLUME_MARKER} file`);
    await rm(path.join(dir, VOLUME_MARKER), { recursive: true });
    await writeFile(path.join(dir, VOLUME_MARKER), 'wafleet-sessions\n');
    const config = await loadConfig(prodEnv({ SESSIONS_REQUIRE_VOLUME: 'true' }), { rootPath: '/proc' });
    expect(config.sessionsRequireVolume).toBe(true);
    // A missing directory is reported as such (the volume checks need a directory to look at).
    expect(problemOf(await configError(prodEnv({ SESSIONS_REQUIRE_VOLUME: 'true', SESSIONS_PATH: path.join(dir, 'missing') })), 'SESSIONS_PATH')).toMatch(/does not exist. Fix: mkdir -p/);
  });

  it('BACKUP_KEY: base64, base64url or hex of 32 bytes; required outside development; dev key refused in production', async () => {
    for (const form of [KEY.toString('base64'), KEY.toString('base64url'), KEY.toString('hex'), KEY.toString('hex').toUpperCase()]) {
      expect((await loadConfig(prodEnv({ BACKUP_KEY: form }))).backup.key.equals(KEY)).toBe(true);
    }
    expect(problemOf(await configError(prodEnv({ BACKUP_KEY: Buffer.alloc(31, 1).toString('base64') })), 'BACKUP_KEY')).toMatch(/must be 32 bytes/);
    expect(problemOf(await configError(prodEnv({ BACKUP_KEY: 'z'.repeat(64) })), 'BACKUP_KEY')).toMatch(/must be 32 bytes/);
    expect(problemOf(await configError(prodEnv({ BACKUP_KEY: undefined })), 'BACKUP_KEY')).toMatch(/is required when NODE_ENV is "production"/);
    expect(problemOf(await configError(prodEnv({ BACKUP_KEY: undefined, NODE_ENV: undefined })), 'BACKUP_KEY')).toMatch(/unset \(production\)/);
    expect(problemOf(await configError(prodEnv({ BACKUP_KEY: DEV_BACKUP_KEY.toString('hex') })), 'BACKUP_KEY')).toMatch(/public development key/);
    expect(problemOf(await configError(prodEnv({ NODE_ENV: 'prod' })), 'NODE_ENV')).toMatch(/production, development, test/);
  });

  it('BACKUP_KEY_PREVIOUS(_FILE): the old key during a rotation, parsed and checked like BACKUP_KEY', async () => {
    const OLD = Buffer.from('fedcba9876543210fedcba9876543210');
    // Absent outside a rotation.
    expect((await loadConfig(prodEnv())).backup.previousKey).toBeUndefined();
    // Every format BACKUP_KEY takes, and a file like BACKUP_KEY_FILE.
    for (const form of [OLD.toString('base64'), OLD.toString('base64url'), OLD.toString('hex')]) {
      const config = await loadConfig(prodEnv({ BACKUP_KEY_PREVIOUS: form }));
      expect(config.backup.previousKey?.equals(OLD)).toBe(true);
      expect(config.backup.previousKeySource).toBe('env');
      expect(config.backup.key.equals(KEY)).toBe(true);
    }
    const oldFile = path.join(dir, 'backup-key-previous');
    await writeFile(oldFile, `${OLD.toString('base64')}\n`, { mode: 0o400 });
    const currentFile = path.join(dir, 'backup-key');
    await writeFile(currentFile, `${KEY.toString('base64')}\n`, { mode: 0o400 });
    const fromFiles = await loadConfig(prodEnv({ BACKUP_KEY: undefined, BACKUP_KEY_FILE: currentFile, BACKUP_KEY_PREVIOUS_FILE: oldFile }));
    expect(fromFiles.backup).toMatchObject({ keySource: 'file', previousKeySource: 'file' });
    expect(fromFiles.backup.previousKey?.equals(OLD)).toBe(true);
    expect(fromFiles.warnings).toEqual([]);
    // Never echoed: the summary has fingerprints.
    const summary = JSON.stringify(configSummary(fromFiles));
    expect(summary).toMatch(/"previousKeyFingerprint":"[0-9a-f]{8}"/);
    expect(summary).not.toContain(OLD.toString('base64'));
    expect(summary).not.toContain(OLD.toString('hex'));

    // A bad value, in the variable or in the file, is refused with the format, never echoed.
    const short = Buffer.alloc(31, 1).toString('base64');
    const bad = await configError(prodEnv({ BACKUP_KEY_PREVIOUS: short }));
    expect(problemOf(bad, 'BACKUP_KEY_PREVIOUS')).toMatch(/must be 32 bytes.*openssl rand -base64 32/);
    expect(bad.message).not.toContain(short);
    const badFile = path.join(dir, 'bad-previous');
    await writeFile(badFile, 'not a key at all', { mode: 0o400 });
    expect(problemOf(await configError(prodEnv({ BACKUP_KEY_PREVIOUS_FILE: badFile })), 'BACKUP_KEY_PREVIOUS_FILE')).toMatch(/must be 32 bytes.*holds 16 characters.*Fix:.*BACKUP_KEY_PREVIOUS_FILE/);
    const missing = path.join(dir, 'nope');
    expect(problemOf(await configError(prodEnv({ BACKUP_KEY_PREVIOUS_FILE: missing })), 'BACKUP_KEY_PREVIOUS_FILE')).toMatch(/does not exist. Fix: .*gcloud secrets versions access/);
    // A loose mode is warned about under its own name.
    const loose = path.join(dir, 'loose-previous');
    await writeFile(loose, OLD.toString('base64'));
    await chmod(loose, 0o644);
    expect((await loadConfig(prodEnv({ BACKUP_KEY_PREVIOUS_FILE: loose }))).warnings).toEqual([
      `BACKUP_KEY_PREVIOUS_FILE ${loose} is open to users other than its owner (mode 0644); \`chmod 400 ${loose}\``,
    ]);

    // Both forms at once.
    expect(problemOf(await configError(prodEnv({ BACKUP_KEY_PREVIOUS: OLD.toString('base64'), BACKUP_KEY_PREVIOUS_FILE: oldFile })), 'BACKUP_KEY_PREVIOUS_FILE')).toMatch(
      /and BACKUP_KEY_PREVIOUS are both set; set only one/,
    );
    // The same key as the current one: a rotation that rotates nothing, most likely the wrong version fetched.
    expect(problemOf(await configError(prodEnv({ BACKUP_KEY_PREVIOUS: KEY.toString('hex') })), 'BACKUP_KEY_PREVIOUS')).toMatch(
      /same key as BACKUP_KEY: set it to the old key.*or unset it/,
    );
    expect(problemOf(await configError(prodEnv({ BACKUP_KEY: undefined, BACKUP_KEY_FILE: currentFile, BACKUP_KEY_PREVIOUS_FILE: currentFile })), 'BACKUP_KEY_PREVIOUS_FILE')).toMatch(
      /same key as BACKUP_KEY_FILE/,
    );
    // The public development key, in production.
    expect(problemOf(await configError(prodEnv({ BACKUP_KEY_PREVIOUS: DEV_BACKUP_KEY.toString('base64') })), 'BACKUP_KEY_PREVIOUS')).toMatch(/public development key.*unset/);
    const devFile = path.join(dir, 'dev-previous');
    await writeFile(devFile, DEV_BACKUP_KEY.toString('hex'), { mode: 0o400 });
    expect(problemOf(await configError(prodEnv({ BACKUP_KEY_PREVIOUS_FILE: devFile })), 'BACKUP_KEY_PREVIOUS_FILE')).toMatch(/public development key/);
    // …but fine in development, where it is what backups were under until BACKUP_KEY was set.
    const dev = { NODE_ENV: 'development', FIRESTORE_EMULATOR_HOST: '127.0.0.1:8080', SESSIONS_PATH: dir };
    expect((await loadConfig({ ...dev, BACKUP_KEY: KEY.toString('base64'), BACKUP_KEY_PREVIOUS: DEV_BACKUP_KEY.toString('base64') })).backup.previousKey?.equals(DEV_BACKUP_KEY)).toBe(true);
    // Without a current key explicitly set: refused, also in development (where the public key would be the current one).
    expect(problemOf(await configError(prodEnv({ BACKUP_KEY: undefined, BACKUP_KEY_PREVIOUS: OLD.toString('base64') })), 'BACKUP_KEY_PREVIOUS')).toMatch(
      /is set but BACKUP_KEY_FILE \(or BACKUP_KEY\) is not.*unset it/,
    );
    expect(problemOf(await configError({ ...dev, BACKUP_KEY_PREVIOUS_FILE: oldFile }), 'BACKUP_KEY_PREVIOUS_FILE')).toMatch(/is set but BACKUP_KEY_FILE \(or BACKUP_KEY\) is not/);
    // A bad current key does not hide a problem with the previous one.
    const both = await configError(prodEnv({ BACKUP_KEY: short, BACKUP_KEY_PREVIOUS: short }));
    expect(both.issues.map((i) => i.variable)).toEqual(['BACKUP_KEY', 'BACKUP_KEY_PREVIOUS']);
  });

  it('WA_SOCKET_URL + WA_NOISE_ROOT_PUBKEY: both or neither, development only', async () => {
    const dev = { NODE_ENV: 'development', FIRESTORE_EMULATOR_HOST: '127.0.0.1:8080', SESSIONS_PATH: dir };
    const config = await loadConfig({ ...dev, WA_SOCKET_URL: 'ws://127.0.0.1:7070/ws/chat', WA_NOISE_ROOT_PUBKEY: ROOT_PUBKEY });
    expect(config.waSimulator?.socketUrl).toBe('ws://127.0.0.1:7070/ws/chat');
    expect(config.waSimulator?.noiseRootPubKey.equals(Buffer.alloc(32, 7))).toBe(true);
    expect(config.warnings.join('\n')).toMatch(/simulator/);

    expect(problemOf(await configError({ ...dev, WA_SOCKET_URL: 'ws://127.0.0.1:7070' }), 'WA_NOISE_ROOT_PUBKEY')).toMatch(/set both, or neither/);
    expect(problemOf(await configError({ ...dev, WA_NOISE_ROOT_PUBKEY: ROOT_PUBKEY }), 'WA_SOCKET_URL')).toMatch(/set both, or neither/);
    expect(problemOf(await configError({ ...dev, WA_SOCKET_URL: 'http://127.0.0.1', WA_NOISE_ROOT_PUBKEY: ROOT_PUBKEY }), 'WA_SOCKET_URL')).toMatch(/ws:\/\/ or wss:\/\//);
    expect(problemOf(await configError({ ...dev, WA_SOCKET_URL: 'ws://x', WA_NOISE_ROOT_PUBKEY: Buffer.alloc(33).toString('base64') }), 'WA_NOISE_ROOT_PUBKEY')).toMatch(/32 bytes/);
    expect(problemOf(await configError(prodEnv({ WA_SOCKET_URL: 'ws://127.0.0.1:7070', WA_NOISE_ROOT_PUBKEY: ROOT_PUBKEY })), 'WA_SOCKET_URL')).toMatch(/development only.*NODE_ENV=production/);
  });

  it('WA_VERSION_CHECK: off (the bundled WhatsApp Web version) or latest; anything else refused', async () => {
    expect((await loadConfig(prodEnv({ WA_VERSION_CHECK: 'latest' }))).waVersionCheck).toBe('latest');
    expect((await loadConfig(prodEnv({ WA_VERSION_CHECK: ' off ' }))).waVersionCheck).toBe('off');
    expect(problemOf(await configError(prodEnv({ WA_VERSION_CHECK: 'newest' })), 'WA_VERSION_CHECK')).toMatch(/"off".*"latest".*got "newest"/);
  });

  it('project id: required without the emulator, consistent across variables, real outside the emulator', async () => {
    expect(problemOf(await configError(prodEnv({ GCLOUD_PROJECT: undefined })), 'GCLOUD_PROJECT')).toMatch(/is required.*FIRESTORE_EMULATOR_HOST/);
    expect((await loadConfig(prodEnv({ GCLOUD_PROJECT: undefined, GOOGLE_CLOUD_PROJECT: 'other-project' }))).firestore.projectId).toBe('other-project');
    expect(problemOf(await configError(prodEnv({ FIREBASE_PROJECT_ID: 'other-project' })), 'GCLOUD_PROJECT')).toMatch(/disagree.*GCLOUD_PROJECT=wafleet-prod, FIREBASE_PROJECT_ID=other-project/);
    expect(problemOf(await configError(prodEnv({ GCLOUD_PROJECT: 'demo-wafleet' })), 'GCLOUD_PROJECT')).toMatch(/only in the emulator/);
    expect(problemOf(await configError(prodEnv({ GCLOUD_PROJECT: 'Bad_Project' })), 'GCLOUD_PROJECT')).toMatch(/project id/);
    const withEmulator = await loadConfig(prodEnv({ FIRESTORE_EMULATOR_HOST: '[::1]:8080', GCLOUD_PROJECT: 'demo-wafleet' }));
    expect(withEmulator.firestore).toEqual({ projectId: 'demo-wafleet', emulatorHost: '[::1]:8080' });
    expect(withEmulator.warnings.join('\n')).toMatch(/emulator/);
  });

  it('lease renewal must leave room for a retry before expiry', async () => {
    expect(problemOf(await configError(prodEnv({ LEASE_TTL_MS: '8000', LEASE_RENEW_MS: '5000' })), 'LEASE_RENEW_MS')).toMatch(/at most half of LEASE_TTL_MS \(8000\)/);
    // A TTL set alone brings a renewal of a third of it.
    expect((await loadConfig(prodEnv({ LEASE_TTL_MS: '9000' }))).lease).toEqual({ ttlMs: 9_000, renewMs: 3_000 });
  });

  it('warns about misspelt variables, which would otherwise be silently ignored', async () => {
    const config = await loadConfig(prodEnv({ CONNECT_CONCURENCY: '8', PATH: '/usr/bin' }));
    expect(config.warnings).toEqual(['CONNECT_CONCURENCY is set but is not a reconciler variable; did you mean CONNECT_CONCURRENCY?']);
  });

  it('configSummary is safe to log: a key fingerprint, not the key', async () => {
    const config = await loadConfig(prodEnv());
    const text = JSON.stringify(configSummary(config));
    expect(text).not.toContain(KEY.toString('base64'));
    expect(text).not.toContain(KEY.toString('hex'));
    expect(text).toMatch(/"keyFingerprint":"[0-9a-f]{8}"/);
  });
});
