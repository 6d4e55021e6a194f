/** Words and colours for what the documents say. */

export const PHASE_WORDS: Record<string, string> = {
  pending: 'Pending',
  connecting: 'Connecting',
  awaitingScan: 'Waiting for scan',
  connected: 'Connected',
  reconnecting: 'Reconnecting',
  disconnected: 'Disconnected',
  needsLink: 'Needs link',
  loggedOut: 'Logged out',
  banned: 'Banned',
  error: 'Error',
};

/** Unknown phases (the set may grow) show as they are, in the neutral colour. */
export function phaseWords(phase: string | undefined): string {
  if (!phase) return 'No status yet';
  return PHASE_WORDS[phase] ?? phase;
}

export function phaseTone(phase: string | undefined): string {
  switch (phase) {
    case 'connected':
      return 'ok';
    case 'connecting':
    case 'reconnecting':
    case 'pending':
    case 'awaitingScan':
      return 'busy';
    case 'needsLink':
    case 'loggedOut':
    case 'disconnected':
      return 'idle';
    case 'banned':
    case 'error':
      return 'bad';
    default:
      return 'none';
  }
}

export interface TimeLike {
  toMillis(): number;
}

export function millis(t: unknown): number | null {
  return t && typeof (t as TimeLike).toMillis === 'function' ? (t as TimeLike).toMillis() : null;
}

export function ago(ms: number | null, now = Date.now()): string {
  if (ms === null) return '—';
  const s = Math.round((now - ms) / 1000);
  if (s < 0) return 'just now';
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return `${hrs} h ago`;
  return `${Math.floor(hrs / 24)} d ago`;
}

export function isoTime(ms: number | null): string {
  return ms === null ? '' : new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
}

/** Chat JIDs hold phone numbers: shown masked, like the reconciler masks the linked phone. */
export function maskJid(jid: string): string {
  const [user = '', server = ''] = jid.split('@');
  const digits = user.replace(/:.*$/, '').replace(/[^0-9-]/g, '');
  if (digits.length < 6) return jid;
  return `${digits.slice(0, 4)}${'•'.repeat(Math.max(0, digits.length - 6))}${digits.slice(-2)}@${server}`;
}

export function labelsText(labels: unknown): string {
  if (!labels || typeof labels !== 'object') return '';
  return Object.entries(labels as Record<string, string>)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');
}
