import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Why Redis tests are skipped, printed once. */
export const REDIS_SKIP_REASON = 'redis-server/redis-cli not found on PATH: skipping tests that need a real Redis';

let available: boolean | undefined;
let warned = false;

/** True when redis-server and redis-cli can be run; warns once with the skip reason otherwise. */
export function redisAvailable(): boolean {
  if (available === undefined) {
    const ok = (bin: string): boolean => spawnSync(bin, ['--version'], { stdio: 'ignore' }).status === 0;
    available = ok('redis-server') && ok('redis-cli');
  }
  if (!available && !warned) {
    warned = true;
    console.warn(REDIS_SKIP_REASON);
  }
  return available;
}

// Every server we start, so a crashed or failed test run never leaves one behind.
const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen({ port, host: '127.0.0.1', exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

/** A port in 20000-29999 that is free, and whose cluster bus port (+10000) is free too. */
async function pickPort(taken: Set<number> = new Set()): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = 20000 + Math.floor(Math.random() * 10000);
    if (taken.has(port)) continue;
    if ((await portFree(port)) && (await portFree(port + 10000))) return port;
  }
  throw new Error('no free port pair for redis-server');
}

/** Runs redis-cli against a local server and returns its output, trimmed. */
export async function redisCli(port: number, ...args: string[]): Promise<string> {
  const { stdout } = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 10_000 });
  return stdout.trim();
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitUntil(what: string, cond: () => Promise<boolean>, timeoutMs: number, child?: ChildProcess, log?: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (child && child.exitCode !== null) {
      const tail = log ? safeRead(log).split('\n').slice(-15).join('\n') : '';
      throw new Error(`redis-server exited with code ${child.exitCode} while waiting for ${what}\n${tail}`);
    }
    if (await cond().catch(() => false)) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

function safeRead(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

function spawnServer(args: string[]): ChildProcess {
  const child = spawn('redis-server', args, { stdio: 'ignore' });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // SIGTERM is Redis's graceful shutdown: it fsyncs the AOF before exiting.
  child.kill('SIGTERM');
  const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(killer);
}

const pong = (port: number) => async (): Promise<boolean> => (await redisCli(port, 'PING')) === 'PONG';

export interface RedisServer {
  url: string;
  port: number;
  /** Stops the server and starts it again on the same port with the same data; `whileDown` runs in between. */
  restart(whileDown?: () => Promise<void>): Promise<void>;
  stop(): Promise<void>;
}

/** A real redis-server on a free loopback port, persisting every write (AOF, fsync always). */
export async function startRedis(opts: { password?: string } = {}): Promise<RedisServer> {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-redis-'));
  const log = join(dir, 'redis.log');
  let child: ChildProcess | undefined;
  let port = 0;
  const start = async (): Promise<void> => {
    child = spawnServer([
      '--port', String(port),
      '--bind', '127.0.0.1',
      '--dir', dir,
      '--logfile', log,
      '--appendonly', 'yes',
      '--appendfsync', 'always',
      '--save', '',
      '--daemonize', 'no',
      ...(opts.password ? ['--requirepass', opts.password] : []),
    ]);
    const auth = opts.password ? ['--no-auth-warning', '-a', opts.password] : [];
    await waitUntil(`redis-server on port ${port}`, async () => (await redisCli(port, ...auth, 'PING')) === 'PONG', 15_000, child, log);
  };
  try {
    // Another process may grab the port between the check and the bind: try a few.
    for (let attempt = 0; ; attempt++) {
      port = await pickPort();
      try {
        await start();
        break;
      } catch (err) {
        if (child) await stopServer(child);
        if (attempt >= 2) throw err;
      }
    }
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  let stopped = false;
  return {
    url: opts.password ? `redis://:${encodeURIComponent(opts.password)}@127.0.0.1:${port}` : `redis://127.0.0.1:${port}`,
    port,
    async restart(whileDown) {
      if (child) await stopServer(child);
      await whileDown?.();
      await start();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      if (child) await stopServer(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface RedisCluster {
  /** redis-cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3 */
  url: string;
  ports: number[];
  stop(): Promise<void>;
}

/** Three real cluster-enabled masters on loopback, slots spread by `redis-cli --cluster create`. */
export async function startRedisCluster(): Promise<RedisCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-redis-cluster-'));
  const nodes: ChildProcess[] = [];
  const ports: number[] = [];
  const stopAll = async (): Promise<void> => {
    await Promise.all(nodes.map(stopServer));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const taken = new Set<number>();
    for (let i = 0; i < 3; i++) {
      const port = await pickPort(taken);
      taken.add(port);
      const nodeDir = join(dir, String(port));
      mkdirSync(nodeDir);
      const log = join(nodeDir, 'redis.log');
      const child = spawnServer([
        '--port', String(port),
        '--bind', '127.0.0.1',
        '--dir', nodeDir,
        '--logfile', log,
        '--cluster-enabled', 'yes',
        '--cluster-config-file', join(nodeDir, 'nodes.conf'),
        '--cluster-node-timeout', '5000',
        '--appendonly', 'no',
        '--save', '',
        '--daemonize', 'no',
      ]);
      nodes.push(child);
      ports.push(port);
      await waitUntil(`cluster node on port ${port}`, pong(port), 15_000, child, log);
    }
    await run('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'], {
      timeout: 60_000,
    });
    for (const port of ports) {
      await waitUntil(`cluster_state:ok on port ${port}`, async () => (await redisCli(port, 'CLUSTER', 'INFO')).includes('cluster_state:ok'), 30_000);
    }
  } catch (err) {
    await stopAll();
    throw err;
  }
  let stopped = false;
  return {
    url: `redis-cluster://${ports.map((p) => `127.0.0.1:${p}`).join(',')}`,
    ports,
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopAll();
    },
  };
}

export interface RedisSentinel {
  /** redis-sentinel://127.0.0.1:<sentinelPort>/<masterName> */
  url: string;
  masterPort: number;
  sentinelPort: number;
  stop(): Promise<void>;
}

/** One master and one Sentinel watching it (quorum 1), both real processes on loopback. */
export async function startRedisSentinel(masterName = 'kgmaster'): Promise<RedisSentinel> {
  const master = await startRedis();
  const dir = mkdtempSync(join(tmpdir(), 'keygate-redis-sentinel-'));
  const conf = join(dir, 'sentinel.conf');
  const log = join(dir, 'sentinel.log');
  let child: ChildProcess | undefined;
  try {
    const port = await pickPort();
    // Sentinel rewrites its config file, so it must be a writable file of its own.
    writeFileSync(
      conf,
      [
        `port ${port}`,
        'bind 127.0.0.1',
        `dir ${dir}`,
        `logfile ${log}`,
        `sentinel monitor ${masterName} 127.0.0.1 ${master.port} 1`,
        `sentinel down-after-milliseconds ${masterName} 5000`,
        '',
      ].join('\n'),
    );
    child = spawnServer([conf, '--sentinel']);
    const c = child;
    await waitUntil(
      `sentinel on port ${port}`,
      async () => (await redisCli(port, 'SENTINEL', 'get-master-addr-by-name', masterName)).includes(String(master.port)),
      15_000,
      c,
      log,
    );
    let stopped = false;
    return {
      url: `redis-sentinel://127.0.0.1:${port}/${masterName}`,
      masterPort: master.port,
      sentinelPort: port,
      async stop() {
        if (stopped) return;
        stopped = true;
        await stopServer(c);
        await master.stop();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    if (child) await stopServer(child);
    await master.stop();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
