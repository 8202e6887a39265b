/**
 * npm run bench:flood — one client IP opens raw TCP connections to the
 * implicit-TLS IMAP port and never sends a ClientHello (issue 11 §4). Reports
 * what it costs the server: peak open descriptors and RSS of `keygate serve`
 * (default limits: 50 connections per IP, 1000 per listener, 5 s handshake),
 * and how many of the connections it kept open.
 *
 *   KEYGATE_CLI=/path/to/other/dist/cli.js npm run bench:flood   # the same against another build (the anchor)
 *
 * Figures go to the notes and the README, never into tests.
 */
import { readdirSync, readFileSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sleep, startKeygate } from './lib/servers.js';

const CONNECTIONS = Number(process.env.FLOOD_CONNECTIONS ?? 12_000);
const HOLD_MS = Number(process.env.FLOOD_HOLD_MS ?? 3000);

const fds = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length;
const rssMb = (pid: number): number => Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-flood-'));
  const server = await startKeygate(dir, 'flood', ['--db.path', join(dir, 'keys.db')], ['--limits.connectionsPerIp', '50', '--log.level', 'warn']);
  try {
    const idle = { fds: fds(server.pid), rss: rssMb(server.pid) };
    let peakFds = idle.fds;
    let peakRss = idle.rss;
    const sample = setInterval(() => {
      peakFds = Math.max(peakFds, fds(server.pid));
      peakRss = Math.max(peakRss, rssMb(server.pid));
    }, 100);
    const sockets: net.Socket[] = [];
    let closedByServer = 0;
    let failed = 0;
    const started = Date.now();
    // In batches, so the client's own connect() calls do not stall the loop.
    for (let i = 0; i < CONNECTIONS; i += 200) {
      await Promise.all(
        Array.from({ length: Math.min(200, CONNECTIONS - i) }, () =>
          new Promise<void>((resolve) => {
            const s = net.connect(server.ports.imaps, '127.0.0.1', () => resolve());
            s.once('error', () => {
              failed++;
              resolve();
            });
            s.once('close', () => closedByServer++);
            sockets.push(s);
          }),
        ),
      );
    }
    const opened = Date.now() - started;
    await sleep(HOLD_MS);
    clearInterval(sample);
    const stillOpen = sockets.filter((s) => !s.destroyed).length;
    for (const s of sockets) s.destroy();
    console.log(
      JSON.stringify({
        connections: CONNECTIONS,
        openedInMs: opened,
        connectErrors: failed,
        closedByServer,
        keptOpenAfterHold: stillOpen,
        serverFds: { idle: idle.fds, peak: peakFds },
        serverRssMb: { idle: Math.round(idle.rss), peak: Math.round(peakRss) },
      }),
    );
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
