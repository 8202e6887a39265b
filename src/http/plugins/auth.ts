import type { FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { clientInfo, type ApiLoggedIn, type FailReason, type LoginOutcome, type Refused } from '../../auth/attempt.js';
import type { Authenticator } from '../../auth/authenticate.js';
import { isAdminKey, type Action } from '../../keys/policy.js';
import type { AccountRecord, KeyRecord } from '../../keys/record.js';
import { HttpError } from '../errors.js';

/** Who is calling: the key and its account, set by the auth hook. */
export interface Principal {
  key: KeyRecord;
  keyAccount: AccountRecord | null;
  isAdmin: boolean;
}

/**
 * Per-route access rule, in the route's `config.auth`: `false` for public
 * routes; otherwise a function naming the policy action from the request and
 * the presented (already identified) key. It may throw an HttpError when the
 * request names no action this key could ever be allowed (e.g. "my own
 * account" from an unbound key).
 */
export type RouteAuth = false | ((req: FastifyRequest, key: KeyRecord) => Action);

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null;
  }
  interface FastifyContextConfig {
    auth?: RouteAuth;
    /** The key may also come as the password of HTTP Basic (RFC 7662 clients such as Dovecot's oauth2 passdb send it so). */
    basicAuth?: boolean;
  }
}

/** A way in besides a key: the console's session cookie (src/console/session-auth.ts). Null = the request carries none. */
export interface SessionIdentifier {
  identify(req: FastifyRequest): Promise<Pick<Principal, 'key' | 'keyAccount'> | null>;
}

/** Takes the key from `Authorization: Bearer`, `?access_token=`, or, on routes that allow it, the password of `Authorization: Basic`. */
export function presentedKey(req: FastifyRequest): string | null {
  const header = req.headers.authorization;
  if (typeof header === 'string') {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (m) return m[1]!;
    const basic = req.routeOptions.config.basicAuth ? /^Basic\s+([A-Za-z0-9+/]+=*)\s*$/i.exec(header) : null;
    if (!basic) return null;
    const credentials = Buffer.from(basic[1]!, 'base64').toString('utf8');
    const colon = credentials.indexOf(':');
    return colon < 0 ? null : credentials.slice(colon + 1);
  }
  const q = (req.query as Record<string, unknown> | undefined)?.access_token;
  return typeof q === 'string' ? q : null;
}

// Refusals that mean the key itself is unusable (unknown, malformed, revoked, expired, account disabled): 401.
const TO_401 = new Set<string>(['malformed', 'unknown_key', 'canary', 'revoked', 'expired', 'account_disabled'] satisfies FailReason[]);

/**
 * The one authentication hook: the presented key goes through the
 * Authenticator's `logIn` (limits, policy, audit, failure delay) with the
 * action the route names. Missing or unusable key → 401 with
 * `WWW-Authenticate: Bearer`; usable but not allowed → 403 naming the missing
 * scope; limited → 429; store down → 503. Without a key, a console session
 * (signed in through the same `logIn`) may stand in for one: its requests
 * meet the same policy. Routes without `config.auth` are refused, so a new
 * route cannot be public by accident.
 */
export const authPlugin = fp<{ authenticator: Authenticator; sessions?: SessionIdentifier }>(
  async (app, { authenticator, sessions }) => {
    app.decorateRequest('principal', null);
    app.addHook('preHandler', async (req: FastifyRequest, reply: FastifyReply) => {
      const rule = req.routeOptions.config.auth;
      if (rule === false) return;
      if (rule === undefined && req.routeOptions.url === undefined) return; // 404 handler
      const action = (presented: KeyRecord): Action => {
        if (rule === undefined) throw new HttpError('forbidden', 'This route has no access rule');
        return rule(req, presented);
      };
      // A key, when one is presented, wins; otherwise a console session may stand in for one.
      const key = presentedKey(req);
      let outcome: LoginOutcome<ApiLoggedIn>;
      if (key !== null) {
        outcome = await authenticator.logIn({ protocol: 'http', key, ip: req.ip, client: clientInfo(req.headers['user-agent']), action });
      } else {
        const principal = await sessions?.identify(req);
        if (!principal) throw unauthorized(reply);
        outcome = authenticator.authorize({ ...principal, ip: req.ip, action });
      }
      switch (outcome.kind) {
        case 'loggedIn':
          req.principal = { key: outcome.key, keyAccount: outcome.keyAccount, isAdmin: isAdminKey(outcome.key) };
          return;
        case 'temporary':
          if (outcome.reason === 'rate_limited') throw new HttpError('rate_limited');
          if (outcome.reason === 'store_unavailable') throw new HttpError('store_unavailable');
          throw new HttpError('internal');
        case 'refused':
          throw refusal(outcome, reply);
      }
    });
  },
  { name: 'keygate-auth' },
);

function refusal(outcome: Refused, reply: FastifyReply): unknown {
  if (outcome.reason === 'no_action') return outcome.cause;
  if (TO_401.has(outcome.reason)) return unauthorized(reply);
  if (outcome.reason === 'missing_scope') {
    return new HttpError('forbidden', `This key lacks the "${outcome.missingScope}" scope`, { missingScope: outcome.missingScope });
  }
  if (outcome.reason === 'ip_not_allowed') return new HttpError('forbidden', 'This key may not be used from this address');
  return new HttpError('forbidden', 'This key may not act on this account');
}

function unauthorized(reply: FastifyReply): HttpError {
  // Same answer for every reason; the reason is in the audit log.
  reply.header('WWW-Authenticate', 'Bearer realm="keygate"');
  return new HttpError('unauthorized');
}
