import { hashKey, isWellFormedKey } from '../keys/format.js';
import { decide, heldScopes } from '../keys/policy.js';
import type { KeyRecord } from '../keys/record.js';
import { effectiveScopes, PROTOCOLS } from '../keys/scopes.js';
import type { KeyStore } from '../store/types.js';

/** An RFC 7662 §2.2 introspection response: the key's metadata when it is live, `{ active: false }` for anything else. */
export type IntrospectionResponse =
  | {
      active: true;
      /** Space-separated scopes the key grants (aliases expanded). */
      scope: string;
      /** The account the key logs in as. */
      username: string;
      sub: string;
      /** The key's public id. */
      client_id: string;
      token_type: 'Bearer';
      /** Seconds since the epoch. */
      iat: number;
      exp?: number;
    }
  | { active: false };

export interface Introspection {
  response: IntrospectionResponse;
  /** The key the token is, when it is one (live or not), for the log line. */
  key: KeyRecord | null;
}

const INACTIVE: IntrospectionResponse = { active: false };

/**
 * Whether a presented token is a live Keygate key, as the policy decides it:
 * a key is active when `decide` would let it log in to its own account over
 * at least one mail protocol now. So a revoked, expired, unbound (a bearer
 * token names one user) or mail-less key, or one whose account is disabled,
 * is inactive. The introspecting server does not say which address its
 * client connects from, so the IP rule cannot pass: a key restricted to
 * addresses is never active here (it fails closed, as the policy does for an
 * unknown address). Garbage and unknown tokens cost one SHA-256 and at most
 * one indexed lookup. Throws StoreUnavailableError when the store is down.
 */
export async function introspectToken(store: KeyStore, token: string, now = new Date()): Promise<Introspection> {
  const candidate = token.trim();
  if (!isWellFormedKey(candidate)) return { response: INACTIVE, key: null };
  const key = await store.findByHash(hashKey(candidate));
  if (!key || key.account === null) return { response: INACTIVE, key };
  const account = await store.getAccount(key.account);
  const ctx = { ip: '', now, account };
  const live = PROTOCOLS.some((protocol) => decide(key, { kind: 'login', protocol, account: key.account! }, ctx).allowed);
  if (!live) return { response: INACTIVE, key };
  const scope = [...effectiveScopes(heldScopes(key))].filter((s) => s !== '*').join(' ');
  const response: IntrospectionResponse = {
    active: true,
    scope,
    username: key.account,
    sub: key.account,
    client_id: key.id,
    token_type: 'Bearer',
    iat: Math.floor(Date.parse(key.createdAt) / 1000),
    ...(key.expiresAt !== null && { exp: Math.floor(Date.parse(key.expiresAt) / 1000) }),
  };
  return { response, key };
}
