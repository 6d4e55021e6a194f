/**
 * Which client versions the simulated server accepts. WhatsApp refuses a client whose
 * ClientPayload.userAgent.appVersion it no longer supports with `<failure reason="405">` at login
 * (Baileys: DisconnectReason 405, "client outdated"). The simulator refuses versions below a
 * minimum and any version on a deny list; with neither, every version is accepted (the default).
 * A leaf module: it imports nothing of the simulator's own.
 */
import type { proto } from '@whiskeysockets/baileys';
import { SimInputError } from './errors.ts';

/** `[primary, secondary, tertiary]`, as Baileys' `version` option, e.g. `[2, 3000, 1043857760]`. */
export type ClientVersion = [number, number, number];

export interface ClientVersionPolicy {
  /** Versions below this are refused (null: no minimum). */
  minVersion: ClientVersion | null;
  /** Exactly these versions are refused. */
  deniedVersions: ClientVersion[];
}

export type ClientVersionPolicyInput = Partial<ClientVersionPolicy>;

export const OPEN_POLICY: Readonly<ClientVersionPolicy> = Object.freeze({ minVersion: null, deniedVersions: [] });

const UINT32_MAX = 4_294_967_295;

function version(v: unknown, name: string): ClientVersion {
  if (!Array.isArray(v) || v.length !== 3 || !v.every((p) => typeof p === 'number' && Number.isInteger(p) && p >= 0 && p <= UINT32_MAX)) {
    throw new SimInputError(`${name} must be [major, minor, patch] (three integers 0..${UINT32_MAX}), got ${JSON.stringify(v)}`);
  }
  return [v[0], v[1], v[2]] as ClientVersion;
}

/** Validates `input` over `base` (fields left out keep their value); throws SimInputError. */
export function validateClientVersionPolicy(input: unknown, base: ClientVersionPolicy = OPEN_POLICY): ClientVersionPolicy {
  if (!input || typeof input !== 'object' || Array.isArray(input)) throw new SimInputError('expected { minVersion?, deniedVersions? }');
  const i = input as Record<string, unknown>;
  const minVersion = i['minVersion'] === undefined ? base.minVersion : i['minVersion'] === null ? null : version(i['minVersion'], 'minVersion');
  let deniedVersions = base.deniedVersions;
  if (i['deniedVersions'] !== undefined) {
    const list = i['deniedVersions'];
    if (!Array.isArray(list) || list.length > 100) throw new SimInputError('deniedVersions must be an array of at most 100 versions');
    deniedVersions = list.map((v, n) => version(v, `deniedVersions[${n}]`));
  }
  return { minVersion: minVersion ? [...minVersion] : null, deniedVersions: deniedVersions.map((v) => [...v] as ClientVersion) };
}

/** The version a ClientPayload announces; null when it names none. */
export function clientVersionOf(payload: proto.IClientPayload): ClientVersion | null {
  const v = payload.userAgent?.appVersion;
  if (!v || v.primary == null || v.secondary == null || v.tertiary == null) return null;
  return [Number(v.primary), Number(v.secondary), Number(v.tertiary)];
}

export function compareVersions(a: ClientVersion, b: ClientVersion): number {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i]! < b[i]! ? -1 : 1;
  return 0;
}

export const formatVersion = (v: ClientVersion | null): string => (v ? v.join('.') : 'none');

/** Why `v` is refused under `policy` (for the event log), or null when it is accepted. */
export function versionRefusal(policy: ClientVersionPolicy, v: ClientVersion | null): string | null {
  if (!policy.minVersion && policy.deniedVersions.length === 0) return null;
  if (!v) return 'the client announced no version';
  if (policy.minVersion && compareVersions(v, policy.minVersion) < 0) return `client version ${formatVersion(v)} is below the minimum ${formatVersion(policy.minVersion)}`;
  if (policy.deniedVersions.some((d) => compareVersions(d, v) === 0)) return `client version ${formatVersion(v)} is denied`;
  return null;
}
