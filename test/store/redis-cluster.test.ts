import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newKey } from '../../src/keys/new-key.js';
import { compactHash, compactId } from '../../src/store/redis-codec.js';
import { openRedisStore } from '../../src/store/redis.js';
import type { KeyStore, StoreEvent } from '../../src/store/types.js';
import { redisAvailable, redisCli, startRedisCluster, type RedisCluster } from '../helpers/redis-server.js';
import { runKeyStoreConformance } from './conformance.js';

const ns = (): string => 'c' + randomBytes(6).toString('hex');

describe.skipIf(!redisAvailable())('Redis store on a 3-node Cluster', () => {
  let cluster: RedisCluster;
  beforeAll(async () => {
    cluster = await startRedisCluster();
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  // Every operation here would fail with CROSSSLOT if a script or pipeline spanned slots.
  const namespaces = new WeakMap<KeyStore, string>();
  runKeyStoreConformance({
    name: 'redis-cluster',
    open: async (limits) => {
      const namespace = ns();
      const store = await openRedisStore(cluster.url, { namespace, touchIntervalMs: 20, ...limits });
      namespaces.set(store, namespace);
      return store;
    },
    openPeer: (store, limits) => openRedisStore(cluster.url, { namespace: namespaces.get(store)!, touchIntervalMs: 20, ...limits }),
  });

  it('keeps every key the store writes in one hash slot', async () => {
    const namespace = ns();
    const store = await openRedisStore(cluster.url, { namespace });
    try {
      const k1 = newKey({ name: '1', scopes: ['smtp'], account: 'a@example.com' }).record;
      const k2 = newKey({ name: '2', scopes: ['imap'], account: 'a@example.com', rotatedFrom: k1.id }).record;
      const k3 = newKey({ name: '3', scopes: ['*'] }).record;
      const k4 = newKey({ name: '4', scopes: ['smtp'], account: 'imp@example.com' }).record;
      const k5 = newKey({ name: '5', scopes: ['smtp'], account: 'a@example.com', deviceId: 'd' }).record;
      const k6 = newKey({ name: '6', scopes: ['smtp'], account: 'a@example.com', deviceId: 'd' }).record;
      await store.createAccount({ address: 'a@example.com', aliases: ['alias1@example.com', 'alias2@example.com'], displayName: 'A', disabled: false, createdAt: k1.createdAt, upstream: null });
      await store.createKey(k1);
      await store.rotateKey(k1.id, k2, new Date().toISOString());
      await store.createKey(k3);
      await store.importKey(k4);
      await store.replaceDeviceKey(k5, new Date().toISOString());
      await store.replaceDeviceKey(k6, new Date().toISOString());
      store.touchKey(k3.id, { at: new Date().toISOString(), ip: '::1', protocol: 'imap' });
      await store.flushTouches();
      await store.updateAccount('a@example.com', { aliases: ['alias3@example.com'] });
      await store.ensureAccount('b@example.com');
      await store.createAccount({ address: 'c@example.com', aliases: ['c1@example.com'], displayName: null, disabled: false, createdAt: k1.createdAt, upstream: null });
      await store.deleteAccount('c@example.com', new Date().toISOString());
      expect((await store.listKeys()).items.map((k) => k.name)).toEqual(['6', '5', '4', '3', '2', '1']);

      const names = new Set<string>();
      for (const port of cluster.ports) {
        for (const n of (await redisCli(port, '--scan', '--pattern', `{${namespace}}:*`)).split('\n')) if (n) names.add(n);
      }
      const p = `{${namespace}}:`;
      expect([...names].sort()).toEqual(
        [
          ...[k1, k2, k3, k4, k5, k6].map((k) => `${p}k:${compactId(k.id)}`),
          ...new Set([k1, k2, k3, k4, k5, k6].map((k) => `${p}h:${compactHash(k.hash).slice(0, 3)}`)),
          `${p}live`,
          `${p}revoked`,
          `${p}n`,
          `${p}seq`,
          `${p}schema`,
          `${p}al:a@example.com`,
          `${p}ar:a@example.com`,
          `${p}ad:a@example.com`,
          `${p}al:imp@example.com`,
          `${p}account:a@example.com`,
          `${p}account:b@example.com`,
          `${p}account:imp@example.com`,
          `${p}alias:alias3@example.com`,
          `${p}accounts`,
        ].sort(),
      );
      const slots = new Set<string>();
      for (const name of names) slots.add(await redisCli(cluster.ports[0]!, 'CLUSTER', 'KEYSLOT', name));
      expect(slots.size).toBe(1);
      expect([...slots][0]).toBe(await redisCli(cluster.ports[0]!, 'CLUSTER', 'KEYSLOT', `{${namespace}}`));
    } finally {
      await store.close();
    }
  });

  it('delivers revocations across instances through cluster pub/sub', async () => {
    const namespace = ns();
    const a = await openRedisStore(cluster.url, { namespace });
    const b = await openRedisStore(cluster.url, { namespace });
    try {
      const { record } = newKey({ name: 'x', scopes: ['smtp'], account: 'a@example.com' });
      await a.createKey(record);
      const onB: StoreEvent[] = [];
      b.subscribe((e) => onB.push(e));
      await a.revokeKey(record.id, new Date().toISOString());
      const t0 = Date.now();
      while (onB.length === 0 && Date.now() - t0 < 1000) await new Promise((r) => setTimeout(r, 5));
      expect(onB).toEqual([{ type: 'key-revoked', id: record.id, account: 'a@example.com' }]);
    } finally {
      await a.close();
      await b.close();
    }
  });
});
