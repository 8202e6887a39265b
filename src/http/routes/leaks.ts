import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { Config } from '../../config.js';
import { actOnLeakReport, parseLeakReport } from '../../leaks/report.js';
import { LeakSenders } from '../../leaks/senders.js';
import type { KeyStore } from '../../store/types.js';
import { HttpError } from '../errors.js';
import { ErrorBody } from '../schemas.js';

/** Largest report read: GitHub batches a few findings per request; a thousand fit in far less. */
export const LEAK_REPORT_LIMIT = 256 * 1024;

const Verdict = Type.Object({
  token_hash: Type.String({ description: 'SHA-256 of the reported string, hex; the string itself is never echoed' }),
  token_type: Type.String(),
  label: Type.Union([Type.Literal('true_positive'), Type.Literal('false_positive')], { description: 'true_positive: it was a live Keygate key, now revoked' }),
  url: Type.String(),
});

/**
 * `POST /api/leaks`: leaked-key reports from secret scanners, in the format
 * of GitHub's secret-scanning partner program (`[{token, type, url,
 * source}]`). No key: the sender is verified instead, over the exact bytes
 * received (GitHub's ECDSA signature against `leaks.githubKeys`, or the HMAC
 * of `leaks.hmacSecret`), before the body is even parsed. An unverified
 * report is 401, the same for every reason, and changes nothing.
 */
export const leakRoutes: FastifyPluginAsyncTypebox<{ config: Config; store: KeyStore }> = async (app, { config, store }) => {
  const senders = new LeakSenders(config.leaks);
  // The signature covers the bytes as sent: this route reads them raw, whatever the content type, and parses after the check.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: LEAK_REPORT_LIMIT }, (_req, body, done) => done(null, body));

  app.post(
    '/api/leaks',
    {
      config: { auth: false },
      bodyLimit: LEAK_REPORT_LIMIT,
      schema: {
        tags: ['leaks'],
        summary: 'Report leaked keys (GitHub secret scanning format); signed by the scanner, not by a key',
        description:
          'Body: `[{token, type, url, source}]`. Signed with GitHub\'s `Github-Public-Key-Identifier` + `Github-Public-Key-Signature` (ECDSA P-256, SHA-256, base64 DER) or `Keygate-Signature: sha256=<hex HMAC-SHA256 of the body>`. Every live Keygate key found is revoked at once.',
        response: { 200: Type.Array(Verdict), 400: ErrorBody, 401: ErrorBody, 413: ErrorBody },
      },
    },
    async (req) => {
      const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      const sender = senders.check(req.headers, raw);
      if (!sender.ok) {
        req.log.warn({ leakReport: true, refused: sender.reason, bytes: raw.length }, 'leak report refused: sender not verified');
        throw new HttpError('unauthorized', 'The report is not signed by a configured scanner');
      }
      let body: unknown;
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch {
        throw new HttpError('bad_request', 'The report is not JSON');
      }
      const report = parseLeakReport(body);
      if ('problem' in report) throw new HttpError('bad_request', report.problem);
      const verdicts = await actOnLeakReport(store, report.findings, req.log);
      req.log.info({ leakReport: true, sender: sender.sender, githubKeyId: sender.keyId, findings: verdicts.length, revoked: verdicts.filter((v) => v.label === 'true_positive').length }, 'leak report handled');
      return verdicts;
    },
  );
};
