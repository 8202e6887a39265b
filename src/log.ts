import { Writable } from 'node:stream';
import pino, { type DestinationStream, type Logger } from 'pino';
import { scrubUrl } from './http/log-url.js';
import { KEY_SCAN_RE } from './keys/format.js';

export type { Logger } from 'pino';

/**
 * Redaction is configured here, once, for every logger in the process: HTTP
 * credentials, the `access_token` query parameter (scrubbed from the decoded
 * URL by the request serializer, src/http/log-url.ts) and protocol passwords
 * wherever they are attached.
 */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["auth-pass"]',
  'req.headers["x-keygate-secret"]',
  'headers.authorization',
  'password',
  'pass',
  'secret',
  'apiKey',
  'key',
  'token',
  '*.password',
  '*.pass',
  '*.secret',
  '*.apiKey',
  '*.token',
];

interface RequestLike {
  method?: string;
  url?: string;
  ip?: string;
  id?: string | number;
  routeOptions?: { url?: string };
}

const serializers = {
  req(req: RequestLike) {
    return { id: req.id, method: req.method, url: scrubUrl(req.url ?? ''), route: req.routeOptions?.url, ip: req.ip };
  },
};

/** A sealed upstream credential (src/backends/secret.ts): no use to a reader of the logs without the secret, but never shown either. */
const SEALED_SCAN_RE = /kgsec1\.[0-9a-f]{8}\.[A-Za-z0-9_.-]+/g;

/**
 * A last line of defence: any text that looks like a Keygate key or a sealed
 * credential is masked before it is written, whichever path or message it
 * came in.
 */
function scrubbingStream(out: DestinationStream): DestinationStream {
  return new Writable({
    write(chunk: Buffer | string, _enc, cb) {
      out.write(scrubSecrets(chunk.toString()));
      cb();
    },
  }) as unknown as DestinationStream;
}

/** Masks whatever in `text` looks like a Keygate key or a sealed credential. */
export function scrubSecrets(text: string): string {
  return text.replace(KEY_SCAN_RE, 'kg_[REDACTED]').replace(SEALED_SCAN_RE, 'kgsec1.[REDACTED]');
}

/**
 * The fields of one login attempt's audit line. None is a secret: every
 * free-text field (what the client typed or said of itself) is masked by
 * `scrubSecrets` before it is written, as the whole line would be.
 */
export interface AuditFields {
  /** Ours (a surface, with the console's method): not masked. */
  protocol: string;
  ip: string;
  account: string | null;
  keyId: string | undefined;
  result: 'success' | 'failure';
  reason: string | null;
  client: { name?: string; version?: string } | undefined;
}

/** Writes one audit line (`audit: true`, message "auth attempt") at info. */
export type AuditLog = (fields: AuditFields) => void;

/** The audit writer of a logger made by createLogger, beside it. */
const AUDIT = Symbol('keygate.audit');
type WithAudit = Logger & { [AUDIT]?: Logger };

const scrubOrNull = (v: string | null): string | null => (v === null ? null : scrubSecrets(v));
const scrubOrUndefined = (v: string | undefined): string | undefined => (v === undefined ? undefined : scrubSecrets(v));

/**
 * The audit line of every login attempt, its hot path: a logger made by
 * createLogger writes it through a pino of its own to the same destination,
 * without the redaction paths and the line-scrubbing stream — the fields are
 * known and fixed, none carries a secret, and the free-text ones are masked
 * here field by field. Any other logger (a test's own pino) gets the line
 * through its `info`, redaction and all.
 */
export function auditLog(logger: Logger): AuditLog {
  const fast = (logger as WithAudit)[AUDIT];
  const write = fast && Object.hasOwn(logger, AUDIT) ? fast : logger;
  return (f) => {
    // The logger's level decides, as for any line (log.level warn drops audit lines).
    if (!logger.isLevelEnabled('info')) return;
    const client = f.client && { name: scrubOrUndefined(f.client.name), version: scrubOrUndefined(f.client.version) };
    write.info(
      { audit: true, protocol: f.protocol, ip: scrubSecrets(f.ip), account: scrubOrNull(f.account), keyId: f.keyId, result: f.result, reason: scrubOrNull(f.reason), client },
      'auth attempt',
    );
  };
}

const stdoutDestinations: ReturnType<typeof pino.destination>[] = [];

/** Writes out buffered log lines; call before process.exit. */
export function flushLogsSync(): void {
  for (const d of stdoutDestinations) {
    try {
      d.flushSync();
    } catch {
      // stdout gone (EPIPE): nothing left to save
    }
  }
}

export function createLogger(level: string, destination?: DestinationStream): Logger {
  // Batched writes: one write per ~4 KB or 250 ms instead of one per line.
  // The audit line of every login otherwise costs a syscall on the hot path. Not larger: sonic-boom
  // measures the whole pending buffer on every line (Buffer.byteLength), so a bigger one costs more per line.
  let out = destination;
  if (!out) {
    const d = pino.destination({ fd: 1, sync: false, minLength: 4096, periodicFlush: 250 } as Parameters<typeof pino.destination>[0]);
    stdoutDestinations.push(d);
    out = d;
  }
  const common = { level, base: { service: 'keygate' }, timestamp: pino.stdTimeFunctions.isoTime };
  const logger: WithAudit = pino({ ...common, redact: { paths: REDACT_PATHS, censor: '[REDACTED]' }, serializers }, scrubbingStream(out));
  // Same destination, same line format; its only caller is auditLog, which masks each field itself.
  // Its level is info whatever the root's: auditLog asks the root's level first, which may be changed at run time.
  logger[AUDIT] = pino({ ...common, level: 'info' }, out);
  return logger;
}
