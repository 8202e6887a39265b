import { X509Certificate, createPrivateKey } from 'node:crypto';
import tls from 'node:tls';

export const MIN_TLS_VERSION = 'TLSv1.2' as const;

/**
 * Server cipher preference (honoured over the client's). TLS 1.3: AES-128-GCM
 * first — as safe as AES-256 here, and its SHA-256 key schedule runs on the
 * CPU's SHA extensions where SHA-384 does not. TLS 1.2: ECDSA suites before
 * RSA ones, so a client that can use the ECDSA certificate gets it; then
 * Node's default list for everything else.
 */
export const TLS_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-RSA-CHACHA20-POLY1305',
  ...tls.DEFAULT_CIPHERS.split(':').filter((c) => !c.startsWith('TLS_')),
]
  .filter((c, i, all) => all.indexOf(c) === i)
  .join(':');

/**
 * The session-ID context every Keygate context carries. A resumed session must
 * come back to a context with the same one, and tls.Server's default is a hash
 * of process.argv, which differs between instances (other ports, other flags).
 */
export const SESSION_ID_CONTEXT = 'keygate';

export interface CertPair {
  certPem: string;
  keyPem: string;
}

/** A certificate chain and its key, checked and described. */
export interface LoadedPair extends CertPair {
  /** DNS names it serves, lower-case (`*.example.com` kept as a wildcard): subjectAltName, else the common name. */
  names: string[];
  /** 'ec', 'rsa', … (node:crypto's asymmetricKeyType). */
  keyType: string;
  fingerprint256: string;
  notBefore: number;
  notAfter: number;
  subject: string;
}

/** DNS names a leaf certificate serves. */
export function certificateNames(leaf: X509Certificate): string[] {
  const san = (leaf.subjectAltName ?? '')
    .split(/,\s*/)
    .filter((e) => e.startsWith('DNS:'))
    .map((e) => e.slice(4).replace(/^"|"$/g, '').toLowerCase());
  if (san.length > 0) return [...new Set(san)];
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(leaf.subject)?.[1];
  return cn ? [cn.toLowerCase()] : [];
}

/**
 * Checks and describes a pair. Throws (with OpenSSL's or node:crypto's
 * message) when the certificate or key cannot be read or do not belong together.
 */
export function loadPair(pair: CertPair): LoadedPair {
  const leaf = new X509Certificate(pair.certPem);
  const key = createPrivateKey(pair.keyPem);
  if (!leaf.checkPrivateKey(key)) throw new Error('the key does not belong to the certificate');
  return {
    certPem: pair.certPem,
    keyPem: pair.keyPem,
    names: certificateNames(leaf),
    keyType: key.asymmetricKeyType ?? 'unknown',
    fingerprint256: leaf.fingerprint256,
    notBefore: Date.parse(leaf.validFrom),
    notAfter: Date.parse(leaf.validTo),
    subject: leaf.subject.replace(/\n/g, ', '),
  };
}

/** What every context Keygate serves shares besides its certificates. */
export interface ContextSettings {
  /** 48 bytes: session-ticket name, HMAC and AES keys (see ticket-keys.ts). */
  ticketKeys: Buffer;
  /** How long a session (and so a ticket) may be resumed, seconds. */
  sessionTimeout: number;
}

/** Options for tls.createSecureContext / tls.Server.setSecureContext serving `pairs` side by side. */
export function contextOptions(pairs: readonly CertPair[], settings: ContextSettings): tls.SecureContextOptions & { sessionIdContext: string } {
  return {
    cert: pairs.map((p) => p.certPem),
    key: pairs.map((p) => p.keyPem),
    minVersion: MIN_TLS_VERSION,
    ciphers: TLS_CIPHERS,
    honorCipherOrder: true,
    ticketKeys: settings.ticketKeys,
    sessionTimeout: settings.sessionTimeout,
    sessionIdContext: SESSION_ID_CONTEXT,
  };
}

function secureContext(pairs: readonly CertPair[], settings: ContextSettings): tls.SecureContext {
  const context = tls.createSecureContext(contextOptions(pairs, settings));
  // tls.Server sets this itself; contexts used directly by a TLSSocket need it too (see SESSION_ID_CONTEXT).
  (context.context as { setSessionIdContext?: (id: string) => void }).setSessionIdContext?.(SESSION_ID_CONTEXT);
  return context;
}

/** One context: the pairs (one per key type) serving one set of names. */
export interface CertificateEntry {
  names: string[];
  /** Best first: ECDSA before RSA. */
  pairs: LoadedPair[];
  context: tls.SecureContext;
}

const KEY_TYPE_ORDER = ['ec', 'ed25519', 'rsa', 'rsa-pss'];
const keyRank = (t: string): number => (KEY_TYPE_ORDER.includes(t) ? KEY_TYPE_ORDER.indexOf(t) : KEY_TYPE_ORDER.length);

/**
 * Every certificate Keygate serves, as SecureContexts: pairs with the same
 * names share one context (an RSA and an ECDSA certificate side by side, so
 * OpenSSL gives each client the best one it supports), and SNI picks the
 * context by host name: exact name first, then a one-label wildcard. Clients
 * without SNI, or asking for a name nothing covers, get the default: the
 * first context covering `hostname`, else the first one.
 */
export class CertificateSet {
  readonly entries: CertificateEntry[];
  readonly default: CertificateEntry;
  private readonly exact = new Map<string, CertificateEntry>();
  private readonly wildcard = new Map<string, CertificateEntry>();

  /** `pairs` in order of preference; at least one. Throws when OpenSSL refuses a combination. */
  constructor(pairs: readonly LoadedPair[], hostname: string, settings: ContextSettings) {
    if (pairs.length === 0) throw new Error('no certificate to serve');
    const groups = new Map<string, LoadedPair[]>();
    for (const pair of pairs) {
      const id = [...pair.names].sort().join(' ');
      const group = groups.get(id) ?? [];
      // One certificate per key type and name set: the first configured wins.
      if (!group.some((p) => p.keyType === pair.keyType)) group.push(pair);
      groups.set(id, group);
    }
    this.entries = [...groups.values()].map((group) => {
      const best = [...group].sort((a, b) => keyRank(a.keyType) - keyRank(b.keyType));
      return { names: best[0]!.names, pairs: best, context: secureContext(best, settings) };
    });
    for (const entry of this.entries) {
      for (const name of entry.names) {
        const map = name.startsWith('*.') ? this.wildcard : this.exact;
        const key = name.startsWith('*.') ? name.slice(2) : name;
        if (!map.has(key)) map.set(key, entry);
      }
    }
    this.default = this.lookup(hostname) ?? this.entries[0]!;
  }

  /** The entry serving `servername`, or undefined when no certificate names it. */
  lookup(servername: string): CertificateEntry | undefined {
    const name = servername.toLowerCase().replace(/\.$/, '');
    const found = this.exact.get(name);
    if (found) return found;
    const dot = name.indexOf('.');
    return dot > 0 ? this.wildcard.get(name.slice(dot + 1)) : undefined;
  }

  /** The context for an SNI name: its own, else the default. */
  contextFor(servername: string): tls.SecureContext {
    return (this.lookup(servername) ?? this.default).context;
  }
}
