import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { dirname, join, parse, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../log.js';
import { dovecotConfig, MASTER_SEPARATOR, MASTER_USER, mailboxLayout, type MailboxLayout, type RunAs } from './dovecot-config.js';
import { DovecotProcess, type Backoff } from './dovecot-process.js';
import { findDovecot, MailboxSetupError } from './install.js';

export { DovecotStartError } from './dovecot-process.js';
export { DOVECOT_PACKAGES, MailboxSetupError } from './install.js';
export { isMailboxSafeAddress } from './address.js';

/** What `mailbox` may be: `none` (proxy only) or `local` (a private Dovecot). */
export const MAILBOX_MODES = ['none', 'local'] as const;
export type MailboxMode = (typeof MAILBOX_MODES)[number];

/** Longest unix socket path bindable on Linux (sun_path is 108 bytes with its NUL). */
const MAX_SOCKET_PATH = 107;
/** The longest name Dovecot gives a socket of its own in base_dir (`token-login/tokenlogin`), with room to spare. */
const LONGEST_DOVECOT_SOCKET = 'replication-notify-fifo'.length + 1;

export interface LocalMailboxOptions {
  /** The mailbox directory (`mailboxDir`), absolute. */
  dir: string;
  /** The `dovecot` program (`mailboxDovecot`): a path or a name looked up in PATH and the sbin directories. */
  dovecot: string;
  logger: Logger;
  backoff?: Backoff;
  /** Told after each restart of Dovecot (metrics). */
  onRestart?: () => void;
}

/** How Keygate reaches the local mailbox and logs in there: one unix socket per protocol, one master login. */
export interface LocalMailboxEndpoints {
  sockets: MailboxLayout['sockets'];
  master: { user: string; password: string; separator: string };
}

/**
 * Keygate's own mailbox: a private Dovecot run as a child process with a
 * configuration generated under `dir` at every start (see dovecot-config.ts),
 * Maildir storage per account, reachable only through unix sockets, and a
 * master password made at each start that only Keygate and Dovecot's
 * environment hold.
 */
export class LocalMailbox {
  private constructor(
    private readonly process: DovecotProcess,
    readonly layout: MailboxLayout,
    readonly endpoints: LocalMailboxEndpoints,
    private readonly privateRunDir: string | null,
  ) {}

  /**
   * Finds Dovecot, prepares the directory, starts Dovecot and resolves once
   * it answers. MailboxSetupError (exit 2) when Dovecot is missing or the
   * directory cannot be used; DovecotStartError when Dovecot would not start.
   */
  static async start(options: LocalMailboxOptions): Promise<LocalMailbox> {
    const install = findDovecot(options.dovecot);
    options = { ...options, dir: resolve(options.dir) };
    const runAs = currentRunAs();
    const log = options.logger.child({ component: 'mailbox' });
    // A unix socket path is short: a deep mailbox directory gets a private run directory in the temp directory.
    const wanted = join(options.dir, 'run');
    const privateRunDir = wanted.length + LONGEST_DOVECOT_SOCKET > MAX_SOCKET_PATH ? mkdtempSync(join(tmpdir(), 'keygate-mailbox-')) : null;
    const layout = mailboxLayout(options.dir, privateRunDir ?? wanted);
    if (privateRunDir) log.info({ runDir: privateRunDir }, 'mailbox directory too deep for unix sockets: Dovecot runs in a private directory');
    try {
      prepareDirectories(layout, runAs);
      await stopLeftover(layout, log);
      writeFileSync(layout.configFile, dovecotConfig(layout, runAs), { mode: 0o644 });
      writeFileSync(join(layout.dir, 'keygate.pid'), `${process.pid}\n`);
      const password = randomBytes(32).toString('base64url');
      const dovecot = new DovecotProcess({ install, layout, masterPassword: password, logger: options.logger, backoff: options.backoff, onRestart: options.onRestart });
      await dovecot.start();
      return new LocalMailbox(dovecot, layout, { sockets: layout.sockets, master: { user: MASTER_USER, password, separator: MASTER_SEPARATOR } }, privateRunDir);
    } catch (err) {
      if (privateRunDir) rmSync(privateRunDir, { recursive: true, force: true });
      throw err;
    }
  }

  /** Dovecot's master process id (null while it restarts). */
  get pid(): number | null {
    return this.process.pid;
  }

  /** Stops Dovecot: call after the sessions have ended. */
  async stop(): Promise<void> {
    await this.process.stop();
    rmSync(join(this.layout.dir, 'keygate.pid'), { force: true });
    if (this.privateRunDir) rmSync(this.privateRunDir, { recursive: true, force: true });
  }
}

function idOf(args: string[]): string | null {
  const r = spawnSync('id', args, { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

/** Who Dovecot runs as: see RunAs. */
function currentRunAs(): RunAs {
  if (process.getuid?.() === 0) {
    const missing = ['dovecot', 'dovenull', 'mail'].filter((u) => idOf(['-u', u]) === null);
    if (missing.length) throw new MailboxSetupError(`--mailbox local as root needs the users ${missing.join(', ')}: reinstall the Debian package dovecot-core`);
    return { privileged: true, internalUser: 'dovecot', internalGroup: 'dovecot', loginUser: 'dovenull', mailUser: 'mail', mailGroup: 'mail', mailUid: Number(idOf(['-u', 'mail'])) };
  }
  const user = userInfo().username;
  const group = idOf(['-gn']) ?? user;
  return { privileged: false, internalUser: user, internalGroup: group, loginUser: user, mailUser: user, mailGroup: group, mailUid: process.getuid!() };
}

/**
 * The mailbox directory and its parts. Unprivileged, everything is the
 * user's own and private. As root, mail belongs to `mail`, which must be able
 * to reach it: every directory above needs search permission for others.
 */
function prepareDirectories(layout: MailboxLayout, runAs: RunAs): void {
  mkdirSync(layout.dir, { recursive: true, mode: 0o700 });
  mkdirSync(layout.stateDir, { recursive: true, mode: 0o700 });
  mkdirSync(layout.runDir, { recursive: true, mode: 0o700 });
  mkdirSync(layout.mailDir, { recursive: true, mode: 0o700 });
  // Dovecot wants base_dir world-readable and otherwise fixes it with a warning; its sockets keep their own 0600.
  chmodSync(layout.runDir, 0o755);
  if (!runAs.privileged) return;
  const mailUid = runAs.mailUid;
  const mailGid = Number(idOf(['-g', runAs.mailUser]));
  chownSync(layout.mailDir, mailUid, mailGid);
  // Dovecot's own processes (auth as dovecot, mail as mail) reach base_dir and mail/ through it.
  chmodSync(layout.dir, 0o711);
  for (let dir = dirname(layout.dir); dir !== parse(dir).root; dir = dirname(dir)) {
    const st = statSync(dir);
    if ((st.mode & 0o001) === 0 && st.uid !== mailUid) {
      throw new MailboxSetupError(
        `--mailbox local as root keeps mail as user mail, which cannot enter ${dir} (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}): run Keygate as an unprivileged user, or set mailboxDir (KEYGATE_MAILBOX_DIR) to a directory outside it`,
      );
    }
  }
}

/** A process id's program name (Linux), or null when no such process runs. */
function programOf(pid: number): string | null {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return null;
  }
}

function pidIn(file: string): number | null {
  try {
    const pid = Number(readFileSync(file, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/**
 * A Dovecot still running on this directory: another Keygate's (refused), or
 * one left behind by a Keygate that was killed (stopped, so this one can
 * start).
 */
async function stopLeftover(layout: MailboxLayout, log: Logger): Promise<void> {
  const dovecotPid = pidIn(join(layout.runDir, 'master.pid'));
  if (dovecotPid === null || programOf(dovecotPid) !== 'dovecot') return;
  const keygatePid = pidIn(join(layout.dir, 'keygate.pid'));
  if (keygatePid !== null && keygatePid !== process.pid && programOf(keygatePid) !== null && /node|keygate/.test(programOf(keygatePid)!)) {
    throw new Error(`another Keygate (pid ${keygatePid}) runs the local mailbox in ${layout.dir}`);
  }
  log.warn({ pid: dovecotPid }, 'stopping a Dovecot left running on the mailbox directory by an earlier Keygate');
  process.kill(dovecotPid, 'SIGTERM');
  for (let i = 0; i < 100 && programOf(dovecotPid) === 'dovecot'; i++) await sleep(50);
  if (programOf(dovecotPid) === 'dovecot') process.kill(dovecotPid, 'SIGKILL');
}
