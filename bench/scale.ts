/**
 * Scale benchmark (issue 17): what listing, counting and looking up cost as
 * the store grows, on SQLite and on Redis.
 *
 * For each store and size (default 10,000, 100,000 and 1,000,000 keys, four
 * per account; 10 % revoked, 5 % expired, 5 % expiring later, 10 % device
 * keys) the store is filled through its own API in batches (not through
 * HTTP), then:
 *  - lookups: findByHash of random keys one at a time, p50/p99;
 *  - the server (control plane only, in a child process with
 *    perf_hooks.monitorEventLoopDelay) is started on the filled store: its
 *    start-up time, then a Prometheus scrape and pages of every list, first
 *    and middle, each timed from the client with the largest event-loop
 *    delay the server saw during it and the CPU time it used (no block of
 *    the event loop can be longer, whatever a loaded machine does to the
 *    wall-clock delay); the server's RSS at the end;
 *  - Redis: used_memory per key, all in and without the account records.
 * Prints markdown tables. Targets at a million keys: lookup p99 within 2× of
 * the 10,000-key figure, scrape < 50 ms, event-loop delay < 10 ms, a page
 * < 50 ms, RSS within 50 MB of the 10,000-key figure.
 *
 * Run: npm run bench:scale   (BENCH_SIZES=10000,100000,1000000  BENCH_STORES=sqlite,redis)
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { hashKey } from '../src/keys/format.js';
import { newKey } from '../src/keys/new-key.js';
import type { KeyRecord } from '../src/keys/record.js';
import { encodeAccountCursor, encodeKeyCursor, MAX_SEQ } from '../src/store/paging.js';
import { openRedisStore } from '../src/store/redis.js';
import { openSqliteStore } from '../src/store/sqlite.js';
import { ensureSelfSigned } from '../src/tls/selfsigned.js';
import { createLogger } from '../src/log.js';
import type { KeyStore } from '../src/store/types.js';
import { freePort } from '../test/helpers/free-port.js';
import { startRedis } from './lib/servers.js';
import { fmt, quantile, sortNumbers, table } from './lib/stats.js';

const SIZES = (process.env.BENCH_SIZES ?? '10000,100000,1000000').split(',').map(Number);
const STORES = (process.env.BENCH_STORES ?? 'sqlite,redis').split(',') as ('sqlite' | 'redis')[];
const KEYS_PER_ACCOUNT = 4;
const BATCH = 1000;
const LOOKUPS = 20_000;
const T0 = Date.parse('2025-01-01T00:00:00Z');
const NOW = Date.now();

interface Step {
  name: string;
  /** Median over the repeats, after one unmeasured warm-up. */
  ms: number;
  maxDelayMs: number;
  /** The largest over the repeats (scheduling noise on a loaded machine shows here). */
  worstDelayMs: number;
  /** Server CPU time during the request (median): no event-loop block can be longer. */
  cpuMs: number;
}

const REPEATS = 5;
const median = (xs: number[]): number => quantile(sortNumbers(xs), 0.5);

interface Row {
  store: string;
  keys: number;
  fillS: number;
  lookupP50Us: number;
  lookupP99Us: number;
  startupMs: number;
  steps: Step[];
  rssMb: number;
  rssAnonMb: number;
  bytesPerKey: number | null;
  bytesPerKeyWithoutAccounts: number | null;
  dbMb: number | null;
}

/** The i-th key of the fill: deterministic mix of states, four keys per account. */
function record(i: number, n: number): KeyRecord {
  const accounts = Math.max(1, Math.floor(n / KEYS_PER_ACCOUNT));
  const device = i % 10 === 3;
  const r = newKey(
    {
      name: `key ${i}`,
      scopes: ['smtp', 'imap', 'pop3'],
      account: `user${i % accounts}@example.com`,
      expiresAt: i % 20 === 1 ? new Date(NOW - 86_400_000).toISOString() : i % 20 === 2 ? new Date(NOW + 365 * 86_400_000).toISOString() : null,
      platform: device ? 'ios' : null,
      deviceId: device ? `device-${i}` : null,
    },
    new Date(T0 + i),
  ).record;
  return i % 10 === 0 ? { ...r, revokedAt: new Date(T0 + i + 1).toISOString() } : r;
}

/** Fills the store in batches of concurrent writes; returns sampled hashes for lookups. */
async function fill(store: KeyStore, n: number): Promise<string[]> {
  const every = Math.max(1, Math.floor(n / LOOKUPS));
  const sample: string[] = [];
  for (let start = 0; start < n; start += BATCH) {
    const batch: KeyRecord[] = [];
    for (let i = start; i < Math.min(n, start + BATCH); i++) {
      const r = record(i, n);
      batch.push(r);
      if (i % every === 0) sample.push(r.hash);
    }
    await Promise.all(batch.map((r) => store.importKey(r)));
  }
  return sample;
}

async function lookups(store: KeyStore, hashes: string[]): Promise<{ p50: number; p99: number }> {
  for (let i = 0; i < 2000; i++) await store.findByHash(hashes[(i * 7919) % hashes.length]!);
  const t: number[] = [];
  for (let i = 0; i < LOOKUPS; i++) {
    const h = hashes[(i * 104_729) % hashes.length]!;
    const s = performance.now();
    const found = await store.findByHash(h);
    t.push((performance.now() - s) * 1000);
    if (!found) throw new Error('lookup missed a stored key');
  }
  const sorted = sortNumbers(t);
  return { p50: quantile(sorted, 0.5), p99: quantile(sorted, 0.99) };
}

/** The server in a child process, on the filled store, with its event-loop monitor. */
async function startServer(flags: Record<string, unknown>): Promise<{ child: ChildProcess; startupMs: number; ask(type: string): Promise<Record<string, number>> }> {
  const child = fork(join(import.meta.dirname, 'lib', 'scale-server.ts'), [JSON.stringify(flags)], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const waiting: ((m: Record<string, number>) => void)[] = [];
  let ready: (m: Record<string, number>) => void = () => {};
  const readyP = new Promise<Record<string, number>>((r) => (ready = r));
  child.on('message', (m: Record<string, number> & { type: string }) => {
    if (m.type === 'ready') ready(m);
    else waiting.shift()?.(m);
  });
  child.once('exit', (code) => {
    if (code !== 0) console.error(`scale server exited with ${code}`);
  });
  const m = await readyP;
  return {
    child,
    startupMs: m.startupMs!,
    ask: (type) =>
      new Promise((resolve) => {
        waiting.push(resolve);
        child.send({ type });
      }),
  };
}

async function measure(kind: 'sqlite' | 'redis', n: number): Promise<Row> {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-scale-'));
  const redis = kind === 'redis' ? await startRedis(dir) : null;
  const path = join(dir, 'keygate.db');
  const probe = redis ? new Redis(redis.url) : null;
  const usedMemory = async (): Promise<number> => Number(/used_memory:(\d+)/.exec(await probe!.info('memory'))![1]);
  try {
    const store = kind === 'redis' ? await openRedisStore(redis!.url) : openSqliteStore(path);
    const memBefore = probe ? await usedMemory() : 0;
    const f0 = performance.now();
    const sample = await fill(store, n);
    const fillS = (performance.now() - f0) / 1000;
    let bytesPerKey: number | null = null;
    let bytesPerKeyWithoutAccounts: number | null = null;
    if (probe) {
      const total = (await usedMemory()) - memBefore;
      bytesPerKey = total / n;
      // The account records (one per four keys here) measured apart: MEMORY USAGE of a sample, and of the account list.
      const accounts = Math.max(1, Math.floor(n / KEYS_PER_ACCOUNT));
      let sampled = 0;
      const probes = Math.min(500, accounts);
      for (let i = 0; i < probes; i++) sampled += Number(await probe.call('MEMORY', 'USAGE', `{kg}:account:user${Math.floor((i * accounts) / probes)}@example.com`));
      const accountBytes = (sampled / probes) * accounts + Number(await probe.call('MEMORY', 'USAGE', '{kg}:accounts', 'SAMPLES', '0'));
      bytesPerKeyWithoutAccounts = (total - accountBytes) / n;
    }
    const { p50, p99 } = await lookups(store, sample);
    const admin = newKey({ name: 'bench admin', scopes: ['*'] }, new Date(T0 - 1000));
    const metrics = newKey({ name: 'bench metrics', scopes: ['metrics'] }, new Date(T0 - 1000));
    await store.createKey(admin.record);
    await store.createKey(metrics.record);
    if (hashKey(admin.key) !== admin.record.hash) throw new Error('unexpected key hash');
    await store.close();

    const port = await freePort();
    const server = await startServer({
      ...(kind === 'redis' ? { 'dbs.redis': redis!.url } : { 'db.path': path }),
      'http.port': port,
      'smtp.enabled': false,
      'imap.enabled': false,
      'pop3.enabled': false,
      'tls.dir': CERTS,
      'rateLimit.api.max': 1_000_000,
    });
    const base = `http://127.0.0.1:${port}`;
    const steps: Step[] = [];
    const step = async (name: string, url: string, key: string): Promise<void> => {
      const times: number[] = [];
      const delays: number[] = [];
      const cpu: number[] = [];
      for (let i = 0; i <= REPEATS; i++) {
        await server.ask('reset');
        const s = performance.now();
        const res = await fetch(`${base}${url}`, { headers: { authorization: `Bearer ${key}` } });
        await res.arrayBuffer();
        const ms = performance.now() - s;
        if (res.status !== 200) throw new Error(`${url}: ${res.status}`);
        const { maxDelayMs, cpuMs } = await server.ask('read');
        if (process.env.BENCH_VERBOSE) process.stderr.write(`  ${name} #${i}: ${ms.toFixed(1)} ms, loop delay ${maxDelayMs!.toFixed(1)} ms, CPU ${cpuMs!.toFixed(1)} ms\n`);
        if (i === 0) continue; // warm-up: first use of a route compiles its serializer
        times.push(ms);
        delays.push(maxDelayMs!);
        cpu.push(cpuMs!);
      }
      steps.push({ name, ms: median(times), maxDelayMs: median(delays), worstDelayMs: Math.max(...delays), cpuMs: median(cpu) });
    };
    // The middle of each list: a cursor at the key (or account) halfway through.
    const midKey = encodeKeyCursor({ ms: T0 + Math.floor(n / 2), seq: MAX_SEQ });
    const midAccount = encodeAccountCursor(`user${Math.floor(n / KEYS_PER_ACCOUNT / 2)}@example.com`);
    // The noise floor: a request that does nothing, on this machine as loaded now.
    await step('health (baseline)', '/health', metrics.key);
    await step('scrape', '/metrics', metrics.key);
    await step('tokens, first page', '/api/tokens', admin.key);
    await step('tokens, middle page', `/api/tokens?cursor=${midKey}`, admin.key);
    await step('tokens, 1,000 per page', '/api/tokens?limit=1000', admin.key);
    await step('tokens, active', `/api/tokens?state=active&cursor=${midKey}`, admin.key);
    await step('tokens, revoked', `/api/tokens?state=revoked&cursor=${midKey}`, admin.key);
    await step('tokens, name prefix matching none', '/api/tokens?namePrefix=none', admin.key);
    await step('tokens of one account', '/api/tokens?account=user5@example.com', admin.key);
    await step('accounts, first page', '/api/accounts', admin.key);
    await step('accounts, middle page', `/api/accounts?cursor=${midAccount}`, admin.key);
    await step("an account's keys (admin)", '/api/accounts/user5@example.com/smtp-credentials?state=all', admin.key);
    const { rss, rssAnon } = await server.ask('read');
    server.child.send({ type: 'stop' });
    await new Promise((r) => server.child.once('exit', r));
    return {
      store: kind === 'redis' ? 'Redis' : 'SQLite',
      keys: n,
      fillS,
      lookupP50Us: p50,
      lookupP99Us: p99,
      startupMs: server.startupMs,
      steps,
      rssMb: rss! / 1024 / 1024,
      rssAnonMb: rssAnon! / 1024 / 1024,
      bytesPerKey,
      bytesPerKeyWithoutAccounts,
      dbMb: kind === 'sqlite' ? statSync(path).size / 1024 / 1024 : null,
    };
  } finally {
    probe?.disconnect();
    await redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

// One self-signed certificate for every server start, so start-up times the store, not RSA key generation.
const CERTS = mkdtempSync(join(tmpdir(), 'keygate-scale-certs-'));
ensureSelfSigned(CERTS, 'localhost', createLogger('silent'));
const rows: Row[] = [];
const load0 = loadavg()[0]!;
for (const kind of STORES) {
  for (const n of SIZES) {
    process.stderr.write(`${kind}: ${n.toLocaleString('en-US')} keys…\n`);
    rows.push(await measure(kind, n));
  }
}

rmSync(CERTS, { recursive: true, force: true });
const THOUSAND = 'tokens, 1,000 per page';
const pageSteps = (r: Row) => r.steps.filter((s) => s.name !== 'scrape' && !s.name.startsWith('health') && s.name !== THOUSAND);
const find = (r: Row, name: string) => r.steps.find((s) => s.name.startsWith(name))!;
const delay = (s: Step) => `${fmt(s.maxDelayMs, 1)} (${fmt(s.cpuMs, 1)})`;
console.log(`\nScale, ${SIZES.map((n) => n.toLocaleString('en-US')).join(' / ')} keys (${KEYS_PER_ACCOUNT} per account), Node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? 'CPU'}, ${fmt(totalmem() / 2 ** 30)} GiB`);
console.log(`Load average (1 min) at start ${load0.toFixed(2)}, at end ${loadavg()[0]!.toFixed(2)}\n`);
console.log(
  table(
    [
      'store',
      'keys',
      'fill s',
      'lookup p50 / p99 µs',
      'scrape ms',
      'scrape loop delay (CPU) ms',
      'first / middle page ms',
      'slowest page ms',
      'page loop delay (CPU) ms',
      '1,000-item page ms, loop delay (CPU)',
      'idle loop delay ms',
      'start-up ms',
      'RSS (anon) MB',
      'Redis bytes/key (w/o accounts)',
    ],
    rows.map((r) => {
      const pages = pageSteps(r);
      const worst = pages.reduce((a, b) => (b.maxDelayMs > a.maxDelayMs || (b.maxDelayMs === a.maxDelayMs && b.cpuMs > a.cpuMs) ? b : a));
      const thousand = find(r, THOUSAND);
      return [
        r.store,
        fmt(r.keys),
        fmt(r.fillS, 1),
        `${fmt(r.lookupP50Us)} / ${fmt(r.lookupP99Us)}`,
        fmt(find(r, 'scrape').ms, 1),
        delay(find(r, 'scrape')),
        `${fmt(find(r, 'tokens, first page').ms, 1)} / ${fmt(find(r, 'tokens, middle page').ms, 1)}`,
        fmt(Math.max(...pages.map((s) => s.ms)), 1),
        delay(worst),
        `${fmt(thousand.ms, 1)}, ${delay(thousand)}`,
        fmt(find(r, 'health').maxDelayMs, 1),
        fmt(r.startupMs),
        `${fmt(r.rssMb)} (${fmt(r.rssAnonMb)})`,
        r.bytesPerKey === null ? '–' : `${fmt(r.bytesPerKey)} (${fmt(r.bytesPerKeyWithoutAccounts!)})`,
      ];
    }),
  ),
);
for (const r of rows.filter((x) => x.keys === Math.max(...SIZES))) {
  console.log(`\n${r.store}, ${fmt(r.keys)} keys, each request (median of ${REPEATS}: ms, the server's largest event-loop delay; and the largest delay of the ${REPEATS})${r.dbMb !== null ? `; database file ${fmt(r.dbMb)} MB` : ''}\n`);
  console.log(table(['request', 'ms', 'loop delay ms', 'worst loop delay ms', 'server CPU ms'], r.steps.map((s) => [s.name, fmt(s.ms, 1), fmt(s.maxDelayMs, 1), fmt(s.worstDelayMs, 1), fmt(s.cpuMs, 1)])));
}
