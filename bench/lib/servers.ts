import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { canConnect, freePort } from '../../test/helpers/free-port.js';

const run = promisify(execFile);
export const ROOT = join(import.meta.dirname, '..', '..');
/** The built CLI; KEYGATE_CLI points a bench at another build (an anchor). */
export const CLI = process.env.KEYGATE_CLI ?? join(ROOT, 'dist', 'cli.js');

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Every process we start, so an interrupted bench leaves none behind. */
const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

/** Signals a child and waits for it to exit, killing it after `graceMs`. */
export async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 15_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill(signal);
  await Promise.race([exited, sleep(graceMs)]);
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  children.delete(child);
}

export interface KeygateServer {
  pid: number;
  ports: { imap: number; imaps: number; pop3: number; pop3s: number; smtp: number; smtps: number; http: number };
  stop(): Promise<void>;
}

/** Issues a key bound to `account` with the mail scopes, through the built CLI. */
export async function issueKey(storeFlags: string[], account: string): Promise<string> {
  const { stdout } = await run(process.execPath, [CLI, 'tokens', 'issue', ...storeFlags, '-d', 'bench', '-s', 'imap,pop3,smtp', '-a', account], { cwd: ROOT });
  return stdout.trim();
}

/**
 * Starts the built `keygate serve` as a child process, logging (at info, as
 * in production) to a file. `cli` is another build to compare against (a
 * checkout of an earlier commit, built); default this tree's.
 */
export async function startKeygate(dir: string, name: string, storeFlags: string[], extra: string[] = [], cli = CLI): Promise<KeygateServer> {
  const ports = { imap: await freePort(), imaps: await freePort(), pop3: await freePort(), pop3s: await freePort(), smtp: await freePort(), smtps: await freePort(), http: await freePort() };
  const logPath = join(dir, `${name}.log`);
  const fd = openSync(logPath, 'w');
  // With no route anywhere a real `keygate serve` refuses every login: such a bench measures the login path alone.
  const routed = [...storeFlags, ...extra].some((f) => f.startsWith('--upstream.') || f === '--mailbox');
  const entry = routed ? [cli] : [join(import.meta.dirname, 'serve-login-only.mjs'), dirname(cli)];
  const child = spawn(
    process.execPath,
    [
      ...entry, 'serve', ...storeFlags,
      '--http.port', String(ports.http),
      '--imap.port', String(ports.imap), '--imap.securePort', String(ports.imaps),
      '--pop3.port', String(ports.pop3), '--pop3.securePort', String(ports.pop3s),
      '--smtp.port', String(ports.smtp), '--smtp.securePort', String(ports.smtps),
      '--tls.dir', join(dir, 'certs'),
      '--limits.connectionsPerIp', '0',
      '--shutdownGrace', '1s',
      ...(extra.includes('--log.level') ? [] : ['--log.level', 'info']),
      ...extra,
    ],
    { cwd: join(cli, '..', '..'), stdio: ['ignore', fd, fd], env: { ...process.env, NODE_ENV: 'production' } },
  );
  closeSync(fd);
  children.add(child);
  const deadline = Date.now() + 30_000;
  // Ready once every mail port answers (they open after the control plane; logs may be off).
  const mailPorts = [ports.imap, ports.imaps, ports.pop3, ports.pop3s, ports.smtp, ports.smtps];
  while (!(await Promise.all(mailPorts.map(canConnect))).every(Boolean)) {
    if (child.exitCode !== null) throw new Error(`keygate serve exited (${child.exitCode}): ${readFileSync(logPath, 'utf8').slice(-2000)}`);
    if (Date.now() > deadline) throw new Error(`keygate serve did not start: ${readFileSync(logPath, 'utf8').slice(-2000)}`);
    await sleep(50);
  }
  return { pid: child.pid!, ports, stop: () => stopChild(child) };
}

/** A private redis-server on loopback, no persistence. */
export async function startRedis(dir: string): Promise<{ url: string; pid: number; stop(): Promise<void> }> {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no'], { stdio: 'ignore' });
  children.add(child);
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      const { stdout } = await run('redis-cli', ['-p', String(port), 'PING']);
      if (stdout.trim() === 'PONG') break;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline) throw new Error('redis-server did not start');
    await sleep(50);
  }
  return { url: `redis://127.0.0.1:${port}`, pid: child.pid!, stop: () => stopChild(child) };
}

/** The canned-reply baseline server (bench/lib/canned-server.ts) as a child process; implicit TLS with `tls`. */
export async function startCanned(tls?: { certPath: string; keyPath: string }): Promise<{ pid: number; port: number; stop(): Promise<void> }> {
  const port = await freePort();
  const args = [join(import.meta.dirname, 'canned-server.ts'), String(port), ...(tls ? [tls.certPath, tls.keyPath] : [])];
  const child = spawn(process.execPath, ['--import', 'tsx', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(child);
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`canned server exited (${code})`)));
  });
  return { pid: child.pid!, port, stop: () => stopChild(child) };
}
