import { END_REASON_TEXT, type EndReason } from '../../auth/sessions.js';
import { LineSession, type LineContext, type LoginAnswers, type SessionTexts } from '../line-session.js';
import type { Connection } from '../tcp-listener.js';
import type { Pop3State } from './command.js';
import { dispatch, type Dispatchable } from './dispatcher.js';
import { Pop3Framer } from './framing.js';
import { REPLY, sessionEnded } from './replies.js';

const line = (text: string): string => `${text}\r\n`;
const END_REASONS = Object.keys(END_REASON_TEXT) as EndReason[];

const TEXTS: SessionTexts = {
  lingerMs: 1000,
  loginTimeout: line(REPLY.loginTimeout),
  tooManyCommands: line(REPLY.tooManyCommands),
  // RFC 1939 autologout: silently, without entering UPDATE.
  idleTimeout: null,
  fatal: { line_too_long: line(REPLY.lineTooLong), literal_too_large: line(REPLY.lineTooLong), command_too_long: line(REPLY.lineTooLong) },
  ended: Object.fromEntries(END_REASONS.map((r) => [r, line(sessionEnded(r))])) as SessionTexts['ended'],
};

const ANSWERS: LoginAnswers = {
  loggedIn: () => line(REPLY.loggedIn),
  refused: line(REPLY.authFailed),
  temporary: line(REPLY.authTemporary),
  backendUnavailable: line(REPLY.backendUnavailable),
  noBackend: line(REPLY.noMailbox),
};

/**
 * One POP3 client connection: the AUTHORIZATION state machine on the shared
 * line-session base, and afterwards either the no-backend TRANSACTION state or
 * a byte pipe to the backend.
 */
export class Pop3Connection extends LineSession implements Dispatchable {
  protected get protocol(): 'pop3' {
    return 'pop3';
  }
  protected get texts(): SessionTexts {
    return TEXTS;
  }
  pendingUser: string | null = null;

  constructor(context: LineContext, conn: Connection) {
    super(context, conn, new Pop3Framer(context.limits.lineLength));
  }

  get commandState(): Pop3State {
    return this.loggedIn ? 'transaction' : 'authorization';
  }

  reply(...lines: string[]): void {
    this.write(`${lines.join('\r\n')}\r\n`);
  }

  protocolError(text: string): void {
    this.countError(line(text), line(REPLY.tooManyErrors));
  }

  async readContinuation(prompt: string): Promise<string | null> {
    return (await this.continuation(line(prompt)))?.toString('utf8') ?? null;
  }

  logIn(username: string, key: string, failureChallenge?: string): Promise<void> {
    return this.authenticate({ username, key }, ANSWERS, failureChallenge === undefined ? undefined : line(`${REPLY.saslContinue}${failureChallenge}`));
  }

  refuseLogin(username: string, reason: 'authzid_mismatch'): Promise<void> {
    return this.authenticate({ username, key: '', refused: reason }, ANSWERS);
  }

  startTls(): Promise<void> {
    return this.upgradeTls(line(REPLY.stls));
  }

  quit(text: string): void {
    this.close(line(text));
  }

  protected greeting(): string {
    return line(REPLY.greeting);
  }

  protected dispatch(raw: Buffer): void | Promise<void> {
    return dispatch(this, raw.toString('utf8'));
  }

  protected internalError(_raw: Buffer, err: unknown): void {
    this.context.logger.error({ err, ip: this.remoteAddress }, 'POP3 command failed');
    this.close(line(REPLY.internal));
  }

  /** USER given before STLS does not carry over. */
  protected override onSecure(): void {
    this.pendingUser = null;
  }
}
