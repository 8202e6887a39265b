import { randomUUID } from 'node:crypto';
import type { KeyRecord } from '../keys/record.js';
import { keySpec } from './redis-codec.js';
import type { RedisClient } from './redis-connect.js';

/*
 * Schema 1 → schema 2, run by openRedisStore before the store is used.
 *
 * Schema 1 (before the compact layout) kept each key as a hash of
 * JSON-encoded fields at {ns}:key:<id>, an index {ns}:hash:<sha256> → id,
 * and the zsets {ns}:keys and {ns}:acct-keys:<address> (member
 * "<seq, 16 digits>:<id>"). Accounts, aliases and values are unchanged in
 * schema 2.
 *
 * Nothing is lost and nothing is read twice: each batch moves up to 500 keys
 * in one script, each key only while it is still listed in {ns}:keys, so a
 * migration that stops half-way (a crash, a restart) resumes where it
 * stopped. One instance migrates at a time (a lock with a lifetime, renewed
 * per batch); the others wait for it. The order of keys (creation time, then
 * creation order) is kept. When every key has moved, {ns}:schema is set to 2,
 * and later starts only read that.
 */

const V1_FIELDS = ['id', 'hash', 'name', 'account', 'scopes', 'createdAt', 'expiresAt', 'allowedIps', 'revokedAt', 'lastUsedAt', 'lastUsedIp', 'lastUsedProtocol', 'platform', 'deviceId', 'rotatedFrom', 'canary', 'limits'] as const;
const BATCH = 500;
const LOCK_MS = 60_000;
const V1_MEMBER_PREFIX = 17; // "%016d:"

export interface MigrationContext {
  client: RedisClient;
  /** "{ns}:" */
  prefix: string;
  /** Runs one of the store's scripts (header added by the caller). */
  script(name: 'kgMigrateKeys', keys: string[], args: string[]): Promise<unknown>;
  log(message: string, details: Record<string, unknown>): void;
}

/** A schema-1 record (JSON-encoded fields) as a KeyRecord; null when the hash is gone. */
export function parseV1Key(h: Record<string, string>): KeyRecord | null {
  if (h.id === undefined) return null;
  const out: Record<string, unknown> = {};
  for (const f of V1_FIELDS) out[f] = h[f] === undefined ? null : JSON.parse(h[f]);
  // Records written before the guard fields have none: not a canary, no limits.
  out.canary = out.canary === true;
  return out as unknown as KeyRecord;
}

/** Brings the store's data to schema 2; resolves at once when it is there. */
export async function migrateToSchema2(ctx: MigrationContext): Promise<void> {
  const { client, prefix: p } = ctx;
  if (await isCurrent(client, p)) return;
  const token = randomUUID();
  for (;;) {
    if ((await client.set(`${p}migrate-lock`, token, 'PX', LOCK_MS, 'NX')) === 'OK') break;
    ctx.log('Another Keygate instance is migrating the Redis store; waiting', {});
    while ((await client.exists(`${p}migrate-lock`)) === 1) await sleep(250);
    if (await isCurrent(client, p)) return;
  }
  try {
    const total = await client.zcard(`${p}keys`);
    if (total > 0) ctx.log('Migrating the Redis store to schema 2', { keys: total });
    let moved = 0;
    for (;;) {
      const members = await client.zrange(`${p}keys`, 0, String(BATCH - 1));
      if (members.length === 0) break;
      const pipe = client.pipeline();
      for (const m of members) pipe.hgetall(`${p}key:${m.slice(V1_MEMBER_PREFIX)}`);
      const hashes = (await pipe.exec()) ?? [];
      const args: string[] = [];
      let n = 0;
      const dangling: string[] = [];
      members.forEach((member, i) => {
        const [err, h] = hashes[i] ?? [new Error('no reply'), null];
        if (err) throw err;
        const record = parseV1Key((h ?? {}) as Record<string, string>);
        if (record === null) {
          dangling.push(member);
          return;
        }
        n++;
        args.push(member, record.hash, String(Number(member.slice(0, V1_MEMBER_PREFIX - 1))), ...keySpec(record));
      });
      if (dangling.length > 0) await client.zrem(`${p}keys`, ...dangling);
      if (n > 0) moved += Number(await ctx.script('kgMigrateKeys', [`${p}keys`], [String(n), ...args]));
      await client.pexpire(`${p}migrate-lock`, LOCK_MS);
      if (moved > 0 && moved % (BATCH * 20) === 0) ctx.log('Migrating the Redis store', { moved, of: total });
    }
    await indexAccountsWithUpstream(client, p);
    await client.set(`${p}schema`, '2');
    if (total > 0) ctx.log('Migrated the Redis store to schema 2', { keys: moved });
  } finally {
    if ((await client.get(`${p}migrate-lock`)) === token) await client.del(`${p}migrate-lock`);
  }
}

async function isCurrent(client: RedisClient, p: string): Promise<boolean> {
  const [schema, leftovers] = await Promise.all([client.get(`${p}schema`), client.exists(`${p}keys`)]);
  // Leftovers: keys a schema-1 instance wrote after the migration; moved at this start.
  return schema === '2' && leftovers === 0;
}

/** Schema 2 lists accounts with a route of their own, so start-up checks read those only. */
async function indexAccountsWithUpstream(client: RedisClient, p: string): Promise<void> {
  let after = '-';
  for (;;) {
    const addresses = await client.zrangebylex(`${p}accounts`, after, '+', 'LIMIT', 0, 1000);
    if (addresses.length === 0) return;
    const pipe = client.pipeline();
    for (const a of addresses) pipe.hget(`${p}account:${a}`, 'upstream');
    const res = (await pipe.exec()) ?? [];
    const routed = addresses.filter((_, i) => {
      const v = res[i]?.[1];
      return typeof v === 'string' && v !== 'null';
    });
    if (routed.length > 0) await client.zadd(`${p}upstream-accounts`, ...routed.flatMap((a) => ['0', a]));
    after = `(${addresses.at(-1)!}`;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
