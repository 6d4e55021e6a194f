/**
 * Issue 13 item 6: the fleet deploy files (deploy/k8s/, deploy/mig/) set only variables the
 * reconciler knows, give a stop the time the drain and the shutdown need, take INSTANCE_ID from the
 * pod or VM name, keep the backup key out of every environment, probe what the HTTP server serves,
 * and never run two VMs of one name. Each check is a function returning its problems, run once on
 * the shipped files (no problems) and once on a copy broken the way it guards against (a problem),
 * so no check passes vacuously. No cloud, cluster or Docker needed: files, YAML and `bash`.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { CONFIG_VARIABLES } from '../../reconciler/src/config.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const read = (p: string) => readFileSync(path.join(root, p), 'utf8');

const KNOWN = new Set<string>(CONFIG_VARIABLES);
const DRAIN_DEFAULT_MS = 120_000; // DRAIN_TIMEOUT_MS's default, as the drain interface defines it
// main.ts exits by force this long after SHUTDOWN_TIMEOUT_MS.
const MAIN_FORCE_MARGIN_MS = 5_000;

type Obj = Record<string, any>;

/** The paths the HTTP server answers, read from its source. */
const served = [...read('reconciler/src/http/server.ts').matchAll(/url === '(\/[a-z]+)'/g)].map((m) => m[1]!);
/** HTTP_PORT's default, read from config.ts. */
const defaultPort = Number(/HTTP_PORT: intVar\((\d+)/.exec(read('reconciler/src/config.ts'))?.[1]);
/** SHUTDOWN_TIMEOUT_MS's default, read from config.ts. */
const defaultShutdownMs = Number(/SHUTDOWN_TIMEOUT_MS: intVar\(([\d_]+)/.exec(read('reconciler/src/config.ts'))?.[1]?.replace(/_/g, ''));

function loadK8s(): Obj[] {
  const dir = path.join(root, 'deploy', 'k8s');
  return readdirSync(dir)
    .filter((f) => /\.ya?ml$/.test(f))
    .flatMap((f) => parseAllDocuments(readFileSync(path.join(dir, f), 'utf8')).map((d) => {
      if (d.errors.length > 0) throw new Error(`${f}: ${d.errors.map((e) => e.message).join('; ')}`);
      return d.toJS() as Obj;
    }))
    .filter(Boolean);
}

const clone = <T>(v: T): T => structuredClone(v);
const statefulSetOf = (docs: Obj[]) => docs.find((d) => d.kind === 'StatefulSet')!;
const reconcilerOf = (sts: Obj) => (sts.spec.template.spec.containers as Obj[]).find((c) => c.name === 'reconciler')!;
const envValue = (c: Obj, name: string): string | undefined => (c.env as Obj[] | undefined)?.find((e) => e.name === name)?.value;

/** A KEY=value file's settings (comments and blank lines skipped). */
function envFile(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line.trim());
    if (m) out.set(m[1]!, m[2]!);
  }
  return out;
}

// ------------------------------------------------------------------ checks: each returns its problems

function unknownVariables(names: Iterable<string>, where: string): string[] {
  return [...names].filter((n) => !KNOWN.has(n)).map((n) => `${where}: ${n} is not a variable reconciler/src/config.ts knows`);
}

function statefulSetProblems(sts: Obj): string[] {
  const problems: string[] = [];
  const pod = sts.spec.template.spec as Obj;
  const c = reconcilerOf(sts);
  const env = (c.env ?? []) as Obj[];
  for (const ctr of [...(pod.initContainers ?? []), ...pod.containers] as Obj[]) {
    if (ctr.name === 'reconciler') problems.push(...unknownVariables(((ctr.env ?? []) as Obj[]).map((e) => e.name as string), `container ${ctr.name}`));
    if (ctr.envFrom) problems.push(`container ${ctr.name}: envFrom hides which variables are set`);
    const sc = (ctr.securityContext ?? {}) as Obj;
    if (sc.allowPrivilegeEscalation !== false) problems.push(`container ${ctr.name}: allowPrivilegeEscalation must be false`);
    if (sc.readOnlyRootFilesystem !== true) problems.push(`container ${ctr.name}: readOnlyRootFilesystem must be true`);
    if (!(sc.capabilities?.drop ?? []).includes('ALL')) problems.push(`container ${ctr.name}: capabilities must drop ALL`);
  }
  if (pod.securityContext?.runAsNonRoot !== true || !(pod.securityContext?.runAsUser > 0)) problems.push('pod: must run as a non-root uid');

  // Grace above the drain and the shutdown (plus main's forced exit), as configured there.
  const drainOn = envValue(c, 'DRAIN_ON_SIGTERM') === 'true';
  const drainMs = drainOn ? Number(envValue(c, 'DRAIN_TIMEOUT_MS') ?? DRAIN_DEFAULT_MS) : 0;
  const shutdownMs = Number(envValue(c, 'SHUTDOWN_TIMEOUT_MS') ?? defaultShutdownMs);
  const grace = pod.terminationGracePeriodSeconds as number;
  if (!drainOn) problems.push('DRAIN_ON_SIGTERM must be true: a rolling update should hand accounts over, not drop them');
  if (!(grace * 1000 > drainMs + shutdownMs + MAIN_FORCE_MARGIN_MS)) {
    problems.push(`terminationGracePeriodSeconds ${grace} s is not above DRAIN_TIMEOUT_MS + SHUTDOWN_TIMEOUT_MS + 5 s = ${(drainMs + shutdownMs + MAIN_FORCE_MARGIN_MS) / 1000} s`);
  }

  // INSTANCE_ID: the pod's name, through the downward API.
  const id = env.find((e) => e.name === 'INSTANCE_ID');
  if (id?.valueFrom?.fieldRef?.fieldPath !== 'metadata.name' || id.value !== undefined) problems.push('INSTANCE_ID must come from the pod name (fieldRef metadata.name)');

  // The backup key: a file from a mounted Secret, never an environment value.
  for (const e of env) {
    if (/^BACKUP_KEY(_PREVIOUS)?$/.test(e.name)) problems.push(`${e.name} is set in the environment: mount the key as a file (BACKUP_KEY_FILE)`);
    if (e.valueFrom?.secretKeyRef) problems.push(`${e.name} takes a Secret into the environment`);
  }
  const keyFile = envValue(c, 'BACKUP_KEY_FILE');
  const secretVolumes = new Set(((pod.volumes ?? []) as Obj[]).filter((v) => v.secret).map((v) => v.name as string));
  const keyMount = ((c.volumeMounts ?? []) as Obj[]).find((m) => keyFile !== undefined && keyFile.startsWith(`${m.mountPath}/`));
  if (!keyFile) problems.push('BACKUP_KEY_FILE is not set');
  else if (!keyMount || !secretVolumes.has(keyMount.name)) problems.push(`BACKUP_KEY_FILE ${keyFile} is not on a mounted Secret volume`);
  else if (keyMount.readOnly !== true) problems.push('the key mount must be readOnly');

  // SESSIONS_PATH on the claim of volumeClaimTemplates.
  const sessions = envValue(c, 'SESSIONS_PATH');
  const claims = new Set(((sts.spec.volumeClaimTemplates ?? []) as Obj[]).map((t) => t.metadata.name as string));
  const sessionsMount = ((c.volumeMounts ?? []) as Obj[]).find((m) => sessions !== undefined && (sessions === m.mountPath || sessions.startsWith(`${m.mountPath}/`)));
  if (!sessionsMount || !claims.has(sessionsMount.name)) problems.push(`SESSIONS_PATH ${sessions} is not on a volumeClaimTemplates claim`);

  // Probes: paths the server serves, on the port it listens on.
  const port = Number(envValue(c, 'HTTP_PORT') ?? defaultPort);
  const named = new Map(((c.ports ?? []) as Obj[]).map((p) => [p.name as string, p.containerPort as number]));
  for (const probe of ['livenessProbe', 'readinessProbe', 'startupProbe']) {
    const get = c[probe]?.httpGet as Obj | undefined;
    if (!get) {
      if (probe !== 'startupProbe') problems.push(`${probe} missing`);
      continue;
    }
    if (!served.includes(get.path)) problems.push(`${probe} asks ${get.path}, which the HTTP server does not serve (${served.join(', ')})`);
    const probePort = typeof get.port === 'string' ? named.get(get.port) : get.port;
    if (probePort !== port) problems.push(`${probe} asks port ${get.port} (${probePort}), the server listens on ${port}`);
  }
  if (c.livenessProbe?.httpGet?.path !== '/healthz') problems.push('livenessProbe must be /healthz (alive), not readiness');
  return problems;
}

/** The variables the MIG path puts into the container: reconciler.env, what startup.sh adds, the unit's --env. */
function migVariables(reconcilerEnv: string, startup: string, unit: string): string[] {
  return [
    ...envFile(reconcilerEnv).keys(),
    ...[...startup.matchAll(/printf '([A-Z_]+)=%s\\n'/g)].map((m) => m[1]!).filter((n) => !n.startsWith('WAFLEET_')),
    ...[...unit.matchAll(/--env ([A-Z_]+)=/g)].map((m) => m[1]!),
  ];
}

function migEnvProblems(reconcilerEnv: string): string[] {
  const env = envFile(reconcilerEnv);
  const problems = unknownVariables(env.keys(), 'deploy/mig/reconciler.env');
  for (const n of ['INSTANCE_ID', 'BACKUP_KEY', 'BACKUP_KEY_PREVIOUS']) if (env.has(n)) problems.push(`deploy/mig/reconciler.env sets ${n}`);
  if (env.get('DRAIN_ON_SIGTERM') !== 'true') problems.push('deploy/mig/reconciler.env: DRAIN_ON_SIGTERM must be true');
  return problems;
}

function bash(args: string[], env: Record<string, string> = {}) {
  return spawnSync('bash', args, { cwd: root, encoding: 'utf8', env: { ...process.env, ...env } });
}

/** The drop-in unit-dropin.sh generates, checked against the budget it was given. */
function dropInProblems(unitPath: string, envPath: string): string[] {
  const r = bash(['deploy/mig/unit-dropin.sh', unitPath, envPath]);
  if (r.status !== 0) return [`unit-dropin.sh failed: ${r.stderr.trim()}`];
  const env = envFile(readFileSync(path.resolve(root, envPath), 'utf8'));
  const drainMs = env.get('DRAIN_ON_SIGTERM') === 'true' ? Number(env.get('DRAIN_TIMEOUT_MS') ?? DRAIN_DEFAULT_MS) : 0;
  const budgetMs = drainMs + Number(env.get('SHUTDOWN_TIMEOUT_MS') ?? defaultShutdownMs) + MAIN_FORCE_MARGIN_MS;
  const problems: string[] = [];
  const dockerStop = Number(/^ExecStop=\/usr\/bin\/docker stop -t (\d+) /m.exec(r.stdout)?.[1]);
  const stopTimeout = Number(/--stop-timeout (\d+)/.exec(r.stdout)?.[1]);
  const systemd = Number(/^TimeoutStopSec=(\d+)$/m.exec(r.stdout)?.[1]);
  if (!(dockerStop * 1000 > budgetMs) || !(stopTimeout * 1000 > budgetMs)) problems.push(`docker's stop timeout (${dockerStop} s, --stop-timeout ${stopTimeout}) is not above the ${budgetMs / 1000} s a drain and shutdown take`);
  if (!(systemd > dockerStop)) problems.push(`TimeoutStopSec ${systemd} is not above docker stop -t ${dockerStop}`);
  if (!/--publish 8080:8080 /.test(r.stdout) || /127\.0\.0\.1:8080/.test(r.stdout)) problems.push('the port is not published for the health check');
  // Only the publish and the stop timeout differ from the single-VM unit's ExecStart.
  const original = /^ExecStart=.*?[^\\]$/ms.exec(readFileSync(path.resolve(root, unitPath), 'utf8'))?.[0];
  const generated = /^ExecStart=\/.*?[^\\]$/ms.exec(r.stdout)?.[0];
  const normalise = (s: string | undefined) => s?.replace('--publish 127.0.0.1:8080:8080', '--publish 8080:8080').replace(/--stop-timeout \d+/, '--stop-timeout N');
  if (normalise(original) !== normalise(generated)) problems.push('the drop-in ExecStart differs from the unit in more than the publish and stop timeout');
  return problems;
}

function groupPolicyProblems(createGroup: string, rollout: string): string[] {
  const problems: string[] = [];
  const create = /gcloud compute instance-groups managed create "\$group"[\s\S]*?\n\s*"\$\{regional_flags\[@\]\}"/.exec(createGroup)?.[0] ?? '';
  if (!/--update-policy-replacement-method=recreate\b/.test(create)) problems.push('the group must replace by RECREATE (keeps the name, INSTANCE_ID and disk)');
  if (!/--update-policy-max-surge=0\b/.test(create)) problems.push('the group must have max surge 0 (never two VMs of one name)');
  if (!/--health-check="\$health_check"/.test(create) || !/--initial-delay=\d+/.test(create)) problems.push('the group needs autohealing (--health-check, --initial-delay)');
  const hc = /gcloud compute health-checks create http[\s\S]*?--unhealthy-threshold=\d+/.exec(createGroup)?.[0] ?? '';
  const hcPath = /--request-path=(\S+)/.exec(hc)?.[1];
  if (hcPath !== '/healthz' || !served.includes(hcPath)) problems.push(`the health check asks ${hcPath}, not the served /healthz`);
  const hcPort = /--port="\$port"/.test(hc) ? Number(/^port=(\d+)/m.exec(createGroup)?.[1]) : Number(/--port=(\d+)/.exec(hc)?.[1]);
  if (hcPort !== defaultPort) problems.push(`the health check asks port ${hcPort}, the server listens on ${defaultPort}`);
  if (/--all-instances|--max-surge=[1-9]|--replacement-method=substitute/.test(rollout)) problems.push('rollout.sh must recreate one VM at a time, never surge');
  if (!/update-instances[\s\S]*?--instances="\$vm"[\s\S]*?--minimal-action=replace/.test(rollout)) problems.push('rollout.sh must update one named VM per call');
  return problems;
}

// ------------------------------------------------------------------ the shipped files

describe('deploy/k8s', () => {
  const docs = loadK8s();
  const sts = statefulSetOf(docs);

  it('has a StatefulSet with one claim per pod, a headless Service, a PodDisruptionBudget and a Workload Identity service account', () => {
    expect(sts.spec.volumeClaimTemplates).toHaveLength(1);
    expect(['Parallel', 'OrderedReady']).toContain(sts.spec.podManagementPolicy);
    const svc = docs.find((d) => d.kind === 'Service' && d.metadata.name === sts.spec.serviceName);
    expect(svc?.spec.clusterIP).toBe('None');
    expect(docs.find((d) => d.kind === 'PodDisruptionBudget')?.spec.maxUnavailable).toBe(1);
    const sa = docs.find((d) => d.kind === 'ServiceAccount' && d.metadata.name === sts.spec.template.spec.serviceAccountName);
    expect(sa?.metadata.annotations['iam.gke.io/gcp-service-account']).toMatch(/^wafleet-reconciler@[a-z0-9-]+\.iam\.gserviceaccount\.com$/);
  });

  it('passes every StatefulSet check', () => {
    expect(served).toEqual(expect.arrayContaining(['/healthz', '/readyz']));
    expect(defaultPort).toBe(8080);
    expect(statefulSetProblems(sts)).toEqual([]);
  });

  it('each StatefulSet check catches the mistake it is for', () => {
    const broken: Array<[string, (s: Obj) => void, RegExp]> = [
      ['an unknown variable', (s) => reconcilerOf(s).env.push({ name: 'MAX_ACOUNTS', value: '30' }), /MAX_ACOUNTS is not a variable/],
      ['a grace period below the drain', (s) => (s.spec.template.spec.terminationGracePeriodSeconds = 140), /terminationGracePeriodSeconds 140/],
      ['a longer drain than the grace', (s) => (reconcilerOf(s).env.find((e: Obj) => e.name === 'DRAIN_TIMEOUT_MS').value = '150000'), /terminationGracePeriodSeconds/],
      ['INSTANCE_ID as a literal', (s) => (reconcilerOf(s).env.find((e: Obj) => e.name === 'INSTANCE_ID')!.valueFrom = undefined, reconcilerOf(s).env.find((e: Obj) => e.name === 'INSTANCE_ID').value = 'wafleet-0'), /INSTANCE_ID must come from the pod name/],
      ['INSTANCE_ID from another field', (s) => (reconcilerOf(s).env.find((e: Obj) => e.name === 'INSTANCE_ID').valueFrom.fieldRef.fieldPath = 'spec.nodeName'), /INSTANCE_ID/],
      ['the key as an env value', (s) => reconcilerOf(s).env.push({ name: 'BACKUP_KEY', valueFrom: { secretKeyRef: { name: 'wafleet-backup-key', key: 'backup-key' } } }), /BACKUP_KEY is set in the environment/],
      ['the key file off the Secret', (s) => (reconcilerOf(s).env.find((e: Obj) => e.name === 'BACKUP_KEY_FILE').value = '/tmp/backup-key'), /not on a mounted Secret volume/],
      ['a probe on an unserved path', (s) => (reconcilerOf(s).livenessProbe.httpGet.path = '/health'), /does not serve/],
      ['a probe on another port', (s) => (reconcilerOf(s).readinessProbe.httpGet.port = 9090), /port 9090/],
      ['liveness on /readyz', (s) => (reconcilerOf(s).livenessProbe.httpGet.path = '/readyz'), /livenessProbe must be \/healthz/],
      ['sessions off the claim', (s) => (reconcilerOf(s).env.find((e: Obj) => e.name === 'SESSIONS_PATH').value = '/tmp/sessions'), /SESSIONS_PATH/],
      ['a writable root filesystem', (s) => (reconcilerOf(s).securityContext.readOnlyRootFilesystem = false), /readOnlyRootFilesystem/],
      ['capabilities kept', (s) => (reconcilerOf(s).securityContext.capabilities.drop = []), /drop ALL/],
      ['root', (s) => (s.spec.template.spec.securityContext.runAsNonRoot = false), /non-root/],
      ['no drain on SIGTERM', (s) => (reconcilerOf(s).env.find((e: Obj) => e.name === 'DRAIN_ON_SIGTERM').value = 'false'), /DRAIN_ON_SIGTERM must be true/],
    ];
    for (const [what, breakIt, expected] of broken) {
      const copy = clone(sts);
      breakIt(copy);
      expect(statefulSetProblems(copy).join('\n'), what).toMatch(expected);
    }
  });
});

describe('deploy/mig', () => {
  const reconcilerEnv = read('deploy/mig/reconciler.env');
  const startup = read('deploy/mig/startup.sh');
  const unit = read('deploy/wafleet-reconciler.service');

  it('sets only variables the reconciler knows, never INSTANCE_ID or the key in the shared env', () => {
    const names = migVariables(reconcilerEnv, startup, unit);
    expect(names).toEqual(expect.arrayContaining(['GCLOUD_PROJECT', 'INSTANCE_ID', 'BACKUP_KEY_FILE', 'DRAIN_ON_SIGTERM']));
    expect(unknownVariables(names, 'deploy/mig')).toEqual([]);
    expect(migEnvProblems(reconcilerEnv)).toEqual([]);
    // INSTANCE_ID and the host name are the VM's name from the metadata server.
    expect(startup).toMatch(/name="\$\(md instance\/name\)"/);
    expect(startup).toMatch(/printf 'INSTANCE_ID=%s\\n' "\$name"/);
    expect(startup).toMatch(/printf 'WAFLEET_HOSTNAME=%s\\n' "\$name"/);

    expect(unknownVariables(migVariables(`${reconcilerEnv}\nMAX_ACOUNTS=30\n`, startup, unit), 'x').join()).toMatch(/MAX_ACOUNTS/);
    expect(migEnvProblems(`${reconcilerEnv}\nINSTANCE_ID=wafleet-1\n`).join()).toMatch(/sets INSTANCE_ID/);
    expect(migEnvProblems(`${reconcilerEnv}\nBACKUP_KEY=abc\n`).join()).toMatch(/sets BACKUP_KEY/);
    expect(migEnvProblems(reconcilerEnv.replace('DRAIN_ON_SIGTERM=true', 'DRAIN_ON_SIGTERM=false')).join()).toMatch(/DRAIN_ON_SIGTERM/);
  });

  it("the unit's drop-in stops above the drain and shutdown budget, within Compute Engine's window, and changes nothing else", () => {
    expect(dropInProblems('deploy/wafleet-reconciler.service', 'deploy/mig/reconciler.env')).toEqual([]);
    const dir = mkdtempSync(path.join(tmpdir(), 'wafleet-mig-'));
    // A drain that cannot fit the window is refused, not silently cut short.
    const tooLong = path.join(dir, 'long.env');
    writeFileSync(tooLong, reconcilerEnv.replace('DRAIN_TIMEOUT_MS=45000', 'DRAIN_TIMEOUT_MS=120000'));
    expect(dropInProblems('deploy/wafleet-reconciler.service', tooLong).join()).toMatch(/unit-dropin\.sh failed: .*Compute Engine cuts a VM off/);
    // A unit whose publish line changed is refused too, so the drop-in cannot drift from it.
    const otherUnit = path.join(dir, 'unit.service');
    writeFileSync(otherUnit, unit.replace('--publish 127.0.0.1:8080:8080', '--publish 127.0.0.1:9090:8080'));
    expect(dropInProblems(otherUnit, 'deploy/mig/reconciler.env').join()).toMatch(/no longer has '--publish/);
  });

  it('the group recreates under the same name with no surge, autoheals on /healthz, and rolls out one VM at a time', () => {
    const createGroup = read('deploy/mig/create-group.sh');
    const rollout = read('deploy/mig/rollout.sh');
    expect(groupPolicyProblems(createGroup, rollout)).toEqual([]);
    expect(groupPolicyProblems(createGroup.replace('--update-policy-max-surge=0', '--update-policy-max-surge=1'), rollout).join()).toMatch(/max surge 0/);
    expect(groupPolicyProblems(createGroup.replace('--update-policy-replacement-method=recreate', '--update-policy-replacement-method=substitute'), rollout).join()).toMatch(/RECREATE/);
    expect(groupPolicyProblems(createGroup.replace('--request-path=/healthz', '--request-path=/health'), rollout).join()).toMatch(/health check asks \/health/);
    expect(groupPolicyProblems(createGroup.replace(/^port=8080/m, 'port=9090'), rollout).join()).toMatch(/port 9090/);
    expect(groupPolicyProblems(createGroup, rollout.replace('--instances="$vm"', '--all-instances')).join()).toMatch(/one VM at a time|one named VM/);
  });

  it('attaches each VM its own disk under the device name prepare-disk.sh looks for', () => {
    expect(read('deploy/mig/common.sh')).toMatch(/^device_name="wafleet-sessions"/m);
    expect(read('deploy/prepare-disk.sh')).toContain('/dev/disk/by-id/google-wafleet-sessions');
    expect(read('deploy/mig/add-instance.sh')).toMatch(/--stateful-disk="device-name=\$device_name,source=projects\/\$project\/zones\/\$vm_zone\/disks\/\$disk,mode=rw,auto-delete=never"/);
  });
});

describe('deploy shell scripts', () => {
  const scripts = [
    ...readdirSync(path.join(root, 'deploy', 'mig')).filter((f) => f.endsWith('.sh')).map((f) => `deploy/mig/${f}`),
    'deploy/prepare-disk.sh',
    'deploy/upgrade.sh',
  ];

  it('pass bash -n, and the executable ones set -euo pipefail', () => {
    expect(scripts.length).toBeGreaterThan(6);
    for (const s of scripts) {
      const r = bash(['-n', s]);
      expect(r.status, `${s}: ${r.stderr}`).toBe(0);
      if (!s.endsWith('common.sh')) expect(read(s), s).toMatch(/^set -euo pipefail$/m);
    }
    const dir = mkdtempSync(path.join(tmpdir(), 'wafleet-bash-'));
    const bad = path.join(dir, 'bad.sh');
    writeFileSync(bad, 'if true; then\n  echo unterminated\n');
    expect(bash(['-n', bad]).status).not.toBe(0);
  });

  it('common.sh refuses a group that is neither zonal nor regional, or both', () => {
    const run = (env: Record<string, string>) => bash(['-c', 'source deploy/mig/common.sh && echo "$scope $region $regional"'], { PROJECT: 'my-wafleet', ZONE: '', REGION: '', ZONES: '', ...env });
    expect(run({ ZONE: 'europe-west1-b' }).stdout.trim()).toBe('--zone=europe-west1-b europe-west1 0');
    expect(run({ REGION: 'europe-west1', ZONES: 'europe-west1-b,europe-west1-c' }).stdout.trim()).toBe('--region=europe-west1 europe-west1 1');
    expect(run({}).status).toBe(2);
    expect(run({ ZONE: 'europe-west1-b', ZONES: 'europe-west1-c' }).status).toBe(2);
  });
});
