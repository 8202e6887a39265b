import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, type Config } from '../../src/config.js';
import { canConnect, freePort } from './free-port.js';
import { runs, Tool } from './tools.js';

/**
 * Dovecot 2.3+ with IMAP, POP3 and LMTP. Missing altogether, its tests skip;
 * installed without one of those (or its users), they fail naming the package.
 */
export const DOVECOT = new Tool('dovecot', 'dovecot-imapd dovecot-pop3d dovecot-lmtpd', () => runs('dovecot'), () => {
  const version = spawnSync('dovecot', ['--version'], { encoding: 'utf8' }).stdout.trim();
  if (!/^2\.[3-9]/.test(version)) return `is ${version}, not 2.3 or later`;
  const packages = { imap: 'dovecot-imapd', pop3: 'dovecot-pop3d', lmtp: 'dovecot-lmtpd' };
  const absent = Object.entries(packages).filter(([exe]) => !existsSync(`/usr/lib/dovecot/${exe}`));
  if (absent.length) return `has no ${absent.map(([exe]) => exe).join(', ')}: install the Debian packages ${absent.map(([, pkg]) => pkg).join(' ')}`;
  const users = ['dovecot', 'dovenull', 'nobody'].filter((u) => spawnSync('id', [u], { stdio: 'ignore' }).status !== 0);
  if (users.length) return `its users ${users.join(', ')} do not exist: reinstall the Debian package dovecot-core`;
  return null;
});

/** Why Dovecot tests are skipped, printed once. */
export const DOVECOT_SKIP_REASON = DOVECOT.skipReason;

/** True when dovecot is installed (warns once with the skip reason otherwise); startDovecot fails if it lacks what the tests need. */
export function dovecotAvailable(): boolean {
  return DOVECOT.found;
}

export interface DovecotUser {
  user: string;
  password: string;
}

export interface DovecotOptions {
  /** Regular users (passwd-file); default alice@example.com and bob@example.com. */
  users?: DovecotUser[];
  /** The master user (master passdb, `user*master` or SASL PLAIN authzid). */
  master?: DovecotUser;
  /** Tuned for load (`service_count = 0` and a `client_limit` for the login and session services); default false = Dovecot's defaults. */
  tuned?: boolean;
  /** Verbose auth logging into the log file (debugging a test). */
  verbose?: boolean;
  /** TLS with a fresh self-signed certificate (CN and SAN localhost): STARTTLS/STLS on the plain ports, and implicit-TLS ports. */
  ssl?: boolean;
  /** The auth service also answers the Dovecot auth protocol on a loopback TCP port (`authPort`), as Postfix would use it. */
  authListener?: boolean;
  /** How the passwd-file stores the users' passwords (default PLAIN). */
  passwordScheme?: 'PLAIN' | 'SHA512-CRYPT';
  /**
   * An oauth2 passdb for XOAUTH2 and OAUTHBEARER logins that asks this RFC
   * 7662 endpoint (`introspection_mode = post`; put the caller's credentials
   * in the URL: `http://user:password@host:port/path`).
   */
  oauth2?: { introspectionUrl: string };
  /** With `ssl`: serve this certificate and key instead of a fresh one (benchmarks compare servers on the same certificate). */
  sslFiles?: { certPath: string; keyPath: string };
}

export interface RunningDovecot {
  host: '127.0.0.1';
  imapPort: number;
  pop3Port: number;
  lmtpPort: number;
  /** Implicit-TLS ports; 0 unless started with `ssl`. */
  imapsPort: number;
  pop3sPort: number;
  /** The auth service's TCP port; 0 unless started with `authListener`. */
  authPort: number;
  /** PEM certificate Dovecot presents (with `ssl`). */
  certPath: string | null;
  dir: string;
  users: DovecotUser[];
  master: DovecotUser;
  pid: number;
  /** The last lines of Dovecot's log (for a failing test's message). */
  logTail(lines?: number): string;
  /** Stops Dovecot and removes its directory. */
  stop(): Promise<void>;
}

export const DEFAULT_USERS: DovecotUser[] = [
  { user: 'alice@example.com', password: 'alice-upstream-pw' },
  { user: 'bob@example.com', password: 'bob-upstream-pw' },
];
export const DEFAULT_MASTER: DovecotUser = { user: 'keygate', password: 'master-secret-pw' };

// Every Dovecot we start, so a crashed test run never leaves one behind.
const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function safeRead(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

function passwdLine(u: DovecotUser, scheme: DovecotOptions['passwordScheme'] = 'PLAIN'): string {
  if (/[:\n]/.test(u.user) || /[:\n]/.test(u.password)) throw new Error(`unusable test credentials for ${u.user}`);
  if (scheme === 'PLAIN') return `${u.user}:{PLAIN}${u.password}::::::\n`;
  const hashed = spawnSync('doveadm', ['pw', '-s', scheme, '-p', u.password], { encoding: 'utf8' });
  if (hashed.status !== 0) throw new Error(`doveadm pw -s ${scheme} failed: ${hashed.stderr.trim()}`);
  return `${u.user}:${hashed.stdout.trim()}::::::\n`;
}

/**
 * Starts a private Dovecot as a child process (`dovecot -F -c <temp>/dovecot.conf`)
 * on free loopback ports for IMAP, POP3 and LMTP, with `ssl = no` (or a
 * self-signed certificate with `ssl`), passwd-file
 * users, a master user (`auth_master_user_separator = *`), maildir storage and
 * every runtime path inside a temp dir. As root Dovecot refuses mail access as
 * uid 0, so mail runs as nobody/nogroup, which owns the mail directory.
 * Failure delays are 0 and the per-user/IP connection limits raised, so tests
 * and benchmarks are not slowed down by them.
 */
export async function startDovecot(options: DovecotOptions = {}): Promise<RunningDovecot> {
  DOVECOT.assertCapable();
  const users = options.users ?? DEFAULT_USERS;
  const master = options.master ?? DEFAULT_MASTER;
  const dir = mkdtempSync(join(tmpdir(), 'keygate-dovecot-'));
  chmodSync(dir, 0o755); // nobody (mail) and dovenull (login) need to traverse it
  const mail = join(dir, 'mail');
  mkdirSync(mail, { mode: 0o700 });
  chownSync(mail, 65534, 65534);
  mkdirSync(join(dir, 'state'), { mode: 0o755 });
  // Read by the auth process, which runs as the dovecot user.
  const dovecotGid = Number(spawnSync('id', ['-g', 'dovecot'], { encoding: 'utf8' }).stdout.trim());
  for (const [name, text] of [['users', users.map((u) => passwdLine(u, options.passwordScheme)).join('')], ['masters', passwdLine(master)]] as const) {
    writeFileSync(join(dir, name), text, { mode: 0o640 });
    chownSync(join(dir, name), 0, dovecotGid);
  }
  const [imapPort, pop3Port, lmtpPort] = await Promise.all([freePort(), freePort(), freePort()]);
  const [imapsPort, pop3sPort] = options.ssl ? await Promise.all([freePort(), freePort()]) : [0, 0];
  const authPort = options.authListener ? await freePort() : 0;
  let oauth2Passdb = '';
  if (options.oauth2) {
    // Read by the auth process (the dovecot user); it holds the introspection caller's credentials.
    const ext = join(dir, 'dovecot-oauth2.conf.ext');
    writeFileSync(
      ext,
      `introspection_mode = post\nintrospection_url = ${options.oauth2.introspectionUrl}\nforce_introspection = yes\nusername_attribute = username\nactive_attribute = active\nactive_value = true\n`,
      { mode: 0o640 },
    );
    chownSync(ext, 0, dovecotGid);
    oauth2Passdb = `passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = ${ext}\n}\n`;
  }
  let certPath: string | null = null;
  let keyPath: string | null = null;
  if (options.ssl && options.sslFiles) {
    ({ certPath, keyPath } = options.sslFiles);
  } else if (options.ssl) {
    certPath = join(dir, 'cert.pem');
    keyPath = join(dir, 'key.pem');
    const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost', '-keyout', keyPath, '-out', certPath], { stdio: 'ignore' });
    if (made.status !== 0) throw new Error('openssl could not make a test certificate');
  }
  const sslConf = options.ssl ? `ssl = yes\nssl_cert = <${certPath}\nssl_key = <${keyPath}\nssl_min_protocol = TLSv1.2` : 'ssl = no';
  const listenerAddr = (port: number): string => (port ? `address = 127.0.0.1\n    port = ${port}` : 'port = 0');
  const log = join(dir, 'dovecot.log');
  const tuned = options.tuned
    ? `
service imap-login {
  service_count = 0
  client_limit = 2000
  process_min_avail = 2
  vsz_limit = 1G
}
service pop3-login {
  service_count = 0
  client_limit = 2000
  process_min_avail = 2
  vsz_limit = 1G
}
service imap {
  service_count = 0
  client_limit = 2000
  process_limit = 64
  vsz_limit = 1G
}
service pop3 {
  service_count = 0
  client_limit = 2000
  process_limit = 64
}
default_client_limit = 4000
default_process_limit = 200
`
    : '';
  const conf = `# Keygate test fixture: a private Dovecot, nothing outside ${dir}
base_dir = ${dir}/run
state_dir = ${dir}/state
log_path = ${log}
info_log_path = ${log}
debug_log_path = ${log}
instance_name = keygate-test-${imapPort}
protocols = imap pop3 lmtp
listen = 127.0.0.1
${sslConf}
disable_plaintext_auth = no
auth_mechanisms = plain login${options.oauth2 ? ' oauthbearer xoauth2' : ''}
auth_failure_delay = 0
auth_master_user_separator = *
auth_verbose = ${options.verbose ? 'yes' : 'no'}
auth_debug = ${options.verbose ? 'yes' : 'no'}
login_trusted_networks = 127.0.0.0/8
default_internal_user = dovecot
default_login_user = dovenull
mail_uid = nobody
mail_gid = nogroup
first_valid_uid = 1
mail_location = maildir:${mail}/%u
mail_max_userip_connections = 10000
mail_fsync = never
recipient_delimiter =
lmtp_save_to_detail_mailbox = no
namespace inbox {
  inbox = yes
  separator = /
  mailbox Drafts {
    special_use = \\Drafts
    auto = subscribe
  }
  mailbox Sent {
    special_use = \\Sent
    auto = subscribe
  }
  mailbox Trash {
    special_use = \\Trash
    auto = subscribe
  }
}
${oauth2Passdb}passdb {
  driver = passwd-file
  args = scheme=PLAIN ${dir}/masters
  master = yes
  result_success = continue
}
passdb {
  driver = passwd-file
  args = scheme=PLAIN ${dir}/users
}
userdb {
  driver = passwd-file
  args = ${dir}/users
  default_fields = uid=nobody gid=nogroup home=${mail}/%u
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = ${imapPort}
  }
  inet_listener imaps {
    ${listenerAddr(imapsPort)}
  }
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = ${pop3Port}
  }
  inet_listener pop3s {
    ${listenerAddr(pop3sPort)}
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = ${lmtpPort}
  }
}
service anvil {
  client_limit = 10000
}
service stats {
  client_limit = 10000
}
service log {
  client_limit = 10000
}
service auth {
  client_limit = 10000${authPort ? `\n  inet_listener {\n    address = 127.0.0.1\n    port = ${authPort}\n  }` : ''}
}
service config {
  client_limit = 10000
}
service imap-hibernate {
  client_limit = 10000
}
protocol imap {
  mail_max_userip_connections = 10000
}
protocol pop3 {
  mail_max_userip_connections = 10000
}
${tuned}`;
  const confPath = join(dir, 'dovecot.conf');
  writeFileSync(confPath, conf);
  const { pid, logTail, stop } = await launch(dir, confPath, log, [imapPort, pop3Port, lmtpPort, ...(options.ssl ? [imapsPort, pop3sPort] : []), ...(authPort ? [authPort] : [])]);
  return { host: '127.0.0.1', imapPort, pop3Port, lmtpPort, imapsPort, pop3sPort, authPort, certPath, dir, users, master, pid, logTail, stop };
}

/** Runs `dovecot -F -c confPath` until every port answers; stop() ends it and removes `dir`. */
async function launch(dir: string, confPath: string, log: string, ports: number[], env: NodeJS.ProcessEnv = process.env): Promise<Pick<RunningDovecot, 'pid' | 'logTail' | 'stop'>> {
  const child = spawn('dovecot', ['-F', '-c', confPath], { stdio: ['ignore', 'ignore', 'pipe'], env });
  children.add(child);
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      await Promise.race([exited, sleep(5000)]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    children.delete(child);
    rmSync(dir, { recursive: true, force: true });
  };
  const logTail = (n = 20): string => safeRead(log).split('\n').slice(-n).join('\n');

  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) {
      const why = `${stderr}\n${logTail()}`.trim();
      await stop();
      throw new Error(`dovecot exited with code ${child.exitCode}: ${why}`);
    }
    const up = await Promise.all(ports.map(canConnect));
    if (up.every(Boolean)) break;
    if (Date.now() > deadline) {
      const why = `${stderr}\n${logTail()}`.trim();
      await stop();
      throw new Error(`dovecot did not open its ports in time: ${why}`);
    }
    await sleep(50);
  }
  return { pid: child.pid!, logTail, stop };
}

/** The Dovecot configuration Keygate ships (docker-compose.yml mounts it; the README's fronting recipe uses it). */
export const SHIPPED_DOVECOT_DIR = join(import.meta.dirname, '..', '..', 'deploy', 'dovecot');

/**
 * The shipped paths and ports, and what a private test Dovecot uses instead:
 * the only changes made to deploy/dovecot/*.conf. Each must occur in the
 * shipped text (so an edit there cannot silently bypass the adaptation).
 */
export function shippedAdaptations(dir: string, ports: { imap: number; pop3: number; lmtp: number }, log: string): [RegExp, string][] {
  return [
    [/\/etc\/dovecot\//g, `${dir}/etc/`],
    [/\/srv\/mail\b/g, `${dir}/mail`],
    [/\/dev\/stdout\b/g, log],
    [/^listen = \*$/m, 'listen = 127.0.0.1'],
    [/(inet_listener imap \{\s*port = )143\b/, `$1${ports.imap}`],
    [/(inet_listener pop3 \{\s*port = )110\b/, `$1${ports.pop3}`],
    [/(inet_listener lmtp \{\s*port = )24\b/, `$1${ports.lmtp}`],
  ];
}

/**
 * Starts a private Dovecot from the shipped configuration (deploy/dovecot/),
 * adapted only in paths and ports (shippedAdaptations) plus the run-time
 * directories a second Dovecot on this machine needs (base_dir, state_dir):
 * master user `keygate` with KEYGATE_UPSTREAM_MASTER_PASSWORD in its environment, any
 * account a user, STARTTLS with a fresh certificate for `localhost`, LMTP.
 * As the image does, mail belongs to uid/gid 1000.
 */
export async function startShippedDovecot(): Promise<RunningDovecot> {
  DOVECOT.assertCapable();
  const dir = mkdtempSync(join(tmpdir(), 'keygate-shipped-dovecot-'));
  chmodSync(dir, 0o755);
  const etc = join(dir, 'etc');
  mkdirSync(etc);
  const mail = join(dir, 'mail');
  mkdirSync(mail, { mode: 0o700 });
  chownSync(mail, 1000, 1000);
  mkdirSync(join(dir, 'state'), { mode: 0o755 });
  const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost', '-keyout', join(etc, 'key.pem'), '-out', join(etc, 'cert.pem')], { stdio: 'ignore' });
  if (made.status !== 0) throw new Error('openssl could not make a test certificate');
  const [imap, pop3, lmtp] = await Promise.all([freePort(), freePort(), freePort()]);
  const log = join(dir, 'dovecot.log');
  for (const name of readdirSync(SHIPPED_DOVECOT_DIR).filter((f) => f.endsWith('.conf'))) {
    let text = readFileSync(join(SHIPPED_DOVECOT_DIR, name), 'utf8');
    if (name === 'dovecot.conf') {
      for (const [pattern, replacement] of shippedAdaptations(dir, { imap, pop3, lmtp }, log)) {
        if (!pattern.test(text)) throw new Error(`deploy/dovecot/dovecot.conf no longer has ${pattern}: update shippedAdaptations`);
        pattern.lastIndex = 0;
        text = text.replace(pattern, replacement);
      }
      text += `\n# Added by the test: a private instance's run-time directories.\nbase_dir = ${dir}/run\nstate_dir = ${dir}/state\ninstance_name = keygate-shipped-${imap}\n`;
    }
    writeFileSync(join(etc, name), text);
  }
  const master: DovecotUser = { user: 'keygate', password: `master-${randomBytes(12).toString('hex')}` };
  const { pid, logTail, stop } = await launch(dir, join(etc, 'dovecot.conf'), log, [imap, pop3, lmtp], { ...process.env, KEYGATE_UPSTREAM_MASTER_PASSWORD: master.password });
  return { host: '127.0.0.1', imapPort: imap, pop3Port: pop3, lmtpPort: lmtp, imapsPort: 0, pop3sPort: 0, authPort: 0, certPath: join(etc, 'cert.pem'), dir, users: [], master, pid, logTail, stop };
}

/** Settings routing every protocol to the fixture: plaintext, master login, LMTP for SMTP. */
export function dovecotConfig(dc: RunningDovecot, flags: Record<string, unknown> = {}): Config {
  return loadConfig({
    env: {},
    flags: {
      secret: 'test-secret-0123456789abcdef',
      'upstream.imap.host': dc.host,
      'upstream.imap.port': dc.imapPort,
      'upstream.imap.tls': 'none',
      'upstream.pop3.host': dc.host,
      'upstream.pop3.port': dc.pop3Port,
      'upstream.pop3.tls': 'none',
      'upstream.smtp.host': dc.host,
      'upstream.smtp.port': dc.lmtpPort,
      'upstream.smtp.tls': 'none',
      'upstream.smtp.login': 'lmtp',
      'upstream.master.user': dc.master.user,
      'upstream.master.password': dc.master.password,
      'upstream.connectTimeout': '2s',
      'upstream.loginTimeout': '3s',
      ...flags,
    },
  });
}
