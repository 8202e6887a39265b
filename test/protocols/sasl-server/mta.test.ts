import { execFile } from 'node:child_process';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SELF_SIGNED_CERT, SELF_SIGNED_KEY } from '../../../src/tls/selfsigned.js';
import { EXIM, startExim, type RunningExim } from '../../helpers/exim.js';
import { freePort } from '../../helpers/free-port.js';
import { createHarness, TEST_CERT_DIR, type Harness } from '../../helpers/keygate.js';
import { POSTFIX, startPostfix, type RunningPostfix } from '../../helpers/postfix.js';
import { SWAKS } from '../../helpers/tools.js';
import { waitFor } from '../../helpers/wait.js';

/**
 * Keygate as the authentication service of existing mail servers: a real,
 * private Postfix (`smtpd_sasl_type = dovecot`, `smtpd_sasl_path =
 * inet:127.0.0.1:PORT`) and a real, private Exim (`driver = dovecot` on the
 * unix socket) ask Keygate's SASL server about the keys swaks and nodemailer
 * present on their submission ports.
 */
const ALICE = 'alice@example.com';

let h: Harness;
let saslPort: number;
let saslSocket: string;
let aliceKey: string;
let revokedKey: string;

beforeAll(async () => {
  h = await createHarness();
  saslPort = await freePort();
  saslSocket = join(h.dir, 'auth-client');
  await h.start({ protocols: [], flags: { 'saslServer.port': saslPort, 'saslServer.socket': saslSocket } });
  aliceKey = (await h.issue(ALICE, ['smtp'])).key;
  const revoked = await h.issue(ALICE, ['smtp']);
  await h.store.revokeKey(revoked.id, new Date().toISOString());
  revokedKey = revoked.key;
});
afterAll(async () => {
  await h?.close();
});

function swaks(args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile('swaks', ['--from', ALICE, '--to', 'bob@example.org', '--h-Subject', 'via keygate', ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr });
    });
  });
}

describe.skipIf(!POSTFIX.found)('Postfix with smtpd_sasl_type = dovecot', () => {
  let postfix: RunningPostfix;
  beforeAll(async () => {
    postfix = await startPostfix({
      saslPath: `inet:127.0.0.1:${saslPort}`,
      tls: { cert: join(TEST_CERT_DIR, SELF_SIGNED_CERT), key: join(TEST_CERT_DIR, SELF_SIGNED_KEY) },
    });
  });
  afterAll(async () => {
    await postfix?.stop();
  });

  it.skipIf(!SWAKS.found)('swaks: a Keygate key authenticates over STARTTLS (PLAIN and LOGIN) and the message is accepted', async () => {
    SWAKS.assertCapable();
    for (const mech of ['PLAIN', 'LOGIN']) {
      const r = await swaks(['--server', `127.0.0.1:${postfix.port}`, '-tls', '--auth', mech, '--auth-user', ALICE, '--auth-password', aliceKey]);
      expect(r.out).toContain('235 2.7.0 Authentication successful');
      expect(r.out).toMatch(/250 2\.0\.0 Ok: queued as [0-9A-F]+/);
      expect(r.code).toBe(0);
    }
    // Postfix logs who authenticated, and discard: accepted the message.
    await waitFor(() => /sasl_method=LOGIN, sasl_username=alice@example\.com/.test(postfix.maillog()) && /status=sent/.test(postfix.maillog()));
    expect(h.audits().filter((a) => a.protocol === 'smtp' && a.result === 'success' && a.ip === '127.0.0.1').length).toBeGreaterThanOrEqual(2);
  });

  it('nodemailer: a Keygate key authenticates and the message is accepted', async () => {
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: postfix.port, secure: false, requireTLS: true, tls: { rejectUnauthorized: false }, auth: { user: ALICE, pass: aliceKey } });
    const info = await transport.sendMail({ from: ALICE, to: 'bob@example.org', subject: 'nodemailer via keygate', text: 'hello' });
    expect(info.accepted).toEqual(['bob@example.org']);
    expect(info.response).toMatch(/^250 2\.0\.0 Ok: queued as/);
    transport.close();
  });

  it.skipIf(!SWAKS.found)('swaks: a wrong key and a revoked key are refused by Postfix, and no mail is relayed', async () => {
    for (const key of [aliceKey.slice(0, -1) + (aliceKey.endsWith('A') ? 'B' : 'A'), revokedKey]) {
      const r = await swaks(['--server', `127.0.0.1:${postfix.port}`, '-tls', '--auth', 'PLAIN', '--auth-user', ALICE, '--auth-password', key]);
      expect(r.out).toContain('535 5.7.8 Error: authentication failed: Authentication failed');
      expect(r.code).not.toBe(0);
    }
    expect(h.audits().some((a) => a.reason === 'revoked')).toBe(true);
  });

  it('nodemailer: a revoked key is refused by Postfix with 535', async () => {
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: postfix.port, secure: false, requireTLS: true, tls: { rejectUnauthorized: false }, auth: { user: ALICE, pass: revokedKey } });
    await expect(transport.sendMail({ from: ALICE, to: 'bob@example.org', text: 'x' })).rejects.toMatchObject({ code: 'EAUTH', responseCode: 535 });
    transport.close();
  });
});

describe.skipIf(!EXIM.found)('Exim with driver = dovecot on the unix socket', () => {
  let exim: RunningExim;
  beforeAll(async () => {
    exim = await startExim({ saslSocket });
  });
  afterAll(async () => {
    await exim?.stop();
  });

  it.skipIf(!SWAKS.found)('swaks: a Keygate key authenticates (PLAIN and LOGIN) and the message is accepted', async () => {
    for (const mech of ['PLAIN', 'LOGIN']) {
      const r = await swaks(['--server', `127.0.0.1:${exim.port}`, '--auth', mech, '--auth-user', ALICE, '--auth-password', aliceKey]);
      expect(r.out).toContain('235 Authentication succeeded');
      expect(r.out).toMatch(/250 OK id=/);
    }
    expect(exim.mainlog()).toMatch(/A=dovecot_login:alice@example\.com/);
  });

  it('nodemailer: a Keygate key authenticates and the message is accepted', async () => {
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: exim.port, secure: false, ignoreTLS: true, auth: { user: ALICE, pass: aliceKey } });
    const info = await transport.sendMail({ from: ALICE, to: 'bob@example.org', subject: 'nodemailer via keygate', text: 'hello' });
    expect(info.accepted).toEqual(['bob@example.org']);
    transport.close();
  });

  it.skipIf(!SWAKS.found)('swaks: a wrong key and a revoked key are refused by Exim', async () => {
    for (const key of ['kg_wrong', revokedKey]) {
      const r = await swaks(['--server', `127.0.0.1:${exim.port}`, '--auth', 'PLAIN', '--auth-user', ALICE, '--auth-password', key]);
      expect(r.out).toContain('535 Incorrect authentication data');
      expect(r.code).not.toBe(0);
    }
  });
});
