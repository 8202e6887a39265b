import { auth } from './commands/auth.js';
import { capa } from './commands/capa.js';
import { mailboxCommands } from './commands/mailbox.js';
import { noop } from './commands/noop.js';
import { pass } from './commands/pass.js';
import { quit } from './commands/quit.js';
import { stls } from './commands/stls.js';
import { user } from './commands/user.js';
import type { Pop3Command } from './command.js';

/** Every POP3 command Keygate answers itself, by upper-case name. */
export const COMMANDS: ReadonlyMap<string, Pop3Command> = new Map(
  [capa, stls, user, pass, auth, quit, noop, ...mailboxCommands].map((c) => [c.name, c] as const),
);
