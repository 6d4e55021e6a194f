/**
 * The one way a callable is defined: authenticate, authorize by the caller's CURRENT role claim,
 * validate input with the shared contract, run, and turn every failure into an HttpsError with
 * the right code. Unexpected errors become `internal` with a reference id; the details go to the
 * function log (without the request payload, which may hold phone numbers or message text).
 */
import { randomUUID } from 'node:crypto';
import { CALLABLES, formatZodError, firstZodField, type CallableInput, type CallableName, type Role } from '@wafleet/contract';
import { logger } from 'firebase-functions';
import { defineBoolean } from 'firebase-functions/params';
import { HttpsError, onCall, type CallableRequest } from 'firebase-functions/v2/https';
import { currentCaller, type Caller } from './current-caller.ts';
import { auth } from './firebase.ts';

export type { Caller };

/**
 * On unless a deploy says otherwise: functions/.env sets it for every project, and
 * functions/.env.demo-wafleet turns it off for the emulators (their clients have no App Check
 * provider). See "App Check" in docs/data-model.md.
 */
export const ENFORCE_APP_CHECK = defineBoolean('ENFORCE_APP_CHECK', {
  default: true,
  description: 'Refuse callable requests without a valid App Check token.',
});

/**
 * firebase-functions resolves the parameter with `.value()` inside onCall(), which also runs when
 * the CLI loads the code to discover the functions (deploy, emulator start), where `.value()` warns
 * "usually a mistake" once per callable. The manifest has no App Check field, so what it resolves
 * to there is irrelevant; at runtime the parameter decides.
 */
const enforceAppCheck = () => (process.env.FUNCTIONS_CONTROL_API === 'true' ? true : ENFORCE_APP_CHECK);

export type Handler<N extends CallableName, R> = (input: CallableInput<N>, caller: Caller) => Promise<R>;

export function defineCallable<N extends CallableName, R>(name: N, handler: Handler<N, R>) {
  const spec = CALLABLES[name];
  return onCall({ cors: true, enforceAppCheck: enforceAppCheck(), maxInstances: 10, timeoutSeconds: 30 }, async (request: CallableRequest<unknown>) => {
    const caller = await authorize(name, request, spec.role);
    const parsed = spec.input.safeParse(request.data ?? {});
    if (!parsed.success) {
      throw new HttpsError('invalid-argument', formatZodError(parsed.error), {
        field: firstZodField(parsed.error),
        issues: parsed.error.issues.map((i) => ({ field: i.path.map(String).join('.'), message: i.message })),
      });
    }
    try {
      return await handler(parsed.data as CallableInput<N>, caller);
    } catch (err) {
      if (err instanceof HttpsError) throw err;
      const ref = randomUUID();
      logger.error(`${name} failed`, { ref, uid: caller.uid, error: err instanceof Error ? err.stack ?? err.message : String(err) });
      throw new HttpsError('internal', `${name} failed unexpectedly (reference ${ref})`);
    }
  });
}

/**
 * firebase-functions verifies the ID token's signature and expiry but not revocation, and the
 * token's claims are those of its last refresh (up to an hour old). So every call re-reads the
 * user from Auth: a demotion, a removal, a disabled user or revoked sessions bite at once.
 */
async function authorize(name: CallableName, request: CallableRequest<unknown>, need: Role): Promise<Caller> {
  if (!request.auth?.token) throw new HttpsError('unauthenticated', 'sign in first');
  try {
    return await currentCaller(auth(), request.auth.token, need);
  } catch (err) {
    if (err instanceof HttpsError) throw err;
    const ref = randomUUID();
    logger.error(`${name}: reading the caller from Auth failed`, { ref, uid: request.auth.uid, error: err instanceof Error ? err.message : String(err) });
    throw new HttpsError('unavailable', `could not check your role just now; try again (reference ${ref})`);
  }
}
