import type net from 'node:net';
import type tls from 'node:tls';
import type { Authenticator, ClientInfo, FailReason, MailLoggedIn, OpenSession, SessionHandle } from '../auth/authenticate.js';
import type { EndReason } from '../auth/sessions.js';
import type { BackendSessions, PipeSession } from '../backends/types.js';
import type { Logger } from '../log.js';
import { upgradeToTls, type TlsProvider } from '../tls/index.js';
import type { ListenerDeps, RunningListener } from './deps.js';
import { plaintextLoginAllowed, protocolLimits, type ProtocolLimits } from './limits.js';
import { startListenerPair } from './listener-pair.js';
import { splice, type Splice } from './splice.js';
import type { Connection } from './tcp-listener.js';
import { traceCommand, traceSaslResponse } from './trace.js';

/** The protocols that read command lines themselves: IMAP and POP3 until they hand the session to a splice, SMTP throughout. */
export type LineProtocol = 'imap' | 'pop3' | 'smtp';

/** Framing errors after which the stream cannot be resynchronised. */
export type FatalReason = 'line_too_long' | 'literal_too_large' | 'command_too_long';

/** What a framer makes of the input. */
export type Frame =
  /** A complete command (an IMAP command includes its literals), line end removed. */
  | { kind: 'command'; raw: Buffer }
  /** One continuation line (SASL), line end removed. */
  | { kind: 'line'; raw: Buffer }
  /** IMAP: a synchronizing literal was announced and fits: send `+` and its bytes will follow. */
  | { kind: 'literal'; size: number }
  /** IMAP: a synchronizing literal was announced and does not fit: answer `<tag> BAD`; the command so far is dropped. */
  | { kind: 'refused'; reason: 'literal_too_large' | 'command_too_long'; head: Buffer }
  /** SMTP DATA: message bytes, dot-unstuffed. */
  | { kind: 'data'; raw: Buffer }
  /** SMTP DATA: the message's final dot. */
  | { kind: 'dataEnd' }
  /** The stream cannot be resynchronised: say goodbye and close. */
  | { kind: 'fatal'; reason: FatalReason };

/** A pull-based framer: `push()` what the socket delivers, then `next()` until null. Holds no buffer while idle. */
export interface Framer {
  push(chunk: Buffer): void;
  /** The next frame, or null when more input is needed; `line` reads one continuation line. */
  next(mode: 'command' | 'line'): Frame | null;
  /** Drops everything received so far (after STARTTLS no command may cross the upgrade). */
  discard(): void;
  /** Hands over the unconsumed input (to the upstream a session is spliced to) and empties the framer. */
  takeRest(): Buffer | null;
  /** Unconsumed input, bytes. */
  readonly buffered: number;
  /** Reading pauses while more than this many bytes wait. */
  readonly pauseAbove: number;
}

/** Everything a session shares with the others on its listener. */
export interface LineContext {
  authenticator: Authenticator;
  tls: TlsProvider;
  limits: ProtocolLimits;
  /** A child logger naming the protocol. */
  logger: Logger;
  /** `auth.allowPlaintext`: password login before TLS from any address. */
  allowPlaintext: boolean;
  /** This listener's open sessions, told to drain when it shuts down. */
  open: Set<LineSession>;
}

/** The texts and timings a protocol gives the base; whole lines with CRLF. */
export interface SessionTexts {
  /** How long a closing socket may linger for its last reply before it is destroyed, ms. */
  lingerMs: number;
  loginTimeout: string;
  tooManyCommands: string;
  /** After a login without a backend, at the inactivity limit; null closes silently (POP3's autologout). */
  idleTimeout: string | null;
  /** That inactivity limit, ms, when not `limits.idleTimeoutMs` (SMTP's is RFC 5321's 5 minutes). */
  idleTimeoutMs?: number;
  fatal: Record<FatalReason, string>;
  ended: Record<EndReason, string>;
}

/** How a protocol answers each login outcome (whole lines with CRLF). */
export interface LoginAnswers<P extends LineProtocol = LineProtocol> {
  loggedIn(backend: BackendSessions[P] | null): string;
  refused: string;
  temporary: string;
  backendUnavailable: string;
  /** No upstream is configured for the account: a permanent answer. */
  noBackend: string;
}

/**
 * Where a session is in its life. Each state carries what it owns, so a
 * session cannot be piped without a splice or logged in without a registry
 * entry to release.
 */
export type SessionState<P extends LineProtocol = LineProtocol> =
  /** Reading commands before login. */
  | { kind: 'unauthenticated' }
  /** STARTTLS / STLS answered, handshake running: nothing is read or written in the clear. */
  | { kind: 'handshake' }
  /** Logged in, commands answered here: IMAP and POP3 without a backend (that no mailbox is configured), SMTP always (its relay takes message by message). */
  | { kind: 'authenticated'; session: OpenSession<P> }
  /** Logged in with a backend: bytes flow between client and upstream untouched. */
  | { kind: 'piped'; session: OpenSession<P>; splice: Splice }
  /** Our last reply is out; the socket is destroyed after the linger time if the peer keeps it open. */
  | { kind: 'closing'; linger: NodeJS.Timeout | null }
  | { kind: 'closed' };

/**
 * One IMAP or POP3 connection's life around its socket, the same for both:
 * greeting, reading and running one command at a time (pipelined input
 * buffered within bounds, and not read on while the client does not read our
 * replies), continuation lines, a client's half-close (everything it sent
 * before its FIN is answered, then the connection closes), the login timer,
 * the STARTTLS swap, the login through the Authenticator, the hand-over to
 * the splice, goodbyes from outside (revocation, shutdown) and the linger
 * after our last reply. The protocol subclass frames, dispatches and words it.
 *
 * Kept small on purpose: an idle logged-in connection holds no buffers, no
 * per-connection logger and a handful of bound handlers.
 */
export abstract class LineSession<P extends LineProtocol = LineProtocol> implements SessionHandle {
  state: SessionState<P> = { kind: 'unauthenticated' };
  secure: boolean;
  readonly remoteAddress: string;
  readonly clientPort: number;
  /** What the client said of itself (IMAP `ID`), recorded with its login attempts. */
  client: ClientInfo | null = null;
  protected socket: net.Socket | tls.TLSSocket;
  /** A handler is running; further input waits in the framer (except the continuation line it waits for). */
  private busy = false;
  /** A handler waits for a continuation line. */
  private waiter: ((line: Buffer | null) => void) | null = null;
  /** The client sent its FIN; we close once its last command is answered. */
  private clientEnded = false;
  /** Shutdown asked: say goodbye as soon as no command is running. */
  private draining = false;
  private paused = false;
  /** The client is not reading our replies: no further command runs until it does. */
  private writeBlocked = false;
  private commands = 0;
  private errors = 0;
  private loginTimer: NodeJS.Timeout | null = null;
  /** Tells the listener this connection is past login (a full listener closes the others first). */
  private readonly markLoggedIn: () => void;
  /** Ends the listener's accounting of this connection: after STARTTLS its raw socket may never say 'close' itself. */
  private readonly release: () => void;

  /** Getters on the subclass's prototype, so no connection carries them. */
  protected abstract get protocol(): P;
  protected abstract get texts(): SessionTexts;

  constructor(
    readonly context: LineContext,
    conn: Connection,
    protected readonly framer: Framer,
  ) {
    this.socket = conn.socket;
    this.remoteAddress = conn.remoteAddress;
    this.clientPort = conn.remotePort;
    this.secure = conn.secure;
    this.markLoggedIn = conn.loggedIn;
    this.release = conn.release;
    conn.onShutdown(() => {
      this.end('shutdown');
      return this.finishing;
    });
  }

  /** The greeting for the current transport. */
  protected abstract greeting(): string;
  /** Runs one command; returns its promise when it is asynchronous. */
  protected abstract dispatch(raw: Buffer): void | Promise<void>;
  /** A handler threw (a bug of ours): log it and answer in protocol terms. */
  protected abstract internalError(raw: Buffer, err: unknown): void;
  /** Frames other than commands and lines (IMAP literals, SMTP DATA); a promise holds further input until it settles. */
  protected onFrame(_frame: Frame): void | Promise<void> {}
  /** Where a logged-in session's bytes go: IMAP and POP3 are spliced to their backend; null keeps reading commands here (SMTP, which also keeps the account). */
  protected pipeTo(outcome: MailLoggedIn<P>): PipeSession | null {
    return (outcome.session?.backend ?? null) as PipeSession | null;
  }
  /** False while the session is in the middle of something a shutdown lets finish (SMTP: a message). */
  protected get atRest(): boolean {
    return true;
  }
  /** Work the session finishes before it closes when ended from outside (SMTP: a relay whose final dot arrived); the listener waits for it. */
  protected get finishing(): Promise<void> | undefined {
    return undefined;
  }
  /** Shutdown has begun: no new work may start (SMTP refuses DATA). */
  protected get shuttingDown(): boolean {
    return this.draining;
  }
  /** The connection is under TLS now (after STARTTLS). */
  protected onSecure(): void {}
  /** The socket has closed (whoever closed it): let go of work in progress. */
  protected onClosed(): void {}
  /** Sees the upstream's bytes on their way to the client once piped (IMAP follows its line boundaries). */
  protected relayWatcher(): ((chunk: Buffer) => void) | undefined {
    return undefined;
  }
  /** The last words when the session is ended from outside; undefined closes without any. */
  protected goodbye(reason: EndReason): string | undefined {
    return this.texts.ended[reason];
  }

  /** Greets the client and starts reading. */
  start(): void {
    this.context.open.add(this);
    this.attach(this.socket);
    this.loginTimer = setTimeout(this.onTimeout, this.context.limits.loginTimeoutMs);
    this.loginTimer.unref();
    this.write(this.greeting());
  }

  /** SessionHandle: the connection is gone or going. */
  get closed(): boolean {
    return this.state.kind === 'closing' || this.state.kind === 'closed';
  }

  /** True when password login is allowed on this connection now (TLS, loopback or auth.allowPlaintext). */
  get mayLogin(): boolean {
    return plaintextLoginAllowed({ secure: this.secure, remoteAddress: this.remoteAddress, allowPlaintext: this.context.allowPlaintext });
  }

  get loggedIn(): boolean {
    return this.state.kind === 'authenticated' || this.state.kind === 'piped';
  }

  /** SessionHandle: the key was revoked or expired, the account disabled, or the server is going down. */
  end(reason: EndReason): void {
    if (this.closed) return;
    // Piped: no upstream byte may follow the goodbye.
    if (this.state.kind === 'piped') this.state.splice.stop();
    this.close(this.goodbye(reason));
  }

  /** Shutdown has begun: an idle session says goodbye now, a busy one after its command; piped sessions keep running. */
  drain(): void {
    this.draining = true;
    if (!this.busy && this.reading && this.atRest) this.close(this.texts.ended.shutdown);
  }

  /** Writes one reply in one socket write. */
  protected write(text: string): void {
    if (this.closed) return;
    if (!this.socket.write(text) && !this.writeBlocked) {
      this.writeBlocked = true;
      this.socket.once('drain', this.onDrain);
      this.updateFlow();
    }
  }

  /** Writes `prompt` and resolves with the client's next line; null if the connection closed first. */
  protected continuation(prompt: string): Promise<Buffer | null> {
    if (this.closed) return Promise.resolve(null);
    this.write(prompt);
    return new Promise((resolve) => {
      this.waiter = resolve;
      // The line may already be buffered (pipelined by the client).
      queueMicrotask(this.pump);
    });
  }

  /** Counts one command received before login; false (and the connection is closing) when over the limit. */
  countCommand(): boolean {
    if (this.state.kind !== 'unauthenticated') return true;
    if (++this.commands <= this.context.limits.commandsBeforeLogin) return true;
    this.close(this.texts.tooManyCommands);
    return false;
  }

  /** Answers a protocol error; past the tolerated number, `closing` is sent instead and the connection closed. */
  protected countError(answer: string, closing: string): void {
    if (++this.errors > this.context.limits.protocolErrors) this.close(closing);
    else this.write(answer);
  }

  /**
   * Logs in through the Authenticator (limits, audit, failure delay, backend,
   * live session) and answers: on success the reply goes out first, then the
   * session is handed to its upstream or, without one, stays here. With a
   * `failurePrompt` (a bearer mechanism's error challenge, as a whole line),
   * a failure is that prompt first and the answer after the client's reply.
   */
  protected async authenticate(credentials: { username: string; key: string; refused?: FailReason }, answers: LoginAnswers<P>, failurePrompt?: string): Promise<void> {
    const outcome = await this.context.authenticator.logIn({ protocol: this.protocol, ...credentials, ip: this.remoteAddress, client: this.client, session: this });
    if (this.closed) {
      if (outcome.kind === 'loggedIn') outcome.session?.release();
      return;
    }
    // A bearer mechanism's failure is a challenge first (RFC 7628 §3.2.2); the answer follows the client's reply, whatever it is.
    if (outcome.kind !== 'loggedIn' && failurePrompt !== undefined && (await this.continuation(failurePrompt)) === null) return;
    if (outcome.kind === 'refused') return this.write(answers.refused);
    if (outcome.kind === 'temporary') {
      return this.write(outcome.reason === 'backend_unavailable' ? answers.backendUnavailable : outcome.reason === 'no_backend' ? answers.noBackend : answers.temporary);
    }
    const session = outcome.session!;
    this.clearLoginTimer();
    this.markLoggedIn();
    this.write(answers.loggedIn(session.backend));
    const pipe = this.pipeTo(outcome);
    if (pipe) return this.startPipe(session, pipe);
    this.state = { kind: 'authenticated', session };
    this.socket.setTimeout(this.texts.idleTimeoutMs ?? this.context.limits.idleTimeoutMs);
    this.socket.on('timeout', this.onTimeout);
  }

  /** STARTTLS: `ok`, discard pending plaintext, handshake, then read commands under TLS. */
  protected async upgradeTls(ok: string): Promise<void> {
    const plain = this.socket as net.Socket;
    // Nothing received so far may be read as a command once TLS is up.
    this.framer.discard();
    plain.off('data', this.onData);
    this.write(ok);
    // Flow control starts afresh on the TLS socket.
    plain.off('drain', this.onDrain);
    this.paused = false;
    this.writeBlocked = false;
    this.state = { kind: 'handshake' };
    // A FIN during the handshake means the client is gone: nothing is left to answer.
    plain.allowHalfOpen = false;
    let secure: tls.TLSSocket;
    try {
      secure = await upgradeToTls(plain, this.context.tls);
    } catch (err) {
      this.context.logger.debug({ ip: this.remoteAddress, err: (err as Error).message }, 'STARTTLS handshake failed');
      this.onClose();
      return;
    }
    if (this.state.kind !== 'handshake') {
      secure.destroy();
      return;
    }
    this.socket = secure;
    this.secure = true;
    this.state = { kind: 'unauthenticated' };
    this.onSecure();
    this.attach(secure);
  }

  /** Sends a last reply (if any), half-closes, and destroys the socket if the peer lingers. */
  protected close(last?: string): void {
    if (this.closed) return;
    const socket = this.socket;
    const handshaking = this.state.kind === 'handshake';
    this.leave();
    const linger = setTimeout(() => socket.destroy(), this.texts.lingerMs);
    linger.unref();
    this.state = { kind: 'closing', linger };
    // Mid-handshake a cleartext line would land inside TLS.
    if (handshaking) socket.destroy();
    else if (last === undefined) socket.end();
    else socket.end(last);
  }

  // ---- internals ----

  /** Commands are read and run (before login, or after one without a backend). */
  private get reading(): boolean {
    return this.state.kind === 'unauthenticated' || this.state.kind === 'authenticated';
  }

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
    if (this.reading) this.pump();
  };

  private readonly onData = (chunk: Buffer): void => {
    this.framer.push(chunk);
    this.pump();
  };

  /** Frames and runs what has arrived, one command at a time. */
  private readonly pump = (): void => {
    for (;;) {
      if (!this.reading || this.writeBlocked || (this.busy && this.waiter === null)) return this.updateFlow();
      const frame = this.framer.next(this.waiter !== null ? 'line' : 'command');
      if (frame === null) break;
      switch (frame.kind) {
        case 'line': {
          // Continuation lines are only ever SASL responses.
          traceSaslResponse(this.context.logger, this.protocol, this.remoteAddress);
          const waiter = this.waiter!;
          this.waiter = null;
          waiter(frame.raw);
          break;
        }
        case 'command':
          traceCommand(this.context.logger, this.protocol, this.remoteAddress, frame.raw);
          this.run(frame.raw);
          break;
        case 'fatal':
          return this.close(this.texts.fatal[frame.reason]);
        default: {
          const held = this.onFrame(frame);
          if (held) this.hold(held, frame);
        }
      }
    }
    // Everything the client sent before its FIN is answered: nothing more can come.
    if (this.clientEnded) return this.close();
    this.updateFlow();
  };

  private run(raw: Buffer): void {
    let pending: void | Promise<void>;
    try {
      pending = this.dispatch(raw);
    } catch (err) {
      this.internalError(raw, err);
      return;
    }
    if (pending === undefined) {
      if (this.draining && this.atRest) this.close(this.texts.ended.shutdown);
      return;
    }
    this.hold(pending, raw);
  }

  /** No further input is read until `pending` settles. */
  private hold(pending: Promise<void>, raw: Buffer | Frame): void {
    this.busy = true;
    pending.then(this.onDone, (err: unknown) => {
      this.internalError(Buffer.isBuffer(raw) ? raw : Buffer.alloc(0), err);
      this.onDone();
    });
  }

  private readonly onDone = (): void => {
    this.busy = false;
    this.waiter = null;
    if (!this.reading) return;
    if (this.draining && this.atRest) return this.close(this.texts.ended.shutdown);
    this.pump();
  };

  /** Stops reading while too much input waits or the client is not reading our replies. */
  private updateFlow(): void {
    if (!this.reading) return;
    const pause = this.writeBlocked || this.framer.buffered > this.framer.pauseAbove;
    if (pause === this.paused) return;
    this.paused = pause;
    if (pause) this.socket.pause();
    else this.socket.resume();
  }

  private readonly onDrain = (): void => {
    this.writeBlocked = false;
    this.pump();
  };

  /** The login timer before login; the socket's inactivity timeout after a login without a backend. One handler, one closure less per connection. */
  private readonly onTimeout = (): void => {
    this.loginTimer = null;
    if (this.state.kind !== 'authenticated') return this.close(this.texts.loginTimeout);
    if (this.texts.idleTimeout === null) this.socket.destroy();
    else this.close(this.texts.idleTimeout);
  };

  private readonly onError = (err: Error & { code?: string }): void => {
    this.context.logger.debug({ ip: this.remoteAddress, code: err.code, err: err.message }, 'socket error');
  };

  private readonly onClose = (): void => {
    if (this.state.kind === 'closed') return;
    if (this.state.kind === 'closing' && this.state.linger) clearTimeout(this.state.linger);
    this.leave();
    this.state = { kind: 'closed' };
    this.context.open.delete(this);
    this.release();
    this.onClosed();
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.(null);
  };

  /** After login with a backend: the client's bytes (including any it pipelined after the login) go upstream as they are. */
  private startPipe(session: OpenSession<P>, pipe: PipeSession): void {
    const client = this.socket;
    client.off('data', this.onData);
    client.off('drain', this.onDrain);
    // Announced in the login reply, not needed again: a live session keeps no upstream text.
    delete pipe.capabilities;
    const rest = this.framer.takeRest();
    if (rest) pipe.socket.write(rest);
    const onRelay = this.relayWatcher();
    const piped = splice(client, pipe, {
      lingerMs: this.texts.lingerMs,
      ...(onRelay && { onRelay }),
      onUpstreamError: (err) => this.context.logger.debug({ ip: this.remoteAddress, err: err.message }, 'upstream connection failed'),
      onUpstreamEnded: () => {
        this.leave();
        this.state = { kind: 'closing', linger: null };
      },
    });
    this.state = { kind: 'piped', session, splice: piped };
  }

  private clearLoginTimer(): void {
    if (this.loginTimer) clearTimeout(this.loginTimer);
    this.loginTimer = null;
  }

  /** Lets go of what the current state holds: the login timer, the idle timer, the live session and its upstream. */
  private leave(): void {
    this.clearLoginTimer();
    const state = this.state;
    if (state.kind === 'authenticated') {
      this.socket.setTimeout(0);
      this.socket.off('timeout', this.onTimeout);
    }
    if (state.kind === 'authenticated' || state.kind === 'piped') state.session.release();
  }
}

/**
 * The listener pair of a line protocol: each listener keeps its open sessions
 * so that, when it shuts down, idle ones say goodbye at once, one in the
 * middle of a command after it, and piped ones run on for the grace period
 * before the TcpListener's shutdown hook ends them.
 */
export function startLineListeners(
  deps: ListenerDeps,
  protocol: LineProtocol,
  tooManyConnections: string,
  create: (context: LineContext, conn: Connection) => LineSession<LineProtocol>,
): Promise<RunningListener[]> {
  const shared = {
    authenticator: deps.authenticator,
    tls: deps.tls,
    limits: protocolLimits(deps.config),
    logger: deps.logger.child({ protocol }),
    allowPlaintext: deps.config.auth.allowPlaintext,
  };
  return startListenerPair(deps, {
    protocol,
    tooManyConnections,
    handler() {
      const context: LineContext = { ...shared, open: new Set() };
      return {
        accept: (conn) => create(context, conn).start(),
        closing: () => {
          for (const s of context.open) s.drain();
        },
      };
    },
  });
}
