import type { KeyEvents } from '../events/types.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { ClientInfo } from './attempt.js';

/** One use of a canary key: everything known of the client, never the key itself. */
export interface CanaryUse {
  /** The surface it was tried on: a mail protocol, `http`, `console`, or `introspect` (a mail server asking about it). */
  protocol: string;
  /** The console's sign-in method, when it was one. */
  method?: string | null;
  ip: string;
  /** The client's source port, when the surface knows it. */
  port?: number | null;
  /** Over TLS, when the surface knows. */
  secure?: boolean | null;
  /** The username the client gave with it (mail), if any. */
  username?: string | null;
  keyId: string;
  keyName: string;
  /** The account the canary is bound to. */
  keyAccount: string | null;
  /** What the client said of itself: IMAP ID, SMTP EHLO, HTTP User-Agent. */
  client?: ClientInfo | null;
  /** Who asked, on surfaces that ask on a client's behalf (the introspecting key's id). */
  caller?: string | null;
}

/**
 * A canary key was used: someone holds a key that was only ever planted
 * (in a config file, a repository) to be stolen. The refusal itself is the
 * Authenticator's, identical to a wrong key's; this is the alarm behind it:
 * one warn line, `keygate_canary_uses_total{protocol}`, and `key.canary_used`.
 */
export class CanaryAlarm {
  constructor(
    private readonly logger: Logger,
    private readonly events: KeyEvents,
    private readonly metrics?: Metrics,
  ) {}

  report(use: CanaryUse): void {
    const { keyId, keyAccount, ...rest } = use;
    const known = Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== null && v !== undefined));
    this.logger.warn({ canary: true, keyId, keyAccount, ...known }, 'canary key used');
    this.metrics?.canaryUses.inc({ protocol: use.protocol });
    this.events.raise('key.canary_used', { account: keyAccount, keyId, data: known });
  }
}
