import { PassThrough } from 'node:stream';
import { clientInfo, type MailLoggedIn } from '../../auth/attempt.js';
import type { EndReason } from '../../auth/sessions.js';
import { BackendRejectedError, BackendUnavailableError, type SmtpRelay } from '../../backends/types.js';
import type { AccountRecord, KeyRecord } from '../../keys/record.js';
import type { CountedMessage, LimitRefusal, SendingLimits } from '../../limits/sending.js';
import { END_REASON_TEXT } from '../../auth/sessions.js';
import { LineSession, type Frame, type LineContext, type LoginAnswers, type SessionTexts } from '../line-session.js';
import { MECHANISMS, mechanismNamed, SaslExchange } from '../sasl-mechanisms.js';
import { traceCommand, traceSaslResponse } from '../trace.js';
import type { Connection } from '../tcp-listener.js';
import { canonicalMailbox, isRecipient, parsePath } from './envelope.js';
import { SmtpFramer } from './framing.js';
import { REPLY, sessionEnded } from './replies.js';

const line = (text: string): string => `${text}\r\n`;
const END_REASONS = Object.keys(END_REASON_TEXT) as EndReason[];
/** RFC 5321 §4.5.3.2.7: a server should wait at least 5 minutes for the next command. */
const IDLE_TIMEOUT_MS = 5 * 60_000;
/** Recipients per message (RFC 5321 §4.5.3.1.8 asks for at least 100; Postfix allows 1,000). */
const MAX_RECIPIENTS = 1000;

const TEXTS: SessionTexts = {
  lingerMs: 1000,
  loginTimeout: line(REPLY.loginTimeout),
  tooManyCommands: line(REPLY.tooManyCommands),
  idleTimeout: line(REPLY.idleTimeout),
  idleTimeoutMs: IDLE_TIMEOUT_MS,
  fatal: { line_too_long: line(REPLY.lineTooLong), literal_too_large: line(REPLY.lineTooLong), command_too_long: line(REPLY.lineTooLong) },
  ended: Object.fromEntries(END_REASONS.map((r) => [r, line(sessionEnded(r))])) as SessionTexts['ended'],
};

const ANSWERS: LoginAnswers<'smtp'> = {
  loggedIn: () => line(REPLY.authOk),
  refused: line(REPLY.authFailed),
  temporary: line(REPLY.authTemporary),
  backendUnavailable: line(REPLY.authTemporary),
  // As under smtp-server: any temporary outcome of the login is 454.
  noBackend: line(REPLY.authTemporary),
};

/** What every SMTP session of a listener shares from the configuration. */
export interface SmtpSettings {
  hostname: string;
  /** `limits.messageSize`, bytes (after dot-unstuffing). */
  messageSize: number;
  /** Per-key sending limits, counted in the shared store (src/limits/sending.ts). */
  limits: SendingLimits;
}

/** The message of one DATA command, from its 354 to its final dot. */
interface Message {
  /** What the relay reads; null without a backend (the message is read and refused). */
  body: PassThrough | null;
  /** The relay's answer as our reply line; never rejects. */
  result: Promise<string> | null;
  size: number;
  oversize: boolean;
  /** The relay has answered before the final dot (it failed): the rest is read and dropped. */
  settled: boolean;
  /** Its count against the key's sending limits; given back when the message is not accepted. */
  counted: CountedMessage | null;
}

/**
 * One SMTP submission connection (RFC 5321, 6409, 4954, 3207, 2920), on the
 * line-session base IMAP and POP3 use: greeting at once, EHLO, STARTTLS,
 * AUTH through the shared SASL mechanisms and the Authenticator, then the
 * envelope checked against the account (MAIL FROM must be its address or an
 * alias) and each message streamed to the session's relay as it arrives.
 *
 * Why not smtp-server: measured in bench:smtp, its per-connection setup and
 * command parsing cost about twice this session's CPU per login cycle, and
 * its fixed 100 ms pre-greeting wait capped cycles per second. An early
 * talker is refused by RFC 2920's rule instead: before the first EHLO/HELO
 * has been answered a client may not send a command before the reply to the
 * previous one, so one that does gets 554 and the connection closes.
 */
export class SmtpSession extends LineSession<'smtp'> {
  protected get protocol(): 'smtp' {
    return 'smtp';
  }
  protected get texts(): SessionTexts {
    return TEXTS;
  }
  /** The client's EHLO/HELO name in this TLS state; null until it sent one (reset by STARTTLS). */
  private helo: string | null = null;
  /** A first EHLO/HELO was answered: from now on the client may pipeline (RFC 2920). */
  private pipelining = false;
  private account: AccountRecord | null = null;
  /** The key logged in with: its sending limits apply to every message. */
  private key: KeyRecord | null = null;
  private mailFrom: string | null = null;
  private recipients: string[] = [];
  private message: Message | null = null;
  /** A message whose final dot arrived, until the relay answered it. */
  private relaying: Promise<void> | null = null;

  constructor(
    context: LineContext,
    conn: Connection,
    private readonly settings: SmtpSettings,
  ) {
    super(context, conn, new SmtpFramer(context.limits.lineLength));
  }

  protected greeting(): string {
    return line(REPLY.greeting(this.settings.hostname));
  }

  /** In the middle of a message (354 sent) or of its relay: a shutdown lets it finish. */
  protected override get atRest(): boolean {
    return this.message === null && this.relaying === null;
  }

  protected override get finishing(): Promise<void> | undefined {
    return this.relaying ?? undefined;
  }

  /** From outside: a relay whose final dot arrived is answered first on shutdown; anything else ends now. */
  override end(reason: EndReason): void {
    if (reason === 'shutdown' && this.relaying !== null) return this.drain();
    this.abortMessage();
    super.end(reason);
  }

  protected override pipeTo(outcome: MailLoggedIn<'smtp'>): null {
    this.account = outcome.account;
    this.key = outcome.key;
    return null;
  }

  protected override onSecure(): void {
    // RFC 3207 §4.2: everything learnt before TLS is forgotten.
    this.helo = null;
    this.resetTransaction();
  }

  protected override onClosed(): void {
    this.abortMessage();
  }

  protected internalError(_raw: Buffer, err: unknown): void {
    this.context.logger.error({ err, ip: this.remoteAddress }, 'SMTP command failed');
    this.abortMessage();
    this.close(line(REPLY.internal));
  }

  protected dispatch(raw: Buffer): void | Promise<void> {
    if (!this.countCommand()) return;
    const text = raw.toString('utf8');
    const sp = text.indexOf(' ');
    const verb = (sp < 0 ? text : text.slice(0, sp)).toUpperCase();
    const args = sp < 0 ? '' : text.slice(sp + 1);
    traceCommand(this.context.logger, 'smtp', this.remoteAddress, text);
    if (!this.pipelining && this.framer.buffered > 0) return this.close(line(REPLY.synchronization));
    switch (verb) {
      case 'EHLO':
        return this.ehlo(args, true);
      case 'HELO':
        return this.ehlo(args, false);
      case 'STARTTLS':
        if (args !== '') return this.protocolError(REPLY.tlsSyntax);
        if (this.secure || this.loggedIn) return this.protocolError(REPLY.noTlsNow);
        return this.upgradeTls(line(REPLY.startTls));
      case 'AUTH':
        return this.auth(args);
      case 'MAIL':
        return this.mail(args);
      case 'RCPT':
        return this.rcpt(args);
      case 'DATA':
        return this.data(args);
      case 'RSET':
        this.resetTransaction();
        return this.write(line(REPLY.reset));
      case 'NOOP':
        return this.write(line(REPLY.ok));
      case 'QUIT':
        return this.close(line(REPLY.bye));
      case 'HELP':
        return this.write(line(REPLY.help));
      case 'VRFY':
        return this.write(line(REPLY.vrfy));
      default:
        return this.protocolError(REPLY.unknown);
    }
  }

  protected override onFrame(frame: Frame): void | Promise<void> {
    const message = this.message;
    if (message === null) return;
    if (frame.kind === 'dataEnd') return this.finishMessage(message);
    if (frame.kind !== 'data') return;
    message.size += frame.raw.length;
    if (message.oversize || message.settled || message.body === null) return;
    if (message.size > this.settings.messageSize) {
      message.oversize = true;
      message.body.destroy(new Error('message exceeds the size limit'));
      return;
    }
    if (message.body.write(frame.raw)) return;
    // The relay is slower than the client: read on when it has taken this, or has given up.
    const body = message.body;
    return new Promise<void>((resolve) => {
      const done = (): void => {
        body.off('drain', done);
        body.off('close', done);
        resolve();
      };
      body.on('drain', done);
      body.on('close', done);
      void message.result?.then(done);
    });
  }

  private protocolError(text: string): void {
    this.countError(line(text), line(REPLY.tooManyErrors));
  }

  private ehlo(args: string, extended: boolean): void {
    const name = args.trim();
    if (name === '' || /[\s\u0000-\u001f\u007f]/.test(name)) return this.protocolError(extended ? REPLY.ehloSyntax : REPLY.heloSyntax);
    this.helo = name;
    this.pipelining = true;
    // The login history shows the name the client last gave (smtp-server's hostNameAppearsAs).
    this.client = clientInfo(name);
    this.resetTransaction();
    const host = this.settings.hostname;
    if (!extended) return this.write(line(REPLY.helo(host, name)));
    const lines = [REPLY.ehloGreeting(host, name), 'PIPELINING', '8BITMIME', 'SMTPUTF8'];
    if (!this.secure) lines.push('STARTTLS');
    // Before TLS, a client that may not send keys in the clear is not offered AUTH at all.
    if (this.mayLogin && !this.loggedIn) lines.push(`AUTH ${MECHANISMS.join(' ')}`);
    lines.push(`SIZE ${this.settings.messageSize}`);
    const last = lines.length - 1;
    this.write(lines.map((l, i) => `250${i === last ? ' ' : '-'}${l}\r\n`).join(''));
  }

  /** AUTH (RFC 4954) with an initial response (`=` for an empty one) or after a `334` challenge; `*` cancels. */
  private async auth(args: string): Promise<void> {
    if (this.loggedIn) return this.protocolError(REPLY.alreadyAuthenticated);
    if (!this.mayLogin) return this.write(line(REPLY.tlsRequired));
    if (this.helo === null) return this.protocolError(REPLY.sendEhloFirst);
    if (this.mailFrom !== null) return this.protocolError(REPLY.nestedMail);
    const [name = '', initial, ...extra] = args.split(' ').filter((s) => s !== '');
    if (name === '' || extra.length > 0) return this.protocolError(REPLY.authSyntax);
    const mechanism = mechanismNamed(name);
    if (!mechanism) return this.protocolError(REPLY.badMechanism);
    const exchange = new SaslExchange(mechanism);
    const step = await exchange.run(initial === '=' ? '' : initial, (challenge) => this.saslResponse(challenge));
    if (step === null) return;
    if (step.kind === 'credentials') {
      const failure = exchange.failureChallenge();
      return this.authenticate({ username: step.username, key: step.key }, ANSWERS, failure === null ? undefined : line(`334 ${failure}`));
    }
    // Acting as someone else is not a thing keys do: a refused login (audited, delayed), not a syntax error.
    if (step.kind === 'refused') return this.authenticate({ username: step.username, key: '', refused: step.reason }, ANSWERS);
    return this.protocolError(REPLY.badSasl);
  }

  private async saslResponse(challenge: string): Promise<string | null> {
    const answer = await this.continuation(line(`334 ${challenge}`));
    if (answer === null) return null;
    traceSaslResponse(this.context.logger, 'smtp', this.remoteAddress);
    const text = answer.toString('utf8').trim();
    if (text === '*') {
      this.write(line(REPLY.authAborted));
      return null;
    }
    return text;
  }

  /** MAIL FROM must be the account's address or one of its aliases (case-insensitive); the null sender is not. */
  private mail(args: string): void | Promise<void> {
    const account = this.account;
    const key = this.key;
    if (account === null || key === null) return this.write(line(REPLY.authRequired));
    if (this.helo === null) return this.protocolError(REPLY.sendEhloFirst);
    if (this.mailFrom !== null) return this.protocolError(REPLY.nestedMail);
    if (!/^from:/i.test(args)) return this.protocolError(REPLY.mailSyntax);
    const path = parsePath(args.slice(5));
    if (!path.ok) return this.protocolError(path.reason === 'syntax' ? REPLY.mailSyntax : REPLY.badParameter);
    for (const [name, value] of path.params) {
      if (name === 'SIZE') {
        if (value === null || !/^\d{1,15}$/.test(value)) return this.protocolError(REPLY.badParameter);
        if (Number(value) > this.settings.messageSize) return this.write(line(REPLY.sizeExceeded));
      } else if (name === 'BODY') {
        if (value === null || !/^(7BIT|8BITMIME)$/i.test(value)) return this.protocolError(REPLY.badParameter);
      } else if (!(name === 'SMTPUTF8' && value === null)) return this.protocolError(REPLY.badParameter);
    }
    const from = canonicalMailbox(path.address);
    const owned = from !== '' && [account.address, ...account.aliases].some((a) => canonicalMailbox(a) === from);
    if (!owned) return this.write(line(REPLY.senderNotOwned));
    // Mail that can go nowhere is refused now, before the client sends it.
    try {
      this.currentRelay()?.checkSender?.();
    } catch (err) {
      return this.write(line(this.backendReply(err)));
    }
    return this.settings.limits.mailFrom(key).then((refused) => {
      if (refused) return this.write(this.limitReply(key, refused));
      this.mailFrom = path.address;
      this.recipients = [];
      this.write(line(REPLY.accepted));
    });
  }

  /** RCPT TO: deliverable (the route's check) and within the key's recipient limits, in that order. */
  private rcpt(args: string): void | Promise<void> {
    const key = this.key;
    if (this.account === null || key === null) return this.write(line(REPLY.authRequired));
    if (this.mailFrom === null) return this.protocolError(REPLY.needMail);
    if (!/^to:/i.test(args)) return this.protocolError(REPLY.rcptSyntax);
    const path = parsePath(args.slice(3));
    if (!path.ok) return this.protocolError(path.reason === 'syntax' ? REPLY.rcptSyntax : REPLY.badParameter);
    if (path.params.size > 0) return this.protocolError(REPLY.badParameter);
    if (!isRecipient(path.address)) return this.write(line(REPLY.badRecipient));
    if (this.recipients.length >= MAX_RECIPIENTS) return this.write(line(REPLY.tooManyRecipients));
    // Each recipient is checked as it is given: one that can be delivered nowhere is refused here, not after the upload.
    const check = this.currentRelay()?.checkRecipient;
    const deliverable = check ? check(path.address) : Promise.resolve();
    return deliverable.then(
      () =>
        this.settings.limits.rcptTo(key, this.recipients.length).then((refused) => {
          if (refused) return this.write(this.limitReply(key, refused));
          this.accept(path.address);
        }),
      (err: unknown) => this.write(line(this.backendReply(err))),
    );
  }

  /** A sending-limit refusal as our reply, with its audit line (the reason is for operators). */
  private limitReply(key: KeyRecord, refused: LimitRefusal): string {
    const [code, text] = refused.reply;
    this.context.logger.info(
      { audit: true, protocol: 'smtp', ip: this.remoteAddress, account: this.account?.address, keyId: key.id, result: 'refused', reason: refused.reason, reply: code },
      'sending limit',
    );
    return line(`${code} ${text}`);
  }

  private accept(recipient: string): void {
    if (this.mailFrom === null) return;
    this.recipients.push(recipient);
    this.write(line(REPLY.accepted));
  }

  private currentRelay(): SmtpRelay | null {
    return this.state.kind === 'authenticated' ? this.state.session.backend : null;
  }

  /** A backend's refusal as our reply: its own code and text, 451 while it is unavailable. */
  private backendReply(err: unknown): string {
    const account = this.account?.address;
    if (err instanceof BackendRejectedError && err.code >= 400 && err.code < 600) return `${err.code} ${err.response.replace(/[\r\n]+/g, ' ')}`;
    if (err instanceof BackendUnavailableError) {
      this.context.logger.warn({ err: err.message, account }, 'SMTP backend unavailable');
      return REPLY.backendUnavailable;
    }
    this.context.logger.error({ err, account }, 'SMTP backend failed');
    return REPLY.internal;
  }

  /**
   * After the 354, the message streams to the relay as it arrives; the reply is the relay's answer after the final dot.
   * With a relay, the message first counts against the key's hourly limit: refused before the 354, so nothing is uploaded.
   */
  private data(args: string): void | Promise<void> {
    const key = this.key;
    if (this.account === null || key === null) return this.write(line(REPLY.authRequired));
    if (args !== '') return this.protocolError(REPLY.syntax);
    if (this.mailFrom === null) return this.protocolError(REPLY.needMail);
    if (this.recipients.length === 0) return this.protocolError(REPLY.needRcpt);
    // Shutdown has begun: no new message is taken (the client retries elsewhere or later).
    if (this.shuttingDown) return this.close(this.texts.ended.shutdown);
    const relay = this.currentRelay();
    if (relay === null) return this.startMessage(null, null);
    return this.settings.limits.data(key, this.recipients.length).then((counted) => {
      if ('reply' in counted) return this.write(this.limitReply(key, counted));
      if (this.closed || this.shuttingDown) {
        void counted.giveBack();
        return this.close(this.texts.ended.shutdown);
      }
      this.startMessage(relay, counted);
    });
  }

  /** The 354: from here the framer reads message text. */
  private startMessage(relay: SmtpRelay | null, counted: CountedMessage | null): void {
    const body = relay ? new PassThrough() : null;
    // Its failures (cut off, client gone) reach the client through the relay's answer, not as an unhandled 'error'.
    body?.on('error', () => {});
    const message: Message = { body, result: null, size: 0, oversize: false, settled: false, counted };
    if (relay && body && this.mailFrom !== null) {
      message.result = this.relay(relay, { from: this.mailFrom, to: this.recipients }, message, body);
      void message.result.then(() => (message.settled = true));
    }
    this.message = message;
    (this.framer as SmtpFramer).startData();
    this.write(line(REPLY.startData));
  }

  /** The relay's answer as our reply line. */
  private relay(relay: SmtpRelay, envelope: { from: string; to: string[] }, message: Message, body: PassThrough): Promise<string> {
    const account = this.account?.address;
    return relay.send(envelope, body).then(
      (text) => `250 ${text.replace(/[\r\n]+/g, ' ')}`,
      (err: unknown) => {
        if (err instanceof BackendRejectedError && err.code >= 400 && err.code < 600) return `${err.code} ${err.response.replace(/[\r\n]+/g, ' ')}`;
        if (err instanceof BackendUnavailableError) {
          this.context.logger.warn({ err: err.message, account }, 'SMTP backend unavailable');
          return REPLY.backendUnavailable;
        }
        // A stream we cut off (too large, client gone) is no failure of the backend.
        if (!message.oversize && !body.destroyed) this.context.logger.error({ err, account }, 'SMTP backend failed');
        return REPLY.internal;
      },
    );
  }

  /** The final dot: the relay's answer (or ours) once it has it; shutdown waits for it (see `finishing`). */
  private async finishMessage(message: Message): Promise<void> {
    this.message = null;
    let reply: string;
    if (message.oversize) reply = REPLY.sizeExceeded;
    else if (message.body === null || message.result === null) reply = REPLY.noBackend;
    else {
      message.body.end();
      const result = message.result;
      this.relaying = result.then(() => undefined);
      reply = await result;
      this.relaying = null;
    }
    // Not accepted: the message and its recipients do not count against the key's limits.
    if (!reply.startsWith('2')) void message.counted?.giveBack();
    this.resetTransaction();
    this.write(line(reply));
  }

  private resetTransaction(): void {
    this.mailFrom = null;
    this.recipients = [];
  }

  /** A message not yet complete goes nowhere: the relay sees its stream fail. */
  private abortMessage(): void {
    const message = this.message;
    this.message = null;
    void message?.counted?.giveBack();
    if (message?.body && !message.body.destroyed) message.body.destroy(new Error('the client connection ended before the message did'));
  }
}
