import { isIP, connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { AdaptiveReads } from './adaptive-reads.js';
import { upstreamAddress, type UpstreamServer } from './routing.js';
import type { PipeSession } from './types.js';

const EMPTY = Buffer.alloc(0);

/** Longest line accepted from an upstream before login (guards memory against a broken server). */
const MAX_LINE = 64 * 1024;

/** An upstream failed in a way worth logging (connect refused, timeout, TLS, unexpected reply); never carries a password. */
export class UpstreamError extends Error {
  constructor(
    message: string,
    readonly stage: 'connect' | 'tls' | 'greeting' | 'login' | 'protocol' | 'timeout',
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'UpstreamError';
  }
}

export interface Timeouts {
  connectMs: number;
  loginMs: number;
  /** Told how long each successful connect took, seconds (keygate_upstream_connect_duration_seconds). */
  observeConnect?: (seconds: number) => void;
  /** Told of each failed upstream session or delivery (keygate_upstream_failures_total). */
  countFailure?: (reason: FailureReason) => void;
}

/** Why an upstream failed, as keygate_upstream_failures_total counts it. */
export type FailureReason = UpstreamError['stage'] | 'route';

/**
 * One upstream connection, up to the point the protocol speaks: TCP to host
 * and port, or the server's unix socket, and the TLS handshake for implicit
 * TLS, with `setNoDelay`, within `connectMs`. Rejects with UpstreamError
 * (`connect`, `tls` or `timeout`).
 */
export function connectSocket(server: UpstreamServer, timeouts: Pick<Timeouts, 'connectMs' | 'observeConnect'>, onread?: AdaptiveReads['onread']): Promise<Socket> {
  const started = performance.now();
  return new Promise<Socket>((resolve, reject) => {
    const implicit = server.tls === 'implicit';
    const target = server.socket ? { path: server.socket } : { host: server.host, port: server.port };
    const s: Socket = implicit
      ? tlsConnect({ ...target, servername: sni(server.host), rejectUnauthorized: server.verifyCert, minVersion: 'TLSv1.2' })
      : netConnect({ ...target, ...(onread ? { onread } : {}) });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new UpstreamError(`connect to ${upstreamAddress(server)} timed out after ${timeouts.connectMs} ms`, 'timeout'));
    }, timeouts.connectMs);
    if (!server.socket) s.setNoDelay(true);
    s.once(implicit ? 'secureConnect' : 'connect', () => {
      clearTimeout(timer);
      s.off('error', onError);
      timeouts.observeConnect?.((performance.now() - started) / 1000);
      resolve(s);
    });
    const onError = (err: Error): void => {
      clearTimeout(timer);
      s.destroy();
      reject(new UpstreamError(`connect to ${upstreamAddress(server)} failed: ${err.message}`, implicit && !/ECONNREFUSED|ENOENT|ENOTFOUND|EHOSTUNREACH|ENETUNREACH|EAI_AGAIN/.test(err.message) ? 'tls' : 'connect', { cause: err }));
    };
    s.once('error', onError);
  });
}

/**
 * One upstream connection during its pre-login phase: CRLF lines and literal
 * bytes read on demand, under one deadline (connect timeout until connected,
 * then the login timeout). `detach()` hands the socket over positioned right
 * after the last consumed byte: anything read ahead is pushed back.
 */
export class UpstreamConnection {
  private buffer: Buffer = EMPTY;
  private waiter: (() => void) | null = null;
  private failure: Error | null = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly onData = (chunk: Buffer): void => {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    this.wake();
  };
  private readonly onError = (err: Error): void => this.fail(new UpstreamError(`${err.message}`, 'protocol', { cause: err }));
  private readonly onClose = (): void => this.fail(new UpstreamError('upstream closed the connection', 'protocol'));

  private constructor(
    public socket: Socket,
    readonly server: UpstreamServer,
    /** Plain upstreams only: a TLS socket reads through its own stream. */
    private readonly reads: AdaptiveReads | null,
  ) {
    this.attach();
  }

  /** Connects (TLS at once for `implicit`), with `setNoDelay`. Rejects with UpstreamError. */
  static async open(server: UpstreamServer, timeouts: Timeouts): Promise<UpstreamConnection> {
    const reads = server.tls === 'none' ? new AdaptiveReads() : null;
    const socket = await connectSocket(server, timeouts, reads?.onread);
    const conn = new UpstreamConnection(socket, server, reads);
    conn.timer = setTimeout(() => {
      conn.fail(new UpstreamError(`upstream ${upstreamAddress(server)} did not complete the login within ${timeouts.loginMs} ms`, 'timeout'));
      socket.destroy();
    }, timeouts.loginMs);
    return conn;
  }

  /**
   * Connects, runs the protocol's `login` exchange, and hands the logged-in
   * connection over as a pipe session; a failed login destroys it. Rejects
   * with UpstreamError (or whatever `login` throws).
   */
  static async logIn<T>(server: UpstreamServer, timeouts: Timeouts, login: (conn: UpstreamConnection) => Promise<T>): Promise<{ pipe: PipeSession; result: T }> {
    const conn = await UpstreamConnection.open(server, timeouts);
    let result: T;
    try {
      result = await login(conn);
    } catch (err) {
      conn.destroy();
      throw err;
    }
    return { pipe: conn.detach(), result };
  }

  /** Next line without its CRLF (latin1, so byte counts stay exact). */
  async readLine(): Promise<string> {
    for (;;) {
      const i = this.buffer.indexOf('\r\n');
      if (i >= 0) {
        const line = this.buffer.toString('latin1', 0, i);
        // A consumed chunk is let go of at once (an empty view would keep it alive).
        this.buffer = i + 2 === this.buffer.length ? EMPTY : this.buffer.subarray(i + 2);
        return line;
      }
      if (this.buffer.length > MAX_LINE) throw this.abort(new UpstreamError('upstream sent an overlong line', 'protocol'));
      await this.more();
    }
  }

  /** Exactly n bytes (an IMAP literal). */
  async readBytes(n: number): Promise<Buffer> {
    if (n > MAX_LINE) throw this.abort(new UpstreamError('upstream sent an oversized literal before login', 'protocol'));
    while (this.buffer.length < n) await this.more();
    const out = this.buffer.subarray(0, n);
    this.buffer = n === this.buffer.length ? EMPTY : this.buffer.subarray(n);
    return out;
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** STARTTLS / STLS: the upgrade after the server said go ahead; pre-TLS read-ahead is discarded (RFC 3207 §4.2). */
  async startTls(): Promise<void> {
    this.detachListeners();
    this.buffer = EMPTY;
    const plain = this.socket;
    this.socket = await new Promise<TLSSocket>((resolve, reject) => {
      const s = tlsConnect({ socket: plain, servername: sni(this.server.host), rejectUnauthorized: this.server.verifyCert, minVersion: 'TLSv1.2' });
      const onError = (err: Error): void => {
        s.destroy();
        reject(new UpstreamError(`TLS with ${upstreamAddress(this.server)} failed: ${err.message}`, 'tls', { cause: err }));
      };
      s.once('error', onError);
      s.once('secureConnect', () => {
        s.off('error', onError);
        resolve(s);
      });
    });
    this.socket.setNoDelay(true);
    this.attach();
  }

  /**
   * Hands the logged-in socket over: listeners removed, the login timer
   * stopped, reading paused until `relay` names where the bytes go (any read
   * past the login reply first).
   */
  detach(): PipeSession {
    this.clearTimer();
    this.detachListeners();
    const { socket, reads } = this;
    socket.pause();
    // Even an empty view keeps its whole read buffer alive: only bytes are kept, and only until relayed.
    let readAhead: Buffer | null = this.buffer.length > 0 ? this.buffer : null;
    this.buffer = EMPTY;
    return {
      socket,
      relay(sink) {
        if (reads) reads.sink = sink;
        else socket.on('data', sink);
        socket.resume();
        // Synchronous, so no read can overtake it; a full client buffer may pause the socket again.
        const rest = readAhead;
        readAhead = null;
        if (rest) sink(rest);
      },
      close: () => void socket.destroy(),
    };
  }

  /** Gives up: destroys the socket. */
  destroy(): void {
    this.clearTimer();
    this.detachListeners();
    this.socket.destroy();
  }

  private attach(): void {
    if (this.reads) this.reads.sink = this.onData;
    else this.socket.on('data', this.onData);
    this.socket.on('error', this.onError);
    this.socket.on('close', this.onClose);
  }

  private detachListeners(): void {
    if (this.reads) this.reads.sink = () => {};
    else this.socket.off('data', this.onData);
    this.socket.off('error', this.onError);
    this.socket.off('close', this.onClose);
    // A late error after hand-over or destroy must not crash the process.
    this.socket.on('error', () => {});
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private fail(err: Error): void {
    this.failure ??= err;
    this.wake();
  }

  private abort(err: UpstreamError): UpstreamError {
    this.fail(err);
    this.destroy();
    return err;
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  private async more(): Promise<void> {
    if (this.failure) throw this.failure;
    await new Promise<void>((resolve) => (this.waiter = resolve));
    if (this.failure && !this.buffer.length) throw this.failure;
  }
}

/** SNI only for names (RFC 6066 forbids IP literals). */
function sni(host: string): string | undefined {
  return isIP(host) ? undefined : host;
}
