/**
 * Lines of Dovecot's authentication protocol (the "auth client" side that
 * Postfix's `smtpd_sasl_type = dovecot` and Exim's `driver = dovecot` speak),
 * version 1: one command per LF-terminated line, fields separated by TAB,
 * optional parameters `name` or `name=value` with Dovecot's tab-escaping.
 * Parsing is strict: anything that is not a well-formed client command is
 * `null`, and the connection ends without a word (see connection.ts).
 */

export const PROTOCOL_MAJOR = 1;
export const PROTOCOL_MINOR = 2;

/** The AUTH parameters Keygate reads; others (nologin, lport, session, …) are ignored, as the protocol asks. */
export interface AuthParams {
  /** `service=`: which listener's scope the login needs (smtp, imap, pop3). */
  service: string | null;
  /** `rip=`: the end client's address, for the limits, the IP rule and the audit line. */
  rip: string | null;
  /** `secured`: the end client's connection is TLS (or, for Exim, local). */
  secured: boolean;
  /** `resp=`: the initial response, base64; undefined when the client sent none (or an empty one). */
  resp: string | undefined;
}

export type ClientLine =
  | { command: 'VERSION'; major: number; minor: number }
  | { command: 'CPID'; pid: number }
  | { command: 'AUTH'; id: number; mechanism: string; params: AuthParams }
  | { command: 'CONT'; id: number; response: string };

/** Parameters past this many on one AUTH line are bad input: no client sends more than a dozen. */
const MAX_PARAMS = 64;
const MAX_ID = 0xffff_ffff;

/** A request id: a decimal 1 … 2^32-1, no leading zero. */
function parseId(text: string | undefined): number | null {
  if (text === undefined || !/^[1-9]\d{0,9}$/.test(text)) return null;
  const id = Number(text);
  return id <= MAX_ID ? id : null;
}

function parseUint(text: string | undefined): number | null {
  return text !== undefined && /^\d{1,10}$/.test(text) ? Number(text) : null;
}

/** Parses one client line (line end removed); null when it is not a well-formed command of the protocol. */
export function parseClientLine(line: string): ClientLine | null {
  const fields = line.split('\t');
  switch (fields[0]) {
    case 'VERSION': {
      const major = parseUint(fields[1]);
      const minor = parseUint(fields[2]);
      return fields.length === 3 && major !== null && minor !== null ? { command: 'VERSION', major, minor } : null;
    }
    case 'CPID': {
      const pid = parseUint(fields[1]);
      return fields.length === 2 && pid !== null ? { command: 'CPID', pid } : null;
    }
    case 'AUTH': {
      const id = parseId(fields[1]);
      const mechanism = fields[2];
      if (id === null || mechanism === undefined || !/^[A-Za-z0-9_-]{1,32}$/.test(mechanism) || fields.length - 3 > MAX_PARAMS) return null;
      const params = parseParams(fields.slice(3));
      return params ? { command: 'AUTH', id, mechanism, params } : null;
    }
    case 'CONT': {
      const id = parseId(fields[1]);
      return fields.length === 3 && id !== null ? { command: 'CONT', id, response: fields[2]! } : null;
    }
    default:
      return null;
  }
}

function parseParams(fields: readonly string[]): AuthParams | null {
  const params: AuthParams = { service: null, rip: null, secured: false, resp: undefined };
  for (const field of fields) {
    const eq = field.indexOf('=');
    const name = eq < 0 ? field : field.slice(0, eq);
    if (!/^[a-z0-9_-]+$/i.test(name)) return null;
    const value = eq < 0 ? null : tabUnescape(field.slice(eq + 1));
    switch (name) {
      case 'service':
        params.service = value;
        break;
      case 'rip':
        params.rip = value;
        break;
      case 'secured':
        // `secured` (2.3) or `secured=tls` / `secured=…` (2.4): present means secured.
        params.secured = true;
        break;
      case 'resp':
        // Empty is no initial response, as Dovecot reads it (Exim sends `resp=` for AUTH LOGIN without one).
        params.resp = value || undefined;
        break;
    }
  }
  return params;
}

/** Dovecot's tab-escaping: \x01 followed by 0 (NUL), 1 (\x01), t (TAB), r (CR), n or l (LF); any other character stands for itself. */
export function tabUnescape(text: string): string {
  if (!text.includes('\x01')) return text;
  const map: Record<string, string> = { '0': '\0', '1': '\x01', t: '\t', r: '\r', n: '\n', l: '\n' };
  return text.replace(/\x01([\s\S]?)/g, (_, c: string) => map[c] ?? c);
}

export function tabEscape(text: string): string {
  return text.replace(/[\x00\x01\t\r\n]/g, (c) => `\x01${({ '\0': '0', '\x01': '1', '\t': 't', '\r': 'r', '\n': 'n' } as Record<string, string>)[c]}`);
}

export interface HandshakeInfo {
  mechanisms: readonly string[];
  /** The server's process id. */
  spid: number;
  /** This connection's number on the server. */
  cuid: number;
  /** 32 hex digits. */
  cookie: string;
}

/**
 * The server's half of the handshake, in the order Dovecot sends it. Every
 * mechanism carries the `plaintext` flag: each sends the key itself, so
 * Postfix's `noplaintext` security options filter them as they should.
 */
export function handshake({ mechanisms, spid, cuid, cookie }: HandshakeInfo): string {
  return [
    `VERSION\t${PROTOCOL_MAJOR}\t${PROTOCOL_MINOR}`,
    ...mechanisms.map((m) => `MECH\t${m}\tplaintext`),
    `SPID\t${spid}`,
    `CUID\t${cuid}`,
    `COOKIE\t${cookie}`,
    'DONE',
    '',
  ].join('\n');
}

/** `OK` with the account logged in to: Postfix and Exim take the authenticated name from `user=`. */
export function okLine(id: number, user: string): string {
  return `OK\t${id}\tuser=${tabEscape(user)}\n`;
}

/** A challenge (base64, '' for the empty one). */
export function contLine(id: number, challenge: string): string {
  return `CONT\t${id}\t${challenge}\n`;
}

/** The refusal texts, one for every reason (the reason goes to the audit log only). */
export const FAIL_REASON = {
  refused: 'Authentication failed',
  temporary: 'Temporary authentication failure, try again later',
} as const;

/**
 * `FAIL`: `user=` is the name the client gave (Postfix logs it as
 * sasl_username), `reason=` what Postfix puts after its 535/454; a temporary
 * failure carries both spellings Dovecot has used for it (`temp`, and
 * `code=temp_fail` since 2.3).
 */
export function failLine(id: number, kind: 'refused' | 'temporary', user: string | null): string {
  const who = user ? `\tuser=${tabEscape(user)}` : '';
  return kind === 'temporary' ? `FAIL\t${id}${who}\tcode=temp_fail\ttemp\treason=${FAIL_REASON.temporary}\n` : `FAIL\t${id}${who}\treason=${FAIL_REASON.refused}\n`;
}
