import formbody from '@fastify/formbody';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { introspectToken } from '../../../services/introspection.js';
import type { CanaryAlarm } from '../../../auth/canary.js';
import { clientInfo } from '../../../auth/attempt.js';
import type { KeyStore } from '../../../store/types.js';
import { AUTH_ERRORS, ErrorBody } from '../../schemas.js';

const IntrospectionBody = Type.Object(
  {
    token: Type.String({ minLength: 1, maxLength: 1024, description: 'The token to check: a Keygate key' }),
    token_type_hint: Type.Optional(Type.String({ maxLength: 64 })),
  },
  // RFC 7662 lets clients send more (Dovecot sends empty client_id and client_secret): ignored.
  { additionalProperties: true },
);

const IntrospectionResult = Type.Object({
  active: Type.Boolean(),
  scope: Type.Optional(Type.String()),
  username: Type.Optional(Type.String()),
  sub: Type.Optional(Type.String()),
  client_id: Type.Optional(Type.String({ description: "The key's public id" })),
  token_type: Type.Optional(Type.Literal('Bearer')),
  iat: Type.Optional(Type.Integer()),
  exp: Type.Optional(Type.Integer()),
});

/**
 * `POST /oauth/introspect`: OAuth 2.0 token introspection (RFC 7662) of
 * Keygate keys, for mail servers that validate bearer tokens themselves
 * (Dovecot's oauth2 passdb with `introspection_mode = post`). The caller
 * holds a key with the `introspect` scope, presented as `Authorization:
 * Bearer` or as the password of HTTP Basic (what Dovecot sends from
 * `introspection_url = http://user:KEY@host/…`). The token comes as a form
 * field (or JSON) `token`; the answer is `{active: false}` for anything that
 * is not a live key, whatever the reason (see src/services/introspection.ts).
 */
export const oauthRoutes: FastifyPluginAsyncTypebox<{ store: KeyStore; canary?: CanaryAlarm }> = async (app, { store, canary }) => {
  // Forms only here: RFC 7662 requests are application/x-www-form-urlencoded.
  await app.register(formbody, { bodyLimit: 4096 });
  app.post(
    '/oauth/introspect',
    {
      config: { auth: () => ({ kind: 'introspect' }), basicAuth: true },
      schema: {
        tags: ['oauth'],
        summary: 'Token introspection (RFC 7662); needs the "introspect" scope, as Bearer or as the HTTP Basic password',
        security: [{ bearer: [] }, { basic: [] }],
        consumes: ['application/x-www-form-urlencoded', 'application/json'],
        body: IntrospectionBody,
        response: { 200: IntrospectionResult, 400: ErrorBody, ...AUTH_ERRORS, 503: ErrorBody },
      },
    },
    async (req, reply) => {
      const { response, key } = await introspectToken(store, req.body.token);
      // A live key's use through the introspecting server is a use; revoked and unknown ones are only logged.
      if (key && response.active) store.touchKey(key.id, { at: new Date().toISOString(), ip: req.ip, protocol: 'http' });
      // A canary is inactive like any dead key; that someone presented it to a mail server is the alarm.
      // The mail server does not say who its client is: the introspecting caller is what is known.
      if (key?.canary) {
        canary?.report({ protocol: 'introspect', ip: req.ip, keyId: key.id, keyName: key.name, keyAccount: key.account, client: clientInfo(req.headers['user-agent']), caller: req.principal?.key.id ?? null });
      }
      req.log.info({ introspection: true, caller: req.principal?.key.id, keyId: key?.id, active: response.active }, 'token introspected');
      return reply.header('cache-control', 'no-store').send(response);
    },
  );
};
