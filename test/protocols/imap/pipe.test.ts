import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackendUnavailableError, NO_BACKENDS, type Backends, type SessionContext } from '../../../src/backends/types.js';
import { type SingleKeygate, sleep, startKeygate } from '../../helpers/keygate.js';
import { LineClient } from '../../helpers/line-client.js';
import { waitFor } from '../../helpers/wait.js';

const ACCOUNT = 'alice@example.com';

/** A stand-in upstream IMAP server that is already logged in: answers SELECT, FETCH (big) and LOGOUT. */
function startUpstream(): Promise<{ port: number; sockets: Set<net.Socket>; opened: SessionContext[]; server: net.Server }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString('latin1');
      for (let i = buf.indexOf('\r\n'); i >= 0; i = buf.indexOf('\r\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const [tag, cmd] = line.split(' ');
        if (cmd === 'SELECT') s.write(`* 3 EXISTS\r\n${tag} OK [READ-WRITE] SELECT completed\r\n`);
        else if (cmd === 'FETCH') {
          const body = 'x'.repeat(2 * 1024 * 1024);
          s.write(`* 1 FETCH (BODY[] {${body.length}}\r\n${body})\r\n${tag} OK FETCH completed\r\n`);
        } else if (cmd === 'HUGE') {
          // A 256 MB literal, streamed with backpressure: more than any socket buffers hold.
          const size = 256 * 1024 * 1024;
          const chunk = Buffer.alloc(64 * 1024, 'y');
          let sent = 0;
          s.write(`* 1 FETCH (BODY[] {${size}}\r\n`);
          const more = (): void => {
            while (sent < size && !s.destroyed) {
              sent += chunk.length;
              if (!s.write(chunk)) return void s.once('drain', more);
            }
            if (!s.destroyed) s.write(`)\r\n${tag} OK FETCH completed\r\n`);
          };
          more();
        } else if (cmd === 'LOGOUT') s.end(`* BYE upstream\r\n${tag} OK LOGOUT completed\r\n`);
        else s.write(`${tag} OK upstream ${cmd}\r\n`);
      }
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ port: (server.address() as net.AddressInfo).port, sockets, opened: [], server })));
}

let up: Awaited<ReturnType<typeof startUpstream>>;
let h: SingleKeygate;
let key: string;
let failNext = false;

beforeAll(async () => {
  up = await startUpstream();
  const backends: Backends = {
    ...NO_BACKENDS,
    imap: {
      async open(ctx) {
        if (failNext) {
          failNext = false;
          throw new BackendUnavailableError('upstream down');
        }
        up.opened.push(ctx);
        const socket = net.connect(up.port, '127.0.0.1');
        await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
        return { socket, capabilities: ['IMAP4rev1', 'IDLE', 'UIDPLUS'], relay: (sink) => void socket.on('data', sink), close: () => socket.destroy() };
      },
    },
  };
  h = await startKeygate({ backends });
  ({ key } = await h.issue(ACCOUNT, ['imap']));
});
afterAll(async () => {
  await h.close();
  await new Promise((r) => up.server.close(r));
});

describe('hand-off to an IMAP backend', () => {
  it("announces the backend's capabilities and pipes both ways, including commands pipelined after LOGIN", async () => {
    const c = await LineClient.connect(h.port('imap'));
    await c.line();
    c.write(`a LOGIN ${ACCOUNT} ${key}\r\nb SELECT INBOX\r\n`);
    expect(await c.line()).toBe('a OK [CAPABILITY IMAP4rev1 IDLE UIDPLUS] Logged in');
    expect(await c.response('b')).toEqual(['* 3 EXISTS', 'b OK [READ-WRITE] SELECT completed']);
    expect(up.opened.at(-1)).toMatchObject({ protocol: 'imap', clientIp: '127.0.0.1', secure: false, account: { address: ACCOUNT } });
    c.write('c FETCH 1 BODY[]\r\n');
    const lines = await c.response('c', 10_000);
    expect(lines.at(-1)).toBe('c OK FETCH completed');
    expect(lines.join('\r\n').length).toBeGreaterThan(2 * 1024 * 1024);
    c.write('d LOGOUT\r\n');
    expect(await c.response('d')).toEqual(['* BYE upstream', 'd OK LOGOUT completed']);
    await c.closed;
    await sleep(50);
    expect(up.sockets.size).toBe(0);
    expect(h.sessions.count()).toBe(0);
  });

  it('after the upstream logs out, closes a client that keeps its side open', async () => {
    const raw = net.connect({ port: h.port('imap'), host: '127.0.0.1', allowHalfOpen: true });
    let text = '';
    raw.on('data', (d: Buffer) => (text += d.toString()));
    raw.on('error', () => {});
    const ended = new Promise((r) => raw.once('end', r));
    const closed = new Promise((r) => raw.once('close', r));
    raw.write(`a LOGIN ${ACCOUNT} ${key}\r\nb LOGOUT\r\n`);
    await ended;
    expect(text).toMatch(/\r\n\* BYE upstream\r\nb OK LOGOUT completed\r\n$/);
    await waitFor(() => up.sockets.size === 0 && h.sessions.count() === 0);
    // Keygate lets go after its 2 s linger: from then on the peer answers a
    // write with a reset (reads stopped at the FIN, so it takes a second write).
    let isClosed = false;
    void closed.then(() => (isClosed = true));
    for (const deadline = Date.now() + 5000; !isClosed && Date.now() < deadline; await sleep(200)) raw.write('c NOOP\r\n');
    expect(isClosed).toBe(true);
  });

  it('a client that half-closes after its last command still gets every reply', async () => {
    for (const pipelined of [false, true]) {
      const raw = net.connect({ port: h.port('imap'), host: '127.0.0.1', allowHalfOpen: true });
      let text = '';
      raw.on('data', (d: Buffer) => (text += d.toString()));
      const closed = new Promise((r) => raw.once('close', r));
      if (pipelined) {
        // printf '…' | nc -N: everything at once, then FIN.
        raw.end(`a LOGIN ${ACCOUNT} ${key}\r\nb SELECT INBOX\r\nc LOGOUT\r\n`);
      } else {
        raw.write(`a LOGIN ${ACCOUNT} ${key}\r\n`);
        await waitFor(() => text.includes('a OK'));
        raw.end('b SELECT INBOX\r\nc LOGOUT\r\n');
      }
      await closed;
      expect(text, pipelined ? 'pipelined' : 'after login').toMatch(/\r\nb OK \[READ-WRITE\] SELECT completed\r\n\* BYE upstream\r\nc OK LOGOUT completed\r\n$/);
    }
    await waitFor(() => up.sockets.size === 0 && h.sessions.count() === 0);
  });

  it('closes the upstream when the client vanishes', async () => {
    const c = await LineClient.connect(h.port('imaps'), { tls: true });
    await c.line();
    expect(await c.command('a', `LOGIN ${ACCOUNT} ${key}`)).toMatch(/^a OK/);
    expect(up.sockets.size).toBe(1);
    c.destroy();
    await sleep(100);
    expect(up.sockets.size).toBe(0);
    expect(h.sessions.count()).toBe(0);
  });

  it('ends a piped session with * BYE on revocation, and closes the upstream', async () => {
    const { key: k, id } = await h.issue(ACCOUNT, ['imap']);
    const c = await LineClient.connect(h.port('imap'));
    await c.line();
    expect(await c.command('a', `LOGIN ${ACCOUNT} ${k}`)).toMatch(/^a OK/);
    await h.store.revokeKey(id, new Date().toISOString());
    expect(await c.line(1000)).toBe('* BYE Session revoked');
    await c.closed;
    await sleep(50);
    expect(up.sockets.size).toBe(0);
  });

  it('on revocation in the middle of a literal, ends the session without a BYE inside the message', async () => {
    const { key: k, id } = await h.issue(ACCOUNT, ['imap']);
    const raw = net.connect({ port: h.port('imap'), host: '127.0.0.1' });
    let text = '';
    const onData = (d: Buffer): void => void (text += d.toString('latin1'));
    raw.on('data', onData);
    const closed = new Promise((r) => raw.once('close', r));
    raw.write(`a LOGIN ${ACCOUNT} ${k}\r\nb HUGE\r\n`);
    // Stop reading once the literal has begun: Keygate is left mid-literal.
    await waitFor(() => text.includes('BODY[] {'));
    raw.pause();
    await sleep(50);
    await h.store.revokeKey(id, new Date().toISOString());
    await waitFor(() => up.sockets.size === 0);
    raw.resume();
    await closed;
    expect(text).toContain('* 1 FETCH (BODY[] {268435456}\r\nyyyy');
    expect(text.length).toBeLessThan(256 * 1024 * 1024); // cut short, as it should be
    expect(text).not.toContain('* BYE Session revoked');
  });

  it('answers NO [UNAVAILABLE] when the backend cannot be reached, and the client may try again', async () => {
    const c = await LineClient.connect(h.port('imap'));
    await c.line();
    failNext = true;
    expect(await c.command('a', `LOGIN ${ACCOUNT} ${key}`)).toBe('a NO [UNAVAILABLE] Mailbox backend unavailable, try again later');
    expect(h.sessions.count()).toBe(0);
    expect(await c.command('b', `LOGIN ${ACCOUNT} ${key}`)).toMatch(/^b OK/);
    c.destroy();
  });
});
