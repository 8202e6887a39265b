import type { KeyRecord } from '../keys/record.js';
import type { KeyStore } from '../store/types.js';

/**
 * SMTP replies of the sending limits. Kept beside the limits (not in
 * protocols/smtp/replies.ts) so this module is whole on its own; the codes
 * are RFC 5321/3463's: 452 4.5.3 too many recipients (the client sends the
 * rest in another transaction), 450 4.7.1 a rate (try later).
 */
export const LIMIT_REPLY = {
  recipientsPerMessage: [452, '4.5.3 Too many recipients for this key in one message'],
  recipientsPerDay: [450, '4.7.1 Daily recipient limit of this key reached, try again later'],
  messagesPerHour: [450, '4.7.1 Hourly message limit of this key reached, try again later'],
  unavailable: [451, '4.3.0 Sending limits cannot be checked now, try again later'],
} as const satisfies Record<string, readonly [number, string]>;

export type LimitReason = 'recipients_per_message' | 'recipients_per_day' | 'messages_per_hour' | 'store_unavailable';

/** A refused step: the reply for the client, the reason for the audit. */
export interface LimitRefusal {
  reply: readonly [number, string];
  reason: LimitReason;
}

/** A message counted against its key's windows; give it back if the message was not accepted after all. */
export interface CountedMessage {
  giveBack(): Promise<void>;
}

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
/** Counters outlive their window a little, so a clock a few seconds apart between instances never restarts one. */
const SLACK = 60_000;

/**
 * Per-key sending limits (`limits` on a key), counted in the store so every
 * instance shares them (KeyStore.addToCounter: atomic in SQLite and Redis):
 *  - recipientsPerMessage: RCPT past it → 452 4.5.3; the envelope alone decides;
 *  - recipientsPerDay: each accepted RCPT counts in the UTC day; past it → 450 4.7.1;
 *  - messagesPerHour: a message counts when its DATA begins, in the clock hour (UTC);
 *    at the limit MAIL is refused early, and DATA if others took the last one meanwhile → 450 4.7.1.
 * Windows are fixed (clock hour, UTC day): simple, exact across instances.
 * Counting reserves first and gives back when over, so concurrent sessions
 * on any number of instances never pass the limit together. A store that
 * cannot be reached refuses for now (451): a limit is not skipped silently.
 */
export class SendingLimits {
  constructor(
    private readonly store: KeyStore,
    private readonly now: () => number = Date.now,
  ) {}

  /** MAIL FROM: refused early when the hour's messages are all used. */
  async mailFrom(key: KeyRecord): Promise<LimitRefusal | null> {
    const max = key.limits?.messagesPerHour;
    if (max === undefined) return null;
    return this.guard(async () => {
      const used = Number((await this.store.getValue(this.name(key, 'mph', HOUR))) ?? 0);
      return used >= max ? refusal('messagesPerHour') : null;
    });
  }

  /** RCPT TO, with the recipients already accepted for this message. */
  async rcptTo(key: KeyRecord, accepted: number): Promise<LimitRefusal | null> {
    const limits = key.limits;
    if (!limits) return null;
    if (limits.recipientsPerMessage !== undefined && accepted >= limits.recipientsPerMessage) return refusal('recipientsPerMessage');
    const max = limits.recipientsPerDay;
    if (max === undefined) return null;
    return this.guard(async () => ((await this.take(this.name(key, 'rpd', DAY), 1, max, DAY)) ? null : refusal('recipientsPerDay')));
  }

  /** DATA: takes one message from the hour; `recipients` are given back with it if the message fails. */
  async data(key: KeyRecord, recipients: number): Promise<LimitRefusal | CountedMessage> {
    const limits = key.limits;
    const max = limits?.messagesPerHour;
    const day = limits?.recipientsPerDay !== undefined ? this.name(key, 'rpd', DAY) : null;
    const hour = max !== undefined ? this.name(key, 'mph', HOUR) : null;
    if (hour !== null) {
      const refused = await this.guard(async () => ((await this.take(hour, 1, max!, HOUR)) ? null : refusal('messagesPerHour')));
      if (refused) return refused;
    }
    return {
      giveBack: async () => {
        // Best effort: a failed give-back leaves the window counting one more, never fewer.
        await Promise.all([hour && this.store.addToCounter(hour, -1, HOUR + SLACK), day && this.store.addToCounter(day, -recipients, DAY + SLACK)].map((p) => Promise.resolve(p).catch(() => {})));
      },
    };
  }

  /** Adds `n`; over `max`, gives it back and says no. */
  private async take(name: string, n: number, max: number, window: number): Promise<boolean> {
    const total = await this.store.addToCounter(name, n, window + SLACK);
    if (total <= max) return true;
    await this.store.addToCounter(name, -n, window + SLACK);
    return false;
  }

  private name(key: KeyRecord, what: 'mph' | 'rpd', window: number): string {
    return `sending:${key.id}:${what}:${Math.floor(this.now() / window)}`;
  }

  private async guard(check: () => Promise<LimitRefusal | null>): Promise<LimitRefusal | null> {
    try {
      return await check();
    } catch {
      return { reply: LIMIT_REPLY.unavailable, reason: 'store_unavailable' };
    }
  }
}

function refusal(which: 'recipientsPerMessage' | 'recipientsPerDay' | 'messagesPerHour'): LimitRefusal {
  const reason = ({ recipientsPerMessage: 'recipients_per_message', recipientsPerDay: 'recipients_per_day', messagesPerHour: 'messages_per_hour' } as const)[which];
  return { reply: LIMIT_REPLY[which], reason };
}
