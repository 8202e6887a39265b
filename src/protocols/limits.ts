import type { Config } from '../config.js';
import { isLoopback } from '../keys/cidr.js';

/**
 * Every bound a mail listener enforces before (and around) login, read from
 * the configuration in one place so the IMAP, POP3 and SMTP code — and the
 * framing and parsing layers inside each — cannot drift apart.
 */
export interface ProtocolLimits {
  /** Longest protocol line, bytes, CRLF excluded. Longer: BYE / -ERR / 500 and close. */
  lineLength: number;
  /** Largest IMAP literal (`{n}` / `{n+}`), bytes; checked before the `+` continuation is sent. */
  literalSize: number;
  /** Commands accepted before a successful login; one more ends the connection. */
  commandsBeforeLogin: number;
  /** Time from connect to a successful login, ms. */
  loginTimeoutMs: number;
  /** Syntax errors and unknown commands tolerated on one connection: this many are answered, the next one closes it. */
  protocolErrors: number;
  /** Inactivity allowed after login before the server logs the client out, ms (RFC 9051: at least 30 min). */
  idleTimeoutMs: number;
}

/**
 * Syntax errors tolerated per connection (IMAP and POP3 alike): the 10th is
 * answered, the 11th closes. Not configurable; a well-behaved client makes none.
 */
export const MAX_PROTOCOL_ERRORS = 10;

/** IMAP's autologout timer must be at least 30 minutes (RFC 9051 §5.4); POP3's at least 10 (RFC 1939). */
export const IDLE_TIMEOUT_MS = 30 * 60_000;

/** The protocol limits for this configuration. */
export function protocolLimits(config: Pick<Config, 'limits'>): ProtocolLimits {
  return {
    lineLength: config.limits.lineLength,
    literalSize: config.limits.literalSize,
    commandsBeforeLogin: config.limits.commandsBeforeLogin,
    loginTimeoutMs: config.limits.loginTimeout,
    protocolErrors: MAX_PROTOCOL_ERRORS,
    idleTimeoutMs: IDLE_TIMEOUT_MS,
  };
}

/** What decides whether a connection may send a password now. */
export interface PlaintextLoginContext {
  /** TLS is active on the connection (implicit, or after STARTTLS / STLS). */
  secure: boolean;
  /** The client's address (from the PROXY header when there is one). */
  remoteAddress: string;
  /** `auth.allowPlaintext`. */
  allowPlaintext: boolean;
}

/**
 * The one plaintext rule of every mail listener: no password login before
 * TLS unless the client is on loopback or `auth.allowPlaintext` is set. IMAP
 * uses it for LOGINDISABLED and PRIVACYREQUIRED, POP3 for CAPA and its USER /
 * PASS / AUTH refusal, SMTP for offering and accepting AUTH before STARTTLS.
 */
export function plaintextLoginAllowed({ secure, remoteAddress, allowPlaintext }: PlaintextLoginContext): boolean {
  // The two common loopback spellings without parsing (TcpListener hands IPv4-mapped addresses over as IPv4).
  return secure || allowPlaintext || remoteAddress === '127.0.0.1' || remoteAddress === '::1' || isLoopback(remoteAddress);
}
