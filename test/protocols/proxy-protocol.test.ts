import { once } from 'node:events';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseProxyHeader, ProxyProtocolError, readProxyHeader, V2_SIGNATURE, type ProxyInfo } from '../../src/protocols/proxy-protocol.js';
import { closeServer, listenOn, sleep } from '../tls/helpers.js';

type Outcome = { ok: true; info: ProxyInfo | null; after: string } | { ok: false; error: Error & { code?: string } };

/**
 * A real TCP server: each connection's PROXY header is read with
 * readProxyHeader, then whatever follows is collected through an ordinary
 * 'data' listener (as a protocol would) until the client ends.
 */
let server: net.Server;
let port: number;
const outcomes: Array<(o: Outcome) => void> = [];
let timeoutMs = 5000;

beforeAll(async () => {
  server = net.createServer((socket) => {
    socket.on('error', () => {});
    const report = outcomes.shift()!;
    readProxyHeader(socket, timeoutMs).then(
      (info) => {
        let after = '';
        socket.on('data', (b: Buffer) => (after += b.toString('latin1')));
        socket.on('end', () => {
          report({ ok: true, info, after });
          socket.end();
        });
      },
      (error: Error) => {
        report({ ok: false, error });
        socket.destroy();
      },
    );
  });
  port = await listenOn(server);
});
afterAll(() => closeServer(server));

/** Sends `chunks` as separate TCP writes (with a pause between, so they arrive apart), ends, returns the outcome. */
async function send(chunks: Array<Buffer | string>, opts: { end?: boolean; pauseMs?: number } = {}): Promise<Outcome> {
  const outcome = new Promise<Outcome>((resolve) => outcomes.push(resolve));
  const client = net.connect(port, '127.0.0.1');
  client.setNoDelay(true);
  client.on('error', () => {});
  await once(client, 'connect');
  for (const c of chunks) {
    client.write(c);
    if (chunks.length > 1) await sleep(opts.pauseMs ?? 15);
  }
  if (opts.end ?? true) client.end();
  const result = await outcome;
  client.destroy();
  return result;
}

function v2(command: number, famProto: number, body: Buffer): Buffer {
  const head = Buffer.alloc(4);
  head[0] = 0x20 | command;
  head[1] = famProto;
  head.writeUInt16BE(body.length, 2);
  return Buffer.concat([V2_SIGNATURE, head, body]);
}

function v2ipv4(src: number[], dst: number[], sport: number, dport: number, tlv = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(12);
  Buffer.from(src).copy(b, 0);
  Buffer.from(dst).copy(b, 4);
  b.writeUInt16BE(sport, 8);
  b.writeUInt16BE(dport, 10);
  return v2(1, 0x11, Buffer.concat([b, tlv]));
}

function v2ipv6(src: string, dst: string, sport: number, dport: number): Buffer {
  const b = Buffer.alloc(36);
  const bytes = (ip: string): Buffer => {
    // Expand "2001:db8::1"-style text to 16 bytes.
    const [head, tail = ''] = ip.split('::');
    const h = head ? head.split(':') : [];
    const t = tail ? tail.split(':') : [];
    const groups = [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
    return Buffer.from(groups.flatMap((g) => [parseInt(g, 16) >> 8, parseInt(g, 16) & 0xff]));
  };
  bytes(src).copy(b, 0);
  bytes(dst).copy(b, 16);
  b.writeUInt16BE(sport, 32);
  b.writeUInt16BE(dport, 34);
  return v2(1, 0x21, b);
}

describe('PROXY protocol v1', () => {
  it('reads TCP4 and keeps the bytes after the header', async () => {
    const o = await send(['PROXY TCP4 203.0.113.7 192.0.2.1 51234 993\r\na001 CAPABILITY\r\n']);
    expect(o).toEqual({
      ok: true,
      info: { sourceAddress: '203.0.113.7', sourcePort: 51234, destAddress: '192.0.2.1', destPort: 993 },
      after: 'a001 CAPABILITY\r\n',
    });
  });

  it('reads TCP6', async () => {
    const o = await send(['PROXY TCP6 2001:db8::7 2001:db8::1 40000 143\r\n']);
    expect(o).toEqual({ ok: true, info: { sourceAddress: '2001:db8::7', sourcePort: 40000, destAddress: '2001:db8::1', destPort: 143 }, after: '' });
  });

  it('gives null for UNKNOWN (with or without addresses)', async () => {
    expect(await send(['PROXY UNKNOWN\r\nUSER x\r\n'])).toEqual({ ok: true, info: null, after: 'USER x\r\n' });
    expect(await send(['PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n'])).toEqual({ ok: true, info: null, after: '' });
  });

  it('reads a header split across several TCP writes, byte by byte', async () => {
    const header = 'PROXY TCP4 198.51.100.22 192.0.2.1 1 65535\r\n';
    const o = await send([...header.split(''), 'EHLO x\r\n'], { pauseMs: 3 });
    expect(o).toEqual({ ok: true, info: { sourceAddress: '198.51.100.22', sourcePort: 1, destAddress: '192.0.2.1', destPort: 65535 }, after: 'EHLO x\r\n' });
  });

  it('rejects bad addresses, ports, families and line endings', async () => {
    for (const bad of [
      'PROXY TCP4 203.0.113.999 192.0.2.1 1 2\r\n',
      'PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n',
      'PROXY TCP6 203.0.113.7 2001:db8::1 1 2\r\n',
      'PROXY TCP4 203.0.113.7 192.0.2.1 65536 2\r\n',
      'PROXY TCP4 203.0.113.7 192.0.2.1 01 2\r\n',
      'PROXY TCP4 203.0.113.7 192.0.2.1 1\r\n',
      'PROXY UDP4 203.0.113.7 192.0.2.1 1 2\r\n',
      'PROXY TCP4 203.0.113.7 192.0.2.1 1 2\n',
    ]) {
      const o = await send([bad]);
      expect(o.ok, bad).toBe(false);
      if (!o.ok) expect(o.error).toBeInstanceOf(ProxyProtocolError);
    }
  });

  it('rejects a header over 107 bytes without waiting for its end', async () => {
    const o = await send(['PROXY UNKNOWN ' + 'x'.repeat(200)], { end: false });
    expect(o.ok).toBe(false);
    if (!o.ok) expect(o.error.message).toMatch(/107/);
  });
});

describe('PROXY protocol v2', () => {
  it('reads IPv4 (TLVs skipped) and keeps the bytes after the header', async () => {
    const tlv = Buffer.from([0x04, 0x00, 0x03, 0x61, 0x62, 0x63]); // PP2_TYPE_NOOP, 3 bytes
    const o = await send([Buffer.concat([v2ipv4([203, 0, 113, 7], [192, 0, 2, 1], 51234, 995, tlv), Buffer.from('CAPA\r\n')])]);
    expect(o).toEqual({ ok: true, info: { sourceAddress: '203.0.113.7', sourcePort: 51234, destAddress: '192.0.2.1', destPort: 995 }, after: 'CAPA\r\n' });
  });

  it('reads IPv6', async () => {
    const o = await send([v2ipv6('2001:db8::7', '2001:db8::1', 40000, 587)]);
    expect(o).toEqual({ ok: true, info: { sourceAddress: '2001:db8::7', sourcePort: 40000, destAddress: '2001:db8::1', destPort: 587 }, after: '' });
  });

  it('gives null for LOCAL and for AF_UNSPEC', async () => {
    expect(await send([Buffer.concat([v2(0, 0x00, Buffer.alloc(0)), Buffer.from('a1 NOOP\r\n')])])).toEqual({ ok: true, info: null, after: 'a1 NOOP\r\n' });
    expect(await send([v2(1, 0x00, Buffer.alloc(0))])).toEqual({ ok: true, info: null, after: '' });
  });

  it('reads a header split inside the signature and inside the address block', async () => {
    const whole = Buffer.concat([v2ipv4([10, 1, 2, 3], [10, 0, 0, 1], 1000, 143), Buffer.from('x\r\n')]);
    const o = await send([whole.subarray(0, 5), whole.subarray(5, 14), whole.subarray(14, 20), whole.subarray(20)]);
    expect(o).toEqual({ ok: true, info: { sourceAddress: '10.1.2.3', sourcePort: 1000, destAddress: '10.0.0.1', destPort: 143 }, after: 'x\r\n' });
  });

  it('rejects a bad version, command, family and a short address block', async () => {
    const good = v2ipv4([10, 1, 2, 3], [10, 0, 0, 1], 1000, 143);
    const badVersion = Buffer.from(good);
    badVersion[12] = 0x11;
    const badCommand = Buffer.from(good);
    badCommand[12] = 0x2f;
    const badFamily = Buffer.from(good);
    badFamily[13] = 0x41;
    for (const bad of [badVersion, badCommand, badFamily, v2(1, 0x11, Buffer.alloc(8)), v2(1, 0x21, Buffer.alloc(20))]) {
      const o = await send([bad]);
      expect(o.ok).toBe(false);
    }
  });

  it('rejects an oversized header from its length field alone', async () => {
    const head = Buffer.concat([V2_SIGNATURE, Buffer.from([0x21, 0x11, 0x01, 0x00])]); // 256-byte block
    const o = await send([head], { end: false });
    expect(o.ok).toBe(false);
    if (!o.ok) expect(o.error.message).toMatch(/too large/);
  });
});

describe('readProxyHeader on bad input', () => {
  it('rejects garbage at once, without waiting for more bytes', async () => {
    for (const garbage of ['GET / HTTP/1.1\r\n', 'a001 LOGIN x y\r\n', '\x16\x03\x01\x02\x00', '\r\n\r\nXYZ']) {
      const started = Date.now();
      const o = await send([garbage], { end: false });
      expect(o.ok, JSON.stringify(garbage)).toBe(false);
      expect(Date.now() - started).toBeLessThan(1000);
    }
  });

  it('rejects with ETIMEDOUT when no header comes', async () => {
    timeoutMs = 200;
    try {
      const o = await send(['PROX'], { end: false });
      expect(o.ok).toBe(false);
      if (!o.ok) expect(o.error.code).toBe('ETIMEDOUT');
    } finally {
      timeoutMs = 5000;
    }
  });

  it('rejects when the peer closes before the header is complete', async () => {
    const o = await send(['PROXY TCP4 1.2.3.4']);
    expect(o.ok).toBe(false);
    if (!o.ok) expect(o.error.code).toBe('ECONNRESET');
  });
});

describe('parseProxyHeader', () => {
  it('asks for more bytes on every strict prefix of a valid header', () => {
    const header = Buffer.from('PROXY TCP4 203.0.113.7 192.0.2.1 51234 993\r\n');
    for (let i = 0; i < header.length; i++) expect(parseProxyHeader(header.subarray(0, i)).done).toBe(false);
    expect(parseProxyHeader(header)).toMatchObject({ done: true, length: header.length });
    const bin = v2ipv6('2001:db8::7', '2001:db8::1', 1, 2);
    for (let i = 0; i < bin.length; i++) expect(parseProxyHeader(bin.subarray(0, i)).done).toBe(false);
    expect(parseProxyHeader(bin)).toMatchObject({ done: true, length: bin.length });
  });
});
