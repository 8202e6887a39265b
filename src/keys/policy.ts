import { ipInList } from './cidr.js';
import type { AccountRecord, KeyRecord } from './record.js';
import { grants, type Protocol, type Scope } from './scopes.js';

/** What a key is asked to do. `account` is the canonical address acted on. */
export type Action =
  | { kind: 'login'; protocol: Protocol; account: string }
  | { kind: 'api'; access: 'read' | 'write'; account: string }
  | { kind: 'metrics' }
  /** RFC 7662 token introspection (`POST /oauth/introspect`). */
  | { kind: 'introspect' }
  | { kind: 'admin'; access: 'read' | 'write' };

/** Internal reasons; they go to the audit log, never to the client. */
export type DenyReason =
  | 'revoked'
  | 'expired'
  | 'ip_not_allowed'
  | 'account_disabled'
  | 'account_mismatch'
  | 'missing_scope';

export type Decision = { allowed: true } | { allowed: false; reason: DenyReason; missingScope?: Scope };

export interface PolicyContext {
  ip: string;
  now: Date;
  /** The record of the key's bound account (or of the login target for unbound keys), if it exists. */
  account: AccountRecord | null;
}

/** Scope an action needs. */
export function requiredScope(action: Action): Scope {
  switch (action.kind) {
    case 'login':
      return action.protocol;
    case 'api':
      return action.access === 'read' ? 'api:read' : 'api:write';
    case 'metrics':
      return 'metrics';
    case 'introspect':
      return 'introspect';
    case 'admin':
      return action.access === 'read' ? 'api:read' : 'api:write';
  }
}

/** An unbound key with `*` or both api scopes administers every account. */
export function isAdminKey(key: Pick<KeyRecord, 'account' | 'scopes'>): boolean {
  return key.account === null && (key.scopes.includes('*') || (key.scopes.includes('api:read') && key.scopes.includes('api:write')));
}

/** Scopes a key actually holds: `app` means "a mail app for its own account", so nothing on an unbound key. */
export function heldScopes(key: Pick<KeyRecord, 'account' | 'scopes'>): Scope[] {
  return key.account !== null ? key.scopes : key.scopes.filter((s) => s !== 'app');
}

/**
 * The one place that decides whether a key may do a thing. Pure: same inputs,
 * same answer; no I/O. Checks run from the key's own state outwards so the
 * first failing one names the reason.
 */
export function decide(key: KeyRecord, action: Action, ctx: PolicyContext): Decision {
  if (key.revokedAt !== null) return deny('revoked');
  if (key.expiresAt !== null && Date.parse(key.expiresAt) <= ctx.now.getTime()) return deny('expired');
  if (key.allowedIps !== null && !ipInList(ctx.ip, key.allowedIps)) return deny('ip_not_allowed');

  const bound = key.account !== null;
  if (bound && ctx.account?.disabled) return deny('account_disabled');
  const held = heldScopes(key);

  const scope = requiredScope(action);
  switch (action.kind) {
    case 'login':
      if (bound) {
        if (key.account !== action.account) return deny('account_mismatch');
      } else {
        // Unbound keys log in as anyone only as services (`internal`, or `*`).
        if (!key.scopes.includes('internal') && !key.scopes.includes('*')) {
          return grants(held, scope) ? deny('account_mismatch') : deny('missing_scope', scope);
        }
        if (ctx.account?.disabled) return deny('account_disabled');
      }
      break;
    case 'api':
      if (bound && key.account !== action.account) return deny('account_mismatch');
      break;
    case 'metrics':
    case 'introspect':
    case 'admin':
      // System-wide surfaces: never for a key bound to one account.
      if (bound) return grants(held, scope) ? deny('account_mismatch') : deny('missing_scope', scope);
      break;
  }
  if (!grants(held, scope)) return deny('missing_scope', scope);
  return { allowed: true };
}

function deny(reason: DenyReason, missingScope?: Scope): Decision {
  return missingScope ? { allowed: false, reason, missingScope } : { allowed: false, reason };
}
