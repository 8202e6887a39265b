import { X509Certificate, createPrivateKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import forge from 'node-forge';
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
 * Makes a self-signed RSA-2048 / SHA-256 server certificate. The key pair
 * comes from Node's native RSA (pure-JS forge keygen takes seconds); forge
 * builds and signs the certificate.
 */
export function createSelfSignedCertificate(hostname: string, now: Date = new Date()): CertPair {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs1', format: 'pem' },
  });
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(publicKey);
  // A positive 128-bit random serial (top bit clear so DER does not read it as negative).
  const serial = randomBytes(16);
  serial[0] = (serial[0]! & 0x7f) | 0x01;
  cert.serialNumber = serial.toString('hex');
  cert.validity.notBefore = new Date(now.getTime() - 60 * 60_000);
  cert.validity.notAfter = new Date(now.getTime() + VALIDITY_DAYS * 86_400_000);
  const { dns, ips } = selfSignedNames(hostname);
  const cn = (dns[0] ?? ips[0] ?? 'localhost').slice(0, 64);
  const subject = [
    { name: 'commonName', value: cn },
    { name: 'organizationName', value: 'Keygate self-signed' },
  ];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: [...dns.map((value) => ({ type: 2, value })), ...ips.map((ip) => ({ type: 7, ip }))] },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(forge.pki.privateKeyFromPem(privateKey), forge.md.sha256.create());
  return { certPem: forge.pki.certificateToPem(cert), keyPem: privateKey };
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
export function ensureSelfSigned(dir: string, hostname: string, logger: Logger): CertPair & { certPath: string; keyPath: string } {
  const certPath = join(dir, SELF_SIGNED_CERT);
  const keyPath = join(dir, SELF_SIGNED_KEY);
  if (existsSync(certPath) && existsSync(keyPath)) {
    const pair = { certPem: readFileSync(certPath, 'utf8'), keyPem: readFileSync(keyPath, 'utf8') };
    const problem = selfSignedProblem(pair, hostname);
    if (problem === null) return { ...pair, certPath, keyPath };
    logger.warn({ certPath, problem }, `self-signed certificate must be replaced: ${problem}; making a new one`);
  }
  mkdirSync(dir, { recursive: true });
  const pair = createSelfSignedCertificate(hostname);
  writeAtomic(keyPath, pair.keyPem, 0o600);
  writeAtomic(certPath, pair.certPem, 0o644);
  const x509 = new X509Certificate(pair.certPem);
  logger.info(
    { certPath, subjectAltName: x509.subjectAltName, validTo: x509.validTo, fingerprint256: x509.fingerprint256 },
    'made a self-signed TLS certificate (configure tls.cert and tls.key for a trusted one)',
  );
  return { ...pair, certPath, keyPath };
}
