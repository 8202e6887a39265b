import type { Config } from '../config.js';
import type { AccountRecord } from '../keys/record.js';
import { NotFoundError } from '../store/errors.js';
import type { KeyStore } from '../store/types.js';
import { PROTOCOLS, type Protocol } from '../keys/scopes.js';
import { checkAccountUpstream, MAX_UPSTREAM_PASSWORD, OVERLAY_KEYS, type AccountUpstream, type UpstreamOverlay } from './routing.js';
import { MIN_SECRET_LENGTH, sealSecret, secretBox, SecretError } from './secret.js';

/** What an operator gives to route an account; `password` in plain text (sealed before it is stored). */
export interface AccountUpstreamInput {
  imap?: UpstreamOverlay;
  pop3?: UpstreamOverlay;
  smtp?: UpstreamOverlay;
  /** Upstream user name; null or absent = the account address. */
  username?: string | null;
  /** Upstream password for login mode `account`; absent = keep the stored one, null = remove it. */
  password?: string | null;
}

/** The account's routing input is not valid; `field` names the part. */
export class UpstreamInputError extends Error {
  constructor(
    message: string,
    readonly field: string,
  ) {
    super(message);
    this.name = 'UpstreamInputError';
  }
}

/**
 * Sets (replaces) an account's upstream route; the only way a password gets
 * into the store, sealed under `secret`. `null` clears the route. Throws
 * NotFoundError for an unknown account, UpstreamInputError for a bad route,
 * SecretError when a password is given but the secret is missing or too short.
 */
export async function setAccountUpstream(
  store: KeyStore,
  config: Pick<Config, 'secret'>,
  address: string,
  input: AccountUpstreamInput | null,
): Promise<AccountRecord> {
  const current = await store.getAccount(address);
  if (!current) throw new NotFoundError(`account ${address}`);
  if (input === null) return store.updateAccount(current.address, { upstream: null });

  const next: AccountUpstream = {};
  for (const p of PROTOCOLS) if (input[p] !== undefined) next[p] = input[p];
  if (input.username !== undefined && input.username !== null) next.username = input.username.trim();
  if (input.password === undefined) {
    const kept = (current.upstream as AccountUpstream | null)?.password;
    if (kept !== undefined) next.password = kept;
  } else if (input.password !== null) {
    if (input.password === '' || input.password.length > MAX_UPSTREAM_PASSWORD || /[\r\n\0]/.test(input.password)) {
      throw new UpstreamInputError(`the upstream password must be 1-${MAX_UPSTREAM_PASSWORD} characters, without line breaks`, 'password');
    }
    if (config.secret.length < MIN_SECRET_LENGTH) {
      throw new SecretError(`storing upstream credentials needs KEYGATE_SECRET (setting secret) of at least ${MIN_SECRET_LENGTH} characters`);
    }
    next.password = sealSecret(secretBox(config.secret)!, input.password, current.address);
  }
  const problem = checkAccountUpstream(next);
  if (problem) throw new UpstreamInputError(`invalid upstream route: ${problem}`, problem.split(':')[0]!);
  return store.updateAccount(current.address, { upstream: next as Record<string, unknown> });
}

/** An account's route as an API or the CLI shows it: the stored overlays and user name, and only whether a password is set. */
export interface UpstreamRouteView {
  imap?: UpstreamOverlay;
  pop3?: UpstreamOverlay;
  smtp?: UpstreamOverlay;
  /** Upstream user name; null = the account address. */
  username: string | null;
  /** A sealed upstream password is stored (it is never shown, sealed or not). */
  passwordSet: boolean;
}

export interface AccountUpstreamView {
  account: string;
  /** null: the account has no route of its own (it follows its domain's route or the default). */
  route: UpstreamRouteView | null;
}


/**
 * The redacted view of an account's route. Built from an allowlist of fields,
 * so nothing else stored on the record (above all the sealed password) can
 * reach a response.
 */
export function upstreamView(account: AccountRecord): AccountUpstreamView {
  const stored = account.upstream as (AccountUpstream & Record<string, unknown>) | null;
  if (stored === null) return { account: account.address, route: null };
  const overlays: Pick<UpstreamRouteView, Protocol> = {};
  for (const p of PROTOCOLS) {
    const overlay = stored[p];
    if (typeof overlay !== 'object' || overlay === null) continue;
    overlays[p] = Object.fromEntries(OVERLAY_KEYS.filter((k) => overlay[k] !== undefined).map((k) => [k, overlay[k]])) as UpstreamOverlay;
  }
  return {
    account: account.address,
    route: { ...overlays, username: typeof stored.username === 'string' ? stored.username : null, passwordSet: typeof stored.password === 'string' },
  };
}
