import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import type { Config } from '../../../config.js';
import type { Action } from '../../../keys/policy.js';
import { normalizeAddress, type KeyRecord } from '../../../keys/record.js';
import type { LoginEntry, LoginResult } from '../../../store/activity.js';
import type { KeyStore } from '../../../store/types.js';
import { HttpError } from '../../errors.js';
import { AUTH_ERRORS, ErrorBody, KEY_SECURITY, Nullable } from '../../schemas.js';

const MAX_PAGE = 500;

export const LoginEventView = Type.Object({
  id: Type.String({ description: 'cursor of this entry' }),
  time: Type.String({ format: 'date-time' }),
  account: Nullable(Type.String()),
  keyId: Nullable(Type.String()),
  protocol: Type.String({ description: 'imap, pop3, smtp, http or console' }),
  method: Nullable(Type.String({ description: 'the console sign-in method' })),
  ip: Type.String(),
  result: Type.Union([Type.Literal('success'), Type.Literal('failure'), Type.Literal('temporary_failure')]),
  reason: Nullable(Type.String()),
  client: Nullable(Type.Object({ name: Type.Optional(Type.String()), version: Type.Optional(Type.String()) })),
  newNetwork: Type.Boolean({ description: 'the first success of this key from this network (key.new_network)' }),
});

const Query = Type.Object(
  {
    key: Type.Optional(Type.String({ minLength: 1, maxLength: 100, description: 'only this key id' })),
    result: Type.Optional(Type.Union([Type.Literal('success'), Type.Literal('failure'), Type.Literal('temporary_failure')])),
    since: Type.Optional(Type.String({ format: 'date-time', description: 'only attempts at or after this time' })),
    cursor: Type.Optional(Type.String({ maxLength: 40, pattern: '^[0-9-]+$', description: '`next` of the previous page' })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_PAGE, default: 100 })),
  },
  { additionalProperties: false },
);

const Page = Type.Object({ events: Type.Array(LoginEventView), next: Nullable(Type.String({ description: 'cursor of the next (older) page; null at the end' })) });

function view(e: LoginEntry) {
  return {
    id: e.id,
    time: new Date(e.at).toISOString(),
    account: e.account,
    keyId: e.keyId,
    protocol: e.protocol,
    method: e.method,
    ip: e.ip,
    result: e.result,
    reason: e.reason,
    client: e.client,
    newNetwork: e.newNetwork === true,
  };
}

/**
 * An account's login history, newest first: `GET /api/accounts/{account}/events`
 * (administrator keys) and `GET /api/smtp-credentials/events` (the calling
 * key's own account). Decided by the policy's `history` action.
 */
export const eventRoutes: FastifyPluginAsyncTypebox<{ store: KeyStore; config: Config; mode: 'own' | 'admin' }> = async (app, { store, config, mode }) => {
  const admin = mode === 'admin';
  const accountOf = (req: FastifyRequest, key: KeyRecord): string => {
    if (admin) return normalizeAddress((req.params as { account: string }).account);
    if (key.account === null) throw new HttpError('forbidden', 'This key is not bound to an account; administrator keys use /api/accounts/{account}/events');
    return key.account;
  };
  const bounds = { maxPerAccount: config.events.historyMax, retentionMs: config.events.historyRetention };
  app.get(
    admin ? '/api/accounts/:account/events' : '/api/smtp-credentials/events',
    {
      config: { auth: (req: FastifyRequest, key: KeyRecord): Action => ({ kind: 'history', account: accountOf(req, key) }), limit: 'credentials' as const },
      schema: {
        tags: ['events'],
        summary: admin ? "An account's login history, newest first (administrator keys)" : "The calling key's account's login history, newest first",
        security: KEY_SECURITY,
        ...(admin && { params: Type.Object({ account: Type.String({ format: 'email', maxLength: 254 }) }) }),
        querystring: Query,
        response: { 200: Page, 400: ErrorBody, ...AUTH_ERRORS },
      },
    },
    async (req) => {
      const q = req.query;
      const page = await store.activity.listLogins(
        {
          account: accountOf(req, req.principal!.key),
          ...(q.key !== undefined && { keyId: q.key }),
          ...(q.result !== undefined && { result: q.result as LoginResult }),
          ...(q.since !== undefined && { since: Date.parse(q.since) }),
          ...(q.cursor !== undefined && { before: q.cursor }),
          limit: q.limit ?? 100,
        },
        bounds,
      );
      return { events: page.entries.map(view), next: page.next };
    },
  );
};
