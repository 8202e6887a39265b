import { describe, expect, it } from 'vitest';
import { scrubUrl } from '../../src/http/log-url.js';
import { generateKey } from '../../src/keys/format.js';

/** Every way to write each character: itself, %xx, %XX. */
const percentAll = (s: string, upper = true) => [...Buffer.from(s)].map((b) => `%${b.toString(16).padStart(2, '0')[upper ? 'toUpperCase' : 'toLowerCase']()}`).join('');

describe('scrubUrl: what of a URL may be logged', () => {
  const key = generateKey();
  const names = ['access_token', 'access%5Ftoken', 'access%5ftoken', '%61ccess_token', percentAll('access_token'), percentAll('access_token', false), 'ACCESS_TOKEN', 'Access%5FToken'];
  const values = [key, percentAll(key), key.replace('_', '%5F'), encodeURIComponent(key)];

  it.each(names.flatMap((n) => values.map((v) => [n, v])))('%s=%s: the value is replaced, other parameters kept', (name, value) => {
    const out = scrubUrl(`/api/smtp-credentials?a=1&${name}=${value}&b=x%20y`);
    expect(out).toMatch(/^\/api\/smtp-credentials\?a=1&access_token=\[REDACTED\]&b=x%20y$/i);
    expect(out).not.toContain(key.slice(3));
  });

  it('every other part comes out canonical, so a key anywhere reads kg_… for the last-resort mask', () => {
    expect(scrubUrl(`/api/tokens/${percentAll(key)}/export`)).toBe(`/api/tokens/${key}/export`);
    expect(scrubUrl(`/x?note=${percentAll(key)}`)).toBe(`/x?note=${key}`);
    expect(scrubUrl(`/x?${key.replace('_', '%5F')}`)).toBe(`/x?${key}`);
  });

  it('parameters that may hold a secret under another name are replaced too; addresses stay readable', () => {
    expect(scrubUrl('/x?api_key=abc&token=def&password=ghi&emailaddress=a%40example.com')).toBe('/x?api_key=[REDACTED]&token=[REDACTED]&password=[REDACTED]&emailaddress=a@example.com');
    expect(scrubUrl('/api/accounts/alice@example.com/smtp-credentials')).toBe('/api/accounts/alice@example.com/smtp-credentials');
  });

  it('malformed escapes and fragments do not hide a token', () => {
    expect(scrubUrl(`/x?access%5Ftoken=${key}%ZZ&y=%`)).toBe('/x?access_token=[REDACTED]&y=%25');
    expect(scrubUrl(`/x?access_token=${key}#frag`)).toBe('/x?access_token=[REDACTED]');
    expect(scrubUrl('/x?a+b=c+d')).toBe('/x?a%20b=c%20d');
  });
});
