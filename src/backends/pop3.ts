import { UpstreamError, type UpstreamConnection } from './connection.js';
import { saslIdentity, saslPlain, type Route } from './routing.js';
import type { SessionContext } from './types.js';

async function status(conn: UpstreamConnection, what: string, stage: UpstreamError['stage'] = 'protocol'): Promise<string> {
  const line = await conn.readLine();
  if (line.startsWith('+OK')) return line;
  throw new UpstreamError(`${what}: ${line.startsWith('-ERR') ? line.slice(0, 300) : `unexpected reply ${JSON.stringify(line.slice(0, 100))}`}`, stage);
}

async function capa(conn: UpstreamConnection): Promise<string[]> {
  conn.write('CAPA\r\n');
  const first = await conn.readLine();
  if (!first.startsWith('+OK')) return []; // CAPA is optional (RFC 2449)
  const caps: string[] = [];
  for (let line = await conn.readLine(); line !== '.'; line = await conn.readLine()) caps.push(line.toUpperCase());
  return caps;
}

/**
 * POP3's upstream login for the ProxyBackend: upgrades with STLS when asked,
 * reports the client with `XCLIENT ADDR= PORT=` to a trusted upstream that
 * offers it (Dovecot does, to login_trusted_networks), logs in with USER/PASS
 * (`user*master` in the separator style, or the account's own credentials) or
 * AUTH PLAIN with an authzid, and resolves right after the upstream's `+OK`.
 */
export async function pop3Login(conn: UpstreamConnection, route: Route, ctx: SessionContext): Promise<void> {
  const greeting = await status(conn, 'upstream greeting', 'greeting');
  let caps: string[] | null = null;
  if (route.server.tls === 'starttls') {
    caps = await capa(conn);
    if (!caps.includes('STLS')) throw new UpstreamError('upstream does not offer STLS', 'tls');
    conn.write('STLS\r\n');
    await status(conn, 'STLS refused', 'tls');
    await conn.startTls();
    caps = null;
  }
  if (route.server.trusted) {
    // Dovecot says so in its greeting (`+OK [XCLIENT] …`); others may list it in CAPA.
    const offered = /^\+OK \[XCLIENT\]/i.test(greeting) || (caps ??= await capa(conn)).some((c) => c.split(' ')[0] === 'XCLIENT');
    if (offered) {
      conn.write(`XCLIENT ADDR=${ctx.clientIp} PORT=${ctx.clientPort}\r\n`);
      await status(conn, 'XCLIENT refused');
    }
  }

  const login = route.login;
  const identity = saslIdentity(login);
  if (!identity) throw new UpstreamError(`login mode ${login.mode} does not apply to POP3`, 'login');
  if (identity.authzid !== '') {
    conn.write(`AUTH PLAIN ${saslPlain(identity)}\r\n`);
    await status(conn, `upstream refused the login of ${route.user} (master)`, 'login');
    return;
  }
  const { authcid: user, password } = identity;

  if (/[\s\0]/.test(user) || /[\r\n\0]/.test(password)) {
    // USER takes one word: names with spaces go through AUTH PLAIN.
    conn.write(`AUTH PLAIN ${saslPlain(identity)}\r\n`);
    await status(conn, `upstream refused the login of ${route.user} (${login.mode})`, 'login');
    return;
  }
  conn.write(`USER ${user}\r\n`);
  await status(conn, `upstream refused USER for ${route.user}`, 'login');
  conn.write(`PASS ${password}\r\n`);
  await status(conn, `upstream refused the login of ${route.user} (${login.mode})`, 'login');
}
