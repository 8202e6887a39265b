/**
 * What the listener pairs of all three protocols share, through the real
 * `startServer` assembly: both ports bound on loopback, and the per-IP
 * connection limit refusing in the protocol's words and counting each refusal
 * in `/metrics`, where an operator sees it.
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

  it('refuses a connection over the per-IP limit and counts it in keygate_rate_limited_total', async () => {
    const surface = `keygate_rate_limited_total{surface="${p.name}_connections"}`;
    const counted = (text: string): number => Number(text.split('\n').find((l) => l.startsWith(surface))?.split(' ')[1] ?? 0);
    const before = counted(await scrape());
    // The limit is per listener: one client fills each, the next one on each is refused.
    for (const [port, tls] of [[kg.port(p.name), false], [kg.port(`${p.name}s`), true]] as const) {
      const first = await LineClient.connect(port, { tls });
      expect(await first.line()).toMatch(p.greeting);
      const over = await LineClient.connect(port, { tls });
      expect(await over.line()).toBe(p.refusal);
      await over.waitClosed();
      first.destroy();
      await first.closed;
    }
    expect(counted(await scrape())).toBe(before + 2);
  });
});
