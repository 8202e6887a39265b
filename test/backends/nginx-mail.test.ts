import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { ImapFlow } from 'imapflow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Authenticator } from '../../src/auth/authenticate.js';
import { nginxAuthRoutes } from '../../src/http/routes/nginx-auth.js';
import { issueKey } from '../../src/services/keys.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import type { KeyStore } from '../../src/store/types.js';
import { dovecotAvailable, dovecotConfig, type RunningDovecot, startDovecot } from '../helpers/dovecot.js';
import { freePort } from '../helpers/free-port.js';
import { NGINX, NGINX_MAIL_MODULE } from '../helpers/tools.js';
import { memoryLogger } from './helpers.js';


/**
 * nginx's own mail proxy in front of Dovecot, logging clients in through
 * Keygate's `GET /auth/nginx`: the client presents a Keygate key, nginx asks
 * Keygate, and logs in upstream with the master login Keygate hands back.
 */
describe.skipIf(!NGINX.found || !dovecotAvailable())('IMAP through a real nginx mail proxy using /auth/nginx', () => {
  let dc: RunningDovecot;
  let dir: string;
  let store: KeyStore;
  let app: FastifyInstance;
  let nginx: ChildProcess;
  let imapPort: number;
  let key: string;
  const log = memoryLogger('info');

  beforeAll(async () => {
    NGINX.assertCapable();
    dc = await startDovecot();
    dir = mkdtempSync(join(tmpdir(), 'keygate-nginx-mail-'));
    const config = dovecotConfig(dc, { 'nginx.authSecret': 'nginx-shared-secret-1' });
    store = openSqliteStore(join(dir, 'k.db'));
    await store.ensureAccount('alice@example.com');
    key = (await issueKey(store, 'operator', { name: 'nginx', account: 'alice@example.com', scopes: ['imap'] })).key;

    app = Fastify();
    await app.register(nginxAuthRoutes, { config, authenticator: new Authenticator({ store, logger: log.logger, failureDelayMs: config.auth.failureDelay }) });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const httpPort = (app.server.address() as { port: number }).port;

    imapPort = await freePort();
    mkdirSync(join(dir, 'logs'));
    writeFileSync(
      join(dir, 'nginx.conf'),
      `load_module ${NGINX_MAIL_MODULE};
daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/logs/error.log info;
events { worker_connections 64; }
mail {
  server_name keygate-nginx-test;
  auth_http 127.0.0.1:${httpPort}/auth/nginx;
  auth_http_header X-Keygate-Secret "nginx-shared-secret-1";
  proxy_pass_error_message on;
  server {
    listen 127.0.0.1:${imapPort};
    protocol imap;
    imap_auth plain login;
  }
}
`,
    );
    nginx = spawn('nginx', ['-p', dir, '-e', join(dir, 'logs', 'error.log'), '-c', join(dir, 'nginx.conf')], { stdio: 'ignore' });
    const deadline = Date.now() + 10_000;
    for (;;) {
      const up = await new Promise<boolean>((r) => {
        const s = connect(imapPort, '127.0.0.1', () => {
          s.destroy();
          r(true);
        });
        s.on('error', () => r(false));
      });
      if (up) break;
      if (nginx.exitCode !== null || Date.now() > deadline) throw new Error(`nginx did not start: ${readFileSync(join(dir, 'logs', 'error.log'), 'utf8')}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  });
  afterAll(async () => {
    if (nginx && nginx.exitCode === null) {
      const exited = new Promise((r) => nginx.once('exit', r));
      nginx.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
      if (nginx.exitCode === null) nginx.kill('SIGKILL');
    }
    await app?.close();
    await store?.close();
    await dc?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const client = (pass: string): ImapFlow =>
    new ImapFlow({ host: '127.0.0.1', port: imapPort, secure: false, doSTARTTLS: false, auth: { user: 'alice@example.com', pass }, logger: false });

  it('logs in with a Keygate key and reaches the Dovecot mailbox as the master user', async () => {
    const c = client(key);
    await c.connect();
    try {
      const box = await c.mailboxOpen('INBOX');
      expect(box.path).toBe('INBOX');
    } finally {
      await c.logout();
    }
    expect(dc.logTail(30)).toMatch(/imap-login: Info: Login: user=<alice@example\.com>, method=PLAIN/);
    expect(log.text()).toMatch(/"protocol":"imap","ip":"127\.0\.0\.1","account":"alice@example\.com".*"result":"success"/);
  });

  it('refuses a wrong key (nginx relays Keygate\'s answer)', async () => {
    const c = client('kg_not-a-key');
    await expect(c.connect()).rejects.toThrow();
  });
});
