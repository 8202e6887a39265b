import { KEY_SCAN_RE } from './format.js';

/** Scopes a key record can carry after aliases are expanded. */
export const SCOPES = ['*', 'smtp', 'imap', 'pop3', 'api:read', 'api:write', 'app', 'internal', 'metrics', 'introspect'] as const;
export type Scope = (typeof SCOPES)[number];

/** The mail protocols, the one list every module names them by. */
export const PROTOCOLS = ['imap', 'pop3', 'smtp'] as const;
export type Protocol = (typeof PROTOCOLS)[number];

/** Input-only names that expand to stored scopes. */
export const SCOPE_ALIASES: Readonly<Record<string, readonly Scope[]>> = {
  api: ['api:read', 'api:write'],
  'api:*': ['api:read', 'api:write'],
  'imap-proxy': ['imap'],
};

/** What each scope grants, beyond itself. `*` is handled by `grants`. */
const IMPLIED: Readonly<Partial<Record<Scope, readonly Scope[]>>> = {
  app: ['api:read', 'api:write', 'smtp', 'imap', 'pop3'],
  internal: ['smtp', 'imap', 'pop3'],
};

export class UnknownScopeError extends Error {
  // A mistyped command line may put a key where a scope goes: the message never shows one.
  constructor(readonly scope: string) {
    super(`unknown scope "${scope.replace(KEY_SCAN_RE, 'kg_[REDACTED]')}" (known: ${[...SCOPES, ...Object.keys(SCOPE_ALIASES)].join(', ')})`);
    this.name = 'UnknownScopeError';
  }
}

export function isScope(value: string): value is Scope {
  return (SCOPES as readonly string[]).includes(value);
}

/**
 * Expands aliases, splits comma-separated input, removes duplicates and sorts.
 * Throws UnknownScopeError on a name that is neither a scope nor an alias.
 */
export function normalizeScopes(input: readonly string[]): Scope[] {
  const out = new Set<Scope>();
  for (const raw of input.flatMap((s) => s.split(','))) {
    const name = raw.trim();
    if (name === '') continue;
    const alias = SCOPE_ALIASES[name];
    if (alias) alias.forEach((s) => out.add(s));
    else if (isScope(name)) out.add(name);
    else throw new UnknownScopeError(name);
  }
  return [...out].sort((a, b) => SCOPES.indexOf(a) - SCOPES.indexOf(b));
}

/** True when a key holding `held` may use `wanted`. */
export function grants(held: readonly Scope[], wanted: Scope): boolean {
  if (held.includes('*') || held.includes(wanted)) return true;
  return held.some((s) => IMPLIED[s]?.includes(wanted) ?? false);
}

/** Every scope `held` grants, `*` included only if held. */
export function effectiveScopes(held: readonly Scope[]): Set<Scope> {
  if (held.includes('*')) return new Set(SCOPES);
  return new Set(SCOPES.filter((s) => grants(held, s)));
}
