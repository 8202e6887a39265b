import type { ListenerDeps, RunningListener } from './protocols/deps.js';
import { startImapListeners } from './protocols/imap/index.js';
import { startPop3Listeners } from './protocols/pop3/index.js';
import { startSaslServer } from './protocols/sasl-server/server.js';
import { startSmtpListeners } from './protocols/smtp/index.js';

/** Starts one protocol's listeners (none when the protocol is disabled). */
export type ListenerStarter = (deps: ListenerDeps) => Promise<RunningListener[]>;

/** Every mail protocol `keygate serve` runs, and the SASL server that answers for Postfix and Exim. */
export const STARTERS: readonly ListenerStarter[] = [startSmtpListeners, startImapListeners, startPop3Listeners, startSaslServer];

export interface Listeners {
  all: RunningListener[];
  /** The listener called `name` (e.g. 'imap', 'imaps'); throws when it is not running. */
  get(name: string): RunningListener;
  /** Stops accepting everywhere at once, lets sessions finish for up to graceMs, then closes what is left. */
  close(graceMs: number): Promise<void>;
}

/** Starts every listener; if one cannot bind, those already started are closed and the error is rethrown. */
export async function startListeners(deps: ListenerDeps, starters: readonly ListenerStarter[] = STARTERS): Promise<Listeners> {
  const all: RunningListener[] = [];
  try {
    for (const start of starters) all.push(...(await start(deps)));
  } catch (err) {
    await Promise.all(all.map((l) => l.close(0)));
    throw err;
  }
  let closing: Promise<void> | null = null;
  return {
    all,
    get(name) {
      const found = all.find((l) => l.name === name);
      if (!found) throw new Error(`no listener named ${name}`);
      return found;
    },
    close(graceMs) {
      closing ??= Promise.all(all.map((l) => l.close(graceMs))).then(() => undefined);
      return closing;
    },
  };
}
