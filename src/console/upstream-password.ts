import { UpstreamConnection, UpstreamError, type Timeouts } from '../backends/connection.js';
import { imapLogin } from '../backends/imap.js';
import type { RouteSource } from '../backends/open.js';
import type { Route } from '../backends/routing.js';
import type { AccountRecord, KeyRecord } from '../keys/record.js';
import type { Logger } from '../log.js';

export type PasswordCheck = 'ok' | 'refused' | 'no_upstream' | 'unavailable';

/**
 * Adapter: "is this the account's real mailbox password?", answered by one
 * login to the account's upstream IMAP server on the route Keygate already
 * resolves for it (its own route, its domain's, or the default), as the
 * route's upstream user with the typed password instead of the route's own
 * credentials. The connection is closed at once. The password is never kept
 * or logged; errors are logged without it (UpstreamError never carries one).
 */
export class UpstreamPasswordCheck {
  constructor(
    private readonly routes: RouteSource,
    private readonly timeouts: Timeouts,
    private readonly logger: Logger,
  ) {}

  /** The IMAP route for the account, or null when it has none (or its route cannot be built). */
  route(account: AccountRecord): Route | null {
    try {
      return this.routes.resolve(account, 'imap');
    } catch {
      return null;
    }
  }

  async check(account: AccountRecord, password: string, clientIp: string): Promise<PasswordCheck> {
    let route: Route | null;
    try {
      route = this.routes.resolve(account, 'imap');
    } catch (err) {
      this.logger.warn({ component: 'console', account: account.address, err: (err as Error).message }, 'cannot route a console password check');
      return 'unavailable';
    }
    if (!route) return 'no_upstream';
    const asUser: Route = { ...route, login: { mode: 'account', user: route.user, password } };
    const ctx = { protocol: 'imap' as const, account, key: { id: 'console' } as KeyRecord, clientIp, clientPort: 0, secure: true };
    try {
      const { pipe } = await UpstreamConnection.logIn(route.server, this.timeouts, (conn) => imapLogin(conn, asUser, ctx));
      pipe.close();
      return 'ok';
    } catch (err) {
      if (err instanceof UpstreamError && err.stage === 'login' && /refused the login/.test(err.message)) return 'refused';
      this.logger.warn({ component: 'console', account: account.address, upstream: `${route.server.host}:${route.server.port}`, err: (err as Error).message }, 'console password check: upstream unavailable');
      return 'unavailable';
    }
  }
}
