import type { RedisClient } from './redis-connect.js';
import type { ActivityStore, Delivery, EndpointStatus, HistoryBounds, LoginEntry, LoginQuery, NewLoginEntry, WebhookEndpoint } from './activity.js';

/** Entries read per round trip while a filtered page is filled. */
const SCAN_CHUNK = 200;

/**
 * Takes due deliveries and leases them in one step, so two instances never
 * send the same delivery at once. KEYS: queue zset, delivery hash. ARGV: now, lease until, limit.
 */
const CLAIM_LUA = `
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], ARGV[2], id)
  local d = redis.call('HGET', KEYS[2], id)
  if d then table.insert(out, d) else redis.call('ZREM', KEYS[1], id) end
end
return out
`;

/**
 * Appends a batch of login entries in one call: the client builds one command
 * instead of an XADD per entry and an XTRIM and PEXPIRE per account.
 * KEYS: the accounts' streams. ARGV: cap, oldest id kept, lifetime ms, then
 * for each entry the index of its stream in KEYS and its JSON.
 */
const APPEND_LOGINS_LUA = `
local cap, oldest, ttl = ARGV[1], ARGV[2], ARGV[3]
for i = 4, #ARGV, 2 do
  redis.call('XADD', KEYS[tonumber(ARGV[i])], 'MAXLEN', '=', cap, '*', 'e', ARGV[i + 1])
end
for _, key in ipairs(KEYS) do
  redis.call('XTRIM', key, 'MINID', oldest)
  -- An account that stops logging in loses its history with the retention, as a trimmed one would.
  redis.call('PEXPIRE', key, ttl)
end
return #KEYS
`;

/**
 * The activity of a Redis store, under its key prefix (one hash slot with
 * the rest, so Cluster runs the scripts): a capped stream of attempts per
 * account, a set of networks per key, the endpoints and a due-time sorted
 * set of deliveries.
 */
export class RedisActivity implements ActivityStore {
  constructor(
    private readonly client: RedisClient,
    private readonly p: string,
    private readonly run: <T>(fn: () => Promise<T>) => Promise<T>,
  ) {
    client.defineCommand('kgClaimDeliveries', { numberOfKeys: 2, lua: CLAIM_LUA });
    // No fixed key count: the caller passes it first.
    client.defineCommand('kgAppendLogins', { lua: APPEND_LOGINS_LUA });
  }

  private readonly k = {
    history: (account: string | null) => `${this.p}history:${account ?? ''}`,
    networks: (keyId: string) => `${this.p}networks:${keyId}`,
    endpoints: () => `${this.p}webhooks`,
    statuses: () => `${this.p}webhook-status`,
    queue: () => `${this.p}webhook-queue`,
    deliveries: () => `${this.p}webhook-deliveries`,
  };

  async appendLogins(entries: readonly NewLoginEntry[], bounds: HistoryBounds): Promise<void> {
    if (entries.length === 0) return;
    await this.run(async () => {
      const keys: string[] = [];
      const index = new Map<string, string>();
      const args: string[] = [String(bounds.maxPerAccount), `${Math.max(0, Date.now() - bounds.retentionMs)}-0`, String(bounds.retentionMs)];
      for (const e of entries) {
        const key = this.k.history(e.account);
        let i = index.get(key);
        if (i === undefined) index.set(key, (i = String(keys.push(key))));
        args.push(i, JSON.stringify(e));
      }
      await (this.client as unknown as { kgAppendLogins(n: number, ...a: string[]): Promise<number> }).kgAppendLogins(keys.length, ...keys, ...args);
    });
  }

  async listLogins(query: LoginQuery, bounds: HistoryBounds): Promise<{ entries: LoginEntry[]; next: string | null }> {
    const since = Math.max(query.since ?? 0, Date.now() - bounds.retentionMs);
    return this.run(async () => {
      const key = this.k.history(query.account);
      const page: LoginEntry[] = [];
      let end = query.before !== undefined && /^\d+-\d+$/.test(query.before) ? `(${query.before}` : '+';
      // Filters are applied while reading newest first; the stream is capped, so this ends.
      for (;;) {
        const chunk = await this.client.xrevrange(key, end, `${since}-0`, 'COUNT', SCAN_CHUNK);
        for (const [id, fields] of chunk) {
          const e = { ...(JSON.parse(fields[1]!) as NewLoginEntry), id };
          if (query.keyId !== undefined && e.keyId !== query.keyId) continue;
          if (query.result !== undefined && e.result !== query.result) continue;
          if (e.at < since) continue;
          if (page.length === query.limit) return { entries: page, next: page.at(-1)!.id };
          page.push(e);
        }
        if (chunk.length < SCAN_CHUNK) return { entries: page, next: null };
        end = `(${chunk.at(-1)![0]}`;
      }
    });
  }

  async addNetwork(keyId: string, network: string): Promise<'first' | 'new' | 'seen'> {
    return this.run(async () => {
      const res = await this.client.multi().sadd(this.k.networks(keyId), network).scard(this.k.networks(keyId)).exec();
      const [added, count] = (res ?? []).map(([err, v]) => {
        if (err) throw err;
        return Number(v);
      });
      return added === 0 ? 'seen' : count === 1 ? 'first' : 'new';
    });
  }

  async putEndpoint(endpoint: WebhookEndpoint): Promise<void> {
    await this.run(() => this.client.hset(this.k.endpoints(), endpoint.id, JSON.stringify(endpoint)));
  }

  async listEndpoints(): Promise<WebhookEndpoint[]> {
    const all = await this.run(() => this.client.hgetall(this.k.endpoints()));
    return Object.keys(all)
      .sort()
      .map((id) => JSON.parse(all[id]!) as WebhookEndpoint);
  }

  async deleteEndpoint(id: string): Promise<boolean> {
    return this.run(async () => {
      const removed = await this.client.hdel(this.k.endpoints(), id);
      await this.client.hdel(this.k.statuses(), id);
      // Its queued deliveries are dropped as they come due (the sender finds no endpoint).
      return removed > 0;
    });
  }

  async setEndpointStatus(endpointId: string, status: EndpointStatus): Promise<void> {
    await this.run(() => this.client.hset(this.k.statuses(), endpointId, JSON.stringify(status)));
  }

  async endpointStatuses(ids: readonly string[]): Promise<(EndpointStatus | null)[]> {
    if (ids.length === 0) return [];
    const raw = await this.run(() => this.client.hmget(this.k.statuses(), ...ids));
    return raw.map((s) => (s ? (JSON.parse(s) as EndpointStatus) : null));
  }

  async pendingDeliveries(ids: readonly string[]): Promise<number[]> {
    if (ids.length === 0) return [];
    // Counted by reading the queue: it is short unless a receiver is down, and this is an operator's request.
    const all = await this.run(() => this.client.hvals(this.k.deliveries()));
    const counts = new Map<string, number>();
    for (const d of all) {
      const id = (JSON.parse(d) as Delivery).endpointId;
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    return ids.map((id) => counts.get(id) ?? 0);
  }

  async enqueue(deliveries: readonly Delivery[]): Promise<void> {
    if (deliveries.length === 0) return;
    await this.run(async () => {
      const m = this.client.multi();
      for (const d of deliveries) {
        m.hset(this.k.deliveries(), d.id, JSON.stringify(d));
        m.zadd(this.k.queue(), d.due, d.id);
      }
      const res = await m.exec();
      const failed = res?.find(([err]) => err);
      if (failed) throw failed[0];
    });
  }

  async claimDue(now: number, leaseMs: number, limit: number): Promise<Delivery[]> {
    const raw = await this.run(
      () => (this.client as unknown as { kgClaimDeliveries(...a: unknown[]): Promise<string[]> }).kgClaimDeliveries(this.k.queue(), this.k.deliveries(), now, now + leaseMs, limit),
    );
    return raw.map((d) => JSON.parse(d) as Delivery);
  }

  async finishDelivery(id: string): Promise<void> {
    await this.run(() => this.client.multi().zrem(this.k.queue(), id).hdel(this.k.deliveries(), id).exec());
  }

  async rescheduleDelivery(id: string, attempts: number, due: number): Promise<void> {
    await this.run(async () => {
      const raw = await this.client.hget(this.k.deliveries(), id);
      if (!raw) return;
      await this.client.multi().hset(this.k.deliveries(), id, JSON.stringify({ ...(JSON.parse(raw) as Delivery), attempts, due })).zadd(this.k.queue(), due, id).exec();
    });
  }
}
