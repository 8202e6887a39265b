import type net from 'node:net';
import type tls from 'node:tls';
import type { EndReason } from '../../auth/sessions.js';
import type { PipeSession } from '../../backends/types.js';
import type { Logger } from '../../log.js';
import { upgradeToTls } from '../../tls/index.js';
import type { ListenerDeps } from '../deps.js';
import { plaintextLoginAllowed, type ProtocolLimits } from '../limits.js';
import { checkLogin, refuseLogin, type LoginOutcome, type LoginOutcomeDeps } from '../login-outcome.js';
import { splice, type Splice } from '../splice.js';
import type { Connection } from '../tcp-listener.js';
import { dispatch, type DispatchTarget } from './dispatcher.js';
import { LINE_TOO_LONG, LineFramer } from './framing.js';
import { REPLY, sessionEnded } from './replies.js';
import type { Pop3State } from './types.js';

/** What every connection of one listener shares. */
export interface Pop3Context {
  deps: ListenerDeps;
  limits: ProtocolLimits;
  log: Logger;
}

/** A connection the server has closed is destroyed this long later if the client keeps its side open. */
const CLOSE_LINGER_MS = 1000;

type Mode =
  /** Reading command lines. */
  | 'commands'
  /** STLS answered, handshake running: nothing is read or written in the clear. */
  | 'tls'
  /** Logged in with a backend: bytes flow between client and upstream untouched. */
  | 'piped'
  | 'closed';

/**
 * One POP3 client connection: the AUTHORIZATION state machine, the TLS
 * upgrade, login, and afterwards either the no-backend TRANSACTION state or a
 * byte pipe to the backend. Commands are processed one at a time, in order;
 * while one is pending (a login, a handshake) the socket is paused, and while
 * the client does not read its replies no further command is processed, so a
 * pipelining client cannot make the server buffer without bound.
 */
export class Pop3Connection implements DispatchTarget {
  state: Pop3State = 'authorization';
  pendingUser: string | null = null;
  secure: boolean;
  commandsBeforeLogin = 0;

  private socket: net.Socket | tls.TLSSocket;
  private readonly framer: LineFramer;
  private mode: Mode = 'commands';
  private busy = false;
  /** The client sent its FIN; we close once its last line is answered. */
  private clientEnded = false;
  private continuation: ((line: string) => Promise<void> | void) | null = null;
  private errors = 0;
  private loginTimer: NodeJS.Timeout | null = null;
  private unregister: (() => void) | null = null;
  private pipe: PipeSession | null = null;
  private splice: Splice | null = null;

  constructor(
    private readonly ctx: Pop3Context,
    private readonly conn: Connection,
  ) {
    this.socket = conn.socket;
    this.secure = conn.secure;
    this.framer = new LineFramer(ctx.limits.lineLength);
  }

  get passwordLoginAllowed(): boolean {
    return plaintextLoginAllowed({ secure: this.secure, remoteAddress: this.conn.remoteAddress, allowPlaintext: this.ctx.deps.config.auth.allowPlaintext });
  }

  /** A getter, read fresh after each await (a direct `this.mode` comparison would be narrowed away by TypeScript). */
  private get closed(): boolean {
    return this.mode === 'closed';
  }

  /** Greets the client and starts reading. */
  start(): void {
    this.watch(this.socket);
    this.conn.onShutdown(() => this.end('shutdown'));
    this.loginTimer = setTimeout(() => this.close(REPLY.loginTimeout), this.ctx.limits.loginTimeoutMs);
    this.loginTimer.unref();
    this.reply(REPLY.greeting);
  }

  reply(...lines: string[]): void {
    if (this.mode === 'closed' || !this.socket.writable) return;
    this.socket.write(`${lines.join('\r\n')}\r\n`);
  }

  protocolError(line: string): void {
    // `protocolErrors` are tolerated (answered); the next one closes the connection.
    if (++this.errors > this.ctx.limits.protocolErrors) this.close(REPLY.tooManyErrors);
    else this.reply(line);
  }

  expectContinuation(fn: (line: string) => Promise<void> | void): void {
    this.continuation = fn;
  }

  quit(line: string): void {
    this.close(line);
  }

  async login(username: string, secret: string): Promise<void> {
    return this.answerLogin(await checkLogin(this.outcomeDeps(), { protocol: 'pop3', username, secret, ip: this.conn.remoteAddress }));
  }

  async refuseLogin(username: string, reason: string): Promise<void> {
    return this.answerLogin(await refuseLogin(this.outcomeDeps(), { protocol: 'pop3', username, ip: this.conn.remoteAddress }, reason));
  }

  private outcomeDeps(): LoginOutcomeDeps {
    return { authenticator: this.ctx.deps.authenticator, logger: this.ctx.log, failureDelayMs: this.ctx.limits.failureDelayMs };
  }

  /** POP3's answer to a login outcome: `-ERR [AUTH]`, `-ERR [SYS/TEMP]`, or the session is handed over (backend, registry, +OK). */
  private async answerLogin(outcome: LoginOutcome): Promise<void> {
    if (this.closed) return;
    if (outcome.kind !== 'ok') {
      this.reply(outcome.kind === 'temporary' ? REPLY.authTemporary : REPLY.authFailed);
      return;
    }
    const { backends, sessions } = this.ctx.deps;
    const { remoteAddress: ip, remotePort } = this.conn;
    const { key, account } = outcome;
    let pipe: PipeSession | null = null;
    if (backends.pop3) {
      try {
        pipe = await backends.pop3.open({ protocol: 'pop3', account, key, clientIp: ip, clientPort: remotePort, secure: this.secure });
      } catch (err) {
        this.ctx.log.warn({ err: (err as Error).message, ip, account: account.address }, 'POP3 backend unavailable');
        this.reply(REPLY.backendUnavailable);
        return;
      }
      if (this.closed) {
        pipe.close();
        return;
      }
    }

    this.clearLoginTimer();
    this.state = 'transaction';
    this.unregister = sessions.add({
      protocol: 'pop3',
      keyId: key.id,
      account: account.address,
      expiresAt: key.expiresAt,
      end: (reason) => this.end(reason),
    });
    this.conn.loggedIn();
    this.reply(REPLY.loggedIn);
    if (pipe) this.startPipe(pipe);
    // RFC 1939 autologout: silently, without entering UPDATE.
    else this.socket.setTimeout(this.ctx.limits.idleTimeoutMs, () => this.socket.destroy());
  }

  async startTls(): Promise<void> {
    const plain = this.socket as net.Socket;
    this.mode = 'tls';
    // Whatever arrived after STLS was sent in the clear and is not a command.
    this.framer.clear();
    plain.off('data', this.onData);
    this.reply(REPLY.stls);
    let secure: tls.TLSSocket;
    try {
      secure = await upgradeToTls(plain, this.ctx.deps.tls);
    } catch (err) {
      this.ctx.log.debug({ ip: this.conn.remoteAddress, err: (err as Error).message }, 'POP3 STLS handshake failed');
      this.cleanup();
      return;
    }
    if (this.mode !== 'tls') {
      secure.destroy();
      return;
    }
    this.socket = secure;
    this.secure = true;
    this.pendingUser = null;
    this.mode = 'commands';
    this.watch(secure);
  }

  /** Ends a session from outside (revocation, expiry, shutdown): `-ERR` and close. */
  end(reason: EndReason): void {
    // Piped: no upstream byte may follow the -ERR.
    this.splice?.stop();
    this.close(sessionEnded(reason));
  }

  private watch(socket: net.Socket | tls.TLSSocket): void {
    // A client's FIN ends its input, not our replies: lines it sent before it
    // are answered, then the connection is closed.
    socket.allowHalfOpen = true;
    socket.on('data', this.onData);
    socket.once('end', this.onEnd);
    socket.once('close', this.onClose);
    socket.on('error', this.onError);
  }

  private readonly onEnd = (): void => {
    this.clientEnded = true;
    if (this.mode === 'commands') void this.pump();
  };

  private readonly onData = (chunk: Buffer): void => {
    if (this.mode !== 'commands') return;
    this.framer.push(chunk);
    void this.pump();
  };

  private readonly onClose = (): void => {
    this.mode = 'closed';
    this.cleanup();
  };

  private readonly onError = (err: Error & { code?: string }): void => {
    this.ctx.log.debug({ ip: this.conn.remoteAddress, code: err.code, err: err.message }, 'POP3 socket error');
  };

  /** Processes buffered lines one at a time until none is left or the mode changes. */
  private async pump(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      while (this.mode === 'commands') {
        if (this.socket.writableNeedDrain) {
          await this.drained();
          continue;
        }
        const line = this.framer.next();
        if (line === null) break;
        if (line === LINE_TOO_LONG) {
          this.close(REPLY.lineTooLong);
          break;
        }
        const pending = this.handleLine(line.toString('utf8'));
        if (pending) {
          if (this.mode === 'commands') this.socket.pause();
          await pending;
        }
      }
    } catch (err) {
      this.ctx.log.error({ err, ip: this.conn.remoteAddress }, 'POP3 command failed');
      this.close(REPLY.internal);
    } finally {
      this.busy = false;
    }
    // Every line sent before the client's FIN is answered: nothing more can come.
    if (this.mode === 'commands' && this.clientEnded) return this.close();
    if (this.mode === 'commands' && this.socket.isPaused()) this.socket.resume();
  }

  private handleLine(line: string): Promise<void> | void {
    const continuation = this.continuation;
    if (continuation) {
      this.continuation = null;
      return continuation(line);
    }
    return dispatch(this, line, this.ctx.limits);
  }

  private drained(): Promise<void> {
    const socket = this.socket;
    socket.pause();
    return new Promise((resolve) => {
      const done = (): void => {
        socket.off('drain', done);
        socket.off('close', done);
        resolve();
      };
      socket.on('drain', done);
      socket.on('close', done);
    });
  }

  /** After login with a backend: the client's bytes (including any it pipelined after the login) go upstream as they are. */
  private startPipe(pipe: PipeSession): void {
    this.mode = 'piped';
    this.pipe = pipe;
    const client = this.socket;
    client.off('data', this.onData);
    const rest = this.framer.takeRest();
    if (rest.length > 0) pipe.socket.write(rest);
    this.splice = splice(client, pipe, {
      lingerMs: CLOSE_LINGER_MS,
      onUpstreamError: (err) => this.ctx.log.debug({ ip: this.conn.remoteAddress, err: err.message }, 'POP3 upstream connection failed'),
      onUpstreamEnded: () => this.cleanup(),
    });
  }

  /** Sends a last line, if any (not during a TLS handshake, where it would be cleartext inside TLS), and closes. */
  private close(line?: string): void {
    if (this.mode === 'closed') return;
    const socket = this.socket;
    if (this.mode === 'tls') socket.destroy();
    else if (socket.writable) socket.end(line === undefined ? '' : `${line}\r\n`);
    this.mode = 'closed';
    this.cleanup();
    setTimeout(() => socket.destroy(), CLOSE_LINGER_MS).unref();
  }

  private clearLoginTimer(): void {
    if (this.loginTimer) clearTimeout(this.loginTimer);
    this.loginTimer = null;
  }

  /** Idempotent: timers, live-session registration, upstream. */
  private cleanup(): void {
    this.mode = 'closed';
    this.continuation = null;
    this.framer.clear();
    this.clearLoginTimer();
    this.unregister?.();
    this.unregister = null;
    const pipe = this.pipe;
    this.pipe = null;
    pipe?.close();
  }
}
