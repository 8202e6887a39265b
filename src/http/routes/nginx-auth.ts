import { createHash, timingSafeEqual } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { Authenticator } from '../../auth/authenticate.js';
import { Router, saslIdentity } from '../../backends/routing.js';
import type { Config } from '../../config.js';
import { PROTOCOLS, type Protocol } from '../../keys/scopes.js';
import { errorBody } from '../errors.js';

export interface NginxAuthOptions {
  config: Config;
  /** The same Authenticator the listeners use (policy, limits, audit, failure delay). */
  authenticator: Authenticator;
  /** Routes to upstreams; default: built from `config`. */
  router?: Router;
  /** Host name → address for `Auth-Server` (nginx takes addresses only); default: DNS lookup. */
  resolveHost?: (host: string) => Promise<string>;
}

/** The header nginx must send: `auth_http_header X-Keygate-Secret "<nginx.authSecret>";`. */
export const NGINX_SECRET_HEADER = 'x-keygate-secret';
/** Seconds nginx waits before letting the client try again after a refusal. */
const AUTH_WAIT = '3';
const INVALID = 'Invalid login or password';
const TEMPORARY = 'Temporary server problem, try again later';

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** nginx percent-encodes Auth-User and Auth-Pass (space, %, control characters); anything malformed stays as sent. */
function unescape(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

function header(req: FastifyRequest, name: string): string {
  const v = req.headers[name];
  return typeof v === 'string' ? v : Array.isArray(v) ? (v[0] ?? '') : '';
}

/**
 * `GET /auth/nginx`: nginx's mail `auth_http` protocol, so a site running
 * nginx's mail proxy can log clients in with Keygate keys. In: `Auth-User`,
 * `Auth-Pass`, `Auth-Protocol`, `Auth-Method`, `Auth-Login-Attempt`,
 * `Client-IP`, and the shared secret in `X-Keygate-Secret`. The login goes
 * through the same `Authenticator.logIn` as the listeners (same policy,
 * limits, audit and failure delay, `Client-IP` as the client), without a
 * backend: nginx connects upstream itself. Out (always HTTP 200 once the
 * secret matched): `Auth-Status: OK`, `Auth-Server` (an address), `Auth-Port`,
 * and for IMAP/POP3 the upstream login — `Auth-User`/`Auth-Pass` rewritten to
 * `user*master` + master password in master mode, or the account's stored
 * credentials in account mode; on a refusal `Auth-Status: Invalid login or
 * password` and `Auth-Wait: 3`; on a temporary problem (limits, store,
 * no route) `Auth-Status: Temporary server problem…` (+ `Auth-Error-Code` for
 * SMTP). A missing or wrong secret (or none configured) is HTTP 403.
 *
 * nginx's mail proxy speaks plaintext to its backends and cannot log in with
 * an authzid: routes used through nginx should be `tls: none` and master
 * logins are always written in the separator style here.
 */
/**
 * nginx connects to the one address it is given and tries no other, so a name
 * with both kinds of address is given as its IPv4 one: `localhost` on a stock
 * Debian /etc/hosts resolves to ::1 first, while mail servers (a Dovecot on
 * 127.0.0.1) listen on IPv4 far more often than on IPv6 alone.
 */
export function pickNginxAddress(addresses: readonly { address: string; family: number }[]): string {
  const chosen = addresses.find((a) => a.family === 4) ?? addresses[0];
  if (!chosen) throw new Error('the name has no address');
  return chosen.address;
}

async function resolveForNginx(host: string): Promise<string> {
  return isIP(host) ? host : pickNginxAddress(await lookup(host, { all: true }));
}

export const nginxAuthRoutes: FastifyPluginAsync<NginxAuthOptions> = async (app, opts) => {
  const { config, authenticator } = opts;
  const router = opts.router ?? new Router(config);
  const resolveHost = opts.resolveHost ?? resolveForNginx;
  const expected = config.nginx.authSecret === '' ? null : digest(config.nginx.authSecret);

  app.get(
    '/auth/nginx',
    {
      config: { auth: false },
      schema: {
        tags: ['nginx'],
        summary: "nginx mail auth_http endpoint (answers in headers); needs the X-Keygate-Secret header",
        hide: true,
      },
    },
    async (req: FastifyRequest, reply: FastifyReply) => {
      reply.header('cache-control', 'no-store');
      if (!expected) return reply.code(403).send(errorBody('forbidden', 'nginx auth is disabled: set nginx.authSecret (KEYGATE_NGINX_AUTH_SECRET)'));
      const presented = header(req, NGINX_SECRET_HEADER);
      if (presented === '' || !timingSafeEqual(digest(presented), expected)) {
        req.log.warn({ ip: req.ip }, 'nginx auth request without the shared secret');
        return reply.code(403).send(errorBody('forbidden', 'The nginx shared secret is missing or wrong'));
      }

      const protocol = header(req, 'auth-protocol').toLowerCase() as Protocol;
      const method = header(req, 'auth-method').toLowerCase() || 'plain';
      const username = unescape(header(req, 'auth-user'));
      const key = unescape(header(req, 'auth-pass'));
      const clientIp = header(req, 'client-ip') || req.ip;
      const attempt = Number(header(req, 'auth-login-attempt')) || 1;

      const refuse = (status: string, temporary: boolean): FastifyReply => {
        reply.header('Auth-Status', status);
        // After many attempts on one connection nginx should give up: no Auth-Wait closes it (nginx docs: 10-20 tries).
        if (attempt < 10) reply.header('Auth-Wait', AUTH_WAIT);
        if (protocol === 'smtp') reply.header('Auth-Error-Code', temporary ? '451 4.3.0' : '535 5.7.8');
        return reply.code(200).send('');
      };

      if (!PROTOCOLS.includes(protocol)) return reply.code(400).send(errorBody('bad_request', 'Auth-Protocol must be imap, pop3 or smtp'));
      // APOP / CRAM-MD5 never carry the key itself; EXTERNAL has no password.
      const supported = method === 'plain' || method === 'login';
      const outcome = await authenticator.logIn({ protocol, username, key, ip: clientIp, ...(!supported && { key: '', refused: 'unsupported_mechanism' as const }) });
      if (outcome.kind !== 'loggedIn') return refuse(outcome.kind === 'temporary' ? TEMPORARY : INVALID, outcome.kind === 'temporary');
      const { account } = outcome;

      let route;
      try {
        route = router.resolve(account, protocol);
      } catch (err) {
        req.log.error({ account: account.address, protocol, err: (err as Error).message }, 'cannot route nginx login upstream');
        return refuse(TEMPORARY, true);
      }
      if (!route) {
        req.log.warn({ account: account.address, protocol }, 'no upstream route for nginx login');
        return refuse(TEMPORARY, true);
      }
      let address: string;
      try {
        address = await resolveHost(route.server.host);
      } catch (err) {
        req.log.error({ host: route.server.host, err: (err as Error).message }, 'cannot resolve upstream host for nginx');
        return refuse(TEMPORARY, true);
      }
      reply.header('Auth-Status', 'OK');
      reply.header('Auth-Server', address);
      reply.header('Auth-Port', String(route.server.port));
      if (protocol !== 'smtp') {
        // nginx cannot send an authzid: master logins always take the separator form.
        const login = route.login;
        const identity = saslIdentity(login.mode === 'master' ? { ...login, style: 'separator' } : login);
        if (identity) {
          reply.header('Auth-User', identity.authcid);
          reply.header('Auth-Pass', identity.password);
        }
      }
      return reply.code(200).send('');
    },
  );
};
