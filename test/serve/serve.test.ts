import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { builtCliAvailable, CLI, cleanEnv, ROOT, startServe, type ServeProcess } from '../helpers/cli.js';
import { freePort } from '../helpers/free-port.js';
import { REDIS_SKIP_REASON, redisAvailable, startRedis, type RedisServer } from '../helpers/redis-server.js';
import { TEST_CERT_DIR } from '../helpers/keygate.js';
import { LineClient } from '../helpers/line-client.js';
import { dovecotAvailable } from '../helpers/dovecot.js';

const ACCOUNT = 'alice@example.com';
const built = builtCliAvailable();

function cli(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [CLI, ...args], { env: cleanEnv(), cwd: ROOT, timeout: 20_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`keygate ${args.join(' ')} failed: ${stderr}`));
      else resolve(stdout.trim());
    });
  });
}

interface Ports {
  http: number;
  imap: number;
  imaps: number;
  pop3: number;
  pop3s: number;
  smtp: number;
  smtps: number;
}

async function ports(): Promise<Ports> {
  const taken = new Set<number>();
  const next = async (): Promise<number> => {
    for (;;) {
      const p = await freePort();
      if (!taken.has(p)) {
        taken.add(p);
        return p;
      }
    }
  };
  return { http: await next(), imap: await next(), imaps: await next(), pop3: await next(), pop3s: await next(), smtp: await next(), smtps: await next() };
}

function serveArgs(p: Ports, store: string[], extra: string[] = []): string[] {
  return [
    ...store,
    '--http.port', String(p.http),
    '--imap.port', String(p.imap),
    '--imap.securePort', String(p.imaps),
    '--pop3.port', String(p.pop3),
    '--pop3.securePort', String(p.pop3s),
    '--smtp.port', String(p.smtp),
    '--smtp.securePort', String(p.smtps),
    '--tls.dir', TEST_CERT_DIR,
    '--auth.failureDelay', '10ms',
    ...extra,
  ];
}

function exitWithin(proc: ServeProcess, ms: number): Promise<number | null | 'timeout'> {
  return new Promise((resolve) => {
    if (proc.child.exitCode !== null) return resolve(proc.child.exitCode);
    const t = setTimeout(() => resolve('timeout'), ms);
    proc.child.once('exit', (code) => {
      clearTimeout(t);
      resolve(code);
    });
  });
}

describe.skipIf(!built)('keygate serve (built CLI)', () => {
  let dir: string;
  let db: string[];
  let key: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'keygate-serve-'));
    // Run as root, the local mailbox keeps mail as the user `mail`, which must be able to enter the directory.
    chmodSync(dir, 0o755);
    db = ['--db.path', join(dir, 'keys.db')];
    key = await cli(['tokens', 'issue', ...db, '-d', 'serve test', '-s', 'imap', '-a', ACCOUNT]);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it.skipIf(!dovecotAvailable())('answers IMAP on both ports beside the control plane; SIGTERM says BYE to sessions and exits 0 within the grace period', async () => {
    const p = await ports();
    // With its own mailbox, as a newcomer starts it: the sessions are Dovecot's, and Keygate still ends them.
    const serve = startServe(serveArgs(p, db, ['--shutdownGrace', '3s', '--mailbox', 'local', '--mailboxDir', join(dir, 'mailbox')]));
    try {
      await serve.waitForLine(/Keygate started/);
      const health = await fetch(`http://127.0.0.1:${p.http}/health`).then((r) => r.status);
      expect(health).toBeLessThan(500);

      const plain = await LineClient.connect(p.imap);
      expect(await plain.line()).toMatch(/^\* OK \[CAPABILITY IMAP4rev1 .*STARTTLS.*\] Keygate ready$/);
      expect(await plain.command('a', `LOGIN ${ACCOUNT} ${key}`)).toMatch(/^a OK /);

      const secure = await LineClient.connect(p.imaps, { tls: true });
      expect(await secure.line()).toMatch(/^\* OK .*AUTH=PLAIN.*Keygate ready$/);
      expect(await secure.command('a', `AUTHENTICATE PLAIN ${Buffer.from(`\0${ACCOUNT}\0${key}`).toString('base64')}`)).toMatch(/^a OK /);

      // POP3 and SMTP are up as well.
      for (const port of [p.pop3, p.smtp]) {
        const c = await LineClient.connect(port);
        expect(await c.line(3000)).toMatch(/^(\+OK|220)/);
        c.destroy();
      }

      const started = Date.now();
      serve.child.kill('SIGTERM');
      expect(await plain.rest(4000)).toBe('* BYE Server shutting down\r\n');
      expect(await secure.rest(4000)).toBe('* BYE Server shutting down\r\n');
      expect(await exitWithin(serve, 3000 + 2000)).toBe(0);
      expect(Date.now() - started).toBeLessThan(3000 + 2000);
      expect(serve.output()).toMatch(/Keygate stopped/);
      // Nothing listens any more.
      const refused = await new Promise<boolean>((resolve) => {
        const s = net.connect(p.imap, '127.0.0.1');
        s.once('connect', () => (s.destroy(), resolve(false)));
        s.once('error', () => resolve(true));
      });
      expect(refused).toBe(true);
      // Dovecot went with it.
      expect(serve.output()).toMatch(/local mailbox ready/);
      expect(existsSync(join(dir, 'mailbox', 'keygate.pid'))).toBe(false);
    } finally {
      await serve.stop('SIGKILL');
    }
  });

  it('a login in progress at SIGTERM is answered before the BYE', async () => {
    const p = await ports();
    const serve = startServe(serveArgs(p, db, ['--shutdownGrace', '3s', '--auth.failureDelay', '500ms']));
    try {
      await serve.waitForLine(/Keygate started/);
      const c = await LineClient.connect(p.imap);
      await c.line();
      c.write(`a LOGIN ${ACCOUNT} wrong\r\n`);
      await new Promise((r) => setTimeout(r, 100));
      serve.child.kill('SIGTERM');
      expect(await c.rest(4000)).toBe('a NO [AUTHENTICATIONFAILED] Authentication failed\r\n* BYE Server shutting down\r\n');
      expect(await exitWithin(serve, 5000)).toBe(0);
    } finally {
      await serve.stop('SIGKILL');
    }
  });

  it('exits 1 with one line on stderr when an IMAP port is taken', async () => {
    const p = await ports();
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(p.imaps, '127.0.0.1', r));
    const serve = startServe(serveArgs(p, db));
    try {
      expect(await exitWithin(serve, 15_000)).toBe(1);
      const stderr = serve.output().split('\n').filter((l) => l.startsWith('keygate:'));
      expect(stderr).toHaveLength(1);
      expect(stderr[0]).toMatch(/EADDRINUSE/);
    } finally {
      await serve.stop('SIGKILL');
      await new Promise((r) => blocker.close(r));
    }
  });
});

describe.skipIf(!built || !redisAvailable() || !dovecotAvailable())('two keygate serve processes sharing one Redis', () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(() => redis?.stop());

  it('revoked through the HTTP API of instance A, the IMAP session on instance B ends within 1 s', async () => {
    const store = ['--dbs.redis', redis.url];
    const admin = await cli(['tokens', 'issue', ...store, '-d', 'admin', '-s', '*']);
    const key = await cli(['tokens', 'issue', ...store, '-d', 'phone', '-s', 'imap', '-a', ACCOUNT]);
    const [pa, pb] = [await ports(), await ports()];
    const a = startServe(serveArgs(pa, store, ['--pop3.enabled', 'false', '--smtp.enabled', 'false']));
    // B serves the session, from a mailbox of its own.
    const mailboxDir = mkdtempSync(join(tmpdir(), 'keygate-serve-b-'));
    chmodSync(mailboxDir, 0o755);
    const b = startServe(serveArgs(pb, store, ['--pop3.enabled', 'false', '--smtp.enabled', 'false', '--mailbox', 'local', '--mailboxDir', mailboxDir]));
    try {
      await Promise.all([a.waitForLine(/Keygate started/), b.waitForLine(/Keygate started/)]);
      const c = await LineClient.connect(pb.imaps, { tls: true });
      await c.line();
      expect(await c.command('a', `LOGIN ${ACCOUNT} ${key}`)).toMatch(/^a OK /);

      const list = (await fetch(`http://127.0.0.1:${pa.http}/api/tokens`, { headers: { authorization: `Bearer ${admin}` } }).then((r) => r.json())) as {
        tokens: Array<{ id: string; name?: string; description?: string }>;
      };
      const phone = list.tokens.find((t) => (t.description ?? t.name) === 'phone')!;
      const started = Date.now();
      const res = await fetch(`http://127.0.0.1:${pa.http}/api/tokens/${phone.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${admin}` } });
      expect(res.status).toBe(204);
      expect(await c.line(1000)).toBe('* BYE Session revoked');
      await c.closed;
      expect(Date.now() - started).toBeLessThan(1000);
    } finally {
      await Promise.all([a.stop(), b.stop()]);
      rmSync(mailboxDir, { recursive: true, force: true });
    }
  });
});

if (!redisAvailable()) it.skip(REDIS_SKIP_REASON, () => {});
if (!built) it.skip('dist/cli.js not built: run `npm run build` (npm test does) to run the serve tests', () => {});
