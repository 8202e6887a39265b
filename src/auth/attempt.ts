import type { BackendSessions } from '../backends/types.js';
import type { Action, DenyReason } from '../keys/policy.js';
import type { AccountRecord, KeyRecord } from '../keys/record.js';
import type { Protocol, Scope } from '../keys/scopes.js';
import type { EndReason } from './sessions.js';

/** Where an attempt came in: a mail protocol (its listener, or nginx asking for it), the HTTP API, or the web console's sign-in. */
export type Surface = Protocol | 'http' | 'console';

/** How one signs in to the web console: an administrator key, or a credential the console checks itself. */
export type ConsoleMethod = 'key' | 'password' | 'link' | 'oidc';

/** What a client says of itself (IMAP `ID`, SMTP `EHLO`, HTTP `User-Agent`), kept with the attempt's record. */
export interface ClientInfo {
  name?: string;
  version?: string;
}

/** Why an attempt was refused; for the audit log and the record only, never shown to a mail client. */
export type FailReason =
  | DenyReason
  | 'malformed'
  | 'unknown_key'
  | 'unknown_account'
  /** A SASL authorization identity naming someone other than the user (decided by the protocol layer). */
  | 'authzid_mismatch'
  /** A mechanism that never carries the key itself (nginx: APOP, CRAM-MD5). */
  | 'unsupported_mechanism'
  /** The HTTP route names no action this key could ever be allowed. */
  | 'no_action'
  /** The console signs in administrators only, and the key is not one. */
  | 'not_admin';

/** Why an attempt could not be decided now; the client may try again. */
export type TemporaryReason =
  | 'rate_limited'
  | 'store_unavailable'
  /** The check itself threw (a bug, logged at error level). */
  | 'check_failed'
  /** The key was good but the session's upstream could not be opened. */
  | 'backend_unavailable'
  /**
   * The key was good but no upstream is configured for the account: not a
   * passing failure, and each protocol says so (IMAP NO [UNAVAILABLE], POP3
   * -ERR [SYS/PERM]) rather than asking the client to retry.
   */
  | 'no_backend'
  /** The client was gone by the time its upstream was open. */
  | 'closed';

interface AttemptBase {
  /** The presented key as the client sent it; surrounding whitespace does not count. */
  key: string;
  /** The client's address (from the PROXY header, or nginx's `Client-IP`). */
  ip: string;
  client?: ClientInfo | null;
  /**
   * Set when the surface has already decided against the attempt without
   * asking the store (a SASL authzid naming someone else): it is recorded and
   * answered after the failure delay like any refusal, and not counted
   * against the limits (nothing was guessed).
   */
  refused?: FailReason;
}

/** The connection a mail login is for: what the live-session registry and the backend need from it. */
export interface SessionHandle {
  clientPort: number;
  secure: boolean;
  /** True once the connection is gone: an upstream opened meanwhile is closed again. */
  readonly closed: boolean;
  /** Ends the session from outside (revocation, expiry, disablement, shutdown), in the protocol's words. Called at most once. */
  end(reason: EndReason): void;
}

/** A mail login: username (the account address or an alias) and key. */
export interface MailAttempt<P extends Protocol = Protocol> extends AttemptBase {
  protocol: P;
  username: string;
  /**
   * The connection that logs in. With it, a successful login also opens the
   * protocol's backend and registers the live session; without it (nginx
   * auth_http) the attempt is checked only.
   */
  session?: SessionHandle;
}

/** An HTTP request with a key (Bearer or `access_token`), or a console sign-in with an administrator key. */
export interface ApiAttempt extends AttemptBase {
  protocol: 'http' | 'console';
  /** With `console`: `key`. */
  method?: ConsoleMethod;
  /**
   * What the request wants to do, named from the identified key. May throw
   * a LoginRefusal (refused for its reason), or anything else (an HttpError)
   * when the request names nothing this key could be allowed: refused with
   * `no_action`, the error as the `cause`.
   */
  action(key: KeyRecord): Action;
}

/** Thrown by `ApiAttempt.action` to refuse the attempt for a reason of the surface's (the console: `not_admin`). */
export class LoginRefusal extends Error {
  constructor(readonly reason: FailReason) {
    super(reason);
    this.name = 'LoginRefusal';
  }
}

/** What a surface's own check of a credential found: the value on success, else why not (for the audit log only). */
export type CheckResult<T> = { ok: true; value: T; account?: string } | { ok: false; reason: string; temporary?: boolean };

/**
 * A console sign-in with a credential the console checks itself (the
 * mailbox password at its upstream, a one-time link, an OpenID Connect
 * login): the same limits, record and failure delay as a key, around the
 * console's own `check`.
 */
export interface CheckedAttempt<T> {
  protocol: 'console';
  method: Exclude<ConsoleMethod, 'key'>;
  ip: string;
  client?: ClientInfo | null;
  /** The account named, '' when the attempt names none. */
  account: string;
  /** What was presented, only to tell repeats apart in the limits: hashed here, never kept. */
  presented: string;
  check(): Promise<CheckResult<T>>;
}

export type LoginAttempt = MailAttempt | ApiAttempt | CheckedAttempt<unknown>;

/** A logged-in mail session: the backend's side of it (null without a backend) and how to let it go. */
export interface OpenSession<P extends Protocol = Protocol> {
  backend: BackendSessions[P] | null;
  /** The connection closed: leaves the live-session registry and closes the backend's side. Idempotent. */
  release(): void;
}

export interface MailLoggedIn<P extends Protocol = Protocol> {
  kind: 'loggedIn';
  key: KeyRecord;
  /** The account logged in to. */
  account: AccountRecord;
  /** Null when the attempt carried no session (checked only). */
  session: OpenSession<P> | null;
}

export interface ApiLoggedIn {
  kind: 'loggedIn';
  key: KeyRecord;
  /** The record of the account the key is bound to; null for an unbound key or one whose account has no record. */
  keyAccount: AccountRecord | null;
}

export interface CheckedLoggedIn<T> {
  kind: 'loggedIn';
  value: T;
}

export interface Refused<R extends string = FailReason> {
  kind: 'refused';
  reason: R;
  /** The scope the key lacks, for an HTTP 403 that names it. */
  missingScope?: Scope;
  /** What `ApiAttempt.action` threw. */
  cause?: unknown;
}

export interface Temporary<R extends string = TemporaryReason> {
  kind: 'temporary';
  reason: R;
}

/**
 * How an attempt ended, as every surface answers it: `loggedIn`, `refused`
 * (the one refusal text, whatever the reason) or `temporary` (try again
 * later). `refused`, and `temporary` for any reason but the backend, come
 * the failure delay after the attempt began.
 */
export type LoginOutcome<L> = L | Refused | Temporary;

/** A checked attempt's outcome: its reasons are the surface's own words. */
export type CheckedOutcome<T> = CheckedLoggedIn<T> | Refused<string> | Temporary<string>;

/** One attempt, as it is audited and handed to `onAttempt` (login history). */
export interface AttemptRecord {
  /** When it was decided, ms since the epoch. */
  at: number;
  protocol: Surface;
  /** The console's sign-in method. */
  method: ConsoleMethod | null;
  ip: string;
  /** The account asked for (mail), or the key's (HTTP); null when unknown. */
  account: string | null;
  keyId: string | null;
  result: 'success' | 'failure' | 'temporary_failure';
  /** FailReason, TemporaryReason, or a checked attempt's own reason. */
  reason: string | null;
  client: ClientInfo | null;
}

/** Longest client name or version kept: what a client says of itself is bounded like any other input. */
const CLIENT_FIELD_MAX = 100;

/** What a client said of itself, trimmed, without control characters and bounded; null when it said nothing. */
export function clientInfo(name: unknown, version?: unknown): ClientInfo | null {
  const clean = (v: unknown): string | undefined => {
    if (typeof v !== 'string') return undefined;
    const text = v.replace(/[\u0000-\u001f\u007f]/g, '').trim().slice(0, CLIENT_FIELD_MAX);
    return text === '' ? undefined : text;
  };
  const info: ClientInfo = {};
  const n = clean(name);
  const ver = clean(version);
  if (n !== undefined) info.name = n;
  if (ver !== undefined) info.version = ver;
  return n === undefined && ver === undefined ? null : info;
}
