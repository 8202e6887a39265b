import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBackends } from '../../src/backends/index.js';
import { BackendUnavailableError } from '../../src/backends/types.js';
import { dovecotAvailable, dovecotConfig, type RunningDovecot, startDovecot } from '../helpers/dovecot.js';
import { account, memoryLogger, readUntil, session, upstreamBytes } from './helpers.js';

/** TLS to the upstream: STARTTLS/STLS and implicit TLS against Dovecot with a self-signed certificate. */
describe.skipIf(!dovecotAvailable())('proxy backends over TLS to Dovecot', () => {
  let dc: RunningDovecot;
  const log = memoryLogger();
  const alice = account('alice@example.com');

  beforeAll(async () => {
    dc = await startDovecot({ ssl: true });
  });
  afterAll(async () => {
    await dc?.stop();
  });

  const tlsFlags = (mode: 'starttls' | 'implicit', verify: boolean): Record<string, unknown> => ({
    'upstream.imap.host': 'localhost',
    'upstream.imap.port': mode === 'implicit' ? dc.imapsPort : dc.imapPort,
    'upstream.imap.tls': mode,
    'upstream.imap.verifyCert': verify,
    'upstream.pop3.host': 'localhost',
    'upstream.pop3.port': mode === 'implicit' ? dc.pop3sPort : dc.pop3Port,
    'upstream.pop3.tls': mode,
    'upstream.pop3.verifyCert': verify,
  });

  for (const mode of ['starttls', 'implicit'] as const) {
    it(`IMAP and POP3 with ${mode}: log in over TLS and pipe a command`, async () => {
      const b = createBackends(dovecotConfig(dc, tlsFlags(mode, false)), null, log.logger);
      const imap = await b.imap!.open(session(alice, 'imap'));
      expect(imap.socket.constructor.name).toBe('TLSSocket');
      expect(imap.capabilities).toContain('IMAP4rev1');
      imap.socket.write('a NOOP\r\n');
      expect(await readUntil(upstreamBytes(imap), (t) => t.includes('a OK'))).toContain('a OK');
      imap.close();
      const pop = await b.pop3!.open(session(alice, 'pop3'));
      pop.socket.write('STAT\r\n');
      expect(await readUntil(upstreamBytes(pop), (t) => t.endsWith('\r\n'))).toMatch(/^\+OK/);
      pop.close();
      await new Promise((r) => setTimeout(r, 100));
      expect(dc.logTail(40)).toMatch(/imap-login: Info: Login: user=<alice@example\.com>.*TLS/);
    });
  }

  it('refuses an upstream certificate it cannot verify when verifyCert is on', async () => {
    const b = createBackends(dovecotConfig(dc, tlsFlags('implicit', true)), null, log.logger);
    await expect(b.imap!.open(session(alice, 'imap'))).rejects.toBeInstanceOf(BackendUnavailableError);
    await expect(createBackends(dovecotConfig(dc, tlsFlags('starttls', true)), null, log.logger).pop3!.open(session(alice, 'pop3'))).rejects.toBeInstanceOf(BackendUnavailableError);
    expect(log.text()).toMatch(/self[- ]signed certificate/);
  });
});
