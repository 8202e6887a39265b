import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { Metrics } from '../../metrics.js';
import { AUTH_ERRORS, KEY_SECURITY } from '../schemas.js';

/** Prometheus scrape endpoint (reference 002): keys with the `metrics` or `*` scope, unbound. */
export const metricsRoutes: FastifyPluginAsyncTypebox<{ metrics: Metrics }> = async (app, { metrics }) => {
  app.get(
    '/metrics',
    {
      config: { auth: () => ({ kind: 'metrics' }) },
      schema: {
        tags: ['metrics'],
        summary: 'Prometheus metrics (text exposition format); needs the "metrics" scope',
        security: KEY_SECURITY,
        response: { 200: { description: 'Metrics', content: { 'text/plain': { schema: Type.String() } } }, ...AUTH_ERRORS },
      },
    },
    async (_req, reply) => {
      const text = await metrics.registry.metrics();
      return reply.type(metrics.registry.contentType).header('cache-control', 'no-store').send(text);
    },
  );
};
