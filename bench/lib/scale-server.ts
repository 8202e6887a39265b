/**
 * The server side of `npm run bench:scale`: Keygate (control plane
 * only; the mail listeners off) with an event-loop delay monitor, driven over
 * IPC by bench/scale.ts. Messages: 'reset' clears the monitor; 'read' answers
 * the largest delay since then, the CPU time the process used since then (an
 * upper bound of any one event-loop block, whatever the machine's load does
 * to wall-clock delays) and the RSS; 'stop' closes the server.
 * Argument: the settings as JSON (dotted keys, as flags).
 */
import { readFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { startServer } from '../../src/server.js';

const t0 = performance.now();
const flags = JSON.parse(process.argv[2] ?? '{}') as Record<string, unknown>;
const config = loadConfig({ env: {}, flags });
const server = await startServer(config, createLogger('warn'));
const startupMs = performance.now() - t0;
const delay = monitorEventLoopDelay({ resolution: 1 });
delay.enable();

const send = (m: unknown): void => {
  process.send!(m);
};
/** A kB figure from /proc/self/status: RssAnon is the process's own memory, without mapped files. */
function statusKb(field: string): number {
  return Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? NaN);
}

let cpu = process.cpuUsage();
process.on('message', (m: { type: string }) => {
  if (m.type === 'reset') {
    delay.reset();
    cpu = process.cpuUsage();
    send({ type: 'reset' });
  } else if (m.type === 'read') {
    const used = process.cpuUsage(cpu);
    send({ type: 'read', maxDelayMs: delay.max / 1e6, cpuMs: (used.user + used.system) / 1000, rss: process.memoryUsage().rss, rssAnon: statusKb('RssAnon') * 1024 });
  } else if (m.type === 'stop') {
    delay.disable();
    void server.close().then(() => process.exit(0));
  }
});
send({ type: 'ready', startupMs });
