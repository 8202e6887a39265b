/**
 * What the listener pairs of all three protocols share, through the real
 * `startServer` assembly: both ports bound on loopback, and the per-IP
 * connection limit refusing (in the protocol's words on the plain port, by
 * closing on the implicit-TLS one) and counting each refusal in `/metrics`
 * (keygate_connections_refused_total, which replaced the issue's
 * keygate_rate_limited_total{surface="<proto>_connections"}), where an
 * operator sees it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startKeygate, type SingleKeygate } from '../helpers/keygate.js';
import { LineClient } from '../helpers/line-client.js';

const PROTOCOLS = [
  { name: 'imap', greeting: /^\* OK /, refusal: '* BYE Too many connections from your address' },
  { name: 'pop3', greeting: /^\+OK /, refusal: '-ERR [SYS/TEMP] Too many connections from your address, try again later' },
  { name: 'smtp', greeting: /^220 /, refusal: '421 4.7.0 Too many connections from your address, try again later' },
] as const;

let kg: SingleKeygate;
let metricsKey: string;

beforeAll(async () => {
  kg = await startKeygate({ http: true, flags: { 'limits.connectionsPerIp': 1 } });
  metricsKey = (await kg.issue(null, ['metrics'])).key;
});

afterAll(async () => {
  await kg.close();
});

async function scrape(): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${kg.port('http')}/metrics`, { headers: { authorization: `Bearer ${metricsKey}` } });
  expect(res.status).toBe(200);
  return res.text();
}

describe.each(PROTOCOLS)('$name listeners', (p) => {
  it('binds the STARTTLS and the implicit-TLS port on 127.0.0.1', () => {
    for (const name of [p.name, `${p.name}s`]) expect(kg.listeners.get(name).address()).toEqual({ host: '127.0.0.1', port: kg.port(name) });
  });

  it('refuses a connection over the per-IP limit and counts it in keygate_connections_refused_total', async () => {
    // One series per listener: both of the pair must be wired to the metrics.
    const counted = (text: string, listener: string): number => {
      const line = text.split('\n').find((l) => l.startsWith('keygate_connections_refused_total{') && l.includes(`listener="${listener}"`) && l.includes('reason="per_ip"'));
      return Number(line?.split(' ').at(-1) ?? 0);
    };
    const names = [p.name, `${p.name}s`];
    const before = await scrape();
    // The limit is per listener: one client fills each, the next one on each is refused.
    for (const [port, tls] of [[kg.port(p.name), false], [kg.port(`${p.name}s`), true]] as const) {
      const first = await LineClient.connect(port, { tls });
      expect(await first.line()).toMatch(p.greeting);
      if (tls) {
        // Implicit TLS: closed at once, no handshake spent on it.
        await expect(LineClient.connect(port, { tls })).rejects.toThrow(/disconnected|ECONNRESET/);
      } else {
        const over = await LineClient.connect(port);
        expect(await over.line()).toBe(p.refusal);
        await over.waitClosed();
      }
      first.destroy();
      await first.closed;
    }
    const after = await scrape();
    for (const name of names) expect(counted(after, name), name).toBe(counted(before, name) + 1);
  });
});
