import type { SendingLimits } from '../keys/record.js';

/** The limits a key may carry, in the order they are shown. */
export const SENDING_LIMIT_FIELDS = ['messagesPerHour', 'recipientsPerMessage', 'recipientsPerDay'] as const satisfies readonly (keyof SendingLimits)[];

/** Highest value of any limit: far above any real sender, low enough that counters stay exact. */
export const MAX_SENDING_LIMIT = 1_000_000;

/**
 * Checks limits as they come in (API body, CLI flags, an export blob): an
 * object with only the known fields, each a whole number from 1 to
 * MAX_SENDING_LIMIT, or null. An object with no field is no limits (null).
 * Returns the limits, or the first problem in words naming the field.
 */
export function parseSendingLimits(value: unknown): { limits: SendingLimits | null } | { problem: string } {
  if (value === null || value === undefined) return { limits: null };
  if (typeof value !== 'object' || Array.isArray(value)) return { problem: 'limits must be an object' };
  const out: SendingLimits = {};
  for (const [field, v] of Object.entries(value as Record<string, unknown>)) {
    if (!(SENDING_LIMIT_FIELDS as readonly string[]).includes(field)) return { problem: `limits.${field} is not a limit (${SENDING_LIMIT_FIELDS.join(', ')})` };
    if (v === null || v === undefined) continue;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > MAX_SENDING_LIMIT) return { problem: `limits.${field} must be a whole number from 1 to ${MAX_SENDING_LIMIT}` };
    out[field as keyof SendingLimits] = v;
  }
  return { limits: Object.keys(out).length > 0 ? out : null };
}
