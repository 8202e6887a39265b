import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { openStore } from '../../src/store/index.js';
import { createTlsProvider, upgradeToTls, type TlsProvider } from '../../src/tls/index.js';
import { captureLogger, closeServer, listenOn, silentLogger, sleep } from './helpers.js';

const root = mkdtempSync(join(tmpdir(), 'keygate-resume-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

interface Handshake {
  resumed: boolean;
  /** The newest ticket: the one the server sent (after a full handshake), else the one offered (a resumed one gets none). */
  session: Buffer | undefined;
  protocol: string | null;
}

/** One connection: handshake, read the greeting, keep the ticket, close. */
async function handshake(connect: (session?: Buffer) => tls.TLSSocket, offered?: Buffer): Promise<Handshake> {
  const s = connect(offered);
  let session: Buffer | undefined;
  s.on('session', (t: Buffer) => (session = t));
  await once(s, 'secureConnect');
  await once(s, 'data');
  const resumed = s.isSessionReused();
  // A TLS 1.3 ticket can trail the greeting by a moment; a resumed session gets no new one.
  for (let i = 0; i < 20 && !session && !resumed; i++) await sleep(10);
  const result = { resumed, session: session ?? offered, protocol: s.getProtocol() };
  s.destroy();
  expect(result.session).toBeInstanceOf(Buffer);
  return result;
}

const implicit = (port: number, options: tls.ConnectionOptions = {}) => (session?: Buffer) =>
  tls.connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false, ...options, ...(session && { session }) });

describe('TLS session resumption across Keygate instances', () => {
  it('a ticket from one instance resumes on the same and on another instance (TLS 1.3 and 1.2), on every TLS listener', async () => {
    const db = join(root, 'keys.db');
    const certs = mkdtempSync(join(root, 'certs-'));
    const start = async (): Promise<RunningServer> => {
      const config = loadConfig({
        env: {},
        flags: {
          'db.path': db,
          'tls.dir': certs,
          'http.port': 0,
          'imap.port': 0,
          'imap.securePort': 0,
          'pop3.port': 0,
          'pop3.securePort': 0,
          'smtp.port': 0,
          'smtp.securePort': 0,
          shutdownGrace: '100ms',
        },
      });
      const server = await startServer(config, captureLogger('warn').logger);
      cleanups.push(() => server.close());
      return server;
    };
    const a = await start();
    const b = await start();
    const port = (s: RunningServer, name: string): number => s.listeners.get(name).address().port;

    for (const maxVersion of ['TLSv1.3', 'TLSv1.2'] as const) {
      const first = await handshake(implicit(port(a, 'imaps'), { maxVersion }));
      expect(first).toMatchObject({ resumed: false, protocol: maxVersion });
      for (const [server, name] of [[a, 'imaps'], [b, 'imaps'], [b, 'pop3s'], [a, 'smtps']] as const) {
        const again = await handshake(implicit(port(server, name), { maxVersion }), first.session);
        expect({ name, resumed: again.resumed }).toEqual({ name, resumed: true });
      }
    }
  }, 30_000);
});

describe('ticket key rotation', () => {
  /** A plain TCP server that wraps every socket with upgradeToTls, as the implicit-TLS listeners do. */
  async function wrappingServer(provider: TlsProvider): Promise<number> {
    const server = net.createServer((raw) => {
      raw.on('error', () => {});
      upgradeToTls(raw, provider).then(
        (s) => s.write('* OK hello\r\n'),
        () => {},
      );
    });
    cleanups.push(() => closeServer(server));
    return listenOn(server);
  }

  it('all instances switch keys at the same moment: old tickets stop resuming, new ones resume everywhere', async () => {
    const rotationMs = 2000;
    const store = await openStore(loadConfig({ env: {}, flags: { 'db.path': join(root, 'rotate.db') } }));
    cleanups.push(() => store.close());
    const provider = async (): Promise<TlsProvider> => {
      const p = await createTlsProvider({ hostname: 'localhost', tls: { cert: '', key: '', dir: mkdtempSync(join(root, 'c-')), ticketKeyRotation: rotationMs } }, silentLogger(), { store });
      cleanups.push(() => p.close());
      return p;
    };
    // Start just after a boundary, so the next one is ~2 s away.
    while (Date.now() % rotationMs > 200) await sleep(20);
    const [one, two] = [await wrappingServer(await provider()), await wrappingServer(await provider())];

    const before = await handshake(implicit(one));
    expect((await handshake(implicit(two), before.session)).resumed).toBe(true);

    await sleep(rotationMs - (Date.now() % rotationMs) + 300);
    const after = await handshake(implicit(two), before.session);
    expect(after.resumed).toBe(false);
    expect((await handshake(implicit(one), after.session)).resumed).toBe(true);

    // A server with a key of its own (no shared store) resumes neither's tickets, nor they its.
    const loner = await createTlsProvider({ hostname: 'localhost', tls: { cert: '', key: '', dir: mkdtempSync(join(root, 'c-')) } }, silentLogger());
    cleanups.push(() => loner.close());
    const lonerPort = await wrappingServer(loner);
    expect((await handshake(implicit(lonerPort), after.session)).resumed).toBe(false);
    const own = await handshake(implicit(lonerPort));
    expect((await handshake(implicit(one), own.session)).resumed).toBe(false);
  }, 15_000);
});
