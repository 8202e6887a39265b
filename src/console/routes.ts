import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { LoginRefusal, type Authenticator } from '../auth/authenticate.js';
import type { Config } from '../config.js';
import { HttpError } from '../http/errors.js';
import { AUTH_ERRORS, ErrorBody, KEY_SECURITY } from '../http/schemas.js';
import { isAdminKey } from '../keys/policy.js';
import { normalizeAddress, type AccountRecord } from '../keys/record.js';
import type { Metrics } from '../metrics.js';
import { requestOrigin } from '../setup/mobile-response.js';
import type { KeyStore } from '../store/types.js';
import type { LoginStats } from './login-stats.js';
import type { OidcSignIn } from './oidc.js';
import { assertSameOrigin, clearSessionCookie, isTls, principalOf, sessionCookie, setSessionCookie } from './session-auth.js';
import type { ConsoleSessions, SessionSubject } from './sessions.js';
import type { SignInGuard } from './sign-in-guard.js';
import type { SignInLinks } from './sign-in-links.js';
import type { UpstreamPasswordCheck } from './upstream-password.js';

export interface ConsoleRouteOptions {
  config: Pick<Config, 'console' | 'hostname' | 'setup'>;
  store: KeyStore;
  authenticator: Authenticator;
  metrics: Metrics;
  sessions: ConsoleSessions;
  guard: SignInGuard;
  passwords: UpstreamPasswordCheck;
  links: SignInLinks;
  oidc: OidcSignIn;
  stats: LoginStats;
}

/** The one answer to every failed sign-in, whatever the reason (the reason is in the audit log). */
const REFUSED = 'Sign-in failed: check what you typed and try again';
const TEMPORARY = 'Sign-in is not possible right now; try again in a few minutes';
const OIDC_BINDING = 'kg_oidc';

const Address = Type.String({ minLength: 1, maxLength: 254 });
const Secret = Type.String({ minLength: 1, maxLength: 1024 });
const Token = Type.String({ minLength: 1, maxLength: 100 });
const SessionView = Type.Object({
  signedIn: Type.Boolean(),
  kind: Type.Optional(Type.Union([Type.Literal('admin'), Type.Literal('account')])),
  account: Type.Optional(Type.String()),
  displayName: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  keyName: Type.Optional(Type.String()),
  csrfToken: Type.Optional(Type.String()),
  expiresAt: Type.Optional(Type.String({ format: 'date-time' })),
  oidc: Type.Boolean({ description: 'OpenID Connect sign-in is configured' }),
});
const common = { tags: ['console'] };
const noLimit = { auth: false as const, limit: false as const };

/**
 * The console's own API: sign-in (administrator key, mailbox password,
 * one-time link, OpenID Connect), the current session, sign-out, the
 * administrator overview and one-time sign-in links. Everything else the
 * console does goes through the REST API with the session cookie.
 */
export const consoleRoutes: FastifyPluginAsyncTypebox<ConsoleRouteOptions> = async (app, opts) => {
  const { config, store, sessions, guard, passwords, links, oidc, stats, metrics } = opts;

  const begin = async (req: FastifyRequest, reply: FastifyReply, subject: SessionSubject): Promise<void> => {
    const old = sessionCookie(req);
    if (old !== null) await sessions.end(old); // a new sign-in never inherits an old session id
    const { id, session } = await sessions.create(subject);
    setSessionCookie(req, reply, id, session);
  };
  const refuse = (temporary: boolean): never => {
    throw new HttpError(temporary ? 'store_unavailable' : 'unauthorized', temporary ? TEMPORARY : REFUSED);
  };
  /** The account a sign-in names, or null when there is none or it is disabled. */
  const usableAccount = async (name: string): Promise<AccountRecord | null> => {
    const account = await store.resolveAccount(name);
    return account && !account.disabled ? account : null;
  };

  app.get(
    '/api/console/session',
    { config: noLimit, schema: { ...common, summary: 'The console session this browser holds, if any', response: { 200: SessionView } } },
    async (req, reply) => {
      reply.header('cache-control', 'no-store');
      const id = sessionCookie(req);
      const session = id === null ? null : await sessions.get(id);
      const who = session ? await principalOf(session, store) : null;
      if (!session || !who) return { signedIn: false, oidc: oidc.enabled };
      const base = { signedIn: true, csrfToken: session.csrf, expiresAt: new Date(session.expiresAt).toISOString(), oidc: oidc.enabled };
      if (session.subject.kind === 'admin') return { ...base, kind: 'admin' as const, keyName: who.key.name };
      return { ...base, kind: 'account' as const, account: who.keyAccount!.address, displayName: who.keyAccount!.displayName };
    },
  );

  app.post(
    '/api/console/sign-in/key',
    {
      config: { auth: false },
      schema: { ...common, summary: 'Sign in with an administrator key (the key is not kept in the browser)', body: Type.Object({ key: Secret }, { additionalProperties: false }), response: { 204: Type.Null(), 401: ErrorBody, 403: ErrorBody, 503: ErrorBody } },
    },
    async (req, reply) => {
      assertSameOrigin(req);
      // The console signs in administrators only: any other key is refused like a wrong one (a bound key by the policy itself).
      const outcome = await opts.authenticator.logIn({
        protocol: 'console',
        method: 'key',
        key: req.body.key,
        ip: req.ip,
        action: (key) => {
          if (key.account === null && !isAdminKey(key)) throw new LoginRefusal('not_admin');
          return { kind: 'admin', access: 'read' };
        },
      });
      if (outcome.kind !== 'loggedIn') return refuse(outcome.kind === 'temporary');
      await begin(req, reply, { kind: 'admin', keyId: outcome.key.id });
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/api/console/sign-in/password/available',
    {
      config: { auth: false },
      schema: {
        ...common,
        summary: 'Whether mailbox-password sign-in can work for an address (the account has an upstream IMAP server)',
        body: Type.Object({ address: Address }, { additionalProperties: false }),
        response: { 200: Type.Object({ available: Type.Boolean() }), 403: ErrorBody },
      },
    },
    async (req) => {
      assertSameOrigin(req);
      // An unknown address is answered as a known one without a route of its own would be: this says nothing about who exists.
      const address = normalizeAddress(req.body.address);
      const account = (await store.resolveAccount(address)) ?? stubAccount(address);
      return { available: passwords.route(account) !== null };
    },
  );

  app.post(
    '/api/console/sign-in/password',
    {
      config: { auth: false },
      schema: {
        ...common,
        summary: 'Sign in with the mailbox address and its real password, checked once by a login to the account’s upstream IMAP server; never kept',
        body: Type.Object({ address: Address, password: Secret }, { additionalProperties: false }),
        response: { 204: Type.Null(), 401: ErrorBody, 403: ErrorBody, 409: ErrorBody, 503: ErrorBody },
      },
    },
    async (req, reply) => {
      assertSameOrigin(req);
      const address = normalizeAddress(req.body.address);
      const known = await store.resolveAccount(address);
      if (passwords.route(known ?? stubAccount(address)) === null) {
        throw new HttpError('conflict', 'Signing in with the mailbox password is not available for this account; ask your administrator for a sign-in link');
      }
      const verdict = await guard.attempt({ method: 'password', ip: req.ip, account: address, secret: '' }, async () => {
        if (known?.disabled) return { ok: false, reason: 'account_disabled' };
        const answer = await passwords.check(known ?? stubAccount(address), req.body.password, req.ip);
        // The mailbox's own server vouched for the address: as when a key is issued for it, the record follows.
        if (answer === 'ok') {
          const account = known ?? (await store.ensureAccount(address));
          return { ok: true, value: account, account: account.address };
        }
        if (answer === 'unavailable') return { ok: false, reason: 'upstream_unavailable', temporary: true };
        return { ok: false, reason: answer === 'no_upstream' ? 'no_upstream' : 'wrong_password' };
      });
      if (!verdict.ok) return refuse(verdict.temporary);
      await begin(req, reply, { kind: 'account', account: verdict.value.address, method: 'password' });
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/api/console/sign-in/link',
    {
      config: { auth: false },
      schema: { ...common, summary: 'Sign in with a one-time link an administrator made (works once)', body: Type.Object({ token: Token }, { additionalProperties: false }), response: { 204: Type.Null(), 401: ErrorBody, 403: ErrorBody, 503: ErrorBody } },
    },
    async (req, reply) => {
      assertSameOrigin(req);
      const verdict = await guard.attempt({ method: 'link', ip: req.ip, account: '', secret: req.body.token }, async () => {
        const address = await links.take(req.body.token);
        if (address === null) return { ok: false, reason: 'unknown_link' };
        const account = await usableAccount(address);
        return account ? { ok: true, value: account, account: account.address } : { ok: false, reason: 'account_gone' };
      });
      if (!verdict.ok) return refuse(verdict.temporary);
      await begin(req, reply, { kind: 'account', account: verdict.value.address, method: 'link' });
      return reply.code(204).send(null);
    },
  );

  const callbackUrl = (req: FastifyRequest): string => `${requestOrigin(req, config.hostname, config.setup.publicUrl || undefined)}/api/console/oidc/callback`;

  app.get(
    '/api/console/oidc/start',
    { config: { auth: false }, schema: { ...common, summary: 'Start OpenID Connect sign-in: redirects to the identity provider', response: { 302: Type.Null(), 404: ErrorBody, 503: ErrorBody } } },
    async (req, reply) => {
      if (!oidc.enabled) throw new HttpError('not_found', 'OpenID Connect sign-in is not configured');
      let started;
      try {
        started = await oidc.start(callbackUrl(req));
      } catch (err) {
        req.log.warn({ err: (err as Error).message }, 'OpenID Connect discovery failed');
        return reply.redirect('/#/sign-in?error=unavailable');
      }
      // Lax, not Strict: it must come back with the provider's (cross-site) redirect to the callback.
      reply.setCookie(OIDC_BINDING, started.binding, { path: '/api/console/oidc', httpOnly: true, sameSite: 'lax', secure: isTls(req), maxAge: 600 });
      return reply.redirect(started.url);
    },
  );

  app.get(
    '/api/console/oidc/callback',
    { config: { auth: false }, schema: { ...common, summary: 'Where the identity provider sends the browser back', response: { 302: Type.Null(), 404: ErrorBody } } },
    async (req, reply) => {
      if (!oidc.enabled) throw new HttpError('not_found', 'OpenID Connect sign-in is not configured');
      const url = new URL(req.url, 'http://callback.invalid');
      const binding = req.cookies[OIDC_BINDING] ?? null;
      reply.clearCookie(OIDC_BINDING, { path: '/api/console/oidc' });
      const verdict = await guard.attempt({ method: 'oidc', ip: req.ip, account: '', secret: url.searchParams.get('state') ?? '' }, async () => {
        const result = await oidc.finish(url, binding);
        if (!result.ok) return result;
        const account = await usableAccount(result.email);
        return account ? { ok: true, value: account, account: account.address } : { ok: false, reason: 'unknown_account' };
      });
      if (!verdict.ok) return reply.redirect(`/#/sign-in?error=${verdict.temporary ? 'unavailable' : 'refused'}`);
      await begin(req, reply, { kind: 'account', account: verdict.value.address, method: 'oidc' });
      return reply.redirect('/#/keys');
    },
  );

  app.post(
    '/api/console/sign-out',
    { config: { auth: false }, schema: { ...common, summary: 'End this console session everywhere', response: { 204: Type.Null(), 403: ErrorBody } } },
    async (req, reply) => {
      assertSameOrigin(req);
      const id = sessionCookie(req);
      if (id !== null) await sessions.end(id);
      clearSessionCookie(req, reply);
      return reply.code(204).send(null);
    },
  );

  app.get(
    '/api/console/overview',
    {
      config: { auth: () => ({ kind: 'admin', access: 'read' }) },
      schema: {
        ...common,
        summary: 'Live mail sessions per protocol and logins and failures in the last hour (this instance)',
        security: KEY_SECURITY,
        response: {
          200: Type.Object({
            sessions: Type.Record(Type.String(), Type.Number()),
            logins: Type.Object({ since: Type.String(), byProtocol: Type.Record(Type.String(), Type.Object({ success: Type.Number(), failure: Type.Number() })) }),
          }),
          ...AUTH_ERRORS,
        },
      },
    },
    async () => {
      const live: Record<string, number> = {};
      for (const v of (await metrics.sessions.get()).values) live[String(v.labels.protocol)] = v.value;
      return { sessions: live, logins: await stats.lastHour() };
    },
  );

  app.post(
    '/api/accounts/:account/sign-in-links',
    {
      config: { auth: () => ({ kind: 'admin', access: 'write' }) },
      schema: {
        tags: ['accounts'],
        summary: 'Make a one-time console sign-in link for an account (works once, for console.linkTtl)',
        security: KEY_SECURITY,
        params: Type.Object({ account: Type.String({ format: 'email', maxLength: 254 }) }),
        response: { 201: Type.Object({ url: Type.String(), expiresAt: Type.String({ format: 'date-time' }) }), 404: ErrorBody, ...AUTH_ERRORS },
      },
    },
    async (req, reply) => {
      const account = await store.getAccount(normalizeAddress(req.params.account));
      if (!account) throw new HttpError('not_found', 'No such account');
      const { token, expiresAt } = await links.create(account.address, req.principal!.key.id);
      const origin = requestOrigin(req, config.hostname, config.setup.publicUrl || undefined);
      return reply.code(201).header('cache-control', 'no-store').send({ url: `${origin}/#/link/${token}`, expiresAt });
    },
  );
};

/** An account record holding just the address: what routing sees for an address with no record. */
function stubAccount(address: string): AccountRecord {
  return { address, aliases: [], displayName: null, disabled: false, createdAt: new Date(0).toISOString(), upstream: null };
}
