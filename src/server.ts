import type { FastifyInstance } from 'fastify';
import { Authenticator, type LoginLimiter } from './auth/authenticate.js';
import { createLoginLimiter, type LoginLimiterWithClose } from './auth/limits.js';
import { SessionRegistry } from './auth/sessions.js';
import { checkSecret, createBackends, NO_BACKENDS } from './backends/index.js';
import type { Backends, ClosableBackends } from './backends/types.js';
import { settingSource, type Config } from './config.js';
import { ExpiryWatch } from './events/expiry.js';
import { LoginHistory } from './events/history.js';
import { EventHub } from './events/hub.js';
import { bindEvents, unbindEvents } from './events/registry.js';
import { Webhooks } from './events/webhooks.js';
import { PROTOCOLS, type Protocol } from './keys/scopes.js';
import { buildApp } from './http/app.js';
import { startListeners, type Listeners } from './listeners.js';
import type { Logger } from './log.js';
import { LocalMailbox } from './mailbox/index.js';
import { Metrics } from './metrics.js';
import { decodePreparedTokens, importPreparedTokens } from './services/keys.js';
import { describeStore, openStore } from './store/index.js';
import type { KeyStore } from './store/types.js';
import type { AcmeTiming } from './tls/acme.js';
import { createTlsProvider, type TlsProvider } from './tls/index.js';

export interface RunningServer {
  store: KeyStore;
  /** The control plane; null when started without it (`StartOptions.http` false). */
  app: FastifyInstance | null;
  authenticator: Authenticator;
  metrics: Metrics;
  sessions: SessionRegistry;
  tls: TlsProvider;
  listeners: Listeners;
  /** The local mailbox (`mailbox: local`), or null. */
  mailbox: LocalMailbox | null;
  /** Where key and login events are raised (`eventsOf(store)` is the same hub). */
  events: EventHub;
  /** The webhook endpoints and their delivery queue. */
  webhooks: Webhooks;
  /** The login history writer; null with `events.history` off. */
  history: LoginHistory | null;
  /**
   * Stops accepting everywhere, lets open sessions finish for up to
   * `config.shutdownGrace`, ends what is left, then closes the store (unless
   * it was given in the options).
   */
  close(): Promise<void>;
}

/** Repeats of the very same failed credential from one IP within this window count once against the login limits. */
const LOGIN_RETRY_DEDUPE_MS = 30_000;

/** What a caller (a test, an embedding) may hand in instead of having it built from the configuration. */
export interface StartOptions {
  /** What logged-in sessions are handed to; default: built from the `upstream.*` settings. */
  backends?: Backends;
  /** An open store, left open on close; default: opened from `db.path` / `dbs.redis`. */
  store?: KeyStore;
  /** The failed-login limits; null = none; default: built from `auth.*` (in Redis when `dbs.redis` is set). */
  limiter?: LoginLimiter | null;
  /** The metrics registry; default: a new one with the process metrics. */
  metrics?: Metrics;
  /** Start the HTTP control plane (default true). */
  http?: boolean;
  /** ACME's retry and rescan timing (tests shorten it). */
  acmeTiming?: Partial<AcmeTiming>;
}

/** Opens the store, imports prepared tokens, then opens the control plane and the mail listeners. */
export async function startServer(settings: Config, logger: Logger, options: StartOptions = {}): Promise<RunningServer> {
  // This server's own copy: what clients are told is completed below with the ports the kernel picks.
  const config = structuredClone(settings);
  // A malformed prepared token is a configuration error: refused before the store is opened (or created).
  const prepared = decodePreparedTokens(config.preparedToken);
  const store = options.store ?? (await openStore(config, logger));
  const ownStore = options.store === undefined;
  let backends: ClosableBackends | null = null;
  let mailbox: LocalMailbox | null = null;
  let ownLimiter: LoginLimiterWithClose | null = null;
  let tls: TlsProvider | null = null;
  let sessions: SessionRegistry | null = null;
  let app: FastifyInstance | null = null;
  const events = new EventHub(logger);
  bindEvents(store, events);
  const webhooks = new Webhooks(store, logger, config.webhooks);
  const history = config.events.history ? new LoginHistory(store, logger, config.events, events) : null;
  const expiry = new ExpiryWatch(store, logger, config.events, events);
  try {
    if (prepared.length > 0) await importPreparedTokens(store, prepared, logger);
    // A missing or wrong KEYGATE_SECRET is a start-up error once sealed upstream credentials exist.
    await checkSecret(store, config);
    const metrics = options.metrics ?? new Metrics(store);
    if (!options.backends) {
      // The local mailbox is up before any listener, so the first login already finds it.
      if (config.mailbox === 'local') {
        mailbox = await LocalMailbox.start({ dir: config.mailboxDir, dovecot: config.mailboxDovecot, logger, onRestart: () => metrics.mailboxRestarts.inc() });
      }
      const created = createBackends(config, store, logger, { local: mailbox?.endpoints ?? null, metrics });
      backends = created;
      withoutRoutes(settings, config, created.unrouted, logger);
    }
    // Ticket keys and ACME certificates are shared with the other instances through the store.
    tls = await createTlsProvider(config, logger, { store, ...(options.acmeTiming && { acmeTiming: options.acmeTiming }) });
    // A client retrying one refused key with each mechanism it knows is one guess, not three.
    if (options.limiter === undefined) ownLimiter = await createLoginLimiter(config, logger, { dedupeMs: LOGIN_RETRY_DEDUPE_MS });
    sessions = new SessionRegistry(store, logger, metrics, { recheckIntervalMs: config.sessions.recheckInterval });
    sessions.start();
    const authenticator = new Authenticator({
      store,
      logger,
      metrics,
      limiter: options.limiter === undefined ? ownLimiter : options.limiter,
      sessions,
      backends: options.backends ?? backends ?? NO_BACKENDS,
      failureDelayMs: config.auth.failureDelay,
      events,
      ...(history && { onAttempt: history.record }),
    });
    if (options.http !== false) {
      app = await buildApp({ config, store, logger, metrics, authenticator, tls, events, webhooks });
      await app.listen({ host: config.http.host, port: config.http.port });
    }
    const listeners = await startListeners({ config, logger, authenticator, tls, metrics });
    webhooks.start(events);
    expiry.start();
    advertiseBoundPorts(config, listeners);
    // Everything that answers ACME challenges is listening: ordering and renewal may begin.
    tls.start();
    logger.info(
      {
        store: describeStore(config),
        ...(app && { http: `${config.http.host}:${config.http.port}` }),
        listeners: listeners.all.map((l) => `${l.name}=${l.address().host}:${l.address().port}`),
      },
      'Keygate started',
    );
    const running = { app, tls, sessions };
    let closing: Promise<void> | null = null;
    return {
      store,
      app,
      authenticator,
      metrics,
      sessions,
      tls,
      listeners,
      mailbox,
      events,
      webhooks,
      history,
      close() {
        closing ??= (async () => {
          // Both stop accepting at once; mail sessions get the grace period.
          await Promise.all([listeners.close(config.shutdownGrace), running.app?.close()]);
          running.sessions.endAll('shutdown');
          running.sessions.stop();
          await backends?.close();
          // After the sessions: Dovecot goes last, so nothing in flight is cut off.
          await mailbox?.stop();
          await ownLimiter?.close();
          await running.tls.close();
          await expiry.close();
          await history?.close();
          await webhooks.close();
          unbindEvents(store, events);
          if (ownStore) await store.close();
          logger.info('Keygate stopped');
        })();
        return closing;
      },
    };
  } catch (err) {
    await app?.close().catch(() => {});
    sessions?.stop();
    await backends?.close().catch(() => {});
    await mailbox?.stop().catch(() => {});
    await ownLimiter?.close().catch(() => {});
    await tls?.close();
    await expiry.close();
    await history?.close();
    await webhooks.close();
    unbindEvents(store, events);
    if (ownStore) await store.close().catch(() => {});
    throw err;
  }
}

/**
 * A protocol no setting routes anywhere: one warning line at start-up, and
 * clients are not told about it (autoconfig, Autodiscover, profiles,
 * `connectionInfo`) unless `public.<protocol>.enabled` is set explicitly
 * (accounts with routes of their own still log in).
 */
function withoutRoutes(settings: Config, config: Config, unrouted: readonly Protocol[], logger: Logger): void {
  const refused = { imap: 'IMAP logins are refused', pop3: 'POP3 logins are refused', smtp: 'messages are refused at MAIL FROM' };
  for (const p of unrouted) {
    logger.warn(
      { protocol: p },
      `no ${p.toUpperCase()} upstream is configured: ${refused[p]} for every account without a route of its own (set upstream.${p}.host or upstream.domains, or run --mailbox local)`,
    );
    const source = settingSource(settings, `public.${p}.enabled`);
    const forced = source !== undefined && source !== 'default' && source !== `${p}.enabled`;
    if (!forced) config.public[p].enabled = false;
  }
}

/**
 * A listener configured with port 0 gets its port from the kernel. What
 * clients are told follows the listener (public.* left unset is 0 then too),
 * so it is the port actually bound; a public port set to something else stays.
 */
function advertiseBoundPorts(config: Config, listeners: Listeners): void {
  for (const p of PROTOCOLS) {
    for (const [field, name] of [['port', p], ['securePort', `${p}s`]] as const) {
      const bound = listeners.all.find((l) => l.name === name);
      if (bound && config[p][field] === 0 && config.public[p][field] === 0) config.public[p][field] = bound.address().port;
    }
  }
}
