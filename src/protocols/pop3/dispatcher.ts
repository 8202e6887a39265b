import type { ProtocolLimits } from '../limits.js';
import { COMMANDS } from './registry.js';
import { REPLY } from './replies.js';
import type { Pop3Session } from './types.js';

export interface DispatchTarget extends Pop3Session {
  /** Command lines seen in the AUTHORIZATION state (SASL continuation lines are not commands). */
  commandsBeforeLogin: number;
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
export function dispatch(session: DispatchTarget, line: string, limits: Pick<ProtocolLimits, 'commandsBeforeLogin'>): Promise<void> | void {
  if (session.state === 'authorization' && ++session.commandsBeforeLogin > limits.commandsBeforeLogin) {
    return session.quit(REPLY.tooManyCommands);
  }
  const { name, args } = parseCommand(line);
  const command = COMMANDS.get(name);
  if (!command) return session.protocolError(REPLY.unknownCommand);
  if (!command.states.includes(session.state)) return session.protocolError(REPLY.wrongState);
  return command.handler(session, args);
}
