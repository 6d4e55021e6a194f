import { proto } from '@whiskeysockets/baileys';
import { type KeyPair, newKeyPair, sign, verify } from './keys.ts';

/** The root's serial; Baileys compares the intermediate's issuerSerial with WA_CERT_DETAILS.SERIAL (0). */
export const ROOT_SERIAL = 0;
const INTERMEDIATE_SERIAL = 1;
const LEAF_SERIAL = 2;
const DAY_S = 24 * 60 * 60;

export interface ServerNoiseIdentity {
  /** Static key the server proves in the Noise XX handshake; the leaf certificate certifies it. */
  serverStatic: KeyPair;
  /** Encoded `CertChain` (intermediate + leaf) sent encrypted in ServerHello. */
  certChain: Uint8Array;
}

function certificate(details: proto.CertChain.NoiseCertificate.IDetails, issuer: KeyPair) {
  const encoded = proto.CertChain.NoiseCertificate.Details.encode(details).finish();
  return { details: encoded, signature: sign(issuer.private, encoded) };
}

/**
 * Builds root → intermediate → leaf the way WhatsApp's chain is shaped: the root signs the
 * intermediate's details, the intermediate signs the leaf's, and the leaf names the server's static key.
 * A fresh intermediate and server key per simulator run is fine: clients only pin the root.
 */
export function issueCertChain(root: KeyPair, now = Math.floor(Date.now() / 1000)): ServerNoiseIdentity {
  const intermediateKey = newKeyPair();
  const serverStatic = newKeyPair();
  const notBefore = now - DAY_S;
  const notAfter = now + 365 * DAY_S;
  const intermediate = certificate(
    { serial: INTERMEDIATE_SERIAL, issuerSerial: ROOT_SERIAL, key: intermediateKey.public, notBefore, notAfter },
    root,
  );
  const leaf = certificate(
    { serial: LEAF_SERIAL, issuerSerial: INTERMEDIATE_SERIAL, key: serverStatic.public, notBefore, notAfter },
    intermediateKey,
  );
  const certChain = proto.CertChain.encode({ intermediate, leaf }).finish();
  return { serverStatic, certChain };
}

/** Strict check of a chain against a root key (Baileys' own check accepts any signature, see keys.ts). */
export function verifyCertChain(
  certChain: Uint8Array,
  rootPublicKey: Uint8Array,
  serverStaticPublicKey?: Uint8Array,
): { ok: true } | { ok: false; reason: string } {
  let chain: proto.CertChain;
  try {
    chain = proto.CertChain.decode(certChain);
  } catch {
    return { ok: false, reason: 'malformed chain' };
  }
  const inter = chain.intermediate;
  const leaf = chain.leaf;
  if (!inter?.details || !inter.signature || !leaf?.details || !leaf.signature) {
    return { ok: false, reason: 'incomplete chain' };
  }
  if (!verify(rootPublicKey, inter.details, inter.signature)) {
    return { ok: false, reason: 'intermediate not signed by root' };
  }
  const interDetails = proto.CertChain.NoiseCertificate.Details.decode(inter.details);
  if (interDetails.issuerSerial !== ROOT_SERIAL) return { ok: false, reason: 'intermediate issuer serial' };
  if (!interDetails.key || !verify(interDetails.key, leaf.details, leaf.signature)) {
    return { ok: false, reason: 'leaf not signed by intermediate' };
  }
  const leafDetails = proto.CertChain.NoiseCertificate.Details.decode(leaf.details);
  if (leafDetails.issuerSerial !== interDetails.serial) return { ok: false, reason: 'leaf issuer serial' };
  if (serverStaticPublicKey && !Buffer.from(leafDetails.key ?? []).equals(Buffer.from(serverStaticPublicKey))) {
    return { ok: false, reason: 'leaf does not certify the server static key' };
  }
  return { ok: true };
}
