/**
 * The callable admin API (every callable checks the caller's current role in Auth; see
 * docs/data-model.md, "Security model") and the scheduled watchdog ("Is this status live?").
 */
import './global-options.ts';

export { createAccount, deleteAccount, relinkAccount, requestQr, updateAccount } from './handlers/accounts.ts';
export { acknowledgeIncident } from './handlers/incidents.ts';
export { drainInstance } from './handlers/instances.ts';
export { cancelMessage, sendMessage } from './handlers/messages.ts';
export { setUserRole } from './handlers/users.ts';
export { watchdog } from './handlers/watchdog.ts';
