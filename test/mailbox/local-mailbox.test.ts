import { spawn } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { DOVECOT_PACKAGES, LocalMailbox, MailboxSetupError } from '../../src/mailbox/index.js';
import { findDovecot } from '../../src/mailbox/install.js';
import { dovecotAvailable } from '../helpers/dovecot.js';
import { waitFor } from '../helpers/wait.js';
import { SocketClient } from './socket-client.js';

const ROOT = join(import.meta.dirname, '..', '..');

function capture(): { logs: string[]; logger: ReturnType<typeof createLogger> } {
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer | string, _enc, cb) {
      logs.push(chunk.toString());
      cb();
    },
  });
  return { logs, logger: createLogger('debug', sink) };
}

function quote(s: string): string {
  return `"${s.replace(/["\\]/g, '\\$&')}"`;
}

/** IMAP LOGIN on the mailbox's socket; the tagged reply. */
async function imapLogin(socket: string, user: string, password: string): Promise<string> {
  const c = await SocketClient.open(socket);
  try {
    await c.read(/^\* OK/);
    return (await c.exchange(`a LOGIN ${quote(user)} ${quote(password)}`, /^a /)).at(-1)!;
  } finally {
    c.close();
  }
}

async function lmtpDeliver(socket: string, to: string, body: string): Promise<string> {
  const c = await SocketClient.open(socket);
  try {
    await c.read(/^220 /);
    await c.exchange('LHLO test', /^250 /);
    await c.exchange('MAIL FROM:<sender@example.net>', /^250 /);
    await c.exchange(`RCPT TO:<${to}>`, /^250 /);
    await c.exchange('DATA', /^354 /);
    return (await c.exchange(`Subject: test\r\n\r\n${body}\r\n.`, /^\d{3} /)).at(-1)!;
  } finally {
    c.close();
  }
}

/** Every message body line in an account's INBOX, read over IMAP. */
async function imapBodies(mailbox: LocalMailbox, account: string): Promise<string> {
  const { master, sockets } = mailbox.endpoints;
  const c = await SocketClient.open(sockets.imap);
  try {
    await c.read(/^\* OK/);
    await c.exchange(`a LOGIN ${quote(`${account}${master.separator}${master.user}`)} ${quote(master.password)}`, /^a OK/);
    await c.exchange('b SELECT INBOX', /^b OK/);
    return (await c.exchange('c FETCH 1:* BODY[TEXT]', /^c /)).join('\n');
  } finally {
    c.close();
  }
}

/** Process ids in a process group (Dovecot's master and every child it started). */
function processGroup(pgid: number): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((pid) => {
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]) === pgid;
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** The socket inodes a process holds open. */
function socketInodes(pid: number): string[] {
  try {
    return readdirSync(`/proc/${pid}/fd`).flatMap((fd) => {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
        return m ? [m[1]!] : [];
      } catch {
        return [];
      }
    });
  } catch {
    return [];
  }
}

/** Inodes of listening TCP sockets in this network namespace. */
function tcpListenInodes(): Set<string> {
  const out = new Set<string>();
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    if (!existsSync(f)) continue;
    for (const line of readFileSync(f, 'utf8').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols[3] === '0A') out.add(cols[9]!);
    }
  }
  return out;
}

describe('finding Dovecot', () => {
  it('names the three apt packages when dovecot is not installed', () => {
    const empty = mkdtempSync(join(tmpdir(), 'keygate-nodovecot-'));
    try {
      expect(() => findDovecot(join(empty, 'dovecot'))).toThrow(MailboxSetupError);
      expect(() => findDovecot(join(empty, 'dovecot'))).toThrow(`install it with \`sudo apt-get install ${DOVECOT_PACKAGES.join(' ')}\``);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it('names only the package of a missing protocol server', () => {
    const dir = mkdtempSync(join(tmpdir(), 'keygate-partdovecot-'));
    try {
      mkdirSync(join(dir, 'sbin'));
      mkdirSync(join(dir, 'libexec'));
      writeFileSync(join(dir, 'sbin', 'dovecot'), '#!/bin/sh\n', { mode: 0o755 });
      for (const p of ['imap', 'imap-login', 'pop3']) writeFileSync(join(dir, 'libexec', p), '');
      expect(() => findDovecot(join(dir, 'sbin', 'dovecot'), { libexecDirs: [join(dir, 'libexec')] })).toThrow(
        "--mailbox local needs Dovecot's lmtp server: install it with `sudo apt-get install dovecot-lmtpd`",
      );
      writeFileSync(join(dir, 'libexec', 'lmtp'), '');
      expect(findDovecot(join(dir, 'sbin', 'dovecot'), { libexecDirs: [join(dir, 'libexec')] }).libexecDir).toBe(join(dir, 'libexec'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('looks in the sbin directories, which an unprivileged PATH lacks', () => {
    expect(findDovecot('dovecot', { path: '/nonexistent' }).binary).toMatch(/sbin\/dovecot$/);
  });
});

describe.skipIf(!dovecotAvailable())('the local mailbox: a private Dovecot', () => {
  let home: string;
  let mailbox: LocalMailbox;
  const { logs, logger } = capture();

  beforeAll(async () => {
    home = mkdtempSync(join(tmpdir(), 'keygate-mailbox-'));
    // As root, mail belongs to the user `mail`, which must be able to enter the directory.
    chmodSync(home, 0o755);
    mailbox = await LocalMailbox.start({ dir: join(home, 'mailbox'), dovecot: 'dovecot', logger, backoff: { initialMs: 100, maxMs: 400, stableMs: 60_000 } });
  });

  afterAll(async () => {
    await mailbox?.stop();
    rmSync(home, { recursive: true, force: true });
  });

  it('logs in only as the master user, with the password made for this start', async () => {
    const { master, sockets } = mailbox.endpoints;
    expect(master.password.length).toBeGreaterThanOrEqual(40);
    expect(await imapLogin(sockets.imap, `alice@example.com${master.separator}${master.user}`, master.password)).toMatch(/^a OK/);
    expect(await imapLogin(sockets.imap, `alice@example.com${master.separator}${master.user}`, `${master.password}x`)).toMatch(/^a NO/);
    expect(await imapLogin(sockets.imap, 'alice@example.com', master.password)).toMatch(/^a NO/);
    expect(await imapLogin(sockets.imap, master.user, master.password)).toMatch(/^a NO/);
  });

  it('delivers over LMTP into one Maildir per account, read back over IMAP and POP3', async () => {
    const { master, sockets } = mailbox.endpoints;
    expect(await lmtpDeliver(sockets.lmtp, 'bob@example.org', 'first message for bob')).toMatch(/^250 2\.0\.0 <bob@example\.org> .*Saved/);
    expect(readdirSync(join(mailbox.layout.mailDir, 'example.org', 'bob', 'Maildir', 'new'))).toHaveLength(1);
    expect(await imapBodies(mailbox, 'bob@example.org')).toContain('first message for bob');

    const pop = await SocketClient.open(sockets.pop3);
    try {
      await pop.read(/^\+OK/);
      await pop.exchange(`USER bob@example.org${master.separator}${master.user}`, /^\+OK/);
      await pop.exchange(`PASS ${master.password}`, /^\+OK/);
      expect((await pop.exchange('RETR 1', /^\.$/)).join('\n')).toContain('first message for bob');
      await pop.exchange('QUIT', /^\+OK/);
    } finally {
      pop.close();
    }
  });

  it('listens on no TCP port; its sockets are for Keygate\'s user only', () => {
    const pid = mailbox.pid!;
    const inodes = new Set(processGroup(pid).flatMap(socketInodes));
    expect(inodes.size).toBeGreaterThan(0);
    const listening = tcpListenInodes();
    expect([...inodes].filter((i) => listening.has(i))).toEqual([]);
    for (const path of Object.values(mailbox.endpoints.sockets)) {
      const st = statSync(path);
      expect(st.isSocket()).toBe(true);
      expect(st.mode & 0o777).toBe(0o600);
      expect(st.uid).toBe(process.getuid!());
    }
    const conf = readFileSync(mailbox.layout.configFile, 'utf8');
    expect(conf).not.toMatch(/port = [1-9]/);
  });

  it('never writes the master password to a file or the log', () => {
    const { password } = mailbox.endpoints.master;
    const files = (dir: string): string[] =>
      readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : e.isFile() ? [join(dir, e.name)] : []));
    const written = files(mailbox.layout.dir).filter((f) => !f.includes('/mail/'));
    expect(written).toContain(mailbox.layout.configFile);
    for (const f of written) expect(readFileSync(f, 'latin1'), f).not.toContain(password);
    expect(logs.join('')).toContain('local mailbox ready');
    // What the generated configuration does on purpose is not reported as a problem.
    expect(logs.filter((l) => /"level":(40|50|60)/.test(l))).toEqual([]);
    expect(logs.join('')).not.toContain(password);
    expect(logs.join('')).not.toContain(Buffer.from(password).toString('base64'));
  });

  it('comes back after Dovecot is killed, with every message it had accepted', async () => {
    const { sockets } = mailbox.endpoints;
    expect(await lmtpDeliver(sockets.lmtp, 'carol@example.org', 'accepted before the crash')).toMatch(/^250 /);
    const before = mailbox.pid!;
    const session = await SocketClient.open(sockets.imap);
    await session.read(/^\* OK/);
    process.kill(before, 'SIGKILL');
    await waitFor(() => mailbox.pid !== null && mailbox.pid !== before, 10_000);
    expect(logs.join('')).toMatch(/local mailbox \(Dovecot\) stopped; restarting it/);
    await waitFor(async () => (await imapBodies(mailbox, 'carol@example.org').catch(() => '')).includes('accepted before the crash'), 10_000);
    session.close();
    expect(await lmtpDeliver(sockets.lmtp, 'carol@example.org', 'accepted after the restart')).toMatch(/^250 /);
  });

  it('stops when told to, and a second start on the same directory works', async () => {
    const pid = mailbox.pid!;
    await mailbox.stop();
    expect(existsSync(`/proc/${pid}`)).toBe(false);
    await expect(SocketClient.open(mailbox.endpoints.sockets.imap)).rejects.toThrow();
    mailbox = await LocalMailbox.start({ dir: join(home, 'mailbox'), dovecot: 'dovecot', logger });
    expect(await imapBodies(mailbox, 'bob@example.org')).toContain('first message for bob');
  });

  it('stops a Dovecot an earlier, killed Keygate left running on the directory', async () => {
    const orphan = mailbox.pid!;
    // As if Keygate had been killed: its record of itself names a process that is gone.
    writeFileSync(join(mailbox.layout.dir, 'keygate.pid'), '999999999\n');
    const next = await LocalMailbox.start({ dir: join(home, 'mailbox'), dovecot: 'dovecot', logger });
    try {
      expect(existsSync(`/proc/${orphan}`)).toBe(false);
      expect(logs.join('')).toContain('stopping a Dovecot left running on the mailbox directory');
      expect(await imapBodies(next, 'bob@example.org')).toContain('first message for bob');
    } finally {
      await mailbox.stop();
      mailbox = next;
    }
  });
});

describe.skipIf(!dovecotAvailable() || process.getuid?.() !== 0)('the local mailbox as root', () => {
  it('refuses, in one line, a directory the mail user cannot reach', async () => {
    const home = mkdtempSync(join(tmpdir(), 'keygate-mailbox-closed-'));
    try {
      const { logger } = capture();
      await expect(LocalMailbox.start({ dir: join(home, 'mailbox'), dovecot: 'dovecot', logger })).rejects.toThrow(
        new MailboxSetupError(`--mailbox local as root keeps mail as user mail, which cannot enter ${home} (mode 0700): run Keygate as an unprivileged user, or set mailboxDir (KEYGATE_MAILBOX_DIR) to a directory outside it`),
      );
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});

/** The first directory from the checkout up that other users cannot enter: then user nobody cannot load Keygate's code. */
function closedAncestor(dir: string): string | null {
  for (let d = dir; ; d = dirname(d)) {
    if ((statSync(d).mode & 0o001) === 0) return d;
    if (d === dirname(d)) return null;
  }
}
const asRoot = dovecotAvailable() && process.getuid?.() === 0;
const closed = asRoot ? closedAncestor(ROOT) : null;
if (closed) console.warn(`skipped: the unprivileged-user mailbox test needs ${closed} enterable by other users (chmod o+x; .ci/run does this for its checkout)`);

describe.skipIf(!asRoot || closed !== null)('the local mailbox run by an unprivileged user', () => {
  it('runs Dovecot as that user, who owns the mail', async () => {
    const home = mkdtempSync(join(tmpdir(), 'keygate-mailbox-user-'));
    chownSync(home, 65534, 65534);
    const script = join(home, 'start.mjs');
    writeFileSync(
      script,
      `import { LocalMailbox } from ${JSON.stringify(join(ROOT, 'src', 'mailbox', 'index.ts'))};
import { createLogger } from ${JSON.stringify(join(ROOT, 'src', 'log.ts'))};
const m = await LocalMailbox.start({ dir: ${JSON.stringify(join(home, 'mailbox'))}, dovecot: 'dovecot', logger: createLogger('warn') });
console.log(JSON.stringify({ pid: m.pid, endpoints: m.endpoints }));
process.once('SIGTERM', () => m.stop().then(() => process.exit(0)));
`,
    );
    const child = spawn(process.execPath, ['--import', 'tsx', script], { cwd: ROOT, uid: 65534, gid: 65534, env: { PATH: process.env.PATH, HOME: home, TMPDIR: home }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    try {
      await waitFor(() => out.includes('\n') || child.exitCode !== null, 30_000);
      expect(err).toBe('');
      const started = JSON.parse(out) as { pid: number; endpoints: LocalMailbox['endpoints'] };
      expect(statSync(`/proc/${started.pid}`).uid).toBe(65534);
      const { master, sockets } = started.endpoints;
      expect(await imapLogin(sockets.imap, `dave@example.org${master.separator}${master.user}`, master.password)).toMatch(/^a OK/);
      expect(await lmtpDeliver(sockets.lmtp, 'dave@example.org', 'for dave')).toMatch(/^250 /);
      const maildir = join(home, 'mailbox', 'mail', 'example.org', 'dave', 'Maildir');
      expect(statSync(maildir).uid).toBe(65534);
      expect(readdirSync(join(maildir, 'new'))).toHaveLength(1);
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(existsSync(`/proc/${started.pid}`)).toBe(false);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      rmSync(home, { recursive: true, force: true });
    }
  });
});
