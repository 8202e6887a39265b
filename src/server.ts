import type { FastifyInstance } from 'fastify';
import { Authenticator } from './auth/authenticate.js';
import type { Config } from './config.js';
import { buildApp } from './http/app.js';
import type { Logger } from './log.js';
import { Metrics } from './metrics.js';
import { importPreparedTokens } from './services/tokens.js';
import { describeStore, openStore } from './store/index.js';
import type { KeyStore } from './store/types.js';

export interface RunningServer {
  store: KeyStore;
  app: FastifyInstance;
  authenticator: Authenticator;
  metrics: Metrics;
  /** Stops accepting, lets open work finish, then closes the store. */
  close(): Promise<void>;
}

/** Opens the store, imports prepared tokens, then opens the listeners. */
export async function startServer(config: Config, logger: Logger): Promise<RunningServer> {
  const store = await openStore(config, logger);
  try {
    if (config.preparedToken !== '') await importPreparedTokens(store, config.preparedToken, logger);
    const metrics = new Metrics(store);
    const authenticator = new Authenticator(store, logger, metrics);
    const app = await buildApp({ config, store, logger, metrics, authenticator });
    await app.listen({ host: config.http.host, port: config.http.port });
    logger.info({ store: describeStore(config), http: `${config.http.host}:${config.http.port}` }, 'Keygate started');
    let closing: Promise<void> | null = null;
    return {
      store,
      app,
      authenticator,
      metrics,
      close() {
        closing ??= (async () => {
          await app.close();
          await store.close();
          logger.info('Keygate stopped');
        })();
        return closing;
      },
    };
  } catch (err) {
    await store.close().catch(() => {});
    throw err;
  }
}
