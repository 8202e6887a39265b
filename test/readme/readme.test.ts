import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeExport } from '../../src/keys/export-codec.js';
import { builtCliAvailable, CLI, cleanEnv, ROOT, startServe, type ServeProcess } from '../helpers/cli.js';
import { SELF_SIGNED_CERT, SELF_SIGNED_KEY } from '../../src/tls/selfsigned.js';
import { DOVECOT as DOVECOT_TOOL, DOVECOT_SKIP_REASON, dovecotAvailable, startDovecot, startShippedDovecot, type RunningDovecot } from '../helpers/dovecot.js';
import { EXIM, eximBinary, writeEximConfig } from '../helpers/exim.js';
import { TEST_CERT_DIR } from '../helpers/keygate.js';
import { POSTFIX, startPostfix, type RunningPostfix } from '../helpers/postfix.js';
import { freePort } from '../helpers/free-port.js';
import { NGINX, SWAKS, type Tool } from '../helpers/tools.js';

/*
 * Issue 7, item 6: every README block fenced as ```sh runnable id=NAME``` is
 * run with bash (`set -euo pipefail`), in README order, against a real
 * Keygate (`node dist/cli.js serve`, SQLite, free ports). The blocks run one
 * after another as in one terminal: the shell variables a block sets (KEY,
 * ADMIN, …) are handed to the next. Each block must exit 0, and its output is
 * checked against EXPECT below (a runnable block without an entry there
 * fails, so nothing is "run" without being checked).
 *
 * The recipes read KEYGATE_URL and SMTP_PORT, … with the dev defaults; this
 * test sets them to its own ports. `keygate` is a PATH shim for
 * `node dist/cli.js`; the server's settings (store, ports, certificate dir)
 * are KEYGATE_* variables in every block's environment, as a deployment
 * would set them, so the CLI uses the server's store.
 *
 * The fronting recipes restart Keygate themselves (`keygate serve` with
 * upstream settings, in a subshell that stops it): before the first of them
 * this test stops its own Keygate, so they get its ports. They need a
 * private Dovecot (test/helpers/dovecot.ts, STARTTLS with a certificate
 * trusted through NODE_EXTRA_CA_CERTS, reached as `localhost`), and the
 * nginx one nginx with the mail module; without those they are skipped.
 */

interface Block {
  /** 1-based line of the opening fence. */
  line: number;
  lang: string;
  info: string[];
  id: string | null;
  runnable: boolean;
  code: string;
}

const README = readFileSync(join(ROOT, 'README.md'), 'utf8');

function fencedBlocks(markdown: string): Block[] {
  const out: Block[] = [];
  const lines = markdown.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const open = /^(`{3,})(.*)$/.exec(lines[i]!);
    if (!open) continue;
    const fence = open[1]!;
    const info = open[2]!.trim().split(/\s+/).filter(Boolean);
    const body: string[] = [];
    let j = i + 1;
    while (j < lines.length && !lines[j]!.startsWith(fence)) body.push(lines[j++]!);
    const id = info.find((w) => w.startsWith('id='))?.slice(3) ?? null;
    out.push({ line: i + 1, lang: info[0] ?? '', info, id, runnable: info.includes('runnable'), code: body.join('\n') });
    i = j;
  }
  return out;
}

function section(markdown: string, heading: string): string {
  const start = markdown.indexOf(`\n${heading}\n`);
  if (start < 0) return '';
  const next = markdown.indexOf('\n## ', start + heading.length + 2);
  return markdown.slice(start, next < 0 ? undefined : next);
}

const ALL = fencedBlocks(README);
const GUIDE = fencedBlocks(section(README, '## User guide'));
const RUNNABLE = ALL.filter((b) => b.runnable);

const has = (bin: string, args = ['--version']) => spawnSync(bin, args, { stdio: 'ignore' }).status === 0;
const TOOLS: Record<string, boolean> = {
  curl: has('curl'),
  jq: has('jq'),
  openssl: has('openssl', ['version']),
  swaks: SWAKS.found,
};
/** Blocks that start their own Keygate (they take over the test server's ports). */
const restartsKeygate = (b: Block): boolean => /^\s*keygate serve\b/m.test(b.code);
const needsDovecot = (b: Block): boolean => /\bDOVECOT_/.test(b.code);
/** The Postfix and Exim recipes get a private Postfix and a private Exim configuration (test/helpers/postfix.ts, exim.ts). */
const needsPostfix = (b: Block): boolean => /\bPOSTFIX_/.test(b.code);
const needsExim = (b: Block): boolean => /\bEXIM_/.test(b.code);
const usesNginx = (b: Block): boolean => /(^|[\s|(])nginx\s/m.test(b.code);
const DOVECOT = RUNNABLE.some(needsDovecot) && dovecotAvailable();
/** The first tool a block needs that this machine lacks, or null. */
function missingTool(block: Block): string | null {
  for (const [tool, ok] of Object.entries(TOOLS)) if (!ok && new RegExp(`(^|[\\s|($])${tool}\\b`, 'm').test(block.code)) return `${tool} not found on PATH`;
  if (needsDovecot(block) && !DOVECOT) return DOVECOT_SKIP_REASON;
  if (usesNginx(block) && !NGINX.found) return NGINX.skipReason;
  if (needsPostfix(block) && !POSTFIX.found) return POSTFIX.skipReason;
  if (needsExim(block) && !EXIM.found) return EXIM.skipReason;
  return null;
}
/** The installed programs a block needs more of than their presence: lacking it, the block fails naming the package. */
function capabilitiesNeeded(block: Block): Tool[] {
  const uses = [
    /(^|[\s|($])swaks\b/m.test(block.code) && SWAKS,
    usesNginx(block) && NGINX,
    needsDovecot(block) && DOVECOT_TOOL,
    needsPostfix(block) && POSTFIX,
    needsExim(block) && EXIM,
  ];
  return uses.filter((t): t is Tool => t !== false);
}

/** Every file under `dir`, as paths relative to it. */
function filesUnder(dir: string, prefix = ''): string[] {
  return readdirSync(join(dir, prefix), { withFileTypes: true }).flatMap((e) => {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    return e.isDirectory() ? filesUnder(dir, rel) : [rel];
  });
}

/** Untracked files git sees in the checkout (ignored ones are not listed). */
function untrackedInCheckout(): string[] {
  const r = spawnSync('git', ['-C', ROOT, 'ls-files', '--others', '--exclude-standard'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.split('\n').filter(Boolean) : [];
}

interface Ports {
  http: number;
  smtp: number;
  smtps: number;
  imap: number;
  imaps: number;
  pop3: number;
  pop3s: number;
}

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  /** The block's working directory (files it wrote). */
  cwd: string;
}

type Check = (r: RunResult, p: Ports) => void | Promise<void>;

const b64url = '[A-Za-z0-9_-]';

/** The private Dovecot the fronting recipes log in to (when installed). */
let dovecot: RunningDovecot | undefined;
/** The private Dovecot the oauth2 recipe configures, and the private Postfix the Postfix recipe does. */
let oauthDovecot: RunningDovecot | undefined;
let postfix: RunningPostfix | undefined;

/** The Keygate a fronting recipe started: up, logged a login, stopped, and no key in its log. */
function frontingKeygateLog(cwd: string): void {
  const log = readFileSync(join(cwd, 'keygate.log'), 'utf8');
  expect(log).toContain('Keygate started');
  expect(log).toMatch(/"signal":"SIGTERM"/);
  expect(log).not.toMatch(/kg_[0-9A-Za-z]{49}/);
}

/** What each runnable block must show. */
const EXPECT: Record<string, Check> = {
  'local-mailbox': ({ stdout }) => {
    // swaks: the message accepted (after DATA), then Bob reads it from his own mailbox.
    expect(stdout).toMatch(/^<~ +250 2\.0\.0 /m);
    expect(stdout).toMatch(/^a OK .*Logged in\r?$/m);
    expect(stdout).toMatch(/^\* 1 EXISTS\r?$/m);
    expect(stdout).toMatch(/^Subject: Hello Bob\r?$/m);
    expect(stdout).toMatch(/^c OK Fetch completed/m);
  },
  'first-key': ({ stdout }) => {
    expect(stdout).toMatch(/^kg_[0-9A-Za-z]{49}$/m);
    expect(stdout).toMatch(/^\S+\s+Alice's laptop\s+alice@example\.com\s+app\s+active\b/m);
  },
  autoconfig: ({ stdout }, p) => {
    expect(stdout).toContain('<clientConfig version="1.1">');
    expect(stdout).toContain('<incomingServer type="imap">');
    expect(stdout).toContain(`<port>${p.imaps}</port>`);
    expect(stdout).toContain('<outgoingServer type="smtp">');
    expect(stdout).toContain('<username>%EMAILADDRESS%</username>');
  },
  autodiscover: ({ stdout }, p) => {
    expect(stdout).toContain('responseschema/2006a');
    for (const t of ['IMAP', 'POP3', 'SMTP']) expect(stdout).toContain(`<Type>${t}</Type>`);
    expect(stdout).toContain(`<Port>${p.imaps}</Port>`);
  },
  mobileconfig: ({ stdout, stderr, cwd }, p) => {
    expect(stderr).toMatch(/Verification successful/);
    expect(stdout).toMatch(new RegExp(`<key>IncomingMailServerPortNumber</key>\\s*\\n\\s*<integer>${p.imaps}</integer>`));
    expect(stdout).toMatch(new RegExp(`<key>OutgoingMailServerPortNumber</key>\\s*\\n\\s*<integer>${p.smtps}</integer>`));
    expect(readFileSync(join(cwd, 'alice.mobileconfig'))[0]).toBe(0x30); // DER SEQUENCE, not JSON
  },
  'setup-link': async ({ stdout, cwd }, p) => {
    const url = new RegExp(`^http://127\\.0\\.0\\.1:${p.http}/setup/${b64url}{43}$`, 'm').exec(stdout)?.[0];
    expect(url, stdout).toBeDefined();
    expect(readFileSync(join(cwd, 'setup-qr.svg'), 'utf8')).toMatch(/<svg[\s\S]*<\/svg>/);
    expect(readFileSync(join(cwd, 'setup-qr.png')).subarray(0, 8)).toEqual(Buffer.from('89504e470d0a1a0a', 'hex'));
    // The link the recipe printed serves the profile once, then 410.
    const first = await fetch(url!);
    expect(first.status).toBe(200);
    expect(first.headers.get('content-type')).toBe('application/x-apple-aspen-config');
    expect((await fetch(url!)).status).toBe(410);
  },
  'swaks-starttls': ({ stdout }) => {
    expect(stdout).toMatch(/^=== TLS started/m);
    expect(stdout).toMatch(/^<~ +235 /m);
  },
  'swaks-implicit': ({ stdout }) => {
    expect(stdout).toMatch(/^=== TLS started/m);
    expect(stdout).toMatch(/^ ~> AUTH LOGIN/m);
    expect(stdout).toMatch(/^<~ +235 /m);
  },
  'imap-starttls': ({ stdout }) => {
    expect(stdout).toMatch(/^a OK .*Logged in\r?$/m);
    // With the local mailbox, Dovecot answers once Alice is logged in.
    expect(stdout).toMatch(/^b OK Logout completed/m);
  },
  'imap-implicit': ({ stdout }) => {
    expect(stdout).toMatch(/^\* OK .*Keygate ready\r?$/m);
    expect(stdout).toMatch(/^a OK .*Logged in\r?$/m);
  },
  pop3: ({ stdout }) => {
    expect(stdout.match(/^\+OK Logged in\r?$/gm)).toHaveLength(2);
    expect(stdout.match(/^\+OK Logging out\.?\r?$/gm)).toHaveLength(2);
  },
  'rest-api': ({ stdout }) => {
    expect(stdout).toMatch(/"serverName":"127\.0\.0\.1"/);
    expect(stdout).toMatch(/"name":"Alice's laptop"/);
    expect(stdout).toMatch(/"name":"Thunderbird at work","apiKey":"kg_/);
    expect(stdout).toMatch(/^204$/m);
    expect(stdout).toMatch(/"name":"Alice’s Pixel","scopes":\["smtp","imap","pop3"\],"apiKey":"kg_/);
    expect(stdout).toMatch(/^[1-9]\d*$/m);
    expect(stdout).toMatch(/"name":"Admin","account":null/);
  },
  metrics: ({ stdout }) => {
    expect(stdout).toMatch(/^keygate_auth_attempts_total\{(?=.*protocol="smtp")(?=.*result="success").*\} [1-9]/m);
    expect(stdout).toMatch(/^keygate_auth_attempts_total\{(?=.*protocol="imap")(?=.*result="success").*\} [1-9]/m);
  },
  dovecot: ({ stdout, cwd }) => {
    // keygate check tried the upstream first, as Alice.
    expect(stdout).toMatch(/^ok    store: /m);
    expect(stdout).toMatch(/^ok    imap upstream: localhost:\d+ \(starttls\): master login as alice@example\.com accepted$/m);
    expect(stdout).toMatch(/^ok    pop3 upstream: localhost:\d+ \(starttls\): master login as alice@example\.com accepted$/m);
    expect(stdout).not.toMatch(/^FAIL/m);
    expect(stdout).toMatch(/^a OK .*Logged in\r?$/m);
    // Dovecot's answers, relayed: Keygate's own IMAP serves no mailbox.
    expect(stdout).toMatch(/^\* \d+ EXISTS\r?$/m);
    expect(stdout).toMatch(/^b OK \[READ-ONLY\] Examine completed/m);
    expect(stdout).toMatch(/^c OK Logout completed/m);
    // Keygate logged in as Alice (master user), over STARTTLS.
    expect(dovecot!.logTail(50)).toMatch(/imap-login: Info: Login: user=<alice@example\.com>, method=PLAIN, .*, TLS, /);
    frontingKeygateLog(cwd);
  },
  nginx: ({ stdout, cwd }) => {
    expect(stdout).toMatch(/^\* \d+ EXISTS\r?$/m);
    expect(stdout).toMatch(/^\* OK \[UIDVALIDITY \d+\]/m);
    // nginx logged in as Alice (master user), in plaintext as nginx does.
    expect(dovecot!.logTail(50)).toMatch(/imap-login: Info: Login: user=<alice@example\.com>, method=PLAIN, rip=127\.0\.0\.1, lip=127\.0\.0\.1, mpid=\d+, secured, session=/); // plaintext on loopback: "secured", not "TLS"
    frontingKeygateLog(cwd);
    const log = readFileSync(join(cwd, 'keygate.log'), 'utf8');
    expect(log).toMatch(/"protocol":"imap".*"account":"alice@example\.com".*"result":"success"/);
  },
  bearer: ({ stdout }) => {
    expect(stdout).toMatch(/^< A\d+ OK .*Logged in\r?$/m);
    expect(stdout).toMatch(/^< 235 2\.7\.0 Authentication successful\r?$/m);
  },
  postfix: ({ stdout, cwd }) => {
    expect(stdout).toMatch(/^<~ +235 2\.7\.0 Authentication successful/m);
    expect(stdout).toMatch(/^<~ +250 2\.0\.0 Ok: queued as [0-9A-F]+/m);
    expect(postfix!.maillog()).toMatch(/sasl_method=PLAIN, sasl_username=alice@example\.com/);
    frontingKeygateLog(cwd);
    expect(readFileSync(join(cwd, 'keygate.log'), 'utf8')).toMatch(/"protocol":"smtp".*"account":"alice@example\.com".*"result":"success"/);
  },
  exim: ({ stdout, cwd }) => {
    expect(stdout).toMatch(/^<- +235 Authentication succeeded/m);
    expect(stdout).toMatch(/^<- +250 OK id=/m);
    frontingKeygateLog(cwd);
    expect(readFileSync(join(cwd, 'keygate.log'), 'utf8')).toMatch(/"protocol":"smtp".*"account":"alice@example\.com".*"result":"success"/);
  },
  'dovecot-oauth2': ({ stdout, cwd }) => {
    expect(stdout, oauthDovecot!.logTail(30)).toMatch(/^a OK .*Logged in\r?$/m);
    expect(oauthDovecot!.logTail(50)).toMatch(/imap-login: Info: Login: user=<alice@example\.com>, method=XOAUTH2/);
    frontingKeygateLog(cwd);
    expect(readFileSync(join(cwd, 'keygate.log'), 'utf8')).toMatch(/"introspection":true.*"active":true/);
  },
  'prepared-token': ({ stdout, cwd }) => {
    // The names only are printed; .env holds the values, once each, readable by its owner only.
    expect(stdout).toBe('KEYGATE_UPSTREAM_MASTER_PASSWORD\nKEYGATE_PREPARED_TOKEN\n');
    const env = readFileSync(join(cwd, '.env'), 'utf8');
    expect(env).toMatch(/^KEYGATE_UPSTREAM_MASTER_PASSWORD=[0-9a-f]{48}$/m);
    const blob = /^KEYGATE_PREPARED_TOKEN=(\S+)$/m.exec(env)?.[1];
    expect(blob, env).toBeDefined();
    expect(statSync(join(cwd, '.env')).mode & 0o077).toBe(0);
    expect(existsSync(join(cwd, 'prepare.db'))).toBe(false);
    // A real export: the record of the key just issued, without the key.
    const record = decodeExport(blob!);
    expect(record).toMatchObject({ name: 'Ops admin', scopes: ['*'] });
    expect(blob).not.toMatch(/kg_[0-9A-Za-z]{49}/);
  },
};

describe('README', () => {
  it('has a User guide between the reference workflow and Keys and scopes', () => {
    const order = ['## First key, the reference workflow', '## User guide', '## Keys and scopes'].map((h) => README.indexOf(`\n${h}\n`));
    expect(order.every((i) => i > 0)).toBe(true);
    expect([...order].sort((a, b) => a - b)).toEqual(order);
  });

  it('marks every shell block of the User guide runnable (with an id and a check here) or not-runnable', () => {
    const shell = GUIDE.filter((b) => ['sh', 'bash', 'shell'].includes(b.lang));
    expect(shell.length).toBeGreaterThan(10);
    for (const b of shell) expect(b.runnable || b.info.includes('not-runnable'), `block at User guide line ${b.line}: ${b.info.join(' ')}`).toBe(true);
    const ids = RUNNABLE.map((b) => b.id);
    for (const id of ids) {
      expect(id, 'every runnable block has an id=').not.toBeNull();
      expect(EXPECT, `no check for runnable block ${id}`).toHaveProperty(id!);
    }
    expect(new Set(ids).size).toBe(ids.length);
    expect(Object.keys(EXPECT).filter((id) => !ids.includes(id)), 'checks for blocks that are gone').toEqual([]);
  });

  it('the YAML blocks parse (Prometheus scrape config with a bearer credential)', () => {
    const yamls = GUIDE.filter((b) => b.lang === 'yaml');
    expect(yamls.length).toBeGreaterThan(0);
    for (const b of yamls) parseYaml(b.code);
    const scrape = parseYaml(yamls.find((b) => b.code.includes('scrape_configs'))!.code) as {
      scrape_configs: { job_name: string; authorization: { type: string; credentials_file: string }; static_configs: { targets: string[] }[] }[];
    };
    expect(scrape.scrape_configs[0]).toMatchObject({ job_name: 'keygate', authorization: { type: 'Bearer' } });
  });

  it('lists the apt packages .ci/run installs, no more and no fewer', () => {
    const ci = /^APT_PACKAGES=\(([^)]*)\)/m.exec(readFileSync(join(ROOT, '.ci', 'run'), 'utf8'))?.[1] ?? '';
    const listed = /^apt-get install --no-install-recommends ((?:.*\\\n)*.*)$/m.exec(README)?.[1] ?? '';
    const words = (text: string): string[] => text.replace(/#.*$/gm, '').split(/[\s\\]+/).filter(Boolean).sort();
    expect(words(ci)).toContain('libnet-ssleay-perl');
    expect(words(listed)).toEqual(words(ci));
  });

  it('names only KEYGATE_* variables the config module has', async () => {
    const { knownEnvVars } = await import('../../src/config.js');
    const known = new Set(knownEnvVars());
    const used = new Set<string>();
    for (const b of GUIDE) for (const m of b.code.matchAll(/\b(KEYGATE_[A-Z0-9_]+)=/g)) used.add(m[1]!);
    for (const m of section(README, '## User guide').matchAll(/`(KEYGATE_[A-Z0-9_]+)`/g)) used.add(m[1]!);
    expect(used.size).toBeGreaterThan(5);
    // KEYGATE_URL is the recipes' own variable (where the control plane is), not a setting.
    expect([...used].filter((v) => !known.has(v) && v !== 'KEYGATE_URL')).toEqual([]);
  });
});

// The guide's Keygate runs with its own mailbox (--mailbox local): without Dovecot, its recipes have nothing to log in to.
describe.skipIf(!builtCliAvailable() || !dovecotAvailable())('README runnable blocks against a real Keygate', () => {
  let dir: string;
  let work: string;
  let home: string;
  let untrackedBefore: string[];
  let state: string;
  let ports: Ports;
  let serve: ServeProcess;
  let env: NodeJS.ProcessEnv;
  let settings: Record<string, string>;
  /** The test's own Keygate runs with its mailbox, as the guide has the reader start it (a flag, so the fronting recipes' `keygate serve` runs without). */
  const SERVE_ARGS = ['--mailbox', 'local'];
  let baseline: string[];
  let failedBefore: string | null = null;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'keygate-readme-'));
    // Run as root, the local mailbox keeps mail as the user `mail`, which must be able to enter KEYGATE_HOME.
    chmodSync(dir, 0o755);
    // The scratch directory the guide has the reader run the recipes in, and KEYGATE_HOME (the checkout, for a reader).
    work = join(dir, 'work');
    mkdirSync(work);
    home = join(dir, 'home');
    mkdirSync(home);
    untrackedBefore = untrackedInCheckout();
    state = join(dir, 'state.sh');
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'keygate'), `#!/bin/sh\nexec '${process.execPath}' '${CLI}' "$@"\n`);
    chmodSync(join(bin, 'keygate'), 0o755);

    const taken = new Set<number>();
    while (taken.size < 7) taken.add(await freePort());
    const [http, smtp, smtps, imap, imaps, pop3, pop3s] = [...taken] as [number, number, number, number, number, number, number];
    ports = { http, smtp, smtps, imap, imaps, pop3, pop3s };
    // The server's settings, as a deployment sets them: the test's Keygate and the
    // ones the fronting recipes start read the same store and certificate (under
    // KEYGATE_HOME, as the guide tells the reader to set it) and use the same ports.
    // What clients are told follows the listener ports: no public.* here.
    settings = {
      KEYGATE_HOME: home,
      KEYGATE_HOSTNAME: '127.0.0.1',
      KEYGATE_HTTP_PORT: String(http),
      KEYGATE_AUTH_FAILURE_DELAY: '10ms',
      KEYGATE_RATE_LIMIT_CREDENTIALS_MAX: '1000',
    };
    for (const [name, port, securePort] of [['SMTP', smtp, smtps], ['IMAP', imap, imaps], ['POP3', pop3, pop3s]] as const) {
      settings[`KEYGATE_${name}_PORT`] = String(port);
      settings[`KEYGATE_${name}_SECURE_PORT`] = String(securePort);
    }
    serve = startServe(SERVE_ARGS, settings);
    await serve.waitForLine(/Keygate started/, 20_000);

    // The fronting recipes' own variables: where Dovecot and nginx listen.
    const fronting: Record<string, string> = {};
    // A Dovecot lacking a package fails the blocks that need it, not this hook.
    // Dovecot from the shipped deploy/dovecot/ files, as the recipe tells the reader to run it.
    if (DOVECOT && DOVECOT_TOOL.missing === null) {
      dovecot = await startShippedDovecot();
      Object.assign(fronting, {
        DOVECOT_HOST: 'localhost', // the name in its certificate
        DOVECOT_IMAP_PORT: String(dovecot.imapPort),
        DOVECOT_POP3_PORT: String(dovecot.pop3Port),
        DOVECOT_MASTER_PASSWORD: dovecot.master.password,
        NODE_EXTRA_CA_CERTS: dovecot.certPath!, // Keygate checks Dovecot's certificate
        NGINX_IMAP_PORT: String(await freePort()),
      });
    }

    // The MTA recipes' own variables: a private Postfix, a private Exim configuration, a second private Dovecot.
    const certs = TEST_CERT_DIR;
    if (POSTFIX.found && POSTFIX.missing === null) {
      // Its own submission service is left as it is; the recipe adds the one it names and reloads.
      postfix = await startPostfix({ saslPath: 'inet:127.0.0.1:9', tls: { cert: join(certs, SELF_SIGNED_CERT), key: join(certs, SELF_SIGNED_KEY) } });
      const port = await freePort();
      Object.assign(fronting, { POSTFIX_CONFIG: join(postfix.dir, 'conf'), SUBMISSION: `127.0.0.1:${port}`, SUBMISSION_PORT: String(port), SASL_PORT: String(await freePort()) });
    }
    if (EXIM.found && EXIM.missing === null) {
      const eximDir = join(dir, 'exim');
      mkdirSync(eximDir);
      chmodSync(dir, 0o755);
      const authConf = join(eximDir, '30_keygate');
      Object.assign(fronting, { EXIM: eximBinary(), EXIM_FLAGS: `-C ${writeEximConfig(eximDir, `.include ${authConf}\n`)}`, EXIM_AUTH_CONF: authConf, EXIM_UPDATE: 'true', SASL_SOCKET: join(dir, 'auth-client') });
    }
    if (DOVECOT && DOVECOT_TOOL.missing === null) {
      oauthDovecot = await startDovecot({ ssl: true });
      Object.assign(fronting, { DOVECOT_CONF: join(oauthDovecot.dir, 'dovecot.conf'), OAUTH_DOVECOT_PORT: String(oauthDovecot.imapPort) });
    }

    env = cleanEnv({
      ...settings,
      ...fronting,
      PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}`,
      KEYGATE_URL: `http://127.0.0.1:${http}`,
      SMTP_PORT: String(smtp),
      SMTPS_PORT: String(smtps),
      IMAP_PORT: String(imap),
      IMAPS_PORT: String(imaps),
      POP3_PORT: String(pop3),
      POP3S_PORT: String(pop3s),
    });
    baseline = spawnSync('bash', ['-c', 'compgen -v'], { env, encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
  });
  afterAll(async () => {
    await serve?.stop();
    await dovecot?.stop();
    await oauthDovecot?.stop();
    await postfix?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Runs one block as a user would after the ones before it: their variables set, `set -euo pipefail`. */
  function run(block: Block): Promise<RunResult> {
    const skip = [...baseline, '__kg_v'].join(' ');
    const script = [
      'set -euo pipefail',
      `if [ -f '${state}' ]; then source '${state}'; fi`,
      `# --- README.md line ${block.line} ---`,
      block.code,
      '# --- hand the variables set so far to the next block ---',
      `for __kg_v in $(compgen -v); do case ' ${skip} ' in *" $__kg_v "*) continue;; esac; declare -p "$__kg_v"; done > '${state}'`,
    ].join('\n');
    const file = join(dir, `block-${block.id}.sh`);
    writeFileSync(file, script);
    // In its own process group, so a block that fails or hangs leaves nothing
    // running: the servers a recipe starts in the background are in it too.
    const child = spawn('bash', [file], { env, cwd: work, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    const killGroup = (signal: NodeJS.Signals): void => {
      try {
        process.kill(-child.pid!, signal);
      } catch {
        // nothing left in the group
      }
    };
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        stderr += '\n[readme test] timed out after 20 s: stopped the block and everything it started';
        killGroup('SIGKILL');
      }, 20_000);
      child.once('close', (code, signal) => {
        clearTimeout(timer);
        killGroup('SIGKILL');
        resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr, cwd: work });
      });
    });
  }

  for (const block of RUNNABLE) {
    const missing = missingTool(block);
    if (missing) {
      it.skip(`${block.id} (README line ${block.line}): ${missing}`, () => {});
      continue;
    }
    it(`${block.id} (README line ${block.line})`, async () => {
      expect(failedBefore, `an earlier block failed (${failedBefore}); this one depends on it`).toBeNull();
      try {
        for (const tool of capabilitiesNeeded(block)) tool.assertCapable();
        // The recipe restarts Keygate with new settings: ours makes way (its log stays readable).
        if (restartsKeygate(block)) await serve.stop();
        const r = await run(block);
        expect(r.code, `exit ${r.code}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`).toBe(0);
        await EXPECT[block.id!]!(r, ports);
        // The reader goes back to their own Keygate for the recipes that follow.
        if (restartsKeygate(block)) {
          serve = startServe(SERVE_ARGS, settings);
          await serve.waitForLine(/Keygate started/, 20_000);
        }
      } catch (err) {
        failedBefore ??= block.id;
        throw err;
      }
    });
  }

  it('running a recipe again adds no duplicate line to .env', async () => {
    const block = RUNNABLE.find((b) => b.id === 'prepared-token')!;
    const before = readFileSync(join(work, '.env'), 'utf8');
    const again = await run(block);
    expect(again.code, again.stderr).toBe(0);
    const after = readFileSync(join(work, '.env'), 'utf8');
    for (const name of ['KEYGATE_UPSTREAM_MASTER_PASSWORD', 'KEYGATE_PREPARED_TOKEN']) expect(after.match(new RegExp(`^${name}=`, 'gm')), name).toHaveLength(1);
    // The password is made once and kept; the prepared token is replaced.
    expect(after.split('\n')[0]).toBe(before.split('\n')[0]);
    expect(after).not.toBe(before);
  });

  it('every file the recipes wrote would be git-ignored in the checkout, and none was written there', () => {
    const written = filesUnder(work);
    expect(written).toEqual(expect.arrayContaining(['.env', 'setup-qr.svg', 'setup-qr.png']));
    const check = spawnSync('git', ['-C', ROOT, 'check-ignore', '--no-index', '--stdin'], { input: written.join('\n'), encoding: 'utf8' });
    const ignored = check.stdout.split('\n').filter(Boolean);
    expect(written.filter((f) => !ignored.includes(f))).toEqual([]);
    expect(untrackedInCheckout().filter((f) => !untrackedBefore.includes(f))).toEqual([]);
  });

  it('left no key in the server log', () => {
    expect(existsSync(state)).toBe(true);
    const keys = [...readFileSync(state, 'utf8').matchAll(/kg_[0-9A-Za-z]{49}/g)].map((m) => m[0]);
    expect(keys.length).toBeGreaterThan(0);
    const log = serve.output();
    for (const k of keys) expect(log).not.toContain(k);
  });
});

if (!builtCliAvailable()) it.skip('dist/cli.js not built: run `npm run build` (npm test does) to run the README blocks', () => {});
