import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import type { Config } from '../../../config.js';
import { scrubUrl } from '../../log-url.js';
import { AUTOCONFIG_CONTENT_TYPE, buildAutoconfig } from '../../../setup/autoconfig.js';
import { answerAutodiscover, AUTODISCOVER_CONTENT_TYPE, AUTODISCOVER_MAX_BYTES, AutodiscoverRequestError, parseAutodiscoverRequest } from '../../../setup/autodiscover.js';
import { domainOf } from '../../../setup/connection.js';
import { profileHeaders, requestOrigin } from '../../../setup/mobile-response.js';
import { qrPng, qrSvg } from '../../../setup/qr.js';
import { setupPath, SetupLinks } from '../../../setup/setup-links.js';
import { errorBody, HttpError } from '../../errors.js';
import { ErrorBody } from '../../schemas.js';

/**
 * Client setup, unauthenticated (`config.auth: false`), no secrets except
 * behind a setup token:
 *  - Thunderbird autoconfig: GET /.well-known/autoconfig/mail/config-v1.1.xml
 *    and GET /mail/config-v1.1.xml?emailaddress=… (served for autoconfig.<domain>);
 *  - Outlook POX Autodiscover: POST /autodiscover/autodiscover.xml (and the
 *    capitalised path Outlook also uses);
 *  - one-time setup links: GET /setup/{token} serves the profile once;
 *    GET /setup/{token}/qr.svg and /qr.png draw the link's QR code without
 *    using it up. Used, expired or unknown → 410.
 *
 * Register it encapsulated (it is not wrapped in fastify-plugin): it installs
 * its own body parser for the Autodiscover XML, which must not leak to other routes.
 */
export interface ClientSetupRoutesOptions {
  config: Pick<Config, 'public' | 'hostname'>;
  links: SetupLinks;
  /** Public origin for the QR codes' links (e.g. https://keygate.example.com); default: the request's scheme and Host. */
  publicUrl?: string;
  /** Largest Autodiscover request body, bytes; default AUTODISCOVER_MAX_BYTES (16 KiB). */
  autodiscoverMaxBytes?: number;
}

const Token = Type.String({ maxLength: 64, description: 'The token from the setup link' });
const TokenParams = Type.Object({ token: Token });
const AutoconfigQuery = Type.Object({
  emailaddress: Type.Optional(Type.String({ maxLength: 254, description: 'The address being set up; its domain names the provider' })),
});
const Xml = Type.String({ description: 'XML document' });

/** Setup tokens must not reach the logs: they are a key until used. */
const TOKEN_IN_PATH = /(\/setup\/)[^/?#]+/g;
export function scrubSetupUrl(url: string): string {
  return scrubUrl(url).replace(TOKEN_IN_PATH, '$1[REDACTED]');
}

const setupLogSerializers = {
  req(req: FastifyRequest) {
    return { id: req.id, method: req.method, url: scrubSetupUrl(req.url), route: req.routeOptions?.url, ip: req.ip };
  },
};

export const clientSetupRoutes: FastifyPluginAsyncTypebox<ClientSetupRoutesOptions> = async (app, opts) => {
  const { config, links } = opts;
  const info = () => ({ smtp: config.public.smtp, imap: config.public.imap, pop3: config.public.pop3 });
  const maxBytes = opts.autodiscoverMaxBytes ?? AUTODISCOVER_MAX_BYTES;
  const common = { tags: ['client-setup'] };
  // Public, but counted per client IP like the API (a no-op where the rate-limit plugin is absent).
  const routeConfig = { auth: false as const, limit: 'api' as const };

  // Autodiscover bodies are XML of any declared type (Outlook sends text/xml); read them raw here only.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: maxBytes }, (_req, body, done) => done(null, body));

  const autoconfig = async (req: FastifyRequest<{ Querystring: { emailaddress?: string } }>, reply: FastifyReply) => {
    let domain: string;
    const address = req.query.emailaddress?.trim();
    if (address !== undefined && address !== '') {
      const d = domainOf(address);
      if (d === null) throw new HttpError('validation', 'emailaddress is not a mail address', [{ field: 'querystring.emailaddress', message: 'not a mail address' }]);
      domain = d;
    } else {
      domain = hostDomain(req.host) ?? config.hostname;
    }
    return reply
      .header('content-type', AUTOCONFIG_CONTENT_TYPE)
      .header('cache-control', 'public, max-age=3600')
      .send(buildAutoconfig(info(), { domain }));
  };
  const autoconfigSchema = {
    ...common,
    summary: 'Thunderbird autoconfig (clientConfig 1.1): IMAP, POP3 and SMTP servers, implicit TLS first',
    querystring: AutoconfigQuery,
    produces: ['text/xml'],
    response: { 200: Xml, 400: ErrorBody },
  };
  app.get('/.well-known/autoconfig/mail/config-v1.1.xml', { config: routeConfig, schema: autoconfigSchema }, autoconfig);
  app.get('/mail/config-v1.1.xml', { config: routeConfig, schema: autoconfigSchema }, autoconfig);

  const autodiscover = async (req: FastifyRequest, reply: FastifyReply) => {
    const body = Buffer.isBuffer(req.body) ? req.body : typeof req.body === 'string' ? req.body : '';
    let parsed;
    try {
      parsed = parseAutodiscoverRequest(body, maxBytes);
    } catch (err) {
      if (err instanceof AutodiscoverRequestError) {
        throw err.status === 413 ? new HttpError('payload_too_large', err.message) : new HttpError('bad_request', err.message);
      }
      throw err;
    }
    const answer = answerAutodiscover(parsed, info());
    return reply.header('content-type', AUTODISCOVER_CONTENT_TYPE).header('cache-control', 'no-store').send(answer.xml);
  };
  for (const url of ['/autodiscover/autodiscover.xml', '/Autodiscover/Autodiscover.xml']) {
    app.post(
      url,
      {
        config: routeConfig,
        bodyLimit: maxBytes,
        schema: {
          ...common,
          summary: 'Outlook POX Autodiscover (request schema 2006, response 2006a): IMAP, POP3 and SMTP settings',
          consumes: ['text/xml', 'application/xml'],
          produces: ['text/xml'],
          response: { 200: Xml, 400: ErrorBody, 413: ErrorBody },
        },
      },
      autodiscover,
    );
  }

  const gone = (reply: FastifyReply) =>
    reply.code(410).header('cache-control', 'no-store').send(errorBody('gone', 'This setup link has been used or has expired; ask for a new one'));
  const notALink = () => new HttpError('not_found', 'No such setup link');
  const setupRoute = {
    config: routeConfig,
    // A HEAD (link previews, scanners) must never use up the link.
    exposeHeadRoute: false,
    logSerializers: setupLogSerializers,
  };

  app.get(
    '/setup/:token',
    {
      ...setupRoute,
      schema: {
        ...common,
        summary: 'Serve a one-time setup link’s Apple configuration profile (once)',
        params: TokenParams,
        produces: ['application/x-apple-aspen-config'],
        response: { 200: Type.Unknown({ description: 'Signed .mobileconfig (DER)' }), 404: ErrorBody, 410: ErrorBody },
      },
    },
    async (req, reply) => {
      const result = await links.redeem(req.params.token);
      if (result.status === 'malformed') throw notALink();
      if (result.status === 'gone') return gone(reply);
      const headers = profileHeaders(result.profile.filename);
      return reply
        .headers({ ...headers, 'content-type': result.profile.contentType, 'referrer-policy': 'no-referrer' })
        .send(result.profile.body);
    },
  );

  const origin = (req: FastifyRequest) => requestOrigin(req, config.hostname, opts.publicUrl);
  const qrRoute = (ext: 'svg' | 'png') =>
    app.get(
      `/setup/:token/qr.${ext}`,
      {
        ...setupRoute,
        schema: {
          ...common,
          summary: `QR code (${ext.toUpperCase()}) of a one-time setup link; does not use the link up`,
          params: TokenParams,
          produces: [ext === 'svg' ? 'image/svg+xml' : 'image/png'],
          response: { 200: Type.Unknown(), 404: ErrorBody, 410: ErrorBody },
        },
      },
      async (req, reply) => {
        const state = await links.state(req.params.token);
        if (state === 'malformed') throw notALink();
        if (state === 'gone') return gone(reply);
        const url = `${origin(req)}${setupPath(req.params.token)}`;
        reply.header('cache-control', 'no-store').header('referrer-policy', 'no-referrer').header('x-content-type-options', 'nosniff');
        if (ext === 'svg') return reply.header('content-type', 'image/svg+xml; charset=utf-8').send(await qrSvg(url));
        return reply.header('content-type', 'image/png').send(await qrPng(url));
      },
    );
  qrRoute('svg');
  qrRoute('png');
};

/** The mail domain a Host header stands for: without port, without a leading `autoconfig.`; null when not a host name. */
function hostDomain(host: string): string | null {
  const name = host.replace(/:\d+$/, '').toLowerCase();
  if (!/^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?)+$/.test(name)) return null;
  if (/^\d+$/.test(name.slice(name.lastIndexOf('.') + 1))) return null; // an IPv4 address, not a domain
  return name.replace(/^autoconfig\./, '');
}
