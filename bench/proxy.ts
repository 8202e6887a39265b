/**
 * `npm run bench:proxy`: what the IMAP proxy backend costs. In one run, against
 * a private tuned Dovecot (1,000-message mailbox) and through Keygate (its
 * IMAP listener + the proxy backend, master login upstream):
 *
 * - `FETCH 1:* (BODY.PEEK[])` of the whole mailbox: MB/s;
 * - `SELECT INBOX` and `NOOP` round trips on one connection: p50/p99 latency;
 * - login cycles (IMAP connect → greeting → LOGIN → LOGOUT, POP3 greeting →
 *   USER → PASS → QUIT) at concurrency 1, 8 and 32, from forked load
 *   processes: cycles/s, and the CPU per login of Keygate and, as the anchor
 *   for a relay, of nginx's mail proxy (one process, auth answered statically
 *   by its own http block with the same master login) in front of the same
 *   Dovecot;
 * - idle logged-in IMAP sessions held open through Keygate and through
 *   nginx: PSS per session (of a second batch, after the first grew the
 *   heap), and Keygate's V8 heap + buffers per session after a full GC.
 *
 * Reports throughput ratios (Keygate / direct) and added p50 latency per
 * command. Targets: ≥ 90 % of direct throughput, added p50 < 0.2 ms.
 * Keygate runs in its own process (this file with `--serve`), Dovecot in its
 * own, the load in this one (and the forked workers for login cycles).
 *
 * Knobs (environment): BENCH_SECONDS (login cycles per cell, default 2.5),
 * BENCH_MESSAGES (default 1000), BENCH_MESSAGE_KB (default 10),
 * BENCH_ROUNDS (FETCH repetitions per side, default 30), BENCH_RTT (round trips per
 * command, default 2000), BENCH_WORKERS (default 2), BENCH_IDLE (idle sessions
 * held, default 1000), BENCH_PARTS (comma list of fetch, rtt, logins, idle;
 * default all), BENCH_CPU_PROF (a directory: Keygate runs with `--cpu-prof`
 * and writes its profile there when the bench stops it; with
 * BENCH_PARTS=logins the profile is the login load and start-up),
 * BENCH_CPU_PROF_INTERVAL (sampling interval, µs, default 200), BENCH_NODE_ARGS
 * (more Node flags for Keygate, e.g. `--perf-basic-prof`), BENCH_PID_FILE
 * (Keygate's pid is written there, for `perf record -p`), BENCH_DIST (another
 * build's dist/ to measure, e.g. a checkout of an earlier commit). Keygate
 * runs the build (dist/), as `keygate serve` does.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { connect, type Socket } from 'node:net';
import nodemailer from 'nodemailer';
import { dovecotAvailable, startDovecot, type RunningDovecot } from '../test/helpers/dovecot.js';
import { LoadPool } from './lib/load.js';
import { processCpu, processPss, processTimes } from './lib/proc.js';
import type { Target } from './lib/load-worker.js';
import { freePort, canConnect } from '../test/helpers/free-port.js';
import { NGINX, NGINX_MAIL_MODULE } from '../test/helpers/tools.js';
import { fmt, quantile, sortNumbers, table } from './lib/stats.js';
import { sleep, stopChild } from './lib/servers.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 2.5);
const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 1000);
const MESSAGE_KB = Number(process.env.BENCH_MESSAGE_KB ?? 10);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 30);
const RTT = Number(process.env.BENCH_RTT ?? 2000);
const WORKERS = Number(process.env.BENCH_WORKERS ?? 2);
const IDLE = Number(process.env.BENCH_IDLE ?? 1000);
const PARTS = new Set((process.env.BENCH_PARTS ?? 'fetch,rtt,logins,idle').split(',').map((p) => p.trim()));
const CPU_PROF = process.env.BENCH_CPU_PROF;
const ACCOUNT = 'bench@example.com';
const PASSWORD = 'bench-upstream-pw';
const MASTER = { user: 'keygate', password: 'bench-master-pw' };

const progress = (msg: string): void => void process.stderr.write(`${msg}\n`);

// ---------------------------------------------------------------------------
// Keygate child process: `tsx bench/proxy.ts --serve <json>`.

interface ServeArgs {
  dir: string;
  imapPort: number;
  pop3Port: number;
}

interface ServeReady {
  imap: number;
  pop3: number;
  key: string;
}

async function serve(args: ServeArgs): Promise<void> {
  // The build, as `keygate serve` runs it (tsx's transform adds work of its own to every closure).
  const dist = process.env.BENCH_DIST ?? join(import.meta.dirname, '..', 'dist');
  if (!existsSync(join(dist, 'server.js'))) throw new Error('no build: run `npm run build` (npm run bench:proxy does)');
  const load = <T>(path: string): Promise<T> => import(pathToFileURL(join(dist, path)).href) as Promise<T>;
  const { loadConfig } = await load<typeof import('../src/config.js')>('config.js');
  const { createLogger } = await load<typeof import('../src/log.js')>('log.js');
  const { createBackends } = await load<typeof import('../src/backends/index.js')>('backends/index.js');
  const { startServer } = await load<typeof import('../src/server.js')>('server.js');
  const { issueKey } = await load<typeof import('../src/services/keys.js')>('services/keys.js');
  const config = loadConfig({
    env: {},
    flags: {
      'db.path': join(args.dir, 'keygate.db'),
      'http.port': 0,
      'smtp.enabled': false,
      'imap.port': 0,
      'imap.securePort': 0,
      'pop3.port': 0,
      'pop3.securePort': 0,
      'tls.dir': join(args.dir, 'certs'),
      'limits.connectionsPerIp': 0,
      // Twice BENCH_IDLE sessions are held at once.
      'limits.connectionsPerListener': Math.max(1000, 2 * IDLE + 100),
      'log.level': 'warn',
      'upstream.imap.host': '127.0.0.1',
      'upstream.imap.port': args.imapPort,
      'upstream.imap.tls': 'none',
      'upstream.pop3.host': '127.0.0.1',
      'upstream.pop3.port': args.pop3Port,
      'upstream.pop3.tls': 'none',
      'upstream.master.user': MASTER.user,
      'upstream.master.password': MASTER.password,
    },
  });
  const logger = createLogger(config.log.level);
  const backends = createBackends(config, null, logger);
  const server = await startServer(config, logger, { backends });
  const { key } = await issueKey(server.store, 'operator', { name: 'bench', account: ACCOUNT, scopes: ['imap', 'pop3'] });
  const ready: ServeReady = { imap: server.listeners.get('imap').address().port, pop3: server.listeners.get('pop3').address().port, key };
  process.stdout.write(`${JSON.stringify(ready)}\n`);
  const stop = async (): Promise<void> => {
    await server.close();
    await backends.close();
    process.exit(0);
  };
  // The bench asks for a settled heap before reading memory: a full GC, then V8's own figures.
  process.on('SIGUSR2', () => {
    const gc = (globalThis as { gc?: () => void }).gc;
    gc?.();
    gc?.();
    writeFileSync(join(args.dir, 'memory.json'), JSON.stringify(process.memoryUsage()));
  });
  process.once('SIGTERM', () => void stop());
  process.once('SIGINT', () => void stop());
}

async function startKeygate(args: ServeArgs): Promise<{ child: ChildProcess; ready: ServeReady; stop(): Promise<void> }> {
  const prof = [
    ...(CPU_PROF ? ['--cpu-prof', '--cpu-prof-dir', CPU_PROF, '--cpu-prof-interval', process.env.BENCH_CPU_PROF_INTERVAL ?? '200'] : []),
    // e.g. --perf-basic-prof, for `perf record -p` on the pid in BENCH_PID_FILE.
    ...(process.env.BENCH_NODE_ARGS?.split(' ').filter(Boolean) ?? []),
  ];
  if (CPU_PROF) mkdirSync(CPU_PROF, { recursive: true });
  const child = spawn(process.execPath, [...prof, '--expose-gc', '--import', 'tsx', import.meta.filename, '--serve', JSON.stringify(args)], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, NODE_ENV: 'production' },
  });
  const ready = await new Promise<ServeReady>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(out.slice(0, nl)) as ServeReady);
    });
    child.once('exit', (code) => reject(new Error(`keygate exited (${code})`)));
  });
  if (process.env.BENCH_PID_FILE) writeFileSync(process.env.BENCH_PID_FILE, String(child.pid));
  return {
    child,
    ready,
    stop: () => stopChild(child, 'SIGTERM', 10_000),
  };
}

// ---------------------------------------------------------------------------
// The anchor for a relay: nginx's mail proxy in one process (no master), its
// auth_http answered by its own http block with a static reply that names
// the same Dovecot and the same master login Keygate uses, so nginx does no
// key check: what it costs is the relay's floor.

interface RunningNginx {
  pid: number;
  imap: number;
  pop3: number;
  stop(): Promise<void>;
}

async function startNginx(dir: string, dc: RunningDovecot): Promise<RunningNginx> {
  const [imap, pop3, auth] = await Promise.all([freePort(), freePort(), freePort()]);
  const root = join(dir, 'nginx');
  mkdirSync(join(root, 'logs'), { recursive: true });
  writeFileSync(
    join(root, 'nginx.conf'),
    `load_module ${NGINX_MAIL_MODULE};
daemon off;
master_process off;
worker_processes 1;
pid ${root}/nginx.pid;
error_log ${root}/logs/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  map $http_auth_protocol $bench_port { imap ${dc.imapPort}; pop3 ${dc.pop3Port}; }
  server {
    listen 127.0.0.1:${auth};
    location = /auth {
      add_header Auth-Status OK;
      add_header Auth-Server 127.0.0.1;
      add_header Auth-Port $bench_port;
      add_header Auth-User "${ACCOUNT}*${MASTER.user}";
      add_header Auth-Pass "${MASTER.password}";
      return 204;
    }
  }
}
mail {
  server_name keygate-bench;
  auth_http 127.0.0.1:${auth}/auth;
  server { listen 127.0.0.1:${imap}; protocol imap; imap_auth login plain; }
  server { listen 127.0.0.1:${pop3}; protocol pop3; pop3_auth plain; }
}
`,
  );
  const child = spawn('nginx', ['-p', root, '-e', join(root, 'logs', 'error.log'), '-c', join(root, 'nginx.conf')], { stdio: 'ignore' });
  const deadline = Date.now() + 10_000;
  while (!((await canConnect(imap)) && (await canConnect(pop3)))) {
    if (child.exitCode !== null) throw new Error(`nginx exited (${child.exitCode}); see ${root}/logs/error.log`);
    if (Date.now() > deadline) throw new Error('nginx did not start');
    await sleep(50);
  }
  return {
    pid: child.pid!,
    imap,
    pop3,
    stop: () => stopChild(child, 'SIGTERM', 5_000),
  };
}

// ---------------------------------------------------------------------------
// A minimal IMAP client for the load side: one command at a time, the reply
// scanned for its tagged line without building strings of the payload.

class RawImap {
  private tagNo = 0;
  private pending: { tag: string; resolve: (bytes: number) => void; reject: (e: Error) => void; bytes: number; tail: Buffer } | null = null;

  private constructor(private readonly socket: Socket) {}

  static async open(port: number): Promise<RawImap> {
    const socket = connect({ host: '127.0.0.1', port });
    socket.setNoDelay(true);
    const c = new RawImap(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once('data', () => {
        socket.on('data', (d: Buffer) => c.onData(d));
        resolve();
      });
      socket.once('error', reject);
    });
    socket.on('error', (e) => c.pending?.reject(e));
    return c;
  }

  /** Sends one command; resolves with the reply's size in bytes; rejects on NO/BAD. */
  command(text: string): Promise<number> {
    const tag = `t${++this.tagNo}`;
    return new Promise((resolve, reject) => {
      this.pending = { tag: `${tag} `, resolve, reject, bytes: 0, tail: Buffer.alloc(0) };
      this.socket.write(`${tag} ${text}\r\n`);
    });
  }

  /**
   * Only the end of the stream is looked at: the reply is complete when its
   * last line (after the final CRLF but one) starts with the tag. Payload
   * bytes are counted, never copied or searched.
   */
  private onData(d: Buffer): void {
    const p = this.pending;
    if (!p) return;
    p.bytes += d.length;
    const tail = d.length >= 4096 ? d.subarray(d.length - 4096) : Buffer.concat([p.tail, d]).subarray(-4096);
    p.tail = tail;
    if (tail.length < 2 || tail[tail.length - 2] !== 13 || tail[tail.length - 1] !== 10) return;
    const text = tail.toString('latin1');
    const cr = text.lastIndexOf('\r\n', text.length - 3);
    const last = cr < 0 ? text : text.slice(cr + 2);
    if (!last.startsWith(p.tag)) return;
    this.pending = null;
    if (last.startsWith(`${p.tag}OK`)) p.resolve(p.bytes);
    else p.reject(new Error(last.trim()));
  }

  close(): void {
    this.socket.destroy();
  }
}

async function logIn(port: number, user: string, pass: string): Promise<RawImap> {
  const c = await RawImap.open(port);
  await c.command(`LOGIN ${user} ${pass}`);
  return c;
}

interface Side {
  name: string;
  port: number;
  pass: string;
}

interface FetchResult {
  /** All bytes over all time: on two cores shared by client, Keygate and Dovecot single FETCH times are bimodal (where the scheduler put whom), and a median flips between the modes from run to run. */
  mbPerSecond: number;
  bytes: number;
  /** Mean time of one FETCH, ms. */
  mean: number;
}

interface RttResult {
  p50: number;
  p99: number;
  perSecond: number;
}

/**
 * The two sides are measured alternately, block by block, so a burst of other
 * load on the machine hits both alike. Each block has the mailbox to itself:
 * a fresh logged-in, selected connection, logged out before the other side's
 * block starts. (With both sessions open at once, each SELECT made Dovecot
 * sync the other session's view of the mailbox, and which side paid for it
 * changed from run to run: that measured Dovecot, not the proxy.)
 */
async function compare(sides: [Side, Side], blocks: number, block: (c: RawImap) => Promise<number[]>): Promise<[number[], number[]]> {
  const session = async (side: Side, measure: boolean): Promise<number[]> => {
    const c = await logIn(side.port, ACCOUNT, side.pass);
    try {
      await c.command('SELECT INBOX');
      await c.command('NOOP');
      const out = await block(c);
      await c.command('LOGOUT').catch(() => 0);
      return measure ? out : [];
    } finally {
      c.close();
    }
  };
  for (const side of sides) await session(side, false); // warm-up (Dovecot caches, page cache, JIT)
  const out: [number[], number[]] = [[], []];
  for (let b = 0; b < blocks; b++) for (let i = 0; i < 2; i++) out[i]!.push(...(await session(sides[i]!, true)));
  return out;
}

async function fetchAll(sides: [Side, Side]): Promise<[FetchResult, FetchResult]> {
  let bytes = 0;
  const times = await compare(sides, ROUNDS, async (c) => {
    const t0 = performance.now();
    bytes = await c.command('FETCH 1:* (BODY.PEEK[])');
    return [performance.now() - t0];
  });
  return times.map((t) => {
    const mean = t.reduce((a, b) => a + b, 0) / t.length;
    return { mbPerSecond: bytes / 1e6 / (mean / 1000), bytes, mean };
  }) as [FetchResult, FetchResult];
}

/** Keygate's CPU time per MB it relays: FETCH 1:* repeated on one session through Keygate. */
async function relayCpu(side: Side, pid: number, rounds: number): Promise<number> {
  const c = await logIn(side.port, ACCOUNT, side.pass);
  try {
    await c.command('SELECT INBOX');
    await c.command('FETCH 1:* (BODY.PEEK[])');
    const cpu0 = processCpu(pid);
    let bytes = 0;
    for (let i = 0; i < rounds; i++) bytes += await c.command('FETCH 1:* (BODY.PEEK[])');
    return ((processCpu(pid) - cpu0) * 1000) / (bytes / 1e6);
  } finally {
    c.close();
  }
}

async function roundTrips(sides: [Side, Side], command: string, n: number): Promise<[RttResult, RttResult]> {
  const blocks = 10;
  const per = Math.max(10, Math.floor(n / blocks));
  const lat = await compare(sides, blocks, async (c) => {
    const out: number[] = [];
    for (let i = 0; i < per; i++) {
      const s = performance.now();
      await c.command(command);
      out.push(performance.now() - s);
    }
    return out;
  });
  return lat.map((l) => {
    const sorted = sortNumbers(l);
    return { p50: quantile(sorted, 0.5), p99: quantile(sorted, 0.99), perSecond: 1000 / (l.reduce((a, b) => a + b, 0) / l.length) };
  }) as [RttResult, RttResult];
}

/**
 * A process's memory once it has settled: Keygate (given its data dir) is
 * told to run a full GC first and reports V8's heap and buffers; others
 * (nginx) are read after a pause.
 */
async function settled(pid: number, keygateDir: string | null): Promise<{ pss: number; heap: number | null }> {
  await sleep(1000);
  if (!keygateDir) return { pss: processPss(pid), heap: null };
  const file = join(keygateDir, 'memory.json');
  rmSync(file, { force: true });
  process.kill(pid, 'SIGUSR2');
  for (let i = 0; i < 100 && !existsSync(file); i++) await sleep(50);
  const m = JSON.parse(readFileSync(file, 'utf8')) as NodeJS.MemoryUsage;
  await sleep(500);
  return { pss: processPss(pid), heap: m.heapUsed + m.external };
}

/** Runs `load` and returns its result with the CPU seconds process `pid` used meanwhile (all, and in the kernel). */
async function cpuOf<T>(pid: number, load: () => Promise<T>): Promise<{ result: T; cpu: number; system: number }> {
  const t0 = processTimes(pid);
  const result = await load();
  const t1 = processTimes(pid);
  return { result, cpu: t1.user + t1.system - t0.user - t0.system, system: t1.system - t0.system };
}

async function fillMailbox(dc: RunningDovecot): Promise<void> {
  const t = nodemailer.createTransport({ pool: true, host: '127.0.0.1', port: dc.lmtpPort, lmtp: true, ignoreTLS: true, maxConnections: 4, logger: false });
  const line = 'The quick brown fox jumps over the lazy dog. 0123456789 abcdefghijklmnopqrstuvwxyz';
  const body = Array.from({ length: Math.ceil((MESSAGE_KB * 1024) / (line.length + 2)) }, () => line).join('\r\n');
  try {
    const batch = 50;
    for (let i = 0; i < MESSAGES; i += batch) {
      await Promise.all(
        Array.from({ length: Math.min(batch, MESSAGES - i) }, (_, j) =>
          t.sendMail({
            envelope: { from: 'sender@example.net', to: [ACCOUNT] },
            raw: `From: <sender@example.net>\r\nTo: <${ACCOUNT}>\r\nSubject: bench message ${i + j}\r\nMessage-ID: <bench-${i + j}@example.net>\r\n\r\n${body}\r\n`,
          }),
        ),
      );
    }
  } finally {
    t.close();
  }
}

async function main(): Promise<void> {
  if (!dovecotAvailable()) {
    console.log('Dovecot is not installed (apt dovecot-imapd dovecot-pop3d dovecot-lmtpd): nothing to compare the proxy with.');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'keygate-bench-proxy-'));
  let dc: RunningDovecot | null = null;
  let keygate: Awaited<ReturnType<typeof startKeygate>> | null = null;
  let nginx: RunningNginx | null = null;
  let pool: LoadPool | null = null;
  let cleaned = false;
  const cleanup = async (): Promise<void> => {
    if (cleaned) return;
    cleaned = true;
    pool?.close();
    await nginx?.stop();
    await keygate?.stop();
    await dc?.stop();
    rmSync(dir, { recursive: true, force: true });
  };
  // An interrupted run leaves no server and no temp dir behind.
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => void cleanup().finally(() => process.exit(130)));
  try {
    progress('starting tuned Dovecot');
    dc = await startDovecot({ users: [{ user: ACCOUNT, password: PASSWORD }], master: MASTER, tuned: true });
    progress(`filling the mailbox with ${MESSAGES} messages of ~${MESSAGE_KB} KB`);
    await fillMailbox(dc);
    progress('starting Keygate (IMAP and POP3 listeners + proxy backends)');
    keygate = await startKeygate({ dir, imapPort: dc.imapPort, pop3Port: dc.pop3Port });
    const kPid = keygate.child.pid!;
    if (NGINX.found && NGINX.missing === null) {
      progress('starting nginx (mail proxy, static auth)');
      nginx = await startNginx(dir, dc);
      if (process.env.BENCH_PID_FILE) writeFileSync(`${process.env.BENCH_PID_FILE}.nginx`, String(nginx.pid));
    } else progress(`no nginx anchor: ${NGINX.missing ?? NGINX.skipReason}`);
    const direct: Side = { name: 'direct', port: dc.imapPort, pass: PASSWORD };
    const through: Side = { name: 'keygate', port: keygate.ready.imap, pass: keygate.ready.key };

    const pct = (k: number, d: number): string => `${fmt((k / d) * 100, 1)} %`;
    const out: string[] = [];
    out.push(`## IMAP/POP3 proxy benchmark (npm run bench:proxy)\n`);
    out.push(`Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'CPU'}, ${fmt(totalmem() / 2 ** 30, 1)} GiB, Linux ${release()}, Node ${process.version}; Dovecot tuned (service_count = 0), ${MESSAGES} messages of ~${MESSAGE_KB} KB; plaintext on loopback; load average ${loadavg().map((l) => fmt(l, 2)).join(' ')} at the start.\n`);
    const rows: string[][] = [];
    const verdicts: string[] = [];

    if (PARTS.has('fetch')) {
      progress('FETCH 1:* (BODY.PEEK[])');
      const [fDirect, fKeygate] = await fetchAll([direct, through]);
      const cpuPerMb = await relayCpu(through, kPid, 20);
      rows.push([`FETCH 1:* (BODY.PEEK[]) (${fmt(fDirect.bytes / 1e6, 1)} MB)`, `${fmt(fDirect.mbPerSecond, 0)} MB/s`, `${fmt(fKeygate.mbPerSecond, 0)} MB/s`, pct(fKeygate.mbPerSecond, fDirect.mbPerSecond), `${fmt(fKeygate.mean - fDirect.mean, 1)} ms per FETCH (mean)`]);
      verdicts.push(`FETCH throughput ${pct(fKeygate.mbPerSecond, fDirect.mbPerSecond)} of direct (target ≥ 90 %): ${fKeygate.mbPerSecond >= 0.9 * fDirect.mbPerSecond ? 'met' : 'MISSED'}`);
      verdicts.push(`Keygate CPU per MB relayed (FETCH, 20 × ${fmt(fKeygate.bytes / 1e6, 1)} MB on one session): ${fmt(cpuPerMb, 2)} ms`);
    }
    if (PARTS.has('rtt')) {
      progress('SELECT / NOOP round trips');
      for (const cmd of ['NOOP', 'SELECT INBOX']) {
        const [d, k] = await roundTrips([direct, through], cmd, cmd === 'NOOP' ? RTT : Math.max(100, Math.floor(RTT / 4)));
        rows.push([`${cmd} round trip (p50 / p99)`, `${fmt(d.p50, 3)} / ${fmt(d.p99, 3)} ms`, `${fmt(k.p50, 3)} / ${fmt(k.p99, 3)} ms`, pct(k.perSecond, d.perSecond), `${fmt(k.p50 - d.p50, 3)} ms`]);
        verdicts.push(`${cmd} added p50 ${fmt((k.p50 - d.p50) * 1000, 0)} µs (target < 200 µs): ${k.p50 - d.p50 < 0.2 ? 'met' : 'MISSED'}`);
      }
    }
    if (rows.length) out.push(table(['measure', 'direct Dovecot', 'through Keygate', 'Keygate / direct', 'added'], rows));

    if (PARTS.has('logins')) {
      pool ??= new LoadPool(WORKERS);
      const logins: string[][] = [];
      const worst: Record<string, { keygate: number; nginx: number }> = {};
      for (const protocol of ['imap', 'pop3'] as const) {
        const dcPort = protocol === 'imap' ? dc.imapPort : dc.pop3Port;
        const target = (port: number, pass: string): Target => ({ protocol, port, tls: false, creds: { user: ACCOUNT, pass } });
        for (const c of [1, 8, 32]) {
          progress(`${protocol} login cycles, c=${c}`);
          const d = await pool.run(target(dcPort, PASSWORD), c, SECONDS * 1000);
          const k = await cpuOf(kPid, () => pool!.run(target(protocol === 'imap' ? keygate!.ready.imap : keygate!.ready.pop3, keygate!.ready.key), c, SECONDS * 1000));
          const n = nginx ? await cpuOf(nginx.pid, () => pool!.run(target(protocol === 'imap' ? nginx!.imap : nginx!.pop3, PASSWORD), c, SECONDS * 1000)) : null;
          const kMs = (k.cpu / Math.max(1, k.result.cycles)) * 1000;
          const kSys = (k.system / Math.max(1, k.result.cycles)) * 1000;
          const nMs = n ? (n.cpu / Math.max(1, n.result.cycles)) * 1000 : Number.NaN;
          const nSys = n ? (n.system / Math.max(1, n.result.cycles)) * 1000 : Number.NaN;
          // At c=1 every login also pays for the event loop waking from idle: the target is read under load.
          const w = (worst[protocol] ??= { keygate: 0, nginx: 0 });
          if (c > 1) {
            w.keygate = Math.max(w.keygate, kMs);
            w.nginx = Math.max(w.nginx, nMs);
          }
          for (const r of [d, k.result, n?.result]) if (r?.firstError) progress(`  errors at c=${c}: ${r.errors} (${r.firstError})`);
          logins.push([
            `${protocol.toUpperCase()} c=${c}`,
            `${fmt(d.cyclesPerSecond, 0)} (${fmt(d.loginP50, 2)} ms)`,
            `${fmt(k.result.cyclesPerSecond, 0)} (${fmt(k.result.loginP50, 2)} ms)`,
            `${fmt(kMs, 3)} (${fmt(kSys, 3)})`,
            n ? `${fmt(n.result.cyclesPerSecond, 0)} (${fmt(n.result.loginP50, 2)} ms)` : '–',
            `${fmt(nMs, 3)} (${fmt(nSys, 3)})`,
            String(d.errors + k.result.errors + (n?.result.errors ?? 0)),
          ]);
        }
      }
        out.push(`\nLogin cycles/s (login p50) and the relay's CPU per proxied login, ms (of which in the kernel):\n`);
      out.push(table(['protocol, concurrency', 'direct Dovecot', 'through Keygate', 'Keygate CPU/login (kernel)', 'through nginx', 'nginx CPU/login (kernel)', 'errors'], logins));
      for (const [p, w] of Object.entries(worst)) verdicts.push(`${p.toUpperCase()} proxied login at c=8 and 32: at most ${fmt(w.keygate, 3)} ms of Keygate CPU (target ≤ 0.3 ms): ${w.keygate <= 0.3 ? 'met' : 'MISSED'}; nginx ${fmt(w.nginx, 3)} ms`);
    }

    if (PARTS.has('idle')) {
      pool ??= new LoadPool(WORKERS);
      const idle: string[][] = [];
      const sides: Array<[string, number, number, string]> = [['Keygate', kPid, keygate.ready.imap, keygate.ready.key]];
      if (nginx) sides.push(['nginx', nginx.pid, nginx.imap, PASSWORD]);
      for (const [name, pid, port, pass] of sides) {
        progress(`${IDLE} + ${IDLE} idle IMAP sessions through ${name}`);
        // The second batch is the one measured: the first also pays for the heap and allocator growing to hold sessions at all.
        const isKeygate = name === 'Keygate';
        const target: Target = { protocol: 'imap', port, tls: false, creds: { user: ACCOUNT, pass } };
        const first = await pool.hold(target, IDLE);
        const before = await settled(pid, isKeygate ? dir : null);
        const second = await pool.hold(target, IDLE);
        const after = await settled(pid, isKeygate ? dir : null);
        await pool.release();
        const held = { held: second.held - first.held, errors: first.errors + second.errors, firstError: first.firstError ?? second.firstError };
        if (held.firstError) progress(`  errors: ${held.errors} (${held.firstError})`);
        const per = (a: number, b: number): number => (a - b) / 1024 / Math.max(1, held.held);
        const kb = per(after.pss, before.pss);
        const heap = after.heap === null || before.heap === null ? '–' : fmt(per(after.heap, before.heap), 1);
        idle.push([name, String(held.held), fmt(before.pss / 2 ** 20, 1), fmt(after.pss / 2 ** 20, 1), fmt(kb, 1), heap]);
        if (name === 'Keygate') verdicts.push(`Idle proxied IMAP session: ${fmt(kb, 1)} KB in Keygate (target ≤ 16 KB): ${kb <= 16 ? 'met' : 'MISSED'}`);
        await sleep(1000);
      }
      out.push(`\nIdle logged-in IMAP sessions held through the relay: what ${IDLE} more cost once ${IDLE} are open (PSS of the relay's process):\n`);
      out.push(table(['relay', 'sessions added', 'PSS before MB', 'PSS after MB', 'KB per session', 'of which V8 heap + buffers, KB'], idle));
    }

    out.push(`\n${verdicts.map((v) => `- ${v}`).join('\n')}`);
    out.push(`\nA login through Keygate is two logins (Keygate's key check, then Dovecot's master login); nginx's is one (its auth answer is static).`);
    console.log(out.join('\n'));
  } finally {
    await cleanup();
  }
}

if (process.argv[2] === '--serve') {
  void serve(JSON.parse(process.argv[3]!) as ServeArgs);
} else {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
