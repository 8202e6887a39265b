import { once } from 'node:events';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Logger } from '../../src/log.js';
import { V2_SIGNATURE } from '../../src/protocols/proxy-protocol.js';
import { normalizeRemoteAddress, TcpListener, type Connection, type TcpListenerOptions } from '../../src/protocols/tcp-listener.js';
import { Metrics } from '../../src/metrics.js';
import { createTlsProvider, upgradeToTls, type TlsProvider } from '../../src/tls/index.js';
import { captureLogger, closeServer, listenOn, silentLogger, sleep, tlsConnect } from '../tls/helpers.js';
import { waitFor } from '../helpers/wait.js';

const dir = mkdtempSync(join(tmpdir(), 'keygate-listener-'));
let provider: TlsProvider;
beforeAll(async () => {
  provider = await createTlsProvider({ tls: { cert: '', key: '', dir }, hostname: 'localhost' }, silentLogger());
});
afterAll(() => {
  provider.close();
  rmSync(dir, { recursive: true, force: true });
});

const listeners: TcpListener[] = [];
const clients: net.Socket[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  await Promise.all(listeners.splice(0).map((l) => l.close(0)));
});

/** A listener whose protocol greets with "* OK hello <ip> <port> <secure>" and echoes "ECHO x" lines. */
async function start(over: Partial<TcpListenerOptions> = {}, logger: Logger = silentLogger()) {
  const conns: Connection[] = [];
  const l = new TcpListener({
    name: 'test',
    protocol: 'imap',
    host: '127.0.0.1',
    port: 0,
    implicitTls: false,
    tls: provider,
    proxyProtocol: false,
    maxConnectionsPerIp: 10,
    logger,
    onConnection(conn) {
      conns.push(conn);
      conn.socket.write(`* OK hello ${conn.remoteAddress} ${conn.remotePort} ${conn.secure}\r\n`);
      conn.socket.on('data', (b: Buffer) => {
        if (b.toString().startsWith('ECHO ')) conn.socket.write(b.toString().slice(5));
      });
    },
    refuse: () => '* BYE Too many connections\r\n',
    ...over,
  });
  await l.listen();
  listeners.push(l);
  return { listener: l, port: l.address().port, conns };
}

async function connect(port: number): Promise<net.Socket> {
  const s = net.connect(port, '127.0.0.1');
  s.on('error', () => {});
  clients.push(s);
  await once(s, 'connect');
  return s;
}

/** Collects everything the server sends until it closes. */
function readAll(s: net.Socket): Promise<string> {
  let text = '';
  s.on('data', (b: Buffer) => (text += b.toString()));
  return new Promise((resolve) => s.once('close', () => resolve(text)));
}

const pending = new WeakMap<net.Socket, { buf: string; wake: (() => void) | null }>();

/** Reads the next CRLF-terminated line (line framing over whatever chunks arrive). */
async function firstLine(s: net.Socket | tls.TLSSocket): Promise<string> {
  let st = pending.get(s);
  if (!st) {
    const state = { buf: '', wake: null as (() => void) | null };
    pending.set(s, state);
    s.on('data', (b: Buffer) => {
      state.buf += b.toString();
      state.wake?.();
    });
    st = state;
  }
  for (;;) {
    const i = st.buf.indexOf('\r\n');
    if (i >= 0) {
      const line = st.buf.slice(0, i + 2);
      st.buf = st.buf.slice(i + 2);
      return line;
    }
    await new Promise<void>((resolve) => (st.wake = resolve));
    st.wake = null;
  }
}

describe('TcpListener', () => {
  it('reports its address and counts connections', async () => {
    const { listener, port } = await start();
    expect(listener.address()).toEqual({ host: '127.0.0.1', port });
    const a = await connect(port);
    expect(await firstLine(a)).toBe(`* OK hello 127.0.0.1 ${a.localPort} false\r\n`);
    expect(listener.connections()).toBe(1);
    a.destroy();
    await waitFor(() => listener.connections() === 0);
  });

  it('refuses a connection over the per-IP limit with the protocol line, then closes it', async () => {
    const metrics = new Metrics(undefined, { processMetrics: false });
    const { listener, port, conns } = await start({ maxConnectionsPerIp: 2, metrics });
    const a = await connect(port);
    const b = await connect(port);
    await firstLine(a);
    await firstLine(b);
    expect(listener.connectionsFrom('127.0.0.1')).toBe(2);
    const c = await connect(port);
    expect(await readAll(c)).toBe('* BYE Too many connections\r\n');
    expect(conns).toHaveLength(2);
    expect((await metrics.connectionsRefused.get()).values).toEqual([{ labels: { listener: 'test', reason: 'per_ip' }, value: 1 }]);
    // A slot frees up when a connection ends.
    a.destroy();
    await waitFor(() => listener.connectionsFrom('127.0.0.1') === 1);
    const d = await connect(port);
    expect(await firstLine(d)).toMatch(/^\* OK hello/);
    expect(conns).toHaveLength(3);
  });

  it('closes a refused client that does not read within about a second', async () => {
    const { listener, port } = await start({ maxConnectionsPerIp: 1 });
    await firstLine(await connect(port));
    const c = await connect(port);
    c.pause(); // reads nothing, so never sees the refusal nor the FIN
    await waitFor(() => listener.connections() === 2, 1000);
    const started = Date.now();
    await waitFor(() => listener.connections() === 1, 3000);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('refuses over the per-IP limit on an implicit-TLS port at once, before any TLS work', async () => {
    const metrics = new Metrics(undefined, { processMetrics: false });
    const { listener, port } = await start({ implicitTls: true, maxConnectionsPerIp: 1, metrics });
    const a = await tlsConnect({ port, ca: provider.certPem(), servername: 'localhost' });
    clients.push(a);
    expect(await firstLine(a)).toMatch(/^\* OK hello 127\.0\.0\.1 \d+ true/);
    // A raw connection that never sends a ClientHello: closed at once, nothing written to it.
    const b = await connect(port);
    const started = Date.now();
    expect(await readAll(b)).toBe('');
    expect(Date.now() - started).toBeLessThan(500);
    // A real TLS client over the limit sees the connection closed during the handshake.
    await expect(tlsConnect({ port, ca: provider.certPem(), servername: 'localhost' })).rejects.toThrow();
    expect(listener.connections()).toBe(1);
    expect((await metrics.connectionsRefused.get()).values).toEqual([{ labels: { listener: 'test', reason: 'per_ip' }, value: 2 }]);
  });

  it('a flood of connections without a ClientHello: over the cap closed at once, descriptors bounded', async () => {
    const openFds = (): number => readdirSync('/proc/self/fd').length;
    const cap = 20;
    const { listener, port } = await start({ implicitTls: true, maxConnectionsPerIp: cap });
    const before = openFds();
    const flood = await Promise.all(Array.from({ length: 300 }, () => connect(port)));
    const closed = flood.map((s) => new Promise<void>((resolve) => (s.destroyed ? resolve() : s.once('close', () => resolve()))));
    let closedCount = 0;
    for (const c of closed) void c.then(() => closedCount++);
    await waitFor(() => closedCount === 300 - cap, 2000);
    expect(listener.connections()).toBe(cap);
    expect(listener.connectionsFrom('127.0.0.1')).toBe(cap);
    // Our 20 client sockets and the listener's 20, with room for timers and the like.
    expect(openFds() - before).toBeLessThanOrEqual(2 * cap + 10);
  });

  it('ends a handshake that does not finish within tls.handshakeTimeout', async () => {
    const slow = await createTlsProvider({ tls: { cert: '', key: '', dir, handshakeTimeout: 300 }, hostname: 'localhost' }, silentLogger());
    try {
      const metrics = new Metrics(undefined, { processMetrics: false });
      const { listener, port } = await start({ implicitTls: true, tls: slow, metrics });
      const idle = await connect(port);
      const started = Date.now();
      expect(await readAll(idle)).toBe('');
      expect(Date.now() - started).toBeGreaterThanOrEqual(250);
      expect(Date.now() - started).toBeLessThan(1500);
      await waitFor(() => listener.connections() === 0);
      expect((await metrics.connectionsRefused.get()).values).toEqual([{ labels: { listener: 'test', reason: 'handshake_timeout' }, value: 1 }]);
    } finally {
      slow.close();
    }
    expect(provider.handshakeTimeoutMs).toBe(5000);
  });

  it('when full, closes the oldest connection not logged in yet for a new one; refuses when all are logged in', async () => {
    const metrics = new Metrics(undefined, { processMetrics: false });
    const { listener, port } = await start({
      maxConnections: 3,
      maxConnectionsPerIp: 0,
      metrics,
      onConnection(conn) {
        conn.socket.write('* OK\r\n');
        conn.socket.on('data', (b: Buffer) => {
          if (b.toString() !== 'LOGIN\r\n') return;
          conn.loggedIn();
          conn.socket.write('a OK\r\n');
        });
      },
    });
    const loggedIn = await connect(port);
    expect(await firstLine(loggedIn)).toBe('* OK\r\n');
    loggedIn.write('LOGIN\r\n');
    expect(await firstLine(loggedIn)).toBe('a OK\r\n');
    const older = await connect(port);
    await firstLine(older);
    const newer = await connect(port);
    await firstLine(newer);
    const olderText = readAll(older);
    // Full: the oldest not logged in goes, the new one is served.
    const fourth = await connect(port);
    expect(await firstLine(fourth)).toBe('* OK\r\n');
    expect(await olderText).toBe('');
    expect(listener.connections()).toBe(3);
    // All logged in: a newcomer is refused with the protocol's line, no one is cut.
    for (const s of [newer, fourth]) {
      s.write('LOGIN\r\n');
      expect(await firstLine(s)).toBe('a OK\r\n');
    }
    const fifth = await connect(port);
    expect(await readAll(fifth)).toBe('* BYE Too many connections\r\n');
    loggedIn.write('LOGIN\r\n');
    expect(await firstLine(loggedIn)).toBe('a OK\r\n');
    expect((await metrics.connectionsRefused.get()).values.map((v) => [v.labels.reason, v.value]).sort()).toEqual([['evicted', 1], ['listener_full', 1]]);
  });

  it('closes connections still in the handshake first when full (a flood cannot keep out real clients)', async () => {
    const { listener, port } = await start({ implicitTls: true, maxConnections: 10, maxConnectionsPerIp: 0 });
    const flood = await Promise.all(Array.from({ length: 10 }, () => connect(port)));
    await waitFor(() => listener.connections() === 10);
    const s = await tlsConnect({ port, ca: provider.certPem(), servername: 'localhost' });
    clients.push(s);
    expect(await firstLine(s)).toMatch(/^\* OK hello 127\.0\.0\.1 \d+ true/);
    await waitFor(() => flood[0]!.destroyed);
    expect(listener.connections()).toBe(10);
  });

  it('counts IPv6 clients by their /64 for the per-IP limit', async () => {
    const { listener, port } = await start({ proxyProtocol: true, maxConnectionsPerIp: 2 });
    const from = async (ip: string): Promise<net.Socket> => {
      const s = await connect(port);
      s.write(`PROXY TCP6 ${ip} 2001:db8::1 4000 143\r\n`);
      return s;
    };
    expect(await firstLine(await from('2001:db8:1:2::10'))).toMatch(/^\* OK hello 2001:db8:1:2::10 /);
    expect(await firstLine(await from('2001:db8:1:2:ffff::99'))).toMatch(/^\* OK hello 2001:db8:1:2:ffff::99 /);
    expect(await readAll(await from('2001:db8:1:2:abcd::1'))).toBe('* BYE Too many connections\r\n');
    expect(await firstLine(await from('2001:db8:1:3::10'))).toMatch(/^\* OK hello 2001:db8:1:3::10 /);
    expect(listener.connectionsFrom('2001:db8:1:2::5')).toBe(2);
  });

  it('does implicit TLS: the protocol gets a socket through the handshake', async () => {
    const { port, conns } = await start({ implicitTls: true });
    const s = await tlsConnect({ port, ca: provider.certPem(), servername: 'localhost' });
    clients.push(s);
    expect(s.authorized).toBe(true);
    expect(await firstLine(s)).toMatch(/^\* OK hello 127\.0\.0\.1 \d+ true\r\n$/);
    expect(conns[0]!.secure).toBe(true);
    expect(conns[0]!.socket).toBeInstanceOf(tls.TLSSocket);
    s.write('ECHO over tls\r\n');
    expect(await firstLine(s)).toBe('over tls\r\n');
  });

  it('counts a connection the protocol upgrades with STARTTLS until it closes', async () => {
    const { listener, port } = await start({
      maxConnectionsPerIp: 1,
      onConnection(conn) {
        conn.socket.write('* OK\r\n');
        conn.socket.once('data', () => {
          conn.socket.write('OK go\r\n');
          upgradeToTls(conn.socket as net.Socket, provider).then(
            (secure) => secure.on('data', (b: Buffer) => secure.write(`tls: ${b.toString()}`)),
            () => {},
          );
        });
      },
    });
    const raw = await connect(port);
    expect(await firstLine(raw)).toBe('* OK\r\n');
    raw.write('STARTTLS\r\n');
    expect(await firstLine(raw)).toBe('OK go\r\n');
    raw.removeAllListeners('data');
    const s = await tlsConnect({ socket: raw, ca: provider.certPem(), servername: 'localhost' });
    s.write('hi\r\n');
    expect(await firstLine(s)).toBe('tls: hi\r\n');
    expect(listener.connections()).toBe(1);
    expect(listener.connectionsFrom('127.0.0.1')).toBe(1);
    s.end();
    await waitFor(() => listener.connections() === 0, 3000);
    expect(listener.connectionsFrom('127.0.0.1')).toBe(0);
  });

  it('takes the client address from a PROXY v1 or v2 header and limits by it', async () => {
    const { listener, port, conns } = await start({ proxyProtocol: true, maxConnectionsPerIp: 1 });
    const a = await connect(port);
    a.write('PROXY TCP4 203.0.113.7 192.0.2.1 51234 143\r\nECHO first\r\n');
    expect(await firstLine(a)).toBe('* OK hello 203.0.113.7 51234 false\r\n');
    // The bytes after the header reach the protocol.
    const more = await firstLine(a);
    expect(more).toBe('first\r\n');

    const b = await connect(port);
    b.write('PROXY TCP6 ::ffff:198.51.100.9 ::ffff:192.0.2.1 4000 143\r\n');
    expect(await firstLine(b)).toBe('* OK hello 198.51.100.9 4000 false\r\n');

    const v2 = Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, 0x21, 0x00, 36]), Buffer.alloc(36)]);
    v2[16] = 0x20; // 2001:db8::5
    v2[17] = 0x01;
    v2[18] = 0x0d;
    v2[19] = 0xb8;
    v2[31] = 0x05;
    v2.writeUInt16BE(5555, 16 + 32);
    const c = await connect(port);
    c.write(v2);
    expect(await firstLine(c)).toBe('* OK hello 2001:db8::5 5555 false\r\n');

    // A second connection from 203.0.113.7 (through the same proxy address) is over its limit.
    const d = await connect(port);
    d.write('PROXY TCP4 203.0.113.7 192.0.2.1 51235 143\r\n');
    expect(await readAll(d)).toBe('* BYE Too many connections\r\n');
    expect(listener.connectionsFrom('203.0.113.7')).toBe(1);
    expect(listener.connectionsFrom('127.0.0.1')).toBe(0);
    expect(conns.map((x) => x.remoteAddress)).toEqual(['203.0.113.7', '198.51.100.9', '2001:db8::5']);
  });

  it('takes PROXY v2 LOCAL as the connection itself, and closes on a bad header', async () => {
    const { listener, port } = await start({ proxyProtocol: true });
    const a = await connect(port);
    a.write(Buffer.concat([V2_SIGNATURE, Buffer.from([0x20, 0x00, 0x00, 0x00])]));
    expect(await firstLine(a)).toMatch(/^\* OK hello 127\.0\.0\.1 /);
    const b = await connect(port);
    b.write('a001 CAPABILITY\r\n');
    expect(await readAll(b)).toBe('');
    await waitFor(() => listener.connections() === 1);
  });

  it('reads a PROXY header and a TLS ClientHello that arrive in one packet (load balancer in front of implicit TLS)', async () => {
    const { port } = await start({ proxyProtocol: true, implicitTls: true });
    // A relay that, like a load balancer, sends the header and the client's first bytes in one write.
    const relay = net.createServer((front) => {
      front.once('data', (hello: Buffer) => {
        const back = net.connect(port, '127.0.0.1', () => {
          back.write(Buffer.concat([Buffer.from('PROXY TCP4 192.0.2.44 192.0.2.1 6000 993\r\n'), hello]));
          front.pipe(back).pipe(front);
        });
        back.on('error', () => front.destroy());
        front.on('error', () => back.destroy());
        front.on('close', () => back.destroy());
      });
    });
    const relayPort = await listenOn(relay);
    try {
      const s = await tlsConnect({ port: relayPort, ca: provider.certPem(), servername: 'localhost' });
      clients.push(s);
      expect(await firstLine(s)).toBe('* OK hello 192.0.2.44 6000 true\r\n');
      s.destroy();
    } finally {
      await closeServer(relay);
    }
  });

  it('leaves nothing behind when clients vanish mid-handshake or mid-header, and logs it at debug', async () => {
    const { logger, lines } = captureLogger();
    const { listener, port } = await start({ implicitTls: true }, logger);
    // Vanishes before sending anything.
    (await connect(port)).destroy();
    // Sends part of a ClientHello, then vanishes.
    const partial = await connect(port);
    partial.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]));
    await sleep(50);
    partial.destroy();
    // Speaks plaintext to the TLS port.
    const plain = await connect(port);
    plain.write('a001 CAPABILITY\r\n');
    await once(plain, 'close');
    // Resets (RST) right after the handshake.
    const raw = await connect(port);
    await tlsConnect({ socket: raw, ca: provider.certPem(), servername: 'localhost' });
    raw.resetAndDestroy();
    await waitFor(() => listener.connections() === 0, 3000);
    expect(listener.connectionsFrom('127.0.0.1')).toBe(0);
    const failures = lines.filter((l) => l.msg === 'TLS handshake failed');
    expect(failures.length).toBeGreaterThanOrEqual(2);
    expect(failures.every((l) => l.level === 20)).toBe(true);

    const p = await start({ proxyProtocol: true, proxyTimeoutMs: 200 });
    (await connect(p.port)).destroy();
    const slow = await connect(p.port);
    slow.write('PROXY TCP4');
    await once(slow, 'close'); // closed by the PROXY timeout
    await waitFor(() => p.listener.connections() === 0, 3000);
  });

  it('closes a socket whose protocol handler throws, and keeps serving', async () => {
    let calls = 0;
    const { listener, port } = await start({
      onConnection(conn) {
        if (calls++ === 0) throw new Error('boom');
        conn.socket.end('* OK\r\n');
      },
    });
    expect(await readAll(await connect(port))).toBe('');
    expect(await readAll(await connect(port))).toBe('* OK\r\n');
    await waitFor(() => listener.connections() === 0);
  });

  it('close(grace) stops accepting, waits for the grace period, then calls onShutdown, then destroys the rest', async () => {
    const shutdowns: string[] = [];
    const { listener, port } = await start({
      onConnection(conn) {
        conn.socket.write('* OK\r\n');
        conn.socket.on('data', (b: Buffer) => {
          if (b.toString() === 'LOGOUT\r\n') conn.socket.end('* BYE logging out\r\n');
        });
        conn.onShutdown(() => {
          shutdowns.push('bye');
          conn.socket.end('* BYE Server shutting down\r\n');
        });
      },
    });
    const polite = await connect(port); // answers BYE by closing
    const text = readAll(polite);
    await waitFor(() => listener.connections() === 1);
    // Never closes its side (half-open): destroyed 1 s after its hook.
    const stubborn = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    stubborn.on('error', () => {});
    clients.push(stubborn);
    let stubbornText = '';
    stubborn.on('data', (b: Buffer) => (stubbornText += b.toString()));
    const leaver = await connect(port); // logs out during the grace period
    const leaverText = readAll(leaver);
    await waitFor(() => listener.connections() === 3);

    const started = Date.now();
    const closing = listener.close(600);
    await sleep(100);
    // Not accepting any more.
    const late = net.connect(port, '127.0.0.1');
    const lateErr = await new Promise<string>((resolve) => {
      late.once('error', (e: Error & { code?: string }) => resolve(e.code ?? 'error'));
      late.once('connect', () => resolve('connected'));
    });
    late.destroy();
    expect(lateErr).toBe('ECONNREFUSED');
    leaver.write('LOGOUT\r\n');
    expect(await leaverText).toBe('* OK\r\n* BYE logging out\r\n');
    expect(shutdowns).toEqual([]);

    await closing;
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(1550); // grace + the 1 s before the stubborn one is destroyed
    expect(took).toBeLessThan(3500);
    expect(shutdowns).toEqual(['bye', 'bye']);
    expect(await text).toBe('* OK\r\n* BYE Server shutting down\r\n');
    expect(stubbornText).toBe('* OK\r\n* BYE Server shutting down\r\n');
    expect(listener.connections()).toBe(0);
  });

  it('close(grace) returns as soon as the last connection ends, and destroys connections without a hook', async () => {
    const { listener, port } = await start();
    const a = await connect(port);
    await firstLine(a);
    const started = Date.now();
    const closing = listener.close(5000);
    await sleep(100);
    a.end();
    await closing;
    expect(Date.now() - started).toBeLessThan(2000);

    const other = await start();
    const b = await connect(other.port);
    await firstLine(b);
    const closed = once(b, 'close');
    await other.listener.close(100);
    await closed;
    expect(other.listener.connections()).toBe(0);
  });
});

describe('normalizeRemoteAddress', () => {
  it('turns IPv4-mapped IPv6 into IPv4 and compresses IPv6', () => {
    expect(normalizeRemoteAddress('::ffff:127.0.0.1')).toBe('127.0.0.1');
    expect(normalizeRemoteAddress('2001:0db8:0000:0000:0000:0000:0000:0001')).toBe('2001:db8::1');
    expect(normalizeRemoteAddress('192.0.2.1')).toBe('192.0.2.1');
    expect(normalizeRemoteAddress(undefined)).toBe('');
  });
});
