import { decodeBase64, decodePlain } from './sasl-plain.js';

/**
 * The SASL mechanisms every Keygate surface speaks (IMAP AUTHENTICATE, POP3
 * AUTH, SMTP AUTH and the Dovecot-protocol SASL server), decoded here once so
 * the surfaces cannot drift apart. A surface only frames the exchange: how a
 * challenge is sent (`+ …`, `334 …`, `CONT\t…`), how a response comes back
 * and how the client cancels.
 *
 * In the bearer mechanisms (OAUTHBEARER, RFC 7628; XOAUTH2, Google's older
 * form) the bearer token is a Keygate key.
 */
export const MECHANISMS = ['PLAIN', 'LOGIN', 'OAUTHBEARER', 'XOAUTH2'] as const;
export type Mechanism = (typeof MECHANISMS)[number];

/** The mechanism a client named (any case), or null when Keygate does not speak it. */
export function mechanismNamed(name: string): Mechanism | null {
  const upper = name.toUpperCase();
  return (MECHANISMS as readonly string[]).includes(upper) ? (upper as Mechanism) : null;
}

/** True for the mechanisms whose failure is an RFC 7628 error challenge before the final refusal. */
export function isBearer(mechanism: Mechanism): boolean {
  return mechanism === 'OAUTHBEARER' || mechanism === 'XOAUTH2';
}

/**
 * Where an exchange stands after the client's last message:
 *
 * - `challenge`: send this (base64, '' for the empty challenge) and pass the answer to `next`;
 * - `credentials`: log in with these;
 * - `refused`: a well-formed message the protocol layer itself refuses (a
 *   PLAIN authzid naming someone else): audited and answered like a wrong key;
 * - `malformed`: not a message of the mechanism (bad base64, missing fields):
 *   nothing was checked against the store.
 */
export type SaslStep =
  | { kind: 'challenge'; challenge: string }
  | { kind: 'credentials'; username: string; key: string }
  | { kind: 'refused'; username: string; reason: 'authzid_mismatch' }
  | { kind: 'malformed'; reason: 'base64' | 'malformed' };

/** Base64 of "Username:" and "Password:", the prompts clients expect for SASL LOGIN. */
export const LOGIN_USERNAME_PROMPT = 'VXNlcm5hbWU6';
export const LOGIN_PASSWORD_PROMPT = 'UGFzc3dvcmQ6';

/**
 * One server-side SASL exchange. `start` takes the initial response when the
 * client sent one (SASL-IR, `AUTH PLAIN <b64>`, `resp=`), `next` each answer
 * to a challenge; responses are the base64 text as received. After a refused
 * or temporary login, `failureChallenge` gives the challenge a bearer
 * mechanism sends before the final failure (the client answers it, and the
 * answer is not looked at).
 */
export class SaslExchange {
  /** LOGIN's user name, once the client has sent it. */
  private loginUser: string | null = null;
  private started = false;

  constructor(readonly mechanism: Mechanism) {}

  start(initial?: string): SaslStep {
    if (this.started) throw new Error('SASL exchange started twice');
    this.started = true;
    if (initial !== undefined) return this.next(initial);
    return { kind: 'challenge', challenge: this.mechanism === 'LOGIN' ? LOGIN_USERNAME_PROMPT : '' };
  }

  next(response: string): SaslStep {
    switch (this.mechanism) {
      case 'PLAIN': {
        const plain = decodePlain(response);
        if (plain.ok) return { kind: 'credentials', username: plain.username, key: plain.key };
        if (plain.reason === 'authzid_mismatch') return { kind: 'refused', username: plain.username, reason: plain.reason };
        return { kind: 'malformed', reason: plain.reason };
      }
      case 'LOGIN': {
        const text = decodeBase64(response);
        if (text === null) return { kind: 'malformed', reason: 'base64' };
        if (this.loginUser === null) {
          this.loginUser = text.toString('utf8');
          return { kind: 'challenge', challenge: LOGIN_PASSWORD_PROMPT };
        }
        return { kind: 'credentials', username: this.loginUser, key: text.toString('utf8') };
      }
      case 'OAUTHBEARER':
      case 'XOAUTH2': {
        const message = decodeBase64(response);
        if (message === null) return { kind: 'malformed', reason: 'base64' };
        const bearer = this.mechanism === 'OAUTHBEARER' ? decodeOAuthBearer(message.toString('utf8')) : decodeXOAuth2(message.toString('utf8'));
        return bearer ?? { kind: 'malformed', reason: 'malformed' };
      }
    }
  }

  /**
   * Runs the exchange to its end: `respond` sends each challenge in the
   * surface's framing and returns the client's answer, or null when the
   * client cancelled (the surface has answered that) or went away; then this
   * is null too. Otherwise the last step: credentials, refused or malformed.
   */
  async run(initial: string | undefined, respond: (challenge: string) => Promise<string | null>): Promise<Exclude<SaslStep, { kind: 'challenge' }> | null> {
    let step = this.start(initial);
    while (step.kind === 'challenge') {
      const response = await respond(step.challenge);
      if (response === null) return null;
      step = this.next(response);
    }
    return step;
  }

  failureChallenge(): string | null {
    if (!isBearer(this.mechanism)) return null;
    return Buffer.from(JSON.stringify(BEARER_ERROR[this.mechanism as 'OAUTHBEARER' | 'XOAUTH2'])).toString('base64');
  }
}

/**
 * The error a bearer mechanism answers every refused or temporary login with,
 * whatever the reason: RFC 7628 §3.2.2 for OAUTHBEARER (`status` from RFC
 * 6750), and the form Gmail sends for XOAUTH2, which clients parse alike.
 */
const BEARER_ERROR = {
  OAUTHBEARER: { status: 'invalid_token' },
  XOAUTH2: { status: '401', schemes: 'bearer' },
} as const;

/** Longest value accepted in a bearer message: a Keygate key is ~50 characters, a user name an address. */
const MAX_FIELD = 1024;
/** Control characters have no place in a user name or a bearer token (RFC 7628 values are VCHAR/SP/HTAB/CR/LF). */
const CONTROL = /[\u0000-\u001f\u007f]/;

type BearerStep = Extract<SaslStep, { kind: 'credentials' }>;

/** `Bearer <token>` (scheme case-insensitive, RFC 6750 §2.1); null otherwise. */
function bearerToken(value: string): string | null {
  const m = /^bearer +(\S+)$/i.exec(value);
  return m ? m[1]! : null;
}

/** The `key=value` pairs of a \x01-framed message, keys lower-cased; null on a repeated key, a key not of letters, or an oversized value. */
function keyValues(pairs: readonly string[]): Map<string, string> | null {
  const out = new Map<string, string>();
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) return null;
    const key = pair.slice(0, eq).toLowerCase();
    const value = pair.slice(eq + 1);
    if (!/^[a-z]+$/.test(key) || out.has(key) || value.length > MAX_FIELD) return null;
    out.set(key, value);
  }
  return out;
}

/** RFC 5801 saslname: `=2C` is ',', `=3D` is '='; any other '=' is malformed. */
function saslName(text: string): string | null {
  if (/=(?!2C|3D)/i.test(text)) return null;
  return text.replace(/=2C/gi, ',').replace(/=3D/gi, '=');
}

/**
 * An OAUTHBEARER initial client response (RFC 7628 §3.1):
 * `gs2-header \x01 *(key=value \x01) \x01`, the gs2-header `n,a=<user>,` (or
 * `y,…`). Channel binding (`p=`) is not offered, so a client asking for it is
 * malformed. Keygate keys log in as an account, so the authzid (`a=`) that
 * names it is required. Null when malformed.
 */
export function decodeOAuthBearer(message: string): BearerStep | null {
  const parts = message.split('\x01');
  // The header, the pairs, then the two empty strings of the closing \x01\x01.
  if (parts.length < 4 || parts.at(-1) !== '' || parts.at(-2) !== '') return null;
  const gs2 = /^[ny],a=([^,]*),$/.exec(parts[0]!);
  if (!gs2) return null;
  const username = saslName(gs2[1]!);
  const fields = keyValues(parts.slice(1, -2));
  const key = fields?.get('auth') === undefined ? null : bearerToken(fields.get('auth')!);
  return credentials(username, key);
}

/** An XOAUTH2 client response: `user=<user>\x01auth=Bearer <token>\x01\x01`. Null when malformed. */
export function decodeXOAuth2(message: string): BearerStep | null {
  const parts = message.split('\x01');
  if (parts.length < 4 || parts.at(-1) !== '' || parts.at(-2) !== '') return null;
  const fields = keyValues(parts.slice(0, -2));
  const auth = fields?.get('auth');
  return credentials(fields?.get('user') ?? null, auth === undefined ? null : bearerToken(auth));
}

function credentials(username: string | null, key: string | null): BearerStep | null {
  if (!username || !key || username.length > MAX_FIELD || CONTROL.test(username) || CONTROL.test(key)) return null;
  return { kind: 'credentials', username, key };
}
