/** The callable admin API. Every callable checks the caller's role claim; see docs/data-model.md. */
export { createAccount, deleteAccount, relinkAccount, requestQr, updateAccount } from './handlers/accounts.ts';
export { acknowledgeIncident } from './handlers/incidents.ts';
export { cancelMessage, sendMessage } from './handlers/messages.ts';
export { setUserRole } from './handlers/users.ts';
