import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { canConnect, freePort } from './free-port.js';
import { Tool } from './tools.js';

/**
 * Postfix 3.3+ (for `postfix start-fg`) from Debian's `postfix` package. Missing
 * altogether, its tests skip; installed without its users, they fail naming the package.
 */
export const POSTFIX = new Tool('postfix', 'postfix', () => existsSync('/usr/sbin/postfix'), () => {
  const version = spawnSync('postconf', ['-d', '-h', 'mail_version'], { encoding: 'utf8' }).stdout.trim();
  const [major = 0, minor = 0] = version.split('.').map(Number);
  if (major < 3 || (major === 3 && minor < 3)) return `is ${version || 'of unknown version'}, not 3.3 or later (start-fg)`;
  const missing = [['postfix', 'id'], ['postdrop', 'getent']].filter(([name, cmd]) => spawnSync(cmd!, cmd === 'id' ? [name!] : ['group', name!], { stdio: 'ignore' }).status !== 0);
  if (missing.length) return `its user or group ${missing.map(([n]) => n).join(', ')} does not exist: reinstall the Debian package postfix`;
  return null;
});

export interface PostfixOptions {
  /** `smtpd_sasl_path`: `inet:127.0.0.1:PORT` or a unix socket path. */
  saslPath: string;
  /** STARTTLS on the submission port with this certificate and key (PEM files). */
  tls?: { cert: string; key: string };
}

export interface RunningPostfix {
  host: '127.0.0.1';
  /** The submission port (smtpd with SASL through `saslPath`). */
  port: number;
  dir: string;
  /** Postfix's log so far (its `maillog_file`). */
  maillog(): string;
  /** Stops Postfix and removes its directory. */
  stop(): Promise<void>;
}

// Every Postfix we start, so a crashed test run never leaves one behind.
const running = new Map<ChildProcess, string>();
process.once('exit', () => {
  for (const [child, conf] of running) {
    spawnSync('postfix', ['-c', conf, 'abort'], { stdio: 'ignore' });
    child.kill('SIGKILL');
  }
});

function read(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/** Postfix reports start-up problems only to syslog, which these machines lack; under a pseudo-terminal `postfix check` prints them. */
function checkOutput(conf: string): string {
  return spawnSync('script', ['-qc', `postfix -c ${conf} check`, '/dev/null'], { encoding: 'utf8' }).stdout.trim();
}

/**
 * Starts a private Postfix (`postfix -c <temp>/conf start-fg`, as root) whose
 * every path is inside a temp dir: its own configuration, queue and data
 * directories, its log in `maillog`, loopback only, no local delivery (mail
 * is accepted and discarded by `discard:`, which logs each message). One
 * submission service on a free loopback port authenticates with
 * `smtpd_sasl_type = dovecot` against `saslPath` and relays only for
 * authenticated clients. Error pauses are off so refusals come at once.
 *
 * Facts this relies on (Postfix 3.7): `meta_directory` must stay
 * /etc/postfix (post-install finds postfix-files there); `maillog_file` must
 * lie under one of `maillog_file_prefixes`; services run with chroot `n`.
 */
export async function startPostfix(options: PostfixOptions): Promise<RunningPostfix> {
  POSTFIX.assertCapable();
  const dir = mkdtempSync(join(tmpdir(), 'keygate-postfix-'));
  chmodSync(dir, 0o755); // Postfix's own processes run as the postfix user and traverse it
  const conf = join(dir, 'conf');
  const data = join(dir, 'data');
  mkdirSync(conf);
  mkdirSync(data);
  mkdirSync(join(dir, 'queue'), { mode: 0o755 }); // its subdirectories are made by `postfix check`
  const postfixUid = Number(spawnSync('id', ['-u', 'postfix'], { encoding: 'utf8' }).stdout.trim());
  chownSync(data, postfixUid, 0);
  const port = await freePort();
  const maillog = join(dir, 'maillog');
  let tls = 'smtpd_tls_security_level = none';
  if (options.tls) {
    // Copied in: smtpd reads them from a path its own user can reach.
    copyFileSync(options.tls.cert, join(dir, 'tls-cert.pem'));
    copyFileSync(options.tls.key, join(dir, 'tls-key.pem'));
    chmodSync(join(dir, 'tls-key.pem'), 0o600);
    tls = `smtpd_tls_security_level = may\nsmtpd_tls_cert_file = ${dir}/tls-cert.pem\nsmtpd_tls_key_file = ${dir}/tls-key.pem\nsmtpd_tls_loglevel = 0`;
  }
  writeFileSync(
    join(conf, 'main.cf'),
    `# Keygate test fixture: a private Postfix, nothing outside ${dir}
compatibility_level = 3.6
meta_directory = /etc/postfix
config_directory = ${conf}
queue_directory = ${join(dir, 'queue')}
data_directory = ${data}
maillog_file = ${maillog}
maillog_file_prefixes = ${dir}
myhostname = postfix.test
mydomain = postfix.test
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
default_transport = discard:
local_transport = discard:
relay_transport = discard:
alias_maps =
alias_database =
biff = no
smtputf8_enable = no
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 100
smtpd_hard_error_limit = 100
${tls}
`,
  );
  // The submission service, then the internal services Postfix needs to queue and discard a message, all without chroot.
  const saslService = [
    `127.0.0.1:${port} inet n - n - - smtpd`,
    '  -o syslog_name=postfix/submission',
    '  -o smtpd_sasl_auth_enable=yes',
    '  -o smtpd_sasl_type=dovecot',
    `  -o smtpd_sasl_path=${options.saslPath}`,
    '  -o smtpd_client_restrictions=',
    '  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject',
    '  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject',
  ];
  const internal = [
    'pickup unix n - n 60 1 pickup',
    'cleanup unix n - n - 0 cleanup',
    'qmgr unix n - n 300 1 qmgr',
    'rewrite unix - - n - - trivial-rewrite',
    'bounce unix - - n - 0 bounce',
    'defer unix - - n - 0 bounce',
    'trace unix - - n - 0 bounce',
    'verify unix - - n - 1 verify',
    'flush unix n - n 1000? 0 flush',
    'proxymap unix - - n - - proxymap',
    'showq unix n - n - - showq',
    'error unix - - n - - error',
    'retry unix - - n - - error',
    'discard unix - - n - - discard',
    'anvil unix - - n - 1 anvil',
    'scache unix - - n - 1 scache',
    'tlsmgr unix - - n 1000? 1 tlsmgr',
    'postlog unix-dgram n - n - 1 postlogd',
  ];
  writeFileSync(join(conf, 'master.cf'), [...saslService, ...internal, ''].join('\n'));

  const problems = checkOutput(conf);
  const child = spawn('postfix', ['-c', conf, 'start-fg'], { stdio: ['ignore', 'ignore', 'pipe'] });
  running.set(child, conf);
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      spawnSync('postfix', ['-c', conf, 'stop'], { stdio: 'ignore' });
      await Promise.race([exited, sleep(5000)]);
      if (child.exitCode === null && child.signalCode === null) {
        spawnSync('postfix', ['-c', conf, 'abort'], { stdio: 'ignore' });
        child.kill('SIGKILL');
      }
    }
    running.delete(child);
    rmSync(dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + 15_000;
  while (!(await canConnect(port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      const why = [problems, stderr, read(maillog).split('\n').slice(-20).join('\n')].filter(Boolean).join('\n').trim();
      await stop();
      throw new Error(`postfix did not open its submission port: ${why || '(no output)'}`);
    }
    await sleep(50);
  }
  return { host: '127.0.0.1', port, dir, maillog: () => read(maillog), stop };
}
