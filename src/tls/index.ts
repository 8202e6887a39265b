import { X509Certificate, createHash } from 'node:crypto';
import { readFileSync, statSync, watch, type FSWatcher } from 'node:fs';
import type net from 'node:net';
import { dirname, resolve } from 'node:path';
import tls from 'node:tls';
import { ConfigError, type Config } from '../config.js';
import type { Logger } from '../log.js';
import { ensureSelfSigned } from './selfsigned.js';

export { createSelfSignedCertificate, SELF_SIGNED_CERT, SELF_SIGNED_KEY } from './selfsigned.js';

export const MIN_TLS_VERSION = 'TLSv1.2' as const;
/**
 * How long a server-side handshake (STARTTLS or implicit TLS) may take unless
 * `tls.handshakeTimeout` says otherwise. A socket waiting for a ClientHello
 * holds a descriptor and memory: a real client sends it at once.
 */
export const HANDSHAKE_TIMEOUT_MS = 5000;
/** Quiet time after a file-system event before the files are re-read (editors write in several steps). */
const DEBOUNCE_MS = 200;
/** Polling fallback for file systems whose change events do not arrive (network mounts, some bind mounts). */
const POLL_MS = 1500;

export interface TlsProvider {
  /** `tls.handshakeTimeout`: what `upgradeToTls` allows a handshake by default, ms. */
  readonly handshakeTimeoutMs: number;
  /** Current context; changes when configured files change on disk. */
  secureContext(): tls.SecureContext;
  /**
   * For tls.createServer / new tls.TLSSocket(..., {isServer:true}): the current
   * context (`secureContext` for TLSSocket; `cert`/`key` for tls.createServer,
   * which ignores `secureContext`), an SNICallback returning the current
   * context, and minVersion TLSv1.2. A `tls.Server` serves clients that send
   * no SNI from its own default context: call `server.setSecureContext(...)`
   * from `onChange` to keep those current too.
   */
  serverOptions(): tls.TlsOptions;
  /** Current certificate chain PEM (later used to sign Apple profiles). */
  certPem(): string;
  keyPem(): string;
  /** SHA-256 fingerprint of the current leaf certificate, colon-separated hex (as X509Certificate.fingerprint256). */
  fingerprint256(): string;
  /** Called after every successful swap; returns the unsubscribe function. */
  onChange(listener: () => void): () => void;
  /** Stop watching files. */
  close(): void;
}

interface Loaded {
  certPem: string;
  keyPem: string;
  context: tls.SecureContext;
  fingerprint256: string;
}

function makeContext(certPem: string, keyPem: string): Loaded {
  // createSecureContext rejects an unparsable certificate or key and a key that does not match.
  const context = tls.createSecureContext({ cert: certPem, key: keyPem, minVersion: MIN_TLS_VERSION });
  const leaf = new X509Certificate(certPem);
  return { certPem, keyPem, context, fingerprint256: leaf.fingerprint256 };
}

function describe(certPem: string): Record<string, string> {
  const leaf = new X509Certificate(certPem);
  return { subject: leaf.subject.replace(/\n/g, ', '), subjectAltName: leaf.subjectAltName ?? '', validTo: leaf.validTo, fingerprint256: leaf.fingerprint256 };
}

function fileSignature(path: string): string {
  try {
    const s = statSync(path);
    return `${s.ino}:${s.size}:${s.mtimeMs}`;
  } catch {
    return 'missing';
  }
}

/** What the provider reads from the configuration; `tls.handshakeTimeout` defaults to HANDSHAKE_TIMEOUT_MS. */
export interface TlsSettings {
  tls: Pick<Config['tls'], 'cert' | 'key' | 'dir'> & { handshakeTimeout?: number };
  hostname: string;
}

/**
 * Loads the configured certificate and key (or makes / reuses a self-signed
 * pair in tls.dir) and keeps the context current: the files are watched (a
 * directory watch, so editors and tools that replace files by rename are seen,
 * plus a slow stat poll as a fallback) and a new valid pair is swapped in
 * without a restart. An invalid new pair is logged and the old context kept.
 *
 * Throws ConfigError naming tls.cert / tls.key when the configured files cannot
 * be used at start-up.
 */
export async function createTlsProvider(config: TlsSettings, logger: Logger): Promise<TlsProvider> {
  const log = logger.child({ component: 'tls' });
  let certPath: string;
  let keyPath: string;
  let current: Loaded;

  if (config.tls.cert !== '' || config.tls.key !== '') {
    if (config.tls.cert === '' || config.tls.key === '') throw new ConfigError(config.tls.cert === '' ? 'tls.cert' : 'tls.key', 'tls.cert and tls.key go together');
    certPath = resolve(config.tls.cert);
    keyPath = resolve(config.tls.key);
    let certPem: string;
    let keyPem: string;
    try {
      certPem = readFileSync(certPath, 'utf8');
    } catch (err) {
      throw new ConfigError('tls.cert', `cannot read ${certPath}: ${(err as Error).message}`);
    }
    try {
      keyPem = readFileSync(keyPath, 'utf8');
    } catch (err) {
      throw new ConfigError('tls.key', `cannot read ${keyPath}: ${(err as Error).message}`);
    }
    try {
      current = makeContext(certPem, keyPem);
    } catch (err) {
      throw new ConfigError('tls.cert', `${certPath} with ${keyPath} is not a usable certificate and key: ${(err as Error).message}`);
    }
    log.info({ certPath, ...describe(certPem) }, 'loaded TLS certificate');
  } else {
    const pair = ensureSelfSigned(resolve(config.tls.dir), config.hostname, log);
    certPath = pair.certPath;
    keyPath = pair.keyPath;
    current = makeContext(pair.certPem, pair.keyPem);
  }

  const listeners = new Set<() => void>();
  let lastSeen = `${fileSignature(certPath)}|${fileSignature(keyPath)}`;
  let lastFailure = '';
  let closed = false;

  const reload = (): void => {
    if (closed) return;
    lastSeen = `${fileSignature(certPath)}|${fileSignature(keyPath)}`;
    let certPem: string;
    let keyPem: string;
    try {
      certPem = readFileSync(certPath, 'utf8');
      keyPem = readFileSync(keyPath, 'utf8');
    } catch (err) {
      // Mid-replacement (a rename not done yet) or deleted: keep serving what we have.
      const why = `cannot read: ${(err as Error).message}`;
      if (why !== lastFailure) log.error({ certPath, keyPath, err: (err as Error).message }, 'TLS certificate files unreadable; keeping the current certificate');
      lastFailure = why;
      return;
    }
    if (certPem === current.certPem && keyPem === current.keyPem) return;
    const digest = createHash('sha256').update(certPem).update('\0').update(keyPem).digest('hex');
    try {
      current = makeContext(certPem, keyPem);
    } catch (err) {
      // Logged once per distinct bad content: the poll would otherwise repeat it.
      if (digest !== lastFailure) log.error({ certPath, keyPath, err: (err as Error).message }, 'new TLS certificate or key is invalid; keeping the current certificate');
      lastFailure = digest;
      return;
    }
    lastFailure = '';
    log.info({ certPath, ...describe(certPem) }, 'TLS certificate reloaded');
    for (const fn of listeners) {
      try {
        fn();
      } catch (err) {
        log.error({ err }, 'TLS change listener failed');
      }
    }
  };

  let debounce: NodeJS.Timeout | undefined;
  const schedule = (): void => {
    if (closed) return;
    clearTimeout(debounce);
    debounce = setTimeout(reload, DEBOUNCE_MS);
    debounce.unref();
  };

  const watchers: FSWatcher[] = [];
  for (const dir of new Set([dirname(certPath), dirname(keyPath)])) {
    try {
      const w = watch(dir, { persistent: false }, schedule);
      w.on('error', (err) => log.debug({ dir, err: err.message }, 'certificate directory watch failed; polling continues'));
      watchers.push(w);
    } catch (err) {
      log.debug({ dir, err: (err as Error).message }, 'cannot watch certificate directory; polling only');
    }
  }
  const poll = setInterval(() => {
    if (`${fileSignature(certPath)}|${fileSignature(keyPath)}` !== lastSeen) schedule();
  }, POLL_MS);
  poll.unref();

  const sniCallback = (_servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void): void => cb(null, current.context);

  return {
    handshakeTimeoutMs: config.tls.handshakeTimeout ?? HANDSHAKE_TIMEOUT_MS,
    secureContext: () => current.context,
    serverOptions: () => ({
      secureContext: current.context,
      cert: current.certPem,
      key: current.keyPem,
      SNICallback: sniCallback,
      minVersion: MIN_TLS_VERSION,
    }),
    certPem: () => current.certPem,
    keyPem: () => current.keyPem,
    fingerprint256: () => current.fingerprint256,
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    close() {
      closed = true;
      clearTimeout(debounce);
      clearInterval(poll);
      for (const w of watchers) w.close();
      listeners.clear();
    },
  };
}

/**
 * Server-side STARTTLS: wraps an accepted plain socket (or, for implicit TLS,
 * a fresh one) and resolves once the handshake completes. Rejects on a
 * handshake error, on the peer closing, or after `timeoutMs` (default: the
 * provider's `tls.handshakeTimeout`); the socket is destroyed
 * then. Stop reading the plain socket before calling (remove 'data'
 * listeners); bytes it has buffered but not delivered go to the TLS layer, so
 * plaintext pipelined after STARTTLS cannot be taken for a command.
 */
export function upgradeToTls(socket: net.Socket, provider: TlsProvider, timeoutMs: number = provider.handshakeTimeoutMs): Promise<tls.TLSSocket> {
  return new Promise((resolvePromise, reject) => {
    const secure = new tls.TLSSocket(socket, { isServer: true, ...provider.serverOptions() });
    let settled = false;
    const finish = (err: Error | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      secure.off('secure', onSecure);
      secure.off('error', onError);
      secure.off('close', onClose);
      if (err) {
        // Keep a listener so a late error from the dying socket is not unhandled.
        secure.on('error', () => {});
        secure.destroy();
        socket.destroy();
        reject(err);
      } else {
        resolvePromise(secure);
      }
    };
    const onSecure = (): void => finish(null);
    const onError = (err: Error): void => finish(err);
    const onClose = (): void => finish(Object.assign(new Error('connection closed during the TLS handshake'), { code: 'ECONNRESET' }));
    const timer = setTimeout(() => finish(Object.assign(new Error(`TLS handshake timed out after ${timeoutMs} ms`), { code: 'ETIMEDOUT' })), timeoutMs);
    secure.once('secure', onSecure);
    secure.on('error', onError);
    secure.once('close', onClose);
  });
}
