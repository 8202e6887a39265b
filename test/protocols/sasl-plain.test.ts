import { describe, expect, it } from 'vitest';
import { plaintextLoginAllowed } from '../../src/protocols/limits.js';
import { authzidMatches, decodeBase64, decodePlain } from '../../src/protocols/sasl-plain.js';

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');

/** The one SASL PLAIN rule IMAP AUTHENTICATE PLAIN and POP3 AUTH PLAIN share (SMTP shares `authzidMatches`). */
describe('decodePlain', () => {
  it('decodes authcid and password', () => {
    expect(decodePlain(b64('\0a@b.c\0kg_x'))).toEqual({ ok: true, username: 'a@b.c', key: 'kg_x' });
    expect(decodePlain(b64('a@b.c\0a@b.c\0kg_x'))).toEqual({ ok: true, username: 'a@b.c', key: 'kg_x' });
    expect(decodePlain(b64('\0ünï@b.c\0kg_x with spaces'))).toEqual({ ok: true, username: 'ünï@b.c', key: 'kg_x with spaces' });
  });

  it('accepts the lenient form: the user in the authzid, an empty authcid', () => {
    expect(decodePlain(b64('a@b.c\0\0kg_x'))).toEqual({ ok: true, username: 'a@b.c', key: 'kg_x' });
  });

  it('accepts an authzid equal to the authcid in another case (or with surrounding space)', () => {
    expect(decodePlain(b64('A@B.C\0a@b.c\0kg_x'))).toEqual({ ok: true, username: 'a@b.c', key: 'kg_x' });
    expect(decodePlain(b64(' a@b.c \0a@b.c\0kg_x'))).toMatchObject({ ok: true, username: 'a@b.c' });
  });

  it('refuses an authzid naming someone else, carrying the authcid for the audit line', () => {
    expect(decodePlain(b64('other@b.c\0a@b.c\0kg_x'))).toEqual({ ok: false, reason: 'authzid_mismatch', username: 'a@b.c' });
  });

  it('refuses malformed base64: bad characters, missing padding, whitespace', () => {
    for (const text of ['not base64!', '***', b64('\0a@b.c\0kg_x').replace(/=+$/, ''), 'AGFAYi5j AGtnX3g=', 'A', '']) {
      expect(decodePlain(text), JSON.stringify(text)).toEqual({ ok: false, reason: text === '' ? 'malformed' : 'base64' });
    }
  });

  it('refuses missing fields: no NULs, two fields, four fields, no user, no password, the empty response', () => {
    for (const message of ['no-nuls-here', 'only\0two', 'a\0b\0c\0d', '\0\0kg_x', 'a@b.c\0\0', '\0a@b.c\0', '']) {
      expect(decodePlain(b64(message)), JSON.stringify(message)).toEqual({ ok: false, reason: 'malformed' });
    }
    expect(decodePlain('=')).toEqual({ ok: false, reason: 'malformed' });
  });
});

describe('decodeBase64', () => {
  it('is strict and padded; "=" is the empty response', () => {
    expect(decodeBase64('YWJj')?.toString()).toBe('abc');
    expect(decodeBase64('YWI=')?.toString()).toBe('ab');
    expect(decodeBase64('=')?.length).toBe(0);
    expect(decodeBase64('YWI')).toBeNull();
    expect(decodeBase64('YW I=')).toBeNull();
    expect(decodeBase64('YW*=')).toBeNull();
  });
});

describe('authzidMatches', () => {
  it('is true for an empty authzid or authcid, and for the same address in any case', () => {
    expect(authzidMatches('', 'a@b.c')).toBe(true);
    expect(authzidMatches('a@b.c', '')).toBe(true);
    expect(authzidMatches('A@B.C', 'a@b.c')).toBe(true);
    expect(authzidMatches('x@b.c', 'a@b.c')).toBe(false);
  });
});

describe('plaintextLoginAllowed', () => {
  it('allows a password under TLS, from loopback, or with auth.allowPlaintext; refuses it otherwise', () => {
    const remote = { remoteAddress: '203.0.113.7', allowPlaintext: false };
    expect(plaintextLoginAllowed({ ...remote, secure: true })).toBe(true);
    expect(plaintextLoginAllowed({ ...remote, secure: false })).toBe(false);
    expect(plaintextLoginAllowed({ ...remote, secure: false, allowPlaintext: true })).toBe(true);
    for (const ip of ['127.0.0.1', '127.8.9.10', '::1', '::ffff:127.0.0.1']) {
      expect(plaintextLoginAllowed({ secure: false, remoteAddress: ip, allowPlaintext: false }), ip).toBe(true);
    }
    expect(plaintextLoginAllowed({ secure: false, remoteAddress: '::ffff:203.0.113.7', allowPlaintext: false })).toBe(false);
  });
});
