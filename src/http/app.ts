import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import addFormats from 'ajv-formats';
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import type { Authenticator } from '../auth/authenticate.js';
import type { Config } from '../config.js';
import { MalformedBlobError } from '../keys/export-codec.js';
import { UnknownScopeError } from '../keys/scopes.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { ScopeGrantError } from '../services/credentials.js';
import { InputError } from '../services/tokens.js';
import { ConflictError, NotFoundError, StoreUnavailableError } from '../store/errors.js';
import { createRedisClient, type RedisClient } from '../store/redis-connect.js';
import type { KeyStore } from '../store/types.js';
import { errorBody, HttpError } from './errors.js';
import { authPlugin } from './plugins/auth.js';
import { docsPlugin } from './plugins/docs.js';
import { rateLimitPlugin } from './plugins/rate-limit.js';
import { accountRoutes } from './routes/accounts/index.js';
import { healthRoutes } from './routes/health.js';
import { metricsRoutes } from './routes/metrics.js';
import { credentialRoutes } from './routes/smtp-credentials/index.js';
import { tokenRoutes } from './routes/tokens/index.js';

export interface AppDeps {
  config: Config;
  store: KeyStore;
  logger: Logger;
  metrics: Metrics;
  authenticator: Authenticator;
  /** Prefix of the rate-limit counters in Redis (when `dbs.redis` is set); tests use their own. */
  rateLimitNamespace?: string;
}

/** Builds the control plane. `server.ts` only listens; tests use `app.inject`. */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const { config, store, logger, metrics, authenticator } = deps;
  const app = Fastify({
    loggerInstance: logger,
    bodyLimit: config.http.bodyLimit,
    trustProxy: config.http.trustProxy,
    ajv: {
      customOptions: { removeAdditional: false, coerceTypes: 'array', allErrors: true, useDefaults: true },
      plugins: [addFormats as never],
    },
  }).withTypeProvider<TypeBoxTypeProvider>();

  // Clients often send `Content-Type: application/json` with no body on POST …/rotate: treat that as no body.
  const json = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) =>
    body === '' ? done(null, undefined) : json(req, body as string, done),
  );

  app.setErrorHandler((error: unknown, req, reply) => {
    const err = error as FastifyError;
    const send = (status: number, code: string, message: string, details?: unknown) => reply.code(status).send(errorBody(code, message, details));
    if (error instanceof HttpError) return send(error.status, error.code, error.message, error.details);
    if (err.validation) {
      const details = err.validation.map((v) => ({
        field: `${err.validationContext ?? 'body'}${v.instancePath.replaceAll('/', '.') || ''}${v.keyword === 'additionalProperties' ? `.${String((v.params as { additionalProperty?: string }).additionalProperty)}` : v.keyword === 'required' ? `.${String((v.params as { missingProperty?: string }).missingProperty)}` : ''}`,
        message: v.keyword === 'additionalProperties' ? 'unknown field' : (v.message ?? 'invalid'),
      }));
      return send(400, 'validation', 'The request is not valid', details);
    }
    if (error instanceof InputError) return send(400, 'validation', error.message, error.field ? [{ field: `body.${error.field}`, message: error.message }] : undefined);
    if (error instanceof UnknownScopeError) return send(400, 'validation', err.message, [{ field: 'body.scopes', message: err.message }]);
    if (error instanceof MalformedBlobError) return send(400, 'validation', err.message, [{ field: 'body.blob', message: err.message }]);
    if (error instanceof ScopeGrantError) return send(403, 'forbidden', error.message, { missingScope: error.missing[0], missingScopes: error.missing });
    if (error instanceof NotFoundError) return send(404, 'not_found', 'Not found');
    if (error instanceof ConflictError) return send(409, 'conflict', err.message);
    if (error instanceof StoreUnavailableError) {
      req.log.error({ err }, 'store unavailable');
      return send(503, 'store_unavailable', 'The key store is unavailable; retry later');
    }
    if (err.statusCode === 429) return send(429, 'rate_limited', 'Too many requests; retry later');
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return send(413, 'payload_too_large', 'The request body is too large');
    if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return send(415, 'unsupported_media_type', 'Unsupported content type');
    if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) return send(err.statusCode, 'bad_request', err.message);
    req.log.error({ err }, 'unhandled error');
    return send(500, 'internal', 'Internal error');
  });
  app.setNotFoundHandler((req, reply) => reply.code(404).send(errorBody('not_found', `No route ${req.method} ${req.url.split('?')[0]}`)));

  app.addHook('onResponse', async (req, reply) => {
    metrics.httpRequests.inc({ route: req.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) });
  });

  // Rate-limit counters live where the keys live: shared in Redis, in-process with SQLite.
  let redis: RedisClient | null = null;
  if (config.dbs.redis !== '') {
    redis = createRedisClient(config.dbs.redis, { connectionName: 'keygate-rate-limit' });
    redis.on('error', () => {}); // failed commands are handled (and logged) by the limiter
    await whenReady(redis, 3000);
    app.addHook('onClose', async () => {
      await redis!.quit().catch(() => redis!.disconnect());
    });
  }

  try {
    // Order matters: docs (OpenAPI collects routes registered after it), the one
    // auth hook, rate limits (they attach to routes as they are registered), routes.
    await app.register(docsPlugin);
    await app.register(authPlugin, { authenticator });
    await app.register(rateLimitPlugin, { config, metrics, redis, namespace: deps.rateLimitNamespace ?? 'keygate:rl:' });
    await app.register(healthRoutes, { store });
    await app.register(metricsRoutes, { metrics });
    await app.register(credentialRoutes, { store, config, mode: 'own' });
    await app.register(credentialRoutes, { store, config, mode: 'admin' });
    await app.register(accountRoutes, { store });
    await app.register(tokenRoutes, { store });
  } catch (err) {
    redis?.disconnect();
    throw err;
  }
  return app as unknown as FastifyInstance;
}

/** Waits until the client is connected, at most `ms`; limits fail open (and log) meanwhile. */
function whenReady(client: RedisClient, ms: number): Promise<void> {
  if (client.status === 'ready') return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    client.once('ready', done);
    function done(): void {
      clearTimeout(timer);
      client.off('ready', done);
      resolve();
    }
  });
}
