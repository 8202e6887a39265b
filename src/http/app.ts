import swagger from '@fastify/swagger';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import addFormats from 'ajv-formats';
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import type { Authenticator } from '../auth/authenticate.js';
import type { Config } from '../config.js';
import { MalformedBlobError } from '../keys/export-codec.js';
import { UnknownScopeError } from '../keys/scopes.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { InputError } from '../services/tokens.js';
import { ConflictError, NotFoundError, StoreUnavailableError } from '../store/errors.js';
import type { KeyStore } from '../store/types.js';
import { errorBody, HttpError } from './errors.js';
import { authPlugin } from './plugins/auth.js';
import { healthRoutes } from './routes/health.js';
import { tokenRoutes } from './routes/tokens/index.js';

export interface AppDeps {
  config: Config;
  store: KeyStore;
  logger: Logger;
  metrics: Metrics;
  authenticator: Authenticator;
}

/** Builds the control plane. `server.ts` only listens; tests use `app.inject`. */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const { config, store, logger, metrics, authenticator } = deps;
  const app = Fastify({
    loggerInstance: logger,
    bodyLimit: config.http.bodyLimit,
    trustProxy: config.http.trustProxy,
    disableRequestLogging: false,
    ajv: {
      customOptions: { removeAdditional: false, coerceTypes: 'array', allErrors: true, useDefaults: true },
      plugins: [addFormats as never],
    },
  }).withTypeProvider<TypeBoxTypeProvider>();

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

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'Keygate control plane', version: '0.1.0', description: 'Issue, list, rotate and revoke scoped keys for SMTP, IMAP and POP3.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' }, access_token: { type: 'apiKey', in: 'query', name: 'access_token' } } },
    },
  });
  await app.register(authPlugin, { authenticator });
  await app.register(healthRoutes, { store });
  await app.register(tokenRoutes, { store });
  app.get('/openapi.json', { config: { auth: false }, schema: { hide: true } }, async () => app.swagger());
  return app as unknown as FastifyInstance;
}
