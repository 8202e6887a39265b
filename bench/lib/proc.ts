import { readdirSync, readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

/** Clock ticks per second for /proc/PID/stat times. */
export const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

interface Stat {
  pid: number;
  ppid: number;
  /** utime, seconds. */
  user: number;
  /** stime, seconds. */
  system: number;
  /** utime + stime, seconds. */
  cpu: number;
  /** cutime + cstime (children already waited for), seconds. */
  childCpu: number;
}

function readStat(pid: number): Stat | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name may contain spaces and parentheses: fields start after the last ')'.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // f[0] is field 3 (state): field n is f[n - 3].
  const n = (field: number): number => Number(f[field - 3]);
  return { pid, ppid: n(4), user: n(14) / CLK_TCK, system: n(15) / CLK_TCK, cpu: (n(14) + n(15)) / CLK_TCK, childCpu: (n(16) + n(17)) / CLK_TCK };
}

/** CPU seconds (user + system) a process has used. */
export function processCpu(pid: number): number {
  return readStat(pid)?.cpu ?? 0;
}

/** CPU seconds a process has used in user space and in the kernel. */
export function processTimes(pid: number): { user: number; system: number } {
  const s = readStat(pid);
  return { user: s?.user ?? 0, system: s?.system ?? 0 };
}

/** Every live process descended from `root`, root included. */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const s = readStat(Number(name));
    if (!s) continue;
    const list = children.get(s.ppid) ?? [];
    list.push(s.pid);
    children.set(s.ppid, list);
  }
  const out: number[] = [];
  const walk = (pid: number): void => {
    out.push(pid);
    for (const c of children.get(pid) ?? []) walk(c);
  };
  walk(root);
  return out;
}

/**
 * CPU seconds used by a multi-process server (Dovecot, Postfix): every live
 * process of the tree plus what its exited children used (each process's
 * cutime/cstime: Postfix's master, not the root `postfix-script`, reaps the
 * smtpd processes that end after `max_use` connections). Deltas of this are
 * comparable to processCpu deltas of a single-process server.
 */
export function treeCpu(root: number): number {
  let total = 0;
  for (const pid of processTree(root)) {
    const stat = readStat(pid);
    total += (stat?.cpu ?? 0) + (stat?.childCpu ?? 0);
  }
  return total;
}

/** Proportional set size of one process, bytes (/proc/PID/smaps_rollup). */
export function processPss(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** PSS summed over a process tree, bytes (shared pages are split, so the sum is not double-counted). */
export function treePss(root: number): number {
  return processTree(root).reduce((sum, pid) => sum + processPss(pid), 0);
}
