import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { AcmeChallenges } from '../../tls/index.js';
import { errorBody } from '../errors.js';

/**
 * ACME HTTP-01 (RFC 8555 §8.3): the CA fetches
 * `http://<name>/.well-known/acme-challenge/<token>` and expects the key
 * authorization. Public by design; the answer comes from the key store, so
 * whichever instance the CA reaches answers for the one that ordered.
 */
export const acmeChallengeRoutes: FastifyPluginAsyncTypebox<{ challenges: AcmeChallenges }> = async (app, { challenges }) => {
  app.get(
    '/.well-known/acme-challenge/:token',
    { config: { auth: false }, schema: { hide: true, params: Type.Object({ token: Type.String({ minLength: 1, maxLength: 256 }) }) } },
    async (req, reply) => {
      const answer = await challenges.httpResponse(req.params.token);
      if (answer === null) return reply.code(404).send(errorBody('not_found', 'No such ACME challenge'));
      return reply.type('text/plain; charset=utf-8').send(answer);
    },
  );
};
