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
      out.write(chunk.toString().replace(KEY_SCAN_RE, 'kg_[REDACTED]').replace(SEALED_SCAN_RE, 'kgsec1.[REDACTED]'));
      cb();
    },
  }) as unknown as DestinationStream;
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
  // The audit line of every login otherwise costs a syscall on the hot path.
  let out = destination;
  if (!out) {
    const d = pino.destination({ fd: 1, sync: false, minLength: 4096, periodicFlush: 250 } as Parameters<typeof pino.destination>[0]);
    stdoutDestinations.push(d);
    out = d;
  }
  return pino(
    {
      level,
      base: { service: 'keygate' },
      redact: { paths: REDACT_PATHS, censor: '[REDACTED]' },
      serializers,
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    scrubbingStream(out),
  );
}
