/**
 * A load-generating process (forked by bench/lib/load.ts; never on the
 * server's event loop). Runs login cycles with N concurrent loops for a
 * while, or opens N logged-in connections and holds them idle.
 */
import net from 'node:net';
import tls from 'node:tls';
import { SCRIPTS, type BenchProtocol, type Credentials } from './protocols.js';

export interface Target {
  protocol: BenchProtocol;
  port: number;
  tls: boolean;
  /** TLS only: offer the session ticket the loop's previous cycle received (resumption); default a full handshake every cycle. */
  resume?: boolean;
  /** TLS only: the name sent as SNI (default localhost). */
  servername?: string;
  creds: Credentials;
}

export type WorkerRequest =
  | { type: 'run'; target: Target; concurrency: number; durationMs: number }
  | { type: 'hold'; target: Target; count: number; parallel: number }
  | { type: 'release' };

export type WorkerReply =
  | { type: 'result'; cycles: number; resumed: number; errors: number; latencies: number[]; elapsedMs: number; firstError: string | null }
  | { type: 'held'; held: number; errors: number; firstError: string | null }
  | { type: 'released' };

const CYCLE_TIMEOUT_MS = 15_000;

interface Outcome {
  ok: boolean;
  loginMs: number;
  socket: net.Socket | null;
  error: string | null;
  /** The TLS session was resumed from `session`. */
  resumed: boolean;
}

/** A loop's TLS session: the ticket the server sent last (TLS 1.3 sends it after the handshake). */
interface Ticket {
  session: Buffer | undefined;
}

/** One cycle; with `hold`, stops after the login and keeps the socket open. */
function cycle(target: Target, hold: boolean, ticket: Ticket = { session: undefined }): Promise<Outcome> {
  const script = SCRIPTS[target.protocol];
  return new Promise((resolve) => {
    const socket: net.Socket = target.tls
      ? tls.connect({ host: '127.0.0.1', port: target.port, rejectUnauthorized: false, servername: target.servername ?? 'localhost', session: target.resume ? ticket.session : undefined })
      : net.connect({ host: '127.0.0.1', port: target.port });
    if (target.tls && target.resume) socket.on('session', (session: Buffer) => void (ticket.session = session));
    socket.setNoDelay(true);
    socket.setEncoding('latin1');
    let step = 0;
    let buf = '';
    let started = 0n;
    let loginMs = Number.NaN;
    let done = false;
    const finish = (ok: boolean, error: string | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const resumed = socket instanceof tls.TLSSocket && socket.isSessionReused();
      if (ok && hold) {
        socket.removeAllListeners('data');
        resolve({ ok, loginMs, socket, error, resumed });
        return;
      }
      socket.destroy();
      resolve({ ok, loginMs, socket: null, error, resumed });
    };
    const timer = setTimeout(() => finish(false, `timeout at step ${step}`), CYCLE_TIMEOUT_MS);
    socket.on('data', (chunk: string) => {
      buf += chunk;
      for (let i = buf.indexOf('\n'); i >= 0 && !done; i = buf.indexOf('\n')) {
        const line = buf.charCodeAt(i - 1) === 13 ? buf.slice(0, i - 1) : buf.slice(0, i);
        buf = buf.slice(i + 1);
        const verdict = script.steps[step]!.expect(line);
        if (verdict === 'wait') continue;
        if (verdict === 'fail') return finish(false, `step ${step}: ${line.slice(0, 120)}`);
        if (step === script.loginTo) {
          loginMs = Number(process.hrtime.bigint() - started) / 1e6;
          if (hold) return finish(true, null);
        }
        step++;
        if (step === script.steps.length) return finish(true, null);
        if (step === script.loginFrom) started = process.hrtime.bigint();
        socket.write(script.steps[step]!.send!(target.creds));
      }
    });
    socket.on('error', (err) => finish(false, err.message));
    socket.on('close', () => finish(false, `closed at step ${step}`));
  });
}

const held: net.Socket[] = [];

async function run(target: Target, concurrency: number, durationMs: number): Promise<WorkerReply> {
  const started = Date.now();
  const end = started + durationMs;
  const latencies: number[] = [];
  let cycles = 0;
  let resumed = 0;
  let errors = 0;
  let firstError: string | null = null;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      const ticket: Ticket = { session: undefined };
      while (Date.now() < end) {
        const r = await cycle(target, false, ticket);
        if (r.ok) {
          cycles++;
          if (r.resumed) resumed++;
          latencies.push(r.loginMs);
        } else {
          errors++;
          firstError ??= r.error;
          await new Promise((res) => setTimeout(res, 20));
        }
      }
    }),
  );
  return { type: 'result', cycles, resumed, errors, latencies, elapsedMs: Date.now() - started, firstError };
}

async function hold(target: Target, count: number, parallel: number): Promise<WorkerReply> {
  let next = 0;
  let errors = 0;
  let firstError: string | null = null;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < count) {
        next++;
        const r = await cycle(target, true);
        if (r.ok && r.socket) {
          r.socket.on('error', () => {});
          held.push(r.socket);
        } else {
          errors++;
          firstError ??= r.error;
        }
      }
    }),
  );
  return { type: 'held', held: held.length, errors, firstError };
}

process.on('message', (msg: WorkerRequest) => {
  const reply = (r: WorkerReply): void => void process.send!(r);
  if (msg.type === 'run') void run(msg.target, msg.concurrency, msg.durationMs).then(reply);
  else if (msg.type === 'hold') void hold(msg.target, msg.count, msg.parallel).then(reply);
  else if (msg.type === 'release') {
    for (const s of held.splice(0)) s.destroy();
    reply({ type: 'released' });
  }
});
process.on('disconnect', () => process.exit(0));
