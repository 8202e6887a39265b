import type { Config } from '../config.js';

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
  /** Pause before every failed-login reply, ms. */
  failureDelayMs: number;
  /** Syntax errors and unknown commands tolerated on one connection before it is closed. */
  protocolErrors: number;
  /** Inactivity allowed after login before the server logs the client out, ms (RFC 9051: at least 30 min). */
  idleTimeoutMs: number;
}

/** Syntax errors tolerated per connection; not configurable, a well-behaved client makes none. */
export const MAX_PROTOCOL_ERRORS = 10;

/** IMAP's autologout timer must be at least 30 minutes (RFC 9051 §5.4); POP3's at least 10 (RFC 1939). */
export const IDLE_TIMEOUT_MS = 30 * 60_000;

/** The protocol limits for this configuration. */
export function protocolLimits(config: Pick<Config, 'limits' | 'auth'>): ProtocolLimits {
  return {
    lineLength: config.limits.lineLength,
    literalSize: config.limits.literalSize,
    commandsBeforeLogin: config.limits.commandsBeforeLogin,
    loginTimeoutMs: config.limits.loginTimeout,
    failureDelayMs: config.auth.failureDelay,
    protocolErrors: MAX_PROTOCOL_ERRORS,
    idleTimeoutMs: IDLE_TIMEOUT_MS,
  };
}
