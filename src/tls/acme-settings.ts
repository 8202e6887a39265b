import { isIP } from 'node:net';
// Types only: config.ts imports this module, so it must not import config.ts back at run time.
import type { AcmeConfig } from '../config.js';
import type { AcmeChallengeType } from './acme.js';

/** Well-known CAs by name, so `tls.acme.directory letsencrypt` is enough. */
const DIRECTORIES: Record<string, string> = {
  letsencrypt: 'https://acme-v02.api.letsencrypt.org/directory',
  'letsencrypt-staging': 'https://acme-staging-v02.api.letsencrypt.org/directory',
  zerossl: 'https://acme.zerossl.com/v2/DV90',
  buypass: 'https://api.buypass.com/acme/directory',
  google: 'https://dv.acme-v02.api.pki.goog/directory',
};
export const ACME_DIRECTORY_NAMES = Object.keys(DIRECTORIES);

const CHALLENGES: readonly AcmeChallengeType[] = ['http-01', 'tls-alpn-01'];
/** A DNS name with at least two labels (a CA validates nothing else here: no IPs, no wildcards without DNS-01). */
const DNS_NAME = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$/;

/** The names the certificate covers: the host name first, then tls.acme.names (lower-case, no repeats). */
export function acmeNames(hostname: string, extra: string): string[] {
  const names = [hostname, ...extra.split(',')].map((n) => n.trim().toLowerCase().replace(/\.$/, '')).filter((n) => n !== '');
  return [...new Set(names)];
}

export function directoryUrl(directory: string): string {
  return DIRECTORIES[directory.trim().toLowerCase()] ?? directory.trim();
}

/** What is wrong with the ACME settings (naming the setting), or null. Everything is fine while ACME is off. */
export function acmeProblem(hostname: string, acme: AcmeConfig): { setting: string; message: string } | null {
  if (acme.directory.trim() === '') return null;
  let url: URL | null = null;
  try {
    url = new URL(directoryUrl(acme.directory));
  } catch {
    url = null;
  }
  if (!url || url.protocol !== 'https:') {
    return { setting: 'tls.acme.directory', message: `expected an https:// directory URL or one of ${ACME_DIRECTORY_NAMES.join(', ')} (got ${JSON.stringify(acme.directory)})` };
  }
  for (const name of acmeNames(hostname, acme.names)) {
    if (isIP(name) || !DNS_NAME.test(name)) {
      const setting = name === hostname.trim().toLowerCase() ? 'hostname' : 'tls.acme.names';
      return { setting, message: `${JSON.stringify(name)} is not a public DNS name an ACME CA can validate (HTTP-01 and TLS-ALPN-01 need a name such as mail.example.com)` };
    }
  }
  if (!CHALLENGES.includes(acme.challenge as AcmeChallengeType)) return { setting: 'tls.acme.challenge', message: `expected ${CHALLENGES.join(' or ')} (got ${JSON.stringify(acme.challenge)})` };
  if ((acme.eabKid === '') !== (acme.eabHmacKey === '')) return { setting: acme.eabKid === '' ? 'tls.acme.eabKid' : 'tls.acme.eabHmacKey', message: 'tls.acme.eabKid and tls.acme.eabHmacKey go together' };
  if (acme.email !== '' && !/^[^@\s]+@[^@\s]+$/.test(acme.email)) return { setting: 'tls.acme.email', message: `expected an email address (got ${JSON.stringify(acme.email)})` };
  return null;
}
