import {
  type BinaryNode,
  Curve,
  decodeBinaryNode,
  encodeBigEndian,
  encodeBinaryNode,
  extractE2ESessionFromRetryReceipt,
  signedKeyPair,
  xmppPreKey,
  xmppSignedPreKey,
} from '@whiskeysockets/baileys';
import { describe, expect, it } from 'vitest';
import { MAX_MSG_RETRY_COUNT, parseRetryReceipt, RECREATE_SESSION_TIMEOUT_MS, RetryPolicy, type RetryInput } from '../src/retry.ts';

const identity = Curve.generateKeyPair();
const signed = signedKeyPair(identity, 7);
const oneTime = Curve.generateKeyPair();
const REGISTRATION = 0x1234;

/** A retry receipt exactly as Baileys' sendRetryRequest builds one (Socket/messages-recv.js), keys optional. */
function baileysRetryReceipt(opts: { count?: string; keys?: BinaryNode | null; mutateKeys?: (content: BinaryNode[]) => void } = {}): BinaryNode {
  const content: BinaryNode[] = [
    { tag: 'retry', attrs: { count: opts.count ?? '2', id: 'MSG-1', t: '1700000000', v: '1', error: '0' } },
    { tag: 'registration', attrs: {}, content: encodeBigEndian(REGISTRATION) },
  ];
  if (opts.keys !== null) {
    const keys: BinaryNode[] = [
      { tag: 'type', attrs: {}, content: Buffer.from([5]) },
      { tag: 'identity', attrs: {}, content: identity.public },
      xmppPreKey(oneTime, 42),
      xmppSignedPreKey(signed),
      { tag: 'device-identity', attrs: {}, content: Buffer.from('adv') },
    ];
    opts.mutateKeys?.(keys);
    content.push(opts.keys ?? { tag: 'keys', attrs: {}, content: keys });
  }
  return { tag: 'receipt', attrs: { id: 'MSG-1', type: 'retry', to: '15550001111@s.whatsapp.net' }, content };
}

/** Through Baileys' own wire encoder and decoder, as the simulator receives it. */
async function overTheWire(node: BinaryNode): Promise<BinaryNode> {
  return decodeBinaryNode(encodeBinaryNode(node));
}

function replace(tag: string, node: BinaryNode | undefined): (content: BinaryNode[]) => void {
  return (content) => {
    const i = content.findIndex((c) => c.tag === tag);
    if (node) content.splice(i, 1, node);
    else content.splice(i, 1);
  };
}

describe('parseRetryReceipt', () => {
  it('reads count, registration and the key bundle of a Baileys retry receipt, as Baileys itself reads it', async () => {
    const node = await overTheWire(baileysRetryReceipt());
    const parsed = parseRetryReceipt(node, { expectedIdentity: identity.public });
    expect(parsed.ok).toBe(true);
    if (!parsed.ok) return;
    const { receipt } = parsed;
    expect(receipt).toMatchObject({ id: 'MSG-1', count: 2, registrationId: REGISTRATION });
    expect(receipt.keysError).toBeUndefined();
    const theirs = extractE2ESessionFromRetryReceipt(node)!;
    expect(receipt.keys!.registrationId).toBe(theirs.registrationId);
    expect(Buffer.from(receipt.keys!.identityKey)).toEqual(Buffer.from(identity.public));
    expect(receipt.keys!.signedPreKey.keyId).toBe(theirs.signedPreKey.keyId);
    expect(Buffer.from(receipt.keys!.signedPreKey.signature)).toEqual(Buffer.from(theirs.signedPreKey.signature));
    expect(receipt.keys!.preKey).toEqual({ keyId: 42, publicKey: expect.any(Uint8Array) });
    expect(Buffer.from(receipt.keys!.preKey!.publicKey)).toEqual(Buffer.from(oneTime.public));
  });

  it('a first retry receipt has no keys', async () => {
    const parsed = parseRetryReceipt(await overTheWire(baileysRetryReceipt({ count: '1', keys: null })));
    expect(parsed).toEqual({ ok: true, receipt: { id: 'MSG-1', count: 1, errorCode: 0, registrationId: REGISTRATION } });
  });

  const malformedKeys: Array<[string, Parameters<typeof baileysRetryReceipt>[0], RegExp]> = [
    ['wrong key type byte', { mutateKeys: replace('type', { tag: 'type', attrs: {}, content: Buffer.from([6]) }) }, /type/],
    ['a 31-byte identity', { mutateKeys: replace('identity', { tag: 'identity', attrs: {}, content: identity.public.subarray(1) }) }, /identity/],
    ['no identity', { mutateKeys: replace('identity', undefined) }, /identity/],
    ['no signed pre-key', { mutateKeys: replace('skey', undefined) }, /skey/],
    [
      'a signed pre-key signed by another identity',
      { mutateKeys: replace('skey', xmppSignedPreKey(signedKeyPair(Curve.generateKeyPair(), 7))) },
      /signature/,
    ],
    [
      'a truncated signature',
      { mutateKeys: replace('skey', { ...xmppSignedPreKey(signed), content: [...(xmppSignedPreKey(signed).content as BinaryNode[]).slice(0, 2), { tag: 'signature', attrs: {}, content: Buffer.alloc(10) }] }) },
      /skey/,
    ],
    ['a 2-byte pre-key id', { mutateKeys: replace('key', { tag: 'key', attrs: {}, content: [{ tag: 'id', attrs: {}, content: Buffer.from([0, 42]) }, { tag: 'value', attrs: {}, content: oneTime.public }] }) }, /<key>/],
    ['a pre-key without value', { mutateKeys: replace('key', { tag: 'key', attrs: {}, content: [{ tag: 'id', attrs: {}, content: encodeBigEndian(42, 3) }] }) }, /<key>/],
    ['<keys> as a string', { keys: { tag: 'keys', attrs: {}, content: 'not a list' } }, /no children/],
    ['<keys> empty', { keys: { tag: 'keys', attrs: {}, content: [] } }, /type/],
  ];
  for (const [what, opts, error] of malformedKeys) {
    it(`keys with ${what}: reported in keysError, the receipt is still usable without keys`, async () => {
      const parsed = parseRetryReceipt(await overTheWire(baileysRetryReceipt(opts)), { expectedIdentity: identity.public });
      expect(parsed.ok).toBe(true);
      if (!parsed.ok) return;
      expect(parsed.receipt.keys).toBeUndefined();
      expect(parsed.receipt.keysError).toMatch(error);
      expect(parsed.receipt).toMatchObject({ id: 'MSG-1', count: 2 });
    });
  }

  it('string contents (possible in a decoded node, never key material) are rejected', () => {
    const node = baileysRetryReceipt({
      keys: { tag: 'keys', attrs: {}, content: [{ tag: 'type', attrs: {}, content: '\u0005' }, { tag: 'identity', attrs: {}, content: 'x'.repeat(32) }] },
    });
    const parsed = parseRetryReceipt(node);
    expect(parsed.ok && parsed.receipt.keysError).toMatch(/identity/);
  });

  it('keys of an identity other than the linked device’s are rejected', async () => {
    const parsed = parseRetryReceipt(await overTheWire(baileysRetryReceipt()), { expectedIdentity: Curve.generateKeyPair().public });
    expect(parsed.ok && parsed.receipt.keysError).toMatch(/not the linked device identity/);
  });

  it('keys without a <registration> are rejected', async () => {
    const node = baileysRetryReceipt();
    node.content = (node.content as BinaryNode[]).filter((c) => c.tag !== 'registration');
    const parsed = parseRetryReceipt(await overTheWire(node));
    expect(parsed.ok && parsed.receipt.keysError).toMatch(/registration/);
  });

  it('without a usable <retry count> the receipt is malformed as a whole; nothing throws', async () => {
    const noRetry = baileysRetryReceipt();
    noRetry.content = (noRetry.content as BinaryNode[]).filter((c) => c.tag !== 'retry');
    for (const [node, error] of [
      [noRetry, /no <retry>/],
      [baileysRetryReceipt({ count: 'abc' }), /bad retry count/],
      [baileysRetryReceipt({ count: '0' }), /bad retry count/],
      [baileysRetryReceipt({ count: '-1' }), /bad retry count/],
      [{ tag: 'receipt', attrs: { type: 'retry' }, content: 'garbage' } as BinaryNode, /no <retry>/],
      [{ tag: 'receipt', attrs: { type: 'retry' }, content: [{ tag: 'retry', attrs: { count: '1' } }] } as BinaryNode, /no message id/],
    ] as const) {
      const parsed = parseRetryReceipt(node);
      expect(parsed.ok).toBe(false);
      if (!parsed.ok) expect(parsed.error).toMatch(error);
    }
  });
});

describe('RetryPolicy', () => {
  const base: RetryInput = { messageId: 'M', deviceJid: '1:1@s.whatsapp.net', address: '1.1', count: 1, hasKeys: false, hasSession: true, registrationChanged: false };

  it('count 1 without keys: the current session; with keys: a new session from them', () => {
    const policy = new RetryPolicy();
    expect(policy.decide(base)).toEqual({ action: 'resend' });
    expect(policy.decide({ ...base, count: 2, hasKeys: true })).toEqual({ action: 'resend', rebuild: { from: 'receipt-keys', reason: expect.any(String) } });
  });

  it('no session, or a changed registration id: a server bundle', () => {
    const policy = new RetryPolicy();
    expect(policy.decide({ ...base, hasSession: false })).toMatchObject({ rebuild: { from: 'server-bundle' } });
    expect(policy.decide({ ...base, messageId: 'N', registrationChanged: true })).toMatchObject({ rebuild: { from: 'server-bundle' } });
  });

  it('a MAC error reason (4 or 7) without keys: a server bundle at once; other reasons do not', () => {
    const policy = new RetryPolicy();
    expect(policy.decide({ ...base, errorCode: 7 })).toMatchObject({ rebuild: { from: 'server-bundle', reason: expect.stringMatching(/MAC/) } });
    expect(policy.decide({ ...base, messageId: 'N', errorCode: 4 })).toMatchObject({ rebuild: { from: 'server-bundle' } });
    expect(policy.decide({ ...base, messageId: 'O', errorCode: 0 })).toEqual({ action: 'resend' });
  });

  it('count >= 2 without keys: a server bundle at most once an hour per device', () => {
    const policy = new RetryPolicy();
    const t0 = 1_000_000;
    expect(policy.decide({ ...base, count: 2 }, t0)).toMatchObject({ rebuild: { from: 'server-bundle' } });
    policy.recordRebuild(base.address, t0);
    expect(policy.decide({ ...base, count: 3 }, t0 + 1_000)).toEqual({ action: 'resend' });
    expect(policy.decide({ ...base, messageId: 'later', count: 2 }, t0 + RECREATE_SESSION_TIMEOUT_MS + 1)).toMatchObject({ rebuild: { from: 'server-bundle' } });
  });

  it(`answers at most ${MAX_MSG_RETRY_COUNT} retry receipts per message and device`, () => {
    const policy = new RetryPolicy();
    for (let i = 1; i <= MAX_MSG_RETRY_COUNT; i++) expect(policy.decide({ ...base, count: i, hasKeys: true }).action).toBe('resend');
    expect(policy.decide({ ...base, count: MAX_MSG_RETRY_COUNT + 1, hasKeys: true })).toMatchObject({ action: 'refuse' });
    // Another device of the same account, or another message, has its own budget.
    expect(policy.decide({ ...base, deviceJid: '1:2@s.whatsapp.net' }).action).toBe('resend');
    expect(policy.decide({ ...base, messageId: 'other' }).action).toBe('resend');
  });
});
