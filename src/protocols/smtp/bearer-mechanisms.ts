import SASL from 'smtp-server/lib/sasl.js';
import type { SMTPServerAuthentication } from 'smtp-server';
import type { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { SaslExchange, type SaslStep } from '../sasl-mechanisms.js';

/**
 * OAUTHBEARER (RFC 7628) and XOAUTH2 for smtp-server, decoded by the one
 * mechanism module every Keygate surface uses (src/protocols/sasl-mechanisms.ts).
 *
 * Why this reaches into smtp-server: it has no OAUTHBEARER, and its own
 * XOAUTH2 parser is laxer than ours; but it looks mechanisms up by name in
 * its exported SASL table (`SASL_<NAME>`, `smtp-server/lib/sasl.js`), and
 * runs each with the connection as `this`, as its own XOAUTH2 does. The two
 * entries below replace / add those names, using what smtp-server's own
 * mechanisms use (`send`, `_nextHandler`, `_server.onAuth`, `session`,
 * `_transmissionType`). test/protocols/bearer.test.ts drives them over
 * real sockets, so a smtp-server release that changes this seam fails there.
 *
 * The key is handed to `onAuth` as `accessToken` (no `password`). A refused
 * or temporary login — `onAuth` calls back with an error carrying its reply
 * — is answered with the RFC 7628 error challenge (`334 <base64 JSON>`)
 * first, and that reply after the client's answer, as RFC 7628 §3.2.3 asks.
 */
type Done = () => void;
type BearerMechanism = 'OAUTHBEARER' | 'XOAUTH2';
type ReplyError = Error & { responseCode?: number };

function bearer(mechanism: BearerMechanism) {
  return function (this: SMTPConnection, args: string[], done: Done): void {
    if (args.length > 1) {
      this.send(501, `5.5.4 Syntax: AUTH ${mechanism} [initial-response]`);
      return done();
    }
    const exchange = new SaslExchange(mechanism);
    const next = (step: SaslStep, done: Done): void => {
      if (step.kind === 'challenge') {
        this.send(334, step.challenge);
        this._nextHandler = (line: Buffer | string, done: Done) => {
          const text = line.toString().trim();
          if (text === '*') {
            this.send(501, '5.7.0 Authentication aborted');
            return done();
          }
          next(exchange.next(text), done);
        };
        return done();
      }
      if (step.kind !== 'credentials') {
        this.send(501, '5.5.2 Invalid SASL response');
        return done();
      }
      // `method` is typed for smtp-server's own names; validatePassword is CRAM-MD5's and never called here.
      const auth = { method: mechanism as SMTPServerAuthentication['method'], username: step.username, accessToken: step.key, validatePassword: () => false };
      this._server.onAuth(auth, this.session, (err, response) => {
        if (err || !response?.user) {
          const failure = (err ?? new Error('5.7.8 Authentication credentials invalid')) as ReplyError;
          this.send(334, exchange.failureChallenge()!);
          this._nextHandler = (_line: Buffer | string, done: Done) => {
            this.send(failure.responseCode ?? 535, failure.message);
            done();
          };
          return done();
        }
        this.session.user = response.user;
        this.session.transmissionType = this._transmissionType();
        this.send(235, '2.7.0 Authentication successful');
        done();
      });
    };
    next(exchange.start(args[0]), done);
  };
}

const table = SASL as unknown as Record<string, unknown>;
table.SASL_OAUTHBEARER = bearer('OAUTHBEARER');
table.SASL_XOAUTH2 = bearer('XOAUTH2');

/** The AUTH mechanisms SMTP submission offers. */
export const SMTP_AUTH_METHODS = ['PLAIN', 'LOGIN', 'OAUTHBEARER', 'XOAUTH2'];
