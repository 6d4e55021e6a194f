import { emulatorHosts } from './emulators.ts';

export type CallResult<T = unknown> =
  | { ok: true; data: T }
  | { ok: false; httpStatus: number; status: string; message: string; details: unknown };

/** Calls a callable over HTTP through the Functions emulator, as the Firebase client SDK would. */
export async function callFunction<T = unknown>(name: string, data: unknown, idToken?: string): Promise<CallResult<T>> {
  const { functionsUrl } = emulatorHosts();
  const res = await fetch(`${functionsUrl}/${name}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(idToken ? { authorization: `Bearer ${idToken}` } : {}) },
    body: JSON.stringify({ data }),
    signal: AbortSignal.timeout(30_000),
  });
  const body = (await res.json()) as { result?: T; error?: { status: string; message: string; details?: unknown } };
  if (res.ok && body.error === undefined) return { ok: true, data: body.result as T };
  const error = body.error ?? { status: 'UNKNOWN', message: `HTTP ${res.status}` };
  return { ok: false, httpStatus: res.status, status: error.status, message: error.message, details: error.details };
}
