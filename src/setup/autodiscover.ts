import { XMLParser, XMLValidator } from 'fast-xml-parser';
import type { Protocol } from '../keys/scopes.js';
import { escapeXml, isPlausibleAddress, preferredServer, type ConnectionInfo } from './connection.js';

/**
 * Outlook's POX Autodiscover (request schema 2006, response schema 2006a) for
 * IMAP, POP3 and SMTP accounts.
 *
 * The request is untrusted XML from anyone. It is size-bounded before it is
 * read, any DTD (`<!DOCTYPE`, `<!ENTITY`) is refused outright, so no entity can
 * be declared, let alone expanded (no XXE, no billion laughs), and the parser
 * runs with entity processing off; the five predefined XML entities and
 * character references in the one field we read are decoded by hand.
 */

export const REQUEST_SCHEMA_2006 = 'http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006';
export const RESPONSE_SCHEMA_2006 = 'http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006';
export const RESPONSE_SCHEMA_2006A = 'http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a';
export const AUTODISCOVER_CONTENT_TYPE = 'text/xml; charset=utf-8';

/** A real Autodiscover request is a few hundred bytes. */
export const AUTODISCOVER_MAX_BYTES = 16 * 1024;
const MAX_DEPTH = 16;

export type AutodiscoverRejection = 'too_large' | 'dtd' | 'malformed' | 'not_autodiscover';

/** The request is not one we will read; `status` is the HTTP status to answer with (413 or 400). */
export class AutodiscoverRequestError extends Error {
  readonly status: 400 | 413;
  constructor(
    readonly reason: AutodiscoverRejection,
    message: string,
  ) {
    super(message);
    this.name = 'AutodiscoverRequestError';
    this.status = reason === 'too_large' ? 413 : 400;
  }
}

export interface AutodiscoverRequest {
  /** `Request/EMailAddress`, entity-decoded and trimmed; null when absent or empty. */
  emailAddress: string | null;
  /** `Request/AcceptableResponseSchema`, trimmed; null when absent. */
  acceptableResponseSchema: string | null;
}

const parser = new XMLParser({
  ignoreAttributes: true,
  removeNSPrefix: true,
  processEntities: false,
  htmlEntities: false,
  parseTagValue: false,
  trimValues: true,
  ignoreDeclaration: true,
  ignorePiTags: true,
  maxNestedTags: MAX_DEPTH,
});

/**
 * Reads an Autodiscover POX request.
 * @throws AutodiscoverRequestError `too_large` (over `maxBytes`), `dtd` (any
 *   DOCTYPE or ENTITY declaration), `malformed` (not well-formed XML, or nested
 *   deeper than 16), `not_autodiscover` (well-formed, but not
 *   `<Autodiscover><Request>…`).
 */
export function parseAutodiscoverRequest(body: string | Buffer, maxBytes = AUTODISCOVER_MAX_BYTES): AutodiscoverRequest {
  const size = typeof body === 'string' ? Buffer.byteLength(body) : body.length;
  if (size > maxBytes) throw new AutodiscoverRequestError('too_large', `The request is larger than ${maxBytes} bytes`);
  const xml = (typeof body === 'string' ? body : body.toString('utf8')).replace(/^\uFEFF/, '');
  if (/<!\s*(DOCTYPE|ENTITY|ELEMENT|ATTLIST|NOTATION)/i.test(xml)) {
    throw new AutodiscoverRequestError('dtd', 'Document type declarations are not accepted');
  }
  if (xml.trim() === '') throw new AutodiscoverRequestError('malformed', 'The request body is empty');
  // With no DTD, only the predefined entities exist; anything else after `&` is not well-formed.
  const markup = xml.replace(/<!\[CDATA\[[\s\S]*?\]\]>|<!--[\s\S]*?-->/g, '');
  if (/&(?!(?:lt|gt|amp|quot|apos|#[0-9]{1,7}|#x[0-9A-Fa-f]{1,6});)/.test(markup)) {
    throw new AutodiscoverRequestError('malformed', 'The request is not well-formed XML (undeclared entity or bare &)');
  }
  const valid = XMLValidator.validate(xml);
  if (valid !== true) throw new AutodiscoverRequestError('malformed', `The request is not well-formed XML (line ${valid.err.line}: ${valid.err.msg})`);
  let doc: unknown;
  try {
    doc = parser.parse(xml);
  } catch (err) {
    throw new AutodiscoverRequestError('malformed', `The request is not well-formed XML (${(err as Error).message})`);
  }
  // XMLValidator lets several top-level elements through; a document has exactly one.
  const roots = doc !== null && typeof doc === 'object' ? Object.values(doc) : [];
  if (roots.length !== 1 || Array.isArray(roots[0])) throw new AutodiscoverRequestError('malformed', 'The request is not well-formed XML (expected exactly one root element)');
  const root = field(doc, 'Autodiscover');
  const request = field(root, 'Request');
  if (request === undefined) throw new AutodiscoverRequestError('not_autodiscover', 'Expected <Autodiscover><Request>…</Request></Autodiscover>');
  const text = (v: unknown): string | null => {
    if (typeof v !== 'string') return null;
    const t = decodeXmlText(v).trim();
    return t === '' ? null : t;
  };
  return { emailAddress: text(field(request, 'EMailAddress')), acceptableResponseSchema: text(field(request, 'AcceptableResponseSchema')) };
}

/** The first child named `name` (repeated elements parse as arrays); undefined when absent. */
function field(node: unknown, name: string): unknown {
  if (node === null || typeof node !== 'object' || Array.isArray(node)) return undefined;
  if (!Object.prototype.hasOwnProperty.call(node, name)) return undefined;
  const v = (node as Record<string, unknown>)[name];
  return Array.isArray(v) ? v[0] : v;
}

const PREDEFINED: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };

/** Decodes the five predefined entities and numeric character references; anything else is left as written. */
export function decodeXmlText(text: string): string {
  return text.replace(/&(#x[0-9A-Fa-f]{1,6}|#[0-9]{1,7}|lt|gt|amp|quot|apos);/g, (whole, ref: string) => {
    if (ref[0] !== '#') return PREDEFINED[ref]!;
    const code = ref[1] === 'x' ? parseInt(ref.slice(2), 16) : parseInt(ref.slice(1), 10);
    return code > 0 && code <= 0x10ffff && (code < 0xd800 || code > 0xdfff) ? String.fromCodePoint(code) : whole;
  });
}

/** Autodiscover error codes (MS-OXDSCLI): 600 invalid request, 601 no provider for the requested schema. */
export type AutodiscoverErrorCode = 600 | 601;

export interface AutodiscoverAnswer {
  /** Always 200: Autodiscover reports its own errors inside the XML. */
  xml: string;
  /** False when `xml` is an `<Error>` response. */
  ok: boolean;
}

/**
 * Answers a parsed request: the 2006a settings for a plausible address when
 * the client accepts 2006a (or names no schema); an Autodiscover error
 * response otherwise (600 for a missing or implausible address, 601 for
 * another schema, e.g. ActiveSync's mobilesync).
 */
export function answerAutodiscover(request: AutodiscoverRequest, info: ConnectionInfo, now: Date = new Date()): AutodiscoverAnswer {
  const schema = request.acceptableResponseSchema;
  if (schema !== null && schema.replace(/^https:/, 'http:') !== RESPONSE_SCHEMA_2006A) {
    return { ok: false, xml: buildAutodiscoverError(601, 'Provider is not available for the requested schema', now) };
  }
  if (request.emailAddress === null || !isPlausibleAddress(request.emailAddress)) {
    return { ok: false, xml: buildAutodiscoverError(600, 'Invalid Request', now) };
  }
  return { ok: true, xml: buildAutodiscoverResponse(info, request.emailAddress) };
}

const TYPES: Record<Protocol, string> = { imap: 'IMAP', pop3: 'POP3', smtp: 'SMTP' };

/**
 * The 2006a response: one `Protocol` block each for IMAP, POP3 and SMTP (in
 * that order; a protocol that is not advertised is left out), each at its
 * preferred port (implicit TLS when offered: `SSL on` + `Encryption SSL`;
 * otherwise STARTTLS: `Encryption TLS`), the address as `LoginName`,
 * password authentication (`SPA off`) required.
 */
export function buildAutodiscoverResponse(info: ConnectionInfo, emailAddress: string): string {
  const blocks: string[] = [];
  for (const protocol of ['imap', 'pop3', 'smtp'] as const) {
    const s = preferredServer(info, protocol);
    if (!s) continue;
    blocks.push(
      [
        '      <Protocol>',
        `        <Type>${TYPES[protocol]}</Type>`,
        `        <Server>${escapeXml(s.host)}</Server>`,
        `        <Port>${s.port}</Port>`,
        `        <LoginName>${escapeXml(emailAddress)}</LoginName>`,
        '        <DomainRequired>off</DomainRequired>',
        '        <SPA>off</SPA>',
        '        <SSL>on</SSL>',
        `        <Encryption>${s.security === 'tls' ? 'SSL' : 'TLS'}</Encryption>`,
        '        <AuthRequired>on</AuthRequired>',
        ...(protocol === 'smtp' ? ['        <UsePOPAuth>off</UsePOPAuth>', '        <SMTPLast>off</SMTPLast>'] : []),
        '      </Protocol>',
      ].join('\n'),
    );
  }
  return [
    '<?xml version="1.0" encoding="utf-8"?>',
    `<Autodiscover xmlns="${RESPONSE_SCHEMA_2006}">`,
    `  <Response xmlns="${RESPONSE_SCHEMA_2006A}">`,
    '    <Account>',
    '      <AccountType>email</AccountType>',
    '      <Action>settings</Action>',
    ...blocks,
    '    </Account>',
    '  </Response>',
    '</Autodiscover>',
    '',
  ].join('\n');
}

/** An Autodiscover `<Error>` response (schema 2006). */
export function buildAutodiscoverError(code: AutodiscoverErrorCode, message: string, now: Date = new Date()): string {
  const time = now.toISOString().slice(11, 23);
  const id = Math.floor(Math.random() * 2 ** 31);
  return [
    '<?xml version="1.0" encoding="utf-8"?>',
    `<Autodiscover xmlns="${RESPONSE_SCHEMA_2006}">`,
    '  <Response>',
    `    <Error Time="${time}" Id="${id}">`,
    `      <ErrorCode>${code}</ErrorCode>`,
    `      <Message>${escapeXml(message)}</Message>`,
    '      <DebugData />',
    '    </Error>',
    '  </Response>',
    '</Autodiscover>',
    '',
  ].join('\n');
}
