import { escapeXml, offeredServers, type ConnectionInfo, type ServerChoice } from './connection.js';

/** Thunderbird accepts `text/xml` and `application/xml`; this is what Keygate sends. */
export const AUTOCONFIG_CONTENT_TYPE = 'text/xml; charset=utf-8';

export interface AutoconfigOptions {
  /** The mail domain the answer is for (`<domain>`, `emailProvider id`). */
  domain: string;
  /** `<displayName>`; default "Keygate (<domain>)". */
  displayName?: string;
  /** `<displayShortName>`; default "Keygate". */
  displayShortName?: string;
}

/**
 * Thunderbird's `clientConfig` version 1.1 for `connectionInfo`
 * (https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat):
 * IMAP servers first (preferred), then POP3, then SMTP; within each protocol
 * implicit TLS (`SSL`) first and STARTTLS second. Username `%EMAILADDRESS%`,
 * authentication `password-cleartext` (the key is the password; it only ever
 * travels inside TLS). Disabled protocols are left out. Holds no secrets.
 */
export function buildAutoconfig(info: ConnectionInfo, opts: AutoconfigOptions): string {
  const domain = opts.domain.toLowerCase();
  const server = (tag: 'incomingServer' | 'outgoingServer', s: ServerChoice): string =>
    [
      `    <${tag} type="${s.protocol}">`,
      `      <hostname>${escapeXml(s.host)}</hostname>`,
      `      <port>${s.port}</port>`,
      `      <socketType>${s.security === 'tls' ? 'SSL' : 'STARTTLS'}</socketType>`,
      `      <authentication>password-cleartext</authentication>`,
      `      <username>%EMAILADDRESS%</username>`,
      `    </${tag}>`,
    ].join('\n');

  const incoming = [...offeredServers(info, 'imap'), ...offeredServers(info, 'pop3')].map((s) => server('incomingServer', s));
  const outgoing = offeredServers(info, 'smtp').map((s) => server('outgoingServer', s));
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<clientConfig version="1.1">',
    `  <emailProvider id="${escapeXml(domain)}">`,
    `    <domain>${escapeXml(domain)}</domain>`,
    `    <displayName>${escapeXml(opts.displayName ?? `Keygate (${domain})`)}</displayName>`,
    `    <displayShortName>${escapeXml(opts.displayShortName ?? 'Keygate')}</displayShortName>`,
    ...incoming,
    ...outgoing,
    '  </emailProvider>',
    '</clientConfig>',
    '',
  ].join('\n');
}
