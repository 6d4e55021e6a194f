import { callFunction as call, type CallResult } from '../../tools/callables-client.ts';
import { emulatorHosts } from './emulators.ts';

export type { CallResult };

/** Calls a callable over HTTP through the Functions emulator, as the Firebase client SDK would. */
export function callFunction<T = unknown>(name: string, data: unknown, idToken?: string): Promise<CallResult<T>> {
  return call<T>(emulatorHosts().functionsUrl, name, data, idToken);
}
