import { eventsOf } from '../events/registry.js';
import { hashKey, isWellFormedKey } from '../keys/format.js';
import { isActive, type KeyRecord } from '../keys/record.js';
import { revokeStoredKey } from '../services/key-writes.js';
import type { KeyStore } from '../store/types.js';

/** One string a scanner found, as GitHub's secret-scanning partner program sends it. */
export interface LeakFinding {
  token: string;
  type: string;
  url: string;
  source: string;
}

/**
 * GitHub's answer format for one finding: `true_positive` when the string
 * was a live Keygate key (now revoked), `false_positive` otherwise. The
 * string itself is never echoed, only its SHA-256 (hex).
 */
export interface LeakVerdict {
  token_hash: string;
  token_type: string;
  label: 'true_positive' | 'false_positive';
  url: string;
}

/** Where a leak is logged: pino or Fastify's request logger. */
interface WarnLog {
  warn(fields: Record<string, unknown>, message: string): void;
}

/** Findings in one report at most; GitHub batches far fewer. */
export const MAX_FINDINGS = 1000;
const MAX_TOKEN = 1024;
const MAX_TEXT = 2048;

/** The report as received, checked: an array of findings with bounded strings; a message naming the problem otherwise. */
export function parseLeakReport(body: unknown): { findings: LeakFinding[] } | { problem: string } {
  if (!Array.isArray(body)) return { problem: 'the report must be a JSON array of {token, type, url, source}' };
  if (body.length > MAX_FINDINGS) return { problem: `at most ${MAX_FINDINGS} findings per report` };
  const findings: LeakFinding[] = [];
  for (const [i, item] of body.entries()) {
    const o = item as Record<string, unknown> | null;
    if (typeof o !== 'object' || o === null || typeof o.token !== 'string' || o.token.length === 0 || o.token.length > MAX_TOKEN) {
      return { problem: `finding ${i + 1}: "token" must be a string of 1 to ${MAX_TOKEN} characters` };
    }
    const text = (field: string): string | null => {
      const v = o[field];
      if (v === undefined || v === null) return '';
      return typeof v === 'string' && v.length <= MAX_TEXT ? v : null;
    };
    const [type, url, source] = [text('type'), text('url'), text('source')];
    if (type === null || url === null || source === null) return { problem: `finding ${i + 1}: "type", "url" and "source" must be strings of at most ${MAX_TEXT} characters` };
    findings.push({ token: o.token, type, url, source });
  }
  return { findings };
}

/**
 * Acts on a verified report: each string that is a Keygate key is looked up
 * by its hash; a live key is revoked at once (the store's revocation event
 * ends its sessions on every instance) and `key.leaked` is raised with where
 * it was found. A key already revoked or expired is reported as leaked too
 * (its owner should know) but answered `false_positive`, as is a canary (it
 * grants nothing, so it stays where it was planted). Garbage costs no lookup.
 */
export async function actOnLeakReport(store: KeyStore, findings: readonly LeakFinding[], logger: WarnLog, now = new Date()): Promise<LeakVerdict[]> {
  const at = now.toISOString();
  const seen = new Map<string, 'true_positive' | 'false_positive'>();
  const verdicts: LeakVerdict[] = [];
  for (const f of findings) {
    const tokenHash = hashKey(f.token);
    let label = seen.get(tokenHash);
    if (label === undefined) {
      label = await judge(store, f, logger, at, now);
      seen.set(tokenHash, label);
    }
    verdicts.push({ token_hash: tokenHash, token_type: f.type, label, url: f.url });
  }
  return verdicts;
}

async function judge(store: KeyStore, f: LeakFinding, logger: WarnLog, at: string, now: Date): Promise<'true_positive' | 'false_positive'> {
  const candidate = f.token.trim();
  if (!isWellFormedKey(candidate)) return 'false_positive';
  const key = await store.findByHash(hashKey(candidate));
  if (!key) return 'false_positive';
  const live = isActive(key, now) && !key.canary;
  let revoked: KeyRecord = key;
  if (live) revoked = await revokeStoredKey(store, key.id, at, 'leaked');
  const where = { url: f.url, source: f.source, type: f.type };
  logger.warn({ leak: true, keyId: key.id, keyName: key.name, account: key.account, wasLive: live, canary: key.canary === true, ...where }, live ? 'leaked key revoked' : 'leaked key reported (not live)');
  eventsOf(store).raise('key.leaked', { account: key.account, keyId: key.id, time: at, data: { name: key.name, ...where, wasLive: live, revokedAt: revoked.revokedAt, ...(key.canary && { canary: true }) } });
  return live ? 'true_positive' : 'false_positive';
}
