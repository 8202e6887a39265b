import { domainToUnicode } from 'node:url';

/** Longest path accepted in MAIL FROM / RCPT TO (RFC 5321 §4.5.3.1.3: 256 octets). */
const MAX_PATH = 256;
/** No spaces, controls or angle brackets inside a path. */
const BAD_PATH = /[\u0000-\u0020\u007f<>]/;

export type PathArgument =
  | { ok: true; address: string; params: Map<string, string | null> }
  | { ok: false; reason: 'syntax' | 'parameter' };

/**
 * The argument of `MAIL FROM:` / `RCPT TO:` (what follows the colon):
 * `<address>` (`<>` for MAIL's null sender) and ESMTP parameters
 * `NAME[=value]`, names upper-cased. A source route (`<@a,@b:x@y>`) is
 * accepted and dropped (RFC 5321 §4.1.2).
 */
export function parsePath(argument: string): PathArgument {
  const m = /^ ?<([^>]*)>(.*)$/.exec(argument);
  if (!m) return { ok: false, reason: 'syntax' };
  let address = m[1]!;
  if (address.startsWith('@')) address = address.slice(address.indexOf(':') + 1);
  if (address.length > MAX_PATH || BAD_PATH.test(address)) return { ok: false, reason: 'syntax' };
  const params = new Map<string, string | null>();
  const rest = m[2]!;
  if (rest !== '' && !rest.startsWith(' ')) return { ok: false, reason: 'syntax' };
  for (const word of rest.split(' ')) {
    if (word === '') continue;
    const eq = word.indexOf('=');
    const name = (eq < 0 ? word : word.slice(0, eq)).toUpperCase();
    if (!/^[A-Z0-9][A-Z0-9-]*$/.test(name) || params.has(name)) return { ok: false, reason: 'parameter' };
    params.set(name, eq < 0 ? null : word.slice(eq + 1));
  }
  return { ok: true, address, params };
}

/** A recipient must be an address with a domain (RFC 5321's `postmaster` alone is not relayed). */
export function isRecipient(address: string): boolean {
  const at = address.lastIndexOf('@');
  return at > 0 && at < address.length - 1;
}

/** Lower-case local part and Unicode, lower-case domain: how sender addresses are compared with the account's. */
export function canonicalMailbox(address: string): string {
  const at = address.lastIndexOf('@');
  if (at < 0) return address.toLowerCase();
  const domain = address.slice(at + 1);
  return `${address.slice(0, at)}@${domainToUnicode(domain) || domain}`.toLowerCase();
}
