import { logger } from 'firebase-functions';
import { onSchedule } from 'firebase-functions/v2/scheduler';
import { db } from '../firebase.ts';
import { runWatchdog } from '../watchdog.ts';

/**
 * Every minute (Cloud Scheduler, through Pub/Sub): see watchdog.ts. One run at a time, no retries:
 * the next run a minute later is the retry, and two runs at once would only contend.
 */
export const watchdog = onSchedule({ schedule: 'every 1 minutes', timeoutSeconds: 50, retryCount: 0, maxInstances: 1 }, async () => {
  const run = await runWatchdog(db());
  const level = run.silent.length > 0 || run.unowned > 0 ? 'warn' : 'info';
  logger[level]('watchdog run', run);
});
