import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KEY_RE } from '../../src/keys/format.js';
import { builtCliAvailable, runCli, startServe } from '../helpers/cli.js';
import { freePort } from '../helpers/free-port.js';
import { redisAvailable, redisCli, startRedis, startRedisCluster } from '../helpers/redis-server.js';

const NO_LISTENERS = ['--smtp.enabled', 'false', '--imap.enabled', 'false', '--pop3.enabled', 'false'];

function curl(args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile('curl', ['-s', '-S', '-i', '--max-time', '10', ...args], (err, stdout) => resolve({ code: err ? 1 : 0, out: stdout }));
  });
}

interface StoreTarget {
  name: string;
  /** Flags for the store the token is issued in. */
  issueFlags(): string[];
  /** Flags for a fresh, empty store the prepared token is imported into. */
  freshFlags(): Promise<string[]>;
  setup(): Promise<void>;
  teardown(): Promise<void>;
}

const dir = mkdtempSync(join(tmpdir(), 'keygate-workflow-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const sqliteTarget: StoreTarget = {
  name: 'sqlite',
  issueFlags: () => ['--db.path', join(dir, 'issue.db')],
  freshFlags: async () => ['--db.path', join(dir, 'fresh.db')],
  setup: async () => {},
  teardown: async () => {},
};

let redis: Awaited<ReturnType<typeof startRedis>> | undefined;
const redisTarget: StoreTarget = {
  name: 'redis',
  issueFlags: () => ['--dbs.redis', `${redis!.url}/0`],
  freshFlags: async () => ['--dbs.redis', `${redis!.url}/1`],
  setup: async () => {
    redis = await startRedis();
  },
  teardown: async () => redis?.stop(),
};

let cluster: Awaited<ReturnType<typeof startRedisCluster>> | undefined;
const clusterTarget: StoreTarget = {
  name: 'redis cluster',
  issueFlags: () => ['--dbs.redis', cluster!.url],
  freshFlags: async () => {
    // The cluster has one keyspace: empty it so the prepared token lands in a fresh store.
    for (const p of cluster!.ports) await redisCli(p, 'FLUSHALL');
    return ['--dbs.redis', cluster!.url];
  },
  setup: async () => {
    cluster = await startRedisCluster();
  },
  teardown: async () => cluster?.stop(),
};


beforeAll(() => {
  if (!builtCliAvailable()) throw new Error('dist/cli.js is missing: run `npm run build` (npm test does it)');
});

describe.each([
  [sqliteTarget, true],
  [redisTarget, redisAvailable()],
  [clusterTarget, redisAvailable()],
] as const)('reference token workflow on $name', (target, available) => {
  beforeAll(async () => {
    if (available) await target.setup();
  }, 90_000);
  afterAll(async () => {
    if (available) await target.teardown();
  });

  it.skipIf(!available)('issue → export → serve a fresh store with the prepared token → the original key works', { timeout: 90_000 }, async () => {
    const issued = await runCli(['tokens', 'issue', '-d', 'Production API', '-s', '*', ...target.issueFlags()]);
    expect(issued.stderr).toBe('');
    const token = issued.stdout.trim();
    expect(token).toMatch(KEY_RE);
    const exported = await runCli(['tokens', 'export', '-t', token, ...target.issueFlags()]);
    expect(exported.code).toBe(0);
    const blob = exported.stdout.trim();

    // A second token shows several prepared tokens, comma and whitespace separated.
    const metricsToken = (await runCli(['tokens', 'issue', '-d', 'Prometheus', '-s', 'metrics', ...target.issueFlags()])).stdout.trim();
    const metricsBlob = (await runCli(['tokens', 'export', '-t', metricsToken, ...target.issueFlags()])).stdout.trim();

    const fresh = await target.freshFlags();
    const port = await freePort();
    const serve = startServe(['--http.port', String(port), ...NO_LISTENERS, ...fresh], { KEYGATE_PREPARED_TOKEN: `${blob}, \n${metricsBlob}` });
    try {
      await serve.waitForLine(/"msg":"Keygate started"/);
      const imported = serve.lines.filter((l) => l.includes('"msg":"Imported prepared token"'));
      expect(imported).toHaveLength(2);
      for (const l of imported) expect(JSON.parse(l)).toHaveProperty('keyId');

      const withHeader = await curl([`http://127.0.0.1:${port}/api/tokens`, '-H', `Authorization: Bearer ${token}`]);
      expect(withHeader.out).toMatch(/^HTTP\/1\.1 200/);
      const body = JSON.parse(withHeader.out.slice(withHeader.out.indexOf('\r\n\r\n') + 4)) as { tokens: { description: string; isActive: boolean }[] };
      expect(body.tokens.map((t) => t.description).sort()).toEqual(['Production API', 'Prometheus']);
      expect(body.tokens.every((t) => t.isActive)).toBe(true);
      expect(JSON.stringify(body)).not.toContain(token);

      const withQuery = await curl([`http://127.0.0.1:${port}/api/tokens?access_token=${token}`]);
      expect(withQuery.out).toMatch(/^HTTP\/1\.1 200/);

      const without = await curl([`http://127.0.0.1:${port}/api/tokens`]);
      expect(without.out).toMatch(/^HTTP\/1\.1 401/);
      expect(without.out).toMatch(/^www-authenticate: Bearer/im);
      expect(without.out).toContain('"code":"unauthorized"');

      // A metrics-only key is not an administrator.
      const metricsOnly = await curl([`http://127.0.0.1:${port}/api/tokens`, '-H', `Authorization: Bearer ${metricsToken}`]);
      expect(metricsOnly.out).toMatch(/^HTTP\/1\.1 403/);

      const health = await curl([`http://127.0.0.1:${port}/health`]);
      expect(health.out).toMatch(/^HTTP\/1\.1 200/);
      expect(health.out).toContain('"reachable":true');
    } finally {
      expect(await serve.stop('SIGTERM')).toBe(0);
    }
    expect(serve.output()).toContain('"msg":"Keygate stopped"');
    // The log of the whole run never holds either key.
    expect(serve.output()).not.toContain(token);
    expect(serve.output()).not.toContain(metricsToken);

    // Starting again with the same prepared tokens skips them.
    const again = startServe(['--http.port', String(port), ...NO_LISTENERS, ...(target.name === 'redis cluster' ? ['--dbs.redis', cluster!.url] : fresh)], { KEYGATE_PREPARED_TOKEN: blob });
    try {
      await again.waitForLine(/"msg":"Keygate started"/);
      expect(again.output()).toContain('Prepared token already present, skipped');
      expect(again.output()).not.toContain('"msg":"Imported prepared token"');
    } finally {
      expect(await again.stop()).toBe(0);
    }
  });
});

describe('prepared token errors', () => {
  it('a malformed prepared token stops start-up with exit 2 (do not restart) and a clear message, creating nothing', { timeout: 30_000 }, async () => {
    const p = join(dir, 'bad-prepared.db');
    const good = (await runCli(['tokens', 'issue', '-d', 'g', '--db.path', join(dir, 'src.db')])).stdout.trim();
    const blob = (await runCli(['tokens', 'export', '-t', good, '--db.path', join(dir, 'src.db')])).stdout.trim();
    const serve = startServe(['--http.port', String(await freePort()), ...NO_LISTENERS, '--db.path', p, '--preparedToken', `${blob},garbage!`]);
    expect(await new Promise((r) => serve.child.once('exit', r))).toBe(2);
    expect(serve.output()).toMatch(/keygate: prepared token #2: malformed token blob/);
    // Refused before the store was opened: not even an empty one was made.
    expect(existsSync(p)).toBe(false);
  });

  it('an invalid setting stops start-up naming it', async () => {
    const serve = startServe(['--db.path', join(dir, 'x.db'), ...NO_LISTENERS], { KEYGATE_HTTP_PORT: 'eighty' });
    expect(await new Promise((r) => serve.child.once('exit', r))).toBe(2);
    expect(serve.output()).toMatch(/keygate: invalid setting http\.port/);
  });
});
