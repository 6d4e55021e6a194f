/**
 * The reconciler's Firestore client: firebase-admin's, on channels that recover from a connection
 * gone silent (./channel.ts). One per app; `channels` is what the heartbeat resets.
 */
import type { App } from 'firebase-admin/app';
import { getFirestore, type Firestore } from 'firebase-admin/firestore';
import type { Logger } from 'pino';
import { DEFAULT_CHANNEL_TUNING, FirestoreChannels, type ChannelTuning } from './channel.ts';

export interface FirestoreConnection {
  db: Firestore;
  channels: FirestoreChannels;
}

// firebase-admin hands out one Firestore per app, and settings apply once, before first use.
const opened = new WeakMap<Firestore, FirestoreChannels>();

export function openFirestore(app: App, log: Logger, tuning: ChannelTuning = DEFAULT_CHANNEL_TUNING): FirestoreConnection {
  const db = getFirestore(app);
  let channels = opened.get(db);
  if (!channels) {
    channels = new FirestoreChannels(tuning, log.child({ component: 'firestore' }));
    db.settings(channels.settings());
    opened.set(db, channels);
  }
  return { db, channels };
}
