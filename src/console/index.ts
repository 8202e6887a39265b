import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import helmet from '@fastify/helmet';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import type { Authenticator } from '../auth/authenticate.js';
import { Router } from '../backends/routing.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { KeyStore } from '../store/types.js';
import { LoginStats } from './login-stats.js';
import { OidcSignIn } from './oidc.js';
import { consoleRoutes } from './routes.js';
import { SessionAuth } from './session-auth.js';
import { ConsoleSessions } from './sessions.js';
import { SignInGuard } from './sign-in-guard.js';
import { SignInLinks } from './sign-in-links.js';
import { UpstreamPasswordCheck } from './upstream-password.js';

/** Where `npm run build` puts the console's assets (vite, web/): the same place from src/ (tsx) and dist/. */
export const WEB_ROOT = fileURLToPath(new URL('../../dist/web/', import.meta.url));

export interface ConsoleDeps {
  config: Config;
  store: KeyStore;
  logger: Logger;
  metrics: Metrics;
  authenticator: Authenticator;
  /** Built assets; default WEB_ROOT. */
  webRoot?: string;
}

export interface Console {
  /** For the one auth hook: the session cookie in place of a Bearer key. */
  sessionAuth: SessionAuth;
  /** Registers the pages and the console's API. */
  plugin: FastifyPluginAsync;
}

/**
 * The web console: static pages (built by vite from web/) at `/`, its
 * sign-in and session routes, and the security headers for all of them. The
 * pages use the REST API itself, with the session cookie.
 */
export function createConsole(deps: ConsoleDeps): Console {
  const { config, store, logger, metrics, authenticator } = deps;
  const log = logger.child({ component: 'console' });
  const sessions = new ConsoleSessions(store, { idleMs: config.console.idleTimeout, absoluteMs: config.console.absoluteTimeout });
  const sessionAuth = new SessionAuth(sessions, store);
  const router = new Router(config);
  const passwords = new UpstreamPasswordCheck(router, { connectMs: config.upstream.connectTimeout, loginMs: config.upstream.loginTimeout }, log);
  const guard = new SignInGuard(authenticator);
  const links = new SignInLinks(store, config.console.linkTtl);
  const oidc = new OidcSignIn(config.console.oidc, store, log);
  const stats = new LoginStats(metrics);
  const webRoot = deps.webRoot ?? WEB_ROOT;

  const plugin: FastifyPluginAsync = async (app: FastifyInstance) => {
    await stats.start();
    app.addHook('onClose', async () => stats.stop());
    // Pages and assets are public (the data behind them is not); no rate limit on static files.
    app.addHook('onRoute', (route) => {
      if (route.url !== undefined && !route.url.startsWith('/api/')) route.config = { ...(route.config ?? {}), auth: false, limit: false };
    });
    await app.register(helmet, {
      contentSecurityPolicy: {
        useDefaults: false,
        directives: {
          defaultSrc: ["'self'"],
          scriptSrc: ["'self'"],
          styleSrc: ["'self'"],
          imgSrc: ["'self'", 'data:'],
          connectSrc: ["'self'"],
          fontSrc: ["'self'"],
          formAction: ["'self'"],
          frameAncestors: ["'none'"],
          baseUri: ["'none'"],
          objectSrc: ["'none'"],
        },
      },
      referrerPolicy: { policy: 'no-referrer' },
      // HSTS is the control plane's (src/http/app.ts): sent on every route, and only when it serves HTTPS (http.tls).
      strictTransportSecurity: false,
    });
    await app.register(consoleRoutes, { config, store, authenticator, metrics, sessions, guard, passwords, links, oidc, stats });
    if (!config.console.enabled) return;
    app.get('/ui', (_req, reply) => reply.redirect('/'));
    if (!existsSync(`${webRoot}/index.html`)) {
      log.warn({ webRoot }, 'console assets not built (npm run build); / answers 503');
      app.get('/', (_req, reply) => reply.code(503).type('text/plain').send('The web console is not built: run npm run build'));
      return;
    }
    await app.register(fastifyStatic, {
      root: webRoot,
      prefix: '/',
      wildcard: false, // one route per built file: nothing else on disk is reachable
      index: ['index.html'],
      setHeaders(res, path) {
        // Hashed names never change content; the page itself is always revalidated.
        res.header('cache-control', /[\\/]assets[\\/]/.test(path) ? 'public, max-age=31536000, immutable' : 'no-cache');
      },
    });
  };
  return { sessionAuth, plugin };
}
