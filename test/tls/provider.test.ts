import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/config.js';
import {
  createSelfSignedCertificate,
  createTlsProvider,
  SELF_SIGNED_CERT,
  SELF_SIGNED_KEY,
  upgradeToTls,
  type TlsProvider,
} from '../../src/tls/index.js';
import { captureLogger, closeServer, listenOn, opensslPair, peerFingerprint, silentLogger, sleep, tlsConnect } from './helpers.js';
import { waitFor } from '../helpers/wait.js';

const root = mkdtempSync(join(tmpdir(), 'keygate-tls-'));
let n = 0;
const freshDir = (): string => join(root, `d${n++}`);
afterAll(() => rmSync(root, { recursive: true, force: true }));

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

function track<T extends TlsProvider>(p: T): T {
  cleanups.push(() => p.close());
  return p;
}

/** A tls.Server built from the provider's serverOptions(). */
async function tlsServer(provider: TlsProvider): Promise<number> {
  const server = tls.createServer(provider.serverOptions(), (s) => {
    s.on('error', () => {});
    s.end('hello\r\n');
  });
  server.on('tlsClientError', () => {});
  // A tls.Server's own context serves every name its default certificate covers: attach() keeps it current.
  const detach = provider.attach(server);
  cleanups.push(() => closeServer(server), detach);
  return listenOn(server);
}

/** A plain server that wraps every socket with upgradeToTls (as the listeners do). */
async function wrappingServer(provider: TlsProvider): Promise<number> {
  const server = net.createServer((raw) => {
    raw.on('error', () => {});
    upgradeToTls(raw, provider).then(
      (s) => s.end('hello\r\n'),
      () => {},
    );
  });
  cleanups.push(() => closeServer(server));
  return listenOn(server);
}

const fingerprint = (pem: string): string => new X509Certificate(pem).fingerprint256;

describe('self-signed certificate', () => {
  it('is made on first start with the host name, localhost and loopback IPs in its SAN, key mode 0600', async () => {
    const dir = freshDir();
    const { logger, lines } = captureLogger();
    const started = Date.now();
    const provider = track(await createTlsProvider({ tls: { cert: '', key: '', dir }, hostname: 'mail.example.test' }, logger));
    expect(Date.now() - started).toBeLessThan(5000);

    const certPath = join(dir, SELF_SIGNED_CERT);
    const keyPath = join(dir, SELF_SIGNED_KEY);
    expect(statSync(keyPath).mode & 0o777).toBe(0o600);
    expect(readFileSync(certPath, 'utf8')).toBe(provider.certPem());
    expect(readFileSync(keyPath, 'utf8')).toBe(provider.keyPem());
    expect(lines.some((l) => String(l.msg).startsWith('made a self-signed TLS certificate'))).toBe(true);

    const text = execFileSync('openssl', ['x509', '-noout', '-text', '-in', certPath], { encoding: 'utf8' });
    expect(text).toMatch(/DNS:mail\.example\.test/);
    expect(text).toMatch(/DNS:localhost/);
    expect(text).toMatch(/IP Address:127\.0\.0\.1/);
    expect(text).toMatch(/IP Address:0:0:0:0:0:0:0:1/);
    expect(text).toMatch(/Public-Key: \(256 bit\)/);
    expect(text).toMatch(/NIST CURVE: P-256/);
    expect(text).toMatch(/Signature Algorithm: ecdsa-with-SHA256/);
    expect(text).toMatch(/TLS Web Server Authentication/);

    const x = new X509Certificate(provider.certPem());
    const days = (Date.parse(x.validTo) - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(700);
    expect(days).toBeLessThan(800);
  });

  it('is trusted by a real TLS client that pins it, for localhost, the host name and 127.0.0.1', async () => {
    const provider = track(await createTlsProvider({ tls: { cert: '', key: '', dir: freshDir() }, hostname: 'mail.example.test' }, silentLogger()));
    const port = await tlsServer(provider);
    for (const servername of ['localhost', 'mail.example.test']) {
      const s = await tlsConnect({ port, ca: provider.certPem(), servername });
      expect(s.authorized).toBe(true);
      expect(s.getPeerCertificate().fingerprint256).toBe(provider.fingerprint256());
      const [data] = (await once(s, 'data')) as [Buffer];
      expect(data.toString()).toBe('hello\r\n');
      s.destroy();
    }
    // By IP: no SNI is sent, the default identity check uses the IP SAN.
    const byIp = await tlsConnect({ port, ca: provider.certPem() });
    expect(byIp.authorized).toBe(true);
    byIp.destroy();
    // A name that is not in the SAN is refused by the client.
    await expect(tlsConnect({ port, ca: provider.certPem(), servername: 'other.example.test' })).rejects.toMatchObject({
      code: 'ERR_TLS_CERT_ALTNAME_INVALID',
    });
  });

  it('is reused on the next start (same fingerprint, nothing made)', async () => {
    const dir = freshDir();
    const first = track(await createTlsProvider({ tls: { cert: '', key: '', dir }, hostname: 'mail.example.test' }, silentLogger()));
    const { logger, lines } = captureLogger();
    const second = track(await createTlsProvider({ tls: { cert: '', key: '', dir }, hostname: 'mail.example.test' }, logger));
    expect(second.fingerprint256()).toBe(first.fingerprint256());
    expect(second.certPem()).toBe(first.certPem());
    expect(lines.some((l) => String(l.msg).includes('self-signed'))).toBe(false);
  });

  it('is made again (and says why) when the host name is not in its SAN', async () => {
    const dir = freshDir();
    const first = track(await createTlsProvider({ tls: { cert: '', key: '', dir }, hostname: 'a.example.test' }, silentLogger()));
    const { logger, lines } = captureLogger();
    const second = track(await createTlsProvider({ tls: { cert: '', key: '', dir }, hostname: 'b.example.test' }, logger));
    expect(second.fingerprint256()).not.toBe(first.fingerprint256());
    expect(new X509Certificate(second.certPem()).checkHost('b.example.test')).toBe('b.example.test');
    expect(lines.some((l) => l.level === 40 && String(l.msg).includes('b.example.test is not in its subjectAltName'))).toBe(true);
  });

  it('is made again (and says why) when it has expired', async () => {
    const dir = freshDir();
    await createTlsProvider({ tls: { cert: '', key: '', dir }, hostname: 'mail.example.test' }, silentLogger()).then((p) => p.close());
    const old = await createSelfSignedCertificate('mail.example.test', new Date(Date.now() - 3 * 365 * 86_400_000));
    writeFileSync(join(dir, SELF_SIGNED_CERT), old.certPem);
    writeFileSync(join(dir, SELF_SIGNED_KEY), old.keyPem);
    const { logger, lines } = captureLogger();
    const provider = track(await createTlsProvider({ tls: { cert: '', key: '', dir }, hostname: 'mail.example.test' }, logger));
    expect(provider.fingerprint256()).not.toBe(fingerprint(old.certPem));
    expect(Date.parse(new X509Certificate(provider.certPem()).validTo)).toBeGreaterThan(Date.now());
    expect(lines.some((l) => String(l.msg).includes('expired on'))).toBe(true);
    expect(statSync(join(dir, SELF_SIGNED_KEY)).mode & 0o777).toBe(0o600);
  });

  it('takes an IP address as host name into the SAN as an IP', async () => {
    const provider = track(await createTlsProvider({ tls: { cert: '', key: '', dir: freshDir() }, hostname: '192.0.2.10' }, silentLogger()));
    expect(new X509Certificate(provider.certPem()).subjectAltName).toContain('IP Address:192.0.2.10');
  });
});

describe('configured certificate files', () => {
  async function writePair(dir: string, name: string): Promise<{ certPath: string; keyPath: string; pem: string }> {
    const pair = await createSelfSignedCertificate(name);
    const certPath = join(dir, 'server.crt');
    const keyPath = join(dir, 'server.key');
    writeFileSync(certPath, pair.certPem);
    writeFileSync(keyPath, pair.keyPem);
    return { certPath, keyPath, pem: pair.certPem };
  }

  it('are loaded, and re-read without a restart when overwritten in place', async () => {
    const dir = mkdtempSync(join(root, 'conf-'));
    const a = await writePair(dir, 'a.example.test');
    const { logger, lines } = captureLogger();
    const provider = track(await createTlsProvider({ tls: { cert: a.certPath, key: a.keyPath, dir: freshDir() }, hostname: 'x' }, logger));
    const port = await tlsServer(provider);
    const wrapPort = await wrappingServer(provider);
    expect(await peerFingerprint(port, 'localhost')).toBe(fingerprint(a.pem));
    expect(await peerFingerprint(wrapPort)).toBe(fingerprint(a.pem));

    const changes: string[] = [];
    provider.onChange(() => changes.push(provider.fingerprint256()));
    const b = await writePair(dir, 'b.example.test');
    const fpB = fingerprint(b.pem);
    await waitFor(async () => (await peerFingerprint(port, 'localhost')) === fpB, 5000);
    // A wrapped socket without SNI gets the new context too.
    expect(await peerFingerprint(wrapPort)).toBe(fpB);
    expect(provider.certPem()).toBe(b.pem);
    expect(changes).toEqual([fpB]);
    expect(lines.some((l) => l.msg === 'TLS certificate reloaded')).toBe(true);
  });

  it('are re-read when an editor replaces them by rename', async () => {
    const dir = mkdtempSync(join(root, 'conf-'));
    const a = await writePair(dir, 'a.example.test');
    const provider = track(await createTlsProvider({ tls: { cert: a.certPath, key: a.keyPath, dir: freshDir() }, hostname: 'x' }, silentLogger()));
    const port = await tlsServer(provider);
    const b = await createSelfSignedCertificate('b.example.test');
    writeFileSync(join(dir, '.server.crt.swp'), b.certPem);
    writeFileSync(join(dir, '.server.key.swp'), b.keyPem);
    renameSync(join(dir, '.server.key.swp'), a.keyPath);
    renameSync(join(dir, '.server.crt.swp'), a.certPath);
    const fpB = fingerprint(b.certPem);
    await waitFor(async () => (await peerFingerprint(port, 'localhost')) === fpB, 5000);
  });

  it('keep the old context and log an error when the new pair is invalid', async () => {
    const dir = mkdtempSync(join(root, 'conf-'));
    const a = await writePair(dir, 'a.example.test');
    const { logger, lines } = captureLogger();
    const provider = track(await createTlsProvider({ tls: { cert: a.certPath, key: a.keyPath, dir: freshDir() }, hostname: 'x' }, logger));
    const port = await tlsServer(provider);
    const fpA = fingerprint(a.pem);

    writeFileSync(a.certPath, 'not a certificate\n');
    await waitFor(() => lines.some((l) => l.level === 50 && String(l.msg).includes('invalid')), 5000);
    expect(await peerFingerprint(port, 'localhost')).toBe(fpA);

    // A valid certificate with a key that does not belong to it.
    const other = await createSelfSignedCertificate('b.example.test');
    const before = lines.length;
    writeFileSync(a.certPath, other.certPem);
    await waitFor(() => lines.slice(before).some((l) => l.level === 50), 5000);
    expect(await peerFingerprint(port, 'localhost')).toBe(fpA);
    expect(provider.fingerprint256()).toBe(fpA);

    // Completing the pair is picked up.
    writeFileSync(a.keyPath, other.keyPem);
    await waitFor(async () => (await peerFingerprint(port, 'localhost')) === fingerprint(other.certPem), 5000);
  });

  it('stop start-up with an error naming the setting when missing or mismatched', async () => {
    const dir = mkdtempSync(join(root, 'conf-'));
    const a = await writePair(dir, 'a.example.test');
    await expect(createTlsProvider({ tls: { cert: join(dir, 'nope.crt'), key: a.keyPath, dir: freshDir() }, hostname: 'x' }, silentLogger())).rejects.toMatchObject({
      name: 'ConfigError',
      setting: 'tls.cert',
    });
    await expect(createTlsProvider({ tls: { cert: a.certPath, key: join(dir, 'nope.key'), dir: freshDir() }, hostname: 'x' }, silentLogger())).rejects.toBeInstanceOf(
      ConfigError,
    );
    const other = await createSelfSignedCertificate('b.example.test');
    writeFileSync(join(dir, 'other.key'), other.keyPem);
    await expect(createTlsProvider({ tls: { cert: a.certPath, key: join(dir, 'other.key'), dir: freshDir() }, hostname: 'x' }, silentLogger())).rejects.toThrow(
      /tls\.cert.*not a usable certificate and key/,
    );
  });
});

describe('several certificates', () => {
  it('RSA and ECDSA side by side: each client gets the best it supports, on both TLS paths', async () => {
    const dir = mkdtempSync(join(root, 'pairs-'));
    const rsa = opensslPair(dir, 'rsa', 'rsa', ['mail.example.test']);
    const ec = opensslPair(dir, 'ec', 'ec', ['mail.example.test']);
    // RSA listed first: the order of the files does not decide, the client does.
    const provider = track(await createTlsProvider({ tls: { cert: `${rsa.certPath},${ec.certPath}`, key: `${rsa.keyPath}, ${ec.keyPath}`, dir: freshDir() }, hostname: 'mail.example.test' }, silentLogger()));
    expect(provider.fingerprint256()).toBe(fingerprint(ec.certPem));
    for (const port of [await tlsServer(provider), await wrappingServer(provider)]) {
      const served = async (options: tls.ConnectionOptions): Promise<string> => {
        const s = await tlsConnect({ port, servername: 'mail.example.test', rejectUnauthorized: false, ...options });
        const fp = s.getPeerCertificate().fingerprint256;
        s.destroy();
        return fp;
      };
      expect(await served({})).toBe(fingerprint(ec.certPem));
      expect(await served({ maxVersion: 'TLSv1.2' })).toBe(fingerprint(ec.certPem));
      // A client that can only verify RSA signatures (TLS 1.3) or only use RSA suites (TLS 1.2).
      expect(await served({ sigalgs: 'rsa_pss_rsae_sha256:rsa_pkcs1_sha256' })).toBe(fingerprint(rsa.certPem));
      expect(await served({ maxVersion: 'TLSv1.2', ciphers: 'ECDHE-RSA-AES128-GCM-SHA256' })).toBe(fingerprint(rsa.certPem));
      // And one that only takes ECDSA.
      expect(await served({ sigalgs: 'ecdsa_secp256r1_sha256' })).toBe(fingerprint(ec.certPem));
    }
  });

  it('SNI: each host name gets its own certificate; no SNI or an unknown name gets the one for hostname', async () => {
    const dir = mkdtempSync(join(root, 'sni-'));
    const other = opensslPair(dir, 'other', 'ec', ['mail.other.test', '*.other.test']);
    const main = opensslPair(dir, 'main', 'ec', ['mail.example.test']);
    const provider = track(await createTlsProvider({ tls: { cert: `${other.certPath},${main.certPath}`, key: `${other.keyPath},${main.keyPath}`, dir: freshDir() }, hostname: 'mail.example.test' }, silentLogger()));
    expect(provider.fingerprint256()).toBe(fingerprint(main.certPem));
    for (const port of [await tlsServer(provider), await wrappingServer(provider)]) {
      expect(await peerFingerprint(port, 'mail.example.test')).toBe(fingerprint(main.certPem));
      expect(await peerFingerprint(port, 'MAIL.OTHER.TEST')).toBe(fingerprint(other.certPem));
      expect(await peerFingerprint(port, 'imap.other.test')).toBe(fingerprint(other.certPem));
      expect(await peerFingerprint(port, 'a.b.other.test')).toBe(fingerprint(main.certPem));
      expect(await peerFingerprint(port, 'unknown.test')).toBe(fingerprint(main.certPem));
      expect(await peerFingerprint(port)).toBe(fingerprint(main.certPem));
      // The name the client asked for verifies against the certificate it got.
      const s = await tlsConnect({ port, servername: 'imap.other.test', ca: other.certPem });
      expect(s.authorized).toBe(true);
      s.destroy();
    }
  });

  it('stops start-up naming the setting when tls.cert and tls.key list different numbers of files', async () => {
    const dir = mkdtempSync(join(root, 'count-'));
    const a = opensslPair(dir, 'a', 'ec', ['a.example.test']);
    await expect(createTlsProvider({ tls: { cert: `${a.certPath},${a.certPath}`, key: a.keyPath, dir: freshDir() }, hostname: 'x' }, silentLogger())).rejects.toMatchObject({
      name: 'ConfigError',
      setting: 'tls.key',
    });
  });
});

describe('TLS versions', () => {
  it('refuses a TLS 1.1 client and accepts TLS 1.2 and 1.3', async () => {
    const provider = track(await createTlsProvider({ tls: { cert: '', key: '', dir: freshDir() }, hostname: 'localhost' }, silentLogger()));
    for (const port of [await tlsServer(provider), await wrappingServer(provider)]) {
      // The client is allowed TLS 1.0/1.1 (security level 0), so the refusal is the server's: a protocol_version alert.
      await expect(
        tlsConnect({ port, ca: provider.certPem(), servername: 'localhost', minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' }),
      ).rejects.toMatchObject({ code: 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION' });
      for (const v of ['TLSv1.2', 'TLSv1.3'] as const) {
        const s = await tlsConnect({ port, ca: provider.certPem(), servername: 'localhost', minVersion: v, maxVersion: v });
        expect(s.getProtocol()).toBe(v);
        s.destroy();
      }
    }
  });
});

describe('upgradeToTls (server-side STARTTLS)', () => {
  /** A tiny line server: "STARTTLS" gets "OK" and the upgrade; after it, the first line is echoed back. */
  async function starttlsServer(provider: TlsProvider, timeoutMs?: number) {
    const results: Array<{ ok: boolean; code?: string }> = [];
    const server = net.createServer((raw) => {
      raw.setNoDelay(true);
      raw.on('error', () => {});
      raw.write('* OK ready\r\n');
      const onData = (buf: Buffer): void => {
        if (buf.toString() !== 'STARTTLS\r\n') return void raw.end('BAD\r\n');
        raw.off('data', onData);
        raw.write('OK begin TLS\r\n');
        upgradeToTls(raw, provider, timeoutMs).then(
          (secure) => {
            results.push({ ok: true });
            secure.once('data', (line: Buffer) => secure.end(`secure echo: ${line.toString()}`));
          },
          (err: Error & { code?: string }) => results.push({ ok: false, code: err.code }),
        );
      };
      raw.on('data', onData);
    });
    cleanups.push(() => closeServer(server));
    return { port: await listenOn(server), results };
  }

  async function plainUntilStarttls(port: number): Promise<net.Socket> {
    const sock = net.connect(port, '127.0.0.1');
    await once(sock, 'connect');
    const [greeting] = (await once(sock, 'data')) as [Buffer];
    expect(greeting.toString()).toBe('* OK ready\r\n');
    sock.write('STARTTLS\r\n');
    const [ok] = (await once(sock, 'data')) as [Buffer];
    expect(ok.toString()).toBe('OK begin TLS\r\n');
    return sock;
  }

  it('completes a handshake with tls.connect({socket}) on the client side', async () => {
    const provider = track(await createTlsProvider({ tls: { cert: '', key: '', dir: freshDir() }, hostname: 'localhost' }, silentLogger()));
    const { port, results } = await starttlsServer(provider);
    const sock = await plainUntilStarttls(port);
    const secure = await tlsConnect({ socket: sock, ca: provider.certPem(), servername: 'localhost' });
    expect(secure.authorized).toBe(true);
    secure.write('a001 NOOP\r\n');
    const [echo] = (await once(secure, 'data')) as [Buffer];
    expect(echo.toString()).toBe('secure echo: a001 NOOP\r\n');
    expect(results).toEqual([{ ok: true }]);
    secure.destroy();
  });

  it('rejects when the client sends garbage instead of a ClientHello', async () => {
    const provider = track(await createTlsProvider({ tls: { cert: '', key: '', dir: freshDir() }, hostname: 'localhost' }, silentLogger()));
    const { port, results } = await starttlsServer(provider);
    const sock = await plainUntilStarttls(port);
    sock.on('error', () => {});
    sock.write('a002 LOGIN user pass\r\n'.repeat(4));
    await waitFor(() => results.length === 1);
    expect(results[0]!.ok).toBe(false);
    await waitFor(() => sock.destroyed || sock.readableEnded);
    sock.destroy();
  });

  it('rejects on timeout and when the client vanishes mid-handshake', async () => {
    const provider = track(await createTlsProvider({ tls: { cert: '', key: '', dir: freshDir() }, hostname: 'localhost' }, silentLogger()));
    const { port, results } = await starttlsServer(provider, 300);
    const silent = await plainUntilStarttls(port);
    silent.on('error', () => {});
    const silentClosed = once(silent, 'close');
    await waitFor(() => results.length === 1, 3000);
    expect(results[0]).toEqual({ ok: false, code: 'ETIMEDOUT' });
    await silentClosed; // the server closed it

    const vanishing = await plainUntilStarttls(port);
    vanishing.destroy();
    await waitFor(() => results.length === 2, 3000);
    expect(results[1]!.ok).toBe(false);
    await sleep(10);
  });
});
