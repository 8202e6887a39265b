import { X509Certificate, createPrivateKey } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import type { Config } from '../config.js';
import { SELF_SIGNED_CERT, SELF_SIGNED_KEY } from '../tls/index.js';
import { acmeNames, directoryUrl } from '../tls/acme-settings.js';
import { configuredPairs, type PairPaths } from '../tls/files.js';
import { selfSignedProblem } from '../tls/selfsigned.js';
import { fail, ok, type CheckResult } from './types.js';

/** A configured certificate with less time left than this fails the check: its renewal is overdue. */
export const EXPIRY_MARGIN_DAYS = 14;
const DAY = 86_400_000;

/** The names clients connect to: the host name and every advertised mail host. */
function serverNames(config: Config): string[] {
  const names = [config.hostname, ...(['smtp', 'imap', 'pop3'] as const).filter((p) => config.public[p].enabled).map((p) => config.public[p].serverName)];
  return [...new Set(names.map((n) => n.trim().toLowerCase()).filter(Boolean))];
}

const covers = (cert: X509Certificate, name: string): boolean => (isIP(name) ? cert.checkIP(name) !== undefined : cert.checkHost(name) !== undefined);

/**
 * The TLS certificate: with `tls.cert`, it must match its key, cover every
 * name clients are told, be valid now and for EXPIRY_MARGIN_DAYS more.
 * Without it, the self-signed pair in `tls.dir` is made or renewed at start,
 * so its state is reported, not failed.
 */
export function checkCertificate(config: Config, now: Date = new Date()): CheckResult {
  const names = serverNames(config);
  if (config.tls.acme.directory !== '') {
    return ok('certificate', `ACME from ${directoryUrl(config.tls.acme.directory)} for ${acmeNames(config.hostname, config.tls.acme.names).join(', ')}: ordered and renewed by serve, kept in the store`);
  }
  if (config.tls.cert === '') {
    const dir = resolve(config.tls.dir);
    const certPath = join(dir, SELF_SIGNED_CERT);
    const keyPath = join(dir, SELF_SIGNED_KEY);
    if (!existsSync(certPath) || !existsSync(keyPath)) return ok('certificate', `self-signed, made in ${dir} at first start (clients ask to trust it; set tls.cert and tls.key for a trusted one)`);
    const problem = selfSignedProblem({ certPem: readFileSync(certPath, 'utf8'), keyPem: readFileSync(keyPath, 'utf8') }, config.hostname, now);
    if (problem) return ok('certificate', `self-signed ${certPath} is replaced at the next start: ${problem}`);
    return ok('certificate', `self-signed ${certPath} until ${new Date(new X509Certificate(readFileSync(certPath)).validTo).toISOString()} (clients ask to trust it)`);
  }
  // tls.cert / tls.key are lists paired in order (RSA and ECDSA side by side, other names by SNI): each pair must hold, and together they cover every name.
  let pairs: PairPaths[];
  try {
    pairs = configuredPairs(config.tls.cert, config.tls.key);
  } catch (err) {
    return fail('certificate', (err as Error).message);
  }
  const certs: X509Certificate[] = [];
  for (const { certPath, keyPath } of pairs) {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(readFileSync(certPath));
    } catch (err) {
      return fail('certificate', `tls.cert ${certPath}: ${(err as Error).message}`);
    }
    try {
      if (!cert.checkPrivateKey(createPrivateKey(readFileSync(keyPath)))) return fail('certificate', `tls.key ${keyPath} is not the key of ${certPath}`);
    } catch (err) {
      return fail('certificate', `tls.key ${keyPath}: ${(err as Error).message}`);
    }
    const from = Date.parse(cert.validFrom);
    const to = Date.parse(cert.validTo);
    if (now.getTime() < from) return fail('certificate', `${certPath} is not valid before ${new Date(from).toISOString()}`);
    if (now.getTime() >= to) return fail('certificate', `${certPath} expired on ${new Date(to).toISOString()}`);
    const daysLeft = Math.floor((to - now.getTime()) / DAY);
    if (daysLeft < EXPIRY_MARGIN_DAYS) return fail('certificate', `${certPath} expires in ${daysLeft} day(s), on ${new Date(to).toISOString()}: renew it`);
    certs.push(cert);
  }
  const certPath = pairs.map((p) => p.certPath).join(', ');
  const uncovered = names.filter((n) => !certs.some((cert) => covers(cert, n)));
  if (uncovered.length > 0) {
    const named = certs.map((cert) => cert.subjectAltName ?? cert.subject.replace(/\n/g, ', ')).join('; ');
    return fail('certificate', `${certPath} is not valid for ${uncovered.join(', ')} (it names ${named})`);
  }
  const to = Math.min(...certs.map((cert) => Date.parse(cert.validTo)));
  const daysLeft = Math.floor((to - now.getTime()) / DAY);
  return ok('certificate', `${certPath} for ${names.join(', ')}, valid until ${new Date(to).toISOString()} (${daysLeft} days)`);
}
