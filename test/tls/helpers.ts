import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import net from 'node:net';
import tls from 'node:tls';
import { createLogger, type Logger } from '../../src/log.js';

export interface CapturedLogger {
  logger: Logger;
  lines: Array<Record<string, unknown> & { msg?: string; level?: number }>;
}

/** A real pino logger whose JSON lines are kept for assertions. */
export function captureLogger(level = 'debug'): CapturedLogger {
  const lines: CapturedLogger['lines'] = [];
  const logger = createLogger(level, {
    write(chunk: string) {
      for (const l of chunk.split('\n')) if (l.trim() !== '') lines.push(JSON.parse(l) as CapturedLogger['lines'][number]);
    },
  });
  return { logger, lines };
}

export const silentLogger = (): Logger => createLogger('silent');

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function listenOn(server: net.Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as net.AddressInfo).port;
}

export function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Connects over TLS and resolves with the connected socket, or rejects with the client-side error. */
export function tlsConnect(options: tls.ConnectionOptions): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', ...options }, () => resolve(s));
    s.once('error', reject);
  });
}

/** The SHA-256 fingerprint of the certificate a server presents (verification off). */
export async function peerFingerprint(port: number, servername?: string): Promise<string> {
  const s = await tlsConnect({ port, rejectUnauthorized: false, ...(servername ? { servername } : {}) });
  const fp = s.getPeerCertificate().fingerprint256;
  s.destroy();
  return fp;
}

/** A self-signed pair made by openssl: RSA-2048 or ECDSA P-256, for the given DNS names (the first is the CN). */
export function opensslPair(dir: string, file: string, type: 'rsa' | 'ec', names: string[]): { certPath: string; keyPath: string; certPem: string } {
  const certPath = join(dir, `${file}.crt`);
  const keyPath = join(dir, `${file}.key`);
  const keyArgs = type === 'rsa' ? ['-newkey', 'rsa:2048'] : ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'];
  execFileSync('openssl', ['req', '-x509', ...keyArgs, '-nodes', '-days', '2', '-subj', `/CN=${names[0]}`, '-addext', `subjectAltName=${names.map((n) => `DNS:${n}`).join(',')}`, '-keyout', keyPath, '-out', certPath], { stdio: 'ignore' });
  return { certPath, keyPath, certPem: readFileSync(certPath, 'utf8') };
}
