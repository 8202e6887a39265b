import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { KeyStore } from '../store/types.js';
import { PROTOCOLS, type Protocol } from '../keys/scopes.js';
import type { Metrics } from '../metrics.js';
import type { FailureReason, Timeouts } from './connection.js';
import { imapLogin } from './imap.js';
import { pop3Login } from './pop3.js';
import { ProxyBackend } from './proxy.js';
import { Router, type LocalMailboxRoute } from './routing.js';
import { SmtpProxyBackend } from './smtp.js';
import type { ClosableBackends } from './types.js';

export { setAccountUpstream, UpstreamInputError, type AccountUpstreamInput } from './accounts.js';
export { Router, RouteError, type AccountUpstream, type Route, type UpstreamServer } from './routing.js';
export { checkSecret, SecretError } from './secret.js';
export { BackendRejectedError, BackendUnavailableError, NO_BACKENDS, type Backends, type ClosableBackends } from './types.js';

/**
 * The proxy backends for `keygate serve`, one per protocol. Routes are
 * resolved at each login from the account record, its domain and the
 * defaults (or the local mailbox, `local`), so an account given a route of
 * its own uses it from its next login, whatever the settings route. The store
 * tells SMTP which recipients are accounts of the local mailbox. `unrouted`:
 * the protocols no setting routes anywhere (only accounts with their own
 * route can use them).
 */
export function createBackends(config: Config, store: KeyStore | null, logger: Logger, options: { local?: LocalMailboxRoute | null; metrics?: Metrics } = {}): ClosableBackends & { unrouted: Protocol[] } {
  const log = logger.child({ component: 'backend' });
  const router = new Router(config, options.local ?? null);
  const { metrics } = options;
  // Each protocol's connect times and failures go to its own metric labels.
  const timeouts = (protocol: Protocol): Timeouts => ({
    connectMs: config.upstream.connectTimeout,
    loginMs: config.upstream.loginTimeout,
    ...(metrics && {
      observeConnect: (seconds: number) => metrics.upstreamConnect.observe({ protocol }, seconds),
      countFailure: (reason: FailureReason) => metrics.upstreamFailures.inc({ protocol, reason }),
    }),
  });
  const smtp = new SmtpProxyBackend(
        router,
        {
          hostname: config.hostname,
          connectTimeoutMs: config.upstream.connectTimeout,
          loginTimeoutMs: config.upstream.loginTimeout,
          socketTimeoutMs: config.upstream.smtp.timeout,
          maxConnections: config.upstream.smtp.maxConnections,
          ...(store && { findAccount: (address: string) => store.resolveAccount(address) }),
          observeConnect: timeouts('smtp').observeConnect,
          countFailure: timeouts('smtp').countFailure,
        },
        log,
      );
  return {
    imap: new ProxyBackend(imapLogin, router, timeouts('imap'), log),
    pop3: new ProxyBackend(pop3Login, router, timeouts('pop3'), log),
    smtp,
    unrouted: PROTOCOLS.filter((p) => !router.hasRoutes(p)),
    async close() {
      smtp.close();
    },
  };
}
