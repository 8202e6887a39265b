import type { FastifyReply, FastifyRequest } from 'fastify';
import { HttpError } from '../http/errors.js';
import type { Principal } from '../http/plugins/auth.js';
import { isAdminKey } from '../keys/policy.js';
import type { KeyRecord } from '../keys/record.js';
import type { KeyStore } from '../store/types.js';
import { csrfMatches, type ConsoleSession, type ConsoleSessions } from './sessions.js';

/** The session cookie: `__Host-` prefixed (Secure, Path=/, no Domain) over TLS; plain over HTTP (development). */
export const COOKIE_TLS = '__Host-kg_session';
export const COOKIE_PLAIN = 'kg_session';
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** The session cookie's value, whichever name it came under. */
export function sessionCookie(req: FastifyRequest): string | null {
  return req.cookies?.[COOKIE_TLS] ?? req.cookies?.[COOKIE_PLAIN] ?? null;
}

export function isTls(req: FastifyRequest): boolean {
  return req.protocol === 'https';
}

/** Sets the session cookie: HttpOnly, SameSite=Strict, Secure over TLS; it lives as long as the session may. */
export function setSessionCookie(req: FastifyRequest, reply: FastifyReply, id: string, session: ConsoleSession): void {
  const secure = isTls(req);
  reply.setCookie(secure ? COOKIE_TLS : COOKIE_PLAIN, id, { path: '/', httpOnly: true, sameSite: 'strict', secure, expires: new Date(session.expiresAt) });
}

export function clearSessionCookie(req: FastifyRequest, reply: FastifyReply): void {
  const secure = isTls(req);
  reply.clearCookie(secure ? COOKIE_TLS : COOKIE_PLAIN, { path: '/', httpOnly: true, sameSite: 'strict', secure });
}

/**
 * A request another site made the browser send is refused: `Sec-Fetch-Site`
 * (every current browser sends it) must be same-origin or none, and an
 * `Origin` header must be this server's own. Clients that are not browsers
 * send neither and are not affected.
 */
export function assertSameOrigin(req: FastifyRequest): void {
  const site = req.headers['sec-fetch-site'];
  if (typeof site === 'string' && site !== 'same-origin' && site !== 'none') throw new HttpError('forbidden', 'Cross-site requests are refused');
  const origin = req.headers.origin;
  if (typeof origin === 'string' && origin !== `${req.protocol}://${req.host}`) throw new HttpError('forbidden', 'Cross-site requests are refused');
}

/**
 * Adapter for the one auth hook: a console session cookie stands in for a
 * Bearer key. An administrator's session acts as its administrator key (read
 * afresh every request, so revoking the key ends the session); an account
 * holder's as a key bound to the account holding `app` (what a person may do
 * with their own mailbox) that expires with the session. The hook then asks
 * the same policy as for any key. State-changing requests must be same-origin
 * and carry the session's CSRF token.
 */
/** Who a session acts as: a key (the administrator's own, or one standing in for a person) and its account. */
export type SessionPrincipal = Pick<Principal, 'key' | 'keyAccount'>;

export class SessionAuth {
  constructor(
    private readonly sessions: ConsoleSessions,
    private readonly store: KeyStore,
  ) {}

  async identify(req: FastifyRequest): Promise<SessionPrincipal | null> {
    const id = sessionCookie(req);
    if (id === null) return null;
    const session = await this.sessions.get(id);
    if (!session) return null;
    if (!SAFE_METHODS.has(req.method)) {
      assertSameOrigin(req);
      if (!csrfMatches(session, req.headers['x-csrf-token'])) throw new HttpError('forbidden', 'This request lacks the console’s CSRF token; reload the page');
    }
    return principalOf(session, this.store);
  }
}

/** The key a session acts as; null when that key or account is gone. */
export async function principalOf(session: ConsoleSession, store: KeyStore): Promise<SessionPrincipal | null> {
  const subject = session.subject;
  if (subject.kind === 'admin') {
    const key = await store.getKey(subject.keyId);
    return key && isAdminKey(key) ? { key, keyAccount: null } : null;
  }
  const account = await store.getAccount(subject.account);
  if (!account) return null;
  const key: KeyRecord = {
    id: `console:${account.address}`,
    hash: '',
    name: 'console session',
    account: account.address,
    scopes: ['app'],
    createdAt: new Date(session.createdAt).toISOString(),
    expiresAt: new Date(session.expiresAt).toISOString(),
    allowedIps: null,
    revokedAt: null,
    lastUsedAt: null,
    lastUsedIp: null,
    lastUsedProtocol: null,
    platform: null,
    deviceId: null,
    rotatedFrom: null,
  };
  return { key, keyAccount: account };
}
