import type { AccountRecord } from '../keys/record.js';
import type { Protocol } from '../keys/scopes.js';
import type { Logger } from '../log.js';
import { UpstreamError, type Timeouts } from './connection.js';
import { upstreamAddress, type Route } from './routing.js';
import { BackendUnavailableError, NoBackendError, type SessionContext } from './types.js';

/** Where backends get routes from (the Router; tests may pass their own). */
export interface RouteSource {
  resolve(account: AccountRecord, protocol: Protocol): Route | null;
  /** The account's mail is in the local mailbox (Router). */
  isLocal?(account: AccountRecord): boolean;
  /** LMTP into the local mailbox; null without one (Router). */
  localDelivery?(): Route | null;
}

/** What a log line may say about a route: never a password. */
export function describeRoute(route: Route): Record<string, unknown> {
  return {
    upstream: upstreamAddress(route.server),
    tls: route.server.tls,
    login: route.login.mode,
    upstreamUser: route.user,
    route: route.source,
  };
}

/** The fields every backend log line about a session carries. */
export function sessionFields(ctx: SessionContext): Record<string, unknown> {
  return { component: 'backend', protocol: ctx.protocol, account: ctx.account.address, keyId: ctx.key.id, ip: ctx.clientIp };
}

/**
 * The session's route, the one way every backend finds it: a route that
 * cannot be built (bad account record, missing master password) becomes a
 * BackendUnavailableError (the client gets its protocol's temporary
 * failure), none at all a NoBackendError; one log line either way.
 */
export function resolveRoute(routes: RouteSource, ctx: SessionContext, logger: Logger, hooks: Pick<Timeouts, 'countFailure'> = {}): Route {
  const { protocol } = ctx;
  let route: Route | null;
  try {
    route = routes.resolve(ctx.account, protocol);
  } catch (err) {
    logger.error({ ...sessionFields(ctx), err: (err as Error).message }, 'cannot route session upstream');
    hooks.countFailure?.('route');
    throw new BackendUnavailableError(`no usable ${protocol} upstream for this account`, { cause: err });
  }
  if (!route) {
    logger.info(sessionFields(ctx), 'no upstream route for this account');
    throw new NoBackendError(`no ${protocol} upstream is configured for ${ctx.account.address}`);
  }
  return route;
}

/**
 * Resolves the session's route and runs `fn` against it (connect and log in
 * upstream). Every failure becomes a BackendUnavailableError and one warning
 * with the upstream's error.
 */
export async function openRoute<T>(routes: RouteSource, ctx: SessionContext, logger: Logger, fn: (route: Route) => Promise<T>, hooks: Pick<Timeouts, 'countFailure'> = {}): Promise<T> {
  const route = resolveRoute(routes, ctx, logger, hooks);
  const started = performance.now();
  try {
    const result = await fn(route);
    // Built only when it is written: every proxied login passes here.
    if (logger.isLevelEnabled('debug')) logger.debug({ ...sessionFields(ctx), ...describeRoute(route), ms: Math.round((performance.now() - started) * 100) / 100 }, 'upstream session open');
    return result;
  } catch (err) {
    const stage = err instanceof UpstreamError ? err.stage : 'internal';
    hooks.countFailure?.(err instanceof UpstreamError ? err.stage : 'protocol');
    logger.warn({ ...sessionFields(ctx), ...describeRoute(route), stage, err: (err as Error).message }, 'upstream unavailable');
    throw new BackendUnavailableError(`${ctx.protocol} upstream unavailable (${stage})`, { cause: err });
  }
}
