/**
 * tools/grant-role.ts, the bootstrap of the first admin, run as an operator runs it, against the
 * Auth emulator (issue 10, item 4): by email only to a verified address unless told otherwise.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { adminAuth, authTimeOf, signInAs } from '../../test/support/auth.ts';
import { FUNCTIONS_PROJECT } from '../../test/support/emulators.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

function grantRole(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', 'tools/grant-role.ts', ...args, '--project', FUNCTIONS_PROJECT], { cwd: root, timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

const roleOf = async (uid: string) => (await adminAuth().getUser(uid)).customClaims?.role ?? null;

describe('grant-role', () => {
  it('refuses an unverified email unless --allow-unverified is given', async () => {
    const user = await signInAs(null, 'bootstrap');
    const refused = await grantRole(user.email, 'admin');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/has not verified the address/);
    expect(await roleOf(user.uid)).toBeNull();
    const allowed = await grantRole(user.email, 'admin', '--allow-unverified');
    expect(allowed.code, allowed.stderr).toBe(0);
    expect(await roleOf(user.uid)).toBe('admin');
  });

  it('grants to a verified email, and by uid', async () => {
    const [verified, byUid] = await Promise.all([signInAs(null, 'verified', { emailVerified: true }), signInAs(null, 'byuid')]);
    expect((await grantRole(verified.email, 'operator')).code).toBe(0);
    expect(await roleOf(verified.uid)).toBe('operator');
    const res = await grantRole('--uid', byUid.uid, 'viewer');
    expect(res.code, res.stderr).toBe(0);
    expect(await roleOf(byUid.uid)).toBe('viewer');
  });

  it('revokes the sessions of a user it demotes', async () => {
    const user = await signInAs('admin', 'demote-me');
    const res = await grantRole('--uid', user.uid, 'none');
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toMatch(/refresh tokens were revoked/);
    const validSince = (await adminAuth().getUser(user.uid)).tokensValidAfterTime;
    // Second precision: the revocation came no earlier than the sign-in.
    expect(validSince && Date.parse(validSince)).toBeGreaterThanOrEqual(authTimeOf(user.idToken) * 1000);
  });
});
