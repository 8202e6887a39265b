/**
 * `npm run bench:auth`: login cycles (connect → greeting → login → logout)
 * against the built `keygate serve`, and the same IMAP and POP3 cycles
 * against a private Dovecot (defaults and tuned) when it is installed.
 *
 * Measures cycles/s, server CPU seconds per 1,000 cycles (from
 * /proc/PID/stat), the login command's p50/p99, at concurrency 1, 8 and 32,
 * plaintext and TLS, on SQLite and Redis; and PSS per idle logged-in IMAP
 * connection (1,000 connections). Load comes from forked worker processes,
 * never from the server's event loop. Prints markdown tables.
 *
 * Knobs (environment): BENCH_SECONDS (measured seconds per cell, default 2.5),
 * BENCH_WARMUP (seconds, default 0.6), BENCH_IDLE (idle connections, default
 * 1000), BENCH_WORKERS (load processes, default 2), BENCH_ONLY (comma list of
 * sections: keygate,redis,memory,dovecot,baseline), BENCH_PROTOCOLS (default
 * imap,pop3,smtp), BENCH_BEFORE (a checkout of an earlier commit, built: its
 * `keygate serve` runs beside this one in the Keygate and memory sections,
 * cell by cell in alternating order, and a before/after table is printed),
 * BENCH_HISTORY=compare (instead of BENCH_BEFORE: the "before" server is this
 * build with the login history off, `--events.history false`, to price
 * recording it), BENCH_REPEAT (measure each Keygate cell this many times and keep the
 * median by cycles per CPU-second, default 1), BENCH_TRANSPORTS (the
 * Keygate cells' transports, default plain,tls,resumed).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, release, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { createLogger } from '../src/log.js';
import { ensureSelfSigned } from '../src/tls/selfsigned.js';
import { dovecotAvailable, startDovecot } from '../test/helpers/dovecot.js';
import { LoadPool, type LoadResult } from './lib/load.js';
import type { Target } from './lib/load-worker.js';
import { processCpu, processPss, treeCpu, treePss } from './lib/proc.js';
import type { BenchProtocol } from './lib/protocols.js';
import { CLI, issueKey, sleep, startCanned, startKeygate, startRedis, type KeygateServer } from './lib/servers.js';
import { fmt, table } from './lib/stats.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 2.5);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 0.6);
const IDLE = Number(process.env.BENCH_IDLE ?? 1000);
const WORKERS = Number(process.env.BENCH_WORKERS ?? 2);
const ONLY = new Set((process.env.BENCH_ONLY ?? 'keygate,redis,memory,dovecot,baseline').split(','));
const CONCURRENCY = [1, 8, 32];
const PROTOCOLS = (process.env.BENCH_PROTOCOLS ?? 'imap,pop3,smtp').split(',') as BenchProtocol[];
const ACCOUNT = 'bench@example.com';
/** The build to compare against (BENCH_BEFORE), run in the same bench as this one. */
const HISTORY_COMPARE = process.env.BENCH_HISTORY === 'compare';
const BEFORE_CLI = HISTORY_COMPARE ? CLI : process.env.BENCH_BEFORE ? join(resolve(process.env.BENCH_BEFORE), 'dist', 'cli.js') : null;
/** What the "before" server runs with besides the store: the history off when that is what is compared. */
const BEFORE_EXTRA = HISTORY_COMPARE ? ['--events.history', 'false'] : [];
const BEFORE = HISTORY_COMPARE ? 'keygate (history off)' : 'keygate (before)';
const BEFORE_NAME = HISTORY_COMPARE ? 'history off' : process.env.BENCH_BEFORE;
const REPEAT = Math.max(1, Number(process.env.BENCH_REPEAT ?? 1));
/** The transports the Keygate cells run (BENCH_TRANSPORTS: plain, tls, resumed). */
const KEYGATE_TRANSPORTS = (process.env.BENCH_TRANSPORTS ?? 'plain,tls,resumed').split(',');
/** Dovecot's defaults cap a service at 100 processes; its default-mode memory run stays below that. */
const DOVECOT_DEFAULT_IDLE = 90;

interface Cell extends LoadResult {
  server: string;
  store: string;
  protocol: BenchProtocol;
  tls: boolean;
  /** TLS cells: each loop offers the ticket of its previous cycle (resumption) instead of a full handshake. */
  resume: boolean;
  concurrency: number;
  cpu: number;
}

/** Plaintext, TLS with a full handshake every cycle, TLS resuming the previous cycle's session. */
const TRANSPORTS = [
  { tls: false, resume: false },
  { tls: true, resume: false },
  { tls: true, resume: true },
] as const;
const transportName = (c: Pick<Cell, 'tls' | 'resume'>): string => (!c.tls ? 'plain' : c.resume ? 'TLS resumed' : 'TLS');

interface MemoryRow {
  server: string;
  transport: string;
  connections: number;
  before: number;
  after: number;
}

const progress = (msg: string): void => void process.stderr.write(`${msg}\n`);

/** One cell: warm up, then measure load and the server's CPU over the same window. */
async function measure(pool: LoadPool, cpuOf: () => number, target: Target, concurrency: number, labels: Pick<Cell, 'server' | 'store'>): Promise<Cell> {
  await pool.run(target, concurrency, WARMUP * 1000);
  const cpu0 = cpuOf();
  const r = await pool.run(target, concurrency, SECONDS * 1000);
  const cpu = cpuOf() - cpu0;
  const cell: Cell = { ...r, ...labels, protocol: target.protocol, tls: target.tls, resume: target.resume ?? false, concurrency, cpu };
  progress(
    `  ${labels.server}/${labels.store} ${target.protocol} ${transportName(cell)} c=${concurrency}: ${fmt(r.cyclesPerSecond)} cycles/s, ` +
      `${fmt((cpu / r.cycles) * 1000, 3)} CPU s/1k, ${fmt(r.cycles / cpu)} cycles/CPU-s, p50 ${fmt(r.loginP50, 2)} ms, p99 ${fmt(r.loginP99, 2)} ms` +
      `${target.resume ? `, ${fmt((r.resumed / Math.max(1, r.cycles)) * 100, 0)} % resumed` : ''}${r.errors ? `, ${r.errors} errors (${r.firstError})` : ''}`,
  );
  return cell;
}

function keygatePort(server: KeygateServer, protocol: BenchProtocol, tls: boolean): number {
  const p = server.ports;
  return { imap: tls ? p.imaps : p.imap, pop3: tls ? p.pop3s : p.pop3, smtp: tls ? p.smtps : p.smtp }[protocol];
}

/** Every Keygate cell, on each server given (this build, and the one before when compared), alternating which goes first. */
async function keygateCells(pool: LoadPool, servers: Array<{ label: string; server: KeygateServer }>, store: string, pass: string): Promise<Cell[]> {
  const cells: Cell[] = [];
  let turn = 0;
  for (const protocol of PROTOCOLS) {
    // Resumption matters where clients reconnect often (IMAP, POP3); SMTP cells stay capped by its greeting delay.
    for (const { tls, resume } of TRANSPORTS.filter((t) => (!t.resume || protocol !== 'smtp') && KEYGATE_TRANSPORTS.includes(!t.tls ? 'plain' : t.resume ? 'resumed' : 'tls'))) {
      for (const c of CONCURRENCY) {
        const runs = new Map<string, Cell[]>(servers.map((s) => [s.label, []]));
        for (let r = 0; r < REPEAT; r++) {
          const order = turn++ % 2 === 0 ? servers : [...servers].reverse();
          for (const { label, server } of order) {
            const target: Target = { protocol, port: keygatePort(server, protocol, tls), tls, resume, creds: { user: ACCOUNT, pass } };
            runs.get(label)!.push(await measure(pool, () => processCpu(server.pid), target, c, { server: label, store }));
          }
        }
        for (const measured of runs.values()) cells.push(median(measured));
      }
    }
  }
  return cells;
}

/** The run with the median cycles per CPU-second. */
function median(runs: Cell[]): Cell {
  return [...runs].sort((a, b) => a.cycles / a.cpu - b.cycles / b.cpu)[runs.length >> 1]!;
}

/** This build's server and, when compared, the one before, side by side. */
async function startCompared(dir: string, name: string, flags: string[]): Promise<Array<{ label: string; server: KeygateServer }>> {
  const servers = [{ label: 'keygate', server: await startKeygate(dir, name, flags) }];
  if (BEFORE_CLI) servers.push({ label: BEFORE, server: await startKeygate(dir, `${name}-before`, flags, BEFORE_EXTRA, BEFORE_CLI) });
  return servers;
}

/**
 * PSS growth while `count` logged-in connections sit idle, on a freshly
 * started server: a few cycles first (so code loaded on first use is not
 * charged to the connections), then PSS before, open and log in `count`
 * connections, let it settle, PSS after.
 */
async function idleMemory(pool: LoadPool, pss: () => number, target: Target, count: number, label: Omit<MemoryRow, 'connections' | 'before' | 'after'>): Promise<MemoryRow> {
  await pool.run(target, 1, 150);
  await sleep(1000);
  const before = pss();
  const held = await pool.hold(target, count);
  if (held.errors) progress(`  ${held.errors} connections failed to log in (${held.firstError})`);
  await sleep(3000);
  const after = pss();
  await pool.release();
  const row = { ...label, connections: held.held, before, after };
  progress(`  ${label.server} ${label.transport}: ${fmt((after - before) / held.held / 1024, 1)} KB per idle connection (${held.held} connections)`);
  return row;
}

function machine(): string {
  const version = (cmd: string, args: string[]): string => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8' }).trim().split('\n')[0]!;
    } catch {
      return 'not installed';
    }
  };
  const c = cpus();
  return [
    `${c.length} × ${c[0]?.model ?? 'CPU'}`,
    `${fmt(totalmem() / 2 ** 30, 0)} GiB RAM`,
    `Linux ${release()}`,
    `Node ${process.version}`,
    `Dovecot ${version('dovecot', ['--version'])}`,
    version('redis-server', ['--version']).replace(/^Redis server v=(\S+).*/, 'Redis $1'),
  ].join(', ');
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-bench-auth-'));
  const pool = new LoadPool(WORKERS);
  const cells: Cell[] = [];
  const memory: MemoryRow[] = [];
  const started = Date.now();
  try {
    const sqlite = ['--db.path', join(dir, 'keys.db')];
    const key = await issueKey(sqlite, ACCOUNT);
    // Every Keygate here makes or reuses this ECDSA P-256 self-signed pair (--tls.dir); Dovecot serves the same one.
    const pair = await ensureSelfSigned(join(dir, 'certs'), 'localhost', createLogger('silent'));
    const certificate = { certPath: pair.certPath, keyPath: pair.keyPath };

    if (ONLY.has('keygate')) {
      progress('Keygate, SQLite store');
      const servers = await startCompared(dir, 'keygate-sqlite', sqlite);
      try {
        cells.push(...(await keygateCells(pool, servers, 'sqlite', key)));
      } finally {
        await Promise.all(servers.map((s) => s.server.stop()));
      }
      // What the one audit line per login costs: the same cells with info logging off.
      progress('Keygate, SQLite store, log.level warn (no audit lines)');
      const quiet = await startKeygate(dir, 'keygate-quiet', sqlite, ['--log.level', 'warn']);
      try {
        for (const protocol of ['imap', 'pop3'] as const) {
          if (!PROTOCOLS.includes(protocol)) continue;
          const target: Target = { protocol, port: keygatePort(quiet, protocol, false), tls: false, creds: { user: ACCOUNT, pass: key } };
          cells.push(await measure(pool, () => processCpu(quiet.pid), target, 32, { server: 'keygate, log.level warn', store: 'sqlite' }));
        }
      } finally {
        await quiet.stop();
      }
    }

    if (ONLY.has('redis')) {
      progress('Keygate, Redis store');
      const redis = await startRedis(dir);
      try {
        const flags = ['--dbs.redis', redis.url];
        const redisKey = await issueKey(flags, ACCOUNT);
        const servers = await startCompared(dir, 'keygate-redis', flags);
        try {
          cells.push(...(await keygateCells(pool, servers, 'redis', redisKey)));
        } finally {
          await Promise.all(servers.map((s) => s.server.stop()));
        }
      } finally {
        await redis.stop();
      }
    }

    if (ONLY.has('memory')) {
      progress(`Memory per idle logged-in IMAP connection (${IDLE} connections)`);
      for (const tls of [false, true]) {
        for (const [label, cli] of [['keygate', undefined], ...(BEFORE_CLI ? [[BEFORE, BEFORE_CLI]] : [])] as const) {
          const server = await startKeygate(dir, `keygate-memory-${tls ? 'tls' : 'plain'}${cli ? '-before' : ''}`, sqlite, cli ? BEFORE_EXTRA : [], cli);
          try {
            const target: Target = { protocol: 'imap', port: tls ? server.ports.imaps : server.ports.imap, tls, creds: { user: ACCOUNT, pass: key } };
            memory.push(await idleMemory(pool, () => processPss(server.pid), target, IDLE, { server: label, transport: tls ? 'TLS' : 'plaintext' }));
          } finally {
            await server.stop();
          }
        }
      }
    }

    if (ONLY.has('baseline')) {
      progress('Baseline: bare Node server with canned IMAP replies');
      const canned = await startCanned();
      try {
        const target: Target = { protocol: 'imap', port: canned.port, tls: false, creds: { user: ACCOUNT, pass: 'x' } };
        memory.push(await idleMemory(pool, () => processPss(canned.pid), target, IDLE, { server: 'canned node', transport: 'plaintext' }));
        for (const c of CONCURRENCY) cells.push(await measure(pool, () => processCpu(canned.pid), target, c, { server: 'canned node', store: '–' }));
      } finally {
        await canned.stop();
      }
      // The same canned replies over Node's own tls.Server with its defaults and the same certificate: the TLS floor in Node.
      const cannedTls = await startCanned(certificate);
      try {
        for (const { resume } of TRANSPORTS.filter((t) => t.tls)) {
          for (const c of CONCURRENCY) {
            const target: Target = { protocol: 'imap', port: cannedTls.port, tls: true, resume, creds: { user: ACCOUNT, pass: 'x' } };
            cells.push(await measure(pool, () => processCpu(cannedTls.pid), target, c, { server: 'canned node', store: '–' }));
          }
        }
      } finally {
        await cannedTls.stop();
      }
    }

    if (ONLY.has('dovecot') && dovecotAvailable()) {
      for (const tuned of [true, false]) {
        const mode = tuned ? 'dovecot tuned' : 'dovecot default';
        progress(`${mode}`);
        const users = [{ user: ACCOUNT, password: 'bench-password' }];
        const creds = { user: ACCOUNT, pass: 'bench-password' };
        // Memory first, on a fresh instance; then the cycles on another.
        const fresh = await startDovecot({ users, tuned });
        try {
          const target: Target = { protocol: 'imap', port: fresh.imapPort, tls: false, creds };
          memory.push(await idleMemory(pool, () => treePss(fresh.pid), target, tuned ? IDLE : DOVECOT_DEFAULT_IDLE, { server: mode, transport: 'plaintext' }));
        } finally {
          await fresh.stop();
        }
        // Tuned Dovecot also over TLS, with Keygate's own certificate (implicit-TLS IMAP, full and resumed).
        const dovecot = await startDovecot({ users, tuned, ...(tuned && { ssl: true, sslFiles: certificate }) });
        try {
          for (const protocol of ['imap', 'pop3'] as const) {
            for (const c of CONCURRENCY) {
              const target: Target = { protocol, port: protocol === 'imap' ? dovecot.imapPort : dovecot.pop3Port, tls: false, creds };
              cells.push(await measure(pool, () => treeCpu(dovecot.pid), target, c, { server: mode, store: 'passwd-file' }));
            }
          }
          for (const { resume } of tuned ? TRANSPORTS.filter((t) => t.tls) : []) {
            for (const c of CONCURRENCY) {
              const target: Target = { protocol: 'imap', port: dovecot.imapsPort, tls: true, resume, creds };
              cells.push(await measure(pool, () => treeCpu(dovecot.pid), target, c, { server: mode, store: 'passwd-file' }));
            }
          }
        } finally {
          await dovecot.stop();
        }
      }
    } else if (ONLY.has('dovecot')) {
      progress('Dovecot not installed: skipping the comparison');
    }
  } finally {
    pool.close();
    rmSync(dir, { recursive: true, force: true });
  }

  report(cells, memory, (Date.now() - started) / 1000);
}

function report(cells: Cell[], memory: MemoryRow[], seconds: number): void {
  const perCpu = (c: Cell): number => c.cycles / c.cpu;
  const resumed = (c: Cell): string => (c.resume ? `${fmt((c.resumed / Math.max(1, c.cycles)) * 100, 0)} %` : '–');
  const row = (c: Cell): Array<string | number> => [
    fmt(c.cyclesPerSecond),
    fmt((c.cpu / c.cycles) * 1000, 3),
    fmt(perCpu(c)),
    fmt(c.loginP50, 2),
    fmt(c.loginP99, 2),
    resumed(c),
    c.errors,
  ];
  const out: string[] = [];
  const verdicts: string[] = [];
  out.push(`## Login cycles (connect → greeting → login → logout)\n`);
  out.push(
    `Machine: ${machine()}. Each cell: ${WARMUP} s warm-up, ${SECONDS} s measured; load from ${WORKERS} forked worker processes; ` +
      `TLS: implicit TLS with the same self-signed ECDSA P-256 certificate everywhere, a full handshake every cycle, or (TLS resumed) each client loop offering the ticket of its previous cycle; server logs at info to a file.\n`,
  );
  const keygate = cells.filter((c) => c.server === 'keygate');
  if (keygate.length) {
    out.push(
      table(
        ['store', 'protocol', 'transport', 'c', 'cycles/s', 'server CPU s / 1k cycles', 'cycles / CPU-s', 'login p50 ms', 'login p99 ms', 'resumed', 'errors'],
        keygate.map((c) => [c.store, c.protocol, transportName(c), c.concurrency, ...row(c)]),
      ),
    );
  }
  const pairs = keygate.flatMap((after) => {
    const before = cells.find((b) => b.server === BEFORE && b.store === after.store && b.protocol === after.protocol && b.tls === after.tls && b.resume === after.resume && b.concurrency === after.concurrency);
    return before ? [{ before, after }] : [];
  });
  if (pairs.length) {
    out.push(`\n### Before / after (${BEFORE_NAME}, same run, cells alternating)\n`);
    out.push(
      table(
        ['store', 'protocol', 'transport', 'c', 'cycles/s before', 'after', 'CPU s / 1k before', 'after', 'cycles / CPU-s after ÷ before', 'p50 ms before', 'after'],
        pairs.map(({ before, after }) => [
          after.store,
          after.protocol,
          transportName(after),
          after.concurrency,
          fmt(before.cyclesPerSecond),
          fmt(after.cyclesPerSecond),
          fmt((before.cpu / before.cycles) * 1000, 3),
          fmt((after.cpu / after.cycles) * 1000, 3),
          `${fmt(perCpu(after) / perCpu(before), 2)}×`,
          fmt(before.loginP50, 2),
          fmt(after.loginP50, 2),
        ]),
      ),
    );
    const ratios = pairs.map(({ before, after }) => perCpu(after) / perCpu(before));
    const geo = Math.exp(ratios.reduce((a, r) => a + Math.log(r), 0) / ratios.length);
    verdicts.push(`Cycles per CPU-second after ÷ before, geometric mean over ${pairs.length} cells: ${fmt(geo, 3)}×`);
  }
  const others = cells.filter((c) => c.server !== 'keygate' && c.server !== BEFORE);
  if (others.length) {
    out.push(`\n### Reference servers\n`);
    out.push(
      table(
        ['server', 'protocol', 'transport', 'c', 'cycles/s', 'server CPU s / 1k cycles', 'cycles / CPU-s', 'login p50 ms', 'login p99 ms', 'resumed', 'errors'],
        others.map((c) => [c.server, c.protocol, transportName(c), c.concurrency, ...row(c)]),
      ),
    );
  }

  const find = (server: string, protocol: string, c: number, store?: string): Cell | undefined =>
    cells.find((x) => x.server === server && x.protocol === protocol && x.concurrency === c && !x.tls && (store === undefined || x.store === store));
  const ratioRows: Array<Array<string | number>> = [];
  for (const protocol of ['imap', 'pop3'] as const) {
    for (const c of CONCURRENCY) {
      const k = find('keygate', protocol, c, 'sqlite');
      const t = find('dovecot tuned', protocol, c);
      const d = find('dovecot default', protocol, c);
      if (!k || (!t && !d)) continue;
      ratioRows.push([
        protocol,
        c,
        fmt(perCpu(k)),
        t ? fmt(perCpu(t)) : '–',
        t ? `${fmt(perCpu(k) / perCpu(t), 2)}×` : '–',
        d ? fmt(perCpu(d)) : '–',
        d ? `${fmt(perCpu(k) / perCpu(d), 2)}×` : '–',
        t ? `${fmt(k.cyclesPerSecond / t.cyclesPerSecond, 2)}×` : '–',
      ]);
      if (c === 32 && t) verdicts.push(`${protocol.toUpperCase()} cycles per CPU-second at c=32: ${fmt(perCpu(k) / perCpu(t), 2)}× tuned Dovecot (target ≥ 2×): ${perCpu(k) >= 2 * perCpu(t) ? 'met' : 'MISSED'}`);
    }
  }
  if (ratioRows.length) {
    out.push(`\n### Keygate (SQLite, plaintext) / Dovecot\n`);
    out.push(table(['protocol', 'c', 'Keygate cycles/CPU-s', 'tuned Dovecot', 'ratio', 'default Dovecot', 'ratio', 'cycles/s ratio (tuned)'], ratioRows));
  }

  const tlsRows: Array<Array<string | number>> = [];
  for (const resume of [false, true]) {
    for (const c of CONCURRENCY) {
      const pick = (server: string): Cell | undefined =>
        cells.find((x) => x.server === server && x.protocol === 'imap' && x.tls && x.resume === resume && x.concurrency === c && (server !== 'keygate' || x.store === 'sqlite'));
      const k = pick('keygate');
      const d = pick('dovecot tuned');
      const n = pick('canned node');
      if (!k) continue;
      tlsRows.push([
        resume ? 'TLS resumed' : 'TLS',
        c,
        fmt(perCpu(k)),
        d ? fmt(perCpu(d)) : '–',
        d ? `${fmt(perCpu(k) / perCpu(d), 2)}×` : '–',
        n ? fmt(perCpu(n)) : '–',
        n ? `${fmt((perCpu(k) / perCpu(n)) * 100, 0)} %` : '–',
        fmt(k.cyclesPerSecond),
        d ? fmt(d.cyclesPerSecond) : '–',
      ]);
      const goal = resume ? 5000 : 3000;
      if (c === 32) verdicts.push(`IMAP login over ${resume ? 'resumed TLS' : 'TLS with a full ECDSA handshake'}, c=32: ${fmt(perCpu(k))} cycles per server CPU-second (target ≥ ${fmt(goal)}): ${perCpu(k) >= goal ? 'met' : 'MISSED'}`);
    }
  }
  if (tlsRows.length) {
    out.push(`\n### IMAP over implicit TLS: Keygate (SQLite), tuned Dovecot and the canned Node server, same certificate\n`);
    out.push(table(['transport', 'c', 'Keygate cycles/CPU-s', 'tuned Dovecot', 'Keygate / Dovecot', 'canned Node TLS', 'Keygate / canned', 'Keygate cycles/s', 'Dovecot cycles/s'], tlsRows));
  }

  if (memory.length) {
    out.push(`\n## Memory per idle logged-in IMAP connection (PSS, /proc/PID/smaps_rollup; Dovecot: summed over its processes)\n`);
    out.push(
      table(
        ['server', 'transport', 'connections', 'PSS before MB', 'PSS after MB', 'KB per connection'],
        memory.map((m) => [m.server, m.transport, m.connections, fmt(m.before / 2 ** 20, 1), fmt(m.after / 2 ** 20, 1), fmt((m.after - m.before) / m.connections / 1024, 1)]),
      ),
    );
    const perConnection = (m: MemoryRow): number => (m.after - m.before) / m.connections / 1024;
    const plain = memory.find((m) => m.server === 'keygate' && m.transport === 'plaintext');
    if (plain) {
      const kb = perConnection(plain);
      verdicts.push(`Idle logged-in plaintext IMAP connection: ${fmt(kb, 1)} KB (target ≤ 30 KB): ${kb <= 30 ? 'met' : 'MISSED'}`);
    }
    for (const m of memory.filter((x) => x.server === BEFORE)) {
      const now = memory.find((x) => x.server === 'keygate' && x.transport === m.transport);
      if (now) verdicts.push(`Idle logged-in ${m.transport} IMAP connection, before → after: ${fmt(perConnection(m), 1)} → ${fmt(perConnection(now), 1)} KB`);
    }
  }
  if (verdicts.length) out.push(`\n### Targets\n\n${verdicts.map((v) => `- ${v}`).join('\n')}`);
  out.push(`\n_Bench took ${fmt(seconds)} s._`);
  process.stdout.write(`${out.join('\n')}\n`);
}

await main();
