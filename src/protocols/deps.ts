import type { Authenticator } from '../auth/authenticate.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { TlsProvider } from '../tls/index.js';

/**
 * What every mail listener (SMTP, IMAP, POP3) is built from; `keygate serve`
 * assembles it once. Logins, backends and live sessions are the
 * Authenticator's: a listener only speaks its protocol.
 */
export interface ListenerDeps {
  config: Config;
  logger: Logger;
  authenticator: Authenticator;
  tls: TlsProvider;
  metrics?: Metrics;
}

/** One bound listener socket, as `src/listeners.ts` sees it. */
export interface RunningListener {
  name: string;
  address(): { host: string; port: number };
  /** Stops accepting at once, lets open sessions run for up to graceMs, then ends them. */
  close(graceMs: number): Promise<void>;
}
