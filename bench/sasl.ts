/**
 * `npm run bench:sasl`: Dovecot-protocol `AUTH … PLAIN` exchanges per server
 * CPU-second, Keygate's SASL server (`saslServer.port`, a key checked per
 * request) beside Dovecot's own auth service answering the same protocol
 * from a passwd-file (what Postfix sites use today: `{PLAIN}` passwords, the
 * cheapest check Dovecot has, and `{SHA512-CRYPT}`, the usual stored form),
 * in one run, at concurrency 1, 8 and 32.
 *
 * Each concurrent loop is one connection held open the whole run (as each
 * Postfix smtpd process holds one), handshake once, then requests one after
 * another. Load comes from a forked process. Server CPU is read from
 * /proc (the whole Dovecot process tree). Prints a markdown table.
 *
 * Knobs (environment): BENCH_SECONDS (measured seconds per cell, default 3),
 * BENCH_WARMUP (default 0.6), BENCH_ONLY (comma list: keygate,dovecot,crypt,node).
 * BENCH_BEFORE (a checkout of an earlier commit, built: its Keygate runs
 * in the same run, rows `keygate (before)`).
 * The `node` rows are the floor: a bare Node server with canned replies
 * (bench/lib/sasl-canned-server.ts), what the socket I/O alone costs in Node.
 */
import { execFileSync, fork, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { dovecotAvailable, startDovecot } from '../test/helpers/dovecot.js';
import { canConnect, freePort } from '../test/helpers/free-port.js';
import { processCpu, treeCpu } from './lib/proc.js';
import type { SaslResult, SaslRun } from './lib/sasl-worker.js';
import { ROOT, issueKey, sleep, startKeygate } from './lib/servers.js';
import { fmt, quantile, sortNumbers, table } from './lib/stats.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 0.6);
const ONLY = new Set((process.env.BENCH_ONLY ?? 'keygate,node,dovecot,crypt').split(','));
const CONCURRENCY = [1, 8, 32];
const BEFORE_CLI = process.env.BENCH_BEFORE ? join(resolve(process.env.BENCH_BEFORE), 'dist', 'cli.js') : null;
const ACCOUNT = 'bench@example.com';
const DOVECOT_PASSWORD = 'bench-password-0123456789';

interface Cell {
  server: string;
  concurrency: number;
  exchanges: number;
  errors: number;
  firstError: string | null;
  seconds: number;
  cpu: number;
  p50: number;
  p99: number;
}

const progress = (msg: string): void => void process.stderr.write(`${msg}\n`);

/** The forked load process, reused for every cell. */
class SaslLoad {
  private readonly worker = fork(join(import.meta.dirname, 'lib', 'sasl-worker.ts'), [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });

  run(request: Omit<SaslRun, 'type'>): Promise<SaslResult> {
    return new Promise((resolve, reject) => {
      const onExit = (code: number | null): void => reject(new Error(`load worker exited (${code})`));
      this.worker.once('message', (msg: SaslResult) => {
        this.worker.off('exit', onExit);
        resolve(msg);
      });
      this.worker.once('exit', onExit);
      this.worker.send({ type: 'run', ...request });
    });
  }

  close(): void {
    this.worker.disconnect();
  }
}

async function waitForPort(port: number): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!(await canConnect(port))) {
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port}`);
    await sleep(50);
  }
}

async function measure(load: SaslLoad, server: string, cpuOf: () => number, port: number, pass: string, concurrency: number): Promise<Cell> {
  await load.run({ port, user: ACCOUNT, pass, concurrency, durationMs: WARMUP * 1000 });
  const cpu0 = cpuOf();
  const r = await load.run({ port, user: ACCOUNT, pass, concurrency, durationMs: SECONDS * 1000 });
  const cpu = cpuOf() - cpu0;
  const latencies = sortNumbers(r.latencies);
  const cell: Cell = { server, concurrency, exchanges: r.exchanges, errors: r.errors, firstError: r.firstError, seconds: r.elapsedMs / 1000, cpu, p50: quantile(latencies, 0.5), p99: quantile(latencies, 0.99) };
  progress(
    `  ${server} c=${concurrency}: ${fmt(r.exchanges / cell.seconds)} exchanges/s, ${fmt(r.exchanges / cpu)} per CPU-s, p50 ${fmt(cell.p50, 2)} ms, p99 ${fmt(cell.p99, 2)} ms` +
      (r.errors ? `, ${r.errors} errors (${r.firstError})` : ''),
  );
  return cell;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-bench-sasl-'));
  const load = new SaslLoad();
  const cells: Cell[] = [];
  const loadBefore = loadavg();
  try {
    if (ONLY.has('keygate')) {
      progress('Keygate SASL server, SQLite store');
      const sqlite = ['--db.path', join(dir, 'keys.db')];
      const key = await issueKey(sqlite, ACCOUNT);
      // As in production (an audit line per request, at info), and with log.level warn: what the audit line costs.
      const runs: [string, string[], string | undefined][] = [
        ...(BEFORE_CLI ? [['keygate (before)', [], BEFORE_CLI] as [string, string[], string]] : []),
        ['keygate', [], undefined],
        ['keygate, log.level warn', ['--log.level', 'warn'], undefined],
      ];
      for (const [label, extra, cli] of runs) {
        const port = await freePort();
        const server = await startKeygate(dir, label.replace(/\W+/g, '-'), sqlite, ['--saslServer.port', String(port), ...extra], cli);
        try {
          await waitForPort(port);
          for (const c of CONCURRENCY) cells.push(await measure(load, label, () => processCpu(server.pid), port, key, c));
        } finally {
          await server.stop();
        }
      }
    }
    if (ONLY.has('node')) {
      progress('Bare Node, canned replies (the floor)');
      const port = await freePort();
      const canned = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'lib', 'sasl-canned-server.ts'), String(port)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
      try {
        await new Promise<void>((resolve, reject) => {
          canned.stdout.once('data', () => resolve());
          canned.once('exit', (code) => reject(new Error(`canned server exited (${code})`)));
        });
        for (const c of CONCURRENCY) cells.push(await measure(load, 'node, canned replies', () => processCpu(canned.pid!), port, 'x', c));
      } finally {
        canned.kill('SIGTERM');
      }
    }
    for (const [section, scheme] of [['dovecot', 'PLAIN'], ['crypt', 'SHA512-CRYPT']] as const) {
      if (!ONLY.has(section)) continue;
      if (!dovecotAvailable()) {
        progress('Dovecot not installed: no anchor');
        break;
      }
      progress(`Dovecot auth service, passwd-file {${scheme}}`);
      const dovecot = await startDovecot({ users: [{ user: ACCOUNT, password: DOVECOT_PASSWORD }], authListener: true, passwordScheme: scheme, tuned: true });
      try {
        for (const c of CONCURRENCY) cells.push(await measure(load, `dovecot {${scheme}}`, () => treeCpu(dovecot.pid), dovecot.authPort, DOVECOT_PASSWORD, c));
      } finally {
        await dovecot.stop();
      }
    }
  } finally {
    load.close();
    rmSync(dir, { recursive: true, force: true });
  }

  const perCpu = (c: Cell): number => c.exchanges / c.cpu;
  const ratio = (c: Cell, anchor: string): string => {
    const a = cells.find((x) => x.server === anchor && x.concurrency === c.concurrency);
    return a ? `${fmt(perCpu(c) / perCpu(a), 2)}×` : '–';
  };
  const rows = cells.map((c) => [
    c.server,
    c.concurrency,
    fmt(c.exchanges / c.seconds),
    fmt(perCpu(c)),
    ratio(c, 'dovecot {PLAIN}'),
    ratio(c, 'dovecot {SHA512-CRYPT}'),
    fmt(c.p50, 2),
    fmt(c.p99, 2),
    c.errors,
  ]);
  const version = dovecotAvailable() ? execFileSync('dovecot', ['--version'], { encoding: 'utf8' }).trim().split(' ')[0] : 'none';
  console.log(
    `Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'CPU'}, ${fmt(totalmem() / 2 ** 30, 1)} GiB, Linux ${release()}, Node ${process.version}, Dovecot ${version}. ` +
      `Load average (1 min) ${fmt(loadBefore[0]!, 2)} before, ${fmt(loadavg()[0]!, 2)} after. Each cell: ${WARMUP} s warm-up, ${SECONDS} s measured; ` +
      'one connection per concurrent loop, held open; Keygate logs at info (one audit line per request) to a file.\n',
  );
  console.log(table(['server', 'c', 'exchanges/s', 'exchanges / CPU-s', 'vs {PLAIN}', 'vs {SHA512-CRYPT}', 'p50 ms', 'p99 ms', 'errors'], rows));
}

await main();
