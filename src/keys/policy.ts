import { ipInList } from './cidr.js';
import type { AccountRecord, KeyRecord } from './record.js';
import { effectiveScopes, grants, SCOPES, type Protocol, type Scope } from './scopes.js';

/** What a key is asked to do. `account` is the canonical address acted on. */
export type Action =
  | { kind: 'login'; protocol: Protocol; account: string }
  | { kind: 'api'; access: 'read' | 'write'; account: string }
  /** Reading an account's login history: its own keys with `api:read`, or an administrator. */
  | { kind: 'history'; account: string }
  | { kind: 'metrics' }
  /** RFC 7662 token introspection (`POST /oauth/introspect`). */
  | { kind: 'introspect' }
  | { kind: 'admin'; access: 'read' | 'write' }
  /** An account's upstream route: where its mail sessions, and the credentials that open them, are sent. */
  | { kind: 'upstream'; access: 'read' | 'write' };

/** Internal reasons; they go to the audit log, never to the client. */
export type DenyReason =
  /** A canary key grants nothing, ever. */
  | 'canary'
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
    case 'history':
      return 'api:read';
    case 'metrics':
      return 'metrics';
    case 'introspect':
      return 'introspect';
    case 'admin':
    case 'upstream':
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
  if (key.canary) return deny('canary');
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
      if (!bound && action.access === 'write') return adminWrite(held);
      break;
    case 'history':
      // Where and when an account's keys were used is the account's business, or an administrator's.
      if (bound && key.account !== action.account) return deny('account_mismatch');
      break;
    case 'admin':
      // System-wide surfaces: never for a key bound to one account.
      if (bound) return grants(held, scope) ? deny('account_mismatch') : deny('missing_scope', scope);
      if (action.access === 'write') return adminWrite(held);
      break;
    case 'upstream': {
      if (bound) return grants(held, scope) ? deny('account_mismatch') : deny('missing_scope', scope);
      if (action.access === 'read') break;
      // Setting a route decides where an account's mail credentials (the master
      // password among them) are sent: it takes a key that could log in to that
      // mail itself, else an `api` administrator could route them to itself.
      const admin = adminWrite(held);
      if (!admin.allowed) return admin;
      const mail = MAIL_SCOPES.find((s) => !grants(held, s));
      return mail ? deny('missing_scope', mail) : { allowed: true };
    }
    case 'metrics':
    case 'introspect':
      if (bound) return grants(held, scope) ? deny('account_mismatch') : deny('missing_scope', scope);
      break;
  }
  if (!grants(held, scope)) return deny('missing_scope', scope);
  return { allowed: true };
}

/**
 * Writing with an unbound key means administering every account: only an
 * administrator key may (`*`, or `api:read` with `api:write`). An unbound key
 * with `api:write` alone has no account of its own and is no administrator,
 * so it may write nothing.
 */
function adminWrite(held: readonly Scope[]): Decision {
  const missing = ADMIN_SCOPES.find((s) => !grants(held, s));
  return missing ? deny('missing_scope', missing) : { allowed: true };
}

const ADMIN_SCOPES: readonly Scope[] = ['api:write', 'api:read'];
const MAIL_SCOPES: readonly Scope[] = ['smtp', 'imap', 'pop3'];

/**
 * Who asks for a new key: the calling key (REST API), or the operator — the
 * CLI and the start-up import of prepared tokens, run by whoever holds the
 * store itself (its file or its Redis URL) and so could write any record to it
 * directly; a rule on that path would stop no one.
 */
export type Grantor = Pick<KeyRecord, 'account' | 'scopes'> | 'operator';

/** The key about to be written, by create, rotate, import or device replacement. */
export type Grant = Pick<KeyRecord, 'account' | 'scopes'>;

export type GrantDecision =
  | { allowed: true }
  | { allowed: false; reason: 'account_mismatch' }
  | { allowed: false; reason: 'missing_scope'; missingScopes: Scope[] };

/**
 * A key never grants more than it holds. Asked before every store write of a
 * new key, whatever the route or command:
 *  - a key bound to an account grants only keys bound to that same account,
 *    and needs `api:write` to grant at all;
 *  - an unbound key grants only if it is an administrator key (`*`, or
 *    `api:read` + `api:write`), for any account or none;
 *  - every scope of the new key, with what it implies (`app` → api:read,
 *    api:write, smtp, imap, pop3), must be one the grantor holds: `*` only
 *    from `*`, `internal` and `metrics` only from their holders.
 * No exception: a mobile key (smtp, imap, pop3) needs a grantor holding all
 * three, e.g. `app`. `missingScopes` names what was asked for first, then
 * what it implies.
 */
export function decideGrant(grantor: Grantor, grant: Grant): GrantDecision {
  if (grantor === 'operator') return { allowed: true };
  const held = heldScopes(grantor);
  if (grantor.account !== null) {
    if (grant.account !== grantor.account) return { allowed: false, reason: 'account_mismatch' };
    if (!grants(held, 'api:write')) return { allowed: false, reason: 'missing_scope', missingScopes: ['api:write'] };
  } else {
    const notAdmin = ADMIN_SCOPES.filter((s) => !grants(held, s));
    if (notAdmin.length > 0) return { allowed: false, reason: 'missing_scope', missingScopes: notAdmin };
  }
  const have = effectiveScopes(held);
  const wanted = effectiveScopes(grant.scopes);
  const missing = SCOPES.filter((s) => wanted.has(s) && !have.has(s));
  if (missing.length === 0) return { allowed: true };
  // Name what was asked for before what it implies: "app", not the "imap" that app includes.
  const asked = missing.filter((s) => grant.scopes.includes(s));
  return { allowed: false, reason: 'missing_scope', missingScopes: [...asked, ...missing.filter((s) => !asked.includes(s))] };
}

function deny(reason: DenyReason, missingScope?: Scope): Decision {
  return missingScope ? { allowed: false, reason, missingScope } : { allowed: false, reason };
}
