import { createBackends } from '../backends/index.js';
import { Router, type Route } from '../backends/routing.js';
import { SmtpProxyBackend } from '../backends/smtp.js';
import type { SessionContext } from '../backends/types.js';
import type { Config } from '../config.js';
import { newKey } from '../keys/new-key.js';
import type { AccountRecord } from '../keys/record.js';
import { PROTOCOLS, type Protocol } from '../keys/scopes.js';
import { createLogger } from '../log.js';
import type { KeyStore } from '../store/types.js';
import { fail, ok, skip, type CheckResult } from './types.js';

/** Accounts read from the store to find who uses which route; enough to cover every domain in practice. */
const MAX_ACCOUNTS = 1000;

/** One upstream as routes reach it, and an account to log in for (null: none known). */
interface Target {
  protocol: Protocol;
  route: Route | null;
  account: AccountRecord | null;
  /** Set when the route itself cannot be built (missing master password, bad record). */
  problem?: string;
  label: string;
}

function bareAccount(address: string): AccountRecord {
  return { address, aliases: [], displayName: null, disabled: false, createdAt: new Date(0).toISOString(), upstream: null };
}

function describeServer(route: Route): string {
  const where = route.source === 'default' ? '' : route.source === 'domain' ? ', domain route' : ', account route';
  return `${route.server.host}:${route.server.port} (${route.login.mode === 'lmtp' ? 'LMTP' : route.server.tls}${where})`;
}

function describeLogin(route: Route): string {
  switch (route.login.mode) {
    case 'master':
      return `master login as ${route.user}`;
    case 'account':
      return `login as ${route.user}`;
    case 'lmtp':
      return 'LMTP greeting';
    case 'none':
      return 'greeting (no login)';
  }
}

/** Same server, login mode and identity: one check covers every account routed there. */
function targetKey(protocol: Protocol, route: Route): string {
  const who = route.login.mode === 'master' ? route.login.masterUser : route.login.mode === 'account' ? route.user : '';
  return JSON.stringify([protocol, route.server, route.login.mode, who]);
}

/**
 * Every upstream the settings and the stored accounts route to: the default
 * per protocol, each domain route, and accounts' own routes. Each is
 * connected to and logged in to as a real session would (TLS, master or
 * account login), for an account that uses it, and left without doing
 * anything; SMTP upstreams are greeted and logged in to, and no message is
 * sent. An upstream no known account uses is skipped with a hint: a master
 * login needs an existing user. With `account`, only that account's routes.
 */
export async function checkUpstreams(config: Config, store: KeyStore | null, options: { account?: string } = {}): Promise<CheckResult[]> {
  const router = new Router(config);
  const targets = new Map<string, Target>();
  const consider = (account: AccountRecord, protocol: Protocol, known: boolean): void => {
    let route: Route | null;
    try {
      route = router.resolve(account, protocol);
    } catch (err) {
      // One line per distinct problem, not one per account that has it.
      const problem = (err as Error).message;
      if (!targets.has(`${protocol} ${problem}`)) targets.set(`${protocol} ${problem}`, { protocol, route: null, account, problem, label: '' });
      return;
    }
    if (!route) return;
    const key = targetKey(protocol, route);
    const target = targets.get(key);
    if (!target) targets.set(key, { protocol, route, account: known ? account : null, label: describeServer(route) });
    else if (!target.account && known) Object.assign(target, { account, route });
  };

  if (options.account !== undefined) {
    const address = options.account.trim().toLowerCase();
    const account = (await store?.getAccount(address)) ?? bareAccount(address);
    for (const p of PROTOCOLS) consider(account, p, true);
  } else {
    // Routes that exist without any account: the defaults and each domain's.
    for (const domain of ['keygate.invalid', ...router.domains.keys()]) for (const p of PROTOCOLS) consider(bareAccount(`postmaster@${domain}`), p, false);
    const accounts = store ? (await store.listAccounts({ limit: MAX_ACCOUNTS })).items : [];
    for (const a of accounts) for (const p of PROTOCOLS) consider(a, p, true);
  }
  if (targets.size === 0) {
    return [config.mailbox === 'local' ? skip('upstreams', 'none but the local mailbox (IMAP, POP3, and SMTP to its accounts)') : skip('upstreams', 'none configured (upstream.imap.host, upstream.pop3.host, upstream.smtp.host, upstream.domains, or mailbox local)')];
  }

  const backends = createBackends(config, store, createLogger('silent'));
  try {
    return await Promise.all([...targets.values()].map((t) => checkTarget(t, backends)));
  } finally {
    await backends.close();
  }
}

async function checkTarget(t: Target, backends: ReturnType<typeof createBackends>): Promise<CheckResult> {
  const name = `${t.protocol} upstream`;
  if (t.problem !== undefined) return fail(name, `${t.label ? `${t.label}: ` : ''}${t.problem}`);
  const route = t.route!;
  if (!t.account) return skip(name, `${t.label}: login not tried, no stored account uses it; give --account ADDRESS`);
  const ctx: SessionContext = { protocol: t.protocol, account: t.account, key: newKey({ name: 'keygate check', account: t.account.address, scopes: ['*'] }).record, clientIp: '127.0.0.1', clientPort: 0, secure: true };
  try {
    if (t.protocol === 'smtp') {
      if (!(backends.smtp instanceof SmtpProxyBackend)) throw new Error('no SMTP backend');
      await backends.smtp.verify(ctx);
    } else {
      const backend = t.protocol === 'imap' ? backends.imap : backends.pop3;
      if (!backend) throw new Error(`no ${t.protocol} backend`);
      (await backend.open(ctx)).close();
    }
    return ok(name, `${t.label}: ${describeLogin(route)} accepted`);
  } catch (err) {
    return fail(name, `${t.label}: ${describeLogin(route)} failed: ${reason(err)}`);
  }
}

/** The upstream's own words when there are some (UpstreamError, nodemailer), never a password. */
function reason(err: unknown): string {
  const cause = (err as { cause?: unknown }).cause;
  return cause instanceof Error ? cause.message : (err as Error).message;
}
