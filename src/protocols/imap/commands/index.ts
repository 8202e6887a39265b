import type { ImapCommand } from '../command.js';
import { authenticate } from './authenticate.js';
import { capability } from './capability.js';
import { id } from './id.js';
import { login } from './login.js';
import { logout } from './logout.js';
import { mailboxCommands } from './mailbox.js';
import { noop } from './noop.js';
import { starttls } from './starttls.js';

/** The IMAP command registry: upper-case name → module. */
export const COMMANDS: ReadonlyMap<string, ImapCommand> = new Map(
  [capability, noop, logout, starttls, id, login, authenticate, ...mailboxCommands].map((c) => [c.name, c]),
);
