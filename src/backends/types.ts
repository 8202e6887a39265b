import type { Duplex, Readable } from 'node:stream';
import type { AccountRecord, KeyRecord } from '../keys/record.js';
import type { Protocol } from '../keys/scopes.js';

/** Who logged in, from where: what a backend needs to act for the session. */
export interface SessionContext {
  protocol: Protocol;
  account: AccountRecord;
  key: KeyRecord;
  clientIp: string;
  clientPort: number;
  secure: boolean;
}

/** The upstream could not be reached or refused us; the client gets a temporary failure. */
export class BackendUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BackendUnavailableError';
  }
}

/**
 * No route leads anywhere for this account and protocol: no default or
 * domain upstream, no local mailbox, no route of the account's own. Not
 * temporary: the client is told so plainly (IMAP `NO [UNAVAILABLE]`, POP3
 * `-ERR [SYS/PERM]`, SMTP 5xx at MAIL FROM) instead of retrying forever.
 */
export class NoBackendError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NoBackendError';
  }
}

/** The upstream refused a message or recipient; its SMTP reply is passed back to the client. */
export class BackendRejectedError extends Error {
  constructor(
    readonly code: number,
    readonly response: string,
  ) {
    super(response);
    this.name = 'BackendRejectedError';
  }
}

/** An authenticated upstream connection that the listener splices the client into (src/protocols/splice.ts). */
export interface PipeSession {
  /** The client's bytes are written here; its end, close and errors end the session; pause()/resume() hold the relay back. */
  socket: Duplex;
  /** Starts delivering the upstream's bytes, beginning with any read past the login reply. Called once. */
  relay(sink: (chunk: Buffer) => void): void;
  /** Post-login capabilities to announce in the tagged OK (IMAP); dropped once the session is spliced. */
  capabilities?: string[];
  close(): void;
}

export interface SmtpEnvelope {
  from: string;
  to: string[];
}

/** A logged-in SMTP session's way upstream: one message at a time. */
export interface SmtpRelay {
  /** At MAIL FROM: throws BackendRejectedError (5xx) when this account's mail can go nowhere, BackendUnavailableError for now. */
  checkSender?(): void;
  /** At RCPT TO: throws BackendRejectedError when the recipient can be delivered nowhere, BackendUnavailableError for now. */
  checkRecipient?(address: string): Promise<void>;
  /** Resolves with the upstream's acceptance text once it accepted; throws BackendRejectedError / BackendUnavailableError. */
  send(envelope: SmtpEnvelope, message: Readable): Promise<string>;
  close(): void;
}

/** What a backend hands a logged-in session of each protocol: IMAP and POP3 are spliced to their upstream, SMTP relays message by message. */
export interface BackendSessions {
  imap: PipeSession;
  pop3: PipeSession;
  smtp: SmtpRelay;
}

/** Opens the upstream side of one logged-in session; throws BackendUnavailableError when it cannot. */
export interface Backend<S extends { close(): void }> {
  open(ctx: SessionContext): Promise<S>;
}

/**
 * After login a session is handed to the backend for its protocol; null means
 * none is configured and the listener answers in protocol terms that the
 * mailbox is unavailable (IMAP NO [UNAVAILABLE], POP3 -ERR [SYS/PERM], SMTP 451 4.3.0).
 */
export type Backends = { [P in Protocol]: Backend<BackendSessions[P]> | null };

export const NO_BACKENDS: Backends = { imap: null, pop3: null, smtp: null };

/** Backends that hold resources (pooled upstream connections) and can release them. */
export interface ClosableBackends extends Backends {
  /** Closes pooled upstream connections; open piped sessions are the listeners' to end. */
  close(): Promise<void>;
}
