import { createHash } from 'node:crypto';
import { readFileSync, statSync, watch, type FSWatcher } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ConfigError } from '../config.js';
import type { Logger } from '../log.js';
import { loadPair, type LoadedPair } from './certificates.js';

/** Quiet time after a file-system event before the files are re-read (editors write in several steps). */
const DEBOUNCE_MS = 200;
/** Polling fallback for file systems whose change events do not arrive (network mounts, some bind mounts). */
const POLL_MS = 1500;

export interface PairPaths {
  certPath: string;
  keyPath: string;
}

/** The configured pairs: `tls.cert` and `tls.key` are comma-separated lists, paired in order. */
export function configuredPairs(cert: string, key: string): PairPaths[] {
  const split = (s: string): string[] => s.split(',').map((p) => p.trim()).filter((p) => p !== '');
  const certs = split(cert);
  const keys = split(key);
  if (certs.length !== keys.length) {
    throw new ConfigError(certs.length < keys.length ? 'tls.cert' : 'tls.key', `tls.cert lists ${certs.length} file(s) and tls.key ${keys.length}: they pair up in order`);
  }
  return certs.map((c, i) => ({ certPath: resolve(c), keyPath: resolve(keys[i]!) }));
}

function fileSignature(path: string): string {
  try {
    const s = statSync(path);
    return `${s.ino}:${s.size}:${s.mtimeMs}`;
  } catch {
    return 'missing';
  }
}

export function describePair(pair: LoadedPair): Record<string, string> {
  return { subject: pair.subject, names: pair.names.join(' '), keyType: pair.keyType, validTo: new Date(pair.notAfter).toISOString(), fingerprint256: pair.fingerprint256 };
}

interface Watched extends PairPaths {
  current: LoadedPair;
  seen: string;
  lastFailure: string;
}

/**
 * Certificate and key files from the configuration, kept current: the
 * directories are watched (so tools that replace files by rename are seen),
 * with a slow stat poll as a fallback, and a pair whose files changed is
 * re-read and swapped in without a restart. A new pair that does not load is
 * logged once and the old one kept.
 */
export class CertificateFiles {
  private readonly watched: Watched[];
  private readonly watchers: FSWatcher[] = [];
  private readonly poll: NodeJS.Timeout;
  private debounce: NodeJS.Timeout | undefined;
  private closed = false;

  /** Throws ConfigError naming tls.cert or tls.key when a configured pair cannot be used at start-up. */
  constructor(
    paths: PairPaths[],
    private readonly log: Logger,
    private readonly onChange: () => void,
  ) {
    this.watched = paths.map((p) => {
      const certPem = read(p.certPath, 'tls.cert');
      const keyPem = read(p.keyPath, 'tls.key');
      let current: LoadedPair;
      try {
        current = loadPair({ certPem, keyPem });
      } catch (err) {
        throw new ConfigError('tls.cert', `${p.certPath} with ${p.keyPath} is not a usable certificate and key: ${(err as Error).message}`);
      }
      log.info({ certPath: p.certPath, ...describePair(current) }, 'loaded TLS certificate');
      return { ...p, current, seen: this.signature(p), lastFailure: '' };
    });
    for (const dir of new Set(paths.flatMap((p) => [dirname(p.certPath), dirname(p.keyPath)]))) {
      try {
        const w = watch(dir, { persistent: false }, () => this.schedule());
        w.on('error', (err) => log.debug({ dir, err: err.message }, 'certificate directory watch failed; polling continues'));
        this.watchers.push(w);
      } catch (err) {
        log.debug({ dir, err: (err as Error).message }, 'cannot watch certificate directory; polling only');
      }
    }
    this.poll = setInterval(() => {
      if (this.watched.some((w) => this.signature(w) !== w.seen)) this.schedule();
    }, POLL_MS);
    this.poll.unref();
  }

  pairs(): LoadedPair[] {
    return this.watched.map((w) => w.current);
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.debounce);
    clearInterval(this.poll);
    for (const w of this.watchers) w.close();
  }

  private signature(p: PairPaths): string {
    return `${fileSignature(p.certPath)}|${fileSignature(p.keyPath)}`;
  }

  private schedule(): void {
    if (this.closed) return;
    clearTimeout(this.debounce);
    this.debounce = setTimeout(() => this.reload(), DEBOUNCE_MS);
    this.debounce.unref();
  }

  private reload(): void {
    if (this.closed) return;
    let changed = false;
    for (const w of this.watched) if (this.reloadPair(w)) changed = true;
    if (changed) this.onChange();
  }

  /** Re-reads one pair; true when a new valid pair replaced the old one. */
  private reloadPair(w: Watched): boolean {
    w.seen = this.signature(w);
    let certPem: string;
    let keyPem: string;
    try {
      certPem = readFileSync(w.certPath, 'utf8');
      keyPem = readFileSync(w.keyPath, 'utf8');
    } catch (err) {
      // Mid-replacement (a rename not done yet) or deleted: keep serving what we have.
      const why = `cannot read: ${(err as Error).message}`;
      if (why !== w.lastFailure) this.log.error({ certPath: w.certPath, keyPath: w.keyPath, err: (err as Error).message }, 'TLS certificate files unreadable; keeping the current certificate');
      w.lastFailure = why;
      return false;
    }
    if (certPem === w.current.certPem && keyPem === w.current.keyPem) return false;
    const digest = createHash('sha256').update(certPem).update('\0').update(keyPem).digest('hex');
    try {
      w.current = loadPair({ certPem, keyPem });
    } catch (err) {
      // Logged once per distinct bad content: the poll would otherwise repeat it.
      if (digest !== w.lastFailure) this.log.error({ certPath: w.certPath, keyPath: w.keyPath, err: (err as Error).message }, 'new TLS certificate or key is invalid; keeping the current certificate');
      w.lastFailure = digest;
      return false;
    }
    w.lastFailure = '';
    this.log.info({ certPath: w.certPath, ...describePair(w.current) }, 'TLS certificate reloaded');
    return true;
  }
}

function read(path: string, setting: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(setting, `cannot read ${path}: ${(err as Error).message}`);
  }
}
