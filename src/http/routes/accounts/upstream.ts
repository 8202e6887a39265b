import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { setAccountUpstream, UpstreamInputError, upstreamView } from '../../../backends/accounts.js';
import { SecretError } from '../../../backends/secret.js';
import type { Config } from '../../../config.js';
import { NotFoundError } from '../../../store/errors.js';
import type { KeyStore } from '../../../store/types.js';
import { HttpError } from '../../errors.js';
import { AccountUpstreamBody, AccountUpstreamView, AUTH_ERRORS, ErrorBody, KEY_SECURITY } from '../../schemas.js';
import { AccountParams } from './index.js';

const upstreamRead = () => ({ kind: 'upstream', access: 'read' }) as const;
const upstreamWrite = () => ({ kind: 'upstream', access: 'write' }) as const;

/** The errors of setAccountUpstream as HTTP replies; anything else goes to the one error handler. */
function replyFor(err: unknown): never {
  if (err instanceof NotFoundError) throw new HttpError('not_found', 'No such account');
  if (err instanceof UpstreamInputError) throw new HttpError('validation', err.message, [{ field: `body.${err.field}`, message: err.message }]);
  // 409, not 400: the request is well formed and would succeed on a server with
  // KEYGATE_SECRET set; it conflicts with this server's configuration, which only
  // the operator can change. The message names the setting, never a value.
  if (err instanceof SecretError) throw new HttpError('conflict', err.message, { setting: 'secret' });
  throw err;
}

/**
 * An account's own upstream route (proxy backends), for administrator keys;
 * setting one also takes the mail scopes (smtp, imap, pop3: `*` has them), as
 * the route decides where the account's mail credentials are sent.
 * The upstream password goes in and is stored sealed; no response carries it,
 * sealed or not: responses say `passwordSet` instead.
 */
export const accountUpstreamRoutes: FastifyPluginAsyncTypebox<{ store: KeyStore; config: Pick<Config, 'secret'> }> = async (app, { store, config }) => {
  app.get(
    '/api/accounts/:account/upstream',
    {
      config: { auth: upstreamRead },
      schema: {
        tags: ['accounts'],
        summary: "Get an account's own upstream route (route null: none, the domain's or default route applies); never the password",
        security: KEY_SECURITY,
        params: AccountParams,
        response: { 200: AccountUpstreamView, 400: ErrorBody, 404: ErrorBody, ...AUTH_ERRORS },
      },
    },
    async (req) => {
      const account = await store.getAccount(req.params.account);
      if (!account) throw new HttpError('not_found', 'No such account');
      return upstreamView(account);
    },
  );

  app.put(
    '/api/accounts/:account/upstream',
    {
      config: { auth: upstreamWrite },
      schema: {
        tags: ['accounts'],
        summary: "Set (replace) an account's upstream route; an absent password keeps the stored one, null removes it",
        description:
          'The password is sealed (AES-256-GCM under KEYGATE_SECRET) before it is stored. 409 when a password is given but KEYGATE_SECRET is not set (or shorter than 16 characters).',
        security: KEY_SECURITY,
        params: AccountParams,
        body: AccountUpstreamBody,
        response: { 200: AccountUpstreamView, 400: ErrorBody, 404: ErrorBody, 409: ErrorBody, ...AUTH_ERRORS },
      },
    },
    async (req) => upstreamView(await setAccountUpstream(store, config, req.params.account, req.body).catch(replyFor)),
  );

  app.delete(
    '/api/accounts/:account/upstream',
    {
      config: { auth: upstreamWrite },
      schema: {
        tags: ['accounts'],
        summary: "Remove an account's own upstream route and stored credentials (its domain's or the default route applies again)",
        security: KEY_SECURITY,
        params: AccountParams,
        response: { 204: Type.Null(), 400: ErrorBody, 404: ErrorBody, ...AUTH_ERRORS },
      },
    },
    async (req, reply) => {
      await setAccountUpstream(store, config, req.params.account, null).catch(replyFor);
      return reply.code(204).send(null);
    },
  );
};
