import type { ListenerDeps, RunningListener } from '../deps.js';
import { startLineListeners } from '../line-session.js';
import { Pop3Connection } from './connection.js';
import { REPLY } from './replies.js';

/** Starts the POP3 listeners: STLS on pop3.port and implicit TLS on pop3.securePort (none when pop3.enabled is false). */
export function startPop3Listeners(deps: ListenerDeps): Promise<RunningListener[]> {
  return startLineListeners(deps, 'pop3', `${REPLY.tooManyConnections}\r\n`, (context, conn) => new Pop3Connection(context, conn));
}
