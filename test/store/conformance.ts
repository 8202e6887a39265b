import { afterEach, beforeEach, expect, it } from 'vitest';
import { waitFor } from '../helpers/wait.js';
import { newKey } from '../../src/keys/new-key.js';
import { decide } from '../../src/keys/policy.js';
import type { AccountRecord, KeyRecord } from '../../src/keys/record.js';
import { ConflictError, NotFoundError, StoreUnavailableError } from '../../src/store/errors.js';
import { allPages, PAGE_MAX } from '../../src/store/paging.js';
import type { KeyQuery, KeyStore, StoreEvent, StoreLimits } from '../../src/store/types.js';
import { runScaleConformance } from './conformance-scale.js';

export interface ConformanceTarget {
  name: string;
  /** Opens a fresh, empty store; each test gets its own. */
  open(limits?: StoreLimits): Promise<KeyStore>;
  /** Stops the backing server and starts it again with its data. Omitted where it has no meaning. */
  restart?(): Promise<void>;
  /** Opens a second, independent instance on the same data as `store` (another Keygate instance); the caller closes it. */
  openPeer?(store: KeyStore, limits?: StoreLimits): Promise<KeyStore>;
}

const T0 = '2026-01-01T00:00:00.000Z';

function account(address: string, extra: Partial<AccountRecord> = {}): AccountRecord {
  return { address, aliases: [], displayName: null, disabled: false, createdAt: T0, upstream: null, ...extra };
}

function key(extra: Parameters<typeof newKey>[0] | undefined = undefined, at = new Date(T0)): KeyRecord {
  return newKey(extra ?? { name: 'k', scopes: ['smtp'], account: 'a@example.com' }, at).record;
}

/** A mail-app key for one device, as the mobile endpoint makes it. */
function deviceKey(deviceId: string, acct = 'a@example.com', at = new Date(T0), name = 'phone'): KeyRecord {
  return key({ name, scopes: ['smtp', 'imap', 'pop3'], account: acct, platform: 'ios', deviceId }, at);
}

/** Whether the key found by this hash may log in to IMAP as its account right now: the login path's store lookup and policy. */
async function logsIn(store: KeyStore, k: KeyRecord): Promise<boolean> {
  const found = await store.findByHash(k.hash);
  if (!found) return false;
  return decide(found, { kind: 'login', protocol: 'imap', account: k.account! }, { ip: '192.0.2.1', now: new Date(), account: null }).allowed;
}

/** After concurrent replaces of one device: exactly one live key, every other revoked, each replace revoking its predecessor (one chain). */
async function expectOneChain(store: KeyStore, made: KeyRecord[], acct = 'a@example.com'): Promise<KeyRecord> {
  const stored = (await allKeys(store, { account: acct })).filter((k) => made.some((m) => m.id === k.id));
  expect(stored).toHaveLength(made.length);
  const live = stored.filter((k) => k.revokedAt === null);
  expect(live).toHaveLength(1);
  // Serialised: one key replaced nothing, every other names a distinct predecessor, and nobody names the live one.
  const from = stored.map((k) => k.rotatedFrom);
  expect(from.filter((f) => f === null)).toHaveLength(1);
  expect(new Set(from.filter((f) => f !== null)).size).toBe(made.length - 1);
  expect(from).not.toContain(live[0]!.id);
  for (const k of made) expect(await logsIn(store, k)).toBe(k.id === live[0]!.id);
  return live[0]!;
}

/** One behaviour contract for every KeyStore; call inside a describe(). */
export function runKeyStoreConformance(target: ConformanceTarget): void {
  runScaleConformance(target);

  let store: KeyStore;
  beforeEach(async () => {
    store = await target.open();
  });
  afterEach(async () => {
    await store.close();
  });

  it(`${target.name}: creates a key and finds it by hash and by id, every field intact`, async () => {
    const full: KeyRecord = {
      ...key({ name: 'Thunderbird ✓', scopes: ['smtp', 'imap'], account: 'a@example.com', expiresAt: '2030-01-01T00:00:00.000Z', allowedIps: ['10.0.0.0/8', '::1'], platform: 'ios', deviceId: 'dev-1' }),
      lastUsedAt: null,
    };
    await store.createKey(full);
    expect(await store.findByHash(full.hash)).toEqual(full);
    expect(await store.getKey(full.id)).toEqual(full);
    const bare = key({ name: 'bare', scopes: ['*'] });
    await store.createKey(bare);
    expect(await store.getKey(bare.id)).toEqual(bare);
  });

  it(`${target.name}: misses return null`, async () => {
    expect(await store.findByHash('0'.repeat(64))).toBeNull();
    expect(await store.getKey('nope')).toBeNull();
    expect(await store.getAccount('nobody@example.com')).toBeNull();
    expect(await store.resolveAccount('nobody@example.com')).toBeNull();
  });

  it(`${target.name}: reads many keys and accounts at once, in the order asked, null where there is none`, async () => {
    await store.createAccount(account('a@example.com'));
    await store.createAccount(account('b@example.com', { disabled: true, aliases: ['bee@example.com'] }));
    const made: KeyRecord[] = [];
    for (let i = 0; i < 30; i++) made.push(key({ name: `k${i}`, scopes: ['imap'], account: i % 2 ? 'a@example.com' : 'b@example.com' }));
    for (const k of made) await store.createKey(k);
    await store.revokeKey(made[3]!.id, '2026-02-01T00:00:00.000Z');
    const ids = [made[3]!.id, 'missing', ...made.slice(5, 25).map((k) => k.id).reverse(), made[0]!.id, made[0]!.id];
    const found = await store.getKeys(ids);
    expect(found).toHaveLength(ids.length);
    expect(found[0]).toEqual({ ...made[3]!, revokedAt: '2026-02-01T00:00:00.000Z' });
    expect(found[1]).toBeNull();
    expect(found.slice(2).map((k) => k?.id)).toEqual(ids.slice(2));
    expect(found.at(-1)).toEqual(made[0]);
    expect(await store.getKeys([])).toEqual([]);

    const accounts = await store.getAccounts(['B@Example.com', 'nobody@example.com', 'a@example.com', 'bee@example.com']);
    expect(accounts.map((a) => a && { address: a.address, disabled: a.disabled, aliases: a.aliases })).toEqual([
      { address: 'b@example.com', disabled: true, aliases: ['bee@example.com'] },
      null,
      { address: 'a@example.com', disabled: false, aliases: [] },
      // An alias is not an address: sessions are registered under the account's address.
      null,
    ]);
    expect(await store.getAccounts([])).toEqual([]);
  });

  it(`${target.name}: refuses a duplicate id or hash and leaves the first record alone`, async () => {
    const a = key();
    await store.createKey(a);
    await expect(store.createKey({ ...key(), id: a.id })).rejects.toBeInstanceOf(ConflictError);
    await expect(store.createKey({ ...key(), hash: a.hash })).rejects.toBeInstanceOf(ConflictError);
    expect(await allKeys(store)).toEqual([a]);
  });

  it(`${target.name}: lists all keys and by account, newest first`, async () => {
    const k1 = key({ name: '1', scopes: ['smtp'], account: 'a@example.com' }, new Date('2026-01-01T00:00:01Z'));
    const k2 = key({ name: '2', scopes: ['smtp'], account: 'b@example.com' }, new Date('2026-01-01T00:00:02Z'));
    const k3 = key({ name: '3', scopes: ['imap'], account: 'a@example.com' }, new Date('2026-01-01T00:00:03Z'));
    for (const k of [k1, k2, k3]) await store.createKey(k);
    expect((await allKeys(store)).map((k) => k.name)).toEqual(['3', '2', '1']);
    expect((await allKeys(store, { account: 'a@example.com' })).map((k) => k.name)).toEqual(['3', '1']);
    expect((await allKeys(store, { account: 'A@Example.com' })).map((k) => k.name)).toEqual(['3', '1']);
    expect(await allKeys(store, { account: 'c@example.com' })).toEqual([]);
  });

  it(`${target.name}: revokes idempotently, keeping the first revocation time, and emits one event`, async () => {
    const k = key();
    await store.createKey(k);
    const events: StoreEvent[] = [];
    store.subscribe((e) => events.push(e));
    const r1 = await store.revokeKey(k.id, '2026-02-01T00:00:00.000Z');
    expect(r1.revokedAt).toBe('2026-02-01T00:00:00.000Z');
    const r2 = await store.revokeKey(k.id, '2026-03-01T00:00:00.000Z');
    expect(r2.revokedAt).toBe('2026-02-01T00:00:00.000Z');
    expect((await store.findByHash(k.hash))?.revokedAt).toBe('2026-02-01T00:00:00.000Z');
    await expect(store.revokeKey('missing', T0)).rejects.toBeInstanceOf(NotFoundError);
    await waitFor(() => events.length >= 1);
    await new Promise((r) => setTimeout(r, 100));
    expect(events).toEqual([{ type: 'key-revoked', id: k.id, account: 'a@example.com' }]);
  });

  it(`${target.name}: rotates atomically: old revoked, new active, linked`, async () => {
    const old = key({ name: 'phone', scopes: ['smtp', 'imap'], account: 'a@example.com' });
    await store.createKey(old);
    const events: StoreEvent[] = [];
    store.subscribe((e) => events.push(e));
    const next = key({ name: 'phone', scopes: ['smtp', 'imap'], account: 'a@example.com', rotatedFrom: old.id });
    const created = await store.rotateKey(old.id, next, '2026-02-01T00:00:00.000Z');
    expect(created).toEqual(next);
    expect((await store.getKey(old.id))?.revokedAt).toBe('2026-02-01T00:00:00.000Z');
    expect(await store.findByHash(next.hash)).toEqual(next);
    await waitFor(() => events.length >= 1);
    expect(events[0]).toEqual({ type: 'key-revoked', id: old.id, account: 'a@example.com' });
    // A revoked key cannot be rotated; an unknown one is not found.
    await expect(store.rotateKey(old.id, key({ name: 'x', scopes: ['smtp'], rotatedFrom: old.id }), T0)).rejects.toBeInstanceOf(ConflictError);
    await expect(store.rotateKey('missing', key({ name: 'x', scopes: ['smtp'], rotatedFrom: 'missing' }), T0)).rejects.toBeInstanceOf(NotFoundError);
  });

  it(`${target.name}: concurrent rotations of one key: exactly one wins, never both or neither active`, async () => {
    const old = key();
    await store.createKey(old);
    const contenders = Array.from({ length: 8 }, () => key({ name: 'k', scopes: ['smtp'], account: 'a@example.com', rotatedFrom: old.id }));
    const results = await Promise.allSettled(contenders.map((c) => store.rotateKey(old.id, c, '2026-02-01T00:00:00.000Z')));
    const won = results.filter((r) => r.status === 'fulfilled');
    expect(won).toHaveLength(1);
    for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(ConflictError);
    const all = await allKeys(store);
    expect(all.filter((k) => k.revokedAt === null)).toHaveLength(1);
    expect(all).toHaveLength(2);
  });

  it(`${target.name}: a reader racing rotations never sees both keys active, nor neither`, async () => {
    const shared: { pair: { old: KeyRecord; next: KeyRecord } | null } = { pair: null };
    let stop = false;
    let samples = 0;
    const reader = (async () => {
      while (!stop) {
        const p = shared.pair;
        if (!p) {
          await new Promise((r) => setImmediate(r));
          continue;
        }
        // old, then new: once the old key reads revoked, the new one must already be there (a later rotation may have revoked it since).
        const o1 = await store.findByHash(p.old.hash);
        const n1 = await store.findByHash(p.next.hash);
        if (o1?.revokedAt !== null) expect(n1).not.toBeNull();
        // new, then old: once the new key is visible, the old one must already read revoked.
        const n2 = await store.findByHash(p.next.hash);
        const o2 = await store.findByHash(p.old.hash);
        if (n2 !== null) expect(o2?.revokedAt).not.toBeNull();
        samples++;
        // A synchronous store resolves on microtasks only: let the writer's timers run.
        await new Promise((r) => setImmediate(r));
      }
    })();
    let current = key();
    await store.createKey(current);
    for (let i = 0; i < 30; i++) {
      const next = key({ name: 'k', scopes: ['smtp'], account: 'a@example.com', rotatedFrom: current.id });
      shared.pair = { old: current, next };
      await new Promise((r) => setTimeout(r, 2));
      await store.rotateKey(current.id, next, new Date().toISOString());
      await new Promise((r) => setTimeout(r, 2));
      current = next;
    }
    stop = true;
    await reader;
    expect(samples).toBeGreaterThan(10);
    expect((await allKeys(store)).filter((k) => k.revokedAt === null)).toEqual([current]);
  });

  it(`${target.name}: replaceDeviceKey on a device with no key creates it, revoking nothing`, async () => {
    const events: StoreEvent[] = [];
    store.subscribe((e) => events.push(e));
    const other = deviceKey('dev-2');
    await store.createKey(other);
    const k = deviceKey('dev-1');
    const res = await store.replaceDeviceKey({ ...k, rotatedFrom: 'ignored' }, '2026-02-01T00:00:00.000Z');
    expect(res).toEqual({ key: k, revoked: [] });
    expect(await store.findByHash(k.hash)).toEqual(k);
    expect(await store.getKey(k.id)).toEqual(k);
    expect(await allKeys(store, { account: 'a@example.com' })).toEqual([k, other]);
    expect(await logsIn(store, k)).toBe(true);
    await new Promise((r) => setTimeout(r, 100));
    expect(events).toEqual([]);
  });

  it(`${target.name}: replaceDeviceKey revokes exactly the device's live keys, of that account only, and links the newest`, async () => {
    const at = (s: number) => new Date(Date.parse(T0) + s * 1000);
    const older = deviceKey('dev-1', 'a@example.com', at(1));
    const newer = deviceKey('dev-1', 'a@example.com', at(2));
    const gone = deviceKey('dev-1', 'a@example.com', at(0));
    const otherDevice = deviceKey('dev-2', 'a@example.com', at(1));
    const otherAccount = deviceKey('dev-1', 'b@example.com', at(1));
    const noDevice = key({ name: 'tb', scopes: ['smtp', 'imap'], account: 'a@example.com' }, at(1));
    for (const k of [gone, older, newer, otherDevice, otherAccount, noDevice]) await store.createKey(k);
    await store.revokeKey(gone.id, '2026-01-15T00:00:00.000Z');
    const events: StoreEvent[] = [];
    store.subscribe((e) => events.push(e));

    const next = deviceKey('dev-1', 'a@example.com', at(3));
    const res = await store.replaceDeviceKey(next, '2026-02-01T00:00:00.000Z');
    const revokedAt = '2026-02-01T00:00:00.000Z';
    expect(res.key).toEqual({ ...next, rotatedFrom: newer.id });
    expect(res.revoked).toEqual([{ ...newer, revokedAt }, { ...older, revokedAt }]);
    expect(await store.findByHash(next.hash)).toEqual(res.key);
    expect(await store.getKey(newer.id)).toEqual({ ...newer, revokedAt });
    expect(await store.getKey(older.id)).toEqual({ ...older, revokedAt });
    // An already revoked key keeps its first revocation; other devices and accounts are untouched.
    expect((await store.getKey(gone.id))?.revokedAt).toBe('2026-01-15T00:00:00.000Z');
    for (const k of [otherDevice, otherAccount, noDevice]) expect(await store.getKey(k.id)).toEqual(k);

    // The login path: the replaced keys no longer log in, everything else still does.
    for (const k of [older, newer, gone]) expect(await logsIn(store, k)).toBe(false);
    for (const k of [next, otherDevice, otherAccount, noDevice]) expect(await logsIn(store, k)).toBe(true);
    expect(decide((await store.findByHash(newer.hash))!, { kind: 'login', protocol: 'smtp', account: 'a@example.com' }, { ip: '192.0.2.1', now: new Date(), account: null })).toEqual({
      allowed: false,
      reason: 'revoked',
    });

    // One key-revoked event per revoked key, as revokeKey and rotateKey emit, so live sessions end.
    await waitFor(() => events.length >= 2);
    await new Promise((r) => setTimeout(r, 100));
    expect(events).toEqual([
      { type: 'key-revoked', id: newer.id, account: 'a@example.com' },
      { type: 'key-revoked', id: older.id, account: 'a@example.com' },
    ]);
  });

  it(`${target.name}: replaceDeviceKey refuses a taken id or hash, or a key without account or device, changing nothing`, async () => {
    const live = deviceKey('dev-1');
    await store.createKey(live);
    await expect(store.replaceDeviceKey({ ...deviceKey('dev-1'), id: live.id }, T0)).rejects.toBeInstanceOf(ConflictError);
    await expect(store.replaceDeviceKey({ ...deviceKey('dev-1'), hash: live.hash }, T0)).rejects.toBeInstanceOf(ConflictError);
    await expect(store.replaceDeviceKey({ ...deviceKey('dev-1'), deviceId: null }, T0)).rejects.toBeInstanceOf(ConflictError);
    await expect(store.replaceDeviceKey({ ...deviceKey('dev-1'), account: null }, T0)).rejects.toBeInstanceOf(ConflictError);
    expect(await allKeys(store)).toEqual([live]);
  });

  it(`${target.name}: 20 concurrent replaceDeviceKey calls for one device leave exactly one live key`, async () => {
    const made = Array.from({ length: 20 }, (_, i) => deviceKey('race', 'a@example.com', new Date(T0), `race ${i}`));
    const bystander = deviceKey('other');
    await store.createKey(bystander);
    const events: StoreEvent[] = [];
    store.subscribe((e) => events.push(e));
    const results = await Promise.all(made.map((k) => store.replaceDeviceKey(k, '2026-02-01T00:00:00.000Z')));
    // Every call succeeded and revoked at most its predecessor.
    expect(results.reduce((n, r) => n + r.revoked.length, 0)).toBe(19);
    await expectOneChain(store, made);
    expect((await store.getKey(bystander.id))?.revokedAt).toBeNull();
    await waitFor(() => events.length >= 19);
    expect(new Set(events.map((e) => (e.type === 'key-revoked' ? e.id : ''))).size).toBe(19);
  });

  it(`${target.name}: a reader racing device replaces never sees the new key beside a live old one, nor neither`, async () => {
    const shared: { pair: { old: KeyRecord; next: KeyRecord } | null } = { pair: null };
    let stop = false;
    let samples = 0;
    const reader = (async () => {
      while (!stop) {
        const p = shared.pair;
        if (!p) {
          await new Promise((r) => setImmediate(r));
          continue;
        }
        const o1 = await store.findByHash(p.old.hash);
        const n1 = await store.findByHash(p.next.hash);
        if (o1?.revokedAt !== null) expect(n1).not.toBeNull();
        const n2 = await store.findByHash(p.next.hash);
        const o2 = await store.findByHash(p.old.hash);
        if (n2 !== null) expect(o2?.revokedAt).not.toBeNull();
        samples++;
        await new Promise((r) => setImmediate(r));
      }
    })();
    let current = deviceKey('dev-1');
    await store.replaceDeviceKey(current, new Date().toISOString());
    for (let i = 0; i < 30; i++) {
      const next = deviceKey('dev-1');
      shared.pair = { old: current, next };
      await new Promise((r) => setTimeout(r, 2));
      await store.replaceDeviceKey(next, new Date().toISOString());
      await new Promise((r) => setTimeout(r, 2));
      current = next;
    }
    stop = true;
    await reader;
    expect(samples).toBeGreaterThan(10);
    expect((await allKeys(store)).filter((k) => k.revokedAt === null).map((k) => k.id)).toEqual([current.id]);
  });

  it(`${target.name}: keeps values with a lifetime: put, get, take once, expire, only-if-absent, delete-if-held`, async () => {
    expect(await store.getValue('session:a')).toBeNull();
    expect(await store.putValue('session:a', 'one', 60_000)).toBe(true);
    expect(await store.getValue('session:a')).toBe('one');
    // Overwrite refreshes the value (an idle timeout sliding forward).
    expect(await store.putValue('session:a', 'two', 60_000)).toBe(true);
    expect(await store.getValue('session:a')).toBe('two');
    // Only-if-absent leaves a live value alone.
    expect(await store.putValue('session:a', 'three', 60_000, { onlyIfAbsent: true })).toBe(false);
    expect(await store.getValue('session:a')).toBe('two');
    // Take: once, then gone.
    expect(await store.takeValue('session:a')).toBe('two');
    expect(await store.takeValue('session:a')).toBeNull();
    expect(await store.getValue('session:a')).toBeNull();
    // Expiry: gone for get and take, and free again for only-if-absent.
    await store.putValue('link:x', 'soon', 50);
    await new Promise((r) => setTimeout(r, 120));
    expect(await store.getValue('link:x')).toBeNull();
    expect(await store.takeValue('link:x')).toBeNull();
    expect(await store.putValue('link:x', 'again', 60_000, { onlyIfAbsent: true })).toBe(true);
    expect(await store.getValue('link:x')).toBe('again');
    // No lifetime: kept until deleted.
    await store.putValue('cert:main', 'pem', null);
    expect(await store.getValue('cert:main')).toBe('pem');
    expect(await store.deleteValue('cert:main')).toBe(true);
    expect(await store.deleteValue('cert:main')).toBe(false);
    // A lock is released only by its holder.
    expect(await store.putValue('lock:renew', 'holder-1', 60_000, { onlyIfAbsent: true })).toBe(true);
    expect(await store.putValue('lock:renew', 'holder-2', 60_000, { onlyIfAbsent: true })).toBe(false);
    expect(await store.deleteValue('lock:renew', 'holder-2')).toBe(false);
    expect(await store.getValue('lock:renew')).toBe('holder-1');
    expect(await store.deleteValue('lock:renew', 'holder-1')).toBe(true);
    expect(await store.getValue('lock:renew')).toBeNull();
  });

  it(`${target.name}: counts atomically in a fixed window: add, subtract, expire, start again`, async () => {
    expect(await store.addToCounter('count:a', 1, 60_000)).toBe(1);
    expect(await store.addToCounter('count:a', 4, 60_000)).toBe(5);
    expect(await store.addToCounter('count:a', -2, 60_000)).toBe(3);
    expect(await store.getValue('count:a')).toBe('3');
    // The window's lifetime is set when it starts; adding does not extend it.
    const started = Date.now();
    expect(await store.addToCounter('count:short', 2, 1000)).toBe(2);
    await new Promise((r) => setTimeout(r, 500));
    expect(await store.addToCounter('count:short', 1, 1000)).toBe(3);
    // Had the second add extended the lifetime, the counter would live until about 1500 ms.
    await new Promise((r) => setTimeout(r, 1150 - (Date.now() - started)));
    expect(await store.getValue('count:short')).toBeNull();
    expect(await store.addToCounter('count:short', 1, 1000)).toBe(1);
    // No lifetime: kept until deleted.
    expect(await store.addToCounter('count:forever', 7, null)).toBe(7);
    expect(await store.deleteValue('count:forever')).toBe(true);
    expect(await store.addToCounter('count:forever', 1, null)).toBe(1);
    // Concurrent adds lose none.
    const totals = await Promise.all(Array.from({ length: 25 }, () => store.addToCounter('count:race', 1, 60_000)));
    expect([...totals].sort((x, y) => x - y)).toEqual(Array.from({ length: 25 }, (_, i) => i + 1));
  });

  it(`${target.name}: keeps a key's canary mark and sending limits, and a plain key is no canary`, async () => {
    const canary = key({ name: 'bait', scopes: ['imap'], account: 'a@example.com', canary: true });
    const limited = key({ name: 'mailer', scopes: ['smtp'], account: 'a@example.com', limits: { messagesPerHour: 10, recipientsPerDay: 100 } });
    const plain = key({ name: 'plain', scopes: ['smtp'] });
    for (const k of [canary, limited, plain]) await store.createKey(k);
    expect(await store.findByHash(canary.hash)).toMatchObject({ canary: true, limits: null });
    expect(await store.getKey(limited.id)).toMatchObject({ canary: false, limits: { messagesPerHour: 10, recipientsPerDay: 100 } });
    expect(await store.getKey(plain.id)).toMatchObject({ canary: false, limits: null });
  });

  it(`${target.name}: of concurrent takes and only-if-absent puts of one value, exactly one wins`, async () => {
    await store.putValue('link:race', 'v', 60_000);
    const takes = await Promise.all(Array.from({ length: 20 }, () => store.takeValue('link:race')));
    expect(takes.filter((t) => t === 'v')).toHaveLength(1);
    const puts = await Promise.all(Array.from({ length: 20 }, (_, i) => store.putValue('lock:race', `h${i}`, 60_000, { onlyIfAbsent: true })));
    expect(puts.filter(Boolean)).toHaveLength(1);
  });

  if (target.openPeer) {
    const openPeer = target.openPeer.bind(target);
    it(`${target.name}: a value put on one instance is read, taken and locked on another`, async () => {
      const peer = await openPeer(store);
      try {
        await store.putValue('session:shared', 'signed-in', 60_000);
        expect(await peer.getValue('session:shared')).toBe('signed-in');
        expect(await peer.putValue('lock:shared', 'peer', 60_000, { onlyIfAbsent: true })).toBe(true);
        expect(await store.putValue('lock:shared', 'store', 60_000, { onlyIfAbsent: true })).toBe(false);
        expect(await peer.takeValue('session:shared')).toBe('signed-in');
        await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? peer : store).addToCounter('count:shared', 1, 60_000)));
        expect(await store.addToCounter('count:shared', 0, 60_000)).toBe(10);
        expect(await store.getValue('session:shared')).toBeNull();
      } finally {
        await peer.close();
      }
    });

    it(`${target.name}: two instances racing replaceDeviceKey for one device leave exactly one live key`, async () => {
      const peer = await openPeer(store);
      try {
        const first = deviceKey('race');
        await store.createKey(first);
        const made = Array.from({ length: 20 }, (_, i) => deviceKey('race', 'a@example.com', new Date(T0), `race ${i}`));
        await Promise.all(made.map((k, i) => (i % 2 === 0 ? store : peer).replaceDeviceKey(k, '2026-02-01T00:00:00.000Z')));
        const live = await expectOneChain(store, [first, ...made]);
        expect(live.id).not.toBe(first.id);
        // Both instances read the same outcome.
        expect((await allKeys(peer, { account: 'a@example.com' })).filter((k) => k.revokedAt === null).map((k) => k.id)).toEqual([live.id]);
        for (const k of [first, ...made]) expect(await logsIn(peer, k)).toBe(k.id === live.id);
      } finally {
        await peer.close();
      }
    });
  }

  it(`${target.name}: touches are coalesced and written in the background`, async () => {
    const k = key();
    await store.createKey(k);
    const t0 = performance.now();
    for (let i = 0; i < 1000; i++) store.touchKey(k.id, { at: `2026-02-01T00:00:${String(i % 60).padStart(2, '0')}.000Z`, ip: `10.0.0.${i % 250}`, protocol: 'imap' });
    store.touchKey(k.id, { at: '2026-03-01T00:00:00.000Z', ip: '192.0.2.7', protocol: 'smtp' });
    // touchKey is synchronous bookkeeping; 1,001 calls never wait on the store.
    expect(performance.now() - t0).toBeLessThan(1000);
    await store.flushTouches();
    const got = await store.getKey(k.id);
    expect(got).toMatchObject({ lastUsedAt: '2026-03-01T00:00:00.000Z', lastUsedIp: '192.0.2.7', lastUsedProtocol: 'smtp' });
    // A touch for a key that does not exist does not create one.
    store.touchKey('ghost', { at: T0, ip: null, protocol: 'http' });
    await store.flushTouches();
    expect(await store.getKey('ghost')).toBeNull();
  });

  it(`${target.name}: touches are flushed by the timer without an explicit flush`, async () => {
    const k = key();
    await store.createKey(k);
    store.touchKey(k.id, { at: '2026-03-01T00:00:00.000Z', ip: '::1', protocol: 'pop3' });
    await waitFor(async () => (await store.getKey(k.id))?.lastUsedAt === '2026-03-01T00:00:00.000Z', 5000);
    expect(await store.getKey(k.id)).toMatchObject({ lastUsedIp: '::1', lastUsedProtocol: 'pop3' });
  });

  it(`${target.name}: import stores a record once and reports an existing one`, async () => {
    const k = key({ name: 'imp', scopes: ['smtp'], account: 'new@example.com' });
    expect(await store.importKey(k)).toBe('imported');
    expect(await store.importKey(k)).toBe('exists');
    expect(await store.importKey({ ...key(), hash: k.hash })).toBe('exists');
    expect(await store.findByHash(k.hash)).toEqual(k);
    // The bound account exists afterwards, with just its address.
    expect(await store.getAccount('new@example.com')).toMatchObject({ address: 'new@example.com', aliases: [], disabled: false });
  });

  it(`${target.name}: accounts: create, resolve by alias in any case, list, update, conflicts`, async () => {
    const a = await store.createAccount(account('Alice@Example.com', { aliases: ['ALI@example.com', 'alice@example.net'], displayName: 'Alice', upstream: { imap: { host: 'h' } } }));
    expect(a).toEqual(account('alice@example.com', { aliases: ['ali@example.com', 'alice@example.net'], displayName: 'Alice', upstream: { imap: { host: 'h' } } }));
    expect((await store.resolveAccount('ALI@EXAMPLE.COM'))?.address).toBe('alice@example.com');
    expect((await store.resolveAccount('alice@example.com'))?.address).toBe('alice@example.com');
    await expect(store.createAccount(account('alice@example.com'))).rejects.toBeInstanceOf(ConflictError);
    await expect(store.createAccount(account('ali@example.com'))).rejects.toBeInstanceOf(ConflictError);
    await expect(store.createAccount(account('bob@example.com', { aliases: ['alice@example.net'] }))).rejects.toBeInstanceOf(ConflictError);
    expect(await store.getAccount('bob@example.com')).toBeNull();
    await store.createAccount(account('bob@example.com'));
    expect((await store.listAccounts()).items.map((x) => x.address)).toEqual(['alice@example.com', 'bob@example.com']);

    const events: StoreEvent[] = [];
    store.subscribe((e) => events.push(e));
    const u = await store.updateAccount('alice@example.com', { disabled: true, aliases: ['a2@example.com'], displayName: null });
    expect(u).toMatchObject({ disabled: true, aliases: ['a2@example.com'], displayName: null, upstream: { imap: { host: 'h' } } });
    expect(await store.resolveAccount('ali@example.com')).toBeNull();
    expect((await store.resolveAccount('a2@example.com'))?.address).toBe('alice@example.com');
    await expect(store.updateAccount('alice@example.com', { aliases: ['bob@example.com'] })).rejects.toBeInstanceOf(ConflictError);
    // A refused update changes nothing.
    expect((await store.getAccount('alice@example.com'))?.aliases).toEqual(['a2@example.com']);
    await expect(store.updateAccount('ghost@example.com', { disabled: true })).rejects.toBeInstanceOf(NotFoundError);
    await waitFor(() => events.some((e) => e.type === 'account-changed' && e.address === 'alice@example.com'));
  });

  it(`${target.name}: ensureAccount creates once and returns the existing record after`, async () => {
    const first = await store.ensureAccount('Carol@Example.com', T0);
    expect(first).toEqual(account('carol@example.com'));
    await store.updateAccount('carol@example.com', { displayName: 'Carol' });
    expect((await store.ensureAccount('carol@example.com'))?.displayName).toBe('Carol');
  });

  it(`${target.name}: deleting an account revokes its keys and frees its aliases`, async () => {
    await store.createAccount(account('dave@example.com', { aliases: ['d@example.com'] }));
    const k1 = key({ name: '1', scopes: ['smtp'], account: 'dave@example.com' });
    const k2 = key({ name: '2', scopes: ['imap'], account: 'dave@example.com' });
    const other = key({ name: 'o', scopes: ['imap'], account: 'erin@example.com' });
    for (const k of [k1, k2, other]) await store.createKey(k);
    const events: StoreEvent[] = [];
    store.subscribe((e) => events.push(e));
    await store.deleteAccount('dave@example.com', '2026-02-01T00:00:00.000Z');
    expect(await store.getAccount('dave@example.com')).toBeNull();
    expect(await store.resolveAccount('d@example.com')).toBeNull();
    expect((await store.getKey(k1.id))?.revokedAt).toBe('2026-02-01T00:00:00.000Z');
    expect((await store.getKey(k2.id))?.revokedAt).toBe('2026-02-01T00:00:00.000Z');
    expect((await store.getKey(other.id))?.revokedAt).toBeNull();
    await waitFor(() => events.filter((e) => e.type === 'key-revoked').length === 2);
    await expect(store.deleteAccount('dave@example.com', T0)).rejects.toBeInstanceOf(NotFoundError);
    await store.createAccount(account('d@example.com'));
  });

  it(`${target.name}: unsubscribe stops events`, async () => {
    const k = key();
    await store.createKey(k);
    const events: StoreEvent[] = [];
    const off = store.subscribe((e) => events.push(e));
    off();
    await store.revokeKey(k.id, T0);
    await new Promise((r) => setTimeout(r, 200));
    expect(events).toEqual([]);
  });

  it(`${target.name}: a closed store rejects with StoreUnavailableError`, async () => {
    const s = await target.open();
    await s.close();
    await expect(s.findByHash('0'.repeat(64))).rejects.toBeInstanceOf(StoreUnavailableError);
    await expect(s.createKey(key())).rejects.toBeInstanceOf(StoreUnavailableError);
    await expect(s.listAccounts()).rejects.toBeInstanceOf(StoreUnavailableError);
  });

  if (target.restart) {
    const restart = target.restart.bind(target);
    it(`${target.name}: survives a server restart mid-operations: clear errors, no corrupt records, recovery`, { timeout: 60_000 }, async () => {
      const keys: KeyRecord[] = [];
      let stop = false;
      const errors: unknown[] = [];
      const writer = (async () => {
        let i = 0;
        while (!stop) {
          const k = key({ name: `w${i++}`, scopes: ['smtp'], account: 'a@example.com' });
          try {
            await store.createKey(k);
            keys.push(k);
          } catch (err) {
            errors.push(err);
            await new Promise((r) => setTimeout(r, 20));
          }
        }
      })();
      await waitFor(() => keys.length >= 20);
      await restart();
      await waitFor(() => errors.length > 0, 20_000);
      // Writes after the restart go through again once the client reconnects.
      const before = keys.length;
      await waitFor(() => keys.length > before + 10, 20_000);
      stop = true;
      await writer;
      // The restart was noticed, and only as StoreUnavailableError.
      expect(errors.length).toBeGreaterThan(0);
      for (const e of errors) expect(e).toBeInstanceOf(StoreUnavailableError);
      expect((errors[0] as Error).message).toMatch(/unavailable/i);
      // Every acknowledged write is there and intact; nothing half-written shows up.
      const listed = await allKeys(store);
      const byId = new Map(listed.map((k) => [k.id, k]));
      for (const k of keys) expect(byId.get(k.id)).toEqual(k);
      for (const k of listed) expect(await store.findByHash(k.hash)).toEqual(k);
    });
  }
}

/** Every key the query matches, page by page. */
async function allKeys(store: KeyStore, query: Omit<KeyQuery, 'cursor' | 'limit'> = {}): Promise<KeyRecord[]> {
  const out: KeyRecord[] = [];
  for await (const page of allPages((cursor) => store.listKeys({ ...query, cursor, limit: PAGE_MAX }))) out.push(...page);
  return out;
}

