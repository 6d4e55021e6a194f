/**
 * The one way a callable is defined: authenticate, authorize by role claim, validate input with
 * the shared contract, run, and turn every failure into an HttpsError with the right code.
 * Unexpected errors become `internal` with a reference id; the details go to the function log
 * (without the request payload, which may hold phone numbers or message text).
 */
import { randomUUID } from 'node:crypto';
import { CALLABLES, formatZodError, firstZodField, roleAtLeast, type CallableInput, type CallableName, type Role } from '@wafleet/contract';
import { logger } from 'firebase-functions';
import { HttpsError, onCall, type CallableRequest } from 'firebase-functions/v2/https';

export interface Caller {
  uid: string;
  role: Role;
  email: string | null;
}

export type Handler<N extends CallableName, R> = (input: CallableInput<N>, caller: Caller) => Promise<R>;

export function defineCallable<N extends CallableName, R>(name: N, handler: Handler<N, R>) {
  const spec = CALLABLES[name];
  return onCall({ cors: true, enforceAppCheck: false, maxInstances: 10, timeoutSeconds: 30 }, async (request: CallableRequest<unknown>) => {
    const caller = authorize(request, spec.role);
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

function authorize(request: CallableRequest<unknown>, need: Role): Caller {
  const token = request.auth?.token;
  if (!request.auth || !token) throw new HttpsError('unauthenticated', 'sign in first');
  const role = token.role;
  if (!roleAtLeast(role, need)) {
    const have = typeof role === 'string' ? `role "${role}"` : 'no role';
    throw new HttpsError('permission-denied', `this needs role "${need}" or higher; you have ${have}`);
  }
  return { uid: request.auth.uid, role: role as Role, email: typeof token.email === 'string' ? token.email : null };
}
