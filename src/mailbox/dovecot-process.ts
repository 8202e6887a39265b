import { spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../log.js';
import { MASTER_PASSWORD_ENV, type MailboxLayout } from './dovecot-config.js';
import type { DovecotInstall } from './install.js';

export interface Backoff {
  /** Wait before the first restart, ms. */
  initialMs: number;
  /** Longest wait between restarts, ms (the wait doubles up to it). */
  maxMs: number;
  /** A Dovecot that ran this long before dying restarts after `initialMs` again, ms. */
  stableMs: number;
}

export const DEFAULT_BACKOFF: Backoff = { initialMs: 500, maxMs: 30_000, stableMs: 60_000 };

export interface DovecotProcessOptions {
  install: DovecotInstall;
  layout: MailboxLayout;
  /** The master user's password for this boot: handed over in Dovecot's environment only. */
  masterPassword: string;
  logger: Logger;
  backoff?: Backoff;
  /** How long Dovecot has to answer on all three sockets, ms. */
  readyTimeoutMs?: number;
  /** Told after each restart (metrics). */
  onRestart?: () => void;
}

/** Dovecot did not come up; the message carries the end of its log. */
export class DovecotStartError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DovecotStartError';
  }
}

/** Dovecot's log line: `imap(alice@example.com)<123><sess>: Info: text`. */
const LOG_LINE = /^(?:([a-z0-9-]+)(\([^)]*\))?(?:<[^>]*>)*: )?(Debug|Info|Warning|Error|Fatal|Panic): (.*)$/i;

/** What each socket says when it is ready for Keygate. */
const GREETINGS: Record<keyof MailboxLayout['sockets'], RegExp> = { imap: /^\* OK/, pop3: /^\+OK/, lmtp: /^220 / };

const KEPT_LOG_LINES = 20;

/** Lines Dovecot logs as errors about what the generated configuration does on purpose (the penalty socket is closed off). */
const EXPECTED = /net_connect_unix\(anvil-auth-penalty\) failed/;

/**
 * Dovecot as a child process Keygate owns: `dovecot -F -c <generated conf>`
 * in a process group of its own (a Ctrl-C in the terminal reaches Keygate,
 * which stops Dovecot after the sessions end, not Dovecot first). Its log
 * goes to Keygate's log. If it dies, it is started again after a wait that
 * doubles up to `backoff.maxMs`; meanwhile logins get the protocols'
 * temporary failure, and mail Dovecot had accepted is on disk.
 */
export class DovecotProcess {
  private child: ChildProcess | null = null;
  private stopping = false;
  private delayMs: number;
  private restartTimer: NodeJS.Timeout | null = null;
  private readonly recent: string[] = [];
  private readonly backoff: Backoff;
  private readonly log: Logger;
  private readonly killOnExit = (): void => void this.child?.kill('SIGTERM');

  constructor(private readonly options: DovecotProcessOptions) {
    this.backoff = options.backoff ?? DEFAULT_BACKOFF;
    this.delayMs = this.backoff.initialMs;
    this.log = options.logger.child({ component: 'mailbox' });
  }

  /** The running master's process id; null while it is down. */
  get pid(): number | null {
    return this.child?.pid ?? null;
  }

  /** Starts Dovecot and resolves once IMAP, POP3 and LMTP all answer; DovecotStartError otherwise. */
  async start(): Promise<void> {
    process.on('exit', this.killOnExit);
    await this.launch();
  }

  /** Stops Dovecot (SIGTERM, SIGKILL after `graceMs`) and does not restart it. */
  async stop(graceMs = 10_000): Promise<void> {
    this.stopping = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    process.off('exit', this.killOnExit);
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  }

  private async launch(): Promise<void> {
    const { install, layout, masterPassword } = this.options;
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', [MASTER_PASSWORD_ENV]: masterPassword };
    if (process.env.TZ) env.TZ = process.env.TZ;
    const child = spawn(install.binary, ['-F', '-c', layout.configFile], { detached: true, stdio: ['ignore', 'ignore', 'pipe'], env });
    this.child = child;
    createInterface({ input: child.stderr! }).on('line', (line) => this.relayLog(line));
    const started = Date.now();
    const exit = new Promise<string>((resolve) => {
      child.once('error', (err) => resolve(err.message));
      child.once('exit', (code, signal) => resolve(signal ? `killed by ${signal}` : `exit code ${code}`));
    });
    const ready = await Promise.race([this.waitReady(), exit.then((why) => `Dovecot stopped during start-up (${why})`)]);
    if (ready !== null) {
      child.kill('SIGKILL');
      this.child = null;
      throw new DovecotStartError(`the local mailbox's Dovecot did not start: ${ready}${this.recent.length ? `; its log: ${this.recent.slice(-5).join(' | ')}` : ''}`);
    }
    this.log.info({ pid: child.pid, sockets: layout.runDir }, 'local mailbox ready');
    void exit.then((why) => this.exited(child, why, Date.now() - started));
  }

  /** null when every socket greeted within the timeout, else why not. */
  private async waitReady(): Promise<string | null> {
    const deadline = Date.now() + (this.options.readyTimeoutMs ?? 15_000);
    const sockets = Object.entries(this.options.layout.sockets) as [keyof MailboxLayout['sockets'], string][];
    let pending = sockets;
    while (pending.length > 0) {
      const results = await Promise.all(pending.map(([name, path]) => greets(path, GREETINGS[name])));
      pending = pending.filter((_, i) => !results[i]);
      if (pending.length === 0) return null;
      if (Date.now() > deadline) return `no answer on ${pending.map(([name]) => name).join(', ')} after ${this.options.readyTimeoutMs ?? 15_000} ms`;
      await sleep(50);
    }
    return null;
  }

  private exited(child: ChildProcess, why: string, ranMs: number): void {
    if (this.child !== child) return;
    this.child = null;
    if (this.stopping) return;
    if (ranMs >= this.backoff.stableMs) this.delayMs = this.backoff.initialMs;
    this.log.error({ why, restartInMs: this.delayMs }, 'local mailbox (Dovecot) stopped; restarting it');
    this.scheduleRestart();
  }

  private scheduleRestart(): void {
    const delay = this.delayMs;
    this.delayMs = Math.min(this.delayMs * 2, this.backoff.maxMs);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (this.stopping) return;
      this.launch().then(
        () => this.options.onRestart?.(),
        (err: Error) => {
          if (this.stopping) return;
          this.log.error({ err: err.message, restartInMs: this.delayMs }, 'local mailbox restart failed; trying again');
          this.scheduleRestart();
        },
      );
    }, delay);
  }

  /** One Dovecot log line as a Keygate log line: its problems as warnings and errors, its chatter at debug. */
  private relayLog(line: string): void {
    if (line.trim() === '') return;
    this.recent.push(line);
    if (this.recent.length > KEPT_LOG_LINES) this.recent.shift();
    const m = LOG_LINE.exec(line);
    const fields = { dovecot: m?.[1] ? `${m[1]}${m[2] ?? ''}` : undefined };
    const text = m ? m[4]! : line;
    // Stopping, Dovecot's processes report the SIGTERM: expected, not a warning.
    const level = this.stopping || EXPECTED.test(line) ? 'debug' : m?.[3]?.toLowerCase();
    switch (level) {
      case 'debug':
      case 'info':
        return this.log.debug(fields, text);
      case 'warning':
        return this.log.warn(fields, text);
      default:
        return this.log.error(fields, text);
    }
  }
}

/** Connects to a unix socket and reads the first line: true when it matches. */
function greets(path: string, greeting: RegExp): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ path });
    let text = '';
    const done = (ok: boolean): void => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(2000, () => done(false));
    s.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (text.includes('\n')) done(greeting.test(text));
    });
    s.once('error', () => done(false));
    s.once('end', () => done(false));
  });
}
