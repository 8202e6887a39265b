import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { KeyStore } from '../store/types.js';
import { imapLogin } from './imap.js';
import { pop3Login } from './pop3.js';
import { ProxyBackend } from './proxy.js';
import { Router } from './routing.js';
import { SmtpProxyBackend } from './smtp.js';
import type { ClosableBackends } from './types.js';

export { setAccountUpstream, UpstreamInputError, type AccountUpstreamInput } from './accounts.js';
export { Router, RouteError, type AccountUpstream, type Route, type UpstreamServer } from './routing.js';
export { checkSecret, SecretError } from './secret.js';
export { BackendRejectedError, BackendUnavailableError, NO_BACKENDS, type Backends, type ClosableBackends } from './types.js';

/**
 * The proxy backends for `keygate serve`: one per protocol that has a route
 * (a default `upstream.<protocol>.host` or a domain route naming a host),
 * null for the others (the listener then says no backend is configured).
 * Routes are resolved per session from the account record, its domain and
 * the defaults. `_store` is reserved (routing reads the account the listener
 * already has).
 */
export function createBackends(config: Config, _store: KeyStore | null, logger: Logger): ClosableBackends {
  const log = logger.child({ component: 'backend' });
  const router = new Router(config);
  const timeouts = { connectMs: config.upstream.connectTimeout, loginMs: config.upstream.loginTimeout };
  const smtp = router.hasRoutes('smtp')
    ? new SmtpProxyBackend(
        router,
        {
          hostname: config.hostname,
          connectTimeoutMs: config.upstream.connectTimeout,
          loginTimeoutMs: config.upstream.loginTimeout,
          socketTimeoutMs: config.upstream.smtp.timeout,
          maxConnections: config.upstream.smtp.maxConnections,
        },
        log,
      )
    : null;
  return {
    imap: router.hasRoutes('imap') ? new ProxyBackend(imapLogin, router, timeouts, log) : null,
    pop3: router.hasRoutes('pop3') ? new ProxyBackend(pop3Login, router, timeouts, log) : null,
    smtp,
    async close() {
      smtp?.close();
    },
  };
}
