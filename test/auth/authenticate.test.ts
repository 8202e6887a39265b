/**
 * Authenticator.logIn, the one login path, on a real SQLite store and a real
 * live-session registry: every attempt passes the record hook once, refusals
 * come the failure delay after the attempt began, and a mail login with a
 * connection opens its backend and registers its session — or, when the
 * client is gone or the backend is down, leaves nothing behind.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { AttemptRecord, SessionHandle } from '../../src/auth/attempt.js';
import { Authenticator } from '../../src/auth/authenticate.js';
import { SessionRegistry, type EndReason } from '../../src/auth/sessions.js';
import { BackendUnavailableError, type Backend, type PipeSession } from '../../src/backends/types.js';
import { generateKey } from '../../src/keys/format.js';
import { newKey } from '../../src/keys/new-key.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import type { KeyStore } from '../../src/store/types.js';
import { silentLogger } from '../tls/helpers.js';

const DELAY_MS = 200;
const ALICE = 'alice@example.com';
const dir = mkdtempSync(join(tmpdir(), 'keygate-authenticate-'));
let store: KeyStore;
let aliceKey: string;
let adminKey: string;
let registry: SessionRegistry;
let records: AttemptRecord[];

beforeAll(async () => {
  store = openSqliteStore(join(dir, 'k.db'), { touchIntervalMs: 20 });
  await store.ensureAccount(ALICE);
  const alice = newKey({ name: 'phone', account: ALICE, scopes: ['imap', 'pop3'] });
  const admin = newKey({ name: 'admin', account: null, scopes: ['*'] });
  await store.createKey(alice.record);
  await store.createKey(admin.record);
  aliceKey = alice.key;
  adminKey = admin.key;
});
afterAll(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});
beforeEach(() => {
  records = [];
  registry = new SessionRegistry(store, silentLogger());
  registry.start();
});
afterEach(() => registry.stop());

function authenticator(backends: { imap?: Backend<PipeSession> | null } = {}): Authenticator {
  return new Authenticator({
    store,
    logger: silentLogger(),
    failureDelayMs: DELAY_MS,
    sessions: registry,
    backends: { imap: backends.imap ?? null, pop3: null, smtp: null },
    onAttempt: (r) => records.push(r),
  });
}

/** A connection as a listener hands it to logIn. */
function connection(): SessionHandle & { ended: EndReason[]; gone: boolean } {
  return {
    clientPort: 50000,
    secure: true,
    ended: [],
    gone: false,
    get closed() {
      return this.gone;
    },
    end(reason) {
      this.ended.push(reason);
    },
  };
}

/** An upstream side that only records whether it was closed. */
function pipe(): PipeSession & { closedTimes: number } {
  const p = { socket: new PassThrough(), relay: () => {}, closedTimes: 0, close: () => void p.closedTimes++ };
  return p;
}

const timed = async <T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> => {
  const started = performance.now();
  const value = await fn();
  return { value, ms: performance.now() - started };
};

describe('Authenticator.logIn', () => {
  it('records every attempt once, with its result and reason, and delays only the ones that fail', async () => {
    const auth = authenticator();
    const cases = [
      { key: aliceKey, expect: { kind: 'loggedIn' }, record: { result: 'success', reason: null } },
      { key: 'kg_not-a-key', expect: { kind: 'refused', reason: 'malformed' }, record: { result: 'failure', reason: 'malformed' } },
      { key: generateKey(), expect: { kind: 'refused', reason: 'unknown_key' }, record: { result: 'failure', reason: 'unknown_key' } },
    ] as const;
    for (const c of cases) {
      const { value, ms } = await timed(() => auth.logIn({ protocol: 'imap', username: ALICE, key: c.key, ip: '192.0.2.1', client: { name: 'Thunderbird' } }));
      expect(value).toMatchObject(c.expect);
      if (c.expect.kind === 'loggedIn') expect(ms).toBeLessThan(DELAY_MS);
      else expect(ms).toBeGreaterThanOrEqual(DELAY_MS - 2);
      expect(records.at(-1)).toMatchObject({ protocol: 'imap', ip: '192.0.2.1', account: ALICE, client: { name: 'Thunderbird' }, ...c.record });
    }
    expect(records).toHaveLength(cases.length);
  });

  it('decides an HTTP attempt against the action the request names, refusing with the missing scope', async () => {
    const auth = authenticator();
    const read = await auth.logIn({ protocol: 'http', key: aliceKey, ip: '192.0.2.1', action: (k) => ({ kind: 'api', access: 'read', account: k.account! }) });
    expect(read).toMatchObject({ kind: 'refused', reason: 'missing_scope', missingScope: 'api:read' });
    const admin = await auth.logIn({ protocol: 'http', key: adminKey, ip: '192.0.2.1', action: () => ({ kind: 'admin', access: 'write' }) as const });
    expect(admin).toMatchObject({ kind: 'loggedIn', keyAccount: null });
    const thrown = new Error('names no action');
    const none = await auth.logIn({ protocol: 'http', key: adminKey, ip: '192.0.2.1', action: () => { throw thrown; } });
    expect(none).toMatchObject({ kind: 'refused', reason: 'no_action', cause: thrown });
    expect(records.map((r) => [r.protocol, r.result, r.reason])).toEqual([
      ['http', 'failure', 'missing_scope'],
      ['http', 'success', null],
      ['http', 'failure', 'no_action'],
    ]);
  });

  it('opens the backend and registers the live session; release() undoes both once', async () => {
    const upstream = pipe();
    const auth = authenticator({ imap: { open: async () => upstream } });
    const conn = connection();
    const outcome = await auth.logIn({ protocol: 'imap', username: ALICE, key: aliceKey, ip: '192.0.2.1', session: conn });
    if (outcome.kind !== 'loggedIn') throw new Error(`not logged in: ${outcome.kind}`);
    expect(outcome.session?.backend).toBe(upstream);
    expect(registry.count('imap')).toBe(1);
    registry.endAll('shutdown');
    expect(conn.ended).toEqual(['shutdown']);
    outcome.session!.release();
    outcome.session!.release();
    expect(upstream.closedTimes).toBe(1);
    expect(registry.count('imap')).toBe(0);
  });

  it('a client gone before its upstream opened: the upstream is closed again and nothing is registered', async () => {
    const upstream = pipe();
    const conn = connection();
    const auth = authenticator({
      imap: {
        async open() {
          conn.gone = true;
          return upstream;
        },
      },
    });
    const outcome = await auth.logIn({ protocol: 'imap', username: ALICE, key: aliceKey, ip: '192.0.2.1', session: conn });
    expect(outcome).toEqual({ kind: 'temporary', reason: 'closed' });
    expect(upstream.closedTimes).toBe(1);
    expect(registry.count()).toBe(0);
  });

  it('a backend that is down: a temporary outcome at once (the key was good), nothing registered', async () => {
    const auth = authenticator({
      imap: {
        async open() {
          throw new BackendUnavailableError('upstream down');
        },
      },
    });
    const { value, ms } = await timed(() => auth.logIn({ protocol: 'imap', username: ALICE, key: aliceKey, ip: '192.0.2.1', session: connection() }));
    expect(value).toEqual({ kind: 'temporary', reason: 'backend_unavailable' });
    expect(ms).toBeLessThan(DELAY_MS);
    expect(registry.count()).toBe(0);
  });
});
