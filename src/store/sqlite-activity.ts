import type Database from 'better-sqlite3';
import type { ActivityStore, Delivery, EndpointStatus, HistoryBounds, LoginEntry, LoginQuery, NewLoginEntry, WebhookEndpoint } from './activity.js';

export const ACTIVITY_SCHEMA = `
CREATE TABLE IF NOT EXISTS login_accounts (
  id INTEGER PRIMARY KEY,
  account TEXT NOT NULL UNIQUE,
  n INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS logins (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  account_id INTEGER NOT NULL,
  at INTEGER NOT NULL,
  key_id TEXT,
  result TEXT NOT NULL,
  protocol TEXT NOT NULL,
  method TEXT,
  ip TEXT NOT NULL,
  reason TEXT,
  client_name TEXT,
  client_version TEXT,
  username TEXT,
  new_network INTEGER
);
CREATE INDEX IF NOT EXISTS logins_account ON logins(account_id, id);
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

/**
 * Moves entries from the first version's tables (one JSON text per entry
 * with the account's name, an index on time) to the columns above: a row a
 * third the size and an account's number instead of its name, and one index
 * fewer, are most of what an entry costs to write and to trim.
 */
const MIGRATE_JSON_HISTORY = `
INSERT INTO login_accounts (account, n) SELECT account, count(*) FROM login_history GROUP BY account;
INSERT INTO logins (id, account_id, at, key_id, result, protocol, method, ip, reason, client_name, client_version, username, new_network)
  SELECT h.id, a.id, h.at, h.key_id, h.result, json_extract(h.entry, '$.protocol'), json_extract(h.entry, '$.method'), json_extract(h.entry, '$.ip'),
    json_extract(h.entry, '$.reason'), json_extract(h.entry, '$.client.name'), json_extract(h.entry, '$.client.version'),
    json_extract(h.entry, '$.username'), json_extract(h.entry, '$.newNetwork')
  FROM login_history h JOIN login_accounts a ON a.account = h.account ORDER BY h.id;
DROP TABLE login_history;
DROP TABLE IF EXISTS login_history_counts;
`;

/** Entries per INSERT statement (12 values each, far below SQLite's limit of 32,766). */
const INSERT_ROWS = 100;
type LoginValue = string | number | null;

interface LoginRow {
  id: number;
  at: number;
  key_id: string | null;
  result: string;
  protocol: string;
  method: string | null;
  ip: string;
  reason: string | null;
  client_name: string | null;
  client_version: string | null;
  username: string | null;
  new_network: number | null;
}

function fromRow(r: LoginRow, account: string | null): LoginEntry {
  const client = r.client_name === null && r.client_version === null ? null : { ...(r.client_name !== null && { name: r.client_name }), ...(r.client_version !== null && { version: r.client_version }) };
  return {
    id: String(r.id),
    at: r.at,
    account,
    ...(r.username !== null && { username: r.username }),
    keyId: r.key_id,
    protocol: r.protocol,
    method: r.method,
    ip: r.ip,
    result: r.result as LoginEntry['result'],
    reason: r.reason,
    client,
    ...(r.new_network === 1 && { newNetwork: true }),
  };
}

/** How often, at most, entries past their retention are swept. */
const RETENTION_SWEEP_MS = 60_000;

/** The activity tables in the key store's own SQLite file; `run` maps errors as the store does. */
export class SqliteActivity implements ActivityStore {
  private lastSweep = 0;
  private readonly inserts = new Map<number, Database.Statement<LoginValue[]>>();
  private readonly q;

  constructor(
    private readonly db: Database.Database,
    private readonly run: <T>(fn: () => T) => T,
  ) {
    db.exec(ACTIVITY_SCHEMA);
    if (db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'login_history'").get()) db.transaction(() => db.exec(MIGRATE_JSON_HISTORY)).immediate();
    this.q = {

      // Entries per account are counted as they are written, so trimming to the cap costs the rows it removes, not a walk over the cap.
      // One statement for a batch's accounts ({"account": entries, …}): a thousand accounts are one call, not a thousand.
      count: db.prepare<[string], { account: string; id: number; n: number }>(
        'INSERT INTO login_accounts (account, n) SELECT key, value FROM json_each(?) WHERE true ON CONFLICT(account) DO UPDATE SET n = n + excluded.n RETURNING account, id, n',
      ),
      accountId: db.prepare<[string], { id: number }>('SELECT id FROM login_accounts WHERE account = ?'),
      setCount: db.prepare<[number, number]>('UPDATE login_accounts SET n = ? WHERE id = ?'),
      dropOldest: db.prepare<[number, number]>('DELETE FROM logins WHERE id IN (SELECT id FROM logins WHERE account_id = ? ORDER BY id LIMIT ?)'),
      // Ids follow time (entries are written as they come), so the expired entries are the ones below the oldest id still
      // in time: found walking up from the oldest row, without an index on time to keep up on every insert.
      sweep: db.prepare<[number, number], { account_id: number }>(
        'DELETE FROM logins WHERE id < coalesce((SELECT id FROM logins WHERE at >= ? ORDER BY id LIMIT 1), (SELECT max(id) + 1 FROM logins), 0) AND at < ? RETURNING account_id',
      ),
      uncount: db.prepare<[number, number]>('UPDATE login_accounts SET n = max(0, n - ?) WHERE id = ?'),
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

  /** An INSERT of `rows` entries in one statement (made once per size): the statement's own cost, not the row's, dominates a small insert. */
  private insertLogins(rows: number): Database.Statement<LoginValue[]> {
    let stmt = this.inserts.get(rows);
    if (!stmt) {
      const values = Array.from({ length: rows }, () => '(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)').join(', ');
      stmt = this.db.prepare<LoginValue[]>(`INSERT INTO logins (account_id, at, key_id, result, protocol, method, ip, reason, client_name, client_version, username, new_network) VALUES ${values}`);
      this.inserts.set(rows, stmt);
    }
    return stmt;
  }

  async appendLogins(entries: readonly NewLoginEntry[], bounds: HistoryBounds): Promise<void> {
    if (entries.length === 0) return;
    this.run(() =>
      this.db.transaction(() => {
        const added: Record<string, number> = Object.create(null) as Record<string, number>;
        for (const e of entries) added[e.account ?? ''] = (added[e.account ?? ''] ?? 0) + 1;
        // Count first: the count's row numbers the account for its entries.
        const ids = new Map<string, number>();
        const over: Array<[number, number]> = [];
        for (const row of this.q.count.all(JSON.stringify(added))) {
          ids.set(row.account, row.id);
          if (row.n > bounds.maxPerAccount) over.push([row.id, row.n - bounds.maxPerAccount]);
        }
        for (let i = 0; i < entries.length; i += INSERT_ROWS) {
          const chunk = entries.slice(i, i + INSERT_ROWS);
          const values: LoginValue[] = [];
          for (const e of chunk) {
            values.push(ids.get(e.account ?? '')!, e.at, e.keyId, e.result, e.protocol, e.method, e.ip, e.reason, e.client?.name ?? null, e.client?.version ?? null, e.username ?? null, e.newNetwork ? 1 : null);
          }
          this.insertLogins(chunk.length).run(...values);
        }
        for (const [id, excess] of over) {
          this.q.dropOldest.run(id, excess);
          this.q.setCount.run(bounds.maxPerAccount, id);
        }
        const now = Date.now();
        if (now - this.lastSweep >= RETENTION_SWEEP_MS) {
          this.lastSweep = now;
          const cutoff = now - bounds.retentionMs;
          const gone = new Map<number, number>();
          for (const { account_id: id } of this.q.sweep.all(cutoff, cutoff)) gone.set(id, (gone.get(id) ?? 0) + 1);
          for (const [id, n] of gone) this.q.uncount.run(n, id);
        }
      })(),
    );
  }

  async listLogins(query: LoginQuery, bounds: HistoryBounds): Promise<{ entries: LoginEntry[]; next: string | null }> {
    return this.run(() => {
      const account = this.q.accountId.get(query.account ?? '');
      if (!account) return { entries: [], next: null };
      const where = ['account_id = ?', 'at >= ?'];
      const params: (string | number)[] = [account.id, Math.max(query.since ?? 0, Date.now() - bounds.retentionMs)];
      if (query.keyId !== undefined) (where.push('key_id = ?'), params.push(query.keyId));
      if (query.result !== undefined) (where.push('result = ?'), params.push(query.result));
      if (query.before !== undefined) (where.push('id < ?'), params.push(Number(query.before) || 0));
      const rows = this.db.prepare<(string | number)[], LoginRow>(`SELECT * FROM logins WHERE ${where.join(' AND ')} ORDER BY id DESC LIMIT ?`).all(...params, query.limit + 1);
      const page = rows.slice(0, query.limit).map((r) => fromRow(r, query.account));
      return { entries: page, next: rows.length > query.limit ? page.at(-1)!.id : null };
    });
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
