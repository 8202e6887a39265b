import { COMMANDS } from './registry.js';
import { REPLY } from './replies.js';
import type { Pop3Session } from './command.js';

/** The connection as the dispatcher drives it: a session plus the gate it keeps. */
export interface Dispatchable extends Pop3Session {
  /** Counts one command received before login; false (and the connection is closing) when over the limit. */
  countCommand(): boolean;
}

/** Splits `NAME args`: the name up to the first space, upper-cased; the rest as sent. */
export function parseCommand(line: string): { name: string; args: string } {
  const space = line.indexOf(' ');
  return space < 0 ? { name: line.toUpperCase(), args: '' } : { name: line.slice(0, space).toUpperCase(), args: line.slice(space + 1) };
}

/**
 * The one gate every POP3 command line passes: the pre-login command bound,
 * then the registry, then the command's states. Handlers run only after all
 * three, and only move the session forward themselves on success.
 */
export function dispatch(session: Dispatchable, line: string): Promise<void> | void {
  if (!session.countCommand()) return;
  const { name, args } = parseCommand(line);
  const command = COMMANDS.get(name);
  if (!command) return session.protocolError(REPLY.unknownCommand);
  if (!command.states.includes(session.commandState)) return session.protocolError(REPLY.wrongState);
  return command.handler(session, args);
}
