import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { canConnect, freePort } from './free-port.js';
import { Tool } from './tools.js';

/**
 * Exim's Dovecot authenticator is only in exim4-daemon-heavy, which cannot be
 * installed beside postfix (both are the system MTA); `.ci/run` unpacks it
 * into /opt/keygate-exim4 (or $KEYGATE_EXIM_DIR) instead. An installed one is
 * used when there is one.
 */
export function eximBinary(): string {
  const dir = process.env.KEYGATE_EXIM_DIR ?? '/opt/keygate-exim4';
  return [join(dir, 'usr/sbin/exim4'), '/usr/sbin/exim4'].find((p) => existsSync(p)) ?? join(dir, 'usr/sbin/exim4');
}

export const EXIM = new Tool('exim', 'exim4-daemon-heavy (unpacked, not installed, by .ci/run)', () => existsSync(eximBinary()), () => {
  if (spawnSync('id', ['Debian-exim'], { stdio: 'ignore' }).status !== 0) return 'its user Debian-exim does not exist (.ci/run creates it)';
  const info = spawnSync(eximBinary(), ['-bV'], { encoding: 'utf8' });
  const authenticators = /^Authenticators:(.*)$/m.exec(info.stdout)?.[1] ?? '';
  if (!/\bdovecot\b/.test(authenticators)) return `has no dovecot authenticator (${authenticators.trim() || info.stderr.trim() || 'exim -bV failed'}): it is in exim4-daemon-heavy`;
  return null;
});

export interface EximOptions {
  /** The Dovecot-protocol unix socket (Exim 4.96 speaks to a socket path only). */
  saslSocket: string;
}

export interface RunningExim {
  host: '127.0.0.1';
  port: number;
  dir: string;
  /** Exim's main log so far. */
  mainlog(): string;
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of running) c.kill('SIGKILL');
});

function read(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/**
 * Writes a private Exim configuration into `dir` (spool and logs there too,
 * loopback only, root as the Exim user so no system user is needed, accepted
 * messages left queued: `queue_only`), with `authenticators` as its
 * authenticators section. Only authenticated clients may name a recipient.
 * Returns the file's path, for `exim -C`.
 */
export function writeEximConfig(dir: string, authenticators: string): string {
  mkdirSync(join(dir, 'spool'), { recursive: true });
  mkdirSync(join(dir, 'log'), { recursive: true });
  const conf = join(dir, 'exim.conf');
  writeFileSync(
    conf,
    `# Keygate test fixture: a private Exim, nothing outside ${dir}
keep_environment =
primary_hostname = exim.test
spool_directory = ${dir}/spool
log_file_path = ${dir}/log/%slog
pid_file_path = ${dir}/exim.pid
local_interfaces = 127.0.0.1
exim_user = root
exim_group = root
never_users =
queue_only = true
host_lookup =
rfc1413_hosts =
tls_advertise_hosts =
auth_advertise_hosts = *
acl_smtp_rcpt = acl_check_rcpt

begin acl
acl_check_rcpt:
  accept authenticated = *
  deny message = authentication required

begin routers
begin transports

begin authenticators
${authenticators}`,
    { mode: 0o644 },
  );
  return conf;
}

/**
 * Starts a private Exim daemon in the foreground (`exim -C <temp>/exim.conf
 * -bdf`, as root) on a free loopback port, configured by writeEximConfig
 * with PLAIN and LOGIN as `driver = dovecot` authenticators on `saslSocket`.
 */
export async function startExim(options: EximOptions): Promise<RunningExim> {
  EXIM.assertCapable();
  const dir = mkdtempSync(join(tmpdir(), 'keygate-exim-'));
  chmodSync(dir, 0o755);
  const port = await freePort();
  const authenticators = ['PLAIN', 'LOGIN']
    .map((mech) => `dovecot_${mech.toLowerCase()}:\n  driver = dovecot\n  public_name = ${mech}\n  server_socket = ${options.saslSocket}\n  server_set_id = $auth1\n`)
    .join('\n');
  const conf = writeEximConfig(dir, authenticators);
  const child = spawn(eximBinary(), ['-C', conf, '-bdf', '-oX', String(port)], { stdio: ['ignore', 'ignore', 'pipe'] });
  running.add(child);
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const mainlog = (): string => read(join(dir, 'log', 'mainlog'));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      await Promise.race([exited, sleep(5000)]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    running.delete(child);
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 15_000;
  while (!(await canConnect(port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      const why = `${stderr}\n${read(join(dir, 'log', 'paniclog'))}\n${mainlog()}`.trim();
      await stop();
      throw new Error(`exim did not open its port: ${why || '(no output)'}`);
    }
    await sleep(50);
  }
  return { host: '127.0.0.1', port, dir, mainlog, stop };
}
