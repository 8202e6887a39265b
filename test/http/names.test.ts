import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeExport } from '../../src/keys/export-codec.js';
import { newKey } from '../../src/keys/new-key.js';
import { cleanupFixtures, createFixture, storeKinds, type Fixture } from './fixture.js';

afterAll(cleanupFixtures);

/*
 * Names people read (key names, display names, device ids) refuse control
 * characters, line separators and bidirectional overrides at every entrance,
 * with a 400 naming the field; ordinary text in any script passes.
 */
const BAD: Array<[string, string]> = [
  ['NUL', '\u0000'],
  ['LF', '\n'],
  ['ESC', '\u001b'],
  ['DEL', '\u007f'],
  ['NEL U+0085', '\u0085'],
  ['CSI U+009B', '\u009b'],
  ['LRE U+202A', '\u202a'],
  ['RLE U+202B', '\u202b'],
  ['PDF U+202C', '\u202c'],
  ['LRO U+202D', '\u202d'],
  ['RLO U+202E', '\u202e'],
  ['LRI U+2066', '\u2066'],
  ['RLI U+2067', '\u2067'],
  ['FSI U+2068', '\u2068'],
  ['PDI U+2069', '\u2069'],
  ['LS U+2028', '\u2028'],
];
const GOOD = ['Ännchen’s iPhone', 'הטלפון של דני', 'هاتف سارة', '张伟的电脑 📱', 'laptop (work) — 2nd'];

describe.each(storeKinds())('names on %s', (kind) => {
  let f: Fixture;
  let owner: string;
  let n = 0;
  beforeAll(async () => {
    f = await createFixture(kind);
    owner = (await f.issue({ scopes: ['app'], account: 'names@example.com' })).key;
    await f.call(f.adminKey, { method: 'POST', url: '/api/accounts', payload: { address: 'patch@example.com' } });
  });
  afterAll(() => f.close());

  /** Each entrance: the request carrying `text`, and the field a refusal must name. */
  const entrances: Array<[string, string, (text: string) => Promise<{ statusCode: number; json: () => unknown }>]> = [
    ['POST /api/tokens description', 'body.description', (t) => f.call(f.adminKey, { method: 'POST', url: '/api/tokens', payload: { description: t, scopes: ['smtp'], account: 'names@example.com' } })],
    ['POST /api/smtp-credentials name', 'body.name', (t) => f.call(owner, { method: 'POST', url: '/api/smtp-credentials', payload: { name: t, scopes: ['smtp'] } })],
    ['POST …/mobile name', 'body.name', (t) => f.call(owner, { method: 'POST', url: '/api/smtp-credentials/mobile', payload: { name: t, platform: 'ios', deviceId: `d${++n}` } })],
    ['POST …/mobile deviceId', 'body.deviceId', (t) => f.call(owner, { method: 'POST', url: '/api/smtp-credentials/mobile', payload: { name: 'phone', platform: 'ios', deviceId: `${t}${++n}` } })],
    ['POST /api/accounts displayName', 'body.displayName', (t) => f.call(f.adminKey, { method: 'POST', url: '/api/accounts', payload: { address: `a${++n}@example.com`, displayName: t } })],
    ['PATCH /api/accounts displayName', 'body.displayName', (t) => f.call(f.adminKey, { method: 'PATCH', url: '/api/accounts/patch@example.com', payload: { displayName: t } })],
  ];

  it.each(entrances.flatMap(([where, field, send]) => BAD.map(([label, ch]) => ({ where, field, send, label, ch }))))('$where refuses $label: 400 naming $field', async ({ field, send, ch }) => {
    for (const text of [`a${ch}b`, `${ch}admin`, `x${ch}`]) {
      const res = await send(text);
      expect(res.statusCode).toBe(400);
      const body = res.json() as { error: { code: string; details: Array<{ field: string; message: string }> } };
      expect(body.error.code).toBe('validation');
      expect(body.error.details).toContainEqual({ field, message: expect.stringContaining('control characters') });
    }
  });

  it.each(entrances.map(([where, , send]) => ({ where, send })))('$where accepts names in any script', async ({ send }) => {
    for (const text of GOOD) expect((await send(text)).statusCode).toBeLessThan(300);
  });

  it.each(BAD)('import refuses a record named with %s: 400 naming the field, nothing stored', async (_label, ch) => {
    const record = newKey({ name: `imported${ch}name`, scopes: ['smtp'], account: 'names@example.com' }).record;
    const res = await f.call(f.adminKey, { method: 'POST', url: '/api/tokens/import', payload: { blob: encodeExport(record) } });
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ error: { code: 'validation', message: expect.stringContaining('field "name"'), details: [{ field: 'body.blob' }] } });
    expect(await f.store.getKey(record.id)).toBeNull();
  });
});
