import type Database from 'better-sqlite3';
import type { ActivityStore, Delivery, EndpointStatus, HistoryBounds, LoginEntry, LoginQuery, NewLoginEntry, WebhookEndpoint } from './activity.js';

export const ACTIVITY_SCHEMA = `
CREATE TABLE IF NOT EXISTS login_history (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  account TEXT NOT NULL,
  at INTEGER NOT NULL,
  entry TEXT NOT NULL,
  key_id TEXT,
  result TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS login_history_account ON login_history(account, id);
CREATE INDEX IF NOT EXISTS login_history_at ON login_history(at);
CREATE TABLE IF NOT EXISTS login_history_counts (
  account TEXT PRIMARY KEY,
  n INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS key_networks (
  key_id TEXT NOT NULL,
  network TEXT NOT NULL,
  first_at INTEGER NOT NULL,
  PRIMARY KEY (key_id, network)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS webhooks (
  id TEXT PRIMARY KEY,
  endpoint TEXT NOT NULL,
  status TEXT
);
CREATE TABLE IF NOT EXISTS webhook_queue (
  id TEXT PRIMARY KEY,
  endpoint_id TEXT NOT NULL,
  due INTEGER NOT NULL,
  delivery TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_queue_due ON webhook_queue(due);
CREATE INDEX IF NOT EXISTS webhook_queue_endpoint ON webhook_queue(endpoint_id);
`;

/** How often, at most, entries past their retention are swept. */
const RETENTION_SWEEP_MS = 60_000;

/** The activity tables in the key store's own SQLite file; `run` maps errors as the store does. */
export class SqliteActivity implements ActivityStore {
  private lastSweep = 0;
  private readonly q;

  constructor(
    private readonly db: Database.Database,
    private readonly run: <T>(fn: () => T) => T,
  ) {
    db.exec(ACTIVITY_SCHEMA);
    this.q = {
      insertLogin: db.prepare<[string, number, string, string | null, string]>('INSERT INTO login_history (account, at, entry, key_id, result) VALUES (?, ?, ?, ?, ?)'),
      // Entries per account are counted as they are written, so trimming to the cap costs the rows it removes, not a walk over the cap.
      count: db.prepare<[string, number], { n: number }>(
        'INSERT INTO login_history_counts VALUES (?, ?) ON CONFLICT(account) DO UPDATE SET n = n + excluded.n RETURNING n',
      ),
      setCount: db.prepare<[number, string]>('UPDATE login_history_counts SET n = ? WHERE account = ?'),
      dropOldest: db.prepare<[string, number]>('DELETE FROM login_history WHERE id IN (SELECT id FROM login_history WHERE account = ? ORDER BY id LIMIT ?)'),
      sweep: db.prepare<[number], { account: string }>('DELETE FROM login_history WHERE at < ? RETURNING account'),
      uncount: db.prepare<[number, string]>('UPDATE login_history_counts SET n = max(0, n - ?) WHERE account = ?'),
      addNetwork: db.prepare<[string, string, number]>('INSERT INTO key_networks VALUES (?, ?, ?) ON CONFLICT DO NOTHING'),
      anyNetwork: db.prepare<[string, string], { n: number }>('SELECT count(*) AS n FROM (SELECT 1 FROM key_networks WHERE key_id = ? AND network <> ? LIMIT 1)'),
      putEndpoint: db.prepare<[string, string]>('INSERT INTO webhooks (id, endpoint) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET endpoint = excluded.endpoint'),
      endpoints: db.prepare<[], { endpoint: string }>("SELECT endpoint FROM webhooks WHERE endpoint <> '' ORDER BY id"),
      deleteEndpoint: db.prepare<[string]>('DELETE FROM webhooks WHERE id = ?'),
      deleteEndpointQueue: db.prepare<[string]>('DELETE FROM webhook_queue WHERE endpoint_id = ?'),
      // A configured endpoint has no row of its own: its status row has an empty endpoint.
      setStatus: db.prepare<[string, string]>("INSERT INTO webhooks (id, endpoint, status) VALUES (?, '', ?) ON CONFLICT(id) DO UPDATE SET status = excluded.status"),
      status: db.prepare<[string], { status: string | null }>('SELECT status FROM webhooks WHERE id = ?'),
      pending: db.prepare<[string], { n: number }>('SELECT count(*) AS n FROM webhook_queue WHERE endpoint_id = ?'),
      enqueue: db.prepare<[string, string, number, string]>('INSERT OR IGNORE INTO webhook_queue VALUES (?, ?, ?, ?)'),
      due: db.prepare<[number, number], { id: string; delivery: string }>('SELECT id, delivery FROM webhook_queue WHERE due <= ? ORDER BY due, id LIMIT ?'),
      lease: db.prepare<[number, string]>('UPDATE webhook_queue SET due = ? WHERE id = ?'),
      finish: db.prepare<[string]>('DELETE FROM webhook_queue WHERE id = ?'),
      reschedule: db.prepare<[number, string, string]>('UPDATE webhook_queue SET due = ?, delivery = ? WHERE id = ?'),
      get: db.prepare<[string], { delivery: string }>('SELECT delivery FROM webhook_queue WHERE id = ?'),
    };
  }

  async appendLogins(entries: readonly NewLoginEntry[], bounds: HistoryBounds): Promise<void> {
    if (entries.length === 0) return;
    this.run(() =>
      this.db.transaction(() => {
        const added = new Map<string, number>();
        for (const e of entries) {
          const account = e.account ?? '';
          added.set(account, (added.get(account) ?? 0) + 1);
          this.q.insertLogin.run(account, e.at, JSON.stringify(e), e.keyId, e.result);
        }
        for (const [account, n] of added) {
          const total = this.q.count.get(account, n)!.n;
          if (total <= bounds.maxPerAccount) continue;
          this.q.dropOldest.run(account, total - bounds.maxPerAccount);
          this.q.setCount.run(bounds.maxPerAccount, account);
        }
        const now = Date.now();
        if (now - this.lastSweep >= RETENTION_SWEEP_MS) {
          this.lastSweep = now;
          const gone = new Map<string, number>();
          for (const { account } of this.q.sweep.all(now - bounds.retentionMs)) gone.set(account, (gone.get(account) ?? 0) + 1);
          for (const [account, n] of gone) this.q.uncount.run(n, account);
        }
      })(),
    );
  }

  async listLogins(query: LoginQuery, bounds: HistoryBounds): Promise<{ entries: LoginEntry[]; next: string | null }> {
    const where = ['account = ?', 'at >= ?'];
    const params: (string | number)[] = [query.account ?? '', Math.max(query.since ?? 0, Date.now() - bounds.retentionMs)];
    if (query.keyId !== undefined) (where.push('key_id = ?'), params.push(query.keyId));
    if (query.result !== undefined) (where.push('result = ?'), params.push(query.result));
    if (query.before !== undefined) (where.push('id < ?'), params.push(Number(query.before) || 0));
    const rows = this.run(() =>
      this.db
        .prepare<(string | number)[], { id: number; entry: string }>(`SELECT id, entry FROM login_history WHERE ${where.join(' AND ')} ORDER BY id DESC LIMIT ?`)
        .all(...params, query.limit + 1),
    );
    const page = rows.slice(0, query.limit).map((r) => ({ ...(JSON.parse(r.entry) as NewLoginEntry), id: String(r.id) }));
    return { entries: page, next: rows.length > query.limit ? page.at(-1)!.id : null };
  }

  async addNetwork(keyId: string, network: string, at: number): Promise<'first' | 'new' | 'seen'> {
    return this.run(() =>
      this.db.transaction(() => {
        if (this.q.addNetwork.run(keyId, network, at).changes === 0) return 'seen' as const;
        return this.q.anyNetwork.get(keyId, network)!.n > 0 ? ('new' as const) : ('first' as const);
      })(),
    );
  }

  async putEndpoint(endpoint: WebhookEndpoint): Promise<void> {
    this.run(() => this.q.putEndpoint.run(endpoint.id, JSON.stringify(endpoint)));
  }

  async listEndpoints(): Promise<WebhookEndpoint[]> {
    return this.run(() => this.q.endpoints.all().map((r) => JSON.parse(r.endpoint) as WebhookEndpoint));
  }

  async deleteEndpoint(id: string): Promise<boolean> {
    return this.run(() =>
      this.db.transaction(() => {
        this.q.deleteEndpointQueue.run(id);
        return this.q.deleteEndpoint.run(id).changes > 0;
      })(),
    );
  }

  async setEndpointStatus(endpointId: string, status: EndpointStatus): Promise<void> {
    this.run(() => this.q.setStatus.run(endpointId, JSON.stringify(status)));
  }

  async endpointStatuses(ids: readonly string[]): Promise<(EndpointStatus | null)[]> {
    return this.run(() =>
      ids.map((id) => {
        const s = this.q.status.get(id)?.status;
        return s ? (JSON.parse(s) as EndpointStatus) : null;
      }),
    );
  }

  async pendingDeliveries(ids: readonly string[]): Promise<number[]> {
    return this.run(() => ids.map((id) => this.q.pending.get(id)!.n));
  }

  async enqueue(deliveries: readonly Delivery[]): Promise<void> {
    if (deliveries.length === 0) return;
    this.run(() =>
      this.db.transaction(() => {
        for (const d of deliveries) this.q.enqueue.run(d.id, d.endpointId, d.due, JSON.stringify(d));
      })(),
    );
  }

  async claimDue(now: number, leaseMs: number, limit: number): Promise<Delivery[]> {
    return this.run(() =>
      // One transaction: two processes on one file never lease the same delivery.
      this.db.transaction(() =>
        this.q.due.all(now, limit).map((r) => {
          this.q.lease.run(now + leaseMs, r.id);
          return JSON.parse(r.delivery) as Delivery;
        }),
      ).immediate(),
    );
  }

  async finishDelivery(id: string): Promise<void> {
    this.run(() => this.q.finish.run(id));
  }

  async rescheduleDelivery(id: string, attempts: number, due: number): Promise<void> {
    this.run(() => {
      const row = this.q.get.get(id);
      if (!row) return;
      this.q.reschedule.run(due, JSON.stringify({ ...(JSON.parse(row.delivery) as Delivery), attempts, due }), id);
    });
  }
}
