import type { PublicEndpoint } from '../config.js';
import type { Protocol } from '../keys/scopes.js';

/**
 * What clients are told about connecting: the `connectionInfo` of the SMTP
 * Credentials API (config `public.{smtp,imap,pop3}`), the public names and
 * ports, which may differ from the bind ports.
 */
export type Endpoint = PublicEndpoint;

export interface ConnectionInfo {
  smtp: Endpoint;
  imap: Endpoint;
  pop3: Endpoint;
}


/** `tls`: TLS from the first byte (993, 995, 465). `starttls`: plain connect, then STARTTLS / STLS (143, 110, 587). */
export type Security = 'tls' | 'starttls';

export interface ServerChoice {
  protocol: Protocol;
  host: string;
  port: number;
  security: Security;
}

/**
 * The ways to reach one protocol, best first: implicit TLS (`securePort`),
 * then STARTTLS (`port`). Empty when the protocol is not advertised
 * (`enabled: false`) or has no host; a port of 0 means that variant is not
 * offered. Keygate refuses passwords before TLS, so there is never a
 * plain-text variant.
 */
export function offeredServers(info: ConnectionInfo, protocol: Protocol): ServerChoice[] {
  const e = info[protocol];
  if (!e.enabled || e.serverName.trim() === '') return [];
  const host = e.serverName.trim();
  const out: ServerChoice[] = [];
  if (validPort(e.securePort)) out.push({ protocol, host, port: e.securePort, security: 'tls' });
  if (validPort(e.port)) out.push({ protocol, host, port: e.port, security: 'starttls' });
  return out;
}

/** The preferred way to reach a protocol, or null when it is not offered. */
export function preferredServer(info: ConnectionInfo, protocol: Protocol): ServerChoice | null {
  return offeredServers(info, protocol)[0] ?? null;
}

function validPort(p: number): boolean {
  return Number.isInteger(p) && p > 0 && p <= 65535;
}

/** Escapes text for XML element content and attribute values. */
export function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => XML_ESCAPES[c]!);
}

const XML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' };

/** Addresses we accept from unauthenticated setup requests: one `@`, no spaces or controls, at most 254 characters. */
const ADDRESS_RE = /^[^\s@<>"'&\u0000-\u001f\u007f]{1,64}@([A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*)$/;

/** True for a plausible mail address (the check used for client-supplied addresses). */
export function isPlausibleAddress(address: string): boolean {
  return address.length <= 254 && ADDRESS_RE.test(address);
}

/** The lowercase domain of a plausible address, or null. */
export function domainOf(address: string): string | null {
  if (address.length > 254) return null;
  const m = ADDRESS_RE.exec(address);
  return m ? m[1]!.toLowerCase() : null;
}
