import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { generateKey } from '../src/keys/format.js';
import pino from 'pino';
import { auditLog, createLogger } from '../src/log.js';
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

  it('audit lines: the same line as any other at info, every free-text field masked, none at warn', async () => {
    const { stream, text } = capture();
    const log = createLogger('info', stream as never);
    const key = generateKey();
    const sealed = sealSecret(secretBox('a-test-secret-of-some-length')!, 'upstream-pw', 'a@example.com');
    log.info('before');
    auditLog(log)({ protocol: 'imap', ip: '192.0.2.1', account: `${key}@example.com`, keyId: 'k1', result: 'failure', reason: `odd ${sealed}`, client: { name: key, version: sealed } });
    auditLog(log)({ protocol: 'smtp', ip: '192.0.2.2', account: null, keyId: undefined, result: 'success', reason: null, client: undefined });
    log.info('after');
    await flush();
    const lines = text().trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => l.msg)).toEqual(['before', 'auth attempt', 'auth attempt', 'after']);
    expect(text()).not.toContain(key);
    expect(text()).not.toContain(sealed.slice(16));
    expect(lines[1]).toMatchObject({ level: 30, service: 'keygate', audit: true, protocol: 'imap', ip: '192.0.2.1', account: 'kg_[REDACTED]@example.com', keyId: 'k1', result: 'failure', reason: 'odd kgsec1.[REDACTED]', client: { name: 'kg_[REDACTED]', version: 'kgsec1.[REDACTED]' } });
    expect(Object.keys(lines[2]!).sort()).toEqual(['account', 'audit', 'ip', 'level', 'msg', 'protocol', 'reason', 'result', 'service', 'time']);
    expect(Object.keys(lines[1]!).slice(0, 3)).toEqual(Object.keys(lines[0]!).slice(0, 3));

    const quiet = capture();
    const warnLog = createLogger('warn', quiet.stream as never);
    auditLog(warnLog)({ protocol: 'imap', ip: '192.0.2.1', account: 'a@example.com', keyId: undefined, result: 'success', reason: null, client: undefined });
    // A level raised at run time is obeyed too.
    log.level = 'warn';
    auditLog(log)({ protocol: 'imap', ip: '192.0.2.3', account: 'a@example.com', keyId: undefined, result: 'success', reason: null, client: undefined });
    await flush();
    expect(quiet.text()).toBe('');
    expect(text()).not.toContain('192.0.2.3');
  });

  it('audit lines through any other logger go through its own redaction', async () => {
    const { stream, text } = capture();
    const key = generateKey();
    auditLog(pino({ redact: ['client.name'] }, stream))({ protocol: 'pop3', ip: '192.0.2.1', account: key, keyId: undefined, result: 'failure', reason: 'unknown_key', client: { name: 'x' } });
    await flush();
    expect(JSON.parse(text())).toMatchObject({ audit: true, account: 'kg_[REDACTED]', client: { name: '[Redacted]' }, msg: 'auth attempt' });
  });
});
