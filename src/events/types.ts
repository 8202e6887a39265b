/**
 * The events Keygate raises about keys and logins (issue 15): what webhooks
 * deliver and what the login history marks. One catalogue, so a receiver can
 * rely on the names.
 */
export const EVENT_TYPES = [
  'key.created',
  'key.revoked',
  'key.rotated',
  'key.expiring',
  'key.expired',
  'key.new_network',
  'key.canary_used',
  'key.leaked',
  'login.failures',
] as const;

export type EventType = (typeof EVENT_TYPES)[number];

export function isEventType(value: unknown): value is EventType {
  return typeof value === 'string' && (EVENT_TYPES as readonly string[]).includes(value);
}

/** One raised event, as delivered (the webhook body) and stored. Never holds a secret. */
export interface KeyEvent {
  /** Unique per event; a receiver de-duplicates retried deliveries by it. */
  id: string;
  type: EventType;
  /** When it happened, ISO 8601. */
  time: string;
  /** The account concerned; null for a key bound to none. */
  account: string | null;
  keyId?: string;
  /** What the type says more (protocol, ip, url, counts, …): small, JSON, no secrets. */
  data: Record<string, unknown>;
}

/** What a raiser supplies; id and time (unless given) are filled in. */
export interface EventPayload {
  account: string | null;
  keyId?: string | null;
  data?: Record<string, unknown>;
  /** Default: now. */
  time?: string;
}

/**
 * Where events are raised. `raise` never blocks, never throws and returns at
 * once: delivery (the webhook queue in the store) happens off the caller's
 * path, so no login or API call waits on a receiver.
 */
export interface KeyEvents {
  raise(type: EventType, payload: EventPayload): void;
}

/** Raises nothing: for code run without a server (tests, one-off tools). */
export const NO_EVENTS: KeyEvents = { raise() {} };
