import type { ImapCommand } from './command.js';
import { authenticate } from './commands/authenticate.js';
import { capability } from './commands/capability.js';
import { id } from './commands/id.js';
import { login } from './commands/login.js';
import { logout } from './commands/logout.js';
import { mailboxCommands } from './commands/mailbox.js';
import { noop } from './commands/noop.js';
import { starttls } from './commands/starttls.js';

/** The IMAP command registry: upper-case name → module. */
export const COMMANDS: ReadonlyMap<string, ImapCommand> = new Map(
  [capability, noop, logout, starttls, id, login, authenticate, ...mailboxCommands].map((c) => [c.name, c]),
);
