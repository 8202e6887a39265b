import type { ClientInfo } from '../../auth/attempt.js';
import type { Logger } from '../../log.js';
import type { ImapRequest, Token } from './parser.js';

/** RFC 9051 §3 connection states (`logout` once BYE was sent). */
export type ImapState = 'not_authenticated' | 'authenticated' | 'selected' | 'logout';

export const ANY_STATE: readonly ImapState[] = ['not_authenticated', 'authenticated', 'selected'];
export const BEFORE_LOGIN: readonly ImapState[] = ['not_authenticated'];
export const AFTER_LOGIN: readonly ImapState[] = ['authenticated', 'selected'];

/**
 * One argument as the dispatcher checks it before a handler runs:
 * `astring` = atom, quoted string or literal; `atom`; `list-or-nil` =
 * parenthesised list or NIL. (The trace masks secrets by command, src/protocols/trace.ts.)
 */
export interface ArgSpec {
  kind: 'astring' | 'atom' | 'list-or-nil';
  optional?: boolean;
}

/** What a command handler may do with its connection; it never touches the socket, the store or a backend. */
export interface ImapSession {
  /** The RFC 9051 state the dispatcher checks commands against. */
  readonly commandState: ImapState;
  readonly secure: boolean;
  readonly remoteAddress: string;
  /** True when password login is allowed on this connection now (TLS, loopback or auth.allowPlaintext). */
  readonly mayLogin: boolean;
  readonly context: { readonly logger: Logger };
  /** What the client said of itself in `ID`, kept with its login attempts. */
  client: ClientInfo | null;
  /** The capability list for the current state and transport. */
  capabilities(): string;
  /** Writes one reply in one socket write. */
  send(text: string): void;
  /** Answers a malformed command (`reply` is `BAD …`); counts toward the protocol-error limit, closing past it. */
  protocolError(tag: string | null, reply: string): void;
  /** Sends `+ <prompt>` and resolves with the client's next line; null if the connection closed first. */
  readContinuation(prompt: string): Promise<Buffer | null>;
  /**
   * Logs in with a username and key and answers the tagged result (the
   * session is handed on after `OK`). With a bearer mechanism's
   * `failureChallenge`, a failure is `+ <challenge>` first, and the tagged
   * result follows the client's reply.
   */
  logIn(tag: string, username: string, key: string, failureChallenge?: string): Promise<void>;
  /** Refuses a login already decided against (a SASL authzid naming someone else): audited, delayed, answered like any refusal. */
  refuseLogin(tag: string, username: string, reason: 'authzid_mismatch'): Promise<void>;
  /** STARTTLS: tagged OK, discard pending plaintext, handshake. */
  startTls(tag: string): Promise<void>;
  /** LOGOUT: BYE, tagged OK, close. */
  logout(tag: string): void;
}

/** One IMAP command module (`commands/<name>.ts`). */
export interface ImapCommand {
  /** Upper-case command name. */
  name: string;
  /** States the command is valid in; the dispatcher refuses it elsewhere. */
  states: readonly ImapState[];
  /** Argument shape; omitted = any (for commands answered without looking at them). */
  args?: readonly ArgSpec[];
  /** Runs after the dispatcher's state, argument and limit checks; handlers move the state forward only on success. */
  handler(session: ImapSession, request: ImapRequest): void | Promise<void>;
}

/** The string value of an astring token (atom, quoted or literal). */
export function astring(t: Token | undefined): string {
  if (t === undefined || t.type === 'list') return '';
  return t.value;
}
