/**
 * Login-history benchmark: the CPU one recorded login attempt costs the
 * process (queueing on the login path, building the entry, the batched store
 * write, trimming past an account's cap), measured in-process where
 * bench:auth's with/without comparison drowns in machine noise. Beside it,
 * the same loop with the history off, so the figure is the history's alone.
 * SQLite, and Redis when redis-server is installed.
 * Shapes: one account taking every login (always at its cap: the worst
 * case), and logins spread over 1,000 accounts.
 * Run: npm run bench:history (BENCH_ATTEMPTS, default 30,000 per cell)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AttemptRecord } from '../src/auth/attempt.js';
import { loadConfig } from '../src/config.js';
import { LoginHistory } from '../src/events/history.js';
import { createLogger } from '../src/log.js';
import { openRedisStore } from '../src/store/redis.js';
import { openSqliteStore } from '../src/store/sqlite.js';
import type { KeyStore } from '../src/store/types.js';
import { redisAvailable, redisCli, startRedis, type RedisServer } from '../test/helpers/redis-server.js';

const ATTEMPTS = Number(process.env.BENCH_ATTEMPTS ?? 30_000);
/** 200 attempts every 20 ms: 10,000 logins a second, beyond what one instance serves (bench:auth). */
const BURST = 200;
const BURST_MS = 20;

function attempt(i: number, accounts: number): AttemptRecord {
  const failed = i % 10 === 0;
  return {
    ip: `198.51.100.${i % 200}`,
    client: { name: 'Thunderbird', version: '128.0' },
    at: Date.now(),
    account: `user${i % accounts}@example.com`,
    keyId: failed ? null : `k${i % accounts}`,
    protocol: 'imap',
    method: null,
    result: failed ? 'failure' : 'success',
    reason: failed ? 'unknown_key' : null,
  };
}

/** CPU µs per attempt: `record` for each (yielding as a server would), then the final write. */
async function cpuPerAttempt(history: LoginHistory | null, accounts: number): Promise<number> {
  const t0 = process.cpuUsage();
  for (let i = 0; i < ATTEMPTS; i++) {
    const a = attempt(i, accounts);
    history?.record(a);
    if (i % BURST === BURST - 1) await sleep(BURST_MS);
  }
  await history?.flush();
  const c = process.cpuUsage(t0);
  return (c.user + c.system) / ATTEMPTS;
}

/** redis-server's own CPU so far, µs (INFO cpu). */
async function redisCpu(redis: RedisServer): Promise<number> {
  const info = await redisCli(redis.port, 'INFO', 'cpu');
  const field = (name: string): number => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1] ?? NaN);
  return (field('used_cpu_user') + field('used_cpu_sys')) * 1e6;
}

async function cell(store: KeyStore, accounts: number, redis: RedisServer | null): Promise<{ on: number; off: number; server: number | null }> {
  const config = loadConfig({ env: {}, flags: {} });
  const history = new LoginHistory(store, createLogger('warn'), config.events, { raise() {} } as never);
  // Warm up, and fill the single account to its cap so every write also trims.
  await cpuPerAttempt(history, accounts);
  const on: number[] = [];
  const off: number[] = [];
  const server: number[] = [];
  for (let round = 0; round < 3; round++) {
    const before = redis ? await redisCpu(redis) : 0;
    on.push(await cpuPerAttempt(history, accounts));
    if (redis) server.push(((await redisCpu(redis)) - before) / ATTEMPTS);
    off.push(await cpuPerAttempt(null, accounts));
  }
  const median = (xs: number[]): number => xs.sort((a, b) => a - b)[1]!;
  return { on: median(on), off: median(off), server: redis ? median(server) : null };
}

const dir = mkdtempSync(join(tmpdir(), 'keygate-bench-history-'));
const rows: string[] = [];
const redis = redisAvailable() ? await startRedis() : null;
try {
  const stores: Array<[string, () => Promise<KeyStore>, RedisServer | null]> = [['sqlite', async () => openSqliteStore(join(dir, `h${rows.length}.db`)), null]];
  if (redis) stores.push(['redis', () => openRedisStore(redis.url, { namespace: `h${rows.length}` }), redis]);
  else console.warn('redis-server not found: Redis row skipped');
  for (const [kind, open, server] of stores) {
    for (const accounts of [1, 1000]) {
      const store = await open();
      try {
        const c = await cell(store, accounts, server);
        const shape = accounts === 1 ? 'one account, at its cap' : '1,000 accounts';
        rows.push(`| ${kind} | ${shape} | ${(c.on - c.off).toFixed(2)} | ${c.server === null ? '–' : c.server.toFixed(2)} | ${c.off.toFixed(2)} |`);
      } finally {
        await store.close();
      }
    }
  }
} finally {
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
}

console.log(`\n${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version}, ${ATTEMPTS.toLocaleString('en')} attempts per cell, median of 3\n`);
console.log('| store | shape | Keygate CPU µs / attempt | redis-server CPU µs / attempt | loop alone µs / attempt |');
console.log('| --- | --- | ---: | ---: | ---: |');
for (const r of rows) console.log(r);
