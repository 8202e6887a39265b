import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { SessionRegistry, type EndReason, type LiveSession } from '../../src/auth/sessions.js';
import { newKey } from '../../src/keys/new-key.js';
import type { KeyRecord } from '../../src/keys/record.js';
import { Metrics } from '../../src/metrics.js';
import { openRedisStore } from '../../src/store/redis.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import type { KeyStore } from '../../src/store/types.js';
import { countingStore } from '../helpers/counting-store.js';
import { redisAvailable, startRedis, type RedisServer } from '../helpers/redis-server.js';
import { captureLogger, silentLogger, sleep } from '../tls/helpers.js';
import { waitFor } from '../helpers/wait.js';

const dir = mkdtempSync(join(tmpdir(), 'keygate-sessions-'));
let n = 0;
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let store: KeyStore;
let metrics: Metrics;
let registry: SessionRegistry;
beforeEach(async () => {
  store = openSqliteStore(join(dir, `s${n++}.db`), { touchIntervalMs: 20 });
  metrics = new Metrics(undefined, { processMetrics: false });
  registry = new SessionRegistry(store, silentLogger(), metrics);
  registry.start();
});
afterEach(async () => {
  registry.stop();
  await store.close();
});

interface FakeSession extends LiveSession {
  ended: Array<{ reason: EndReason; at: number }>;
  remove: () => void;
}

/** A session that, like a protocol, removes itself from the registry when it ends. */
function session(key: KeyRecord, protocol: LiveSession['protocol'] = 'imap', account = key.account!): FakeSession {
  const s: FakeSession = {
    protocol,
    keyId: key.id,
    account,
    expiresAt: key.expiresAt,
    ended: [],
    remove: () => {},
    end(reason) {
      s.ended.push({ reason, at: Date.now() });
      s.remove();
    },
  };
  s.remove = registry.add(s);
  return s;
}

async function makeKey(account: string, extra: { expiresAt?: string } = {}): Promise<KeyRecord> {
  await store.ensureAccount(account);
  const { record } = newKey({ name: 'k', account, scopes: ['imap', 'smtp', 'pop3'], ...extra });
  await store.createKey(record);
  return record;
}

async function gauge(protocol: string): Promise<number> {
  const m = await metrics.sessions.get();
  return m.values.find((v) => v.labels.protocol === protocol)?.value ?? 0;
}

describe('SessionRegistry', () => {
  it('ends every session of a revoked key within 1 s, and only those', async () => {
    const key = await makeKey('alice@example.com');
    const other = await makeKey('alice@example.com');
    const a = session(key, 'imap');
    const b = session(key, 'smtp');
    const c = session(other, 'imap');
    expect(registry.count()).toBe(3);
    const t0 = Date.now();
    await store.revokeKey(key.id, new Date().toISOString());
    await waitFor(() => a.ended.length === 1 && b.ended.length === 1, 1000);
    expect(a.ended[0]!.reason).toBe('revoked');
    expect(b.ended[0]!.at - t0).toBeLessThan(1000);
    expect(c.ended).toEqual([]);
    expect(registry.count()).toBe(1);
    expect(registry.count('imap')).toBe(1);
    expect(registry.count('smtp')).toBe(0);
  });

  it('ends the old key’s sessions on rotation; the new key’s stay', async () => {
    const old = await makeKey('bob@example.com');
    const s = session(old, 'pop3');
    const { record: next } = newKey({ name: 'k2', account: 'bob@example.com', scopes: ['imap'], rotatedFrom: old.id });
    await store.rotateKey(old.id, next, new Date().toISOString());
    const fresh = session(next, 'imap');
    await waitFor(() => s.ended.length === 1, 1000);
    expect(s.ended[0]!.reason).toBe('revoked');
    await sleep(50);
    expect(fresh.ended).toEqual([]);
  });

  it('ends an account’s sessions when it is disabled (any key, any case), not when it is changed otherwise', async () => {
    const k1 = await makeKey('carol@example.com');
    const k2 = await makeKey('carol@example.com');
    const dave = await makeKey('dave@example.com');
    const s1 = session(k1, 'imap', 'Carol@Example.com');
    const s2 = session(k2, 'smtp');
    const d = session(dave);
    await store.updateAccount('carol@example.com', { displayName: 'Carol' });
    await sleep(100);
    expect(s1.ended).toEqual([]);
    const t0 = Date.now();
    await store.updateAccount('carol@example.com', { disabled: true });
    await waitFor(() => s1.ended.length === 1 && s2.ended.length === 1, 1000);
    expect(s1.ended[0]!.reason).toBe('account_disabled');
    expect(s2.ended[0]!.at - t0).toBeLessThan(1000);
    expect(d.ended).toEqual([]);
  });

  it('ends an account’s sessions when the account is deleted', async () => {
    const k = await makeKey('erin@example.com');
    const s = session(k);
    await store.deleteAccount('erin@example.com', new Date().toISOString());
    await waitFor(() => s.ended.length === 1, 1000);
    expect(['revoked', 'account_disabled']).toContain(s.ended[0]!.reason);
  });

  it('ends a session when its key expires, within 1 s of the expiry', async () => {
    const expiresAt = new Date(Date.now() + 600).toISOString();
    const k = await makeKey('frank@example.com', { expiresAt });
    const never = await makeKey('frank@example.com');
    const s = session(k);
    const stays = session(never);
    await waitFor(() => s.ended.length === 1, 2000);
    expect(s.ended[0]!.reason).toBe('expired');
    const late = s.ended[0]!.at - Date.parse(expiresAt);
    expect(late).toBeGreaterThanOrEqual(0);
    expect(late).toBeLessThan(1000);
    expect(stays.ended).toEqual([]);
  });

  it('ends a session registered just after its key was revoked (login raced the revocation)', async () => {
    const k = await makeKey('gina@example.com');
    await store.revokeKey(k.id, new Date().toISOString());
    const s = session(k);
    await waitFor(() => s.ended.length === 1, 1000);
    expect(s.ended[0]!.reason).toBe('revoked');

    const k2 = await makeKey('hal@example.com');
    await store.updateAccount('hal@example.com', { disabled: true });
    await sleep(50);
    const s2 = session(k2);
    await waitFor(() => s2.ended.length === 1, 1000);
    expect(s2.ended[0]!.reason).toBe('account_disabled');
    // Enabled again: new sessions stay.
    await store.updateAccount('hal@example.com', { disabled: false });
    await sleep(50);
    const s3 = session(k2);
    await sleep(100);
    expect(s3.ended).toEqual([]);
  });

  it('calls end at most once per session, however many reasons arrive', async () => {
    const k = await makeKey('ivy@example.com', { expiresAt: new Date(Date.now() + 300).toISOString() });
    const calls: EndReason[] = [];
    // A session that does not remove itself, and whose end throws.
    const s: LiveSession = {
      protocol: 'imap',
      keyId: k.id,
      account: 'ivy@example.com',
      expiresAt: k.expiresAt,
      end(reason) {
        calls.push(reason);
        throw new Error('socket already gone');
      },
    };
    const remove = registry.add(s);
    const other = session(await makeKey('ivy@example.com'));
    await store.updateAccount('ivy@example.com', { disabled: true });
    await store.revokeKey(k.id, new Date().toISOString());
    await sleep(600);
    registry.endAll('shutdown');
    remove();
    remove();
    expect(calls).toHaveLength(1);
    expect(other.ended).toHaveLength(1);
    expect(registry.count()).toBe(0);
  });

  it('keeps keygate_sessions{protocol} right', async () => {
    const k = await makeKey('jo@example.com');
    const a = session(k, 'imap');
    session(k, 'imap');
    const c = session(await makeKey('kim@example.com'), 'smtp');
    expect(await gauge('imap')).toBe(2);
    expect(await gauge('smtp')).toBe(1);
    expect(await gauge('pop3')).toBe(0);
    a.remove();
    a.remove(); // idempotent
    expect(await gauge('imap')).toBe(1);
    await store.revokeKey(k.id, new Date().toISOString());
    await waitFor(async () => (await gauge('imap')) === 0, 1000);
    expect(await gauge('smtp')).toBe(1);
    c.remove();
    expect(await gauge('smtp')).toBe(0);
    expect(registry.count()).toBe(0);
  });

  it('endAll ends everything with the given reason', async () => {
    const k = await makeKey('lee@example.com');
    const list = [session(k, 'imap'), session(k, 'pop3'), session(k, 'smtp')];
    registry.endAll('shutdown');
    expect(list.map((s) => s.ended.map((e) => e.reason))).toEqual([['shutdown'], ['shutdown'], ['shutdown']]);
    expect(registry.count()).toBe(0);
  });

  it('stops listening after stop()', async () => {
    const k = await makeKey('max@example.com');
    const s = session(k);
    registry.stop();
    await store.revokeKey(k.id, new Date().toISOString());
    await sleep(400);
    expect(s.ended).toEqual([]);
    registry.start();
  });
});

describe('SessionRegistry re-check against the store', () => {
  it('ends, at the next periodic re-check, sessions whose key or account another process changed (no event reaches this one)', async () => {
    const path = join(dir, `recheck${n++}.db`);
    const mine = openSqliteStore(path, { touchIntervalMs: 20 });
    // Another process on the same file (e.g. `keygate tokens revoke`): its changes raise no event here.
    const cli = openSqliteStore(path, { touchIntervalMs: 20 });
    const { logger, lines } = captureLogger();
    const reg = new SessionRegistry(mine, logger, undefined, { recheckIntervalMs: 300 });
    reg.start();
    try {
      const keys: KeyRecord[] = [];
      for (const account of ['olga@example.com', 'olga@example.com', 'pia@example.com', 'quinn@example.com']) {
        await mine.ensureAccount(account);
        const { record } = newKey({ name: 'k', account, scopes: ['imap'] });
        await mine.createKey(record);
        keys.push(record);
      }
      const ended: Array<[string, EndReason]> = [];
      for (const k of keys) reg.add({ protocol: 'imap', keyId: k.id, account: k.account!, expiresAt: null, end: (r) => ended.push([k.id, r]) });
      await cli.revokeKey(keys[0]!.id, new Date().toISOString());
      await cli.updateAccount('pia@example.com', { disabled: true });
      await sleep(100);
      expect(ended).toEqual([]);
      await waitFor(() => ended.length === 2, 1500);
      expect(ended.sort()).toEqual([[keys[0]!.id, 'revoked'], [keys[2]!.id, 'account_disabled']].sort());
      expect(reg.count()).toBe(2);
      const summary = lines.find((l) => l.msg === 'session re-check ended sessions an event had not');
      expect(summary).toMatchObject({ level: 30, trigger: 'periodic', checked: 4, ended: { revoked: 1, account_disabled: 1 } });
      // Deleted from under it: the key's and the account's sessions end too.
      await cli.deleteAccount('quinn@example.com', new Date().toISOString());
      await waitFor(() => ended.length === 3, 1500);
      expect(ended.find(([id]) => id === keys[3]!.id)?.[1]).toBe('revoked');
      // The untouched one stays.
      await sleep(400);
      expect(ended.some(([id]) => id === keys[1]!.id)).toBe(false);
    } finally {
      reg.stop();
      await cli.close();
      await mine.close();
    }
  });

  it('batches: one re-check reads every open session’s key and account in one lookup each', async () => {
    const k = await makeKey('rita@example.com');
    const { store: counting, calls } = countingStore(store);
    const reg = new SessionRegistry(counting, silentLogger(), undefined, { recheckIntervalMs: 0 });
    for (let i = 0; i < 50; i++) reg.add({ protocol: 'pop3', keyId: k.id, account: 'rita@example.com', expiresAt: null, end: () => {} });
    expect(await reg.recheck()).toEqual({ checked: 50, ended: {} });
    expect(Object.fromEntries(calls)).toEqual({ getAccounts: 1, getKeys: 1 });
  });

  it('logs a warning and ends nothing when the store cannot answer', async () => {
    const k = await makeKey('sam@example.com');
    const { logger, lines } = captureLogger();
    const reg = new SessionRegistry(store, logger, undefined, { recheckIntervalMs: 0 });
    const ended: EndReason[] = [];
    reg.add({ protocol: 'imap', keyId: k.id, account: 'sam@example.com', expiresAt: null, end: (r) => ended.push(r) });
    await store.close();
    expect(await reg.recheck('periodic')).toEqual({ checked: 1, ended: {} });
    expect(ended).toEqual([]);
    expect(lines.find((l) => l.msg === 'cannot re-check open sessions; trying again later')).toMatchObject({ level: 40, sessions: 1 });
    store = openSqliteStore(join(dir, `s${n++}.db`)); // for afterEach
  });
});

describe.runIf(redisAvailable())('SessionRegistry across instances (Redis store, pub/sub)', () => {
  let server: RedisServer;
  beforeAll(async () => {
    server = await startRedis();
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('ends a session on instance B when its key is revoked or its account disabled through instance A', async () => {
    const ns = `s${Date.now().toString(36)}`;
    const a = await openRedisStore(server.url, { namespace: ns, touchIntervalMs: 20 });
    const b = await openRedisStore(server.url, { namespace: ns, touchIntervalMs: 20 });
    const regB = new SessionRegistry(b, silentLogger());
    regB.start();
    try {
      await a.ensureAccount('nan@example.com');
      const { record } = newKey({ name: 'k', account: 'nan@example.com', scopes: ['imap'] });
      await a.createKey(record);
      const other = newKey({ name: 'k2', account: 'nan@example.com', scopes: ['imap'] }).record;
      await a.createKey(other);
      const ended: EndReason[] = [];
      const mk = (key: KeyRecord): LiveSession => ({ protocol: 'imap', keyId: key.id, account: 'nan@example.com', expiresAt: null, end: (r) => ended.push(r) });
      regB.add(mk(record));
      regB.add(mk(other));
      await a.revokeKey(record.id, new Date().toISOString());
      await waitFor(() => ended.length === 1, 1000);
      expect(ended).toEqual(['revoked']);
      await a.updateAccount('nan@example.com', { disabled: true });
      await waitFor(() => ended.length === 2, 1000);
      expect(ended).toEqual(['revoked', 'account_disabled']);
    } finally {
      regB.stop();
      await a.close();
      await b.close();
    }
  });
});
