/**
 * Options every function shares. Imported first by index.ts: setGlobalOptions only affects
 * functions defined after it runs.
 *
 * The functions run as their own service account, not the default compute one (which new
 * projects may give the Editor role): `deploy/gcp-setup.sh` creates `wafleet-functions` with only
 * Firestore data access and Firebase Auth administration (docs/deploy.md, step 4). A value ending
 * in `@` is completed by firebase-tools with `<project>.iam.gserviceaccount.com`. The emulators
 * ignore it.
 */
import { setGlobalOptions } from 'firebase-functions/v2';
import { defineString } from 'firebase-functions/params';

export const FUNCTIONS_SERVICE_ACCOUNT = defineString('FUNCTIONS_SERVICE_ACCOUNT', {
  default: 'wafleet-functions@',
  description: 'Service account the functions run as (name@ or a full email).',
});

setGlobalOptions({ serviceAccount: FUNCTIONS_SERVICE_ACCOUNT });
