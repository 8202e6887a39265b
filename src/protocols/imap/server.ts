import type { ListenerDeps, RunningListener } from '../deps.js';
import { startLineListeners } from '../line-session.js';
import { ImapConnection } from './connection.js';
import { REPLY } from './replies.js';

/** Starts the IMAP listeners: STARTTLS on imap.port and implicit TLS on imap.securePort (none when imap.enabled is false). */
export function startImapListeners(deps: ListenerDeps): Promise<RunningListener[]> {
  return startLineListeners(deps, 'imap', REPLY.byeTooManyConnections, (context, conn) => new ImapConnection(context, conn));
}
