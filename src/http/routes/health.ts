import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { KeyStore } from '../../store/types.js';

const Health = Type.Object({
  status: Type.Union([Type.Literal('ok'), Type.Literal('degraded')]),
  store: Type.Object({ kind: Type.String(), reachable: Type.Boolean(), latencyMs: Type.Optional(Type.Number()) }),
});

/** Unauthenticated liveness and store reachability. 503 when the store does not answer. */
export const healthRoutes: FastifyPluginAsyncTypebox<{ store: KeyStore }> = async (app, { store }) => {
  app.get(
    '/health',
    { config: { auth: false }, schema: { tags: ['health'], summary: 'Liveness and store reachability', response: { 200: Health, 503: Health } } },
    async (_req, reply) => {
      const t0 = performance.now();
      try {
        await Promise.race([store.ping(), new Promise((_, rej) => setTimeout(() => rej(new Error('timeout')), 2000).unref())]);
        return { status: 'ok' as const, store: { kind: store.kind, reachable: true, latencyMs: Math.round((performance.now() - t0) * 100) / 100 } };
      } catch {
        return reply.code(503).send({ status: 'degraded' as const, store: { kind: store.kind, reachable: false } });
      }
    },
  );
};
