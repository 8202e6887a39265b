import { UpstreamError, type UpstreamConnection } from './connection.js';
import { saslIdentity, saslPlain, type Route } from './routing.js';
import type { SessionContext } from './types.js';

/**
 * Capabilities not passed on to the client after login: transport and
 * pre-login ones, and COMPRESS (Keygate must stay able to write `* BYE` into
 * the piped stream when a key is revoked).
 */
const DROP_CAPS = /^(STARTTLS|LOGINDISABLED|AUTH=.*|SASL-IR|COMPRESS=.*)$/i;

/** One tagged command's outcome: the untagged lines before it and the tagged status line. */
interface TaggedReply {
  untagged: string[];
  status: 'OK' | 'NO' | 'BAD';
  text: string;
}

/**
 * IMAP's upstream login for the ProxyBackend: optionally sends
 * `ID ("x-originating-ip" … "x-originating-port" …)` (trusted upstreams),
 * logs in as the master user or with the account's stored credentials, and
 * resolves with the upstream's post-login capabilities (filtered).
 */
export async function imapLogin(conn: UpstreamConnection, route: Route, ctx: SessionContext): Promise<string[]> {
  let tagNo = 0;
  const nextTag = (): string => `K${++tagNo}`;

  const greeting = await conn.readLine();
  if (/^\* BYE/i.test(greeting)) throw new UpstreamError(`upstream said goodbye: ${greeting}`, 'greeting');
  if (/^\* PREAUTH/i.test(greeting)) throw new UpstreamError('upstream pre-authenticated the connection (PREAUTH); refusing to act on an unknown user', 'greeting');
  if (!/^\* OK/i.test(greeting)) throw new UpstreamError(`unexpected upstream greeting: ${greeting.slice(0, 200)}`, 'greeting');
  let caps = capsFromCode(greeting);

  const capability = async (): Promise<string[]> => {
    const tag = nextTag();
    conn.write(`${tag} CAPABILITY\r\n`);
    const reply = await readTagged(conn, tag);
    if (reply.status !== 'OK') throw new UpstreamError(`CAPABILITY failed: ${reply.status} ${reply.text}`, 'protocol');
    return capsFromCode(reply.text) ?? capsFromUntagged(reply.untagged);
  };

  if (route.server.tls === 'starttls') {
    caps ??= await capability();
    if (!has(caps, 'STARTTLS')) throw new UpstreamError('upstream does not offer STARTTLS', 'tls');
    const tag = nextTag();
    conn.write(`${tag} STARTTLS\r\n`);
    const reply = await readTagged(conn, tag);
    if (reply.status !== 'OK') throw new UpstreamError(`STARTTLS refused: ${reply.status} ${reply.text}`, 'tls');
    await conn.startTls();
    caps = null; // RFC 9051 §6.2.1: capabilities before TLS are void
  }
  caps ??= await capability();
  if (has(caps, 'LOGINDISABLED') && route.server.tls === 'none') throw new UpstreamError('upstream refuses LOGIN without TLS (LOGINDISABLED); set tls to starttls or implicit', 'login');

  // ID and the login go out in one write; the replies come back in order.
  const out: string[] = [];
  let idTag: string | null = null;
  if (route.server.trusted) {
    idTag = nextTag();
    out.push(`${idTag} ID (${[
      'x-originating-ip', ctx.clientIp,
      'x-originating-port', String(ctx.clientPort),
      'x-session-ext-id', `keygate-${ctx.key.id}-${Date.now().toString(36)}`,
    ].map(quoted).join(' ')})\r\n`);
  }
  const loginTag = nextTag();
  const login = loginCommand(route, caps, loginTag);
  out.push(login.first);
  conn.write(out.join(''));
  if (idTag) {
    const id = await readTagged(conn, idTag);
    if (id.status === 'BAD') throw new UpstreamError(`ID refused: ${id.text}`, 'protocol');
  }
  const reply = await readTagged(conn, loginTag, login.continuation);
  if (reply.status !== 'OK') throw new UpstreamError(`upstream refused the login of ${route.user} (${route.login.mode}): ${reply.status} ${reply.text}`, 'login');
  let after = capsFromCode(reply.text) ?? capsFromUntagged(reply.untagged);
  if (after.length === 0) after = await capability();
  return after.filter((c) => !DROP_CAPS.test(c));
}

/**
 * The login command for the route. LOGIN with quoted strings when they are
 * plain ASCII (one round trip), otherwise literals (`{n+}` with LITERAL+);
 * master `authzid` style and non-ASCII names use AUTHENTICATE PLAIN (SASL-IR
 * when offered). `continuation` answers `+` prompts in order.
 */
function loginCommand(route: Route, caps: string[], tag: string): { first: string; continuation: string[] } {
  const identity = saslIdentity(route.login);
  if (!identity) throw new UpstreamError(`login mode ${route.login.mode} does not apply to IMAP`, 'login');
  const { authzid, authcid, password } = identity;

  if (authzid === '' && isQuotable(authcid) && isQuotable(password)) {
    return { first: `${tag} LOGIN ${quoted(authcid)} ${quoted(password)}\r\n`, continuation: [] };
  }
  const plain = saslPlain(identity);
  if (authzid === '' && has(caps, 'LITERAL+')) {
    const u = Buffer.from(authcid, 'utf8');
    const p = Buffer.from(password, 'utf8');
    return { first: `${tag} LOGIN {${u.length}+}\r\n${authcid}{${p.length}+}\r\n${password}\r\n`, continuation: [] };
  }
  if (has(caps, 'SASL-IR')) return { first: `${tag} AUTHENTICATE PLAIN ${plain}\r\n`, continuation: [] };
  return { first: `${tag} AUTHENTICATE PLAIN\r\n`, continuation: [`${plain}\r\n`] };
}

/** Reads up to the tagged reply for `tag`; untagged lines (with any literals) are collected; `+` prompts get the next continuation. */
async function readTagged(conn: UpstreamConnection, tag: string, continuation: string[] = []): Promise<TaggedReply> {
  const untagged: string[] = [];
  let sent = 0;
  for (;;) {
    let line = await conn.readLine();
    // An untagged line may carry literals: {n}CRLF <n bytes> rest-of-line.
    for (let m = /\{(\d+)\}$/.exec(line); m && line.startsWith('*'); m = /\{(\d+)\}$/.exec(line)) {
      const bytes = await conn.readBytes(Number(m[1]));
      line = `${line}\r\n${bytes.toString('latin1')}${await conn.readLine()}`;
    }
    if (line.startsWith('+')) {
      const next = continuation[sent++];
      if (next === undefined) {
        conn.write('*\r\n'); // cancel an exchange we have nothing more for
        continue;
      }
      conn.write(next);
      continue;
    }
    if (line.startsWith('* ')) {
      untagged.push(line.slice(2));
      continue;
    }
    if (line.startsWith(`${tag} `)) {
      const rest = line.slice(tag.length + 1);
      const m = /^(OK|NO|BAD)\b ?(.*)$/i.exec(rest);
      if (!m) throw new UpstreamError(`malformed tagged reply: ${line.slice(0, 200)}`, 'protocol');
      return { untagged, status: m[1]!.toUpperCase() as TaggedReply['status'], text: m[2]! };
    }
    // Another tag (ours, answered out of order) or noise: skip it.
  }
}

/** Capabilities from a `[CAPABILITY …]` response code, or null when the line has none. */
export function capsFromCode(line: string): string[] | null {
  const m = /\[CAPABILITY ([^\]]*)\]/i.exec(line);
  return m ? m[1]!.trim().split(/\s+/).filter(Boolean) : null;
}

function capsFromUntagged(lines: string[]): string[] {
  for (const l of lines) {
    const m = /^CAPABILITY (.*)$/i.exec(l);
    if (m) return m[1]!.trim().split(/\s+/).filter(Boolean);
  }
  return [];
}

function has(caps: string[], cap: string): boolean {
  const want = cap.toUpperCase();
  return caps.some((c) => c.toUpperCase() === want);
}

/** 7-bit, no CR/LF/NUL: can go in an IMAP quoted string. */
function isQuotable(s: string): boolean {
  return /^[\x01-\x09\x0b\x0c\x0e-\x7f]*$/.test(s);
}

export function quoted(s: string): string {
  return `"${s.replace(/(["\\])/g, '\\$1')}"`;
}
