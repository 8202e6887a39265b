import { randomUUID } from 'node:crypto';
import type net from 'node:net';
import { Transform } from 'node:stream';
import { domainToUnicode } from 'node:url';
import {
  SMTPServer,
  type SMTPServerAddress,
  type SMTPServerAuthentication,
  type SMTPServerAuthenticationResponse,
  type SMTPServerDataStream,
  type SMTPServerSession,
} from 'smtp-server';
import { clientInfo } from '../../auth/attempt.js';
import type { LoginOutcome, MailLoggedIn, SessionHandle } from '../../auth/authenticate.js';
import type { EndReason } from '../../auth/sessions.js';
import { BackendRejectedError, BackendUnavailableError, type SmtpRelay } from '../../backends/types.js';
import type { Logger } from '../../log.js';
import { SendingLimits, type CountedMessage, type LimitRefusal } from '../../limits/sending.js';
import type { ListenerDeps } from '../deps.js';
import { plaintextLoginAllowed, type ProtocolLimits } from '../limits.js';
import { authzidMatches } from '../sasl-plain.js';
import { SMTP_AUTH_METHODS } from './bearer-mechanisms.js';
import { smtpTraceLogger } from './trace-logger.js';
import type { Connection } from '../tcp-listener.js';
import { REPLY, SmtpReplyError, sessionEnded, type Reply } from './replies.js';

/** RFC 5321 §4.5.3.2.7: a server should wait at least 5 minutes for the next command. */
const IDLE_TIMEOUT_MS = 5 * 60_000;
/** After a 421 the socket is destroyed this long later if the client keeps its side open. */
const CLOSE_LINGER_MS = 1000;

type SmtpConnection = SMTPServer['connections'] extends Set<infer C> ? C : never;
export interface SmtpContext {
  deps: ListenerDeps;
  limits: ProtocolLimits;
  log: Logger;
}

interface SessionState {
  ip: string;
  /** Destroys the socket and ends the TcpListener's accounting: its own 'close' listener may be gone (see onClose). */
  release: () => void;
  /** Tells the TcpListener the session is past login (a full listener closes the others first). */
  loggedIn: () => void;
  loginTimer: NodeJS.Timeout | null;
  /** The login, with its relay upstream (null without a backend) and its live-session entry. */
  login: MailLoggedIn<'smtp'> | null;
}

/** Lower-case local part and Unicode, lower-case domain: how smtp-server reports MAIL FROM (it decodes punycode). */
function canonicalMailbox(address: string): string {
  const at = address.lastIndexOf('@');
  if (at < 0) return address.toLowerCase();
  const domain = address.slice(at + 1);
  return `${address.slice(0, at)}@${domainToUnicode(domain) || domain}`.toLowerCase();
}

/**
 * One SMTP submission listener's smtp-server, fed with sockets the shared
 * TcpListener accepted (see server.ts for why), plus the Keygate policy in its
 * callbacks: who may AUTH and when, MAIL FROM ownership, the backend at DATA,
 * live revocation and shutdown.
 *
 * smtp-server hands callbacks the session, not the connection; the connection
 * (needed only to say 421 from outside: revocation, login timeout, shutdown)
 * is found by the session id we assign, scanning `server.connections` — rare
 * events, so no index is kept.
 */
export class SmtpSubmission {
  readonly server: SMTPServer;
  private readonly states = new Map<string, SessionState>();
  /** Per-key sending limits, counted in the shared store (src/limits/sending.ts). */
  private readonly limits: SendingLimits;

  constructor(
    private readonly ctx: SmtpContext,
    implicitTls: boolean,
  ) {
    const { config, tls } = ctx.deps;
    this.limits = new SendingLimits(ctx.deps.authenticator.store);
    this.server = new SMTPServer({
      // On the implicit-TLS port the TcpListener has already done the handshake; this tells smtp-server the socket is secure.
      secure: implicitTls,
      name: config.hostname,
      banner: 'Keygate',
      // The no-SNI default context is replaced by the provider's below; SNI clients get the current one from the provider.
      key: tls.keyPem(),
      cert: tls.certPem(),
      minVersion: 'TLSv1.2',
      SNICallback: tls.serverOptions().SNICallback,
      // PLAIN and LOGIN are smtp-server's own; OAUTHBEARER and XOAUTH2 come from the shared mechanism module (bearer-mechanisms.ts).
      authMethods: SMTP_AUTH_METHODS,
      // Plaintext AUTH is decided per connection (loopback, auth.allowPlaintext) in onConnect.
      allowInsecureAuth: true,
      disableReverseLookup: true,
      size: config.limits.messageSize,
      rejectOversized: true,
      authRequiredMessage: REPLY.authRequired[1],
      // smtp-server closes at the limit-th command; ours allows `commandsBeforeLogin` and closes at the next, as POP3 and IMAP do.
      maxAllowedUnauthenticatedCommands: ctx.limits.commandsBeforeLogin + 1,
      maxCommandLength: ctx.limits.lineLength,
      socketTimeout: IDLE_TIMEOUT_MS,
      // At trace, its command log feeds the protocol trace (masked there); otherwise it logs nothing.
      logger: ctx.log.isLevelEnabled('trace') ? smtpTraceLogger(ctx.log, (id) => this.states.get(id)?.ip) : false,
      onConnect: (session, cb) => this.onConnect(session, cb),
      onSecure: (_socket, session, cb) => this.onSecure(session, cb),
      onAuth: (auth, session, cb) => this.onAuth(auth, session, cb),
      onMailFrom: (address, session, cb) => this.onMailFrom(address, session, cb),
      onRcptTo: (address, session, cb) => this.onRcptTo(address, session, cb),
      onData: (stream, session, cb) => this.onData(stream, session, cb),
      onClose: (session) => this.onClose(session),
    });
    this.useCurrentCertificate();
    // Socket and TLS errors of single connections: smtp-server re-emits them on the server, where an unhandled 'error' would crash.
    this.server.on('error', (err: Error & { code?: string }) => ctx.log.debug({ code: err.code, err: err.message }, 'SMTP connection error'));
  }

  /** Points STARTTLS for clients without SNI at the provider's current context (call again after a certificate swap). */
  useCurrentCertificate(): void {
    this.server.secureContext.set('*', this.ctx.deps.tls.secureContext());
  }

  /**
   * Starts an SMTP session on an accepted connection. smtp-server waits
   * 100 ms before its greeting (its early-talker check: a client that speaks
   * first gets `421 You talk too soon`); it is left on, which caps SMTP login
   * cycles at concurrency / 0.1 s.
   */
  accept(conn: Connection): void {
    const id = randomUUID();
    const socket = conn.socket as net.Socket;
    const state: SessionState = { ip: conn.remoteAddress, release: conn.release, loggedIn: conn.loggedIn, loginTimer: null, login: null };
    state.loginTimer = setTimeout(() => this.say(id, REPLY.loginTimeout), this.ctx.limits.loginTimeoutMs);
    state.loginTimer.unref();
    this.states.set(id, state);
    conn.onShutdown(() => this.say(id, sessionEnded('shutdown')));
    this.server.connect(socket, { id, remoteAddress: conn.remoteAddress, remotePort: conn.remotePort });
  }

  private mayLogin(session: SMTPServerSession): boolean {
    return plaintextLoginAllowed({ secure: session.secure, remoteAddress: session.remoteAddress, allowPlaintext: this.ctx.deps.config.auth.allowPlaintext });
  }

  private loginOf(session: SMTPServerSession): MailLoggedIn<'smtp'> | null {
    return session.user ? (this.states.get(session.id)?.login ?? null) : null;
  }

  private connection(id: string): SmtpConnection | undefined {
    for (const c of this.server.connections) if (c.id === id) return c;
    return undefined;
  }

  /** Sends a 421 (which makes smtp-server close) to one session from outside; the socket goes after the linger time. */
  private say(id: string, [code, text]: Reply): void {
    const connection = this.connection(id);
    const state = this.states.get(id);
    if (!connection || !state) return;
    connection.send(code, text);
    setTimeout(state.release, CLOSE_LINGER_MS).unref();
  }

  private end(id: string, reason: EndReason): void {
    this.say(id, sessionEnded(reason));
  }

  /** Before TLS, a client that may not send passwords in the clear is not offered AUTH at all (EHLO lists no AUTH; AUTH is unknown). */
  private onConnect(session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    if (!this.mayLogin(session)) session.disabledCommands = ['AUTH'];
    cb();
  }

  private onSecure(session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    delete session.disabledCommands;
    cb();
  }

  private onAuth(
    auth: SMTPServerAuthentication,
    session: SMTPServerSession,
    cb: (err: Error | null | undefined, response?: SMTPServerAuthenticationResponse) => void,
  ): void {
    const state = this.states.get(session.id);
    if (!state) return cb(new SmtpReplyError(REPLY.internal));
    if (!this.mayLogin(session)) return cb(new SmtpReplyError(REPLY.tlsRequired));
    this.logIn(session, auth).then(
      (outcome) => {
        if (outcome.kind !== 'loggedIn') return cb(new SmtpReplyError(outcome.kind === 'temporary' ? REPLY.authTemporary : REPLY.authFailed));
        if (state.loginTimer) clearTimeout(state.loginTimer);
        state.loginTimer = null;
        state.login = outcome;
        state.loggedIn();
        cb(null, { user: outcome.account.address });
      },
      // logIn does not throw (a failing check is a `temporary` outcome): this is a bug of ours.
      (err: unknown) => {
        this.ctx.log.error({ err, ip: session.remoteAddress }, 'SMTP AUTH failed');
        cb(new SmtpReplyError(REPLY.internal));
      },
    );
  }

  /**
   * One AUTH through the Authenticator. PLAIN with an authorization identity
   * naming another user is refused up front — acting as someone else is not
   * something a key can do — and audited like any other refusal. smtp-server
   * has already taken the user from the authcid, or from the authzid when the
   * authcid is empty.
   */
  private logIn(session: SMTPServerSession, auth: SMTPServerAuthentication): Promise<LoginOutcome<MailLoggedIn<'smtp'>>> {
    const id = session.id;
    const states = this.states;
    const handle: SessionHandle = {
      clientPort: session.remotePort,
      secure: session.secure,
      get closed() {
        return !states.has(id);
      },
      end: (reason) => this.end(id, reason),
    };
    const attempt = { protocol: 'smtp' as const, ip: session.remoteAddress, client: clientInfo(session.hostNameAppearsAs), session: handle };
    if (!authzidMatches(auth.authzid ?? '', auth.authcid ?? '')) {
      return this.ctx.deps.authenticator.logIn({ ...attempt, username: auth.authcid ?? '', key: '', refused: 'authzid_mismatch' });
    }
    // A bearer mechanism's key is its access token.
    return this.ctx.deps.authenticator.logIn({ ...attempt, username: auth.username ?? '', key: auth.password ?? auth.accessToken ?? '' });
  }

  /** MAIL FROM must be the account's address or one of its aliases (case-insensitive); the null sender is not. */
  private onMailFrom(address: SMTPServerAddress, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const login = this.loginOf(session);
    if (!login) return cb(new SmtpReplyError(REPLY.authRequired));
    const from = canonicalMailbox(address.address);
    const owned = [login.account.address, ...login.account.aliases].some((a) => canonicalMailbox(a) === from);
    if (!owned || from === '') return cb(new SmtpReplyError(REPLY.senderNotOwned));
    // Mail that can go nowhere is refused now, before the client sends it.
    try {
      login.session?.backend?.checkSender?.();
    } catch (err) {
      return cb(this.backendReply(err, login));
    }
    this.limits.mailFrom(login.key).then((refused) => cb(this.limitError(session, login, refused)));
  }

  /**
   * RCPT TO: logged in, within the key's recipient limits, and deliverable:
   * a recipient that can go nowhere is refused here, not after the upload.
   */
  private onRcptTo(address: SMTPServerAddress, session: SMTPServerSession, cb: (err?: Error | null) => void): void {
    const login = this.loginOf(session);
    if (!login) return cb(new SmtpReplyError(REPLY.authRequired));
    const check = login.session?.backend?.checkRecipient;
    const deliverable = check ? check(address.address) : Promise.resolve();
    deliverable.then(
      () => this.limits.rcptTo(login.key, session.envelope.rcptTo.length).then((refused) => cb(this.limitError(session, login, refused))),
      (err: unknown) => cb(this.backendReply(err, login)),
    );
  }

  /** A backend's refusal as the client's reply: its own code and text, 451 while it is unavailable. */
  private backendReply(err: unknown, login: MailLoggedIn<'smtp'>): SmtpReplyError {
    if (err instanceof BackendRejectedError) return new SmtpReplyError([err.code, err.response]);
    if (err instanceof BackendUnavailableError) {
      this.ctx.log.warn({ err: err.message, account: login.account.address }, 'SMTP backend unavailable');
      return new SmtpReplyError(REPLY.backendUnavailable);
    }
    this.ctx.log.error({ err, account: login.account.address }, 'SMTP backend failed');
    return new SmtpReplyError(REPLY.internal);
  }

  /** A sending-limit refusal as smtp-server's error, with its audit line (the reason is for operators). */
  private limitError(session: SMTPServerSession, login: MailLoggedIn<'smtp'>, refused: LimitRefusal | null): SmtpReplyError | null {
    if (!refused) return null;
    this.ctx.log.info(
      { audit: true, protocol: 'smtp', ip: session.remoteAddress, account: login.account.address, keyId: login.key.id, result: 'refused', reason: refused.reason, reply: refused.reply[0] },
      'sending limit',
    );
    return new SmtpReplyError(refused.reply);
  }

  /**
   * With no backend: `451 4.3.0` once the message is in (smtp-server has no
   * hook before its 354). With one: the message is streamed to it, cut off with
   * an error as soon as it passes the size limit (smtp-server then answers 552).
   */
  private onData(stream: SMTPServerDataStream, session: SMTPServerSession, cb: (err?: Error | null, message?: string) => void): void {
    const login = this.loginOf(session);
    if (!login) return cb(new SmtpReplyError(REPLY.authRequired));
    const relay = login.session?.backend;
    if (!relay) return cb(new SmtpReplyError(REPLY.noBackend));
    this.limits.data(login.key, session.envelope.rcptTo.length).then((counted) => {
      if ('reply' in counted) {
        stream.resume();
        return cb(this.limitError(session, login, counted));
      }
      this.relay(stream, session, login, relay, counted, cb);
    });
  }

  /** Streams the accepted message to the backend; a message that is not accepted gives its count back. */
  private relay(
    stream: SMTPServerDataStream,
    session: SMTPServerSession,
    login: MailLoggedIn<'smtp'>,
    relay: SmtpRelay,
    counted: CountedMessage,
    cb: (err?: Error | null, message?: string) => void,
  ): void {
    const body = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        if (stream.sizeExceeded) done(new Error('message exceeds the size limit'));
        else done(null, chunk);
      },
    });
    stream.pipe(body);
    const finish = (err: Error | null, message?: string): void => {
      // However the backend ended, the rest of the message must still be read for smtp-server to reply.
      stream.unpipe(body);
      stream.resume();
      if (err) void counted.giveBack();
      cb(err, message);
    };
    const mailFrom = session.envelope.mailFrom;
    const envelope = { from: mailFrom ? mailFrom.address : '', to: session.envelope.rcptTo.map((r) => r.address) };
    relay.send(envelope, body).then(
      (text) => finish(null, text),
      // Past the size limit the stream was cut on purpose: smtp-server answers 552, nothing to log.
      (err: unknown) => finish(stream.sizeExceeded && !(err instanceof BackendRejectedError) ? new SmtpReplyError(REPLY.internal) : this.backendReply(err, login)),
    );
  }

  private onClose(session: SMTPServerSession): void {
    const state = this.states.get(session.id);
    if (!state) return;
    this.states.delete(session.id);
    if (state.loginTimer) clearTimeout(state.loginTimer);
    state.login?.session?.release();
    // smtp-server's STARTTLS calls removeAllListeners() on the plain socket,
    // dropping the TcpListener's 'close' listener: release explicitly.
    state.release();
  }
}
