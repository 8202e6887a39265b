import { accessSync, constants, existsSync, realpathSync } from 'node:fs';
import { delimiter, dirname, isAbsolute, join } from 'node:path';

/** The Debian packages the local mailbox runs on. */
export const DOVECOT_PACKAGES = ['dovecot-imapd', 'dovecot-pop3d', 'dovecot-lmtpd'] as const;

/** Which package brings each protocol's server program. */
const PROGRAMS: Record<string, (typeof DOVECOT_PACKAGES)[number]> = { imap: 'dovecot-imapd', pop3: 'dovecot-pop3d', lmtp: 'dovecot-lmtpd' };

/** Where `dovecot` is looked for besides PATH: an unprivileged user's PATH often lacks the sbin directories. */
const SBIN_DIRS = ['/usr/sbin', '/usr/local/sbin', '/sbin'];

/**
 * The local mailbox cannot start with what is installed or configured; the
 * message is the one line the operator needs (which packages to install).
 * A configuration problem: restarting will not fix it (exit 2).
 */
export class MailboxSetupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MailboxSetupError';
  }
}

export interface DovecotInstall {
  /** The `dovecot` program, absolute. */
  binary: string;
  /** Where its protocol programs (imap, pop3, lmtp, …) are. */
  libexecDir: string;
}

export interface FindOptions {
  /** PATH to search; default process.env.PATH. */
  path?: string;
  /** Directories that may hold Dovecot's programs; default: beside the binary, then the Debian and Red Hat places. */
  libexecDirs?: string[];
}

function installHint(packages: readonly string[]): string {
  return `sudo apt-get install ${packages.join(' ')}`;
}

function executable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Finds Dovecot and its IMAP, POP3 and LMTP programs. `binary` is a path, or
 * a name searched in PATH and the sbin directories. Throws MailboxSetupError
 * naming the apt packages to install when something is missing.
 */
export function findDovecot(binary: string, options: FindOptions = {}): DovecotInstall {
  const candidates = isAbsolute(binary) || binary.includes('/')
    ? [binary]
    : [...(options.path ?? process.env.PATH ?? '').split(delimiter).filter(Boolean), ...SBIN_DIRS].map((d) => join(d, binary));
  const found = candidates.find(executable);
  if (!found) {
    throw new MailboxSetupError(`--mailbox local needs Dovecot, and ${binary} was not found: install it with \`${installHint(DOVECOT_PACKAGES)}\``);
  }
  const real = realpathSync(found);
  const dirs = options.libexecDirs ?? [join(dirname(real), '..', 'lib', 'dovecot'), join(dirname(real), '..', 'libexec', 'dovecot'), '/usr/lib/dovecot', '/usr/libexec/dovecot'];
  const libexecDir = dirs.find((d) => existsSync(join(d, 'imap-login')) || existsSync(join(d, 'pop3-login'))) ?? dirs[0]!;
  const absent = Object.keys(PROGRAMS).filter((p) => !existsSync(join(libexecDir, p)));
  if (absent.length > 0) {
    const packages = absent.map((p) => PROGRAMS[p]!);
    throw new MailboxSetupError(`--mailbox local needs Dovecot's ${absent.join(', ')} server${absent.length > 1 ? 's' : ''}: install ${packages.length > 1 ? 'them' : 'it'} with \`${installHint(packages)}\``);
  }
  return { binary: found, libexecDir };
}
