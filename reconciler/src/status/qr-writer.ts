/**
 * `accountQr/{accountId}`: the link code a person scans or types. Every rotation is published with
 * a PNG data URL (the apps show it as is), an expiry and an increasing sequence; the document is
 * deleted as soon as the device is linked, so a stale code is never shown.
 */
import { Collections } from '@wafleet/contract';
import { FieldValue, Timestamp, type Firestore } from 'firebase-admin/firestore';
import QRCode from 'qrcode';
import type { CoalescingWriter } from './coalescing-writer.ts';

export class QrWriter {
  private readonly sequence = new Map<string, number>();

  constructor(
    private readonly db: Firestore,
    private readonly writer: CoalescingWriter,
  ) {}

  private ref(accountId: string) {
    return this.db.collection(Collections.accountQr).doc(accountId);
  }

  private next(accountId: string): number {
    const n = (this.sequence.get(accountId) ?? 0) + 1;
    this.sequence.set(accountId, n);
    return n;
  }

  async publishQr(accountId: string, qr: string, validForMs: number): Promise<void> {
    const qrPng = await QRCode.toDataURL(qr, { errorCorrectionLevel: 'M', margin: 2, width: 264 });
    const sequence = this.next(accountId);
    const expiresAt = Timestamp.fromMillis(Date.now() + validForMs);
    await this.writer.submit(accountId, this.ref(accountId), {
      kind: 'set',
      build: (owner) => ({ kind: 'qr', qr, qrPng, pairingCode: null, sequence, expiresAt, owner, updatedAt: FieldValue.serverTimestamp() }),
    });
  }

  async publishPairingCode(accountId: string, code: string, validForMs: number): Promise<void> {
    const sequence = this.next(accountId);
    const expiresAt = Timestamp.fromMillis(Date.now() + validForMs);
    await this.writer.submit(accountId, this.ref(accountId), {
      kind: 'set',
      build: (owner) => ({ kind: 'pairingCode', qr: null, qrPng: null, pairingCode: code, sequence, expiresAt, owner, updatedAt: FieldValue.serverTimestamp() }),
    });
  }

  /** Linked, expired, or the account went away: no code must remain visible. */
  clear(accountId: string): Promise<void> {
    this.sequence.delete(accountId);
    const ref = this.ref(accountId);
    // Read first: deleting a document that is not there would still cost a write every login.
    return this.writer.submit(accountId, ref, {
      kind: 'transaction',
      apply: async (tx) => {
        if ((await tx.get(ref)).exists) tx.delete(ref);
      },
    });
  }
}
