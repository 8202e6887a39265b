import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cleanupFixtures, createFixture, type Fixture } from './fixture.js';

afterAll(cleanupFixtures);

/*
 * The control plane's connection bounds, over a real port: a cap on open
 * connections where the longest-idle one makes room, refusals only when every
 * connection is busy, and timeouts for silent, slow and idle connections.
 */
const CAP = 20;

interface Conn {
  socket: Socket;
  closed: Promise<number>;
  data: () => string;
  isClosed: () => boolean;
}

/** A Keygate control plane on a real port, with raw connections and the metrics a test reads. */
function controlPlane(flags: Record<string, unknown>) {
  const h = {
    f: null as unknown as Fixture,
    port: 0,
    conns: [] as Conn[],
    /** A raw connection; resolves once connected. */
    async open(first?: string): Promise<Conn> {
      const socket = connect(h.port, '127.0.0.1');
      let text = '';
      let closed = false;
      const t0 = Date.now();
      socket.on('data', (d) => (text += d.toString()));
      socket.on('error', () => {});
      const closedAt = new Promise<number>((resolve) => socket.on('close', () => ((closed = true), resolve(Date.now() - t0))));
      await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
      if (first) socket.write(first);
      const c = { socket, closed: closedAt, data: () => text, isClosed: () => closed };
      h.conns.push(c);
      return c;
    },
    async metric(name: string): Promise<string> {
      const res = await h.f.call(h.f.adminKey, { url: '/metrics' });
      return res.body.split('\n').filter((l) => l.startsWith(name)).join('\n');
    },
    async gauge(): Promise<number> {
      const m = /^keygate_http_connections (\d+)/m.exec(await h.metric('keygate_http_connections '));
      return m ? Number(m[1]) : NaN;
    },
    async refused(reason: string): Promise<number> {
      const m = new RegExp(`^keygate_connections_refused_total\\{(?=[^}]*listener="http")(?=[^}]*reason="${reason}")[^}]*\\} (\\d+)`, 'm').exec(await h.metric('keygate_connections_refused_total'));
      return m ? Number(m[1]) : 0;
    },
    /** One GET /health on a connection of its own; the status, or the error. */
    probe(): Promise<number | string> {
      return new Promise((resolve) => {
        const req = request({ host: '127.0.0.1', port: h.port, path: '/health', agent: false }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
        req.end();
      });
    },
  };
  beforeAll(async () => {
    h.f = await createFixture('sqlite', { flags: { 'http.maxConnections': CAP, ...flags } });
    await h.f.app.listen({ host: '127.0.0.1', port: 0 });
    h.port = (h.f.app.server.address() as { port: number }).port;
  });
  afterEach(async () => {
    for (const c of h.conns.splice(0)) c.socket.destroy();
    await waitUntil(async () => (await h.gauge()) === 0);
  });
  afterAll(() => h.f.close());
  return h;
}

describe('control-plane connections: the cap', () => {
  const h = controlPlane({ 'http.headersTimeout': '20s', 'http.idleTimeout': '20s', 'http.requestTimeout': '30s' });
  const { open, gauge, refused, probe } = h;

  it('at the cap the longest-idle connection is closed for a new one, oldest first, and counted', async () => {
    const idle: Conn[] = [];
    for (let i = 0; i < CAP; i++) idle.push(await open());
    await waitUntil(async () => (await gauge()) === CAP);
    const before = await refused('evicted');
    expect(await probe()).toBe(200);
    await idle[0]!.closed;
    expect(idle.slice(1).every((c) => !c.isClosed())).toBe(true);
    expect(await refused('evicted')).toBeGreaterThanOrEqual(before + 1);
    // The probe's connection closes after its answer. A kept-alive connection that has just
    // answered is the most recently idle: the next newcomer takes the oldest silent one, not it.
    await waitUntil(async () => (await gauge()) === CAP - 1);
    const kept = await open('GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
    await waitUntil(() => kept.data().includes('"status"'));
    expect(await probe()).toBe(200);
    await idle[1]!.closed;
    expect(kept.isClosed()).toBe(false);
    expect(idle.slice(2).every((c) => !c.isClosed())).toBe(true);
  });

  it('when every connection is busy, a new one is refused and counted; the busy ones are untouched', async () => {
    const busy: Conn[] = [];
    // Headers complete, body still coming: a request in progress.
    const slow = `POST /api/tokens HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${h.f.adminKey}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{`;
    const logged = () => h.f.logs.filter((l) => l.includes('"msg":"incoming request"') && l.includes('"method":"POST"')).length;
    const from = logged();
    for (let i = 0; i < CAP; i++) busy.push(await open(slow));
    // Each request has begun (its headers are in and logged) before the newcomer arrives.
    await waitUntil(() => logged() === from + CAP);
    const before = await refused('listener_full');
    const extra = await open();
    await extra.closed;
    expect(await refused('listener_full')).toBe(before + 1);
    expect(busy.every((c) => !c.isClosed())).toBe(true);
    expect(await gauge()).toBe(CAP);
  });

  it('many idle connections from one client: never more than the cap open, and the server still answers', async () => {
    const many = await Promise.all(Array.from({ length: CAP * 10 }, () => open()));
    await waitUntil(async () => many.filter((c) => !c.isClosed()).length <= CAP);
    expect(await gauge()).toBeLessThanOrEqual(CAP);
    expect(await probe()).toBe(200);
  });
});

describe('control-plane connections: timeouts', () => {
  const h = controlPlane({ 'http.headersTimeout': '1500ms', 'http.idleTimeout': '1s', 'http.requestTimeout': '10s' });
  const { open, refused } = h;

  it('a silent connection gets 408 in the JSON error shape after the headers timeout, and is counted', async () => {
    const before = await refused('request_timeout');
    const silent = await open();
    const after = await silent.closed;
    expect(after).toBeGreaterThanOrEqual(1400);
    expect(after).toBeLessThan(6000);
    expect(silent.data()).toMatch(/^HTTP\/1\.1 408 /);
    expect(JSON.parse(silent.data().split('\r\n\r\n')[1]!)).toEqual({ error: { code: 'request_timeout', message: expect.any(String) } });
    expect(await refused('request_timeout')).toBe(before + 1);
  });

  it('a kept-alive connection is closed after the idle timeout', async () => {
    const kept = await open('GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
    const after = await kept.closed;
    expect(kept.data()).toMatch(/^HTTP\/1\.1 200 /);
    expect(after).toBeGreaterThanOrEqual(900);
    expect(after).toBeLessThan(5000);
  });

  it('headers too large and a malformed request: the JSON error shape, nothing of the request echoed', async () => {
    const big = await open(`GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: ${'a'.repeat(20_000)}\r\nAuthorization: Bearer ${h.f.adminKey}\r\n\r\n`);
    await big.closed;
    expect(big.data()).toMatch(/^HTTP\/1\.1 431 /);
    expect(JSON.parse(big.data().split('\r\n\r\n')[1]!).error.code).toBe('headers_too_large');
    const junk = await open(`NOT HTTP ${h.f.adminKey}\r\n\r\n`);
    await junk.closed;
    expect(junk.data()).toMatch(/^HTTP\/1\.1 400 /);
    expect(JSON.parse(junk.data().split('\r\n\r\n')[1]!).error.code).toBe('bad_request');
    expect(h.f.logs.join('')).not.toContain(h.f.adminKey.slice(3));
  });
});

describe('router refusals use the one error shape', () => {
  let f: Fixture;
  beforeAll(async () => {
    f = await createFixture('sqlite');
  });
  afterAll(() => f.close());

  it('414 for a URL part over the length limit, 400 for a malformed escape; neither quotes the URL', async () => {
    const long = `${'x'.repeat(150)}kg_secretish`;
    const res = await f.call(f.adminKey, { url: `/api/tokens/${long}/export` });
    expect(res.statusCode).toBe(414);
    expect(res.json()).toEqual({ error: { code: 'uri_too_long', message: 'A part of the URL is too long' } });
    const bad = await f.call(f.adminKey, { url: '/api/tokens/%E0%A4%A/export' });
    expect(bad.statusCode).toBe(400);
    expect(bad.json()).toEqual({ error: { code: 'bad_request', message: 'The URL is not valid' } });
    expect(res.body + bad.body).not.toContain('secretish');
  });
});

async function waitUntil(check: () => boolean | Promise<boolean>, timeoutMs = 8000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
