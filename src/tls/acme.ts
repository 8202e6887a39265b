import { createHash, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import tls from 'node:tls';
import * as acme from 'acme-client';
import { ConfigError, type AcmeConfig } from '../config.js';
import type { Logger } from '../log.js';
import type { KeyStore } from '../store/types.js';
import type { AcmeChallenges } from './acme-challenges.js';
import { acmeNames, directoryUrl } from './acme-settings.js';
import { loadPair, type LoadedPair } from './certificates.js';

export type AcmeChallengeType = 'http-01' | 'tls-alpn-01';

export interface AcmeSettings {
  /** Directory URL. */
  directory: string;
  /** Contact address for the account; empty = none. */
  email: string;
  /** Names the certificate covers, the host name first. */
  names: string[];
  challenge: AcmeChallengeType;
  /** PEM of a CA to trust (besides the system's) for the directory's own HTTPS: a company's CA. */
  directoryCa: string;
  /** External account binding (ZeroSSL, many company CAs); null = none. */
  eab: { kid: string; hmacKey: string } | null;
}

export interface AcmeTiming {
  /** First wait after a failed attempt; doubles with each failure up to maxRetryMs. */
  retryMs: number;
  maxRetryMs: number;
  /** How often the store is re-read for a certificate another instance renewed. */
  rescanMs: number;
  /** Longest time one instance holds the order lock (a crashed holder frees it then). */
  lockMs: number;
  now(): number;
}

export const DEFAULT_ACME_TIMING: AcmeTiming = {
  retryMs: 60_000,
  maxRetryMs: 6 * 60 * 60_000,
  rescanMs: 10 * 60_000,
  lockMs: 10 * 60_000,
  now: Date.now,
};

/** Timeout of one request to the CA: a CA that hangs is a CA that is down. */
const REQUEST_TIMEOUT_MS = 30_000;

export type AcmeStore = Pick<KeyStore, 'putValue' | 'getValue' | 'deleteValue'>;

/** When to renew: once a third of the certificate's lifetime is left (30 days of Let's Encrypt's 90). */
export function renewalTime(pair: Pick<LoadedPair, 'notBefore' | 'notAfter'>): number {
  return pair.notAfter - (pair.notAfter - pair.notBefore) / 3;
}

const shortHash = (text: string): string => createHash('sha256').update(text).digest('hex').slice(0, 16);

/**
 * Gets and renews a certificate from an ACME CA, shared by every instance
 * through the key store.
 *
 * The account key and the certificate (chain and key) live in the store, so
 * all instances serve the same certificate. Each instance re-reads the store
 * every `rescanMs` and at the renewal time; the one that finds renewal due
 * takes a lock (`onlyIfAbsent`), re-reads (another may have just finished),
 * orders, stores the result and releases the lock; the others pick the new
 * certificate up from the store. A failed attempt (the CA down, a challenge
 * refused) leaves the current certificate in service, logs one line and is
 * retried with a growing wait.
 */
export class AcmeManager {
  private cert: LoadedPair | null = null;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private failures = 0;
  private stopped = false;
  private readonly id: string;

  constructor(
    private readonly settings: AcmeSettings,
    private readonly store: AcmeStore,
    private readonly challenges: AcmeChallenges,
    private readonly log: Logger,
    /** Called with each certificate this instance starts serving (issued here or found in the store). */
    private readonly onCertificate: (pair: LoadedPair) => void,
    private readonly timing: AcmeTiming = DEFAULT_ACME_TIMING,
  ) {
    this.id = shortHash(`${settings.directory}\n${[...settings.names].sort().join(' ')}`);
    configureHttp(settings.directoryCa);
  }

  /** The certificate in service, or null before the first one. */
  current(): LoadedPair | null {
    return this.cert;
  }

  /** Serves the stored certificate, if there is one, before anything listens. Never throws. */
  async load(): Promise<void> {
    try {
      this.adopt(await this.stored());
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'cannot read the ACME certificate from the store; checking again shortly');
    }
  }

  /** Begins checking and ordering (call once the listeners that answer challenges are up). */
  start(): void {
    this.schedule(0);
  }

  /** Stops; waits (briefly) for an order in flight so the store is not closed under it. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.running) await Promise.race([this.running, new Promise((r) => setTimeout(r, 5000).unref())]);
  }

  /** One check: adopt a newer stored certificate; order when renewal is due and the lock is ours. */
  check(): Promise<void> {
    this.running ??= this.runCheck().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.check(), Math.max(0, Math.min(ms, 2 ** 31 - 1)));
    this.timer.unref();
  }

  private due(now: number): boolean {
    return this.cert === null || now >= renewalTime(this.cert);
  }

  private async runCheck(): Promise<void> {
    let next: number;
    try {
      this.adopt(await this.stored());
      if (this.due(this.timing.now())) await this.renewUnderLock();
      this.failures = 0;
      next = this.cert && !this.due(this.timing.now()) ? Math.min(this.timing.rescanMs, renewalTime(this.cert) - this.timing.now()) : this.timing.retryMs;
    } catch (err) {
      // Shutting down: the store may be closing under an attempt; nothing to retry or report.
      if (this.stopped) return;
      next = err instanceof ReportedFailure ? err.retryInMs : await this.reportFailure(err);
    }
    this.schedule(next);
  }

  /** One warn line per failed attempt (the certificate in service, if any, stays); returns the wait before the next. */
  private async reportFailure(err: unknown): Promise<number> {
    this.failures++;
    const next = Math.min(this.timing.retryMs * 2 ** (this.failures - 1), this.timing.maxRetryMs);
    const reason = await describeError(err, this.settings.directory);
    this.log.warn(
      { directory: this.settings.directory, names: this.settings.names, err: reason, attempt: this.failures, retryInMs: next, serving: this.cert?.fingerprint256 ?? null },
      'ACME: could not get a certificate; the current one stays in service',
    );
    return next;
  }

  private async renewUnderLock(): Promise<void> {
    const lock = `lock:acme:${this.id}`;
    const holder = randomUUID();
    if (!(await this.store.putValue(lock, holder, this.timing.lockMs, { onlyIfAbsent: true }))) {
      this.log.debug('ACME: another instance is ordering; waiting for its certificate');
      return;
    }
    try {
      // Another instance may have stored a fresh certificate while we took the lock.
      this.adopt(await this.stored());
      if (!this.due(this.timing.now()) || this.stopped) return;
      const pair = await this.order();
      await this.store.putValue(`acme:cert:${this.id}`, JSON.stringify({ certPem: pair.certPem, keyPem: pair.keyPem }), Math.max(1000, pair.notAfter - this.timing.now()));
      this.adopt(pair, 'ACME certificate issued');
    } catch (err) {
      if (this.stopped) throw err;
      // Reported while the lock is still ours, so that the log of several
      // instances reads in order: a failure, then another instance's order.
      throw new ReportedFailure(await this.reportFailure(err));
    } finally {
      await this.store.deleteValue(lock, holder).catch(() => {});
    }
  }

  /** The stored certificate when it is usable and newer than ours. */
  private async stored(): Promise<LoadedPair | null> {
    const text = await this.store.getValue(`acme:cert:${this.id}`);
    if (text === null) return null;
    try {
      const pair = loadPair(JSON.parse(text) as { certPem: string; keyPem: string });
      return pair.notAfter > this.timing.now() ? pair : null;
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'ACME: the stored certificate is unusable; ordering a new one');
      return null;
    }
  }

  private adopt(pair: LoadedPair | null, message = 'ACME certificate loaded from the store'): void {
    if (!pair || this.stopped) return;
    if (this.cert && (this.cert.fingerprint256 === pair.fingerprint256 || this.cert.notAfter >= pair.notAfter)) return;
    this.cert = pair;
    this.log.info({ names: pair.names, validTo: new Date(pair.notAfter).toISOString(), renewAt: new Date(renewalTime(pair)).toISOString(), fingerprint256: pair.fingerprint256 }, message);
    this.onCertificate(pair);
  }

  private async order(): Promise<LoadedPair> {
    const { settings } = this;
    this.log.info({ directory: settings.directory, names: settings.names, challenge: settings.challenge }, 'ACME: ordering a certificate');
    const client = new acme.Client({
      directoryUrl: settings.directory,
      accountKey: await this.accountKey(),
      ...(settings.eab ? { externalAccountBinding: settings.eab } : {}),
      // The CA answers a challenge within seconds; poll every second or so, not every 5-30 s.
      backoffAttempts: 10,
      backoffMin: 1000,
      backoffMax: 10_000,
    });
    const key = await acme.crypto.createPrivateEcdsaKey('P-256');
    const [, csr] = await acme.crypto.createCsr({ commonName: settings.names[0]!, altNames: settings.names }, key);
    const certPem = await client.auto({
      csr,
      ...(settings.email ? { email: settings.email } : {}),
      // Configuring an ACME directory is agreeing to that CA's terms (documented with the setting).
      termsOfServiceAgreed: true,
      challengePriority: [settings.challenge],
      // acme-client's own pre-check resolves the names from here; the CA's view is the one that counts.
      skipChallengeVerification: true,
      challengeCreateFn: async (authz, challenge, keyAuthorization) => {
        if ((challenge.type as string) === 'http-01') await this.challenges.putHttp(challenge.token, keyAuthorization);
        else if ((challenge.type as string) === 'tls-alpn-01') {
          const [alpnKey, alpnCert] = await acme.crypto.createAlpnCertificate(authz, keyAuthorization, await acme.crypto.createPrivateEcdsaKey('P-256'));
          await this.challenges.putAlpn(authz.identifier.value, alpnCert.toString(), alpnKey.toString());
        } else throw new Error(`unsupported challenge ${challenge.type}`);
      },
      challengeRemoveFn: async (authz, challenge) => {
        if ((challenge.type as string) === 'http-01') await this.challenges.removeHttp(challenge.token);
        else if ((challenge.type as string) === 'tls-alpn-01') await this.challenges.removeAlpn(authz.identifier.value);
      },
    });
    return loadPair({ certPem, keyPem: key.toString() });
  }

  /** The account key for this directory, made once and shared through the store. */
  private async accountKey(): Promise<string> {
    const name = `acme:account:${shortHash(this.settings.directory)}`;
    const existing = await this.store.getValue(name);
    if (existing !== null) return existing;
    const made = (await acme.crypto.createPrivateEcdsaKey('P-256')).toString();
    if (await this.store.putValue(name, made, null, { onlyIfAbsent: true })) return made;
    const winner = await this.store.getValue(name);
    if (winner === null) throw new Error('the ACME account key vanished from the store');
    return winner;
  }
}

/** A failed order already logged under the lock; carries the wait before the next attempt. */
class ReportedFailure extends Error {
  constructor(readonly retryInMs: number) {
    super('ACME order failed (reported)');
  }
}

/**
 * A one-line reason: acme-client's errors carry the CA's problem detail. A
 * network error (no response at all) reaches us only as acme-client's own
 * TypeError (its axios interceptor reads `response.config` of a response that
 * does not exist), so the directory is probed once to say what is wrong.
 */
async function describeError(err: unknown, directory: string): Promise<string> {
  const e = err as Error & { code?: string };
  if (e instanceof TypeError && /reading 'config'/.test(e.message)) return `cannot reach the ACME CA: ${await probe(directory)}`;
  return [e.code, e.message].filter(Boolean).join(': ') || String(err);
}

function probe(url: string): Promise<string> {
  return new Promise((resolve) => {
    const req = https.get(url, { agent: acme.axios.defaults.httpsAgent as https.Agent | undefined, timeout: 10_000 }, (res) => {
      res.resume();
      resolve(`a request failed without an answer (the directory itself answers HTTP ${res.statusCode})`);
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('no answer within 10 s'), { code: 'ETIMEDOUT' })));
    req.on('error', (err: Error & { code?: string }) => resolve([err.code, err.message].filter(Boolean).join(': ')));
  });
}

let configuredCa: string | null = null;

/**
 * acme-client talks to the CA through one shared axios instance: give it a
 * request timeout, leave retrying to AcmeManager (acme-client's own retry of
 * a refused connection or a 5xx waits up to 75 s inside one attempt, unseen
 * and unlogged), and for a CA whose directory is served with a private CA's
 * certificate, trust that CA besides the system's roots.
 */
function configureHttp(directoryCa: string): void {
  if (configuredCa === directoryCa) return;
  configuredCa = directoryCa;
  acme.axios.defaults.timeout = REQUEST_TIMEOUT_MS;
  (acme.axios.defaults as { acmeSettings?: { retryMaxAttempts: number } }).acmeSettings!.retryMaxAttempts = 0;
  acme.axios.defaults.httpsAgent = directoryCa === '' ? undefined : new https.Agent({ ca: [...tls.rootCertificates, directoryCa], keepAlive: false });
}

/** The ACME manager's settings from the configuration; reads tls.acme.directoryCa. */
export function acmeSettings(hostname: string, acme: AcmeConfig): AcmeSettings {
  let directoryCa = '';
  if (acme.directoryCa !== '') {
    try {
      directoryCa = readFileSync(acme.directoryCa, 'utf8');
    } catch (err) {
      throw new ConfigError('tls.acme.directoryCa', `cannot read ${acme.directoryCa}: ${(err as Error).message}`);
    }
  }
  return {
    directory: directoryUrl(acme.directory),
    email: acme.email,
    names: acmeNames(hostname, acme.names),
    challenge: acme.challenge as AcmeChallengeType,
    directoryCa,
    eab: acme.eabKid !== '' ? { kid: acme.eabKid, hmacKey: acme.eabHmacKey } : null,
  };
}
