import { PassThrough, Writable, type Readable } from 'node:stream';
import type { PipeSession, SessionContext } from '../../src/backends/types.js';
import { newKey } from '../../src/keys/new-key.js';
import type { AccountRecord } from '../../src/keys/record.js';
import { createLogger, type Logger } from '../../src/log.js';

/** A logger that keeps its lines for assertions (JSON, one per line). */
export function memoryLogger(level = 'debug'): { logger: Logger; text: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(c, _e, cb) {
      chunks.push(c.toString());
      cb();
    },
  });
  return { logger: createLogger(level, stream as never), text: () => chunks.join('') };
}

export function account(address: string, upstream: Record<string, unknown> | null = null): AccountRecord {
  return { address, aliases: [], displayName: null, disabled: false, createdAt: new Date().toISOString(), upstream };
}

export function session(acct: AccountRecord, protocol: SessionContext['protocol'], clientIp = '192.0.2.7'): SessionContext {
  const { record } = newKey({ name: 'test', account: acct.address, scopes: ['*'] });
  return { protocol, account: acct, key: record, clientIp, clientPort: 50123, secure: true };
}

/** Reads from a piped socket until `done(text)` holds; rejects after ms. */
export function readUntil(socket: Readable, done: (text: string) => boolean, ms = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out; got ${JSON.stringify(text.slice(-500))}`));
    }, ms);
    const onData = (d: Buffer): void => {
      text += d.toString('latin1');
      if (done(text)) {
        cleanup();
        resolve(text);
      }
    };
    const onEnd = (): void => {
      cleanup();
      reject(new Error(`closed; got ${JSON.stringify(text.slice(-500))}`));
    };
    function cleanup(): void {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.pause();
    }
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.resume();
  });
}

const readers = new WeakMap<PipeSession, Readable>();

/** The upstream's bytes of a PipeSession as a stream (its `relay` can be started only once, so one per session). */
export function upstreamBytes(pipe: PipeSession): Readable {
  let out = readers.get(pipe);
  if (!out) {
    const stream = new PassThrough();
    pipe.relay((c) => stream.write(c));
    pipe.socket.once('end', () => stream.end());
    readers.set(pipe, (out = stream));
  }
  return out;
}

/** A plain RFC 5322 message of about `bytes` bytes (base64 body lines). */
export function makeMessage(from: string, to: string, subject: string, bytes = 0): Buffer {
  const head = `From: <${from}>\r\nTo: <${to}>\r\nSubject: ${subject}\r\nMessage-ID: <${Date.now()}.${Math.random().toString(36).slice(2)}@keygate.test>\r\nDate: ${new Date().toUTCString()}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n`;
  const lines: string[] = ['Hello from the Keygate backend tests.'];
  const line = 'abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklm';
  for (let size = head.length; size < bytes; size += line.length + 2) lines.push(line);
  return Buffer.from(`${head}${lines.join('\r\n')}\r\n`);
}
