import type { FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { Authenticator, IdentifyResult } from '../../auth/authenticate.js';
import { isAdminKey, type Action, type DenyReason } from '../../keys/policy.js';
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
  }
}

/** A way in besides a key: the console's session cookie (src/console/session-auth.ts). Null = the request carries none. */
export interface SessionIdentifier {
  identify(req: FastifyRequest): Promise<Extract<IdentifyResult, { ok: true }> | null>;
}

/** Takes the key from `Authorization: Bearer` or `?access_token=`. */
export function presentedKey(req: FastifyRequest): string | null {
  const header = req.headers.authorization;
  if (typeof header === 'string') {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    return m ? m[1]! : null;
  }
  const q = (req.query as Record<string, unknown> | undefined)?.access_token;
  return typeof q === 'string' ? q : null;
}

// Deny reasons that mean the key itself is no longer usable: 401, like an unknown key.
const TO_401 = new Set<DenyReason>(['revoked', 'expired', 'account_disabled']);

/**
 * The one authentication hook. Missing or unusable key → 401 with
 * `WWW-Authenticate: Bearer`; usable but not allowed → 403 naming the missing scope.
 * Routes without `config.auth` are refused, so a new route cannot be public by accident.
 */
export const authPlugin = fp<{ authenticator: Authenticator; sessions?: SessionIdentifier }>(
  async (app, { authenticator, sessions }) => {
    app.decorateRequest('principal', null);
    app.addHook('preHandler', async (req: FastifyRequest, reply: FastifyReply) => {
      const rule = req.routeOptions.config.auth;
      if (rule === false) return;
      if (rule === undefined && req.routeOptions.url === undefined) return; // 404 handler
      const secret = presentedKey(req);
      // A key, when one is presented, wins; otherwise a console session may stand in for one.
      const id = secret !== null ? await authenticator.identify(secret) : await sessions?.identify(req);
      if (!id) throw unauthorized(reply);
      if (!id.ok) {
        if (id.reason === 'store_unavailable') throw new HttpError('store_unavailable');
        authenticator.audit('http', req.ip, null, { ok: false, reason: id.reason });
        throw unauthorized(reply);
      }
      if (rule === undefined) throw new HttpError('forbidden', 'This route has no access rule');
      let action: Action;
      try {
        action = rule(req, id.key);
      } catch (err) {
        authenticator.audit('http', req.ip, id.key.account, { ok: false, reason: 'no_action', keyId: id.key.id });
        throw err;
      }
      const decision = authenticator.authorize(id, action, req.ip);
      if (!decision.allowed) {
        authenticator.audit('http', req.ip, id.key.account, { ok: false, reason: decision.reason, keyId: id.key.id });
        if (TO_401.has(decision.reason)) throw unauthorized(reply);
        if (decision.reason === 'missing_scope') {
          throw new HttpError('forbidden', `This key lacks the "${decision.missingScope}" scope`, { missingScope: decision.missingScope });
        }
        if (decision.reason === 'ip_not_allowed') throw new HttpError('forbidden', 'This key may not be used from this address');
        throw new HttpError('forbidden', 'This key may not act on this account');
      }
      if (secret !== null) authenticator.store.touchKey(id.key.id, { at: new Date().toISOString(), ip: req.ip, protocol: 'http' });
      req.principal = { key: id.key, keyAccount: id.keyAccount, isAdmin: isAdminKey(id.key) };
    });
  },
  { name: 'keygate-auth' },
);

function unauthorized(reply: FastifyReply): HttpError {
  // Same answer for every reason; the reason is in the audit log.
  reply.header('WWW-Authenticate', 'Bearer realm="keygate"');
  return new HttpError('unauthorized');
}
