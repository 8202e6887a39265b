import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';

export interface RedisEndpoint {
  host: string;
  port: number;
}

interface Credentials {
  username: string | undefined;
  password: string | undefined;
}

/** What a Redis URL names. Never print it whole: it may hold a password; use describeRedisTarget. */
export type RedisTarget =
  | ({ mode: 'standalone'; tls: boolean; db: number } & RedisEndpoint & Credentials)
  | ({ mode: 'sentinel'; tls: boolean; db: number; sentinels: RedisEndpoint[]; masterName: string } & Credentials)
  | ({ mode: 'cluster'; tls: boolean; nodes: RedisEndpoint[] } & Credentials);

const SCHEMES = ['redis', 'rediss', 'redis-sentinel', 'redis-cluster'] as const;
type Scheme = (typeof SCHEMES)[number];

const HOSTNAME_RE = /^[A-Za-z0-9._-]+$/;
const IPV6_RE = /^[0-9A-Fa-f:.]+(%[A-Za-z0-9._-]+)?$/;

/** The URL with any credentials replaced by `***`, for error messages. */
export function redactRedisUrl(url: string): string {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*:\/\/)(.*)$/s.exec(url);
  if (!m) return url.includes('@') ? '***' : url;
  const rest = m[2]!;
  // The last "@" anywhere: a password with an unencoded "?", "/" or "#" must not end the credentials early.
  const at = rest.lastIndexOf('@');
  if (at < 0) return url;
  const userinfo = rest.slice(0, at);
  const colon = userinfo.indexOf(':');
  // Without a colon the lone part may be a password: hide it all.
  const shown = colon < 0 ? '***' : `${userinfo.slice(0, colon)}:***`;
  return `${m[1]}${shown}${rest.slice(at)}`;
}

/** Host list for messages: "127.0.0.1:6379", never credentials. */
export function describeRedisTarget(t: RedisTarget): string {
  const ep = (e: RedisEndpoint): string => (e.host.includes(':') ? `[${e.host}]:${e.port}` : `${e.host}:${e.port}`);
  switch (t.mode) {
    case 'standalone':
      return ep(t);
    case 'sentinel':
      return `sentinel ${t.sentinels.map(ep).join(',')} master ${t.masterName}`;
    case 'cluster':
      return `cluster ${t.nodes.map(ep).join(',')}`;
  }
}

/**
 * Parses `redis://[user:pass@]host:port[/db]`, `rediss://…` (TLS),
 * `redis-sentinel://[user:pass@]h1:p1,h2:p2/<master>[?db=N]` and
 * `redis-cluster://[user:pass@]h1:p1,h2:p2`. Sentinel and cluster take `?tls=true`.
 * Throws an Error naming the problem; the message never carries the password.
 */
export function parseRedisUrl(url: string): RedisTarget {
  const fail = (problem: string): never => {
    throw new Error(`invalid Redis URL "${redactRedisUrl(url)}": ${problem}`);
  };
  if (typeof url !== 'string' || url.trim() === '') fail('empty');
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/(.*)$/s.exec(url.trim());
  if (!m) return fail('expected <scheme>://host:port (e.g. redis://127.0.0.1:6379)');
  const scheme = m[1]!.toLowerCase();
  if (!(SCHEMES as readonly string[]).includes(scheme)) {
    fail(`unsupported scheme "${scheme}:" (use redis://, rediss://, redis-sentinel:// or redis-cluster://)`);
  }
  let rest = m[2]!;
  if (rest.includes('#')) fail('fragments (#…) are not allowed; percent-encode "#" in passwords as %23');

  let query = '';
  const q = rest.indexOf('?');
  if (q >= 0) {
    query = rest.slice(q + 1);
    rest = rest.slice(0, q);
  }
  const slash = rest.indexOf('/');
  let authority = slash >= 0 ? rest.slice(0, slash) : rest;
  const path = slash >= 0 ? rest.slice(slash) : '';

  let username: string | undefined;
  let password: string | undefined;
  const at = authority.lastIndexOf('@');
  if (at >= 0) {
    const userinfo = authority.slice(0, at);
    authority = authority.slice(at + 1);
    const colon = userinfo.indexOf(':');
    const rawUser = colon >= 0 ? userinfo.slice(0, colon) : userinfo;
    const rawPass = colon >= 0 ? userinfo.slice(colon + 1) : '';
    try {
      username = rawUser === '' ? undefined : decodeURIComponent(rawUser);
      password = rawPass === '' ? undefined : decodeURIComponent(rawPass);
    } catch {
      fail('malformed percent-encoding in the credentials');
    }
  }

  const defaultPort = scheme === 'redis-sentinel' ? 26379 : 6379;
  if (authority === '') fail('missing host');
  const endpoints = authority.split(',').map((part): RedisEndpoint => parseEndpoint(part, defaultPort, fail));

  const params = new URLSearchParams(query);
  const allowed = scheme === 'redis-sentinel' ? ['db', 'tls'] : scheme === 'redis-cluster' ? ['tls'] : [];
  for (const name of params.keys()) {
    if (!allowed.includes(name)) {
      fail(`unknown parameter "${name}"${allowed.length ? ` (allowed: ${allowed.join(', ')})` : ''}`);
    }
  }
  const tlsParam = (): boolean => {
    const v = params.get('tls');
    if (v === null || v === 'false' || v === '0') return false;
    if (v === 'true' || v === '1' || v === '') return true;
    return fail(`parameter "tls" must be true or false, not "${v}"`);
  };
  const parseDb = (raw: string, what: string): number => {
    if (!/^\d{1,9}$/.test(raw)) fail(`${what} must be a non-negative integer, not "${raw}"`);
    return Number(raw);
  };

  switch (scheme as Scheme) {
    case 'redis':
    case 'rediss': {
      if (endpoints.length !== 1) fail('several hosts given: use redis-sentinel:// or redis-cluster://');
      let db = 0;
      if (path !== '' && path !== '/') db = parseDb(path.slice(1), 'database (/N)');
      return { mode: 'standalone', tls: scheme === 'rediss', ...endpoints[0]!, db, username, password };
    }
    case 'redis-sentinel': {
      const name = path.replace(/^\//, '');
      if (name === '') fail('missing master name (redis-sentinel://host:26379/<masterName>)');
      if (name.includes('/')) fail(`master name "${name}" must not contain "/"`);
      let masterName = name;
      try {
        masterName = decodeURIComponent(name);
      } catch {
        fail('malformed percent-encoding in the master name');
      }
      const db = params.has('db') ? parseDb(params.get('db')!, 'parameter "db"') : 0;
      return { mode: 'sentinel', tls: tlsParam(), sentinels: endpoints, masterName, db, username, password };
    }
    case 'redis-cluster': {
      if (path !== '' && path !== '/') fail('Redis Cluster has no databases: remove the path');
      return { mode: 'cluster', tls: tlsParam(), nodes: endpoints, username, password };
    }
  }
}

function parseEndpoint(part: string, defaultPort: number, fail: (p: string) => never): RedisEndpoint {
  let host: string;
  let portText: string | undefined;
  if (part.startsWith('[')) {
    const end = part.indexOf(']');
    if (end < 0) fail(`bad host "${part}": unclosed "["`);
    host = part.slice(1, end);
    const after = part.slice(end + 1);
    if (after !== '') {
      if (!after.startsWith(':')) fail(`bad host "${part}"`);
      portText = after.slice(1);
    }
    if (!IPV6_RE.test(host)) fail(`bad IPv6 address "${host}"`);
  } else {
    const colon = part.indexOf(':');
    if (colon >= 0 && part.indexOf(':', colon + 1) >= 0) fail(`bad host "${part}": write IPv6 addresses as [addr]:port`);
    host = colon >= 0 ? part.slice(0, colon) : part;
    portText = colon >= 0 ? part.slice(colon + 1) : undefined;
    if (host === '') fail('missing host');
    if (!HOSTNAME_RE.test(host)) fail(`bad host "${host}" (percent-encode special characters in the password)`);
  }
  let port = defaultPort;
  if (portText !== undefined) {
    if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) fail(`bad port "${portText}"`);
    port = Number(portText);
  }
  return { host, port };
}

export interface RedisClientOptions {
  /** Give up a connection attempt after this long (default 3000 ms); reconnecting continues in the background. */
  connectTimeoutMs?: number;
  /** Fail a command that gets no reply in this long (default 5000 ms) instead of hanging. */
  commandTimeoutMs?: number;
  connectionName?: string;
  lazyConnect?: boolean;
}

export type RedisClient = Redis | Cluster;

/** Reconnect forever with a capped backoff, so the store recovers after a Redis restart. */
const reconnectDelay = (times: number): number => Math.min(50 * 2 ** Math.min(times, 10), 2000);

/**
 * Makes an ioredis client for a URL. Commands fail fast while disconnected
 * (no offline queue, no resend: a Lua write is never applied twice) and the
 * client keeps reconnecting in the background.
 */
export function createRedisClient(url: string, opts: RedisClientOptions = {}): RedisClient {
  const target = parseRedisUrl(url);
  const connectTimeout = opts.connectTimeoutMs ?? 3000;
  const common = {
    username: target.username,
    password: target.password,
    connectTimeout,
    commandTimeout: opts.commandTimeoutMs ?? 5000,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    noDelay: true,
    // ioredis keeps a timer of this length after disconnecting an already dead socket; don't hold the process for 2 s.
    disconnectTimeout: 200,
    connectionName: opts.connectionName,
    lazyConnect: opts.lazyConnect ?? false,
    ...(target.tls ? { tls: {} } : {}),
  } satisfies RedisOptions;

  switch (target.mode) {
    case 'standalone':
      return new Redis({
        ...common,
        host: target.host,
        port: target.port,
        db: target.db,
        enableOfflineQueue: false,
        retryStrategy: reconnectDelay,
      });
    case 'sentinel':
      return new Redis({
        ...common,
        sentinels: target.sentinels,
        name: target.masterName,
        db: target.db,
        // tls=true means TLS to the Sentinels and to the master they name.
        enableTLSForSentinelMode: target.tls,
        ...(target.tls ? { sentinelTLS: {} } : {}),
        enableOfflineQueue: false,
        retryStrategy: reconnectDelay,
        // ioredis waits this out even after disconnect(), so keep it short.
        sentinelRetryStrategy: (times: number) => Math.min(100 * times, 1000),
      });
    case 'cluster': {
      const { lazyConnect, ...redisOptions } = common;
      const options: ClusterOptions = {
        lazyConnect,
        enableOfflineQueue: false,
        clusterRetryStrategy: reconnectDelay,
        clusterNodeRetryStrategy: reconnectDelay,
        slotsRefreshTimeout: Math.max(1000, connectTimeout),
        redisOptions,
        // With TLS, keep the node names as given so certificates match them (ioredis' documented recipe).
        ...(target.tls ? { dnsLookup: (address: string, callback: (err: null, address: string) => void) => callback(null, address) } : {}),
      };
      return new Cluster(target.nodes, options);
    }
  }
}

/** Resolves when the client is ready, fails to connect (it keeps retrying in the background) or `ms` pass. */
export function waitReady(client: RedisClient, ms: number): Promise<void> {
  if (client.status === 'ready') return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      client.off('ready', done);
      client.off('error', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    client.once('ready', done);
    client.once('error', done);
  });
}
