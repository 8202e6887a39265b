import { describe, expect, it } from 'vitest';
import { decodeOAuthBearer, decodeXOAuth2, mechanismNamed, SaslExchange, type SaslStep } from '../../src/protocols/sasl-mechanisms.js';

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');
const KEY = 'kg_0123456789abcdefABCDEF';
const bearer = (user: string, key = KEY): string => `n,a=${user},\x01host=mail.example.com\x01port=993\x01auth=Bearer ${key}\x01\x01`;

/** Runs one exchange over a list of client messages (the first is the initial response, or undefined for none). */
function run(mechanism: string, initial: string | undefined, ...responses: string[]): SaslStep[] {
  const exchange = new SaslExchange(mechanismNamed(mechanism)!);
  const steps = [exchange.start(initial)];
  for (const r of responses) steps.push(exchange.next(r));
  return steps;
}

describe('SaslExchange: one table for every surface', () => {
  const cases: Array<{ name: string; mechanism: string; initial?: string; responses?: string[]; steps: SaslStep[] }> = [
    {
      name: 'PLAIN with an initial response',
      mechanism: 'PLAIN',
      initial: b64('\0a@b.c\0' + KEY),
      steps: [{ kind: 'credentials', username: 'a@b.c', key: KEY }],
    },
    {
      name: 'PLAIN after the empty challenge',
      mechanism: 'plain',
      responses: [b64('a@b.c\0a@b.c\0' + KEY)],
      steps: [{ kind: 'challenge', challenge: '' }, { kind: 'credentials', username: 'a@b.c', key: KEY }],
    },
    {
      name: 'PLAIN whose authzid names someone else',
      mechanism: 'PLAIN',
      initial: b64('x@b.c\0a@b.c\0' + KEY),
      steps: [{ kind: 'refused', username: 'a@b.c', reason: 'authzid_mismatch' }],
    },
    { name: 'PLAIN, bad base64', mechanism: 'PLAIN', initial: 'AGE*', steps: [{ kind: 'malformed', reason: 'base64' }] },
    { name: 'PLAIN, two fields', mechanism: 'PLAIN', initial: b64('a@b.c\0' + KEY), steps: [{ kind: 'malformed', reason: 'malformed' }] },
    {
      name: 'LOGIN prompts for the user, then the password',
      mechanism: 'LOGIN',
      responses: [b64('a@b.c'), b64(KEY)],
      steps: [
        { kind: 'challenge', challenge: 'VXNlcm5hbWU6' },
        { kind: 'challenge', challenge: 'UGFzc3dvcmQ6' },
        { kind: 'credentials', username: 'a@b.c', key: KEY },
      ],
    },
    {
      name: 'LOGIN with the user as initial response',
      mechanism: 'LOGIN',
      initial: b64('a@b.c'),
      responses: [b64(KEY)],
      steps: [{ kind: 'challenge', challenge: 'UGFzc3dvcmQ6' }, { kind: 'credentials', username: 'a@b.c', key: KEY }],
    },
    { name: 'LOGIN, bad base64', mechanism: 'LOGIN', initial: 'a b', steps: [{ kind: 'malformed', reason: 'base64' }] },
    {
      name: 'OAUTHBEARER with an initial response',
      mechanism: 'OAUTHBEARER',
      initial: b64(bearer('a@b.c')),
      steps: [{ kind: 'credentials', username: 'a@b.c', key: KEY }],
    },
    {
      name: 'OAUTHBEARER after the empty challenge',
      mechanism: 'OAUTHBEARER',
      responses: [b64(bearer('a@b.c'))],
      steps: [{ kind: 'challenge', challenge: '' }, { kind: 'credentials', username: 'a@b.c', key: KEY }],
    },
    {
      name: 'XOAUTH2 with an initial response',
      mechanism: 'XOAUTH2',
      initial: b64(`user=a@b.c\x01auth=Bearer ${KEY}\x01\x01`),
      steps: [{ kind: 'credentials', username: 'a@b.c', key: KEY }],
    },
    { name: 'XOAUTH2, bad base64', mechanism: 'XOAUTH2', initial: '!!', steps: [{ kind: 'malformed', reason: 'base64' }] },
  ];
  for (const c of cases) {
    it(c.name, () => {
      expect(run(c.mechanism, c.initial, ...(c.responses ?? []))).toEqual(c.steps);
    });
  }

  it('knows exactly the four mechanisms, in any case', () => {
    expect(['plain', 'Login', 'OAUTHBEARER', 'xoauth2', 'CRAM-MD5', 'XOAUTH', ''].map(mechanismNamed)).toEqual(['PLAIN', 'LOGIN', 'OAUTHBEARER', 'XOAUTH2', null, null, null]);
  });

  it('answers a failed bearer login with the RFC 7628 error challenge, and nothing for PLAIN and LOGIN', () => {
    const json = (m: string): unknown => JSON.parse(Buffer.from(new SaslExchange(mechanismNamed(m)!).failureChallenge()!, 'base64').toString());
    expect(json('OAUTHBEARER')).toEqual({ status: 'invalid_token' });
    expect(json('XOAUTH2')).toEqual({ status: '401', schemes: 'bearer' });
    expect(new SaslExchange('PLAIN').failureChallenge()).toBeNull();
    expect(new SaslExchange('LOGIN').failureChallenge()).toBeNull();
  });
});

describe('decodeOAuthBearer (RFC 7628 §3.1)', () => {
  it('takes the user from the authzid and the key from auth=Bearer', () => {
    expect(decodeOAuthBearer(bearer('a@b.c'))).toEqual({ kind: 'credentials', username: 'a@b.c', key: KEY });
    expect(decodeOAuthBearer(`y,a=a@b.c,\x01auth=bearer   ${KEY}\x01\x01`)).toMatchObject({ username: 'a@b.c', key: KEY });
  });

  it('unescapes the saslname (=2C is a comma, =3D an equals sign)', () => {
    expect(decodeOAuthBearer(bearer('we=2Cird=3Dname@b.c'))).toMatchObject({ username: 'we,ird=name@b.c' });
  });

  const malformed: Array<[string, string]> = [
    ['no authzid', `n,,\x01auth=Bearer ${KEY}\x01\x01`],
    ['channel binding asked for', `p=tls-unique,a=a@b.c,\x01auth=Bearer ${KEY}\x01\x01`],
    ['a bad saslname escape', bearer('a=41@b.c')],
    ['no auth field', `n,a=a@b.c,\x01host=x\x01\x01`],
    ['a scheme other than Bearer', `n,a=a@b.c,\x01auth=Basic ${KEY}\x01\x01`],
    ['a token with a space in it', `n,a=a@b.c,\x01auth=Bearer kg_a kg_b\x01\x01`],
    ['auth given twice', `n,a=a@b.c,\x01auth=Bearer ${KEY}\x01auth=Bearer kg_other\x01\x01`],
    ['no closing \\x01\\x01', `n,a=a@b.c,\x01auth=Bearer ${KEY}\x01`],
    ['a pair without =', `n,a=a@b.c,\x01auth\x01\x01`],
    ['the bare \\x01 of an error answer', '\x01'],
    ['a control character in the user', bearer('a\u0000b@b.c')],
    ['an oversized field', `n,a=a@b.c,\x01host=${'h'.repeat(2000)}\x01auth=Bearer ${KEY}\x01\x01`],
    ['nothing', ''],
  ];
  for (const [name, message] of malformed) {
    it(`is malformed: ${name}`, () => {
      expect(decodeOAuthBearer(message)).toBeNull();
    });
  }
});

describe('decodeXOAuth2', () => {
  it('takes user= and auth=Bearer, keys in any case', () => {
    expect(decodeXOAuth2(`user=a@b.c\x01auth=Bearer ${KEY}\x01\x01`)).toEqual({ kind: 'credentials', username: 'a@b.c', key: KEY });
    expect(decodeXOAuth2(`USER=a@b.c\x01Auth=Bearer ${KEY}\x01\x01`)).toMatchObject({ username: 'a@b.c', key: KEY });
  });

  const malformed: Array<[string, string]> = [
    ['no user', `auth=Bearer ${KEY}\x01\x01`],
    ['an empty user', `user=\x01auth=Bearer ${KEY}\x01\x01`],
    ['no token', `user=a@b.c\x01auth=Bearer \x01\x01`],
    ['no closing \\x01\\x01', `user=a@b.c\x01auth=Bearer ${KEY}`],
    ['user given twice', `user=a@b.c\x01user=x@b.c\x01auth=Bearer ${KEY}\x01\x01`],
    ['a control character in the token', `user=a@b.c\x01auth=Bearer kg_\u007f\x01\x01`],
  ];
  for (const [name, message] of malformed) {
    it(`is malformed: ${name}`, () => {
      expect(decodeXOAuth2(message)).toBeNull();
    });
  }
});
