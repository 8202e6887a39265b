import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { ConfigError, DEFAULTS, knownEnvVars, loadConfig, SPECS } from '../src/config.js';
import { parseDuration, parseExpiry } from '../src/duration.js';

describe('config', () => {
  it('has a spec for every default leaf and a default for every spec', () => {
    const leaves: string[] = [];
    const walk = (o: Record<string, unknown>, p = ''): void => {
      for (const [k, v] of Object.entries(o)) {
        const key = p ? `${p}.${k}` : k;
        if (v && typeof v === 'object' && !Array.isArray(v)) walk(v as Record<string, unknown>, key);
        else leaves.push(key);
      }
    };
    walk(DEFAULTS as unknown as Record<string, unknown>);
    expect(leaves.sort()).toEqual(Object.keys(SPECS).sort());
    expect(new Set(knownEnvVars()).size).toBe(knownEnvVars().length);
  });

  it('defaults: SQLite under data/, control plane on 127.0.0.1:8080, dev mail ports', () => {
    const c = loadConfig({ env: {} });
    expect(c.db.path).toBe('data/keygate.db');
    expect(c.dbs.redis).toBe('');
    expect([c.http.host, c.http.port]).toEqual(['127.0.0.1', 8080]);
    expect([c.smtp.port, c.smtp.securePort, c.imap.port, c.imap.securePort, c.pop3.port, c.pop3.securePort]).toEqual([2587, 2465, 2143, 2993, 2110, 2995]);
    expect(c.public.imap.serverName).toBe('localhost');
  });

  it('connection and session limits: defaults, variables, and a handshake timeout of 0 refused', () => {
    const c = loadConfig({ env: {} });
    expect([c.tls.handshakeTimeout, c.limits.connectionsPerIp, c.limits.connectionsPerListener, c.sessions.recheckInterval]).toEqual([5000, 50, 1000, 30_000]);
    const e = loadConfig({ env: { KEYGATE_TLS_HANDSHAKE_TIMEOUT: '2s', KEYGATE_LIMITS_CONNECTIONS_PER_LISTENER: '10', KEYGATE_SESSIONS_RECHECK_INTERVAL: '1m' } });
    expect([e.tls.handshakeTimeout, e.limits.connectionsPerListener, e.sessions.recheckInterval]).toEqual([2000, 10, 60_000]);
    expect(() => loadConfig({ env: {}, flags: { 'tls.handshakeTimeout': '0s' } })).toThrow(/tls\.handshakeTimeout/);
  });

  it('precedence: defaults < file < env < flags', () => {
    const dir = mkdtempSync(join(tmpdir(), 'keygate-config-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'c.json');
    writeFileSync(file, JSON.stringify({ http: { port: 1111, host: '127.0.0.2' }, log: { level: 'warn' }, db: { path: '/f.db' } }));
    const c = loadConfig({ file, env: { KEYGATE_HTTP_PORT: '2222', KEYGATE_LOG_LEVEL: 'debug' }, flags: { 'http.port': '3333' } });
    expect(c.http.port).toBe(3333);
    expect(c.log.level).toBe('debug');
    expect(c.http.host).toBe('127.0.0.2');
    expect(c.db.path).toBe('/f.db');
    expect(loadConfig({ env: { KEYGATE_REDIS_URL: 'redis://127.0.0.1:6379' } }).dbs.redis).toBe('redis://127.0.0.1:6379');
    expect(loadConfig({ env: {}, flags: { 'auth.failureDelay': '250ms' } }).auth.failureDelay).toBe(250);
  });

  it.each([
    [{ env: { KEYGATE_HTTP_PORT: 'eighty' } }, 'http.port'],
    [{ env: { KEYGATE_HTTP_PORT: '70000' } }, 'http.port'],
    [{ env: { KEYGATE_LOG_LEVEL: 'loud' } }, 'log.level'],
    [{ env: { KEYGATE_IMAP_ENABLED: 'perhaps' } }, 'imap.enabled'],
    [{ env: { KEYGATE_AUTH_FAILURE_DELAY: 'soon' } }, 'auth.failureDelay'],
    [{ env: { KEYGATE_REDIS_URL: 'http://x' } }, 'dbs.redis'],
    [{ env: {}, flags: { 'no.such': '1' } }, 'no.such'],
    [{ env: { KEYGATE_TLS_CERT: '/x.crt' } }, 'tls.key'],
  ])('refuses %j naming %s', (opts, setting) => {
    expect(() => loadConfig(opts)).toThrow(ConfigError);
    try {
      loadConfig(opts);
    } catch (err) {
      expect((err as ConfigError).setting).toBe(setting);
      expect((err as Error).message).toContain(setting);
    }
  });

  it('ACME, HTTPS and ticket settings: defaults, shortcuts, and each bad value named', () => {
    const c = loadConfig({ env: {} });
    expect(c.http.tls).toBe(false);
    expect(c.tls.ticketKeyRotation).toBe(12 * 60 * 60_000);
    expect(c.tls.acme).toMatchObject({ directory: '', challenge: 'http-01' });
    const acme = { hostname: 'mail.example.com', 'tls.acme.directory': 'letsencrypt' };
    expect(loadConfig({ env: { KEYGATE_ACME_NAMES: 'imap.example.com, smtp.example.com', KEYGATE_HTTP_TLS: 'true' }, flags: acme }).tls.acme.names).toBe('imap.example.com, smtp.example.com');
    const bad = (flags: Record<string, unknown>, env: NodeJS.ProcessEnv = {}): string | undefined => {
      try {
        loadConfig({ env, flags });
        return undefined;
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        return (err as ConfigError).setting;
      }
    };
    expect(bad({ 'tls.acme.directory': 'letsencrypt' })).toBe('hostname'); // localhost cannot be validated
    expect(bad({ ...acme, hostname: '192.0.2.1' })).toBe('hostname');
    expect(bad({ ...acme, 'tls.acme.names': 'ok.example.com,*.example.com' })).toBe('tls.acme.names');
    expect(bad({ ...acme, 'tls.acme.directory': 'http://ca.example.com/dir' })).toBe('tls.acme.directory');
    expect(bad({ ...acme, 'tls.acme.directory': 'no such ca' })).toBe('tls.acme.directory');
    expect(bad({ ...acme, 'tls.acme.challenge': 'dns-01' })).toBe('tls.acme.challenge');
    expect(bad({ ...acme, 'tls.acme.eabKid': 'kid' })).toBe('tls.acme.eabHmacKey');
    expect(bad({ ...acme, 'tls.acme.email': 'not an address' })).toBe('tls.acme.email');
    expect(bad({ 'tls.ticketKeyRotation': '10s' })).toBe('tls.ticketKeyRotation');
    expect(bad({ 'tls.ticketKeyRotation': '8d' })).toBe('tls.ticketKeyRotation');
    expect(bad({ ...acme, 'tls.acme.directory': 'https://ca.example.com/directory', 'tls.acme.challenge': 'tls-alpn-01' })).toBeUndefined();
    // The EAB HMAC key is a secret: never a command-line flag.
    expect(SPECS['tls.acme.eabHmacKey']!.secret).toBe(true);
  });

  it('a missing or malformed file is named', () => {
    expect(() => loadConfig({ file: '/nonexistent/keygate.json', env: {} })).toThrow(/keygate\.json/);
    const dir = mkdtempSync(join(tmpdir(), 'keygate-config-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, 'bad.json'), '{ nope');
    expect(() => loadConfig({ file: join(dir, 'bad.json'), env: {} })).toThrow(/bad\.json/);
  });

  it('durations and expiries', () => {
    expect(parseDuration('1s')).toBe(1000);
    expect(parseDuration('15m')).toBe(900_000);
    expect(parseDuration('250')).toBe(250);
    expect(parseDuration('1 fortnight')).toBeNull();
    const now = new Date('2026-01-01T00:00:00Z');
    expect(parseExpiry('30d', now)).toBe('2026-01-31T00:00:00.000Z');
    expect(parseExpiry('2027-02-03', now)).toBe('2027-02-03T00:00:00.000Z');
    expect(parseExpiry('2027-02-03T04:05:06Z', now)).toBe('2027-02-03T04:05:06.000Z');
    expect(parseExpiry('tomorrow', now)).toBeNull();
    expect(parseExpiry('2027-13-45', now)).toBeNull();
  });
});
