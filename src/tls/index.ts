import { resolve } from 'node:path';
import type net from 'node:net';
import tls from 'node:tls';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import { AcmeChallenges, type ChallengeStore } from './acme-challenges.js';
import type { AcmeManager, AcmeTiming } from './acme.js';
import { CertificateSet, contextOptions, loadPair, type LoadedPair } from './certificates.js';
import { CertificateFiles, configuredPairs } from './files.js';
import { ensureSelfSigned } from './selfsigned.js';
import { TicketKeys } from './ticket-keys.js';

export { createSelfSignedCertificate, SELF_SIGNED_CERT, SELF_SIGNED_KEY } from './selfsigned.js';
export { MIN_TLS_VERSION } from './certificates.js';
export type { AcmeChallenges } from './acme-challenges.js';

/**
 * How long a server-side handshake (STARTTLS or implicit TLS) may take unless
 * `tls.handshakeTimeout` says otherwise. A socket waiting for a ClientHello
 * holds a descriptor and memory: a real client sends it at once.
 */
export const HANDSHAKE_TIMEOUT_MS = 5000;

type SniCallback = (servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void) => void;
type AlpnCallback = (this: tls.TLSSocket, params: { servername: string; protocols: string[] }) => string | undefined;

export interface TlsProvider {
  /** `tls.handshakeTimeout`: what `upgradeToTls` allows a handshake by default, ms. */
  readonly handshakeTimeoutMs: number;
  /** The default context (clients without SNI); changes with the certificates and the ticket key. */
  secureContext(): tls.SecureContext;
  /**
   * For tls.createServer / new tls.TLSSocket(..., {isServer:true}): the
   * default context (`secureContext` for TLSSocket; `cert`/`key` and the
   * rest for tls.createServer, which ignores `secureContext`), an
   * SNICallback returning the current context for the name, minVersion
   * TLSv1.2. A `tls.Server` serves clients that send no SNI from its own
   * default context: `attach(server)` keeps that current too.
   */
  serverOptions(): tls.TlsOptions;
  /**
   * The leanest options for `new tls.TLSSocket(raw, { isServer: true, ... })`
   * on the mail listeners: an SNI callback only when there is more than one
   * certificate to choose from, an ALPN callback only for TLS-ALPN-01.
   * Cached: the same object until something changes.
   */
  socketOptions(): tls.TLSSocketOptions;
  /** For the HTTPS control plane: as serverOptions(), speaking http/1.1 over ALPN (and acme-tls/1 for TLS-ALPN-01). */
  httpsOptions(): tls.TlsOptions;
  /** Keeps a tls.Server's own default context (clients without SNI) and ticket key current; returns the unsubscribe function. */
  attach(server: tls.Server, options?: () => tls.TlsOptions): () => void;
  /** SNI callback for servers built once (smtp-server): always the current context for the name. */
  readonly sniCallback: SniCallback;
  /** Current default certificate chain PEM (signs Apple profiles unless setup.signingCert is set). */
  certPem(): string;
  keyPem(): string;
  /** SHA-256 fingerprint of the current default leaf certificate, colon-separated hex (as X509Certificate.fingerprint256). */
  fingerprint256(): string;
  /** The context serving `servername` (SNI), else the default. */
  contextFor(servername: string): tls.SecureContext;
  /** ACME challenge answers (HTTP-01 for the control plane), or null when ACME is off. */
  readonly acmeChallenges: AcmeChallenges | null;
  /** The ACME certificate manager, or null when ACME is off. */
  readonly acme: AcmeManager | null;
  /** The shared TLS session-ticket keys. */
  readonly ticketKeys: TicketKeys;
  /** Called after every change of certificate or ticket key; returns the unsubscribe function. */
  onChange(listener: () => void): () => void;
  /** Starts ACME ordering and renewal (once the listeners that answer challenges are up). */
  start(): void;
  /** Stops watching files, rotating keys and renewing. */
  close(): Promise<void>;
}

export interface TlsProviderOptions {
  /**
   * Shares the session-ticket keys between instances, and holds ACME's account,
   * certificate, lock and challenge answers. Without it (tests, tools) the
   * ticket key is this process's own and ACME cannot be used.
   */
  store?: ChallengeStore;
  /** ACME's retry and rescan timing (tests shorten it). */
  acmeTiming?: Partial<AcmeTiming>;
}

/** What the provider reads from the configuration; the handshake timeout, ticket rotation and ACME have defaults (HANDSHAKE_TIMEOUT_MS, 12 h, off). */
export type TlsSettings = Pick<Config, 'hostname'> & {
  tls: Pick<Config['tls'], 'cert' | 'key' | 'dir'> & Partial<Pick<Config['tls'], 'handshakeTimeout' | 'ticketKeyRotation' | 'acme'>>;
};

/** 12 h: tickets resume for up to this long, and each period's key is forgotten two periods later. */
export const DEFAULT_TICKET_ROTATION_MS = 12 * 60 * 60_000;

/**
 * Everything Keygate serves over TLS: the configured certificate files (any
 * number of pairs, RSA and ECDSA side by side, several host names by SNI),
 * the ACME certificate when `tls.acme.directory` is set, else (or until the
 * first one is issued) a self-signed ECDSA certificate in `tls.dir`; and the
 * session-ticket key shared through the store. Any change — a file replaced,
 * a certificate renewed, the ticket key rotated — builds new contexts that
 * new handshakes use at once; open sessions keep theirs.
 *
 * Throws ConfigError naming tls.cert / tls.key when the configured files cannot
 * be used at start-up.
 */
export async function createTlsProvider(config: TlsSettings, logger: Logger, options: TlsProviderOptions = {}): Promise<TlsProvider> {
  const log = logger.child({ component: 'tls' });
  const listeners = new Set<() => void>();
  const rotationMs = config.tls.ticketKeyRotation ?? DEFAULT_TICKET_ROTATION_MS;
  const ticketKeys = new TicketKeys(options.store ?? null, rotationMs, log);
  await ticketKeys.start();

  // The ACME client (and its HTTP and X.509 libraries) is loaded only when ACME is configured.
  const acmeModule = config.tls.acme && config.tls.acme.directory !== '' ? await import('./acme.js') : null;
  const acmeConfig = acmeModule && config.tls.acme ? acmeModule.acmeSettings(config.hostname, config.tls.acme) : null;
  if (acmeConfig && !options.store) throw new Error('ACME needs the key store (createTlsProvider options.store)');
  const acmeChallenges = acmeConfig && options.store ? new AcmeChallenges(options.store) : null;
  // The TLS-ALPN-01 validation can reach any instance: with that challenge, every implicit-TLS handshake is asked about acme-tls/1.
  const alpnValidation = acmeConfig?.challenge === 'tls-alpn-01' ? acmeChallenges : null;

  let set: CertificateSet;
  let selfSigned: LoadedPair | null = null;
  let acmePair: LoadedPair | null = null;
  let files: CertificateFiles | null = null;
  let cache: { server?: tls.TlsOptions; socket?: tls.TLSSocketOptions; https?: tls.TlsOptions } = {};

  const settings = () => ({ ticketKeys: ticketKeys.current(), sessionTimeout: Math.floor(rotationMs / 1000) });
  const pairs = (): LoadedPair[] => {
    const list = [...(acmePair ? [acmePair] : []), ...(files?.pairs() ?? [])];
    return list.length > 0 ? list : [selfSigned!];
  };

  /** Rebuilds the contexts; keeps the old ones (and says so) if OpenSSL refuses the new set. */
  const rebuild = (why: string): void => {
    try {
      set = new CertificateSet(pairs(), config.hostname, settings());
    } catch (err) {
      log.error({ err: (err as Error).message, why }, 'cannot build TLS contexts from the new certificates; keeping the current ones');
      return;
    }
    cache = {};
    for (const fn of listeners) {
      try {
        fn();
      } catch (err) {
        log.error({ err }, 'TLS change listener failed');
      }
    }
  };

  if (config.tls.cert !== '' || config.tls.key !== '') {
    files = new CertificateFiles(configuredPairs(config.tls.cert, config.tls.key), log, () => rebuild('certificate files changed'));
  } else {
    selfSigned = loadPair(await ensureSelfSigned(resolve(config.tls.dir), config.hostname, log));
  }

  let acme: AcmeManager | null = null;
  if (acmeModule && acmeConfig && acmeChallenges && options.store) {
    const { AcmeManager, DEFAULT_ACME_TIMING } = acmeModule;
    // Until the first ACME certificate exists, the files or a self-signed certificate serve.
    selfSigned ??= loadPair(await ensureSelfSigned(resolve(config.tls.dir), config.hostname, log));
    acme = new AcmeManager(acmeConfig, options.store, acmeChallenges, log, (pair) => {
      acmePair = pair;
      rebuild('ACME certificate');
    }, { ...DEFAULT_ACME_TIMING, ...options.acmeTiming });
    await acme.load();
    acmePair = acme.current();
  }
  set = new CertificateSet(pairs(), config.hostname, settings());
  ticketKeys.onRotate(() => rebuild('ticket key rotated'));

  /**
   * Node applies an SNI context by copying in only its current (last loaded)
   * certificate, so switching would drop the default context's ECDSA-and-RSA
   * pairing: a name the default context serves gets no switch at all; another
   * name gets its own context (RSA when it has both, loaded last: the one
   * every client can use).
   */
  const sniContext = (servername: string): tls.SecureContext | undefined => {
    const entry = set.lookup(servername);
    return entry && entry !== set.default ? entry.context : undefined;
  };
  const sniCallback: SniCallback = (servername, cb) => cb(null, sniContext(servername));
  // Method-style: Node calls it with the TLSSocket as `this`, which tells a TLS-ALPN-01 validation apart.
  const validatingSni = function (this: tls.TLSSocket, servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void): void {
    if (!alpnValidation?.isValidation(this)) return cb(null, sniContext(servername));
    alpnValidation.alpnContext(servername).then(
      (ctx) => (ctx ? cb(null, ctx) : cb(new Error(`no TLS-ALPN-01 challenge pending for ${servername}`))),
      (err: Error) => cb(err),
    );
  };
  // A mail client offering ALPN gets its first protocol, as close to "no ALPN" as a callback can say.
  const mailAlpn: AlpnCallback | undefined = alpnValidation?.alpnCallback((protocols) => protocols[0]);
  const httpPick = (protocols: string[]): string | undefined => (protocols.includes('http/1.1') ? 'http/1.1' : undefined);
  const httpAlpn: AlpnCallback = alpnValidation ? alpnValidation.alpnCallback(httpPick) : ({ protocols }) => httpPick(protocols);
  const defaultOptions = (): tls.TlsOptions => ({ ...contextOptions(set.default.pairs, settings()), secureContext: set.default.context });

  const provider: TlsProvider = {
    handshakeTimeoutMs: config.tls.handshakeTimeout ?? HANDSHAKE_TIMEOUT_MS,
    secureContext: () => set.default.context,
    serverOptions: () => (cache.server ??= { ...defaultOptions(), SNICallback: alpnValidation ? validatingSni : sniCallback, ...(mailAlpn ? { ALPNCallback: mailAlpn } : {}) }),
    socketOptions: () =>
      (cache.socket ??= {
        secureContext: set.default.context,
        // One certificate to choose from: no SNI callback, so no trip into JavaScript per handshake.
        ...(set.entries.length > 1 || alpnValidation ? { SNICallback: alpnValidation ? validatingSni : sniCallback } : {}),
        ...(mailAlpn ? { ALPNCallback: mailAlpn } : {}),
      } as tls.TLSSocketOptions),
    httpsOptions: () => (cache.https ??= { ...defaultOptions(), SNICallback: alpnValidation ? validatingSni : sniCallback, ALPNCallback: httpAlpn }),
    attach(server, opts) {
      const current = opts ?? (() => provider.serverOptions());
      const update = (): void => server.setSecureContext(current());
      listeners.add(update);
      return () => listeners.delete(update);
    },
    sniCallback,
    certPem: () => set.default.pairs[0]!.certPem,
    keyPem: () => set.default.pairs[0]!.keyPem,
    fingerprint256: () => set.default.pairs[0]!.fingerprint256,
    contextFor: (servername) => set.contextFor(servername),
    acmeChallenges,
    acme,
    ticketKeys,
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    start() {
      acme?.start();
    },
    async close() {
      files?.close();
      ticketKeys.stop();
      await acme?.stop();
      listeners.clear();
    },
  };
  return provider;
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
    const secure = new tls.TLSSocket(socket, { isServer: true, ...provider.socketOptions() });
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
