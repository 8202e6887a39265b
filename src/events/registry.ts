import type { KeyStore } from '../store/types.js';
import { NO_EVENTS, type KeyEvents } from './types.js';

/**
 * The events of a store: whoever holds the store (a route, the key writer,
 * the authenticator, the CLI) raises through it without one more parameter
 * threaded through every call. The server binds its hub when it opens the
 * store; a store with none bound raises nothing.
 */
const bound = new WeakMap<KeyStore, KeyEvents>();

export function bindEvents(store: KeyStore, events: KeyEvents): void {
  bound.set(store, events);
}

export function eventsOf(store: KeyStore): KeyEvents {
  return bound.get(store) ?? NO_EVENTS;
}

/** Undoes `bindEvents` if `events` is still the one bound (a server closing, its store given by the caller). */
export function unbindEvents(store: KeyStore, events: KeyEvents): void {
  if (bound.get(store) === events) bound.delete(store);
}
