import { expect, it } from 'vitest';
import { newKey } from '../../src/keys/new-key.js';
import type { AccountRecord, KeyRecord } from '../../src/keys/record.js';
import { InvalidCursorError, KeyLimitError } from '../../src/store/errors.js';
import { allPages, keyState, PAGE_MAX, SCAN_BUDGET } from '../../src/store/paging.js';
import type { KeyCounts, KeyQuery, KeyStore } from '../../src/store/types.js';
import type { ConformanceTarget } from './conformance.js';

/*
 * The scale half of the store contract (issue 17): counts from counters,
 * lists in pages that stay stable under concurrent writes, and the
 * per-account key limit, atomic under concurrency. Run by
 * runKeyStoreConformance against every store.
 */

const T0 = Date.parse('2026-01-01T00:00:00.000Z');
const at = (s: number): Date => new Date(T0 + s * 1000);

function key(extra: Partial<Parameters<typeof newKey>[0]> = {}, when = at(0)): KeyRecord {
  return newKey({ name: 'k', scopes: ['smtp'], account: 'a@example.com', ...extra }, when).record;
}

async function everyKey(store: KeyStore, query: Omit<KeyQuery, 'cursor'> = {}): Promise<KeyRecord[]> {
  const out: KeyRecord[] = [];
  for await (const page of allPages((cursor) => store.listKeys({ limit: PAGE_MAX, ...query, cursor }))) out.push(...page);
  return out;
}

/** What the counters must say: the same as reading every key. */
async function walkedCounts(store: KeyStore, now: Date): Promise<KeyCounts> {
  const counts: KeyCounts = { active: 0, revoked: 0, expired: 0 };
  for (const k of await everyKey(store)) counts[keyState(k, now.getTime())]++;
  return counts;
}

export function runScaleConformance(target: ConformanceTarget): void {
  const name = target.name;
  const withStore = async (fn: (store: KeyStore) => Promise<void>, limits?: { keysPerAccount: number }): Promise<void> => {
    const store = await target.open(limits);
    try {
      await fn(store);
    } finally {
      await store.close();
    }
  };

  it(`${name}: counts keys by state from its counters, through every kind of write, at any instant`, async () => {
    await withStore(async (store) => {
      const now = new Date();
      const soon = new Date(now.getTime() + 60_000);
      expect(await store.countKeys(now)).toEqual({ active: 0, revoked: 0, expired: 0 });
      const a = key({}, now);
      const expiring = key({ expiresAt: soon.toISOString() }, now);
      const past = { ...key({ account: 'b@example.com' }, at(0)), expiresAt: at(10).toISOString() };
      const revokedImport = { ...key({}, at(1)), revokedAt: at(2).toISOString() };
      await store.createKey(a);
      await store.createKey(expiring);
      expect(await store.importKey(past)).toBe('imported');
      expect(await store.importKey(revokedImport)).toBe('imported');
      expect(await store.countKeys(now)).toEqual({ active: 2, revoked: 1, expired: 1 });
      // The same store a minute later, and back again: the counted range moves both ways.
      expect(await store.countKeys(new Date(soon.getTime() + 1))).toEqual({ active: 1, revoked: 1, expired: 2 });
      expect(await store.countKeys(now)).toEqual({ active: 2, revoked: 1, expired: 1 });

      const b = key({ rotatedFrom: a.id }, now);
      await store.rotateKey(a.id, b, now.toISOString());
      await store.revokeKey(past.id, now.toISOString());
      await store.revokeKey(past.id, now.toISOString()); // a second revocation counts nothing
      await store.replaceDeviceKey(key({ deviceId: 'd1', account: 'c@example.com' }, now), now.toISOString());
      await store.replaceDeviceKey(key({ deviceId: 'd1', account: 'c@example.com' }, now), now.toISOString());
      await store.createAccount({ address: 'c@example.com', aliases: [], displayName: null, disabled: false, createdAt: now.toISOString(), upstream: null }).catch(() => {});
      await store.deleteAccount('c@example.com', now.toISOString());
      for (const t of [now, new Date(soon.getTime() + 1), now]) expect(await store.countKeys(t)).toEqual(await walkedCounts(store, t));
      expect(await store.countKeys(now)).toEqual({ active: 2, revoked: 5, expired: 0 });
    });
  });

  it(`${name}: counters agree with a walk of every key after 150 random writes`, async () => {
    await withStore(async (store) => {
      const now = new Date();
      const made: KeyRecord[] = [];
      let seed = 7;
      const rand = (n: number): number => {
        seed = (seed * 1103515245 + 12345) % 2 ** 31;
        return Math.floor(seed / 65536) % n;
      };
      const expiry = (): string | null => [null, null, new Date(now.getTime() - 1000).toISOString(), new Date(now.getTime() + 30_000).toISOString()][rand(4)]!;
      for (let i = 0; i < 150; i++) {
        // Counting midway moves SQLite's expired mark: later writes must keep it right.
        if (i === 50 || i === 100) expect(await store.countKeys(now)).toEqual(await walkedCounts(store, now));
        const account = `u${rand(6)}@example.com`;
        const op = rand(6);
        try {
          if (op <= 1 || made.length === 0) {
            const k = key({ account, expiresAt: expiry() }, now);
            await store.createKey(k);
            made.push(k);
          } else if (op === 2) {
            await store.revokeKey(made[rand(made.length)]!.id, now.toISOString());
          } else if (op === 3) {
            const old = made[rand(made.length)]!;
            const k = key({ account: old.account, expiresAt: old.expiresAt, rotatedFrom: old.id }, now);
            await store.rotateKey(old.id, k, now.toISOString());
            made.push(k);
          } else if (op === 4) {
            const { key: k } = await store.replaceDeviceKey(key({ account, deviceId: `dev${rand(3)}`, expiresAt: expiry() }, now), now.toISOString());
            made.push(k);
          } else {
            const k = { ...key({ account, expiresAt: expiry() }, now), revokedAt: rand(2) === 0 ? now.toISOString() : null };
            await store.importKey(k);
            made.push(k);
          }
        } catch (err) {
          // Rotating a revoked key is refused; nothing else may fail.
          expect(String(err)).toMatch(/not active/);
        }
      }
      for (const t of [now, new Date(now.getTime() + 60_000), new Date(now.getTime() - 60_000), now]) {
        expect(await store.countKeys(t)).toEqual(await walkedCounts(store, t));
      }
    });
  });

  it(`${name}: pages keys newest first, then by creation order; each cursor continues exactly after the last key shown`, async () => {
    await withStore(async (store) => {
      const made: KeyRecord[] = [];
      // Distinct times, and a run of keys made in the same millisecond (as a bulk import does).
      for (let i = 0; i < 12; i++) made.push(key({ name: `t${i}`, account: i % 2 ? 'a@example.com' : 'b@example.com' }, at(i)));
      for (let i = 0; i < 9; i++) made.push(key({ name: `same${i}`, account: 'a@example.com' }, at(5)));
      for (const k of made) await store.createKey(k);
      const expected = made
        .map((k, i) => ({ k, i }))
        .sort((x, y) => Date.parse(y.k.createdAt) - Date.parse(x.k.createdAt) || y.i - x.i)
        .map((x) => x.k.id);

      const ids: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const page: { items: KeyRecord[]; nextCursor: string | null } = await store.listKeys({ limit: 4, cursor });
        expect(page.items.length).toBeLessThanOrEqual(4);
        ids.push(...page.items.map((k) => k.id));
        cursor = page.nextCursor;
        pages++;
      } while (cursor !== null);
      expect(ids).toEqual(expected);
      expect(pages).toBe(Math.ceil(made.length / 4));
      // The whole record comes back, and the default page is 100.
      expect((await store.listKeys()).items).toHaveLength(made.length);
      expect((await store.listKeys({ limit: 1 })).items[0]).toEqual(made.find((k) => k.id === expected[0]));

      for (const bad of ['!', 'abc', Buffer.from('k1.x').toString('base64url'), Buffer.from('a@example.com').toString('base64url')]) {
        await expect(store.listKeys({ cursor: bad })).rejects.toBeInstanceOf(InvalidCursorError);
      }
    });
  });

  it(`${name}: filters by account, state, name prefix and address prefix, page by page`, async () => {
    await withStore(async (store) => {
      const now = new Date();
      const made: KeyRecord[] = [];
      for (let i = 0; i < 30; i++) {
        const account = ['ann@example.com', 'anna@example.org', 'bob@example.com', null][i % 4]!;
        const k = key({ name: i % 3 === 0 ? `Phone ${i}` : `Laptop ${i}`, account, expiresAt: i % 5 === 0 ? at(100).toISOString() : null }, new Date(now.getTime() - (30 - i) * 1000));
        await store.createKey(k);
        made.push(k);
      }
      for (const k of made.filter((_, i) => i % 7 === 0)) await store.revokeKey(k.id, now.toISOString());
      const all = await everyKey(store);
      expect(all).toHaveLength(30);
      const cases: [KeyQuery, (k: KeyRecord) => boolean][] = [
        [{ account: 'ANN@example.com' }, (k) => k.account === 'ann@example.com'],
        [{ state: 'active' }, (k) => keyState(k, now.getTime()) === 'active'],
        [{ state: 'revoked' }, (k) => k.revokedAt !== null],
        [{ state: 'expired' }, (k) => keyState(k, now.getTime()) === 'expired'],
        [{ namePrefix: 'Phone' }, (k) => k.name.startsWith('Phone')],
        [{ namePrefix: 'phone' }, () => false],
        [{ addressPrefix: 'ANN' }, (k) => k.account?.startsWith('ann') ?? false],
        [{ account: 'bob@example.com', state: 'active', namePrefix: 'Lap' }, (k) => k.account === 'bob@example.com' && keyState(k, now.getTime()) === 'active' && k.name.startsWith('Lap')],
        [{ account: 'ann@example.com', state: 'revoked' }, (k) => k.account === 'ann@example.com' && k.revokedAt !== null],
        [{ account: 'anna@example.org', state: 'expired' }, (k) => k.account === 'anna@example.org' && keyState(k, now.getTime()) === 'expired'],
      ];
      for (const [query, pick] of cases) {
        const expected = all.filter(pick).map((k) => k.id);
        const got: string[] = [];
        for await (const page of allPages((cursor) => store.listKeys({ ...query, now, limit: 2, cursor }))) got.push(...page.map((k) => k.id));
        expect({ query, got }).toEqual({ query, got: expected });
      }
      // The account's own list: active keys only, newest first.
      expect((await store.activeKeys('Ann@Example.com', now)).map((k) => k.id)).toEqual(
        all.filter((k) => k.account === 'ann@example.com' && keyState(k, now.getTime()) === 'active').map((k) => k.id),
      );
    });
  });

  it(`${name}: a filter that matches little stops at the scan budget and hands back a cursor`, async () => {
    await withStore(async (store) => {
      const needle = key({ name: 'needle', account: null }, at(0));
      await store.createKey(needle);
      for (let i = 0; i < SCAN_BUDGET + 50; i++) await store.createKey(key({ name: 'hay', account: null }, at(1 + i)));
      const first = await store.listKeys({ namePrefix: 'needle', limit: 10 });
      expect(first.items).toEqual([]);
      expect(first.nextCursor).not.toBeNull();
      const second = await store.listKeys({ namePrefix: 'needle', limit: 10, cursor: first.nextCursor });
      expect(second).toEqual({ items: [needle], nextCursor: null });
    });
  });

  it(`${name}: paging through while keys are created, revoked, rotated and replaced shows every earlier key exactly once`, async () => {
    await withStore(async (store) => {
      const now = Date.now();
      const before: KeyRecord[] = [];
      for (let i = 0; i < 150; i++) {
        const k = key({ name: `pre${i}`, account: `p${i % 5}@example.com`, deviceId: i % 10 === 0 ? `dev${i}` : null }, new Date(now - 150_000 + i * 1000));
        await store.createKey(k);
        before.push(k);
      }
      let stop = false;
      let writes = 0;
      const writer = (async () => {
        for (let i = 0; !stop && i < 400; i++) {
          const victim = before[(i * 37) % before.length]!;
          const op = i % 4;
          if (op === 0) await store.createKey(key({ name: `new${i}`, account: `p${i % 5}@example.com` }, new Date()));
          else if (op === 1) await store.revokeKey(victim.id, new Date().toISOString());
          else if (op === 2) await store.rotateKey(victim.id, key({ account: victim.account, rotatedFrom: victim.id }), new Date().toISOString()).catch(() => {});
          else await store.replaceDeviceKey(key({ account: victim.account, deviceId: `dev${i % 30}` }, new Date()), new Date().toISOString());
          writes++;
          await new Promise((r) => setImmediate(r));
        }
      })();
      const seen: string[] = [];
      for await (const page of allPages((cursor) => store.listKeys({ limit: 7, cursor }))) {
        seen.push(...page.map((k) => k.id));
        await new Promise((r) => setTimeout(r, 1));
      }
      const seenInAccount: string[] = [];
      for await (const page of allPages((cursor) => store.listKeys({ account: 'p1@example.com', limit: 3, cursor }))) {
        seenInAccount.push(...page.map((k) => k.id));
        await new Promise((r) => setTimeout(r, 1));
      }
      stop = true;
      await writer;
      expect(writes).toBeGreaterThan(20);
      expect(new Set(seen).size).toBe(seen.length);
      for (const k of before) expect(seen.filter((id) => id === k.id)).toHaveLength(1);
      expect(new Set(seenInAccount).size).toBe(seenInAccount.length);
      for (const k of before.filter((x) => x.account === 'p1@example.com')) expect(seenInAccount).toContain(k.id);
    });
  });

  it(`${name}: the key limit refuses a write past it, names it, and counts only active keys`, async () => {
    await withStore(
      async (store) => {
        const now = new Date();
        const live = [key({ name: '1' }), key({ name: '2' }), key({ name: '3', deviceId: 'phone' })];
        for (const k of live) await store.createKey(k);
        const refused = await store.createKey(key({ name: '4' })).catch((e: unknown) => e);
        expect(refused).toBeInstanceOf(KeyLimitError);
        expect(refused).toMatchObject({ limit: 3, account: 'a@example.com' });
        expect((refused as Error).message).toMatch(/a@example\.com.*3 active keys.*limits\.keysPerAccount/);
        await expect(store.importKey(key({ name: 'imported' }))).rejects.toBeInstanceOf(KeyLimitError);
        await expect(store.replaceDeviceKey(key({ deviceId: 'tablet' }), now.toISOString())).rejects.toBeInstanceOf(KeyLimitError);
        expect((await store.activeKeys('a@example.com')).map((k) => k.name).sort()).toEqual(['1', '2', '3']);

        // Writes that add no active key go through: rotation, the same device again, dead records, other accounts, unbound keys.
        const rotated = key({ name: '1', rotatedFrom: live[0]!.id });
        await store.rotateKey(live[0]!.id, rotated, now.toISOString());
        const { key: phone } = await store.replaceDeviceKey(key({ name: '3', deviceId: 'phone' }), now.toISOString());
        expect(phone.rotatedFrom).toBe(live[2]!.id);
        expect(await store.importKey({ ...key({ name: 'old' }), revokedAt: at(1).toISOString() })).toBe('imported');
        expect(await store.importKey({ ...key({ name: 'expired' }), expiresAt: at(1).toISOString() })).toBe('imported');
        await store.createKey(key({ name: 'past', expiresAt: at(1).toISOString() }));
        await store.createKey(key({ account: 'b@example.com' }));
        await store.createKey(key({ account: null }));
        expect((await store.countKeys(now)).active).toBe(5);

        // Bringing an expired key back by rotation adds one: refused at the limit.
        const expired = (await everyKey(store, { account: 'a@example.com', state: 'expired' }))[0]!;
        await expect(store.rotateKey(expired.id, key({ rotatedFrom: expired.id }), now.toISOString())).rejects.toBeInstanceOf(KeyLimitError);
        // A refused write changes nothing; revoking one makes room.
        expect((await store.getKey(expired.id))?.revokedAt).toBeNull();
        await store.revokeKey(live[1]!.id, now.toISOString());
        await store.createKey(key({ name: '4' }));
        await expect(store.createKey(key({ name: '5' }))).rejects.toBeInstanceOf(KeyLimitError);
      },
      { keysPerAccount: 3 },
    );
  });

  it(`${name}: 20 concurrent key creations for one account never pass the limit`, async () => {
    await withStore(
      async (store) => {
        const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => store.createKey(key({ name: `c${i}`, account: 'race@example.com' }))));
        expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(3);
        for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(KeyLimitError);
        const devices = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => store.replaceDeviceKey(key({ account: 'dev@example.com', deviceId: `d${i}` }), new Date().toISOString())));
        expect(devices.filter((r) => r.status === 'fulfilled')).toHaveLength(3);
        expect(await store.activeKeys('race@example.com')).toHaveLength(3);
        expect(await store.activeKeys('dev@example.com')).toHaveLength(3);
      },
      { keysPerAccount: 3 },
    );
  });

  if (target.openPeer) {
    const openPeer = target.openPeer.bind(target);
    it(`${name}: two instances creating keys for one account at once never pass the limit`, async () => {
      await withStore(
        async (store) => {
          const peer = await openPeer(store, { keysPerAccount: 3 });
          try {
            const results = await Promise.allSettled(Array.from({ length: 12 }, (_, i) => (i % 2 ? store : peer).createKey(key({ name: `c${i}`, account: 'race@example.com' }))));
            expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(3);
            expect(await peer.activeKeys('race@example.com')).toHaveLength(3);
          } finally {
            await peer.close();
          }
        },
        { keysPerAccount: 3 },
      );
    });
  }

  it(`${name}: pages accounts by address, by prefix, and those with a route of their own`, async () => {
    await withStore(async (store) => {
      const account = (address: string, upstream: Record<string, unknown> | null = null): AccountRecord => ({
        address,
        aliases: [],
        displayName: null,
        disabled: false,
        createdAt: at(0).toISOString(),
        upstream,
      });
      const addresses = ['zed@example.com', 'ann@example.com', 'anna@example.org', 'bob@example.com', 'annex@example.net', 'carl@example.com', 'zoë@example.com', 'zoëy@example.com', 'zoö@example.com'];
      for (const a of addresses) await store.createAccount(account(a, a.startsWith('b') || a === 'annex@example.net' ? { imap: { host: 'h' } } : null));
      await store.updateAccount('carl@example.com', { upstream: { smtp: { host: 'h' } } });
      await store.updateAccount('bob@example.com', { upstream: null });
      const collect = async (q: { addressPrefix?: string; withUpstream?: boolean }, limit: number): Promise<string[]> => {
        const out: string[] = [];
        for await (const page of allPages((cursor) => store.listAccounts({ ...q, limit, cursor }))) out.push(...page.map((a) => a.address));
        return out;
      };
      expect(await collect({}, 4)).toEqual([...addresses].sort());
      expect(await collect({ addressPrefix: 'ANN' }, 1)).toEqual(['ann@example.com', 'anna@example.org', 'annex@example.net']);
      expect(await collect({ addressPrefix: 'nobody' }, 5)).toEqual([]);
      expect(await collect({ addressPrefix: 'ZOË' }, 1)).toEqual(['zoë@example.com', 'zoëy@example.com']);
      expect(await collect({ withUpstream: true }, 1)).toEqual(['annex@example.net', 'carl@example.com']);
      expect((await store.listAccounts({ limit: 2 })).nextCursor).not.toBeNull();
      expect((await store.listAccounts({ limit: 9 })).nextCursor).toBeNull();
      await store.deleteAccount('carl@example.com', at(1).toISOString());
      expect(await collect({ withUpstream: true }, 10)).toEqual(['annex@example.net']);
      await expect(store.listAccounts({ cursor: Buffer.from('k1.1').toString('base64url') })).rejects.toBeInstanceOf(InvalidCursorError);
    });
  });
}
