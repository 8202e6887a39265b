/**
 * The load process of `npm run bench:sasl` (forked; never on a server's
 * event loop): N connections to a Dovecot-protocol SASL server, each held
 * open the whole run as a Postfix smtpd process holds its own, each doing
 * the handshake once and then `AUTH … PLAIN … resp=` requests one after
 * another with increasing ids, as Postfix sends them.
 */
import net from 'node:net';

export interface SaslRun {
  type: 'run';
  port: number;
  user: string;
  pass: string;
  concurrency: number;
  durationMs: number;
}

export interface SaslResult {
  type: 'result';
  exchanges: number;
  errors: number;
  latencies: number[];
  elapsedMs: number;
  firstError: string | null;
}

/** One connection's loop: handshake, then AUTH after AUTH until `end`. */
function loop(msg: SaslRun, end: number, out: SaslResult): Promise<void> {
  const resp = Buffer.from(`\0${msg.user}\0${msg.pass}`).toString('base64');
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port: msg.port });
    socket.setNoDelay(true);
    socket.setEncoding('latin1');
    let buf = '';
    let ready = false;
    let id = 0;
    let sent = 0n;
    let done = false;
    const finish = (error: string | null): void => {
      if (done) return;
      done = true;
      if (error) {
        out.errors++;
        out.firstError ??= error;
      }
      socket.destroy();
      resolve();
    };
    const next = (): void => {
      if (Date.now() >= end) return finish(null);
      id++;
      sent = process.hrtime.bigint();
      socket.write(`AUTH\t${id}\tPLAIN\tservice=smtp\tnologin\tlip=127.0.0.1\trip=127.0.0.1\tsecured\tresp=${resp}\n`);
    };
    socket.on('data', (chunk: string) => {
      buf += chunk;
      for (let nl = buf.indexOf('\n'); nl >= 0 && !done; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!ready) {
          if (line === 'DONE') {
            ready = true;
            next();
          }
          continue;
        }
        if (!line.startsWith(`OK\t${id}\t`)) return finish(`AUTH ${id}: ${line.slice(0, 120)}`);
        out.exchanges++;
        out.latencies.push(Number(process.hrtime.bigint() - sent) / 1e6);
        next();
      }
    });
    socket.on('error', (err) => finish(err.message));
    socket.on('close', () => finish(done ? null : `closed after ${id} requests`));
    socket.write('VERSION\t1\t2\nCPID\t1\n');
  });
}

async function run(msg: SaslRun): Promise<SaslResult> {
  const started = Date.now();
  const out: SaslResult = { type: 'result', exchanges: 0, errors: 0, latencies: [], elapsedMs: 0, firstError: null };
  await Promise.all(Array.from({ length: msg.concurrency }, () => loop(msg, started + msg.durationMs, out)));
  out.elapsedMs = Date.now() - started;
  return out;
}

process.on('message', (msg: SaslRun) => {
  if (msg.type === 'run') void run(msg).then((r) => process.send!(r));
});
process.on('disconnect', () => process.exit(0));
