import { mkdtempSync, rmSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { captureLogger } from './helpers.js';

const root = mkdtempSync(join(tmpdir(), 'keygate-https-'));

interface Got {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  fingerprint: string;
}

function get(port: number, path: string, ca: string, servername?: string): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port, path, ca, ...(servername ? { servername } : { checkServerIdentity: () => undefined }), agent: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, fingerprint: (res.socket as import('node:tls').TLSSocket).getPeerCertificate().fingerprint256 }));
    });
    req.on('error', reject);
  });
}

describe('control plane over HTTPS (http.tls)', () => {
  let server: RunningServer;
  afterAll(async () => {
    await server?.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('serves the mail certificate with HSTS, to clients with and without SNI; plain HTTP gets nothing', async () => {
    const config = loadConfig({
      env: {},
      flags: {
        'db.path': join(root, 'keys.db'),
        'tls.dir': join(root, 'certs'),
        'http.tls': true,
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
    server = await startServer(config, captureLogger('warn').logger);
    const { port } = server.app!.server.address() as net.AddressInfo;
    const ca = server.tls.certPem();

    for (const servername of ['localhost', undefined]) {
      const health = await get(port, '/health', ca, servername);
      expect(health.status).toBe(200);
      expect(JSON.parse(health.body)).toMatchObject({ status: 'ok' });
      expect(health.headers['strict-transport-security']).toBe('max-age=31536000');
      expect(health.fingerprint).toBe(server.tls.fingerprint256());
    }
    // Errors and the web console's pages carry it too, once and the same.
    const missing = await get(port, '/no/such/route', ca, 'localhost');
    expect(missing.status).toBe(404);
    expect(missing.headers['strict-transport-security']).toBe('max-age=31536000');
    const ui = await get(port, '/ui', ca, 'localhost');
    expect(ui.status).toBe(302);
    expect(ui.headers['strict-transport-security']).toBe('max-age=31536000');
    expect(ui.headers['content-security-policy']).toContain("default-src 'self'");

    // A plaintext request on the HTTPS port gets no HTTP answer.
    const plain = await fetch(`http://127.0.0.1:${port}/health`).then(
      (r) => r.status,
      (err: Error) => err.name,
    );
    expect(plain).not.toBe(200);
  });
});
