import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { parse as parsePlist, type PlistValue } from 'plist';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { issueKey } from '../../src/services/keys.js';
import { freePort } from '../helpers/free-port.js';
import { cmsVerify, tempDir } from './helpers.js';

/*
 * Issue 13, item 4: moving a listener (KEYGATE_IMAP_SECURE_PORT=22993 and the
 * like) moves what every client-facing surface says — autoconfig,
 * Autodiscover, the Apple profile and connectionInfo — unless public.* says
 * otherwise. A running Keygate on free ports, asked over HTTP.
 */

type Dict = { [key: string]: PlistValue };
const haveOpenssl = spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;
const ACCOUNT = 'alice@example.com';

interface Running {
  server: RunningServer;
  base: string;
  key: string;
}

async function distinctFreePorts(n: number): Promise<number[]> {
  const out = new Set<number>();
  while (out.size < n) out.add(await freePort());
  return [...out];
}

/** A Keygate whose listeners are moved through the environment only, as an operator would. */
async function start(dir: string, extraEnv: Record<string, string> = {}): Promise<Running & { ports: Record<string, number> }> {
  const [http, smtp, smtps, imap, imaps, pop3, pop3s] = (await distinctFreePorts(7)) as [number, number, number, number, number, number, number];
  const ports = { smtp, smtps, imap, imaps, pop3, pop3s };
  const env: Record<string, string> = {
    KEYGATE_DB_PATH: join(dir, `keygate-${http}.db`),
    KEYGATE_TLS_DIR: join(dir, 'certs'),
    KEYGATE_HOSTNAME: 'mail.example.test',
    KEYGATE_HTTP_PORT: String(http),
    KEYGATE_SMTP_PORT: String(smtp),
    KEYGATE_SMTP_SECURE_PORT: String(smtps),
    KEYGATE_IMAP_PORT: String(imap),
    KEYGATE_IMAP_SECURE_PORT: String(imaps),
    KEYGATE_POP3_PORT: String(pop3),
    KEYGATE_POP3_SECURE_PORT: String(pop3s),
    // In front of a mail server (never reached here): a protocol with no upstream is not advertised at all.
    KEYGATE_UPSTREAM_IMAP_HOST: 'mail.internal',
    KEYGATE_UPSTREAM_POP3_HOST: 'mail.internal',
    KEYGATE_UPSTREAM_SMTP_HOST: 'mail.internal',
    KEYGATE_UPSTREAM_MASTER_USER: 'keygate',
    ...extraEnv,
  };
  const server = await startServer(loadConfig({ env }), createLogger('silent'));
  const key = (await issueKey(server.store, 'operator', { name: 'laptop', scopes: ['app'], account: ACCOUNT })).key;
  return { server, base: `http://127.0.0.1:${http}`, key, ports };
}

async function surfaces(r: Running): Promise<{ autoconfig: string; autodiscover: string; profile: Dict | null; connectionInfo: Record<string, { serverName: string; port: number; securePort: number; enabled: boolean }> }> {
  const autoconfig = await (await fetch(`${r.base}/mail/config-v1.1.xml?emailaddress=${ACCOUNT}`)).text();
  const autodiscover = await (
    await fetch(`${r.base}/autodiscover/autodiscover.xml`, {
      method: 'POST',
      headers: { 'content-type': 'text/xml' },
      body: `<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>${ACCOUNT}</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>`,
    })
  ).text();
  const listed = (await (await fetch(`${r.base}/api/smtp-credentials`, { headers: { authorization: `Bearer ${r.key}` } })).json()) as { connectionInfo: Record<string, { serverName: string; port: number; securePort: number; enabled: boolean }> };
  let profile: Dict | null = null;
  if (haveOpenssl) {
    const res = await fetch(`${r.base}/api/smtp-credentials/mobile`, {
      method: 'POST',
      headers: { authorization: `Bearer ${r.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'Mac', platform: 'macos', deviceId: `mac-${Date.now()}`, format: 'mobileconfig' }),
    });
    expect(res.status).toBe(201);
    const verified = await cmsVerify(Buffer.from(await res.arrayBuffer()));
    expect(verified.ok, verified.stderr).toBe(true);
    profile = ((parsePlist(verified.content) as Dict).PayloadContent as Dict[])[0]!;
  }
  return { autoconfig, autodiscover, profile, connectionInfo: listed.connectionInfo };
}

/** The ports autoconfig names for a server type, in order (implicit TLS first). */
function autoconfigPorts(xml: string, kind: 'incomingServer type="imap"' | 'incomingServer type="pop3"' | 'outgoingServer type="smtp"'): number[] {
  return [...xml.matchAll(new RegExp(`<${kind}>[\\s\\S]*?<port>(\\d+)</port>`, 'g'))].map((m) => Number(m[1]));
}

/** The port Autodiscover names for a protocol. */
function autodiscoverPort(xml: string, type: 'IMAP' | 'POP3' | 'SMTP'): number {
  return Number(new RegExp(`<Type>${type}</Type>[\\s\\S]*?<Port>(\\d+)</Port>`).exec(xml)?.[1]);
}

describe('the ports clients are told follow the listeners', () => {
  const tmp = tempDir();
  let moved: Running & { ports: Record<string, number> };
  let pinned: Running & { ports: Record<string, number> };

  beforeAll(async () => {
    moved = await start(tmp.dir);
    // public.* set: clients are told those (a NAT or proxy in front), whatever the listeners are.
    pinned = await start(tmp.dir, { KEYGATE_PUBLIC_IMAP_SECURE_PORT: '993', KEYGATE_PUBLIC_SMTP_SECURE_PORT: '465', KEYGATE_PUBLIC_IMAP_HOST: 'imap.example.test' });
  });
  afterAll(async () => {
    await moved?.server.close();
    await pinned?.server.close();
    tmp.cleanup();
  });

  it('with no public.* set, every surface names the listener ports', async () => {
    const { ports } = moved;
    const s = await surfaces(moved);
    expect(s.connectionInfo.imap).toEqual({ serverName: 'mail.example.test', port: ports.imap, securePort: ports.imaps, enabled: true });
    expect(s.connectionInfo.smtp).toMatchObject({ port: ports.smtp, securePort: ports.smtps });
    expect(s.connectionInfo.pop3).toMatchObject({ port: ports.pop3, securePort: ports.pop3s });
    expect(autoconfigPorts(s.autoconfig, 'incomingServer type="imap"')).toEqual([ports.imaps, ports.imap]);
    expect(autoconfigPorts(s.autoconfig, 'incomingServer type="pop3"')).toEqual([ports.pop3s, ports.pop3]);
    expect(autoconfigPorts(s.autoconfig, 'outgoingServer type="smtp"')).toEqual([ports.smtps, ports.smtp]);
    expect(autodiscoverPort(s.autodiscover, 'IMAP')).toBe(ports.imaps);
    expect(autodiscoverPort(s.autodiscover, 'POP3')).toBe(ports.pop3s);
    expect(autodiscoverPort(s.autodiscover, 'SMTP')).toBe(ports.smtps);
    if (s.profile) {
      expect(s.profile).toMatchObject({ IncomingMailServerHostName: 'mail.example.test', IncomingMailServerPortNumber: ports.imaps, OutgoingMailServerPortNumber: ports.smtps });
    }
    // Nothing says the dev default any more.
    for (const text of [s.autoconfig, s.autodiscover, JSON.stringify(s.connectionInfo)]) expect(text).not.toMatch(/\b(2993|2465|2143|2587)\b/);
  });

  it('public.* wins where it is set; the rest still follows the listeners', async () => {
    const { ports } = pinned;
    const s = await surfaces(pinned);
    expect(s.connectionInfo.imap).toEqual({ serverName: 'imap.example.test', port: ports.imap, securePort: 993, enabled: true });
    expect(s.connectionInfo.smtp).toEqual({ serverName: 'mail.example.test', port: ports.smtp, securePort: 465, enabled: true });
    expect(autoconfigPorts(s.autoconfig, 'incomingServer type="imap"')).toEqual([993, ports.imap]);
    expect(s.autoconfig).toContain('<hostname>imap.example.test</hostname>');
    expect(autodiscoverPort(s.autodiscover, 'IMAP')).toBe(993);
    expect(autodiscoverPort(s.autodiscover, 'SMTP')).toBe(465);
    if (s.profile) expect(s.profile).toMatchObject({ IncomingMailServerHostName: 'imap.example.test', IncomingMailServerPortNumber: 993, OutgoingMailServerPortNumber: 465 });
  });
});

describe('listeners on port 0', () => {
  it('clients are told the ports the kernel picked', async () => {
    const tmp = tempDir();
    const http = await freePort();
    const zero = Object.fromEntries(['SMTP', 'IMAP', 'POP3'].flatMap((p) => [[`KEYGATE_${p}_PORT`, '0'], [`KEYGATE_${p}_SECURE_PORT`, '0']]));
    const server = await startServer(loadConfig({ env: { ...zero, KEYGATE_DB_PATH: join(tmp.dir, 'k.db'), KEYGATE_TLS_DIR: join(tmp.dir, 'certs'), KEYGATE_HTTP_PORT: String(http) } }), createLogger('silent'));
    try {
      const key = (await issueKey(server.store, 'operator', { name: 'laptop', scopes: ['app'], account: ACCOUNT })).key;
      const { connectionInfo } = (await (await fetch(`http://127.0.0.1:${http}/api/smtp-credentials`, { headers: { authorization: `Bearer ${key}` } })).json()) as { connectionInfo: Record<string, { port: number; securePort: number }> };
      for (const p of ['smtp', 'imap', 'pop3']) {
        expect(connectionInfo[p]).toMatchObject({ port: server.listeners.get(p).address().port, securePort: server.listeners.get(`${p}s`).address().port });
        expect(connectionInfo[p]!.port).toBeGreaterThan(0);
      }
    } finally {
      await server.close();
      tmp.cleanup();
    }
  });
});

describe('public settings that follow', () => {
  it('a disabled listener is not advertised unless public.<protocol>.enabled says so', () => {
    expect(loadConfig({ env: { KEYGATE_POP3_ENABLED: 'false' } }).public.pop3.enabled).toBe(false);
    expect(loadConfig({ env: { KEYGATE_POP3_ENABLED: 'false', KEYGATE_PUBLIC_POP3_ENABLED: 'true' } }).public.pop3.enabled).toBe(true);
    expect(loadConfig({ env: { KEYGATE_IMAP_SECURE_PORT: '22993' } }).public.imap.securePort).toBe(22993);
    expect(loadConfig({ env: { KEYGATE_IMAP_SECURE_PORT: '22993', KEYGATE_PUBLIC_IMAP_SECURE_PORT: '993' } }).public.imap.securePort).toBe(993);
  });
});
