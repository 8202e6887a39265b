import { randomUUID } from 'node:crypto';
import type { Logger } from '../log.js';
import type { EventPayload, EventType, KeyEvent, KeyEvents } from './types.js';

/** Something that takes raised events (the webhook queue); called synchronously, must not block. */
export type EventListener = (event: KeyEvent) => void;

/**
 * The server's one KeyEvents: stamps each raised event with an id and a time
 * and hands it to its listeners. A listener that throws is logged and
 * skipped; the raiser never sees it.
 */
export class EventHub implements KeyEvents {
  private readonly listeners = new Set<EventListener>();

  constructor(private readonly logger: Logger) {}

  raise(type: EventType, payload: EventPayload): void {
    const event: KeyEvent = {
      id: randomUUID(),
      type,
      time: payload.time ?? new Date().toISOString(),
      account: payload.account,
      ...(payload.keyId != null && { keyId: payload.keyId }),
      data: payload.data ?? {},
    };
    this.logger.debug({ event: type, eventId: event.id, account: event.account, keyId: event.keyId }, 'event raised');
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (err) {
        this.logger.error({ err, event: type }, 'event listener failed');
      }
    }
  }

  /** Adds a listener; returns its removal. */
  listen(listener: EventListener): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }
}
