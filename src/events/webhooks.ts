import { randomBytes, randomUUID } from 'node:crypto';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { Delivery, EndpointStatus, WebhookEndpoint } from '../store/activity.js';
import type { KeyStore } from '../store/types.js';
import { configuredEndpoints } from './endpoints.js';
import type { EventHub } from './hub.js';
import { SIGNATURE_HEADER, signDelivery } from './signature.js';
import type { EventType, KeyEvent } from './types.js';

/** Deliveries taken from the queue per round; each is sent concurrently. */
const CLAIM_BATCH = 20;
/** Events waiting to be queued while the store is unreachable, at most; older ones are dropped (and logged). */
const MAX_UNQUEUED = 10_000;
/** Endpoints registered by other instances are seen within this long. */
const ENDPOINT_REFRESH_MS = 5000;
/** Longest receiver error text kept in an endpoint's status. */
const MAX_ERROR_TEXT = 200;

export interface EndpointView extends Omit<WebhookEndpoint, 'secret'> {
  /** `config` (webhooks.endpoints) or `api` (POST /api/webhooks). */
  source: 'config' | 'api';
  lastDelivery: EndpointStatus | null;
  pending: number;
}

/**
 * Webhook delivery. Every raised event becomes one delivery per endpoint
 * that wants it, queued in the store (so neither a restart nor a receiver
 * that is down loses it) and sent from there by whichever instance claims it
 * first: JSON, signed, retried with exponential backoff, its outcome kept as
 * the endpoint's last status. Raising never waits for any of this.
 */
export class Webhooks {
  private readonly configured: WebhookEndpoint[];
  private stored: WebhookEndpoint[] = [];
  private storedAt = 0;
  private unqueued: KeyEvent[] = [];
  private queueing: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | null = null;
  private polling: Promise<void> | null = null;
  private readonly inFlight = new Set<AbortController>();
  private unlisten: (() => void) | null = null;
  private closed = false;

  constructor(
    private readonly store: KeyStore,
    private readonly logger: Logger,
    private readonly settings: Config['webhooks'],
  ) {
    this.configured = configuredEndpoints(settings.endpoints);
  }

  /** Takes the hub's events and starts sending. */
  start(hub: EventHub): void {
    this.unlisten = hub.listen((event) => this.accept(event));
    this.schedule(0);
  }

  /** Stops sending (aborting requests in flight: they stay queued) after what is being queued is written. */
  async close(): Promise<void> {
    this.closed = true;
    this.unlisten?.();
    if (this.timer) clearTimeout(this.timer);
    for (const c of this.inFlight) c.abort();
    await this.queueing;
    await this.polling?.catch(() => {});
  }

  /** Every endpoint, with its last delivery and how many wait; never a secret. */
  async list(): Promise<EndpointView[]> {
    await this.refreshEndpoints(true);
    const all = [...this.configured.map((e) => [e, 'config'] as const), ...this.stored.map((e) => [e, 'api'] as const)];
    const ids = all.map(([e]) => e.id);
    const [statuses, pending] = await Promise.all([this.store.activity.endpointStatuses(ids), this.store.activity.pendingDeliveries(ids)]);
    return all.map(([{ secret: _secret, ...e }, source], i) => ({ ...e, source, lastDelivery: statuses[i] ?? null, pending: pending[i] ?? 0 }));
  }

  /** Registers an endpoint; the secret (generated unless given) is in this answer only. */
  async add(input: { url: string; secret?: string; events?: EventType[] | null }): Promise<{ endpoint: EndpointView; secret: string }> {
    const secret = input.secret ?? `whsec_${randomBytes(24).toString('base64url')}`;
    const endpoint: WebhookEndpoint = { id: `wh_${randomUUID().replaceAll('-', '')}`, url: input.url, secret, events: input.events ?? null, createdAt: new Date().toISOString() };
    await this.store.activity.putEndpoint(endpoint);
    this.storedAt = 0;
    const { secret: _s, ...view } = endpoint;
    return { endpoint: { ...view, source: 'api', lastDelivery: null, pending: 0 }, secret };
  }

  /** Removes an endpoint registered through the API, and its queue; false when there is none (configured ones are removed in the configuration). */
  async remove(id: string): Promise<boolean> {
    const removed = await this.store.activity.deleteEndpoint(id);
    this.storedAt = 0;
    return removed;
  }

  /** Queues one event for every endpoint that wants it (the hub's listener; a command line's events without a sender). */
  accept(event: KeyEvent): void {
    if (this.closed) return;
    this.unqueued.push(event);
    if (this.unqueued.length > MAX_UNQUEUED) {
      const dropped = this.unqueued.splice(0, this.unqueued.length - MAX_UNQUEUED);
      this.logger.error({ dropped: dropped.length, oldest: dropped[0]!.id }, 'webhook events dropped: the store has been unreachable too long');
    }
    this.queueing = this.queueing.then(() => this.queuePending());
  }

  /** Writes waiting events to the store's queue; on failure they wait for the next event or round. */
  private async queuePending(): Promise<void> {
    if (this.unqueued.length === 0) return;
    const events = this.unqueued;
    this.unqueued = [];
    try {
      await this.refreshEndpoints();
      const now = Date.now();
      const deliveries: Delivery[] = [];
      for (const event of events) {
        const body = JSON.stringify(event);
        for (const e of this.endpoints()) {
          if (e.events !== null && !e.events.includes(event.type)) continue;
          deliveries.push({ id: `${event.id}.${e.id}`, endpointId: e.id, body, eventId: event.id, eventType: event.type, attempts: 0, due: now });
        }
      }
      await this.store.activity.enqueue(deliveries);
      if (deliveries.length > 0) this.schedule(0);
    } catch (err) {
      this.unqueued = [...events, ...this.unqueued];
      this.logger.warn({ err, waiting: this.unqueued.length }, 'webhook events not queued yet; will retry');
    }
  }

  private endpoints(): WebhookEndpoint[] {
    return [...this.configured, ...this.stored];
  }

  private async refreshEndpoints(force = false): Promise<void> {
    if (!force && Date.now() - this.storedAt < ENDPOINT_REFRESH_MS) return;
    this.stored = await this.store.activity.listEndpoints();
    this.storedAt = Date.now();
  }

  private schedule(ms: number): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.polling) return this.schedule(this.settings.pollInterval);
      this.polling = this.round().finally(() => {
        this.polling = null;
        this.schedule(this.settings.pollInterval);
      });
    }, ms);
    this.timer.unref();
  }

  /** One round: events not queued yet, then every due delivery this instance can lease. */
  private async round(): Promise<void> {
    if (this.unqueued.length > 0) this.queueing = this.queueing.then(() => this.queuePending());
    try {
      await this.refreshEndpoints();
      for (;;) {
        const due = await this.store.activity.claimDue(Date.now(), this.settings.timeout + 5000, CLAIM_BATCH);
        if (due.length === 0 || this.closed) return;
        await Promise.all(due.map((d) => this.send(d)));
        if (due.length < CLAIM_BATCH) return;
      }
    } catch (err) {
      this.logger.warn({ err }, 'webhook queue unavailable; will retry');
    }
  }

  private async send(d: Delivery): Promise<void> {
    const endpoint = this.endpoints().find((e) => e.id === d.endpointId);
    if (!endpoint) {
      await this.store.activity.finishDelivery(d.id); // its endpoint was removed
      return;
    }
    const attempt = d.attempts + 1;
    const timestamp = Math.floor(Date.now() / 1000);
    const abort = new AbortController();
    this.inFlight.add(abort);
    const timeout = setTimeout(() => abort.abort(new Error(`no answer within ${this.settings.timeout} ms`)), this.settings.timeout);
    let status: number | null = null;
    let error: string | null = null;
    try {
      const res = await fetch(endpoint.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'Keygate-Webhooks/1',
          [SIGNATURE_HEADER]: signDelivery(endpoint.secret, timestamp, d.body),
          'keygate-event': d.eventType,
          'keygate-delivery': d.id,
        },
        body: d.body,
        redirect: 'manual',
        signal: abort.signal,
      });
      status = res.status;
      await res.body?.cancel().catch(() => {});
      if (status < 200 || status > 299) error = `HTTP ${status}`;
    } catch (err) {
      if (this.closed) return; // aborted by close: stays queued, its lease runs out
      const e = err as Error & { cause?: { code?: string; message?: string } };
      error = (e.cause?.code ?? e.cause?.message ?? e.message).slice(0, MAX_ERROR_TEXT);
    } finally {
      clearTimeout(timeout);
      this.inFlight.delete(abort);
    }
    const ok = error === null;
    const report: EndpointStatus = { at: new Date().toISOString(), eventId: d.eventId, eventType: d.eventType, ok, status, error, attempt };
    try {
      await this.store.activity.setEndpointStatus(endpoint.id, report);
      if (ok) {
        await this.store.activity.finishDelivery(d.id);
      } else if (attempt >= this.settings.maxAttempts) {
        this.logger.error({ endpoint: endpoint.id, eventId: d.eventId, event: d.eventType, attempts: attempt, error }, 'webhook delivery given up');
        await this.store.activity.finishDelivery(d.id);
      } else {
        const wait = Math.min(this.settings.backoff * 2 ** (attempt - 1), this.settings.maxBackoff);
        this.logger.warn({ endpoint: endpoint.id, eventId: d.eventId, event: d.eventType, attempt, error, retryInMs: wait }, 'webhook delivery failed; will retry');
        await this.store.activity.rescheduleDelivery(d.id, attempt, Date.now() + wait);
      }
    } catch (err) {
      // The lease runs out and the delivery comes due again: delivered at least once.
      this.logger.warn({ err, eventId: d.eventId }, 'webhook outcome not recorded');
    }
  }
}
