import type { ArgSpec, ImapCommand, ImapSession } from './command.js';
import { COMMANDS } from './registry.js';
import { ImapSyntaxError, parseCommand, type Token } from './parser.js';
import { REPLY } from './replies.js';

/** The connection as the dispatcher drives it: a session plus the gates it keeps. */
export interface Dispatchable extends ImapSession {
  /** Counts one command received before login; false (and the connection is closing) when over the limit. */
  countCommand(): boolean;
  /** Sends `reply` (a `BAD ...` text; untagged when there is no tag) and counts a protocol error; too many and the connection is closed. */
  protocolError(tag: string | null, reply: string): void;
}

function matches(spec: ArgSpec, t: Token): boolean {
  switch (spec.kind) {
    case 'atom':
      return t.type === 'atom';
    case 'astring':
      return t.type === 'atom' || t.type === 'string';
    case 'list-or-nil':
      return t.type === 'list' || (t.type === 'atom' && t.value.toUpperCase() === 'NIL');
  }
}

/** Checks arguments against a command's spec; returns the problem, or null. */
export function checkArgs(specs: readonly ArgSpec[], args: Token[]): string | null {
  const required = specs.filter((s) => !s.optional).length;
  if (args.length < required) return 'Missing arguments';
  if (args.length > specs.length) return 'Too many arguments';
  for (let i = 0; i < args.length; i++) {
    const spec = specs[i]!;
    const arg = args[i]!;
    if (!matches(spec, arg)) return 'Invalid arguments';
  }
  return null;
}

/**
 * The one gate every command passes: the commands-before-login limit, syntax,
 * the registry, the command's states and its argument shape. Only then does
 * the handler run. Returns the handler's promise when it is asynchronous.
 */
export function dispatch(session: Dispatchable, raw: Buffer, commands: ReadonlyMap<string, ImapCommand> = COMMANDS): void | Promise<void> {
  if (!session.countCommand()) return;
  let request;
  try {
    request = parseCommand(raw);
  } catch (err) {
    if (!(err instanceof ImapSyntaxError)) throw err;
    return session.protocolError(err.tag, `BAD ${err.message}`);
  }
  const command = commands.get(request.name);
  if (!command) return session.protocolError(request.tag, REPLY.unknownCommand);
  if (!command.states.includes(session.commandState)) {
    const reply = session.commandState === 'not_authenticated' ? REPLY.loginFirst : REPLY.alreadyAuthenticated;
    return session.send(`${request.tag} ${reply}\r\n`);
  }
  if (command.args) {
    const problem = checkArgs(command.args, request.args);
    if (problem !== null) return session.protocolError(request.tag, `BAD ${problem}`);
  }
  return command.handler(session, request);
}
