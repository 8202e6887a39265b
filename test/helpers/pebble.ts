import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { canConnect } from './free-port.js';

/** Why ACME tests are skipped, printed once. */
export const PEBBLE_SKIP_REASON = 'pebble / pebble-challtestsrv (apt pebble) or openssl not found: skipping the ACME tests';

let available: boolean | undefined;
let warned = false;

/** True when Pebble, its challenge test server (our DNS) and openssl can be run; warns once otherwise. */
export function pebbleAvailable(): boolean {
  if (available === undefined) {
    const runs = (bin: string, args: string[]): boolean => {
      const r = spawnSync(bin, args, { stdio: 'ignore' });
      return r.error === undefined;
    };
    available = runs('pebble', ['-h']) && runs('pebble-challtestsrv', ['-h']) && runs('openssl', ['version']);
  }
  if (!available && !warned) {
    warned = true;
    console.warn(PEBBLE_SKIP_REASON);
  }
  return available;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen({ port: 0, host: '127.0.0.1', exclusive: true }, () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// Every process we start, so a crashed test run never leaves one behind.
const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(killer);
  children.delete(child);
}

export interface PebbleOptions {
  /** Where Pebble's VA connects for HTTP-01 (the control plane's port). */
  httpPort: number;
  /** Where Pebble's VA connects for TLS-ALPN-01 (an implicit-TLS listener's port). */
  tlsPort: number;
  /** Lifetime of issued certificates, seconds (Pebble's default is years). */
  validitySeconds?: number;
}

export interface RunningPebble {
  /** The ACME directory URL. */
  directory: string;
  /** PEM file of the certificate Pebble's own HTTPS uses (tls.acme.directoryCa). */
  httpsCaPath: string;
  /** Pebble's root CA, which issued certificates chain to (regenerated on every start). */
  root(): Promise<string>;
  /** Stops Pebble only (the CA is down); start() brings it back on the same ports, with a new root. */
  stopCa(): Promise<void>;
  startCa(): Promise<void>;
  logTail(lines?: number): string;
  stop(): Promise<void>;
}

/**
 * A private Pebble (the ACME test CA) on loopback, validating challenges for
 * real: names resolve through pebble-challtestsrv's DNS, which answers every
 * A query with 127.0.0.1, so the CA's HTTP-01 and TLS-ALPN-01 requests reach
 * the test's Keygate on `httpPort` and `tlsPort`. No random nonce rejections
 * and no artificial validation sleeps; authorizations are never reused, so
 * every order is validated again.
 */
export async function startPebble(options: PebbleOptions): Promise<RunningPebble> {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-pebble-'));
  const httpsCaPath = join(dir, 'cert.pem');
  const made = spawnSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    '-keyout', join(dir, 'key.pem'), '-out', httpsCaPath,
  ], { stdio: 'ignore' });
  if (made.status !== 0) throw new Error('openssl could not make a certificate for Pebble');
  const [acmePort, managementPort, dnsPort, dnsManagementPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
  writeFileSync(
    join(dir, 'pebble.json'),
    JSON.stringify({
      pebble: {
        listenAddress: `127.0.0.1:${acmePort}`,
        managementListenAddress: `127.0.0.1:${managementPort}`,
        certificate: httpsCaPath,
        privateKey: join(dir, 'key.pem'),
        httpPort: options.httpPort,
        tlsPort: options.tlsPort,
        ocspResponderURL: '',
        externalAccountBindingRequired: false,
        ...(options.validitySeconds ? { certificateValidityPeriod: options.validitySeconds } : {}),
      },
    }),
  );
  const log = join(dir, 'pebble.log');
  const dnsLog = join(dir, 'dns.log');
  const dns = spawn('pebble-challtestsrv', [
    '-dns01', `127.0.0.1:${dnsPort}`, '-http01', '', '-https01', '', '-tlsalpn01', '',
    '-management', `127.0.0.1:${dnsManagementPort}`, '-defaultIPv4', '127.0.0.1', '-defaultIPv6', '',
  ], { stdio: ['ignore', 'ignore', 'ignore'] });
  children.add(dns);
  let pebble: ChildProcess | null = null;

  const startCa = async (): Promise<void> => {
    const child = spawn('pebble', ['-config', join(dir, 'pebble.json'), '-dnsserver', `127.0.0.1:${dnsPort}`], {
      cwd: dir,
      env: { ...process.env, PEBBLE_VA_NOSLEEP: '1', PEBBLE_WFE_NONCEREJECT: '0', PEBBLE_AUTHZREUSE: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(child);
    pebble = child;
    const append = (chunk: Buffer): void => writeFileSync(log, chunk, { flag: 'a' });
    child.stdout!.on('data', append);
    child.stderr!.on('data', append);
    const deadline = Date.now() + 15_000;
    while (!((await canConnect(acmePort)) && (await canConnect(managementPort)) && (await canConnect(dnsManagementPort)))) {
      if (child.exitCode !== null) throw new Error(`pebble exited (${child.exitCode}): ${safeRead(log).slice(-2000)}`);
      if (dns.exitCode !== null) throw new Error(`pebble-challtestsrv exited (${dns.exitCode}): ${safeRead(dnsLog)}`);
      if (Date.now() > deadline) throw new Error(`pebble did not start: ${safeRead(log).slice(-2000)}`);
      await sleep(50);
    }
  };
  await startCa();

  const ca = readFileSync(httpsCaPath, 'utf8');
  return {
    directory: `https://127.0.0.1:${acmePort}/dir`,
    httpsCaPath,
    root: () =>
      new Promise((resolve, reject) => {
        https
          .get(`https://127.0.0.1:${managementPort}/roots/0`, { ca }, (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (d: string) => (body += d));
            res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`roots/0: ${res.statusCode}`))));
          })
          .on('error', reject);
      }),
    stopCa: async () => {
      if (pebble) await stop(pebble);
    },
    startCa,
    logTail: (lines = 30) => safeRead(log).split('\n').slice(-lines).join('\n'),
    stop: async () => {
      if (pebble) await stop(pebble);
      await stop(dns);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function safeRead(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}
