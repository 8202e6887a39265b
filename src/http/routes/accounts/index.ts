import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { MAX_DISPLAY_NAME, SAFE_TEXT_PATTERN } from '../../../keys/names.js';
import { createAccount, deleteAccount, updateAccount } from '../../../services/accounts.js';
import { NotFoundError } from '../../../store/errors.js';
import type { KeyStore } from '../../../store/types.js';
import { HttpError } from '../../errors.js';
import { AddressPrefixQuery, NextCursor, PageQuery } from '../../paging.js';
import { accountView, AccountView, AUTH_ERRORS, ErrorBody, KEY_SECURITY, Nullable } from '../../schemas.js';

export const adminRead = () => ({ kind: 'admin', access: 'read' }) as const;
export const adminWrite = () => ({ kind: 'admin', access: 'write' }) as const;

const Address = Type.String({ format: 'email', maxLength: 254 });
const DisplayName = Nullable(Type.String({ maxLength: MAX_DISPLAY_NAME, pattern: SAFE_TEXT_PATTERN }));
const Aliases = Type.Array(Address, { maxItems: 100, uniqueItems: true });
export const AccountParams = Type.Object({ account: Address });

const notFound = (err: unknown): never => {
  if (err instanceof NotFoundError) throw new HttpError('not_found', 'No such account');
  throw err;
};

/**
 * Accounts, for administrator keys. Accounts are named by their canonical
 * address (an alias in the URL is not resolved: it is 404). Responses never
 * carry the reserved `upstream` field.
 */
export const accountRoutes: FastifyPluginAsyncTypebox<{ store: KeyStore }> = async (app, { store }) => {
  app.get(
    '/api/accounts',
    {
      config: { auth: adminRead },
      schema: {
        tags: ['accounts'],
        summary: 'List accounts by address, a page at a time',
        description: 'Follow `nextCursor` (as `cursor`) until it is null. An account that exists throughout the paging is listed exactly once.',
        security: KEY_SECURITY,
        querystring: Type.Object({ ...PageQuery, addressPrefix: AddressPrefixQuery }),
        response: { 200: Type.Object({ accounts: Type.Array(AccountView), nextCursor: NextCursor }), 400: ErrorBody, ...AUTH_ERRORS },
      },
    },
    async (req) => {
      const { limit, cursor, addressPrefix } = req.query;
      const page = await store.listAccounts({ limit, cursor: cursor ?? null, ...(addressPrefix !== undefined && { addressPrefix }) });
      return { accounts: page.items.map(accountView), nextCursor: page.nextCursor };
    },
  );

  app.post(
    '/api/accounts',
    {
      config: { auth: adminWrite },
      schema: {
        tags: ['accounts'],
        summary: 'Create an account',
        security: KEY_SECURITY,
        body: Type.Object(
          { address: Address, displayName: Type.Optional(DisplayName), aliases: Type.Optional(Aliases), disabled: Type.Optional(Type.Boolean()) },
          { additionalProperties: false },
        ),
        response: { 201: AccountView, 400: ErrorBody, 409: ErrorBody, ...AUTH_ERRORS },
      },
    },
    async (req, reply) => reply.code(201).send(accountView(await createAccount(store, req.body))),
  );

  app.get(
    '/api/accounts/:account',
    {
      config: { auth: adminRead },
      schema: {
        tags: ['accounts'],
        summary: 'Get an account',
        security: KEY_SECURITY,
        params: AccountParams,
        response: { 200: AccountView, 400: ErrorBody, 404: ErrorBody, ...AUTH_ERRORS },
      },
    },
    async (req) => {
      const account = await store.getAccount(req.params.account);
      if (!account) throw new HttpError('not_found', 'No such account');
      return accountView(account);
    },
  );

  app.patch(
    '/api/accounts/:account',
    {
      config: { auth: adminWrite },
      schema: {
        tags: ['accounts'],
        summary: 'Change an account; "disabled": true makes every key of it fail at once (the address cannot change)',
        security: KEY_SECURITY,
        params: AccountParams,
        body: Type.Object(
          { displayName: Type.Optional(DisplayName), aliases: Type.Optional(Aliases), disabled: Type.Optional(Type.Boolean()) },
          { additionalProperties: false, minProperties: 1 },
        ),
        response: { 200: AccountView, 400: ErrorBody, 404: ErrorBody, 409: ErrorBody, ...AUTH_ERRORS },
      },
    },
    async (req) => accountView(await updateAccount(store, req.params.account, req.body).catch(notFound)),
  );

  app.delete(
    '/api/accounts/:account',
    {
      config: { auth: adminWrite },
      schema: {
        tags: ['accounts'],
        summary: 'Delete an account and revoke every key bound to it',
        security: KEY_SECURITY,
        params: AccountParams,
        response: { 204: Type.Null(), 400: ErrorBody, 404: ErrorBody, ...AUTH_ERRORS },
      },
    },
    async (req, reply) => {
      await deleteAccount(store, req.params.account).catch(notFound);
      return reply.code(204).send(null);
    },
  );
};
