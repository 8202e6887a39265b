/**
 * `npm run bench:smtp`: SMTP submission, Keygate beside a private Postfix, in one run.
 *
 * 1. Login cycles (connect → greeting → EHLO → AUTH PLAIN → QUIT), plaintext
 *    on loopback: Keygate (SQLite store, audit on at info) against Postfix's
 *    submission smtpd authenticating through Dovecot's SASL service (tuned
 *    Dovecot, passwd-file with a {PLAIN} password: its cheapest check), both
 *    started here in temp dirs. Server CPU: Keygate's process; Postfix's and
 *    Dovecot's whole process trees (with exited children), added.
 * 2. Messages relayed: one 2 KB message per connection (EHLO, AUTH, MAIL,
 *    RCPT, DATA, QUIT) through Keygate to an upstream — the same Postfix's
 *    loopback relay port, discarding — beside the same messages sent to that
 *    port directly (no AUTH: the key check is Keygate's job).
 *
 * Knobs (environment): BENCH_SECONDS (measured seconds per cell, default
 * 3), BENCH_WARMUP (default 0.6), BENCH_WORKERS (load processes, default
 * 2), BENCH_ONLY (comma list: login,relay), BENCH_RELAY_C (relay
 * concurrencies, default 8,32), BENCH_UPSTREAM_CONNECTIONS (Keygate's
 * upstream.smtp.maxConnections, default 5 as shipped).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { dovecotAvailable, startDovecot } from '../test/helpers/dovecot.js';
import { POSTFIX, startPostfix } from '../test/helpers/postfix.js';
import { LoadPool, type LoadResult } from './lib/load.js';
import type { Target } from './lib/load-worker.js';
import { processCpu, treeCpu } from './lib/proc.js';
import { issueKey, startKeygate } from './lib/servers.js';
import { fmt, table } from './lib/stats.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 0.6);
const WORKERS = Number(process.env.BENCH_WORKERS ?? 2);
const ONLY = new Set((process.env.BENCH_ONLY ?? 'login,relay').split(','));
const LOGIN_CONCURRENCY = [1, 32];
const RELAY_CONCURRENCY = (process.env.BENCH_RELAY_C ?? '8,32').split(',').map(Number);
const ACCOUNT = 'bench@example.com';

interface Cell extends LoadResult {
  what: string;
  server: string;
  concurrency: number;
  cpu: number;
}

const progress = (msg: string): void => void process.stderr.write(`${msg}\n`);

async function measure(pool: LoadPool, cpuOf: () => number, target: Target, concurrency: number, labels: Pick<Cell, 'what' | 'server'>): Promise<Cell> {
  await pool.run(target, concurrency, WARMUP * 1000);
  const cpu0 = cpuOf();
  const r = await pool.run(target, concurrency, SECONDS * 1000);
  const cpu = cpuOf() - cpu0;
  progress(
    `  ${labels.what} ${labels.server} c=${concurrency}: ${fmt(r.cyclesPerSecond)}/s, ${fmt(r.cycles / cpu)} per CPU-s, p50 ${fmt(r.loginP50, 2)} ms` +
      `${r.errors ? `, ${r.errors} errors (${r.firstError})` : ''}`,
  );
  return { ...r, ...labels, concurrency, cpu };
}

function machine(): string {
  const c = cpus();
  return `${c.length} × ${c[0]?.model ?? 'CPU'}, ${fmt(totalmem() / 2 ** 30, 0)} GiB RAM, Linux ${release()}, Node ${process.version}`;
}

async function main(): Promise<void> {
  POSTFIX.assertCapable();
  if (!dovecotAvailable()) throw new Error('bench:smtp needs Dovecot (Debian: dovecot-imapd dovecot-pop3d dovecot-lmtpd)');
  const dir = mkdtempSync(join(tmpdir(), 'keygate-bench-smtp-'));
  const pool = new LoadPool(WORKERS);
  const cells: Cell[] = [];
  const started = Date.now();
  const load = loadavg();
  const dovecot = await startDovecot({ tuned: true, authListener: true });
  const postfix = await startPostfix({ saslPath: `inet:127.0.0.1:${dovecot.authPort}`, relay: true });
  try {
    const sqlite = ['--db.path', join(dir, 'keys.db')];
    const key = await issueKey(sqlite, ACCOUNT);
    const upstream = ['--upstream.smtp.host', '127.0.0.1', '--upstream.smtp.port', String(postfix.relayPort), '--upstream.smtp.tls', 'none', '--upstream.smtp.login', 'none', '--upstream.smtp.maxConnections', process.env.BENCH_UPSTREAM_CONNECTIONS ?? '5'];
    const keygate = await startKeygate(dir, 'keygate', sqlite, upstream);
    const postfixCpu = (): number => treeCpu(postfix.pid) + treeCpu(dovecot.pid);
    const dovecotUser = dovecot.users[0]!;
    try {
      if (ONLY.has('login')) {
        progress('Login cycles');
        for (const c of LOGIN_CONCURRENCY) {
          cells.push(await measure(pool, () => processCpu(keygate.pid), { protocol: 'smtp', port: keygate.ports.smtp, tls: false, creds: { user: ACCOUNT, pass: key } }, c, { what: 'login', server: 'keygate' }));
          const creds = { user: dovecotUser.user, pass: dovecotUser.password };
          cells.push(await measure(pool, postfixCpu, { protocol: 'smtp', port: postfix.port, tls: false, creds }, c, { what: 'login', server: 'postfix + dovecot sasl' }));
        }
      }
      if (ONLY.has('relay')) {
        progress('Messages relayed');
        for (const c of RELAY_CONCURRENCY) {
          const both = () => processCpu(keygate.pid) + treeCpu(postfix.pid);
          cells.push(
            await measure(pool, both, { protocol: 'smtp', script: 'smtpMessage', port: keygate.ports.smtp, tls: false, creds: { user: ACCOUNT, pass: key } }, c, { what: 'relay', server: 'keygate → postfix' }),
          );
          cells.push(
            await measure(pool, () => treeCpu(postfix.pid), { protocol: 'smtp', script: 'smtpMessageDirect', port: postfix.relayPort, tls: false, creds: { user: ACCOUNT, pass: '' } }, c, {
              what: 'relay',
              server: 'postfix directly',
            }),
          );
        }
      }
    } finally {
      await keygate.stop();
    }
  } finally {
    pool.close();
    await postfix.stop();
    await dovecot.stop();
    rmSync(dir, { recursive: true, force: true });
  }

  const after = loadavg();
  console.log('## SMTP submission (`npm run bench:smtp`)\n');
  console.log(
    `Machine: ${machine()}. Load average ${fmt(load[0]!, 1)} before, ${fmt(after[0]!, 1)} after. Plaintext on loopback; ${fmt(WARMUP, 1)} s warm-up, ${fmt(SECONDS, 1)} s measured per cell; load from ${WORKERS} forked processes. ` +
      'Keygate logs at info (one audit line per login). Postfix + Dovecot: CPU of both process trees.\n',
  );
  const logins = cells.filter((c) => c.what === 'login');
  if (logins.length) {
    console.log('### Login cycles (greeting, EHLO, AUTH PLAIN, QUIT)\n');
    console.log(
      table(
        ['server', 'c', 'cycles/s', 'server CPU ms / cycle', 'cycles / CPU-s', 'AUTH p50 ms', 'errors'],
        logins.map((c) => [c.server, String(c.concurrency), fmt(c.cyclesPerSecond), fmt((c.cpu / c.cycles) * 1000, 3), fmt(c.cycles / c.cpu), fmt(c.loginP50, 2), String(c.errors)]),
      ),
    );
  }
  const relays = cells.filter((c) => c.what === 'relay');
  if (relays.length) {
    console.log('\n### Messages (one 2 KB message per connection)\n');
    const direct = new Map(relays.filter((c) => c.server === 'postfix directly').map((c) => [c.concurrency, c.cyclesPerSecond]));
    console.log(
      table(
        ['path', 'c', 'messages/s', 'of direct', 'CPU ms / message (all servers)', 'MAIL→250 p50 ms', 'errors'],
        relays.map((c) => [
          c.server,
          String(c.concurrency),
          fmt(c.cyclesPerSecond),
          `${fmt((c.cyclesPerSecond / (direct.get(c.concurrency) ?? Number.NaN)) * 100, 0)} %`,
          fmt((c.cpu / c.cycles) * 1000, 3),
          fmt(c.loginP50, 2),
          String(c.errors),
        ]),
      ),
    );
  }
  console.log(`\n_Bench took ${fmt((Date.now() - started) / 1000, 0)} s._`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
