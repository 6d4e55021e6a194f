import { isValidNumber, lidJid, newLidUser, parseJid, pnJid } from './ids.ts';
import { b64, fromB64, type KeyPair } from './keys.ts';
import { SignalParty, type SignalPartyJSON } from './signal-party.ts';

/** WhatsApp lets a phone link at most four companion devices. */
export const MAX_LINKED_DEVICES = 4;

export type UserKind = 'phone' | 'contact';

/**
 * How WhatsApp addresses this user to others: by phone number (`…@s.whatsapp.net`, with
 * `sender_lid`) or, once the user's chats moved to LIDs, by LID (`…@lid`, with `sender_pn`).
 */
export type Addressing = 'pn' | 'lid';

export interface ReceiptDelays {
  /** Delay before the delivery receipt; null = never sent. */
  deliveredMs: number | null;
  /** Delay (from arrival) before the read receipt; null = never read. */
  readMs: number | null;
}

/** A companion device (a Baileys client) linked to a phone, as the server remembers it. */
export interface LinkedDevice {
  id: number;
  /** Noise static key the device authenticates with at every login. */
  noisePublicKey: Uint8Array;
  identityPublicKey: Uint8Array;
  registrationId: number;
  signedPreKey: { keyId: number; publicKey: Uint8Array; signature: Uint8Array };
  /** Uploaded one-time pre-keys not yet handed out. */
  preKeys: Map<number, Uint8Array>;
  keyIndex: number;
  platform: string;
  linkedAt: number;
  lastLoginAt?: number;
  /** Whether the phone already sent this device its initial history sync (once per link). */
  historySynced: boolean;
}

export interface ReceivedMessage {
  id: string;
  /** Sender device JID, e.g. `15550001001:2@s.whatsapp.net`. */
  from: string;
  /** Sender phone number. */
  fromNumber: string;
  text: string | undefined;
  /** Unix ms when the simulator decrypted it. */
  at: number;
  encType: 'pkmsg' | 'msg';
  /** True when another device of the same account sent it (a device-sent copy). */
  fromOwnDevice: boolean;
}

/** A text a simulated user sent to an account, kept so it can be redelivered. */
export interface SentText {
  id: string;
  to: string;
  text: string;
  t: number;
  deliveredTo: string[];
  readBy: string[];
}

export interface SimUserJSON {
  number: string;
  kind: UserKind;
  name: string;
  lidUser: string;
  signal: SignalPartyJSON;
  nextDeviceId: number;
  nextKeyIndex: number;
  devices: Array<{
    id: number;
    noisePublicKey: string;
    identityPublicKey: string;
    registrationId: number;
    signedPreKey: { keyId: number; publicKey: string; signature: string };
    preKeys: Array<[number, string]>;
    keyIndex: number;
    platform: string;
    linkedAt: number;
    lastLoginAt?: number;
    /** Absent in older state files: those devices were linked before history sync existed here. */
    historySynced?: boolean;
  }>;
  sent: SentText[];
  receiptDelays?: ReceiptDelays;
  /** Absent: `pn`. */
  addressing?: Addressing;
}

/** A WhatsApp user: a phone number, its primary device's Signal identity, and its linked devices. */
export class SimUser {
  readonly devices = new Map<number, LinkedDevice>();
  readonly received: ReceivedMessage[] = [];
  readonly sent = new Map<string, SentText>();
  nextDeviceId = 1;
  nextKeyIndex = 1;
  /** Overrides the simulator-wide receipt delays for messages this user receives. */
  receiptDelays: ReceiptDelays | undefined;
  /** How this user's messages and receipts are addressed to accounts (see Addressing). */
  addressing: Addressing = 'pn';

  constructor(
    readonly number: string,
    readonly kind: UserKind,
    public name: string,
    readonly lidUser: string,
    readonly signal: SignalParty,
  ) {}

  /** The primary's identity key also signs ADV device identities (the "account signature key"). */
  get accountKey(): KeyPair {
    return this.signal.identity;
  }

  get jid(): string {
    return pnJid(this.number);
  }

  get lid(): string {
    return lidJid(this.lidUser);
  }

  deviceJid(id: number): string {
    return pnJid(this.number, id);
  }

  toJSON(): SimUserJSON {
    return {
      number: this.number,
      kind: this.kind,
      name: this.name,
      lidUser: this.lidUser,
      signal: this.signal.toJSON(),
      nextDeviceId: this.nextDeviceId,
      nextKeyIndex: this.nextKeyIndex,
      devices: [...this.devices.values()].map((d) => ({
        id: d.id,
        noisePublicKey: b64(d.noisePublicKey),
        identityPublicKey: b64(d.identityPublicKey),
        registrationId: d.registrationId,
        signedPreKey: { keyId: d.signedPreKey.keyId, publicKey: b64(d.signedPreKey.publicKey), signature: b64(d.signedPreKey.signature) },
        preKeys: [...d.preKeys].map(([id, key]) => [id, b64(key)] as [number, string]),
        keyIndex: d.keyIndex,
        platform: d.platform,
        linkedAt: d.linkedAt,
        ...(d.lastLoginAt ? { lastLoginAt: d.lastLoginAt } : {}),
        historySynced: d.historySynced,
      })),
      sent: [...this.sent.values()],
      ...(this.receiptDelays ? { receiptDelays: this.receiptDelays } : {}),
      ...(this.addressing !== 'pn' ? { addressing: this.addressing } : {}),
    };
  }

  static fromJSON(json: SimUserJSON): SimUser {
    const user = new SimUser(
      json.number,
      json.kind,
      json.name,
      json.lidUser,
      SignalParty.fromJSON(json.signal),
    );
    user.nextDeviceId = json.nextDeviceId;
    user.nextKeyIndex = json.nextKeyIndex;
    for (const d of json.devices) {
      user.devices.set(d.id, {
        id: d.id,
        noisePublicKey: fromB64(d.noisePublicKey),
        identityPublicKey: fromB64(d.identityPublicKey),
        registrationId: d.registrationId,
        signedPreKey: { keyId: d.signedPreKey.keyId, publicKey: fromB64(d.signedPreKey.publicKey), signature: fromB64(d.signedPreKey.signature) },
        preKeys: new Map(d.preKeys.map(([id, key]) => [id, fromB64(key)])),
        keyIndex: d.keyIndex,
        platform: d.platform,
        linkedAt: d.linkedAt,
        ...(d.lastLoginAt ? { lastLoginAt: d.lastLoginAt } : {}),
        historySynced: d.historySynced ?? true,
      });
    }
    for (const s of json.sent) user.sent.set(s.id, s);
    user.receiptDelays = json.receiptDelays;
    user.addressing = json.addressing === 'lid' ? 'lid' : 'pn';
    return user;
  }
}

export interface WorldJSON {
  users: SimUserJSON[];
}

/** Every simulated user, addressable by phone number or LID. */
export class World {
  private readonly byNumber = new Map<string, SimUser>();
  private readonly byLid = new Map<string, SimUser>();
  /** Called after any change that must reach the state file. */
  onChange: () => void = () => {};

  createUser(number: string, kind: UserKind, name?: string): SimUser {
    if (!isValidNumber(number)) throw new Error(`invalid number ${JSON.stringify(number)}: use 6-15 digits, no +`);
    if (this.byNumber.has(number)) throw new Error(`number ${number} already exists`);
    const lidUser = newLidUser((c) => this.byLid.has(c));
    const user = new SimUser(number, kind, name ?? `${kind} ${number}`, lidUser, SignalParty.create());
    this.add(user);
    this.onChange();
    return user;
  }

  private add(user: SimUser): void {
    user.signal.onChange = () => this.onChange();
    this.byNumber.set(user.number, user);
    this.byLid.set(user.lidUser, user);
  }

  user(number: string): SimUser | undefined {
    return this.byNumber.get(number);
  }

  users(): SimUser[] {
    return [...this.byNumber.values()];
  }

  /** Resolves a PN or LID JID (with or without device) to its user and device id. */
  resolve(jid: string): { user: SimUser; device: number } | undefined {
    const parsed = parseJid(jid);
    if (!parsed) return undefined;
    const user =
      parsed.server === 's.whatsapp.net' ? this.byNumber.get(parsed.user) : parsed.server === 'lid' ? this.byLid.get(parsed.user) : undefined;
    return user ? { user, device: parsed.device } : undefined;
  }

  toJSON(): WorldJSON {
    return { users: this.users().map((u) => u.toJSON()) };
  }

  static fromJSON(json: WorldJSON): World {
    const world = new World();
    for (const u of json.users) world.add(SimUser.fromJSON(u));
    return world;
  }
}
