import type { Logger } from '../../log.js';
import { traceCommand, traceSaslResponse } from '../trace.js';

/** How smtp-server writes a continuation line of an AUTH exchange in its command log. */
const SECURED = '/* secured */';

type Entry = { tnx?: string; cid?: string };
type Level = (entry: Entry, message?: string, ...args: unknown[]) => void;

/**
 * A logger for smtp-server (bunyan-shaped) that passes on only its command
 * log, each line through the one protocol trace (src/protocols/trace.ts), so
 * SMTP lines are masked by the same rule as IMAP and POP3 whatever
 * smtp-server redacts itself. Its other lines (connections, replies, auth
 * results) are Keygate's own to log and are dropped. Given to smtp-server
 * only at `log.level=trace`.
 */
export function smtpTraceLogger(logger: Logger, ipOf: (sessionId: string) => string | undefined): Record<'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal', Level> {
  const ignore: Level = () => {};
  const debug: Level = (entry, _message, line) => {
    if (entry.tnx !== 'command') return;
    const ip = ipOf(entry.cid ?? '') ?? '';
    if (line === SECURED) traceSaslResponse(logger, 'smtp', ip);
    else traceCommand(logger, 'smtp', ip, String(line ?? ''));
  };
  return { trace: ignore, debug, info: ignore, warn: ignore, error: ignore, fatal: ignore };
}
