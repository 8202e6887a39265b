/**
 * Key-store benchmark: lookups/s by hash (hit and miss) and last-use
 * touches/s, single process, after a warm-up, for SQLite and (when
 * redis-server is installed) a private Redis on loopback.
 * Run: npm run bench:store
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { hashKey } from '../src/keys/format.js';
import { newKey } from '../src/keys/new-key.js';
import { allPages, PAGE_MAX } from '../src/store/paging.js';
import { openRedisStore } from '../src/store/redis.js';
import { openSqliteStore } from '../src/store/sqlite.js';
import type { KeyStore } from '../src/store/types.js';
import { freePort } from '../test/helpers/free-port.js';

const KEYS = 10_000;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const CONCURRENCY = 32;

/** Runs `op` with `CONCURRENCY` operations in flight for `seconds`; returns ops/s. */
async function rate(seconds: number, op: (i: number) => Promise<unknown> | unknown): Promise<number> {
  let n = 0;
  const end = performance.now() + seconds * 1000;
  const worker = async () => {
    while (performance.now() < end) await op(n++);
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return n / ((performance.now() - t0) / 1000);
}

async function measure(name: string, store: KeyStore): Promise<string[]> {
  const hashes: string[] = [];
  for (let i = 0; i < KEYS; i++) {
    const { key, record } = newKey({ name: `bench ${i}`, scopes: ['imap'], account: `u${i % 500}@example.com` });
    await store.createKey(record);
    hashes.push(hashKey(key));
  }
  const ids: string[] = [];
  for await (const page of allPages((cursor) => store.listKeys({ cursor, limit: PAGE_MAX }))) ids.push(...page.map((k) => k.id));
  const misses = Array.from({ length: 1000 }, (_, i) => hashKey(`kg_missing_${i}`));

  await rate(1, (i) => store.findByHash(hashes[i % KEYS]!)); // warm-up
  const hit = await rate(SECONDS, (i) => store.findByHash(hashes[(i * 7919) % KEYS]!));
  const miss = await rate(SECONDS, (i) => store.findByHash(misses[i % misses.length]!));

  // touchKey is the auth path's cost (buffered); flushes are the store's cost.
  let touches = 0;
  const t0 = performance.now();
  const touchEnd = t0 + SECONDS * 1000;
  while (performance.now() < touchEnd) {
    for (let j = 0; j < 1000; j++) store.touchKey(ids[(touches + j) % ids.length]!, { at: new Date().toISOString(), ip: '127.0.0.1', protocol: 'imap' });
    touches += 1000;
    if (touches % 20_000 === 0) await store.flushTouches();
  }
  await store.flushTouches();
  const touchRate = touches / ((performance.now() - t0) / 1000);

  // Flush throughput: distinct keys written per second by one coalesced batch.
  for (const id of ids) store.touchKey(id, { at: new Date().toISOString(), ip: '127.0.0.1', protocol: 'smtp' });
  const f0 = performance.now();
  await store.flushTouches();
  const flushRate = ids.length / ((performance.now() - f0) / 1000);

  const fmt = (x: number) => Math.round(x).toLocaleString('en-US');
  return [`| ${name} | ${fmt(hit)} | ${fmt(miss)} | ${fmt(touchRate)} | ${fmt(flushRate)} |`];
}

async function startRedis(): Promise<{ url: string; child: ChildProcess; dir: string } | null> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'keygate-bench-redis-'));
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const ok = await new Promise<boolean>((resolve) => {
    child.once('error', () => resolve(false));
    setTimeout(() => resolve(true), 300);
  });
  return ok ? { url: `redis://127.0.0.1:${port}`, child, dir } : null;
}

const rows: string[] = [];
const dir = mkdtempSync(join(tmpdir(), 'keygate-bench-'));
try {
  const sqlite = openSqliteStore(join(dir, 'bench.db'), { touchIntervalMs: 60_000 });
  rows.push(...(await measure('SQLite (WAL, file)', sqlite)));
  await sqlite.close();

  const redis = await startRedis();
  if (redis) {
    const store = await openRedisStore(redis.url, { touchIntervalMs: 60_000 });
    rows.push(...(await measure('Redis 7 (loopback)', store)));
    await store.close();
    redis.child.kill('SIGTERM');
    rmSync(redis.dir, { recursive: true, force: true });
  } else {
    console.warn('redis-server not found: Redis row skipped');
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

console.log(`\nKey store, ${KEYS.toLocaleString('en-US')} keys, ${CONCURRENCY} operations in flight, ${SECONDS} s per figure, one Node ${process.version} process`);
console.log(`Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}\n`);
console.log('| store | lookups/s (hit) | lookups/s (miss) | touchKey calls/s (buffered) | last-use rows written/s (flush) |');
console.log('| --- | ---: | ---: | ---: | ---: |');
for (const r of rows) console.log(r);
