/** RFC 1939 states Keygate serves itself; with a backend, TRANSACTION belongs to the upstream. */
export type Pop3State = 'authorization' | 'transaction';

/**
 * What a command handler may do with its connection. Handlers never touch the
 * socket, the store or the backend directly: the connection owns those.
 */
export interface Pop3Session {
  /** The RFC 1939 state the dispatcher checks commands against. */
  readonly commandState: Pop3State;
  /** TLS is active (implicit TLS or after STLS). */
  readonly secure: boolean;
  /** USER/PASS and AUTH may be offered: TLS, a loopback client, or auth.allowPlaintext. */
  readonly mayLogin: boolean;
  /** Name given by USER, waiting for PASS. */
  pendingUser: string | null;

  /** Writes one reply (lines joined, CRLF added) in one socket write. */
  reply(...lines: string[]): void;
  /** Counts a protocol error and answers it; too many and the connection is closed. */
  protocolError(line: string): void;
  /** Writes a continuation prompt (SASL) and resolves with the client's next line; null if the connection closed first. */
  readContinuation(prompt: string): Promise<string | null>;
  /** Logs in with a username and key; answers success or failure itself (after `+ <failureChallenge>` and the client's reply, for a bearer mechanism). */
  logIn(username: string, key: string, failureChallenge?: string): Promise<void>;
  /** Refuses a login already decided against (SASL authzid mismatch): audited, delayed, answered like any refusal. */
  refuseLogin(username: string, reason: 'authzid_mismatch'): Promise<void>;
  /** Answers +OK and upgrades the socket to TLS; pipelined plaintext is discarded. */
  startTls(): Promise<void>;
  /** Answers and closes. */
  quit(line: string): void;
}

/** One POP3 command: its name, the states it is valid in, and what it does. */
export interface Pop3Command {
  name: string;
  states: readonly Pop3State[];
  /** `args` is the rest of the line after the command name and one space, untrimmed. */
  handler(session: Pop3Session, args: string): Promise<void> | void;
}
