import client from 'prom-client';
import { PROTOCOLS } from './keys/scopes.js';
import type { KeyStore } from './store/types.js';

/** One registry per process (or per test app), holding every Keygate metric. */
export class Metrics {
  readonly registry = new client.Registry();
  readonly authAttempts = new client.Counter({
    name: 'keygate_auth_attempts_total',
    help: 'Authentication attempts by protocol and result',
    labelNames: ['protocol', 'result'] as const,
    registers: [this.registry],
  });
  readonly authDuration = new client.Histogram({
    name: 'keygate_auth_duration_seconds',
    help: 'Time to decide an authentication attempt (excluding the failure delay)',
    labelNames: ['protocol'] as const,
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [this.registry],
  });
  readonly sessions = new client.Gauge({
    name: 'keygate_sessions',
    help: 'Open sessions by protocol',
    labelNames: ['protocol'] as const,
    registers: [this.registry],
  });
  readonly httpRequests = new client.Counter({
    name: 'keygate_http_requests_total',
    help: 'HTTP requests by route and status',
    labelNames: ['route', 'status'] as const,
    registers: [this.registry],
  });
  readonly httpConnections = new client.Gauge({
    name: 'keygate_http_connections',
    help: 'Open control-plane connections',
    registers: [this.registry],
  });
  readonly httpDuration = new client.Histogram({
    name: 'keygate_http_request_duration_seconds',
    help: 'Time to answer an HTTP request, by route and status class (2xx, 4xx, …)',
    labelNames: ['route', 'status_class'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly rateLimited = new client.Counter({
    name: 'keygate_rate_limited_total',
    help: 'Requests or logins refused by a rate limit, by surface',
    labelNames: ['surface'] as const,
    registers: [this.registry],
  });

  readonly connectionsRefused = new client.Counter({
    name: 'keygate_connections_refused_total',
    help: 'Connections refused or closed by a connection limit, by listener and reason: mail listeners before login (per_ip, listener_full, evicted, handshake_timeout), the control plane "http" (listener_full, evicted, request_timeout)',
    labelNames: ['listener', 'reason'] as const,
    registers: [this.registry],
  });

  readonly upstreamConnect = new client.Histogram({
    name: 'keygate_upstream_connect_duration_seconds',
    help: 'Time to connect to an upstream mail server (TCP or unix socket, and the TLS handshake for implicit TLS), by protocol',
    labelNames: ['protocol'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });

  readonly upstreamFailures = new client.Counter({
    name: 'keygate_upstream_failures_total',
    help: 'Upstream sessions and deliveries that failed on the way, by protocol and reason (route, connect, tls, greeting, login, protocol, timeout); refusals of a message or recipient are not failures',
    labelNames: ['protocol', 'reason'] as const,
    registers: [this.registry],
  });

  readonly mailboxRestarts = new client.Counter({
    name: 'keygate_mailbox_restarts_total',
    help: 'Times the local mailbox (Dovecot, --mailbox local) died and was started again',
    registers: [this.registry],
  });

  readonly canaryUses = new client.Counter({
    name: 'keygate_canary_uses_total',
    help: 'Uses of canary keys (refused like a wrong key), by surface: a mail protocol, http, console, introspect',
    labelNames: ['protocol'] as const,
    registers: [this.registry],
  });

  constructor(store?: KeyStore, options: { processMetrics?: boolean } = {}) {
    if (options.processMetrics ?? true) {
      client.collectDefaultMetrics({ register: this.registry });
      // A `_total` name means a counter (Prometheus naming); prom-client's gauges of that name
      // duplicate its per-type gauges (nodejs_active_handles{type}, …), so they go.
      for (const m of this.registry.getMetricsAsArray()) {
        if (m instanceof client.Gauge && m.name.endsWith('_total')) this.registry.removeSingleMetric(m.name);
      }
    }
    if (store) {
      new client.Gauge({
        name: 'keygate_keys',
        help: 'Keys in the store by state (active, revoked, expired)',
        labelNames: ['state'] as const,
        registers: [this.registry],
        // From the store's counters: a scrape costs the same at a thousand keys and at a million.
        async collect() {
          for (const [state, n] of Object.entries(await store.countKeys())) this.set({ state }, n);
        },
      });
    }
    for (const p of PROTOCOLS) this.sessions.set({ protocol: p }, 0);
    for (const p of [...PROTOCOLS, 'http']) this.canaryUses.inc({ protocol: p }, 0);
  }
}
