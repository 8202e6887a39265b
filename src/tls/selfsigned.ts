import { X509Certificate, createPrivateKey, randomBytes, webcrypto } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import type { Logger } from '../log.js';

export const SELF_SIGNED_CERT = 'keygate-selfsigned.crt';
export const SELF_SIGNED_KEY = 'keygate-selfsigned.key';

/** Validity of a fresh self-signed certificate (~2 years, under Apple's 825-day limit for TLS server certificates). */
const VALIDITY_DAYS = 730;

export interface CertPair {
  certPem: string;
  keyPem: string;
}

/** Names a fresh certificate covers: the configured host name, `localhost`, 127.0.0.1 and ::1. */
export function selfSignedNames(hostname: string): { dns: string[]; ips: string[] } {
  const dns = new Set<string>();
  const ips = new Set<string>(['127.0.0.1', '::1']);
  const host = hostname.trim().toLowerCase();
  if (host !== '') (isIP(host) ? ips : dns).add(host);
  dns.add('localhost');
  return { dns: [...dns], ips: [...ips] };
}

/**
 * Makes a self-signed ECDSA P-256 / SHA-256 server certificate: every TLS 1.2+
 * client accepts it, and its handshake signature is far cheaper than RSA's.
 * The key pair comes from Node's WebCrypto; @peculiar/x509 builds and signs
 * the certificate.
 */
export async function createSelfSignedCertificate(hostname: string, now: Date = new Date()): Promise<CertPair> {
  // Loaded only when a certificate is made (first start), not by every `keygate serve`.
  const x509 = await import('@peculiar/x509');
  const algorithm = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = await webcrypto.subtle.generateKey(algorithm, true, ['sign', 'verify']);
  // A positive 128-bit random serial (top bit clear so DER does not read it as negative).
  const serial = randomBytes(16);
  serial[0] = (serial[0]! & 0x7f) | 0x01;
  const { dns, ips } = selfSignedNames(hostname);
  const cn = (dns[0] ?? ips[0] ?? 'localhost').slice(0, 64);
  const name = new x509.Name([{ CN: [cn] }, { O: ['Keygate self-signed'] }]);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial.toString('hex'),
    name,
    notBefore: new Date(now.getTime() - 60 * 60_000),
    notAfter: new Date(now.getTime() + VALIDITY_DAYS * 86_400_000),
    signingAlgorithm: algorithm,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([...dns.map((value) => ({ type: 'dns' as const, value })), ...ips.map((value) => ({ type: 'ip' as const, value }))]),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, webcrypto),
    ],
  }, webcrypto);
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const keyPem = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' }).export({ format: 'pem', type: 'pkcs8' }) as string;
  return { certPem: cert.toString('pem') + '\n', keyPem };
}

/** Why an existing self-signed pair must be replaced, or null when it is still good for `hostname`. */
export function selfSignedProblem(pair: CertPair, hostname: string, now: Date = new Date()): string | null {
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(pair.certPem);
    if (!x509.checkPrivateKey(createPrivateKey(pair.keyPem))) return 'the key does not match the certificate';
  } catch (err) {
    return `unreadable (${(err as Error).message})`;
  }
  if (Date.parse(x509.validTo) <= now.getTime()) return `expired on ${new Date(x509.validTo).toISOString()}`;
  const host = hostname.trim().toLowerCase();
  if (host !== '') {
    const covered = isIP(host) ? x509.checkIP(host) !== undefined : x509.checkHost(host, { wildcards: false }) !== undefined;
    if (!covered) return `host name ${host} is not in its subjectAltName`;
  }
  return null;
}

/** Writes a file through a temporary name and a rename, so a reader never sees half of it. */
function writeAtomic(path: string, data: string, mode: number): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, data, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

/**
 * Returns the self-signed pair in `dir`, making it on first start, and again
 * only when it has expired, is unreadable or does not cover `hostname` (logged).
 * The key file is written with mode 0600.
 */
export async function ensureSelfSigned(dir: string, hostname: string, logger: Logger): Promise<CertPair & { certPath: string; keyPath: string }> {
  const certPath = join(dir, SELF_SIGNED_CERT);
  const keyPath = join(dir, SELF_SIGNED_KEY);
  if (existsSync(certPath) && existsSync(keyPath)) {
    const pair = { certPem: readFileSync(certPath, 'utf8'), keyPem: readFileSync(keyPath, 'utf8') };
    const problem = selfSignedProblem(pair, hostname);
    if (problem === null) return { ...pair, certPath, keyPath };
    logger.warn({ certPath, problem }, `self-signed certificate must be replaced: ${problem}; making a new one`);
  }
  mkdirSync(dir, { recursive: true });
  const pair = await createSelfSignedCertificate(hostname);
  writeAtomic(keyPath, pair.keyPem, 0o600);
  writeAtomic(certPath, pair.certPem, 0o644);
  const x509 = new X509Certificate(pair.certPem);
  logger.info(
    { certPath, subjectAltName: x509.subjectAltName, validTo: x509.validTo, fingerprint256: x509.fingerprint256 },
    'made a self-signed TLS certificate (configure tls.cert and tls.key for a trusted one)',
  );
  return { ...pair, certPath, keyPath };
}
