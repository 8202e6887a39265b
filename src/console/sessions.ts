import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { KeyStore } from '../store/types.js';

/** Who a console session acts as: an administrator key (by id, re-checked every request) or an account holder. */
export type SessionSubject =
  | { kind: 'admin'; keyId: string }
  | { kind: 'account'; account: string; method: 'password' | 'link' | 'oidc' };

export interface ConsoleSession {
  subject: SessionSubject;
  /** Synchronizer token: state-changing requests carry it in `X-CSRF-Token`. */
  csrf: string;
  createdAt: number;
  lastSeenAt: number;
  /** Absolute end, ms since the epoch. */
  expiresAt: number;
}

export interface SessionTimeouts {
  idleMs: number;
  absoluteMs: number;
}

/** A session id is 256 random bits, base64url; anything else is not looked up. */
const ID_RE = /^[A-Za-z0-9_-]{43}$/;
/** Refresh the idle deadline at most this often (a write per request would be wasteful). */
const REFRESH_EVERY_MS = 30_000;

/**
 * Console sessions, server-side, in the key store's shared values (SQLite or
 * Redis), so every instance sees the same sessions and signing out ends one
 * everywhere. The store holds only SHA-256(session id): a leaked store dump
 * cannot be replayed as cookies. The value's lifetime is the idle timeout,
 * capped by the absolute one.
 */
export class ConsoleSessions {
  constructor(
    private readonly store: KeyStore,
    private readonly timeouts: SessionTimeouts,
  ) {}

  /** Starts a session; resolves with the cookie value (the only copy of the id) and the session. */
  async create(subject: SessionSubject, now = Date.now()): Promise<{ id: string; session: ConsoleSession }> {
    const id = randomBytes(32).toString('base64url');
    const session: ConsoleSession = { subject, csrf: randomBytes(32).toString('base64url'), createdAt: now, lastSeenAt: now, expiresAt: now + this.timeouts.absoluteMs };
    await this.store.putValue(storeName(id), JSON.stringify(session), this.ttl(session, now));
    return { id, session };
  }

  /** The live session for a cookie value, its idle deadline moved on; null when unknown, idle too long or past its end. */
  async get(id: string, now = Date.now()): Promise<ConsoleSession | null> {
    if (!ID_RE.test(id)) return null;
    const raw = await this.store.getValue(storeName(id));
    if (raw === null) return null;
    const session = parse(raw);
    if (!session || now >= session.expiresAt || now - session.lastSeenAt >= this.timeouts.idleMs) {
      await this.store.deleteValue(storeName(id));
      return null;
    }
    if (now - session.lastSeenAt >= Math.min(REFRESH_EVERY_MS, this.timeouts.idleMs / 4)) {
      const next = { ...session, lastSeenAt: now };
      await this.store.putValue(storeName(id), JSON.stringify(next), this.ttl(next, now));
      return next;
    }
    return session;
  }

  /** Ends a session on every instance. */
  async end(id: string): Promise<void> {
    if (ID_RE.test(id)) await this.store.deleteValue(storeName(id));
  }

  private ttl(session: ConsoleSession, now: number): number {
    return Math.max(1, Math.min(this.timeouts.idleMs, session.expiresAt - now));
  }
}

/** Constant-time comparison of a presented CSRF token with the session's. */
export function csrfMatches(session: ConsoleSession, presented: unknown): boolean {
  if (typeof presented !== 'string') return false;
  const a = Buffer.from(presented);
  const b = Buffer.from(session.csrf);
  return a.length === b.length && timingSafeEqual(a, b);
}

function storeName(id: string): string {
  return `console-session:${createHash('sha256').update(id).digest('hex')}`;
}

function parse(raw: string): ConsoleSession | null {
  try {
    const v = JSON.parse(raw) as ConsoleSession;
    return typeof v.csrf === 'string' && typeof v.expiresAt === 'number' && typeof v.lastSeenAt === 'number' && v.subject ? v : null;
  } catch {
    return null;
  }
}
