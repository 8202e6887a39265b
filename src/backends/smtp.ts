import { createHash } from 'node:crypto';
import { isIPv6 } from 'node:net';
import { PassThrough, type Readable } from 'node:stream';
import nodemailer from 'nodemailer';
import type { SMTPConnectionCustomAuthContext } from 'nodemailer/lib/smtp-connection';
import type { SMTPPoolOptions, SMTPPoolSentMessageInfo } from 'nodemailer/lib/smtp-pool';
import type Mail from 'nodemailer/lib/mailer';
import type { Logger } from '../log.js';
import { describeRoute, resolveRoute, sessionFields, type RouteSource } from './open.js';
import { saslIdentity, saslPlain, type Route } from './routing.js';
import { BackendRejectedError, BackendUnavailableError, type Backend, type SessionContext, type SmtpEnvelope, type SmtpRelay } from './types.js';

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
   * pooled connections, and each message finds its route as it is sent.
   */
  async open(ctx: SessionContext): Promise<SmtpRelay> {
    return { send: (envelope, message) => this.send(ctx, envelope, message), close: () => {} };
  }

  /** Relays one message; see the class comment for the errors. */
  private async send(ctx: SessionContext, envelope: SmtpEnvelope, message: Readable): Promise<string> {
    const base = sessionFields(ctx);
    let route: Route;
    try {
      route = resolveRoute(this.routes, ctx, this.logger);
    } catch (err) {
      drain(message);
      throw err;
    }
    const entry = this.pool(route, ctx);
    entry.inFlight++;
    entry.lastUsed = Date.now();
    // nodemailer destroys the stream it was given when a send fails; the listener's stream must
    // stay intact (it still has to read the client's DATA to its end), so nodemailer gets a copy.
    const copy = new PassThrough();
    const onSourceError = (err: Error): void => void copy.destroy(err);
    message.once('error', onSourceError);
    message.pipe(copy);
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
      message.unpipe(copy);
      drain(message);
      if (err instanceof BackendRejectedError) throw err;
      const e = err as MailError;
      const reply = e.code === 'EENVELOPE' && e.rejectedErrors?.length ? e.rejectedErrors[0]! : e;
      if ((e.code === 'EENVELOPE' || e.code === 'EMESSAGE') && reply.responseCode && reply.responseCode >= 400) {
        this.logger.info({ ...base, ...describeRoute(route), code: reply.responseCode, response: reply.response }, 'upstream refused the message');
        throw new BackendRejectedError(reply.responseCode, replyText(reply.response, reply.responseCode));
      }
      this.logger.warn({ ...base, ...describeRoute(route), code: e.code, responseCode: e.responseCode, err: e.message }, 'smtp upstream unavailable');
      throw new BackendUnavailableError(`smtp upstream unavailable (${e.code ?? 'error'})`, { cause: err });
    } finally {
      message.off('error', onSourceError);
      // The outcome is decided; a late error on the listener's stream (e.g. its size limit) must not go unhandled.
      message.on('error', () => {});
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
