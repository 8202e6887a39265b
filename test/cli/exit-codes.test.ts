import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sealSecret, secretBox } from '../../src/backends/secret.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { builtCliAvailable, startServe } from '../helpers/cli.js';
import { freePort } from '../helpers/free-port.js';

/*
 * Issue 13, item 8: `keygate serve` exits 2 for what a restart cannot fix (a
 * bad setting, certificate file, secret or prepared token) and 1 for runtime
 * failures (the store unreachable, a port taken), which is what the systemd
 * unit's RestartPreventExitStatus=2 relies on (checked in
 * test/deploy/deploy-files.test.ts). Each prints one line naming the cause.
 */

const NO_LISTENERS = ['--smtp.enabled', 'false', '--imap.enabled', 'false', '--pop3.enabled', 'false'];
const dir = mkdtempSync(join(tmpdir(), 'keygate-exit-'));
const SECRET = 'exit-codes-secret-0123456789';

beforeAll(async () => {
  if (!builtCliAvailable()) throw new Error('dist/cli.js is missing: run `npm run build` (npm test does it)');
  // A store holding sealed upstream credentials: opening it needs the secret they were sealed with.
  const store = openSqliteStore(join(dir, 'sealed.db'));
  await store.createAccount({ address: 'ann@example.com', aliases: [], displayName: null, disabled: false, createdAt: new Date().toISOString(), upstream: null });
  await store.updateAccount('ann@example.com', { upstream: { imap: { login: 'account' }, password: sealSecret(secretBox(SECRET)!, 'upstream-pw', 'ann@example.com') } });
  await store.close();
  writeFileSync(join(dir, 'not-a-cert.pem'), 'not a certificate\n');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function exitOf(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; output: string }> {
  const serve = startServe(['--http.port', String(await freePort()), ...NO_LISTENERS, ...args], env);
  const code = await new Promise<number | null>((resolve) => serve.child.once('exit', (c) => resolve(c)));
  return { code, output: serve.output() };
}

describe.skipIf(!builtCliAvailable())('keygate serve exit codes', () => {
  it.each([
    ['an invalid setting', ['--db.path', join(dir, 'a.db'), '--auth.failureDelay', 'soon'], {}, /keygate: invalid setting auth\.failureDelay/],
    ['an unreadable certificate', ['--db.path', join(dir, 'b.db'), '--tls.cert', join(dir, 'missing.pem'), '--tls.key', join(dir, 'missing.key')], {}, /keygate: invalid setting tls\.cert: cannot read/],
    ['a file that is not a certificate', ['--db.path', join(dir, 'c.db'), '--tls.cert', join(dir, 'not-a-cert.pem'), '--tls.key', join(dir, 'not-a-cert.pem')], {}, /keygate: invalid setting tls\.cert: .*not a usable certificate/],
    ['a malformed prepared token', ['--db.path', join(dir, 'd.db')], { KEYGATE_PREPARED_TOKEN: 'garbage!' }, /keygate: prepared token #1: malformed token blob/],
    ['no secret for sealed credentials', ['--db.path', join(dir, 'sealed.db')], {}, /keygate: KEYGATE_SECRET \(setting secret\) is not set/],
    ['the wrong secret for sealed credentials', ['--db.path', join(dir, 'sealed.db')], { KEYGATE_SECRET: 'another-secret-0123456789' }, /keygate: KEYGATE_SECRET \(setting secret\) is not the secret/],
  ] as const)('%s: exit 2 (do not restart), one line', async (_name, args, env, pattern) => {
    const { code, output } = await exitOf([...args], { ...env });
    expect(code, output).toBe(2);
    expect(output).toMatch(pattern);
    expect(output.trim().split('\n').filter((l) => l.startsWith('keygate: '))).toHaveLength(1);
  });

  it('nothing was created by a configuration error before the store opened', () => {
    for (const f of ['a.db', 'd.db']) expect(existsSync(join(dir, f)), f).toBe(false);
  });

  it.each([
    ['an unreachable Redis', [], { KEYGATE_REDIS_URL: 'redis://127.0.0.1:1' }, /keygate: Redis unavailable/],
    ['the control-plane port taken', ['--db.path', join(dir, 'e.db')], {}, /keygate: .*EADDRINUSE/],
  ] as const)('%s: exit 1 (a restart may succeed)', async (name, args, env, pattern) => {
    const extra: string[] = [];
    let blocker: import('node:net').Server | undefined;
    if (name.startsWith('the control-plane port')) {
      const net = await import('node:net');
      blocker = net.createServer();
      const port = await freePort();
      await new Promise<void>((r) => blocker!.listen(port, '127.0.0.1', () => r()));
      extra.push('--http.port', String(port));
    }
    try {
      const { code, output } = await exitOf([...args, ...extra], { ...env });
      expect(code, output).toBe(1);
      expect(output).toMatch(pattern);
    } finally {
      blocker?.close();
    }
  });
});
