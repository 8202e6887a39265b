import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { RouteOptions } from 'fastify';
import fp from 'fastify-plugin';

/**
 * OpenAPI for every route registered after this plugin, served at
 * `/openapi.json`, browsable at `/docs`. Both are public. The swagger-ui routes
 * (page, its JSON and static files) are made public by an `onRoute` hook that
 * lives in their own encapsulated scope, so no other route can become public
 * by accident: the auth hook still refuses routes without `config.auth`.
 */
export const docsPlugin = fp(
  async (app) => {
    await app.register(swagger, {
      openapi: {
        openapi: '3.0.3',
        info: {
          title: 'Keygate control plane',
          version: '0.1.0',
          description:
            'Issue, list, rotate and revoke scoped keys for SMTP, IMAP and POP3. Authenticate with `Authorization: Bearer <key>` or `?access_token=<key>`.',
        },
        components: {
          securitySchemes: {
            bearer: { type: 'http', scheme: 'bearer' },
            access_token: { type: 'apiKey', in: 'query', name: 'access_token' },
            basic: { type: 'http', scheme: 'basic', description: 'The key as the password (token introspection only)' },
          },
        },
        tags: [
          { name: 'smtp-credentials', description: 'Keys of one account and how to connect (reference: SMTP Credentials API)' },
          { name: 'accounts', description: 'Accounts (administrator keys)' },
          { name: 'tokens', description: 'Access tokens (administrator keys)' },
          { name: 'metrics', description: 'Prometheus metrics' },
          { name: 'oauth', description: 'Token introspection (RFC 7662) for mail servers that take keys as bearer tokens' },
          { name: 'health', description: 'Liveness' },
        ],
      },
    });

    await app.register(async (scope) => {
      scope.addHook('onRoute', (route: RouteOptions) => {
        route.config = { ...route.config, auth: false };
      });
      await scope.register(swaggerUi, { routePrefix: '/docs', uiConfig: { deepLinking: true } });
    });

    app.get('/openapi.json', { config: { auth: false }, schema: { hide: true } }, async () => app.swagger());
  },
  { name: 'keygate-docs' },
);
