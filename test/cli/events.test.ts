import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { builtCliAvailable, CLI, cleanEnv, runCli } from '../helpers/cli.js';
import { createHarness, type Harness, type Keygate } from '../helpers/keygate.js';
import { LineClient, plain } from '../helpers/line-client.js';
import { waitFor } from '../helpers/wait.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

const ACCOUNT = 'bo@example.test';
const SECRET = 'cli-webhook-secret-0123456789';

let h: Harness;
let k: Keygate;
let db: string[];
const receiver = new WebhookReceiver(SECRET);

beforeAll(async () => {
  if (!builtCliAvailable()) throw new Error('dist/cli.js is missing: run `npm run build` (npm test does it)');
  await receiver.start();
  h = await createHarness();
  k = await h.start({ flags: { 'webhooks.endpoints': JSON.stringify([{ url: receiver.url, secret: SECRET }]), 'webhooks.pollInterval': '50ms' } });
  db = ['--db.path', join(h.dir, 'keys.db')];
});
afterAll(async () => {
  await h?.close();
  await receiver.stop();
});

async function smtpLogin(key: string, ehlo: string): Promise<string> {
  const c = await LineClient.connect(k.port('smtp'));
  try {
    await c.reply();
    await c.send(`EHLO ${ehlo}`);
    await c.reply();
    c.write(`AUTH PLAIN ${plain(ACCOUNT, key)}\r\n`);
    return (await c.reply()).join('\n');
  } finally {
    c.end();
  }
}

describe('keygate events (built CLI)', () => {
  it('prints an account’s attempts, newest last, filtered by key and result; never a key', async () => {
    const { key, id } = await h.issue(ACCOUNT, ['smtp']);
    expect(await smtpLogin(key, 'laptop.example.test')).toMatch(/^235 /);
    expect(await smtpLogin(`${key.slice(0, -4)}AAAA`, 'evil.example.test')).toMatch(/^535 /);
    await k.history!.flush();

    const all = await runCli(['events', '--account', ACCOUNT, ...db]);
    expect(all.stderr).toBe('');
    expect(all.code).toBe(0);
    const lines = all.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(new RegExp(`success +smtp +127\\.0\\.0\\.1 +${ACCOUNT} +${id} +- +NEW-NETWORK +laptop\\.example\\.test$`));
    expect(lines[1]).toMatch(/failure +smtp +127\.0\.0\.1 .* malformed +evil\.example\.test$/);
    expect(all.stdout).not.toContain(key);

    const json = await runCli(['events', '--key', id, '--json', ...db]);
    expect(json.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)).toMatchObject([
      { account: ACCOUNT, keyId: id, protocol: 'smtp', result: 'success', client: { name: 'laptop.example.test' }, newNetwork: true },
    ]);
    const failures = await runCli(['events', '-a', ACCOUNT, '--result', 'failure', '--json', ...db]);
    expect(failures.stdout.trimEnd().split('\n')).toHaveLength(1);

    expect((await runCli(['events', '--account', 'not an address', ...db])).code).toBe(2);
    expect((await runCli(['events', '--limit', '0', ...db])).code).toBe(2);
    expect((await runCli(['events', '--key', 'nope', ...db])).code).not.toBe(0);
  });

  it('--follow prints attempts as they are recorded until stopped', async () => {
    const { key } = await h.issue(ACCOUNT, ['smtp']);
    const child = spawn(process.execPath, [CLI, 'events', '-a', ACCOUNT, '-n', '1', '--follow', ...db], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await waitFor(() => out.split('\n').length >= 2, 10_000); // the newest entry so far
      expect(await smtpLogin(key, 'followed.example.test')).toMatch(/^235 /);
      await waitFor(() => out.includes('followed.example.test'), 10_000);
    } finally {
      child.kill('SIGINT');
    }
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code).toBe(0);
  });

  it('a key revoked from the command line reaches the webhooks through the running server', async () => {
    const { id } = await h.issue(ACCOUNT, ['smtp']);
    const r = await runCli(['tokens', 'revoke', id, ...db], { KEYGATE_WEBHOOKS: JSON.stringify([{ url: receiver.url, secret: SECRET }]) });
    expect(r.code).toBe(0);
    await waitFor(() => receiver.events('key.revoked').some((e) => e.keyId === id && e.data.reason === 'cli'), 5000);
    expect(receiver.received.every((x) => x.signatureValid)).toBe(true);
  });
});
