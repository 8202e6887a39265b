import { createHash } from 'node:crypto';
import { isIPv6 } from 'node:net';
import { PassThrough, type Readable } from 'node:stream';
import nodemailer from 'nodemailer';
import type { SMTPConnectionCustomAuthContext } from 'nodemailer/lib/smtp-connection';
import type { SMTPPoolOptions, SMTPPoolSentMessageInfo } from 'nodemailer/lib/smtp-pool';
import type Mail from 'nodemailer/lib/mailer';
import type { Logger } from '../log.js';
import type { AccountRecord } from '../keys/record.js';
import { connectSocket, UpstreamError, type FailureReason, type Timeouts } from './connection.js';
import { describeRoute, resolveRoute, sessionFields, type RouteSource } from './open.js';
import { saslIdentity, saslPlain, type Route } from './routing.js';
import { BackendRejectedError, BackendUnavailableError, NoBackendError, type Backend, type SessionContext, type SmtpEnvelope, type SmtpRelay } from './types.js';

export interface SmtpBackendOptions {
  /** Name sent in EHLO/LHLO. */
  hostname: string;
  connectTimeoutMs: number;
  loginTimeoutMs: number;
  /** Inactivity timeout while relaying. */
  socketTimeoutMs: number;
  /** Pooled connections per upstream and login. */
  maxConnections: number;
  /** Idle pools are closed after this long (default 60 s). */
  idleMs?: number;
  /** The account an address or alias names (the store's resolveAccount): who is a local recipient. */
  findAccount?: (address: string) => Promise<AccountRecord | null>;
  /** Metrics hooks, as for the IMAP and POP3 backends. */
  observeConnect?: Timeouts['observeConnect'];
  countFailure?: Timeouts['countFailure'];
}

/** What a nodemailer error code says went wrong, for keygate_upstream_failures_total. */
function failureReason(code: string | undefined): FailureReason {
  switch (code) {
    case 'ETIMEDOUT':
      return 'timeout';
    case 'ETLS':
      return 'tls';
    case 'EAUTH':
      return 'login';
    case 'EPROTOCOL':
    case 'EENVELOPE':
    case 'EMESSAGE':
      return 'protocol';
    default:
      return 'connect';
  }
}

type Transporter = Mail<SMTPPoolSentMessageInfo, SMTPPoolOptions>;

interface PoolEntry {
  transport: Transporter;
  lastUsed: number;
  inFlight: number;
}

/** A nodemailer error as it arrives (fields are optional and loosely typed). */
interface MailError extends Error {
  code?: string;
  responseCode?: number;
  response?: string;
  rejectedErrors?: MailError[];
}

/** SMTP reply text without its 3-digit code: what the listener writes after its own code. */
export function replyText(response: string | undefined, code?: number): string {
  const text = (response ?? '').replace(/^\d{3}[ -]?/, '').replace(/\r?\n\d{3}[ -]?/g, ' ').trim();
  return text || (code && code >= 500 ? '5.0.0 Rejected by the upstream server' : '4.0.0 Deferred by the upstream server');
}

/** Postfix XCLIENT attribute value (RFC 3461 xtext). */
function xtext(value: string): string {
  return Buffer.from(value, 'utf8').reduce((out, b) => out + (b < 33 || b > 126 || b === 0x2b || b === 0x3d ? `+${b.toString(16).toUpperCase().padStart(2, '0')}` : String.fromCharCode(b)), '');
}

/**
 * SMTP proxy backend: relays each accepted message to the account's upstream
 * through a pooled nodemailer transport (SMTP or LMTP), envelope as given.
 * Resolves only once the upstream accepted the message for every recipient;
 * an upstream reply refusing the sender, a recipient or the message becomes
 * BackendRejectedError with the upstream's code and text; anything else
 * (unreachable, TLS, our login refused, timeout, connection lost mid-message)
 * becomes BackendUnavailableError, for the listener's `451 4.4.1`. A message
 * is never retried on another connection (the stream cannot be replayed), so
 * it is either accepted upstream or refused to the client.
 */
export class SmtpProxyBackend implements Backend<SmtpRelay> {
  private readonly pools = new Map<string, PoolEntry>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    private readonly routes: RouteSource,
    private readonly options: SmtpBackendOptions,
    private readonly logger: Logger,
  ) {
    const idle = options.idleMs ?? 60_000;
    this.sweeper = setInterval(() => this.sweep(idle), Math.min(idle, 30_000));
    this.sweeper.unref();
  }

  /**
   * The session's relay. Nothing is connected at login: messages go through
   * pooled connections, and each recipient finds its route as it is given.
   */
  async open(ctx: SessionContext): Promise<SmtpRelay> {
    return {
      checkSender: () => this.checkSender(ctx),
      checkRecipient: async (address) => void (await this.routeRecipient(ctx, address)),
      send: (envelope, message) => this.send(ctx, envelope, message),
      close: () => {},
    };
  }

  /**
   * At MAIL FROM, before the client sends anything: a sender whose mail can go
   * nowhere (no local mailbox, no SMTP route) gets a permanent refusal naming
   * why, not a 451 after the upload.
   */
  private checkSender(ctx: SessionContext): void {
    if (this.routes.localDelivery?.()) return;
    this.routeOf(ctx);
  }

  /** The sender's SMTP route: BackendRejectedError (554) for none, BackendUnavailableError for an unusable one. */
  private routeOf(ctx: SessionContext): Route {
    try {
      return resolveRoute(this.routes, ctx, this.logger, { countFailure: this.options.countFailure });
    } catch (err) {
      if (err instanceof NoBackendError) throw new BackendRejectedError(554, `5.3.5 No outgoing mail server is configured for ${ctx.account.address}`);
      throw err;
    }
  }

  /** recipientRoute, with a store that cannot answer as a temporary failure. */
  private async routeRecipient(ctx: SessionContext, address: string): Promise<{ route: Route; to: string }> {
    try {
      return await this.recipientRoute(ctx, address);
    } catch (err) {
      if (err instanceof BackendRejectedError || err instanceof BackendUnavailableError) throw err;
      this.logger.warn({ ...sessionFields(ctx), err: (err as Error).message }, 'cannot route recipient');
      throw new BackendUnavailableError('cannot route the recipient now', { cause: err });
    }
  }

  /**
   * Where a recipient's copy goes: LMTP into the local mailbox when the
   * address (or an alias) is an account there — by its canonical address, so
   * an alias lands in the account's own Maildir — otherwise the sender's SMTP
   * route. BackendRejectedError (550) when it can go nowhere; RouteError
   * when the sender's route cannot be built.
   */
  private async recipientRoute(ctx: SessionContext, address: string): Promise<{ route: Route; to: string }> {
    const local = this.routes.localDelivery?.() ?? null;
    if (local && this.options.findAccount) {
      const account = await this.options.findAccount(address);
      if (account && this.routes.isLocal!(account)) return { route: local, to: account.address };
    }
    if (local && !this.routes.resolve(ctx.account, 'smtp')) {
      throw new BackendRejectedError(550, `5.1.1 <${address}>: no such mailbox here, and no relay for other addresses is configured`);
    }
    return { route: this.routeOf(ctx), to: address };
  }

  /**
   * Relays one message: each recipient to where recipientRoute sends it, one
   * upstream transaction per route, at once. Resolves when every one accepted;
   * otherwise the first failure is the client's answer (see the class comment).
   */
  private async send(ctx: SessionContext, envelope: SmtpEnvelope, message: Readable): Promise<string> {
    const groups = new Map<string, { route: Route; to: string[] }>();
    try {
      for (const address of envelope.to) {
        const { route, to } = await this.routeRecipient(ctx, address);
        const key = JSON.stringify([route.source, route.server]);
        const group = groups.get(key) ?? groups.set(key, { route, to: [] }).get(key)!;
        if (!group.to.includes(to)) group.to.push(to);
      }
    } catch (err) {
      drain(message);
      throw err;
    }
    // nodemailer destroys the stream it was given when a send fails; the listener's stream must
    // stay intact (it still has to read the client's DATA to its end), so each upstream gets a copy.
    const copies = [...groups.values()].map((g) => ({ ...g, copy: new PassThrough() }));
    const onSourceError = (err: Error): void => copies.forEach((c) => c.copy.destroy(err));
    message.once('error', onSourceError);
    for (const c of copies) message.pipe(c.copy);
    try {
      const results = await Promise.allSettled(copies.map((c) => this.deliver(ctx, c.route, { from: envelope.from, to: c.to }, c.copy, () => message.unpipe(c.copy))));
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
      return (results[0] as PromiseFulfilledResult<string>).value;
    } finally {
      drain(message);
      message.off('error', onSourceError);
      // The outcome is decided; a late error on the listener's stream (e.g. its size limit) must not go unhandled.
      message.on('error', () => {});
    }
  }

  /** One upstream transaction; `release` detaches its copy from the client's stream when it fails. */
  private async deliver(ctx: SessionContext, route: Route, envelope: SmtpEnvelope, copy: PassThrough, release: () => void): Promise<string> {
    const base = sessionFields(ctx);
    const entry = this.pool(route, ctx);
    entry.inFlight++;
    entry.lastUsed = Date.now();
    try {
      const info = await entry.transport.sendMail({ envelope: { from: envelope.from, to: envelope.to }, raw: copy });
      const rejected = (info.rejectedErrors ?? []) as MailError[];
      if (info.rejected.length > 0) {
        // Some recipients refused (RCPT, or per recipient after LMTP DATA): refuse the whole message
        // to the client rather than lose those recipients silently.
        const first = rejected[0];
        const code = first?.responseCode ?? 550;
        const text = `${replyText(first?.response, code)} (not delivered to ${info.rejected.map(String).join(', ')}; accepted for ${info.accepted.length} other recipient(s))`;
        this.logger.warn({ ...base, ...describeRoute(route), code, rejected: info.rejected.length, accepted: info.accepted.length }, 'upstream refused some recipients');
        throw new BackendRejectedError(code, text);
      }
      return replyText(info.response, 250);
    } catch (err) {
      release();
      copy.resume();
      if (err instanceof BackendRejectedError) throw err;
      const e = err as MailError;
      const reply = e.code === 'EENVELOPE' && e.rejectedErrors?.length ? e.rejectedErrors[0]! : e;
      if ((e.code === 'EENVELOPE' || e.code === 'EMESSAGE') && reply.responseCode && reply.responseCode >= 400) {
        this.logger.info({ ...base, ...describeRoute(route), code: reply.responseCode, response: reply.response }, 'upstream refused the message');
        throw new BackendRejectedError(reply.responseCode, replyText(reply.response, reply.responseCode));
      }
      this.logger.warn({ ...base, ...describeRoute(route), code: e.code, responseCode: e.responseCode, err: e.message }, 'smtp upstream unavailable');
      this.options.countFailure?.(err instanceof UpstreamError ? err.stage : failureReason(e.code));
      throw new BackendUnavailableError(`smtp upstream unavailable (${e.code ?? 'error'})`, { cause: err });
    } finally {
      entry.inFlight--;
      entry.lastUsed = Date.now();
    }
  }

  /**
   * Connects to the account's SMTP (or LMTP) upstream, greets it, starts TLS
   * and logs in as a message would, then quits without sending anything
   * (`keygate check`). Rejects with BackendUnavailableError saying why.
   */
  async verify(ctx: SessionContext): Promise<Route> {
    const route = resolveRoute(this.routes, ctx, this.logger);
    const transport: Transporter = nodemailer.createTransport(this.transportOptions(route, ctx, route.server.xclient && route.server.trusted));
    try {
      await transport.verify();
      return route;
    } catch (err) {
      throw new BackendUnavailableError(`smtp upstream unavailable: ${(err as Error).message}`, { cause: err });
    } finally {
      transport.close();
    }
  }

  /** Closes every pooled connection. */
  close(): void {
    clearInterval(this.sweeper);
    for (const e of this.pools.values()) e.transport.close();
    this.pools.clear();
  }

  private sweep(idleMs: number): void {
    const now = Date.now();
    for (const [k, e] of this.pools) {
      if (e.inFlight === 0 && now - e.lastUsed > idleMs) {
        e.transport.close();
        this.pools.delete(k);
      }
    }
  }

  /** One pool per upstream and login identity (and, with XCLIENT, per reported client). */
  private pool(route: Route, ctx: SessionContext): PoolEntry {
    const { server, login } = route;
    const xclient = server.xclient && server.trusted;
    const secretPart = login.mode === 'master' ? login.masterPassword : login.mode === 'account' ? login.password : '';
    const key = createHash('sha256')
      .update(JSON.stringify([server, login.mode, route.user, login.mode === 'master' ? [login.masterUser, login.style, login.separator] : null, xclient ? [ctx.clientIp, ctx.clientPort, ctx.account.address] : null]))
      .update('\0')
      .update(secretPart)
      .digest('hex');
    const found = this.pools.get(key);
    if (found) return found;
    const entry: PoolEntry = { transport: nodemailer.createTransport(this.transportOptions(route, ctx, xclient)), lastUsed: Date.now(), inFlight: 0 };
    this.pools.set(key, entry);
    return entry;
  }

  private transportOptions(route: Route, ctx: SessionContext, xclient: boolean): SMTPPoolOptions & { pool: true } {
    const { server, login } = route;
    const o = this.options;
    const options: SMTPPoolOptions & { pool: true } = {
      pool: true,
      host: server.host,
      port: server.port,
      secure: server.tls === 'implicit',
      requireTLS: server.tls === 'starttls',
      ignoreTLS: server.tls === 'none',
      tls: { rejectUnauthorized: server.verifyCert, minVersion: 'TLSv1.2' },
      lmtp: login.mode === 'lmtp',
      name: o.hostname,
      connectionTimeout: o.connectTimeoutMs,
      greetingTimeout: o.loginTimeoutMs,
      socketTimeout: o.socketTimeoutMs,
      maxConnections: Math.max(1, o.maxConnections),
      // A message is never requeued: its stream cannot be read twice.
      maxRequeues: 0,
      // Close idle connections before the upstream does (Postfix: 300 s), so a send rarely meets a dead one.
      idleTimeout: 30_000,
      logger: false,
      disableFileAccess: true,
      disableUrlAccess: true,
    };
    // Keygate connects (TCP, the local mailbox's unix socket, implicit TLS) and hands nodemailer the socket:
    // one connect for every protocol, timed the same way.
    options.getSocket = (_options, callback) => {
      connectSocket(server, { connectMs: o.connectTimeoutMs, observeConnect: o.observeConnect }).then(
        (socket) => callback(null, { connection: socket, secured: server.tls === 'implicit' }),
        (err: Error) => callback(err),
      );
    };

    const identity = saslIdentity(login);
    const { authzid, authcid, password } = identity ?? { authzid: '', authcid: '', password: '' };
    const needsLogin = identity !== null;
    if (!xclient && authzid === '') {
      if (needsLogin) options.auth = { user: authcid, pass: password, method: 'PLAIN' };
      return options;
    }

    // XCLIENT and/or SASL PLAIN with an authzid: one custom step run after EHLO on each new connection.
    options.auth = { type: 'custom', method: 'KEYGATE', user: authcid || '-', pass: password || '-' } as never;
    options.forceAuth = true;
    options.customAuth = {
      KEYGATE: async (c: SMTPConnectionCustomAuthContext) => {
        if (xclient) {
          const addr = isIPv6(ctx.clientIp) ? `IPV6:${ctx.clientIp}` : ctx.clientIp;
          const x = await c.sendCommand(`XCLIENT ADDR=${xtext(addr)} PORT=${ctx.clientPort} LOGIN=${xtext(ctx.account.address)}`);
          if (code(x.response) !== 220) throw new Error(`XCLIENT refused (does the upstream trust Keygate's address?): ${x.response}`);
          const ehlo = await c.sendCommand(`${login.mode === 'lmtp' ? 'LHLO' : 'EHLO'} ${o.hostname}`);
          if (code(ehlo.response) !== 250) throw new Error(`EHLO after XCLIENT refused: ${ehlo.response}`);
        }
        if (needsLogin) {
          const plain = saslPlain({ authzid, authcid, password });
          const r = await c.sendCommand(`AUTH PLAIN ${plain}`);
          if (code(r.response) !== 235) throw new Error(`upstream refused the login of ${route.user}: ${r.status} ${r.text}`);
        }
      },
    };
    return options;
  }
}

/** The reply code of a (possibly multi-line) SMTP reply. */
function code(response: string): number {
  return Number(/^\d{3}/.exec(response)?.[0] ?? 0);
}

/** Lets a message stream the upstream did not (fully) read flow to its end, so the client's DATA can finish. */
function drain(message: Readable): void {
  if (!message.readableEnded && !message.destroyed) message.resume();
}
