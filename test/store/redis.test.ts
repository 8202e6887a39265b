import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newKey } from '../../src/keys/new-key.js';
import { StoreUnavailableError } from '../../src/store/errors.js';
import { openRedisStore } from '../../src/store/redis.js';
import { parseRedisUrl, redactRedisUrl } from '../../src/store/redis-connect.js';
import type { KeyStore, StoreEvent } from '../../src/store/types.js';
import { redisAvailable, redisCli, startRedis, startRedisSentinel, type RedisSentinel, type RedisServer } from '../helpers/redis-server.js';
import { waitFor } from '../helpers/wait.js';
import { runKeyStoreConformance } from './conformance.js';

const ns = (): string => 'c' + randomBytes(6).toString('hex');

describe('parseRedisUrl', () => {
  it('parses a plain URL with defaults', () => {
    expect(parseRedisUrl('redis://127.0.0.1')).toEqual({
      mode: 'standalone', tls: false, host: '127.0.0.1', port: 6379, db: 0, username: undefined, password: undefined,
    });
  });

  it('parses credentials, port and database; percent-decodes the password', () => {
    expect(parseRedisUrl('redis://kg:p%40ss%2Fw@redis.internal:6390/3')).toMatchObject({
      mode: 'standalone', tls: false, host: 'redis.internal', port: 6390, db: 3, username: 'kg', password: 'p@ss/w',
    });
    expect(parseRedisUrl('redis://:secret@h:1')).toMatchObject({ username: undefined, password: 'secret' });
  });

  it('parses rediss:// as TLS and IPv6 hosts', () => {
    expect(parseRedisUrl('rediss://[::1]:6380/')).toMatchObject({ mode: 'standalone', tls: true, host: '::1', port: 6380, db: 0 });
  });

  it('parses Sentinel URLs', () => {
    expect(parseRedisUrl('redis-sentinel://u:pw@s1:26379,s2,[::1]:26380/mymaster?db=2')).toEqual({
      mode: 'sentinel',
      tls: false,
      sentinels: [{ host: 's1', port: 26379 }, { host: 's2', port: 26379 }, { host: '::1', port: 26380 }],
      masterName: 'mymaster',
      db: 2,
      username: 'u',
      password: 'pw',
    });
    expect(parseRedisUrl('redis-sentinel://s1/m?tls=true')).toMatchObject({ tls: true, db: 0 });
  });

  it('parses Cluster URLs', () => {
    expect(parseRedisUrl('redis-cluster://:pw@10.0.0.1:7000,10.0.0.2:7001')).toEqual({
      mode: 'cluster',
      tls: false,
      nodes: [{ host: '10.0.0.1', port: 7000 }, { host: '10.0.0.2', port: 7001 }],
      username: undefined,
      password: 'pw',
    });
  });

  it.each([
    ['', /empty/],
    ['localhost:6379', /<scheme>:\/\//],
    ['http://h:1', /unsupported scheme "http:"/],
    ['redis://', /missing host/],
    ['redis://h:0', /bad port "0"/],
    ['redis://h:65536', /bad port "65536"/],
    ['redis://h:port', /bad port "port"/],
    ['redis://h:1/x', /database/],
    ['redis://a:1,b:2', /several hosts/],
    ['redis-sentinel://s1:26379', /missing master name/],
    ['redis-sentinel://s1/m?db=x', /"db"/],
    ['redis-cluster://a:1/0', /no databases/],
    ['redis://h?foo=1', /unknown parameter "foo"/],
    ['redis://h:1#x', /fragment/],
    ['redis://::1:6379', /IPv6/],
    ['redis://u:%zz@h', /percent-encoding/],
  ])('rejects %j', (url, problem) => {
    expect(() => parseRedisUrl(url)).toThrow(problem);
  });

  it('never puts the password in an error message', () => {
    for (const url of ['redis://user:hunter2@h:bad', 'redis://hunter2@h:bad', 'redis://u:hunter2@h:1/x', 'redis-cluster://u:hunter2@/']) {
      expect(() => parseRedisUrl(url)).toThrow(/invalid Redis URL/);
      try {
        parseRedisUrl(url);
      } catch (err) {
        expect((err as Error).message).not.toContain('hunter2');
      }
    }
    expect(redactRedisUrl('redis://u:p/w@h:1')).toBe('redis://u:***@h:1');
  });
});

describe('openRedisStore without a server', () => {
  let closed: Server;
  let port = 0;
  beforeAll(async () => {
    // A port that was just free and nobody listens on.
    closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    port = (closed.address() as { port: number }).port;
    await new Promise<void>((r) => closed.close(() => r()));
  });

  it('rejects fast with StoreUnavailableError naming the host, never the password', async () => {
    const t0 = Date.now();
    const err = await openRedisStore(`redis://keygate:hunter2@127.0.0.1:${port}`, { connectTimeoutMs: 1500 }).catch((e: unknown) => e);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(err).toBeInstanceOf(StoreUnavailableError);
    expect((err as Error).message).toContain(`127.0.0.1:${port}`);
    expect((err as Error).message).not.toContain('hunter2');
  });

  it('uses about 3 s by default', async () => {
    const t0 = Date.now();
    await expect(openRedisStore(`redis://127.0.0.1:${port}`)).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it('rejects a server that accepts TCP but never answers', async () => {
    const silent = createServer(() => {});
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const p = (silent.address() as { port: number }).port;
    try {
      const t0 = Date.now();
      await expect(openRedisStore(`redis://127.0.0.1:${p}`, { connectTimeoutMs: 1000 })).rejects.toThrow(/Redis unavailable \(127\.0\.0\.1:\d+\)/);
      expect(Date.now() - t0).toBeLessThan(5000);
    } finally {
      silent.close();
    }
  });
});

describe.skipIf(!redisAvailable())('Redis store', () => {
  let server: RedisServer;
  beforeAll(async () => {
    server = await startRedis();
  });
  afterAll(async () => {
    await server?.stop();
  });

  const namespaces = new WeakMap<KeyStore, string>();
  runKeyStoreConformance({
    name: 'redis',
    open: async (limits) => {
      const namespace = ns();
      const store = await openRedisStore(server.url, { namespace, touchIntervalMs: 20, ...limits });
      namespaces.set(store, namespace);
      return store;
    },
    restart: () => server.restart(),
    // Another Keygate instance: its own clients on the same Redis and namespace.
    openPeer: (store, limits) => openRedisStore(server.url, { namespace: namespaces.get(store)!, touchIntervalMs: 20, ...limits }),
  });

  it('delivers revocations across instances sharing one Redis, each event once', async () => {
    const namespace = ns();
    const a = await openRedisStore(server.url, { namespace, touchIntervalMs: 20 });
    const b = await openRedisStore(server.url, { namespace, touchIntervalMs: 20 });
    try {
      const { record } = newKey({ name: 'x', scopes: ['smtp'], account: 'a@example.com' });
      await a.createKey(record);
      expect(await b.findByHash(record.hash)).toEqual(record);
      const onA: StoreEvent[] = [];
      const onB: StoreEvent[] = [];
      a.subscribe((e) => onA.push(e));
      b.subscribe((e) => onB.push(e));
      const t0 = Date.now();
      await a.revokeKey(record.id, '2026-02-01T00:00:00.000Z');
      while (onB.length === 0 && Date.now() - t0 < 1000) await new Promise((r) => setTimeout(r, 5));
      expect(onB).toEqual([{ type: 'key-revoked', id: record.id, account: 'a@example.com' }]);
      await b.updateAccount('a@example.com', {}).catch(() => {}); // no account: NotFound, no event
      await b.ensureAccount('a@example.com');
      await b.updateAccount('a@example.com', { displayName: 'A' });
      await new Promise((r) => setTimeout(r, 200));
      expect(onA).toEqual([
        { type: 'key-revoked', id: record.id, account: 'a@example.com' },
        { type: 'account-changed', address: 'a@example.com' },
      ]);
      expect(onB).toEqual([
        { type: 'key-revoked', id: record.id, account: 'a@example.com' },
        { type: 'account-changed', address: 'a@example.com' },
      ]);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('a device key replaced on one instance is revoked on every instance, each event once', async () => {
    const namespace = ns();
    const a = await openRedisStore(server.url, { namespace, touchIntervalMs: 20 });
    const b = await openRedisStore(server.url, { namespace, touchIntervalMs: 20 });
    try {
      const mk = () => newKey({ name: 'phone', scopes: ['smtp', 'imap', 'pop3'], account: 'a@example.com', platform: 'ios', deviceId: 'dev-1' }).record;
      const old1 = mk();
      const old2 = mk();
      await b.createKey(old1);
      await b.createKey(old2);
      const onA: StoreEvent[] = [];
      const onB: StoreEvent[] = [];
      a.subscribe((e) => onA.push(e));
      b.subscribe((e) => onB.push(e));
      const next = mk();
      const { revoked } = await a.replaceDeviceKey(next, '2026-02-01T00:00:00.000Z');
      expect(revoked.map((k) => k.id).sort()).toEqual([old1.id, old2.id].sort());
      const t0 = Date.now();
      while (onB.length < 2 && Date.now() - t0 < 1000) await new Promise((r) => setTimeout(r, 5));
      await new Promise((r) => setTimeout(r, 100));
      const expected = revoked.map((k) => ({ type: 'key-revoked', id: k.id, account: 'a@example.com' }));
      expect(onA).toEqual(expected);
      expect(onB).toEqual(expected);
      expect((await b.findByHash(old1.hash))?.revokedAt).toBe('2026-02-01T00:00:00.000Z');
      expect(await b.findByHash(next.hash)).toEqual({ ...next, rotatedFrom: revoked[0]!.id });
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('keeps namespaces apart and every key name inside its one hash tag', async () => {
    const n1 = ns();
    const n2 = ns();
    const s1 = await openRedisStore(server.url, { namespace: n1 });
    const s2 = await openRedisStore(server.url, { namespace: n2 });
    try {
      const { record } = newKey({ name: 'x', scopes: ['smtp'], account: 'a@example.com' });
      await s1.importKey(record);
      await s1.createAccount({ address: 'b@example.com', aliases: ['bee@example.com'], displayName: null, disabled: false, createdAt: record.createdAt, upstream: null });
      expect(await s2.findByHash(record.hash)).toBeNull();
      expect((await s2.listAccounts()).items).toEqual([]);
      const names = (await redisCli(server.port, '--scan', '--pattern', `{${n1}}:*`)).split('\n').filter(Boolean);
      expect(names.length).toBeGreaterThanOrEqual(8);
      for (const name of names) expect(name.startsWith(`{${n1}}:`)).toBe(true);
    } finally {
      await s1.close();
      await s2.close();
    }
  });

  it('close() flushes buffered touches; a new instance sees them', async () => {
    const namespace = ns();
    const s1 = await openRedisStore(server.url, { namespace, touchIntervalMs: 60_000 });
    const { record } = newKey({ name: 'x', scopes: ['smtp'] });
    await s1.createKey(record);
    s1.touchKey(record.id, { at: '2026-05-01T00:00:00.000Z', ip: '127.0.0.1', protocol: 'http' });
    await s1.close();
    const s2 = await openRedisStore(server.url, { namespace });
    try {
      expect(await s2.getKey(record.id)).toMatchObject({ lastUsedAt: '2026-05-01T00:00:00.000Z', lastUsedIp: '127.0.0.1', lastUsedProtocol: 'http' });
    } finally {
      await s2.close();
    }
  });

  it('fails fast with a clear error while Redis is down and recovers after it returns', { timeout: 60_000 }, async () => {
    const store: KeyStore = await openRedisStore(server.url, { namespace: ns() });
    try {
      const { record } = newKey({ name: 'x', scopes: ['smtp'] });
      await store.createKey(record);
      await server.restart(async () => {
        const started = performance.now();
        const err = await store.getKey(record.id).then(
          () => null,
          (e: unknown) => e,
        );
        const tookMs = performance.now() - started;
        expect(err).toBeInstanceOf(StoreUnavailableError);
        expect((err as Error).message).toMatch(/^Redis unavailable \(127\.0\.0\.1:\d+\): connection (is closed|refused)$/);
        // Fast: refused at once, not after the client's 3 s connect or 5 s command timeout.
        expect(tookMs).toBeLessThan(1500);
      });
      await waitFor(async () => (await store.getKey(record.id).catch(() => null)) !== null, 20_000);
      expect(await store.getKey(record.id)).toEqual(record);
    } finally {
      await store.close();
    }
  });

  it('keeps delivering events across instances after a Redis restart', { timeout: 60_000 }, async () => {
    const namespace = ns();
    const a = await openRedisStore(server.url, { namespace });
    const b = await openRedisStore(server.url, { namespace });
    try {
      const onB: StoreEvent[] = [];
      b.subscribe((e) => onB.push(e));
      await server.restart();
      // Events published while the subscriber reconnects are lost (pub/sub), so retry until one arrives.
      const end = Date.now() + 20_000;
      let delivered = false;
      while (!delivered && Date.now() < end) {
        try {
          const { record } = newKey({ name: 'x', scopes: ['smtp'] });
          await a.createKey(record);
          await a.revokeKey(record.id, new Date().toISOString());
          const t0 = Date.now();
          while (Date.now() - t0 < 300 && !delivered) {
            delivered = onB.some((e) => e.type === 'key-revoked' && e.id === record.id);
            await new Promise((r) => setTimeout(r, 10));
          }
        } catch (err) {
          expect(err).toBeInstanceOf(StoreUnavailableError);
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      expect(delivered).toBe(true);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('round-trips unusual field values exactly', async () => {
    const store = await openRedisStore(server.url, { namespace: ns() });
    try {
      const base = newKey({ name: 'x', scopes: ['smtp'] }).record;
      const odd = {
        ...base,
        name: 'quote " backslash \\ newline \n null \u0000 emoji 🔑 lone \ud800 ',
        account: 'weird{tag}@example.com',
        allowedIps: [],
        platform: '',
        deviceId: 'null',
        lastUsedAt: '2026-01-01T00:00:00.000Z',
        lastUsedIp: '::1',
        lastUsedProtocol: 'imap',
        revokedAt: '2026-01-02T00:00:00.000Z',
      };
      await store.createKey(odd);
      expect(await store.getKey(odd.id)).toEqual(odd);
      expect((await store.listKeys({ account: 'weird{tag}@example.com' })).items).toEqual([odd]);
      const acct = { address: 'x@example.com', aliases: [], displayName: '', disabled: true, createdAt: base.createdAt, upstream: { a: [1, null, { b: 'c' }], e: {} } };
      expect(await store.createAccount(acct)).toEqual(acct);
      expect(await store.getAccount('X@example.com')).toEqual(acct);
    } finally {
      await store.close();
    }
  });
});

describe.skipIf(!redisAvailable())('Redis store with a password', () => {
  let server: RedisServer;
  beforeAll(async () => {
    server = await startRedis({ password: 'hunter2/with@odd:chars' });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('connects with the right password', async () => {
    const store = await openRedisStore(server.url, { namespace: ns() });
    try {
      const { record } = newKey({ name: 'x', scopes: ['smtp'] });
      await store.createKey(record);
      expect(await store.getKey(record.id)).toEqual(record);
    } finally {
      await store.close();
    }
  });

  it('refuses a wrong or missing password at once, without echoing it', async () => {
    for (const url of [`redis://:wrong-hunter3@127.0.0.1:${server.port}`, `redis://127.0.0.1:${server.port}`]) {
      const t0 = Date.now();
      const err = await openRedisStore(url).catch((e: unknown) => e);
      expect(Date.now() - t0).toBeLessThan(2000);
      expect(err).toBeInstanceOf(StoreUnavailableError);
      expect((err as Error).message).toMatch(new RegExp(`^Redis unavailable \\(127\\.0\\.0\\.1:${server.port}\\): authentication failed`));
      expect((err as Error).message).not.toMatch(/hunter/);
    }
  });
});

describe.skipIf(!redisAvailable())('Redis store through Sentinel', () => {
  let sentinel: RedisSentinel;
  beforeAll(async () => {
    sentinel = await startRedisSentinel();
  });
  afterAll(async () => {
    await sentinel?.stop();
  });

  it('finds the master through Sentinel and shares data and events with a direct client', async () => {
    const namespace = ns();
    const viaSentinel = await openRedisStore(sentinel.url, { namespace });
    const direct = await openRedisStore(`redis://127.0.0.1:${sentinel.masterPort}`, { namespace });
    try {
      const { record } = newKey({ name: 'x', scopes: ['smtp'], account: 's@example.com' });
      await viaSentinel.createKey(record);
      expect(await direct.findByHash(record.hash)).toEqual(record);
      const events: StoreEvent[] = [];
      viaSentinel.subscribe((e) => events.push(e));
      await direct.revokeKey(record.id, '2026-02-01T00:00:00.000Z');
      const t0 = Date.now();
      while (events.length === 0 && Date.now() - t0 < 1000) await new Promise((r) => setTimeout(r, 5));
      expect(events).toEqual([{ type: 'key-revoked', id: record.id, account: 's@example.com' }]);
    } finally {
      await viaSentinel.close();
      await direct.close();
    }
  });
});
