import { XMLParser, XMLValidator } from 'fast-xml-parser';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  answerAutodiscover,
  AutodiscoverRequestError,
  buildAutodiscoverResponse,
  parseAutodiscoverRequest,
  RESPONSE_SCHEMA_2006,
  RESPONSE_SCHEMA_2006A,
} from '../../src/setup/autodiscover.js';
import { MemorySetupLinkBackend, SetupLinks } from '../../src/setup/setup-links.js';
import { HOSTNAME, INFO, setupApp } from './helpers.js';

const request = (address: string, schema = RESPONSE_SCHEMA_2006A) => `<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>${address}</EMailAddress>
    <AcceptableResponseSchema>${schema}</AcceptableResponseSchema>
  </Request>
</Autodiscover>`;

interface Protocol {
  Type: string;
  Server: string;
  Port: number;
  LoginName: string;
  SSL: string;
  Encryption: string;
  SPA: string;
  AuthRequired: string;
}

const reader = new XMLParser({ ignoreAttributes: false, isArray: (name) => name === 'Protocol' });

function readResponse(xml: string) {
  expect(XMLValidator.validate(xml)).toBe(true);
  return reader.parse(xml) as {
    Autodiscover: {
      '@_xmlns': string;
      Response: {
        '@_xmlns'?: string;
        Account?: { AccountType: string; Action: string; Protocol: Protocol[] };
        Error?: { ErrorCode: number; Message: string };
      };
    };
  };
}

const XXE = `<?xml version="1.0"?>
<!DOCTYPE foo [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<Autodiscover><Request><EMailAddress>&xxe;</EMailAddress><AcceptableResponseSchema>${RESPONSE_SCHEMA_2006A}</AcceptableResponseSchema></Request></Autodiscover>`;

const LAUGHS = `<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<Autodiscover><Request><EMailAddress>&lol4;@example.com</EMailAddress></Request></Autodiscover>`;

describe('parseAutodiscoverRequest', () => {
  it('reads the address and the schema, with or without namespace prefixes', () => {
    expect(parseAutodiscoverRequest(request('alice@example.com'))).toEqual({ emailAddress: 'alice@example.com', acceptableResponseSchema: RESPONSE_SCHEMA_2006A });
    const prefixed = `<a:Autodiscover xmlns:a="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><a:Request><a:EMailAddress> bob@example.com </a:EMailAddress></a:Request></a:Autodiscover>`;
    expect(parseAutodiscoverRequest(Buffer.from(prefixed))).toEqual({ emailAddress: 'bob@example.com', acceptableResponseSchema: null });
  });

  it('decodes only predefined entities and character references', () => {
    expect(parseAutodiscoverRequest(request('a&amp;b&#x2B;c&#64;x@example.com')).emailAddress).toBe('a&b+c@x@example.com');
  });

  it('refuses any DTD (XXE, billion laughs) before parsing', () => {
    for (const xml of [XXE, LAUGHS, '<!doctype x><Autodiscover/>', '<Autodiscover><!ENTITY a "b"></Autodiscover>']) {
      const err = (() => {
        try {
          parseAutodiscoverRequest(xml);
        } catch (e) {
          return e;
        }
        return null;
      })();
      expect(err).toBeInstanceOf(AutodiscoverRequestError);
      expect((err as AutodiscoverRequestError).reason).toBe('dtd');
      expect((err as AutodiscoverRequestError).status).toBe(400);
    }
  });

  it('refuses oversized bodies by size, before reading them', () => {
    const err = (() => {
      try {
        parseAutodiscoverRequest(request('a'.repeat(20_000) + '@example.com'));
      } catch (e) {
        return e as AutodiscoverRequestError;
      }
      return null;
    })();
    expect(err?.reason).toBe('too_large');
    expect(err?.status).toBe(413);
  });

  it('refuses documents nested deeper than a request ever is', () => {
    const deep = '<Autodiscover><Request>' + '<x>'.repeat(40) + '</x>'.repeat(40) + '</Request></Autodiscover>';
    expect(() => parseAutodiscoverRequest(deep)).toThrow(AutodiscoverRequestError);
  });
});

describe('answerAutodiscover', () => {
  it('builds the 2006a response with IMAP, POP3 and SMTP Protocol blocks at the implicit-TLS ports', () => {
    const answer = answerAutodiscover({ emailAddress: 'alice@example.com', acceptableResponseSchema: RESPONSE_SCHEMA_2006A }, INFO);
    expect(answer.ok).toBe(true);
    const doc = readResponse(answer.xml).Autodiscover;
    expect(doc['@_xmlns']).toBe(RESPONSE_SCHEMA_2006);
    expect(doc.Response['@_xmlns']).toBe(RESPONSE_SCHEMA_2006A);
    const account = doc.Response.Account!;
    expect(account.AccountType).toBe('email');
    expect(account.Action).toBe('settings');
    expect(account.Protocol.map((p) => `${p.Type} ${p.Server}:${p.Port} ${p.Encryption}`)).toEqual([
      'IMAP imap.example.com:993 SSL',
      'POP3 pop.example.com:995 SSL',
      'SMTP mail.example.com:465 SSL',
    ]);
    for (const p of account.Protocol) {
      expect(p.LoginName).toBe('alice@example.com');
      expect(p.SSL).toBe('on');
      expect(p.SPA).toBe('off');
      expect(p.AuthRequired).toBe('on');
    }
  });

  it('falls back to STARTTLS (Encryption TLS) where there is no implicit-TLS port', () => {
    const info = { ...INFO, smtp: { ...INFO.smtp, securePort: 0 } };
    const smtp = readResponse(buildAutodiscoverResponse(info, 'a@example.com')).Autodiscover.Response.Account!.Protocol[2]!;
    expect(`${smtp.Port} ${smtp.SSL} ${smtp.Encryption}`).toBe('587 on TLS');
  });

  it('answers other schemas with error 601 and a missing address with 600', () => {
    const mobilesync = answerAutodiscover({ emailAddress: 'a@example.com', acceptableResponseSchema: 'http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006' }, INFO);
    expect(mobilesync.ok).toBe(false);
    expect(readResponse(mobilesync.xml).Autodiscover.Response.Error!.ErrorCode).toBe(601);
    const none = answerAutodiscover({ emailAddress: null, acceptableResponseSchema: null }, INFO);
    expect(readResponse(none.xml).Autodiscover.Response.Error!.ErrorCode).toBe(600);
  });
});

describe('POST /autodiscover/autodiscover.xml', () => {
  let app: FastifyInstance;
  beforeAll(async () => {
    app = await setupApp({ config: { public: INFO, hostname: HOSTNAME }, links: new SetupLinks(new MemorySetupLinkBackend()), autodiscoverMaxBytes: 4096 });
  });
  afterAll(() => app.close());

  const post = (payload: string | Buffer, contentType: string | null = 'text/xml', url = '/autodiscover/autodiscover.xml') =>
    app.inject({ method: 'POST', url, payload, headers: contentType === null ? {} : { 'content-type': contentType } });

  it('answers a valid request on both spellings of the path, whatever XML content type', async () => {
    for (const [url, type] of [
      ['/autodiscover/autodiscover.xml', 'text/xml; charset=utf-8'],
      ['/Autodiscover/Autodiscover.xml', 'application/xml'],
      ['/autodiscover/autodiscover.xml', 'text/plain'],
      ['/autodiscover/autodiscover.xml', null],
    ] as const) {
      const res = await post(request('carol@example.com'), type, url);
      expect(res.statusCode, `${url} ${type}`).toBe(200);
      expect(res.headers['content-type']).toMatch(/^text\/xml/);
      const protocols = readResponse(res.body).Autodiscover.Response.Account!.Protocol;
      expect(protocols.map((p) => p.Type)).toEqual(['IMAP', 'POP3', 'SMTP']);
      expect(protocols.every((p) => p.LoginName === 'carol@example.com')).toBe(true);
    }
  });

  it('answers malformed XML with 400 and the JSON error shape, and keeps serving', async () => {
    const bad = [
      '',
      'not xml at all',
      '<Autodiscover><Request>',
      '<Autodiscover><Request></Autodiscover></Request>',
      '<Autodiscover><Request><EMailAddress>a@b.c</EMailAddress></Request></Autodiscover><second/>',
      '<Autodiscover attr=noquotes/>',
      '{"json": true}',
      '<Other><Request><EMailAddress>a@example.com</EMailAddress></Request></Other>',
      '<Autodiscover><Request><EMailAddress>&unknown;</EMailAddress></Request></Autodiscover>',
    ];
    for (const body of bad) {
      const res = await post(body, 'application/json');
      expect(res.statusCode, JSON.stringify(body)).toBe(400);
      expect(res.json()).toMatchObject({ error: { code: 'bad_request', message: expect.any(String) } });
    }
    const junk = await post(Buffer.from(Array.from({ length: 2000 }, (_, i) => (i * 7919) % 256)), 'text/xml');
    expect(junk.statusCode).toBe(400);
    expect((await post(request('dave@example.com'))).statusCode).toBe(200);
  });

  it('answers an XXE attempt with 400 and never expands the entity', async () => {
    for (const body of [XXE, LAUGHS]) {
      const res = await post(body);
      expect(res.statusCode).toBe(400);
      expect(res.body).not.toMatch(/root:|lollol/);
      expect(res.json().error.message).toMatch(/document type/i);
    }
  });

  it('refuses an oversized body with 413 before reading it', async () => {
    const res = await post(request('x'.repeat(5000) + '@example.com'));
    expect(res.statusCode).toBe(413);
    expect(res.json().error.code).toBe('payload_too_large');
  });

  it('answers an unsupported response schema with an Autodiscover error (200, code 601)', async () => {
    const res = await post(request('a@example.com', 'http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006'));
    expect(res.statusCode).toBe(200);
    expect(readResponse(res.body).Autodiscover.Response.Error!.ErrorCode).toBe(601);
  });
});
