import { encodeExport } from '../../../keys/export-codec.js';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { NotFoundError } from '../../../store/errors.js';
import type { KeyStore } from '../../../store/types.js';
import { revokeStoredKey } from '../../../services/key-writes.js';
import { importExportedKey, issueKey } from '../../../services/keys.js';
import { HttpError } from '../../errors.js';
import { AddressPrefixQuery, keyQuery, NamePrefixQuery, NextCursor, PageQuery, StateQuery } from '../../paging.js';
import { AUTH_ERRORS, ErrorBody, KeyExtrasFields, KeyName, keyName, NullableInput, ScopeName, TokenView, tokenView } from '../../schemas.js';

const adminRead = () => ({ kind: 'admin', access: 'read' }) as const;
const adminWrite = () => ({ kind: 'admin', access: 'write' }) as const;

/** Access tokens: the HTTP face of `keygate tokens`, for administrator keys. */
export const tokenRoutes: FastifyPluginAsyncTypebox<{ store: KeyStore }> = async (app, { store }) => {
  app.get(
    '/api/tokens',
    {
      config: { auth: adminRead },
      schema: {
        tags: ['tokens'],
        summary: 'List access tokens, newest first, a page at a time',
        description:
          'Follow `nextCursor` (as `cursor`) until it is null. Filters combine; a filtered page may hold fewer than `limit` tokens and still name a next cursor. ' +
          'A token that exists throughout the paging is listed exactly once, whatever is created or revoked meanwhile.',
        security: [{ bearer: [] }],
        querystring: Type.Object({
          ...PageQuery,
          account: Type.Optional(Type.String({ format: 'email', maxLength: 254, description: 'Only tokens bound to this account' })),
          state: StateQuery('all'),
          namePrefix: NamePrefixQuery,
          addressPrefix: AddressPrefixQuery,
        }),
        response: { 200: Type.Object({ tokens: Type.Array(TokenView), nextCursor: NextCursor }), 400: ErrorBody, ...AUTH_ERRORS },
      },
    },
    async (req) => {
      const page = await store.listKeys({ ...keyQuery(req.query), ...(req.query.account !== undefined && { account: req.query.account }) });
      return { tokens: page.items.map(tokenView), nextCursor: page.nextCursor };
    },
  );

  app.post(
    '/api/tokens',
    {
      config: { auth: adminWrite },
      schema: {
        tags: ['tokens'],
        summary: 'Issue an access token; the token is in this response only',
        description: 'A key grants only what it holds: an administrator key without `*` issues tokens within its own scopes (403 names the first missing one).',
        security: [{ bearer: [] }],
        body: Type.Object(
          {
            name: Type.Optional(KeyName),
            description: Type.Optional(keyName('The same as `name` (the reference workflow\'s word); give one of the two')),
            scopes: Type.Array(ScopeName, { minItems: 1, maxItems: 20 }),
            account: Type.Optional(Type.Union([Type.String({ format: 'email', maxLength: 254 }), Type.Null()])),
            expiresAt: Type.Optional(NullableInput(Type.String({ format: 'date-time' }))),
            allowedIps: Type.Optional(NullableInput(Type.Array(Type.String({ maxLength: 64 }), { maxItems: 100 }))),
            ...KeyExtrasFields,
          },
          { additionalProperties: false },
        ),
        response: { 201: Type.Intersect([TokenView, Type.Object({ token: Type.String() })]), 400: ErrorBody, ...AUTH_ERRORS },
      },
    },
    async (req, reply) => {
      const { key, record } = await issueKey(store, req.principal!.key, req.body);
      return reply.code(201).header('cache-control', 'no-store').send({ ...tokenView(record), token: key });
    },
  );

  app.delete(
    '/api/tokens/:id',
    {
      config: { auth: adminWrite },
      schema: {
        tags: ['tokens'],
        summary: 'Revoke an access token',
        security: [{ bearer: [] }],
        params: Type.Object({ id: Type.String({ maxLength: 100 }) }),
        response: { 204: Type.Null(), 404: ErrorBody, ...AUTH_ERRORS },
      },
    },
    async (req, reply) => {
      try {
        await revokeStoredKey(store, req.params.id, new Date().toISOString(), 'api');
      } catch (err) {
        if (err instanceof NotFoundError) throw new HttpError('not_found', 'No such token');
        throw err;
      }
      return reply.code(204).send(null);
    },
  );

  app.get(
    '/api/tokens/:id/export',
    {
      config: { auth: adminRead },
      schema: {
        tags: ['tokens'],
        summary: 'Export a token record (hash and metadata, never the token)',
        security: [{ bearer: [] }],
        params: Type.Object({ id: Type.String({ maxLength: 100 }) }),
        response: { 200: Type.Object({ id: Type.String(), blob: Type.String() }), 404: ErrorBody, ...AUTH_ERRORS },
      },
    },
    async (req) => {
      const rec = await store.getKey(req.params.id);
      if (!rec) throw new HttpError('not_found', 'No such token');
      return { id: rec.id, blob: encodeExport(rec) };
    },
  );

  app.post(
    '/api/tokens/import',
    {
      config: { auth: adminWrite },
      schema: {
        tags: ['tokens'],
        summary: 'Import an exported token record',
        description: 'An imported record is a key like any other: its scopes must be within the caller\'s (403 otherwise).',
        security: [{ bearer: [] }],
        body: Type.Object({ blob: Type.String({ minLength: 1, maxLength: 16384 }) }, { additionalProperties: false }),
        response: {
          200: Type.Object({ imported: Type.Literal(false), token: TokenView }),
          201: Type.Object({ imported: Type.Literal(true), token: TokenView }),
          400: ErrorBody,
          ...AUTH_ERRORS,
        },
      },
    },
    async (req, reply) => {
      const { result, record } = await importExportedKey(store, req.principal!.key, req.body.blob);
      const stored = (await store.getKey(record.id)) ?? record;
      return result === 'imported'
        ? reply.code(201).send({ imported: true as const, token: tokenView(stored) })
        : reply.code(200).send({ imported: false as const, token: tokenView(stored) });
    },
  );
};
