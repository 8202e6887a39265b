import type { Config } from '../config.js';
import type { AccountRecord } from '../keys/record.js';
import { PROTOCOLS, type Protocol } from '../keys/scopes.js';
import { isMailboxSafeAddress } from '../mailbox/address.js';
import { isSealed, openSecret, secretBox } from './secret.js';
import { parseJson } from '../json-text.js';

/**
 * Where a session goes after the front login, and how Keygate logs in there.
 *
 * Three layers, merged field by field, later wins: the default route
 * (`upstream.<protocol>.*` settings), the route for the account's domain
 * (`upstream.domains`, JSON), and the account's own route
 * (`AccountRecord.upstream`). So an account can, say, keep its domain's server
 * and only switch to `login: "account"` with its own stored credentials.
 */

export type TlsMode = 'implicit' | 'starttls' | 'none';
export const TLS_MODES: readonly TlsMode[] = ['implicit', 'starttls', 'none'];

/**
 * How Keygate logs in upstream:
 * - `master`: the upstream's master user acting for the account (Dovecot);
 * - `account`: the account's own upstream user name and password, stored encrypted;
 * - `lmtp`: SMTP only, deliver over LMTP, no login;
 * - `none`: SMTP only, relay without a login (the upstream trusts Keygate's address).
 */
export type LoginMode = 'master' | 'account' | 'lmtp' | 'none';
export const LOGIN_MODES: Record<Protocol, readonly LoginMode[]> = {
  imap: ['master', 'account'],
  pop3: ['master', 'account'],
  smtp: ['master', 'account', 'lmtp', 'none'],
};

/**
 * How a master login is written: `separator` = `LOGIN "user*master" pass`
 * (and `USER user*master` on POP3, SMTP AUTH PLAIN authcid `user*master`);
 * `authzid` = SASL PLAIN with authzid = user, authcid = master.
 */
export type MasterStyle = 'separator' | 'authzid';
export const MASTER_STYLES: readonly MasterStyle[] = ['separator', 'authzid'];

/** One upstream server, complete. `port` 0 = the protocol's usual port for the TLS mode. */
export interface UpstreamServer {
  host: string;
  port: number;
  tls: TlsMode;
  /** Check the upstream's certificate chain and name (TLS modes). */
  verifyCert: boolean;
  /** The upstream trusts Keygate to report the client: IMAP `ID x-originating-ip`, SMTP `XCLIENT` when `xclient`. */
  trusted: boolean;
  login: LoginMode;
  masterStyle: MasterStyle;
  /** SMTP only: send Postfix `XCLIENT ADDR= PORT= LOGIN=` (needs `trusted`). */
  xclient: boolean;
  /**
   * A unix socket to connect to instead of host and port: the local mailbox's
   * own routes only (src/mailbox/). Never settable by a route an operator
   * gives (not an overlay field), so no API caller can point an account at a
   * socket on Keygate's machine.
   */
  socket?: string;
}

/** Where a server is, for log lines and messages: `host:port`, or the socket path. */
export function upstreamAddress(server: Pick<UpstreamServer, 'host' | 'port' | 'socket'>): string {
  return server.socket ?? `${server.host}:${server.port}`;
}

/** What an account record or a domain route may say about one protocol: any subset of the fields but `socket`. */
export type UpstreamOverlay = Partial<Omit<UpstreamServer, 'socket'>>;

export interface MasterCredentials {
  user: string;
  password: string;
  /** Between the account and the master user name in the `separator` style. */
  separator: string;
}

/** `upstream.domains`: domain (lowercase) → its route. */
export interface DomainRoute {
  imap?: UpstreamOverlay;
  pop3?: UpstreamOverlay;
  smtp?: UpstreamOverlay;
  /** A master user for this domain's upstream, instead of `upstream.master.*`. */
  master?: Partial<MasterCredentials>;
}

/**
 * The shape of `AccountRecord.upstream` (the store keeps it opaque). `password`
 * is only ever stored sealed (AES-256-GCM under `secret`, see secret.ts); use
 * `setAccountUpstream` to write it, never the store directly.
 */
export interface AccountUpstream {
  imap?: UpstreamOverlay;
  pop3?: UpstreamOverlay;
  smtp?: UpstreamOverlay;
  /** Upstream user name (both login modes); default: the account address. */
  username?: string;
  /** Sealed upstream password, for login mode `account`. */
  password?: string;
}

/** How to log in on a resolved route. */
export type RouteLogin =
  | { mode: 'master'; user: string; style: MasterStyle; masterUser: string; masterPassword: string; separator: string }
  | { mode: 'account'; user: string; password: string }
  | { mode: 'lmtp' }
  | { mode: 'none' };

/** Who to log in upstream as: authzid (empty = none), authcid and password; null for `lmtp`/`none`. */
export function saslIdentity(login: RouteLogin): { authzid: string; authcid: string; password: string } | null {
  if (login.mode === 'master') {
    return login.style === 'authzid'
      ? { authzid: login.user, authcid: login.masterUser, password: login.masterPassword }
      : { authzid: '', authcid: `${login.user}${login.separator}${login.masterUser}`, password: login.masterPassword };
  }
  if (login.mode === 'account') return { authzid: '', authcid: login.user, password: login.password };
  return null;
}

/** The SASL PLAIN initial response for an identity, base64. */
export function saslPlain(id: { authzid: string; authcid: string; password: string }): string {
  return Buffer.from(`${id.authzid}\0${id.authcid}\0${id.password}`, 'utf8').toString('base64');
}

/** A resolved route: the server, the login, and where the host came from (for logs). */
export interface Route {
  protocol: Protocol;
  server: UpstreamServer;
  login: RouteLogin;
  source: 'account' | 'domain' | 'default' | 'local';
  /** The upstream user name (account address unless the account says otherwise). */
  user: string;
}

/** A route cannot be built (bad account record, missing master password, sealed password without a secret). */
export class RouteError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RouteError';
  }
}

/** The protocol's usual port for a TLS mode (LMTP: 24). */
export function defaultPort(protocol: Protocol, tls: TlsMode, login: LoginMode): number {
  if (protocol === 'imap') return tls === 'implicit' ? 993 : 143;
  if (protocol === 'pop3') return tls === 'implicit' ? 995 : 110;
  if (login === 'lmtp') return 24;
  return tls === 'implicit' ? 465 : 587;
}

const OVERLAY_FIELDS: Record<keyof UpstreamOverlay, (v: unknown) => boolean> = {
  host: (v) => typeof v === 'string' && !/[\s/]/.test(v),
  port: (v) => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 65535,
  tls: (v) => TLS_MODES.includes(v as TlsMode),
  verifyCert: (v) => typeof v === 'boolean',
  trusted: (v) => typeof v === 'boolean',
  login: (v) => (LOGIN_MODES.smtp as readonly unknown[]).includes(v),
  masterStyle: (v) => MASTER_STYLES.includes(v as MasterStyle),
  xclient: (v) => typeof v === 'boolean',
};

/** Every field an overlay may set: what a view of a route may show. */
export const OVERLAY_KEYS = Object.keys(OVERLAY_FIELDS) as (keyof UpstreamOverlay)[];

/** Longest upstream user name and password an account may store (a user name is at most an address). */
export const MAX_UPSTREAM_USERNAME = 254;
export const MAX_UPSTREAM_PASSWORD = 1024;
const CONTROL_RE = /[\u0000-\u001f\u007f]/;

/** Checks one overlay; returns the problem ('field: why') or null. */
export function checkOverlay(protocol: Protocol, value: unknown): string | null {
  if (value === undefined) return null;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return `${protocol}: expected an object`;
  for (const [k, v] of Object.entries(value)) {
    const check = OVERLAY_FIELDS[k as keyof UpstreamOverlay];
    if (!check) return `${protocol}.${k}: unknown field`;
    if (!check(v)) return `${protocol}.${k}: invalid value ${JSON.stringify(v)}`;
    if (k === 'login' && !LOGIN_MODES[protocol].includes(v as LoginMode)) return `${protocol}.login: ${String(v)} is not a login mode for ${protocol}`;
  }
  return null;
}

/** Parses and checks `upstream.domains`; throws an Error naming the problem. */
export function parseDomainRoutes(text: string): Map<string, DomainRoute> {
  const routes = new Map<string, DomainRoute>();
  if (text.trim() === '') return routes;
  const parsed = parseJson(text); // JsonSyntaxError: never quotes the text, which may hold the master password
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('expected a JSON object of domain → route');
  for (const [domain, route] of Object.entries(parsed as Record<string, unknown>)) {
    if (!/^[a-z0-9.-]+$/i.test(domain)) throw new Error(`"${domain}": not a domain name`);
    if (typeof route !== 'object' || route === null || Array.isArray(route)) throw new Error(`"${domain}": expected an object`);
    for (const [k, v] of Object.entries(route)) {
      if (k === 'master') {
        if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`"${domain}".master: expected an object`);
        for (const [mk, mv] of Object.entries(v)) {
          if (!['user', 'password', 'separator'].includes(mk)) throw new Error(`"${domain}".master.${mk}: unknown field`);
          if (typeof mv !== 'string') throw new Error(`"${domain}".master.${mk}: expected a string`);
        }
        continue;
      }
      if (!(PROTOCOLS as readonly string[]).includes(k)) throw new Error(`"${domain}".${k}: unknown field (imap, pop3, smtp, master)`);
      const problem = checkOverlay(k as Protocol, v);
      if (problem) throw new Error(`"${domain}".${problem}`);
    }
    routes.set(domain.toLowerCase(), route as DomainRoute);
  }
  return routes;
}

/** Checks an account's `upstream` field; returns the problem or null. */
export function checkAccountUpstream(value: unknown): string | null {
  if (value === null || value === undefined) return null;
  if (typeof value !== 'object' || Array.isArray(value)) return 'expected an object';
  for (const [k, v] of Object.entries(value)) {
    if ((PROTOCOLS as readonly string[]).includes(k)) {
      const problem = checkOverlay(k as Protocol, v);
      if (problem) return problem;
    } else if (k === 'username') {
      if (typeof v !== 'string' || v === '' || v.length > MAX_UPSTREAM_USERNAME || CONTROL_RE.test(v)) {
        return `username: expected 1-${MAX_UPSTREAM_USERNAME} characters, no control characters`;
      }
    } else if (k === 'password') {
      if (typeof v !== 'string' || !isSealed(v)) return 'password: expected a sealed secret';
    } else return `${k}: unknown field`;
  }
  return null;
}

/**
 * Validation of the `upstream.*` settings, run by loadConfig; returns the
 * offending setting and why, or null. Kept here beside the types it checks.
 */
export function validateUpstreamConfig(c: Config): { setting: string; message: string } | null {
  for (const p of PROTOCOLS) {
    const d = c.upstream[p];
    if (!TLS_MODES.includes(d.tls)) return { setting: `upstream.${p}.tls`, message: `expected one of ${TLS_MODES.join(', ')}` };
    if (!LOGIN_MODES[p].includes(d.login)) return { setting: `upstream.${p}.login`, message: `expected one of ${LOGIN_MODES[p].join(', ')}` };
    if (!MASTER_STYLES.includes(d.masterStyle)) return { setting: `upstream.${p}.masterStyle`, message: `expected one of ${MASTER_STYLES.join(', ')}` };
    if (/[\s/]/.test(d.host)) return { setting: `upstream.${p}.host`, message: 'expected a host name or address' };
  }
  if (c.upstream.smtp.xclient && !c.upstream.smtp.trusted) return { setting: 'upstream.smtp.xclient', message: 'XCLIENT needs upstream.smtp.trusted' };
  if (c.upstream.master.separator === '' || /[\s"]/.test(c.upstream.master.separator)) return { setting: 'upstream.master.separator', message: 'expected a non-empty separator without spaces or quotes' };
  try {
    parseDomainRoutes(c.upstream.domains);
  } catch (err) {
    return { setting: 'upstream.domains', message: (err as Error).message };
  }
  return null;
}

function defaultServer(config: Config, protocol: Protocol): UpstreamServer {
  const d = config.upstream[protocol];
  return {
    host: d.host,
    port: d.port,
    tls: d.tls,
    verifyCert: d.verifyCert,
    trusted: d.trusted,
    login: d.login,
    masterStyle: d.masterStyle,
    xclient: protocol === 'smtp' ? config.upstream.smtp.xclient : false,
  };
}

/**
 * The local mailbox (src/mailbox/) as a layer of routes: in place of the
 * default IMAP and POP3 upstream (domain and account routes naming a host
 * still win), and LMTP delivery for the accounts it holds.
 */
export interface LocalMailboxRoute {
  sockets: { imap: string; pop3: string; lmtp: string };
  master: MasterCredentials;
}

/** Resolves routes for sessions; built once from the settings (and the local mailbox, when Keygate runs one). */
export class Router {
  readonly domains: Map<string, DomainRoute>;

  constructor(
    private readonly config: Config,
    private readonly local: LocalMailboxRoute | null = null,
  ) {
    this.domains = parseDomainRoutes(config.upstream.domains);
  }

  /**
   * True when the settings route some account for the protocol: a default
   * host, a domain route naming a host, or the local mailbox (IMAP, POP3, and
   * SMTP delivery to its accounts). Otherwise only accounts with their own
   * route can use the protocol.
   */
  hasRoutes(protocol: Protocol): boolean {
    if (this.local) return true;
    if (this.config.upstream[protocol].host !== '') return true;
    for (const r of this.domains.values()) if (r[protocol]?.host) return true;
    return false;
  }

  /** True when the account's mail is in the local mailbox: Keygate runs one and no domain or account route sends its IMAP elsewhere. */
  isLocal(account: AccountRecord): boolean {
    if (!this.local || !isMailboxSafeAddress(account.address)) return false;
    const own = (account.upstream ?? {}) as AccountUpstream;
    return !own.imap?.host && !this.domainOf(account)?.imap?.host;
  }

  /** LMTP into the local mailbox, for messages to its accounts; null without one. */
  localDelivery(): Route | null {
    if (!this.local) return null;
    return { protocol: 'smtp', server: this.localServer(this.local.sockets.lmtp, 'lmtp'), login: { mode: 'lmtp' }, source: 'local', user: '' };
  }

  /** The route for an account and protocol; null when no layer names a host. Throws RouteError for unusable records. */
  resolve(account: AccountRecord, protocol: Protocol): Route | null {
    const problem = checkAccountUpstream(account.upstream);
    if (problem) throw new RouteError(`account ${account.address}: invalid upstream record (${problem})`);
    const own = (account.upstream ?? {}) as AccountUpstream;
    const domain = this.domainOf(account);
    if (this.local && protocol !== 'smtp' && !own[protocol]?.host && !domain?.[protocol]?.host) return this.localRoute(account, protocol, own, this.local);
    const server = { ...defaultServer(this.config, protocol), ...stripUndefined(domain?.[protocol]), ...stripUndefined(own[protocol]) };
    if (server.host === '') return null;
    const source = own[protocol]?.host ? 'account' : domain?.[protocol]?.host ? 'domain' : 'default';
    if (server.port === 0) server.port = defaultPort(protocol, server.tls, server.login);
    const user = own.username ?? account.address;

    let login: RouteLogin;
    switch (server.login) {
      case 'master': {
        const master = { ...this.config.upstream.master, ...stripUndefined(domain?.master) };
        if (master.user === '' || master.password === '') throw new RouteError(`no master user configured for ${protocol} upstream ${server.host} (upstream.master.user / upstream.master.password)`);
        login = { mode: 'master', user, style: server.masterStyle, masterUser: master.user, masterPassword: master.password, separator: master.separator };
        break;
      }
      case 'account': {
        if (own.password === undefined) throw new RouteError(`account ${account.address} has no stored upstream password (login mode "account")`);
        const box = secretBox(this.config.secret); // derived once per process
        if (!box) throw new RouteError('stored upstream credentials need KEYGATE_SECRET (setting secret)');
        login = { mode: 'account', user, password: openSecret(box, own.password, account.address) };
        break;
      }
      case 'lmtp':
        login = { mode: 'lmtp' };
        break;
      case 'none':
        login = { mode: 'none' };
        break;
    }
    return { protocol, server, login, source, user };
  }

  private domainOf(account: AccountRecord): DomainRoute | undefined {
    return this.domains.get(account.address.slice(account.address.lastIndexOf('@') + 1));
  }

  private localServer(socket: string, login: LoginMode): UpstreamServer {
    return { host: 'localhost', port: 0, socket, tls: 'none', verifyCert: false, trusted: false, login, masterStyle: 'separator', xclient: false };
  }

  /** The master login into the local mailbox; its user names a directory there, so it must be a safe one. */
  private localRoute(account: AccountRecord, protocol: 'imap' | 'pop3', own: AccountUpstream, local: LocalMailboxRoute): Route {
    const user = own.username ?? account.address;
    if (!isMailboxSafeAddress(user)) throw new RouteError(`account ${account.address}: "${user}" cannot name a local mailbox (letters, digits and !#$%&'*+=?^_\`{|}~- in dot-separated parts, and an ASCII domain)`);
    const { user: masterUser, password: masterPassword, separator } = local.master;
    return {
      protocol,
      server: this.localServer(local.sockets[protocol], 'master'),
      login: { mode: 'master', user, style: 'separator', masterUser, masterPassword, separator },
      source: 'local',
      user,
    };
  }
}

function stripUndefined<T extends object>(o: T | undefined): Partial<T> {
  if (!o) return {};
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
