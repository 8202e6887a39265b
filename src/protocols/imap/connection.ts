import type { EndReason } from '../../auth/sessions.js';
import type { PipeSession } from '../../backends/types.js';
import { LineSession, type Frame, type LineContext, type LoginAnswers, type SessionTexts } from '../line-session.js';
import type { Connection } from '../tcp-listener.js';
import { ImapLineBoundary } from './boundary.js';
import type { ImapState } from './command.js';
import { dispatch, type Dispatchable } from './dispatcher.js';
import { ImapFramer } from './framing.js';
import { peekTag } from './parser.js';
import { END_BYE, FATAL_BYE, REPLY } from './replies.js';

/** Capability lists, computed once. */
interface Capabilities {
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
const AUTH_CAPS = 'SASL-IR AUTH=PLAIN AUTH=LOGIN AUTH=OAUTHBEARER AUTH=XOAUTH2';

const CAPABILITIES: Capabilities = {
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

const TEXTS: SessionTexts = {
  lingerMs: 2000,
  loginTimeout: REPLY.byeAutologout,
  tooManyCommands: REPLY.byeTooManyCommands,
  idleTimeout: REPLY.byeAutologout,
  fatal: FATAL_BYE,
  ended: END_BYE,
};

/**
 * One IMAP connection: the not-authenticated state machine on the shared
 * line-session base. Framing, parsing and the command gates live in their own
 * modules; this class words IMAP's answers (capabilities, tagged results,
 * BYE) and follows a piped upstream's line boundaries, so a BYE of ours never
 * lands inside a line or literal.
 */
export class ImapConnection extends LineSession implements Dispatchable {
  protected get protocol(): 'imap' {
    return 'imap';
  }
  protected get texts(): SessionTexts {
    return TEXTS;
  }
  private boundary: ImapLineBoundary | null = null;

  constructor(context: LineContext, conn: Connection) {
    super(context, conn, new ImapFramer(context.limits));
  }

  /** The RFC 9051 §3 state commands are checked against (`logout` once BYE was sent). */
  get commandState(): ImapState {
    return this.closed ? 'logout' : this.loggedIn ? 'authenticated' : 'not_authenticated';
  }

  capabilities(): string {
    if (this.loggedIn) return CAPABILITIES.authenticated;
    if (this.secure) return CAPABILITIES.secure;
    return this.mayLogin ? CAPABILITIES.plainLogin : CAPABILITIES.loginDisabled;
  }

  send(text: string): void {
    this.write(text);
  }

  readContinuation(prompt: string): Promise<Buffer | null> {
    return this.continuation(prompt === '' ? '+ \r\n' : `+ ${prompt}\r\n`);
  }

  protocolError(tag: string | null, reply: string): void {
    const line = `${tag ?? '*'} ${reply}\r\n`;
    this.countError(line, line + REPLY.byeTooManyErrors);
  }

  logIn(tag: string, username: string, key: string, failureChallenge?: string): Promise<void> {
    return this.authenticate({ username, key }, answers(tag), failureChallenge === undefined ? undefined : `+ ${failureChallenge}\r\n`);
  }

  refuseLogin(tag: string, username: string, reason: 'authzid_mismatch'): Promise<void> {
    return this.authenticate({ username, key: '', refused: reason }, answers(tag));
  }

  startTls(tag: string): Promise<void> {
    return this.upgradeTls(`${tag} OK Begin TLS negotiation now\r\n`);
  }

  logout(tag: string): void {
    this.close(`${REPLY.byeLogout}${tag} OK LOGOUT completed\r\n`);
  }

  protected greeting(): string {
    return this.secure ? GREETINGS.secure : this.mayLogin ? GREETINGS.plainLogin : GREETINGS.loginDisabled;
  }

  protected dispatch(raw: Buffer): void | Promise<void> {
    return dispatch(this, raw);
  }

  protected internalError(raw: Buffer, err: unknown): void {
    this.context.logger.error({ err, ip: this.remoteAddress }, 'IMAP command failed');
    this.send(`${peekTag(raw) ?? '*'} ${REPLY.internal}\r\n`);
  }

  protected override onFrame(frame: Frame): void {
    if (frame.kind === 'literal') this.send(REPLY.continueLiteral);
    else if (frame.kind === 'refused') this.protocolError(peekTag(frame.head), frame.reason === 'literal_too_large' ? REPLY.literalTooLarge : REPLY.commandTooLong);
  }

  protected override relayWatcher(): (chunk: Buffer) => void {
    const boundary = new ImapLineBoundary();
    this.boundary = boundary;
    return (chunk) => boundary.feed(chunk);
  }

  /** Piped, the BYE may not land inside a line or a literal the client is still reading (it would be taken for message bytes): then none. */
  protected override goodbye(reason: EndReason): string | undefined {
    return this.state.kind !== 'piped' || this.boundary!.atLineStart ? END_BYE[reason] : undefined;
  }
}

/** IMAP's words for each login outcome, tagged. */
function answers(tag: string): LoginAnswers {
  return {
    loggedIn: (backend: PipeSession | null) => `${tag} OK [CAPABILITY ${backend?.capabilities?.join(' ') ?? CAPABILITIES.authenticated}] Logged in\r\n`,
    refused: `${tag} ${REPLY.authFailed}\r\n`,
    temporary: `${tag} ${REPLY.authTemporary}\r\n`,
    backendUnavailable: `${tag} ${REPLY.backendUnavailable}\r\n`,
    noBackend: `${tag} ${REPLY.noMailbox}\r\n`,
  };
}
