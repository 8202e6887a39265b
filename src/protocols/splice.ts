import type { Duplex } from 'node:stream';
import type { PipeSession } from '../backends/types.js';

/** How long a client that stopped reading may hold its connection after the upstream ended the session, ms. */
const FLUSH_LIMIT_MS = 60_000;

export interface SpliceOptions {
  /** How long a client may keep its side open after the upstream ended the session and its last bytes went out, ms. */
  lingerMs: number;
  /** The upstream connection failed (reset, TLS error); for a debug line. The client's errors are its connection's. */
  onUpstreamError(err: Error): void;
  /** The upstream ended the session (or failed): the session is over even while the client lingers. */
  onUpstreamEnded(): void;
  /** Sees every upstream chunk on its way to the client (IMAP follows line boundaries with it). */
  onRelay?(chunk: Buffer): void;
}

export interface Splice {
  /**
   * Takes the client back (revocation, shutdown): no more upstream bytes
   * reach it, and the upstream connection is closed. The caller says the
   * last line and closes the client.
   */
  stop(): void;
}

/**
 * Joins a logged-in client (IMAP or POP3) to its upstream for the rest of the
 * session: bytes flow both ways with backpressure, and when one side ends the
 * other is ended too, so neither connection outlives the session. A client
 * that keeps its side open after the upstream said goodbye is cut after
 * `lingerMs`.
 */
export function splice(client: Duplex, pipe: PipeSession, options: SpliceOptions): Splice {
  const upstream = pipe.socket;
  let stopped = false;
  let upstreamPaused = false;
  let clientPaused = false;

  const resumeUpstream = (): void => {
    upstreamPaused = false;
    if (!stopped) upstream.resume();
  };
  const resumeClient = (): void => {
    clientPaused = false;
    if (!stopped) client.resume();
  };
  // Client → upstream: small commands, or an APPEND's literal; the client is
  // paused while the upstream's buffer is full. (What .pipe() does, with two
  // listeners instead of its seven and their closures, per session.)
  const toUpstream = (chunk: Buffer): void => {
    if (stopped) return;
    if (!upstream.write(chunk)) holdClient();
  };
  const holdClient = (): void => {
    if (clientPaused) return;
    clientPaused = true;
    client.pause();
    upstream.once('drain', resumeClient);
  };
  // A client that half-closes passes its FIN on: the upstream answers what came before it, then ends the session.
  const clientEnded = (): void => {
    if (!stopped) upstream.end();
  };
  const toClient = (chunk: Buffer): void => {
    if (stopped || client.destroyed) return;
    options.onRelay?.(chunk);
    if (!client.write(chunk) && !upstreamPaused) {
      upstreamPaused = true;
      upstream.pause();
      client.once('drain', resumeUpstream);
    }
  };

  /** Ends the splice once: listeners off, upstream closed. False when it had already ended. */
  const finish = (): boolean => {
    if (stopped) return false;
    stopped = true;
    detach();
    pipe.close();
    return true;
  };
  // The upstream said goodbye (POP3 QUIT, IMAP LOGOUT, its autologout):
  // everything it sent goes out (a slow client gets up to FLUSH_LIMIT_MS to
  // read it), then the client is closed.
  const upstreamEnded = (): void => {
    if (!finish()) return;
    options.onUpstreamEnded();
    if (client.destroyed) return;
    const cut = (): void => void client.destroy();
    // Both timers go when the client closes: left to run, each would keep the
    // closed socket alive for up to a minute after every session.
    let linger: NodeJS.Timeout | null = null;
    const flush = setTimeout(cut, FLUSH_LIMIT_MS).unref();
    const flushed = (): void => void (linger = setTimeout(cut, options.lingerMs).unref());
    client.once('finish', flushed);
    client.once('close', () => {
      clearTimeout(flush);
      if (linger) clearTimeout(linger);
      client.off('finish', flushed);
    });
    client.end();
  };
  const clientClosed = (): void => void finish();
  const upstreamError = (err: Error): void => {
    options.onUpstreamError(err);
    if (!finish()) return;
    options.onUpstreamEnded();
    client.destroy();
  };

  const detach = (): void => {
    client.off('data', toUpstream);
    client.off('end', clientEnded);
    upstream.off('drain', resumeClient);
    client.off('drain', resumeUpstream);
    client.off('close', clientClosed);
    upstream.off('end', upstreamEnded);
    upstream.off('close', upstreamEnded);
    // Late errors after the hand-back are the caller's, or harmless.
    upstream.off('error', upstreamError);
    upstream.on('error', () => {});
  };

  // A client that half-closes (`printf … | nc -N`, a script's last QUIT)
  // still gets every reply: its FIN goes upstream, and the client is ended
  // only when the upstream is done. A client error destroys the client
  // socket, which ends here as a close.
  client.allowHalfOpen = true;
  client.once('close', clientClosed);
  upstream.on('error', upstreamError);
  upstream.once('end', upstreamEnded);
  upstream.once('close', upstreamEnded);
  client.on('data', toUpstream);
  // A FIN that came before the hand-over is passed on here.
  if (client.readableEnded) upstream.end();
  else client.once('end', clientEnded);
  // Bytes handed over with the session (pipelined after the login) may have filled the upstream's buffer already.
  if (upstream.writableNeedDrain) holdClient();
  else client.resume();
  // Upstream → client: the bulk direction (FETCH, RETR).
  pipe.relay(toClient);

  return { stop: () => void finish() };
}
