import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import { errorBody, HttpError } from '../../src/http/errors.js';
import { clientSetupRoutes, type ClientSetupRoutesOptions } from '../../src/http/routes/client-setup/index.js';
import type { Logger } from '../../src/log.js';
import type { ConnectionInfo } from '../../src/setup/connection.js';
import type { ProfileSigner } from '../../src/setup/mobileconfig.js';

const run = promisify(execFile);

export const INFO: ConnectionInfo = {
  smtp: { serverName: 'mail.example.com', port: 587, securePort: 465, enabled: true },
  imap: { serverName: 'imap.example.com', port: 143, securePort: 993, enabled: true },
  pop3: { serverName: 'pop.example.com', port: 110, securePort: 995, enabled: true },
};

export const HOSTNAME = 'keygate.example.com';

/** A fresh temporary directory, removed by the returned cleanup. */
export function tempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-setup-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A throwaway self-signed signer made by `openssl req -x509 -nodes`. */
export function opensslSigner(kind: 'rsa' | 'ec', cn = 'Keygate profile signer'): ProfileSigner {
  const { dir, cleanup } = tempDir();
  try {
    const newkey = kind === 'rsa' ? ['-newkey', 'rsa:2048'] : ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'];
    execFileSync('openssl', ['req', '-x509', ...newkey, '-nodes', '-sha256', '-days', '2', '-subj', `/CN=${cn}`, '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem')], {
      stdio: 'ignore',
    });
    return { certPem: readFileSync(join(dir, 'c.pem'), 'utf8'), keyPem: readFileSync(join(dir, 'k.pem'), 'utf8') };
  } finally {
    cleanup();
  }
}

/** A CA and a leaf it signed (RSA): `signer.certPem` is the chain leaf + CA. */
export function opensslChain(): { ca: string; signer: ProfileSigner } {
  const { dir, cleanup } = tempDir();
  const p = (f: string) => join(dir, f);
  const ossl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'ignore' });
  try {
    ossl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '2', '-subj', '/CN=Keygate test CA', '-keyout', p('ca.key'), '-out', p('ca.pem'),
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
    ossl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=keygate.example.com', '-keyout', p('leaf.key'), '-out', p('leaf.csr'));
    writeFileSync(p('ext.cnf'), 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n');
    ossl('x509', '-req', '-in', p('leaf.csr'), '-CA', p('ca.pem'), '-CAkey', p('ca.key'), '-CAcreateserial', '-days', '2', '-sha256', '-extfile', p('ext.cnf'), '-out', p('leaf.pem'));
    const ca = readFileSync(p('ca.pem'), 'utf8');
    return { ca, signer: { certPem: readFileSync(p('leaf.pem'), 'utf8') + ca, keyPem: readFileSync(p('leaf.key'), 'utf8') } };
  } finally {
    cleanup();
  }
}

export interface CmsVerifyResult {
  ok: boolean;
  /** The signed content (the plist) when ok. */
  content: string;
  stderr: string;
}

/**
 * `openssl cms -verify -inform DER`: with `-noverify` (signature only) when no
 * CA file is given, else against `caPem`. `purposeAny` relaxes openssl's
 * S/MIME purpose check, for TLS certificates whose extended key usage is
 * serverAuth only (Apple does not ask profile signers for emailProtection).
 */
export async function cmsVerify(der: Buffer, caPem?: string, opts: { purposeAny?: boolean } = {}): Promise<CmsVerifyResult> {
  const { dir, cleanup } = tempDir();
  try {
    writeFileSync(join(dir, 'profile.mobileconfig'), der);
    const trust = caPem === undefined ? ['-noverify'] : (writeFileSync(join(dir, 'ca.pem'), caPem), ['-CAfile', join(dir, 'ca.pem'), ...(opts.purposeAny ? ['-purpose', 'any'] : [])]);
    try {
      const { stdout, stderr } = await run('openssl', ['cms', '-verify', '-inform', 'DER', '-in', join(dir, 'profile.mobileconfig'), ...trust, '-out', join(dir, 'out.plist')]);
      return { ok: true, content: readFileSync(join(dir, 'out.plist'), 'utf8'), stderr: stderr + stdout };
    } catch (err) {
      return { ok: false, content: '', stderr: String((err as { stderr?: string }).stderr ?? err) };
    }
  } finally {
    cleanup();
  }
}

/**
 * A Fastify app with only the client-setup plugin and an error handler that
 * mirrors src/http/app.ts (HttpError, validation, body size, other 4xx, 500).
 */
export async function setupApp(opts: ClientSetupRoutesOptions, logger?: Logger): Promise<FastifyInstance> {
  const app = Fastify({ ...(logger ? { loggerInstance: logger } : { logger: false }), bodyLimit: 64 * 1024 }).withTypeProvider<TypeBoxTypeProvider>();
  app.setErrorHandler((error: unknown, req, reply) => {
    const err = error as FastifyError;
    const send = (status: number, code: string, message: string, details?: unknown) => reply.code(status).send(errorBody(code, message, details));
    if (error instanceof HttpError) return send(error.status, error.code, error.message, error.details);
    if (err.validation) return send(400, 'validation', 'The request is not valid', err.validation.map((v) => ({ field: v.instancePath, message: v.message })));
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return send(413, 'payload_too_large', 'The request body is too large');
    if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) return send(err.statusCode, 'bad_request', err.message);
    req.log.error({ err }, 'unhandled error');
    return send(500, 'internal', 'Internal error');
  });
  app.setNotFoundHandler((req, reply) => reply.code(404).send(errorBody('not_found', `No route ${req.method} ${req.url.split('?')[0]}`)));
  await app.register(clientSetupRoutes, opts);
  await app.ready();
  return app as unknown as FastifyInstance;
}
