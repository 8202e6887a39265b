/**
 * Control-plane benchmark: authenticated `GET /api/smtp-credentials` (a key
 * bound to the account, scope api:read; the account holds a handful of keys)
 * against the built server in a child process, SQLite store, loopback only.
 * autocannon at a few connection counts, each after a warm-up, for the
 * default log level (info: two lines per request) and for warn.
 * Prints a markdown table: requests/s, p50 and p99 latency.
 * Run: npm run bench:http   (BENCH_SECONDS=10, BENCH_CONNECTIONS=1,10,50, BENCH_LOG_LEVELS=info,warn)
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { freePort } from '../test/helpers/free-port.js';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

interface AutocannonResult {
  requests: { average: number; total: number };
  latency: { p50: number; p99: number; average: number };
  non2xx: number;
  errors: number;
  timeouts: number;
}
interface AutocannonClient {
  on(event: 'response', listener: (status: number, bytes: number, durationMs: number) => void): void;
}
type Autocannon = (opts: {
  url: string;
  connections: number;
  duration: number;
  headers?: Record<string, string>;
  setupClient?: (client: AutocannonClient) => void;
}) => Promise<AutocannonResult>;

const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;
const run = promisify(execFile);

const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const WARMUP_SECONDS = 2;
const CONNECTIONS = (process.env.BENCH_CONNECTIONS ?? '1,10,50').split(',').map(Number);
const LOG_LEVELS = (process.env.BENCH_LOG_LEVELS ?? 'info,warn').split(',');
const CLI = join(import.meta.dirname, '..', 'dist', 'cli.js');
const ACCOUNT = 'bench@example.com';

// Hard upper bound on the whole run, so a hung server can never keep it going.
const budgetMs = (LOG_LEVELS.length * CONNECTIONS.length * (SECONDS + WARMUP_SECONDS) + 90) * 1000;
const children = new Set<ChildProcess>();
const watchdog = setTimeout(() => {
  console.error(`bench: over its ${budgetMs / 1000} s budget; stopping`);
  for (const c of children) c.kill('SIGKILL');
  process.exit(1);
}, budgetMs);
watchdog.unref();

async function cli(dir: string, ...args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, [CLI, ...args, '--db.path', join(dir, 'keygate.db')], { timeout: 30_000 });
  return stdout.trim();
}

async function startServer(dir: string, port: number, logLevel: string): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [
      CLI,
      'serve',
      ...['--db.path', join(dir, 'keygate.db')],
      ...['--http.host', '127.0.0.1', '--http.port', String(port)],
      ...['--smtp.enabled', 'false', '--imap.enabled', 'false', '--pop3.enabled', 'false'],
      ...['--tls.dir', join(dir, 'certs')],
      ...['--rateLimit.credentials.max', '1000000000'],
      ...['--log.level', logLevel],
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  children.add(child);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  child.once('exit', () => children.delete(child));
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}: ${stderr.trim()}`);
    const ok = await fetch(`http://127.0.0.1:${port}/health`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return child;
    if (Date.now() > deadline) throw new Error(`server did not answer /health within 20 s: ${stderr.trim()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(killer);
}

/**
 * autocannon's own percentiles are whole milliseconds (its histogram holds
 * integers), too coarse on loopback; this records each response's time as
 * measured by autocannon (hrtime, fractional ms) and reports exact percentiles.
 */
async function measure(url: string, connections: number, headers: Record<string, string>) {
  const times: number[] = [];
  const r = await autocannon({
    url,
    connections,
    duration: SECONDS,
    headers,
    setupClient: (client) => client.on('response', (_status, _bytes, ms) => times.push(ms)),
  });
  times.sort((a, b) => a - b);
  const pct = (p: number) => times[Math.min(times.length - 1, Math.floor((p / 100) * times.length))] ?? NaN;
  return { rps: r.requests.average, p50: pct(50), p99: pct(99), bad: r.non2xx + r.errors + r.timeouts };
}

function cpuModel(): string {
  try {
    return /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? cpus()[0]?.model ?? 'unknown';
  } catch {
    return cpus()[0]?.model ?? 'unknown';
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-bench-http-'));
  const rows: string[] = [];
  try {
    const key = await cli(dir, 'tokens', 'issue', '-d', 'bench reader', '-s', 'api:read', '-a', ACCOUNT);
    for (const name of ['Thunderbird', 'iPhone', 'Laptop', 'Scanner']) await cli(dir, 'tokens', 'issue', '-d', name, '-s', 'smtp,imap', '-a', ACCOUNT);

    for (const level of LOG_LEVELS) {
      const port = await freePort();
      const child = await startServer(dir, port, level);
      try {
        const url = `http://127.0.0.1:${port}/api/smtp-credentials`;
        const headers = { authorization: `Bearer ${key}` };
        const probe = await fetch(url, { headers });
        const body = (await probe.json()) as { keys?: unknown[] };
        if (probe.status !== 200 || body.keys?.length !== 5) throw new Error(`probe failed: ${probe.status} ${JSON.stringify(body)}`);
        for (const connections of CONNECTIONS) {
          await autocannon({ url, connections, duration: WARMUP_SECONDS, headers });
          const m = await measure(url, connections, headers);
          rows.push(`| ${level} | ${connections} | ${Math.round(m.rps).toLocaleString('en-US')} | ${m.p50.toFixed(2)} | ${m.p99.toFixed(2)} | ${m.bad} |`);
          console.error(`log ${level}, ${connections} connections: ${Math.round(m.rps)} req/s`);
        }
      } finally {
        await stopServer(child);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  console.log(`\nAuthenticated \`GET /api/smtp-credentials\` (Bearer key, api:read, 5 keys listed; SQLite; rate limiter on), ${SECONDS} s per row after ${WARMUP_SECONDS} s warm-up`);
  console.log(`Machine: ${cpus().length} CPUs (${cpuModel()}), Node ${process.version}; server and autocannon on the same machine, 127.0.0.1\n`);
  console.log('| log level | connections | requests/s | p50 ms | p99 ms | non-2xx/errors |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
  for (const r of rows) console.log(r);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(`bench: ${(err as Error).message}`);
    for (const c of children) c.kill('SIGKILL');
    process.exit(1);
  },
);
