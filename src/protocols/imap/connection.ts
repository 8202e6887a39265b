import type net from 'node:net';
import type tls from 'node:tls';
import type { EndReason, LiveSession, SessionRegistry } from '../../auth/sessions.js';
import type { Backends, PipeSession } from '../../backends/types.js';
import { upgradeToTls, type TlsProvider } from '../../tls/index.js';
import { plaintextLoginAllowed } from '../limits.js';
import { splice, type Splice } from '../splice.js';
import type { Connection } from '../tcp-listener.js';
import type { ImapContext, ImapState, LoginSuccess } from './command.js';
import { ImapLineBoundary } from './boundary.js';
import { dispatch, type Dispatchable } from './dispatcher.js';
import { ImapFramer } from './framing.js';
import { peekTag } from './parser.js';
import { END_BYE, FATAL_BYE, REPLY } from './responses.js';

/** Capability lists, computed once per listener. */
export interface Capabilities {
  /** Before TLS where password login is not allowed. */
  loginDisabled: string;
  /** Before TLS where password login is allowed (loopback, auth.allowPlaintext). */
  plainLogin: string;
  /** Under TLS, before login. */
  secure: string;
  /** After login with no backend. */
  authenticated: string;
}

const BASE_CAPS = 'IMAP4rev1 ID LITERAL+';
const AUTH_CAPS = 'SASL-IR AUTH=PLAIN AUTH=LOGIN';

export const CAPABILITIES: Capabilities = {
  loginDisabled: `${BASE_CAPS} STARTTLS LOGINDISABLED`,
  plainLogin: `${BASE_CAPS} STARTTLS ${AUTH_CAPS}`,
  secure: `${BASE_CAPS} ${AUTH_CAPS}`,
  authenticated: BASE_CAPS,
};

/** The three possible greetings, built once. */
const GREETINGS = {
  loginDisabled: REPLY.greeting(CAPABILITIES.loginDisabled),
  plainLogin: REPLY.greeting(CAPABILITIES.plainLogin),
  secure: REPLY.greeting(CAPABILITIES.secure),
};

/** Everything a connection shares with the others on its listener. */
export interface ImapListenerContext extends ImapContext {
  sessions: SessionRegistry;
  backends: Backends;
  tls: TlsProvider;
  /** auth.allowPlaintext: password login before TLS from any address. */
  allowPlaintext: boolean;
  /** This listener's open connections (told to drain on shutdown). */
  open: Set<ImapConnection>;
}

/** How long a closing socket may linger for its last reply before it is destroyed. */
const CLOSE_LINGER_MS = 2000;

/**
 * One IMAP connection: the not-authenticated state machine around a socket.
 * Framing, parsing and the command gates live in their own modules; this
 * class owns the socket, ordering (one command at a time, pipelined input
 * buffered within bounds), flow control, timers, the STARTTLS upgrade, the
 * hand-off to a backend, and goodbyes. It is also the LiveSession the
 * registry ends on revocation.
 *
 * Kept small on purpose: an idle logged-in connection holds no buffers, no
 * per-connection logger and a handful of bound handlers.
 */
export class ImapConnection implements Dispatchable, LiveSession {
  readonly protocol = 'imap' as const;
  keyId = '';
  account = '';
  expiresAt: string | null = null;
  state: ImapState = 'not_authenticated';
  secure: boolean;
  readonly remoteAddress: string;
  private readonly remotePort: number;
  private socket: net.Socket | tls.TLSSocket;
  private readonly framer: ImapFramer;
  /** A handler is running; further input waits in the framer. */
  private busy = false;
  /** A handler waits for a continuation line (AUTHENTICATE). */
  private waiter: ((line: Buffer | null) => void) | null = null;
  /** BYE sent (or the socket closed): nothing more is read or written. */
  private ending = false;
  /** The client sent its FIN; we close once its last command is answered. */
  private clientEnded = false;
  /** Shutdown asked: say BYE as soon as no command is running. */
  private draining = false;
  private paused = false;
  private writeBlocked = false;
  private commands = 0;
  private errors = 0;
  private loginTimer: NodeJS.Timeout | null = null;
  /** After our BYE: destroys the socket if the peer does not close its side. */
  private lingerTimer: NodeJS.Timeout | null = null;
  /** The post-login inactivity timer is armed on the socket. */
  private idleArmed = false;
  private unregister: (() => void) | null = null;
  private pipe: PipeSession | null = null;
  private splice: Splice | null = null;
  private boundary: ImapLineBoundary | null = null;
  /** Tells the listener this connection is past login (a full listener closes the others first). */
  private readonly markLoggedIn: () => void;

  constructor(
    readonly context: ImapListenerContext,
    conn: Connection,
  ) {
    this.socket = conn.socket;
    this.remoteAddress = conn.remoteAddress;
    this.remotePort = conn.remotePort;
    this.secure = conn.secure;
    this.framer = new ImapFramer(context.limits);
    conn.onShutdown(() => this.end('shutdown'));
    this.markLoggedIn = () => conn.loggedIn();
  }

  /** Greets the client and starts reading. */
  start(): void {
    this.context.open.add(this);
    this.attach(this.socket);
    this.loginTimer = setTimeout(this.onLoginTimeout, this.context.limits.loginTimeoutMs);
    this.loginTimer.unref();
    this.send(this.secure ? GREETINGS.secure : this.mayLogin ? GREETINGS.plainLogin : GREETINGS.loginDisabled);
  }

  get mayLogin(): boolean {
    return plaintextLoginAllowed({ secure: this.secure, remoteAddress: this.remoteAddress, allowPlaintext: this.context.allowPlaintext });
  }

  capabilities(): string {
    if (this.state !== 'not_authenticated') return CAPABILITIES.authenticated;
    if (this.secure) return CAPABILITIES.secure;
    return this.mayLogin ? CAPABILITIES.plainLogin : CAPABILITIES.loginDisabled;
  }

  send(text: string): void {
    if (this.ending) return;
    if (!this.socket.write(text) && !this.writeBlocked) {
      this.writeBlocked = true;
      this.socket.once('drain', this.onDrain);
      this.updateFlow();
    }
  }

  readContinuation(prompt: string): Promise<Buffer | null> {
    if (this.ending) return Promise.resolve(null);
    this.send(prompt === '' ? '+ \r\n' : `+ ${prompt}\r\n`);
    return new Promise((resolve) => {
      this.waiter = resolve;
      // The line may already be buffered (pipelined by the client).
      queueMicrotask(this.pump);
    });
  }

  countCommand(): boolean {
    if (this.state !== 'not_authenticated') return true;
    if (++this.commands <= this.context.limits.commandsBeforeLogin) return true;
    this.close(REPLY.byeTooManyCommands);
    return false;
  }

  protocolError(tag: string | null, reply: string): void {
    const line = `${tag ?? '*'} ${reply}\r\n`;
    // `protocolErrors` are tolerated (answered); the next one is answered and closes the connection.
    if (++this.errors > this.context.limits.protocolErrors) this.close(line + REPLY.byeTooManyErrors);
    else this.send(line);
  }

  async authenticated(tag: string, result: LoginSuccess): Promise<void> {
    if (this.ending) return;
    const backend = this.context.backends.imap;
    let pipe: PipeSession | null = null;
    if (backend) {
      try {
        pipe = await backend.open({ protocol: 'imap', account: result.account, key: result.key, clientIp: this.remoteAddress, clientPort: this.remotePort, secure: this.secure });
      } catch (err) {
        this.context.logger.warn({ ip: this.remoteAddress, account: result.account.address, err: (err as Error).message }, 'IMAP backend unavailable');
        this.send(`${tag} ${REPLY.backendDown}\r\n`);
        return;
      }
      if (this.ending) {
        pipe.close();
        return;
      }
    }
    this.clearLoginTimer();
    this.state = 'authenticated';
    this.keyId = result.key.id;
    this.account = result.account.address;
    this.expiresAt = result.key.expiresAt;
    this.unregister = this.context.sessions.add(this);
    this.markLoggedIn();
    if (pipe) {
      this.send(`${tag} OK [CAPABILITY ${pipe.capabilities?.join(' ') ?? CAPABILITIES.authenticated}] Logged in\r\n`);
      this.startPipe(pipe);
      return;
    }
    this.send(`${tag} OK [CAPABILITY ${CAPABILITIES.authenticated}] Logged in\r\n`);
    this.idleArmed = true;
    this.socket.setTimeout(this.context.limits.idleTimeoutMs);
    this.socket.on('timeout', this.onLoginTimeout);
  }

  async startTls(tag: string): Promise<void> {
    const plain = this.socket as net.Socket;
    // Nothing received so far may be read as a command once TLS is up.
    this.framer.discard();
    plain.off('data', this.onData);
    plain.off('drain', this.onDrain);
    this.paused = false;
    this.writeBlocked = false;
    this.send(`${tag} OK Begin TLS negotiation now\r\n`);
    let secure: tls.TLSSocket;
    try {
      secure = await upgradeToTls(plain, this.context.tls);
    } catch (err) {
      this.context.logger.debug({ ip: this.remoteAddress, err: (err as Error).message }, 'STARTTLS handshake failed');
      this.onClose();
      return;
    }
    if (this.ending) {
      secure.destroy();
      return;
    }
    this.socket = secure;
    this.secure = true;
    this.attach(secure);
  }

  logout(tag: string): void {
    this.close(`${REPLY.byeLogout}${tag} OK LOGOUT completed\r\n`);
  }

  /** LiveSession: the key was revoked or expired, the account disabled, or the server is going down. */
  end(reason: EndReason): void {
    if (this.ending) return;
    // Piped: no upstream byte may follow the BYE, and the BYE may not land
    // inside a line or a literal the client is still reading (it would be
    // taken for message bytes): then the session ends without one.
    this.splice?.stop();
    this.close(!this.pipe || this.boundary?.atLineStart ? END_BYE[reason] : undefined);
  }

  /** Shutdown has begun: an idle session says BYE now, a busy one after its command; piped sessions keep running. */
  drain(): void {
    this.draining = true;
    if (!this.busy && !this.pipe) this.close(END_BYE.shutdown);
  }

  // ---- internals ----

  private attach(socket: net.Socket | tls.TLSSocket): void {
    // A client's FIN ends its input, not our replies: commands it sent before
    // it (`printf … | nc -N`) are answered, then the connection is closed.
    socket.allowHalfOpen = true;
    socket.on('data', this.onData);
    socket.once('end', this.onEnd);
    socket.on('error', this.onError);
    socket.once('close', this.onClose);
  }

  private readonly onEnd = (): void => {
    this.clientEnded = true;
    if (!this.pipe) this.pump();
  };

  private readonly onData = (chunk: Buffer): void => {
    this.framer.push(chunk);
    this.pump();
  };

  /** Frames and runs what has arrived, one command at a time. */
  private readonly pump = (): void => {
    while (!this.ending && (!this.busy || this.waiter !== null)) {
      const frame = this.framer.next(this.waiter !== null ? 'line' : 'command');
      if (frame === null) break;
      switch (frame.kind) {
        case 'line': {
          const waiter = this.waiter!;
          this.waiter = null;
          waiter(frame.raw);
          break;
        }
        case 'literal':
          this.send(REPLY.continueLiteral);
          break;
        case 'refused':
          this.protocolError(peekTag(frame.head), frame.reason === 'literal_too_large' ? REPLY.literalTooLarge : REPLY.commandTooLong);
          break;
        case 'fatal':
          this.close(FATAL_BYE[frame.reason]);
          return;
        case 'command':
          this.run(frame.raw);
          break;
      }
    }
    // Everything the client sent before its FIN is answered: nothing more can come.
    if (this.clientEnded && !this.ending && !this.pipe && (!this.busy || this.waiter !== null)) return this.close();
    this.updateFlow();
  };

  private run(raw: Buffer): void {
    let pending: void | Promise<void>;
    try {
      pending = dispatch(this, raw);
    } catch (err) {
      this.internalError(raw, err);
      return;
    }
    if (pending === undefined) {
      if (this.draining && !this.pipe) this.close(END_BYE.shutdown);
      return;
    }
    this.busy = true;
    pending.then(this.onDone, (err: unknown) => {
      this.internalError(raw, err);
      this.onDone();
    });
  }

  private readonly onDone = (): void => {
    this.busy = false;
    this.waiter = null;
    if (this.pipe || this.ending) return;
    if (this.draining) return this.close(END_BYE.shutdown);
    this.pump();
  };

  private internalError(raw: Buffer, err: unknown): void {
    this.context.logger.error({ err, ip: this.remoteAddress }, 'IMAP command failed');
    this.send(`${peekTag(raw) ?? '*'} ${REPLY.serverBug}\r\n`);
  }

  /** Stops reading while too much input waits or the client is not reading our replies. */
  private updateFlow(): void {
    if (this.ending || this.pipe) return;
    const pause = this.writeBlocked || this.framer.buffered > this.framer.commandLimit * 2;
    if (pause === this.paused) return;
    this.paused = pause;
    if (pause) this.socket.pause();
    else this.socket.resume();
  }

  private readonly onDrain = (): void => {
    this.writeBlocked = false;
    this.updateFlow();
  };

  private readonly onLoginTimeout = (): void => {
    this.loginTimer = null;
    this.close(REPLY.byeAutologout);
  };

  private readonly onError = (err: Error & { code?: string }): void => {
    this.context.logger.debug({ ip: this.remoteAddress, code: err.code, err: err.message }, 'IMAP socket error');
  };

  private readonly onClose = (): void => {
    this.context.open.delete(this);
    this.ending = true;
    if (this.lingerTimer) clearTimeout(this.lingerTimer);
    this.lingerTimer = null;
    this.cleanup();
    this.pipe?.close();
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.(null);
  };

  private startPipe(pipe: PipeSession): void {
    this.pipe = pipe;
    const client = this.socket;
    client.off('data', this.onData);
    client.off('drain', this.onDrain);
    const pending = this.framer.takeRest();
    if (pending) pipe.socket.write(pending);
    const boundary = new ImapLineBoundary();
    this.boundary = boundary;
    this.splice = splice(client, pipe, {
      lingerMs: CLOSE_LINGER_MS,
      onRelay: (chunk) => boundary.feed(chunk),
      onUpstreamError: (err) => this.context.logger.debug({ ip: this.remoteAddress, err: err.message }, 'IMAP upstream connection failed'),
      onUpstreamEnded: () => {
        this.ending = true;
        this.state = 'logout';
        this.cleanup();
      },
    });
  }

  /** Sends a last reply (if any), half-closes, and destroys the socket if the peer lingers. */
  private close(last?: string): void {
    if (this.ending) return;
    this.ending = true;
    this.state = 'logout';
    this.cleanup();
    const socket = this.socket;
    if (last === undefined) socket.end();
    else socket.end(last);
    this.lingerTimer = setTimeout(() => socket.destroy(), CLOSE_LINGER_MS);
    this.lingerTimer.unref();
  }

  private clearLoginTimer(): void {
    if (this.loginTimer) clearTimeout(this.loginTimer);
    this.loginTimer = null;
  }

  /** Timers and the live-session entry; safe to call more than once. */
  private cleanup(): void {
    this.clearLoginTimer();
    if (this.idleArmed) {
      this.idleArmed = false;
      this.socket.setTimeout(0);
    }
    this.unregister?.();
    this.unregister = null;
  }
}
