import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { createSelfSignedCertificate } from '../../src/tls/index.js';
import { freePort, pebbleAvailable, startPebble, type RunningPebble } from '../helpers/pebble.js';
import { redisAvailable, startRedis, type RedisServer } from '../helpers/redis-server.js';
import { waitFor } from '../helpers/wait.js';
import { captureLogger, type CapturedLogger } from './helpers.js';

const HOST = 'mail.keygate.test';
const ALIAS = 'imap.keygate.test';
/** Short waits so a test sees retries and renewals in seconds, not hours. */
const TIMING = { retryMs: 300, maxRetryMs: 1500, rescanMs: 400 };

const root = mkdtempSync(join(tmpdir(), 'keygate-acme-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

interface Ports {
  http: number;
  imap: number;
  imaps: number;
  pop3s: number;
  smtps: number;
}

const ports = async (): Promise<Ports> => ({ http: await freePort(), imap: await freePort(), imaps: await freePort(), pop3s: await freePort(), smtps: await freePort() });

function acmeConfig(pebble: RunningPebble, p: Ports, store: Record<string, unknown>, flags: Record<string, unknown> = {}): Config {
  return loadConfig({
    env: {},
    flags: {
      ...store,
      hostname: HOST,
      'tls.dir': mkdtempSync(join(root, 'certs-')),
      'tls.acme.directory': pebble.directory,
      'tls.acme.directoryCa': pebble.httpsCaPath,
      'tls.acme.email': 'postmaster@keygate.test',
      'tls.acme.names': ALIAS,
      'http.host': '127.0.0.1',
      'http.port': p.http,
      'imap.port': p.imap,
      'imap.securePort': p.imaps,
      'pop3.port': 0,
      'pop3.securePort': p.pop3s,
      'smtp.port': 0,
      'smtp.securePort': p.smtps,
      shutdownGrace: '100ms',
      ...flags,
    },
  });
}

async function serve(config: Config, log: CapturedLogger): Promise<RunningServer> {
  const server = await startServer(config, log.logger, { acmeTiming: TIMING });
  cleanups.push(() => server.close());
  return server;
}

async function pebbleFor(p: Ports, validitySeconds?: number): Promise<RunningPebble> {
  const pebble = await startPebble({ httpPort: p.http, tlsPort: p.imaps, ...(validitySeconds && { validitySeconds }) });
  cleanups.push(() => pebble.stop());
  return pebble;
}

const count = (log: CapturedLogger, msg: string): number => log.lines.filter((l) => l.msg === msg).length;
const issued = (log: CapturedLogger): number => count(log, 'ACME certificate issued');
/** What the ACME manager said, for a failure message. */
const acmeLines = (log: CapturedLogger): string => JSON.stringify(log.lines.filter((l) => String(l.msg).includes('ACME')));

/** Each order an instance placed: when it began, and when it ended in a certificate or a reported failure. */
function orderSpans(log: CapturedLogger, who: string): Array<{ who: string; start: number; end: number; outcome: 'issued' | 'failed' | 'open' }> {
  const spans: Array<{ who: string; start: number; end: number; outcome: 'issued' | 'failed' | 'open' }> = [];
  for (const l of log.lines) {
    const t = Date.parse(String(l.time));
    const open = spans.at(-1)?.outcome === 'open' ? spans.at(-1)! : null;
    if (l.msg === 'ACME: ordering a certificate') spans.push({ who, start: t, end: Infinity, outcome: 'open' });
    else if (open && l.msg === 'ACME certificate issued') Object.assign(open, { end: t, outcome: 'issued' });
    else if (open && l.msg === 'ACME: could not get a certificate; the current one stays in service') Object.assign(open, { end: t, outcome: 'failed' });
  }
  return spans;
}

/** An implicit-TLS connection checked against `ca` alone: the server must send the intermediate itself. */
async function verifiedConnect(port: number, servername: string, ca: string): Promise<tls.TLSSocket> {
  const s = tls.connect({ host: '127.0.0.1', port, servername, ca });
  await once(s, 'secureConnect');
  return s;
}

async function firstLine(s: net.Socket): Promise<string> {
  const [data] = (await once(s, 'data')) as [Buffer];
  return data.toString();
}

describe.skipIf(!pebbleAvailable())('ACME against Pebble', () => {
  it('HTTP-01: issues for the host name and tls.acme.names, serves it on every TLS listener, verifies against Pebble’s root, and survives a restart from the store', async () => {
    const p = await ports();
    const pebble = await pebbleFor(p);
    const db = join(root, 'http01.db');
    const log = captureLogger('info');
    const server = await serve(acmeConfig(pebble, p, { 'db.path': db }), log);
    await waitFor(() => issued(log) === 1, 30_000, () => acmeLines(log));
    const caRoot = await pebble.root();

    for (const [port, name] of [[p.imaps, HOST], [p.imaps, ALIAS], [p.pop3s, HOST], [p.smtps, ALIAS]] as const) {
      const s = await verifiedConnect(port, name, caRoot);
      expect(s.authorized).toBe(true);
      const chain = s.getPeerCertificate(true);
      expect(chain.subjectaltname).toContain(`DNS:${HOST}`);
      expect(chain.subjectaltname).toContain(`DNS:${ALIAS}`);
      expect(chain.issuer.CN).toMatch(/^Pebble Intermediate CA/);
      expect(new X509Certificate(chain.raw).publicKey.asymmetricKeyType).toBe('ec');
      expect(await firstLine(s)).toMatch(/^(\* OK|\+OK|220)/);
      s.destroy();
    }

    // STARTTLS serves it too.
    const plain = net.connect(p.imap, '127.0.0.1');
    expect(await firstLine(plain)).toMatch(/^\* OK/);
    plain.write('a STARTTLS\r\n');
    expect(await firstLine(plain)).toMatch(/^a OK/);
    const upgraded = tls.connect({ socket: plain, servername: HOST, ca: caRoot });
    await once(upgraded, 'secureConnect');
    expect(upgraded.authorized).toBe(true);
    upgraded.destroy();

    // The HTTP-01 answer is gone once the order is done; unknown tokens get 404.
    const res = await fetch(`http://127.0.0.1:${p.http}/.well-known/acme-challenge/no-such-token`);
    expect(res.status).toBe(404);

    // The account and the certificate are in the store: a restart serves it without ordering.
    const fingerprint = server.tls.fingerprint256();
    await server.close();
    const again = captureLogger('info');
    const restarted = await serve(acmeConfig(pebble, p, { 'db.path': db }), again);
    expect(restarted.tls.fingerprint256()).toBe(fingerprint);
    expect(count(again, 'ACME certificate loaded from the store')).toBe(1);
    expect(count(again, 'ACME: ordering a certificate')).toBe(0);
  }, 60_000);

  it('TLS-ALPN-01 on the implicit-TLS port, and the control plane over HTTPS with HSTS', async () => {
    const p = await ports();
    const pebble = await pebbleFor(p);
    const log = captureLogger('info');
    const server = await serve(acmeConfig(pebble, p, { 'db.path': join(root, 'alpn.db') }, { 'tls.acme.challenge': 'tls-alpn-01', 'http.tls': true }), log);
    await waitFor(() => issued(log) === 1, 30_000, () => acmeLines(log));
    const caRoot = await pebble.root();

    const s = await verifiedConnect(p.imaps, HOST, caRoot);
    expect(s.authorized).toBe(true);
    expect(s.alpnProtocol).toBe(false);
    s.destroy();

    const response = await new Promise<{ status: number; hsts: string | undefined; body: string }>((resolve, reject) => {
      https
        .get({ host: '127.0.0.1', port: p.http, path: '/health', servername: HOST, ca: caRoot }, (res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += d.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, hsts: res.headers['strict-transport-security'] as string | undefined, body }));
        })
        .on('error', reject);
    });
    expect(response.status).toBe(200);
    expect(response.hsts).toBe('max-age=31536000');
    expect(JSON.parse(response.body)).toMatchObject({ status: 'ok' });
    expect(server.tls.fingerprint256()).toBe(new X509Certificate(server.tls.certPem()).fingerprint256);

    // A client asking for acme-tls/1 when no challenge is pending gets no certificate at all.
    const probe = tls.connect({ host: '127.0.0.1', port: p.imaps, servername: HOST, ALPNProtocols: ['acme-tls/1'], rejectUnauthorized: false });
    const [err] = (await once(probe, 'error')) as [Error];
    expect(err.message).toMatch(/disconnected|alert|handshake|hang up/i);

    // With a challenge pending (answered from the store), both the mail port and the HTTPS control plane present its certificate.
    const validation = await createSelfSignedCertificate(HOST);
    await server.tls.acmeChallenges!.putAlpn(HOST, validation.certPem, validation.keyPem);
    for (const port of [p.imaps, p.http]) {
      const v = tls.connect({ host: '127.0.0.1', port, servername: HOST, ALPNProtocols: ['acme-tls/1'], rejectUnauthorized: false });
      await once(v, 'secureConnect');
      expect({ port, alpn: v.alpnProtocol, fp: v.getPeerCertificate().fingerprint256 }).toEqual({ port, alpn: 'acme-tls/1', fp: new X509Certificate(validation.certPem).fingerprint256 });
      v.destroy();
    }
    // Everyone else still gets the real certificate (a browser offering h2 and http/1.1 gets http/1.1).
    const browser = tls.connect({ host: '127.0.0.1', port: p.http, servername: HOST, ALPNProtocols: ['h2', 'http/1.1'], ca: caRoot });
    await once(browser, 'secureConnect');
    expect([browser.authorized, browser.alpnProtocol]).toEqual([true, 'http/1.1']);
    browser.destroy();
  }, 60_000);

  it('renews early and swaps with no restart and no dropped session; a CA that is down leaves the certificate in service, one log line per retry', async () => {
    const p = await ports();
    // 20 s certificates: renewal is due after 13 s (a third of the lifetime left).
    const pebble = await pebbleFor(p, 20);
    const log = captureLogger('info');
    await serve(acmeConfig(pebble, p, { 'db.path': join(root, 'renew.db') }), log);
    await waitFor(() => issued(log) === 1, 30_000, () => acmeLines(log));
    const firstRoot = await pebble.root();
    const session = await verifiedConnect(p.imaps, HOST, firstRoot);
    const first = session.getPeerCertificate().fingerprint256;
    expect(await firstLine(session)).toMatch(/^\* OK/);

    await pebble.stopCa();
    const failures = (): Array<Record<string, unknown>> => log.lines.filter((l) => l.msg === 'ACME: could not get a certificate; the current one stays in service');
    await waitFor(() => failures().length >= 3, 40_000, () => acmeLines(log));
    expect(failures().slice(0, 3).map((l) => l.attempt)).toEqual([1, 2, 3]);
    expect(failures()[0]).toMatchObject({ level: 40, serving: first, err: expect.stringMatching(/^cannot reach the ACME CA: ECONNREFUSED/) });
    const during = await verifiedConnect(p.imaps, HOST, firstRoot);
    expect(during.getPeerCertificate().fingerprint256).toBe(first);
    during.destroy();

    // The CA is back (with a new root, as Pebble makes one per start): the next retry renews.
    await pebble.startCa();
    await waitFor(() => issued(log) === 2, 30_000, () => acmeLines(log));
    const renewed = await verifiedConnect(p.imaps, HOST, await pebble.root());
    expect(renewed.authorized).toBe(true);
    expect(renewed.getPeerCertificate().fingerprint256).not.toBe(first);
    renewed.destroy();

    // The session opened on the old certificate is still there and answers.
    session.write('a NOOP\r\n');
    expect(await firstLine(session)).toMatch(/^a OK/);
    session.destroy();
  }, 90_000);
});

describe.skipIf(!pebbleAvailable() || !redisAvailable())('ACME with two instances on one Redis', () => {
  let redis: RedisServer;
  afterAll(async () => {
    await redis?.stop();
  });

  it('only one orders; both serve the certificate', async () => {
    redis = await startRedis();
    const a = await ports();
    const b = await ports();
    // The CA validates against instance A only; whichever instance orders, A answers from the store.
    const pebble = await pebbleFor(a);
    const logA = captureLogger('info');
    const logB = captureLogger('info');
    const store = { 'dbs.redis': redis.url };
    const [serverA, serverB] = await Promise.all([serve(acmeConfig(pebble, a, store), logA), serve(acmeConfig(pebble, b, store), logB)]);
    await waitFor(() => serverA.tls.acme?.current() !== null && serverB.tls.acme?.current() !== null, 30_000, () => acmeLines(logA) + acmeLines(logB));
    // One certificate in all. An order that fails (the CA can reach instance A
    // before A is listening, as happens on a busy machine) frees the lock and is
    // ordered again, so the property is: orders never overlap, and every order
    // after the first follows a failure that was reported.
    const orders = orderSpans(logA, 'A').concat(orderSpans(logB, 'B')).sort((x, y) => x.start - y.start);
    const story = JSON.stringify(orders);
    expect(issued(logA) + issued(logB), story).toBe(1);
    expect(orders.filter((o) => o.outcome === 'failed').length, story).toBe(orders.length - 1);
    for (let i = 1; i < orders.length; i++) expect(orders[i]!.start, story).toBeGreaterThanOrEqual(orders[i - 1]!.end);
    expect(serverA.tls.fingerprint256()).toBe(serverB.tls.fingerprint256());

    const caRoot = await pebble.root();
    for (const port of [a.imaps, b.imaps]) {
      const s = await verifiedConnect(port, HOST, caRoot);
      expect(s.getPeerCertificate().fingerprint256).toBe(serverA.tls.fingerprint256());
      s.destroy();
    }
  }, 60_000);
});
