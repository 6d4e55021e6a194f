import { proto, WA_CERT_DETAILS } from '@whiskeysockets/baileys';
import { describe, expect, it } from 'vitest';
import { issueCertChain, trustSimulatorRoot, verifyCertChain } from '../src/index.ts';
import { newKeyPair } from '../src/keys.ts';
import { useSimulator } from './helpers.ts';

const { sim } = useSimulator();

describe('certificate chain', () => {
  it('root → intermediate → leaf verifies against the root and names the server static key', () => {
    const root = newKeyPair();
    const identity = issueCertChain(root);
    expect(verifyCertChain(identity.certChain, root.public, identity.serverStatic.public)).toEqual({ ok: true });
  });

  it('does not verify against another root, or with a tampered leaf signature', () => {
    const root = newKeyPair();
    const identity = issueCertChain(root);
    expect(verifyCertChain(identity.certChain, newKeyPair().public)).toMatchObject({ ok: false, reason: 'intermediate not signed by root' });
    const chain = proto.CertChain.decode(identity.certChain);
    const signature = Buffer.from(chain.leaf!.signature!);
    signature[0] = signature[0]! ^ 0x01;
    const tampered = proto.CertChain.encode({ intermediate: chain.intermediate, leaf: { details: chain.leaf!.details, signature } }).finish();
    expect(verifyCertChain(tampered, root.public)).toMatchObject({ ok: false, reason: 'leaf not signed by intermediate' });
    expect(verifyCertChain(Buffer.from('garbage'), root.public)).toMatchObject({ ok: false });
  });

  it('the running simulator serves a chain signed by its exported root key', () => {
    const { certChain, serverStatic } = sim().core.identity;
    expect(verifyCertChain(certChain, sim().rootPublicKey, serverStatic.public)).toEqual({ ok: true });
    expect(Buffer.from(sim().rootPublicKeyBase64, 'base64').equals(Buffer.from(sim().rootPublicKey))).toBe(true);
  });
});

describe('trustSimulatorRoot', () => {
  it('swaps Baileys’ pinned root (also from base64) and restores the previous one', () => {
    const before = WA_CERT_DETAILS.PUBLIC_KEY;
    const key = newKeyPair().public;
    const restore = trustSimulatorRoot(Buffer.from(key).toString('base64'));
    expect(Buffer.from(WA_CERT_DETAILS.PUBLIC_KEY).equals(Buffer.from(key))).toBe(true);
    expect(WA_CERT_DETAILS.SERIAL).toBe(0);
    restore();
    restore(); // idempotent
    expect(WA_CERT_DETAILS.PUBLIC_KEY).toBe(before);
  });

  it('rejects keys that are not 32 bytes', () => {
    expect(() => trustSimulatorRoot(new Uint8Array(31))).toThrow(/32 bytes/);
  });
});
