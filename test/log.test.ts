import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { generateKey } from '../src/keys/format.js';
import { createLogger } from '../src/log.js';
import { sealSecret, secretBox } from '../src/backends/secret.js';

function capture() {
  const chunks: string[] = [];
  const stream = new Writable({
    write(c, _e, cb) {
      chunks.push(c.toString());
      cb();
    },
  });
  return { stream, text: () => chunks.join('') };
}

const flush = () => new Promise((r) => setTimeout(r, 20));

describe('log redaction', () => {
  it('redacts the authorization header, access_token in URLs, and protocol passwords', async () => {
    const { stream, text } = capture();
    const log = createLogger('info', stream as never);
    const key = generateKey();
    log.info({ req: { method: 'GET', url: `/api/tokens?x=1&access_token=${key}`, headers: { authorization: `Bearer ${key}` } } }, 'request');
    log.info({ protocol: 'imap', username: 'a@example.com', password: key }, 'login');
    log.info({ session: { user: 'a@example.com', pass: 'hunter2-upstream' } }, 'upstream');
    log.info({ upstream: { secret: 's3cr3t' } }, 'routing');
    await flush();
    const out = text();
    expect(out).not.toContain(key);
    expect(out).not.toContain('hunter2-upstream');
    expect(out).not.toContain('s3cr3t');
    expect(out).toContain('access_token=[REDACTED]');
    expect(out).toContain('"username":"a@example.com"');
    for (const line of out.trim().split('\n')) expect(() => JSON.parse(line)).not.toThrow();
  });

  it('masks a key that reaches a message or an unexpected field', async () => {
    const { stream, text } = capture();
    const log = createLogger('info', stream as never);
    const key = generateKey();
    log.info({ note: `client sent ${key} as the username` }, `weird input ${key}`);
    await flush();
    expect(text()).not.toContain(key);
    expect(text()).toContain('kg_[REDACTED]');
  });

  it('masks a sealed upstream credential wherever it appears', async () => {
    const { stream, text } = capture();
    const log = createLogger('info', stream as never);
    const sealed = sealSecret(secretBox('a-test-secret-of-some-length')!, 'upstream-pw', 'a@example.com');
    log.info({ account: { upstream: { password: sealed } }, note: `stored ${sealed}` }, `record ${sealed}`);
    await flush();
    expect(text()).not.toContain(sealed.slice(16));
    expect(text()).toContain('kgsec1.[REDACTED]');
    for (const line of text().trim().split('\n')) expect(() => JSON.parse(line)).not.toThrow();
  });
});
