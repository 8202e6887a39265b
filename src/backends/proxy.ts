import type { Logger } from '../log.js';
import { UpstreamConnection, type Timeouts } from './connection.js';
import { openRoute, type RouteSource } from './open.js';
import type { Route } from './routing.js';
import type { Backend, PipeSession, SessionContext } from './types.js';

/**
 * One protocol's upstream pre-login exchange (greeting, TLS, client report,
 * login), run on a connected upstream. Resolves once the upstream accepted the
 * login, with the post-login capabilities where the protocol announces them
 * (IMAP), and throws UpstreamError otherwise.
 */
export type UpstreamLogin = (conn: UpstreamConnection, route: Route, ctx: SessionContext) => Promise<string[] | void>;

/**
 * The proxy backend for a spliced protocol (IMAP, POP3): resolves the
 * session's route, connects, runs the protocol's upstream login, and hands the
 * logged-in socket to the listener. BackendUnavailableError when the upstream
 * cannot be reached or refuses.
 */
export class ProxyBackend implements Backend<PipeSession> {
  constructor(
    private readonly login: UpstreamLogin,
    private readonly routes: RouteSource,
    private readonly timeouts: Timeouts,
    private readonly logger: Logger,
  ) {}

  open(ctx: SessionContext): Promise<PipeSession> {
    return openRoute(this.routes, ctx, this.logger, async (route) => {
      const { pipe, result } = await UpstreamConnection.logIn(route.server, this.timeouts, (conn) => this.login(conn, route, ctx));
      return result ? { ...pipe, capabilities: result } : pipe;
    }, this.timeouts);
  }
}
