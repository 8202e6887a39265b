import rateLimit, { normalizeIP } from '@fastify/rate-limit';
import type { FastifyReply, FastifyRequest, onRequestAsyncHookHandler, RouteOptions } from 'fastify';
import fp from 'fastify-plugin';
import type { Config } from '../../config.js';
import type { Metrics } from '../../metrics.js';
import type { RedisClient } from '../../store/redis-connect.js';
import { HttpError } from '../errors.js';

/**
 * Route groups with their own limits. `credentials`: the SMTP Credentials API
 * (both URL forms), `rateLimit.credentials.max` per `rateLimit.credentials.window`,
 * counted per client IP and, separately, per key id. `api`: every other
 * `/api/` route, `rateLimit.api.*` per client IP. Routes may name their group
 * in `config.limit`; `/api/` routes that do not get `api`; other routes
 * (health, metrics, docs) are not limited.
 */
export type LimitGroup = 'credentials' | 'api';

declare module 'fastify' {
  interface FastifyContextConfig {
    limit?: LimitGroup | false;
  }
}

export interface RateLimitPluginOptions {
  config: Pick<Config, 'rateLimit'>;
  metrics: Metrics;
  /** Shared counters across instances when Redis is the store; in-process counters otherwise. */
  redis: RedisClient | null;
  /** Prefix of the counters in Redis. */
  namespace: string;
}

type Check = ReturnType<import('fastify').FastifyInstance['createRateLimit']>;
type Hook = (req: FastifyRequest, reply: FastifyReply) => Promise<void>;

/*
 * Why createRateLimit and not the plugin's per-route `config.rateLimit`: the
 * per-route form counts each route separately and allows one key generator;
 * these limits are per route *group* and need two counters (client IP, before
 * authentication, so key guessing is limited too; key id, after the auth hook
 * has identified the key, so one key cannot spread its requests over many
 * addresses). `createRateLimit` is the plugin's documented way to run a
 * limiter from our own hooks: one counter store (Redis or in-process), our
 * own key names, our own 429 in the JSON error shape.
 */
export const rateLimitPlugin = fp<RateLimitPluginOptions>(
  async (app, opts) => {
    await app.register(rateLimit, {
      global: false,
      ...(opts.redis ? { redis: opts.redis, nameSpace: opts.namespace } : {}),
    });

    const { credentials, api } = opts.config.rateLimit;
    const limiter = (group: string, max: number, timeWindow: number, keyOf: (req: FastifyRequest) => string | null): Hook => {
      const check: Check = app.createRateLimit({ max, timeWindow, keyGenerator: (req) => `${group}:${keyOf(req) ?? '-'}` });
      return async (req, reply) => {
        if (keyOf(req) === null) return;
        let res: Awaited<ReturnType<Check>>;
        try {
          res = await check(req);
        } catch (err) {
          // Counter store unreachable: let the request through (the key check itself will answer 503 if the store is down too).
          req.log.warn({ err }, 'rate-limit counter unavailable; request not counted');
          return;
        }
        if (res.isAllowed) return;
        const remaining = Number(reply.getHeader('x-ratelimit-remaining') ?? Infinity);
        if (res.remaining <= remaining) {
          reply.header('x-ratelimit-limit', res.max);
          reply.header('x-ratelimit-remaining', res.remaining);
          reply.header('x-ratelimit-reset', res.ttlInSeconds);
        }
        if (!res.isExceeded) return;
        opts.metrics.rateLimited.inc({ surface: 'http' });
        reply.header('retry-after', Math.max(1, res.ttlInSeconds));
        throw new HttpError('rate_limited', undefined, { retryAfterSeconds: Math.max(1, res.ttlInSeconds) });
      };
    };

    const byIp = (req: FastifyRequest) => `ip:${normalizeIP(req.ip)}`;
    const byKey = (req: FastifyRequest) => (req.principal ? `key:${req.principal.key.id}` : null);
    const hooks: Record<LimitGroup, { onRequest: Hook; preHandler?: Hook }> = {
      credentials: {
        onRequest: limiter('credentials', credentials.max, credentials.window, byIp),
        // Route preHandler hooks run after the instance's, so after the auth hook.
        preHandler: limiter('credentials', credentials.max, credentials.window, byKey),
      },
      api: { onRequest: limiter('api', api.max, api.window, byIp) },
    };

    app.addHook('onRoute', (route: RouteOptions) => {
      const group = route.config?.limit ?? (route.url.startsWith('/api/') ? 'api' : false);
      if (group === false) return;
      const { onRequest, preHandler } = hooks[group];
      route.onRequest = [...toArray(route.onRequest), onRequest as onRequestAsyncHookHandler];
      if (preHandler) route.preHandler = [...toArray(route.preHandler), preHandler as never];
    });
  },
  { name: 'keygate-rate-limit', dependencies: ['keygate-auth'] },
);

function toArray<T>(v: T | T[] | undefined): T[] {
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}
