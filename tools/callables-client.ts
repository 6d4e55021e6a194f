/** The callables over HTTP with an Auth-emulator ID token, as the apps' Firebase SDK calls them. */

export type CallResult<T = unknown> =
  | { ok: true; data: T }
  | { ok: false; httpStatus: number; status: string; message: string; details: unknown };

/** Signs in with email and password through the Auth emulator's REST API; returns the ID token. */
export async function signIn(authHost: string, email: string, password: string): Promise<string> {
  const res = await fetch(`http://${authHost}/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword?key=dev-api-key`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password, returnSecureToken: true }),
    signal: AbortSignal.timeout(10_000),
  });
  const body = (await res.json()) as { idToken?: string; error?: unknown };
  if (!res.ok || !body.idToken) throw new Error(`signing in ${email} failed: ${JSON.stringify(body.error)}`);
  return body.idToken;
}

/** Calls a callable; without an ID token, as a signed-out client. */
export async function callFunction<T = unknown>(functionsUrl: string, name: string, data: unknown, idToken?: string): Promise<CallResult<T>> {
  const res = await fetch(`${functionsUrl}/${name}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(idToken ? { authorization: `Bearer ${idToken}` } : {}) },
    body: JSON.stringify({ data }),
    // The first call loads the functions in the emulator, which takes seconds.
    signal: AbortSignal.timeout(30_000),
  });
  const body = (await res.json()) as { result?: T; error?: { status: string; message: string; details?: unknown } };
  if (res.ok && body.error === undefined) return { ok: true, data: body.result as T };
  const error = body.error ?? { status: 'UNKNOWN', message: `HTTP ${res.status}` };
  return { ok: false, httpStatus: res.status, status: error.status, message: error.message, details: error.details };
}
