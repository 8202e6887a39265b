import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LOGIN_MODES, MASTER_STYLES, TLS_MODES } from '../../src/backends/routing.js';
import { UnknownScopeError } from '../../src/keys/scopes.js';
import { PLATFORMS } from '../../src/services/credentials.js';
import { cleanupFixtures, createFixture, type Fixture } from './fixture.js';

/*
 * Issue 13, item 9: an enumerated value the API does not know is answered as
 * the CLI answers it — the bad value and the known ones, once — for every
 * enumeration a request body has (scopes, platform, format, TLS mode, login
 * mode, master style), not with one `must be equal to constant` per literal.
 */

interface ErrorBody {
  error: { code: string; message: string; details: { field: string; message: string }[] };
}

describe('REST validation of enumerated values', () => {
  let f: Fixture;
  let owner: string;

  beforeAll(async () => {
    f = await createFixture('sqlite');
    owner = (await f.issue({ scopes: ['app'], account: 'alice@example.com' })).key;
    await f.store.createAccount({ address: 'carol@example.com', aliases: [], displayName: null, disabled: false, createdAt: new Date().toISOString(), upstream: null });
  });
  afterAll(async () => {
    await f?.close();
    await cleanupFixtures();
  });

  const expectOneProblem = (res: { statusCode: number; json: () => unknown; body: string }, field: string, message: string): void => {
    expect(res.statusCode, res.body).toBe(400);
    const { error } = res.json() as ErrorBody;
    expect(error).toEqual({ code: 'validation', message, details: [{ field, message }] });
    expect(res.body).not.toContain('must be equal to');
    expect(res.body).not.toContain('anyOf');
  };

  it('a bad scope: the CLI’s own sentence, once (smtp-credentials and tokens)', async () => {
    const cli = new UnknownScopeError('bogus').message;
    expect(cli).toMatch(/^unknown scope "bogus" \(known: \*, smtp, /);
    expectOneProblem(await f.call(owner, { method: 'POST', url: '/api/smtp-credentials', payload: { name: 'x', scopes: ['smtp', 'bogus'] } }), 'body.scopes.1', cli);
    expectOneProblem(await f.call(f.adminKey, { method: 'POST', url: '/api/tokens', payload: { description: 'x', scopes: ['bogus'] } }), 'body.scopes.0', cli);
    expectOneProblem(await f.call(f.adminKey, { method: 'POST', url: '/api/accounts/alice@example.com/smtp-credentials', payload: { name: 'x', scopes: ['bogus'] } }), 'body.scopes.0', cli);
  });

  it('two bad scopes: one detail each', async () => {
    const res = await f.call(owner, { method: 'POST', url: '/api/smtp-credentials', payload: { name: 'x', scopes: ['bogus', 'smtp', 'root'] } });
    expect(res.statusCode).toBe(400);
    const { error } = res.json() as ErrorBody;
    expect(error.message).toBe('The request is not valid');
    expect(error.details).toEqual([
      { field: 'body.scopes.0', message: new UnknownScopeError('bogus').message },
      { field: 'body.scopes.2', message: new UnknownScopeError('root').message },
    ]);
  });

  it('platform and format of the mobile route', async () => {
    const mobile = (body: Record<string, unknown>) => f.call(owner, { method: 'POST', url: '/api/smtp-credentials/mobile', payload: { name: 'Phone', platform: 'ios', deviceId: 'p1', ...body } });
    expectOneProblem(await mobile({ platform: 'symbian' }), 'body.platform', `unknown platform "symbian" (known: ${PLATFORMS.join(', ')})`);
    expectOneProblem(await mobile({ format: 'pdf' }), 'body.format', 'unknown format "pdf" (known: json, mobileconfig)');
  });

  it('TLS mode, login mode and master style of an account route', async () => {
    const put = (route: Record<string, unknown>) => f.call(f.adminKey, { method: 'PUT', url: '/api/accounts/carol@example.com/upstream', payload: route });
    expectOneProblem(await put({ imap: { host: 'imap.old.example', tls: 'maybe' } }), 'body.imap.tls', `unknown TLS mode "maybe" (known: ${TLS_MODES.join(', ')})`);
    expectOneProblem(await put({ smtp: { login: 'magic' } }), 'body.smtp.login', `unknown login mode "magic" (known: ${LOGIN_MODES.smtp.join(', ')})`);
    expectOneProblem(await put({ pop3: { masterStyle: 'slash' } }), 'body.pop3.masterStyle', `unknown master style "slash" (known: ${MASTER_STYLES.join(', ')})`);
  });

  it('a non-string or huge value is shown as JSON, cut short', async () => {
    const big = 'x'.repeat(500);
    const res = await f.call(owner, { method: 'POST', url: '/api/smtp-credentials', payload: { name: 'x', scopes: [big] } });
    expect(res.statusCode).toBe(400);
    const { error } = res.json() as ErrorBody;
    expect(error.message).toMatch(/^unknown scope "x{63}… \(known: /);
    expect(res.body).not.toContain(big);
    expectOneProblem(await f.call(owner, { method: 'POST', url: '/api/smtp-credentials', payload: { name: 'x', scopes: [{ a: 1 }] } }), 'body.scopes.0', new UnknownScopeError('x').message.replace('"x"', '{"a":1}'));
  });

  it('other validation errors keep their field and wording', async () => {
    const res = await f.call(owner, { method: 'POST', url: '/api/smtp-credentials', payload: { name: 'x', scopes: ['smtp'], isAdmin: true } });
    expect(res.json()).toMatchObject({ error: { code: 'validation', details: [{ field: 'body.isAdmin', message: 'unknown field' }] } });
    const missing = await f.call(owner, { method: 'POST', url: '/api/smtp-credentials', payload: { scopes: ['smtp'] } });
    expect(missing.json()).toMatchObject({ error: { details: [{ field: 'body.name', message: "must have required property 'name'" }] } });
  });
});
