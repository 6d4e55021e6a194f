/**
 * The fleet incident `InvalidFleetConfig`: open while `fleetConfig/whatsapp` does not validate,
 * resolved once it does (or is deleted). Incident writes are fenced by an account's lease
 * (incident-writer.ts), so the report waits until this process holds one; only the newest state
 * is reported, and a report that fails is retried with backoff by the incident writer itself.
 */
import type { Logger } from 'pino';
import type { LeaseManager } from '../lease/lease-manager.ts';
import { backoffDelay } from '../util/backoff.ts';
import { sleep } from '../util/deadline.ts';
import type { IncidentWriter } from './incident-writer.ts';

export const INVALID_FLEET_CONFIG = 'InvalidFleetConfig';

export class FleetConfigIncident {
  private generation = 0;

  constructor(
    private readonly d: { leases: LeaseManager; incidents: IncidentWriter; log: Logger; signal: AbortSignal },
  ) {}

  /** Reports the newest state: `error` opens (or counts up) the incident, null resolves it. */
  report(error: string | null): void {
    const generation = ++this.generation;
    void this.run(generation, error).catch((err: unknown) => {
      if (!this.d.signal.aborted) this.d.log.warn({ err }, 'the InvalidFleetConfig incident could not be written');
    });
  }

  private async run(generation: number, error: string | null): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      if (generation !== this.generation || this.d.signal.aborted) return;
      const fence = this.d.leases.heldAccounts()[0];
      if (fence) {
        if (error) await this.d.incidents.raise(fence, null, INVALID_FLEET_CONFIG, 'warning', `fleetConfig/whatsapp is invalid, so the last valid WhatsApp version setting stays in use: ${error}`);
        else await this.d.incidents.resolve(fence, null, INVALID_FLEET_CONFIG);
        return;
      }
      // No lease yet (start-up, or every account lost): look again shortly.
      await sleep(backoffDelay(attempt, { baseMs: 1_000, maxMs: 30_000, jitter: 'full' }), this.d.signal);
    }
  }
}
