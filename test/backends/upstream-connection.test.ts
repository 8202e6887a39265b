import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_READ } from '../../src/backends/adaptive-reads.js';
import { UpstreamConnection } from '../../src/backends/connection.js';
import type { UpstreamServer } from '../../src/backends/routing.js';

/**
 * The upstream read path without a mail server: a plain TCP upstream that
 * greets, answers one line, and then sends a bulk payload in the same
 * breath, so the hand-over has read-ahead to keep and the relay has a large
 * transfer to read in growing buffers.
 */
const servers: net.Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
});

function upstream(payload: Buffer, tail: Buffer): Promise<{ port: number; sendTail: () => void }> {
  let sockets: net.Socket[] = [];
  const server = net.createServer((s) => {
    sockets.push(s);
    s.write('* OK fake upstream\r\n');
    s.once('data', () => {
      s.write('x OK logged in\r\n');
      s.write(payload);
    });
  });
  servers.push(server);
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({
        port: (server.address() as net.AddressInfo).port,
        sendTail: () => {
          for (const s of sockets) s.end(tail);
          sockets = [];
        },
      }),
    ),
  );
}

const server = (port: number): UpstreamServer => ({ host: '127.0.0.1', port, tls: 'none', verifyCert: false, trusted: false, login: 'master', masterStyle: 'separator', xclient: false });

describe('upstream connection: login reads, hand-over, relay', () => {
  it('relays 12 MB byte for byte after the login reply, read-ahead first, through pauses, in reads larger than 64 KiB', async () => {
    const payload = randomBytes(12 * 1024 * 1024);
    const tail = Buffer.from('* BYE done\r\n');
    const up = await upstream(payload, tail);
    const conn = await UpstreamConnection.open(server(up.port), { connectMs: 1000, loginMs: 1000 });
    expect(await conn.readLine()).toBe('* OK fake upstream');
    conn.write('x LOGIN\r\n');
    expect(await conn.readLine()).toBe('x OK logged in');
    const { socket, relay } = conn.detach();

    const chunks: Buffer[] = [];
    let size = 0;
    let largest = 0;
    let pauses = 0;
    const ended = new Promise((r) => socket.once('end', r));
    relay((chunk) => {
      chunks.push(chunk);
      size += chunk.length;
      largest = Math.max(largest, chunk.length);
      // A client that is slow now and then: the relay holds the upstream back.
      if (chunks.length % 5 === 0) {
        pauses++;
        socket.pause();
        setTimeout(() => socket.resume(), 3);
      }
      if (size === payload.length) up.sendTail();
    });
    await ended;
    const got = Buffer.concat(chunks, size);
    expect(got.length).toBe(payload.length + tail.length);
    expect(createHash('sha256').update(got.subarray(0, payload.length)).digest('hex')).toBe(createHash('sha256').update(payload).digest('hex'));
    expect(got.subarray(payload.length).toString()).toBe('* BYE done\r\n');
    expect(pauses).toBeGreaterThan(0);
    expect(largest).toBeGreaterThan(64 * 1024);
    expect(largest).toBeLessThanOrEqual(MAX_READ);
    socket.destroy();
  });
});

describe('upstream connection: small reads', () => {
  it('keeps every small chunk intact while several idle-sized sessions read at once (their reads share one buffer)', async () => {
    const LINES = 200;
    const expected = (k: number): string => Array.from({ length: LINES }, (_, i) => `* ${i} EXISTS session ${k} ${'z'.repeat(i % 50)}\r\n`).join('');
    // One upstream per session, each sending its lines one tick apart, so reads of the sessions interleave.
    const ups = await Promise.all(
      [0, 1, 2].map(
        (k) =>
          new Promise<number>((resolve) => {
            const srv = net.createServer((s) => {
              s.write('* OK fake upstream\r\n');
              s.once('data', () => {
                s.write('x OK logged in\r\n');
                let i = 0;
                const next = (): void => {
                  if (i === LINES) return void s.end();
                  s.write(`* ${i} EXISTS session ${k} ${'z'.repeat(i % 50)}\r\n`);
                  i++;
                  setTimeout(next, 0);
                };
                next();
              });
            });
            servers.push(srv);
            srv.listen(0, '127.0.0.1', () => resolve((srv.address() as net.AddressInfo).port));
          }),
      ),
    );
    const got = await Promise.all(
      ups.map(async (port) => {
        const conn = await UpstreamConnection.open(server(port), { connectMs: 1000, loginMs: 1000 });
        await conn.readLine();
        conn.write('x LOGIN\r\n');
        await conn.readLine();
        const { socket, relay } = conn.detach();
        // Chunks are kept as handed over, not copied: a chunk that were a view of a shared buffer would change under us.
        const chunks: Buffer[] = [];
        const ended = new Promise((r) => socket.once('end', r));
        relay((chunk) => chunks.push(chunk));
        await ended;
        socket.destroy();
        return { chunks: chunks.length, text: Buffer.concat(chunks).toString('latin1') };
      }),
    );
    got.forEach((g, k) => {
      expect(g.chunks).toBeGreaterThan(10);
      expect(g.text).toBe(expected(k));
    });
  });
});
