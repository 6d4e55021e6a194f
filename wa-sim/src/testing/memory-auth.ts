import { type AuthenticationCreds, type AuthenticationState, initAuthCreds, type SignalDataTypeMap, type SignalKeyStore } from '@whiskeysockets/baileys';

/**
 * Baileys auth state kept in memory: fresh creds plus a plain key store. Reuse the same object
 * for the next socket (after 515, or to log in again) as an app would reuse its stored auth.
 */
export function memoryAuthState(creds: AuthenticationCreds = initAuthCreds()): AuthenticationState {
  const data = new Map<string, Map<string, unknown>>();
  const keys: SignalKeyStore = {
    get<T extends keyof SignalDataTypeMap>(type: T, ids: string[]) {
      const bucket = data.get(type);
      const out: { [id: string]: SignalDataTypeMap[T] } = {};
      for (const id of ids) {
        const v = bucket?.get(id);
        if (v !== undefined) out[id] = v as SignalDataTypeMap[T];
      }
      return out;
    },
    set(update) {
      for (const [type, values] of Object.entries(update)) {
        let bucket = data.get(type);
        if (!bucket) data.set(type, (bucket = new Map()));
        for (const [id, value] of Object.entries(values ?? {})) {
          if (value === null || value === undefined) bucket.delete(id);
          else bucket.set(id, value);
        }
      }
    },
    clear() {
      data.clear();
    },
  };
  return { creds, keys };
}
