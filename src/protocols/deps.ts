import type { Authenticator } from '../auth/authenticate.js';
import type { SessionRegistry } from '../auth/sessions.js';
import type { Backends } from '../backends/types.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { TlsProvider } from '../tls/index.js';

/** What every mail listener (SMTP, IMAP, POP3) is built from; `keygate serve` assembles it once. */
export interface ListenerDeps {
  config: Config;
  logger: Logger;
  authenticator: Authenticator;
  sessions: SessionRegistry;
  tls: TlsProvider;
  backends: Backends;
  metrics?: Metrics;
}

/** One bound listener socket, as `src/listeners.ts` sees it. */
export interface RunningListener {
  name: string;
  address(): { host: string; port: number };
  /** Stops accepting at once, lets open sessions run for up to graceMs, then ends them. */
  close(graceMs: number): Promise<void>;
}
