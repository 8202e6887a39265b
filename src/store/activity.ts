/**
 * What the key store keeps about activity besides keys and accounts (issue
 * 15): the login history, the networks each key was used from, and the
 * webhook endpoints with their queue of deliveries. Each store (SQLite,
 * Redis) has one, over its own connection, so every instance sees the same.
 */
import type { EventType } from '../events/types.js';

export type LoginResult = 'success' | 'failure' | 'temporary_failure';

/** One recorded login attempt. Never holds a secret. */
export interface LoginEntry {
  /** The entry's cursor: newer entries of one account sort after older ones. */
  id: string;
  /** ms since the epoch. */
  at: number;
  /** The account it is kept under; null: an attempt naming no known account. */
  account: string | null;
  /** What an attempt with no known account named (bounded), so an operator can see what is tried. */
  username?: string;
  keyId: string | null;
  protocol: string;
  method: string | null;
  ip: string;
  result: LoginResult;
  reason: string | null;
  client: { name?: string; version?: string } | null;
  /** The first success of this key from this network (`key.new_network`). */
  newNetwork?: boolean;
}

export type NewLoginEntry = Omit<LoginEntry, 'id'>;

export interface LoginQuery {
  /** null: the attempts that named no known account. */
  account: string | null;
  keyId?: string;
  result?: LoginResult;
  /** Only entries at or after this, ms since the epoch. */
  since?: number;
  /** A cursor (`next` of the previous page): only entries older than it. */
  before?: string;
  limit: number;
}

export interface HistoryBounds {
  /** Entries kept per account at most; older ones go first. */
  maxPerAccount: number;
  /** Entries older than this are dropped, ms. */
  retentionMs: number;
}

export interface WebhookEndpoint {
  id: string;
  url: string;
  /** The signing secret: shown once when created through the API, never listed. */
  secret: string;
  /** The event types it receives; null: all. */
  events: EventType[] | null;
  createdAt: string;
}

/** How the last delivery attempt to an endpoint went. */
export interface EndpointStatus {
  at: string;
  eventId: string;
  eventType: string;
  ok: boolean;
  /** The receiver's HTTP status; null when none came (refused, timed out). */
  status: number | null;
  error: string | null;
  attempt: number;
  /** Deliveries waiting for this endpoint (queued or retrying), when counted. */
  pending?: number;
}

/** One event on its way to one endpoint. */
export interface Delivery {
  id: string;
  endpointId: string;
  /** The event's JSON: the body sent, byte for byte, on every attempt. */
  body: string;
  eventId: string;
  eventType: string;
  /** Attempts made so far. */
  attempts: number;
  /** When it may next be tried, ms since the epoch. */
  due: number;
}

export interface ActivityStore {
  /** Appends a batch of attempts, then trims every account it touched to the bounds. */
  appendLogins(entries: readonly NewLoginEntry[], bounds: HistoryBounds): Promise<void>;
  /** Newest first; `next` is the cursor of the page after this one, null at the end. */
  listLogins(query: LoginQuery, bounds: HistoryBounds): Promise<{ entries: LoginEntry[]; next: string | null }>;
  /**
   * Records that `keyId` logged in from `network`: `first` when the key had
   * no network yet, `new` when it had others, `seen` when this one is known.
   */
  addNetwork(keyId: string, network: string, at: number): Promise<'first' | 'new' | 'seen'>;

  /** Adds or replaces an endpoint registered through the API. */
  putEndpoint(endpoint: WebhookEndpoint): Promise<void>;
  listEndpoints(): Promise<WebhookEndpoint[]>;
  /** Removes the endpoint, its status and its queued deliveries; whether it existed. */
  deleteEndpoint(id: string): Promise<boolean>;
  setEndpointStatus(endpointId: string, status: EndpointStatus): Promise<void>;
  endpointStatuses(ids: readonly string[]): Promise<(EndpointStatus | null)[]>;
  /** Deliveries waiting per endpoint. */
  pendingDeliveries(ids: readonly string[]): Promise<number[]>;

  /** Queues deliveries (in one write: all or none). */
  enqueue(deliveries: readonly Delivery[]): Promise<void>;
  /**
   * Takes up to `limit` deliveries due by `now`, oldest first, and leases
   * them until `now + leaseMs`: another instance asking meanwhile does not
   * get them; one that is not finished or rescheduled (a crash) comes due again.
   */
  claimDue(now: number, leaseMs: number, limit: number): Promise<Delivery[]>;
  /** Delivered, or given up: the delivery leaves the queue. */
  finishDelivery(id: string): Promise<void>;
  /** Failed: tried again at `due`. */
  rescheduleDelivery(id: string, attempts: number, due: number): Promise<void>;
}
