import net from 'node:net';
import type tls from 'node:tls';
import ipaddr from 'ipaddr.js';
import { ipBucket } from '../auth/ip-bucket.js';
import type { Config } from '../config.js';
import type { Protocol } from '../keys/scopes.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { upgradeToTls, type TlsProvider } from '../tls/index.js';
import { readProxyHeader } from './proxy-protocol.js';

export interface Connection {
  /** Already setNoDelay(true); implicit-TLS sockets are already through the handshake. */
  socket: net.Socket | tls.TLSSocket;
  /** Real client IP (from the PROXY header when enabled), IPv4-mapped IPv6 normalised to IPv4. */
  remoteAddress: string;
  remotePort: number;
  secure: boolean;
  /**
   * The protocol registers how to say goodbye on shutdown (e.g. IMAP "* BYE ..."); default destroys the socket.
   * A promise returned is work the session finishes first (an SMTP relay whose final dot arrived, bounded by the
   * upstream timeout): the listener waits for it before it destroys what is left.
   */
  onShutdown(fn: () => void | Promise<void>): void;
  /**
   * The client logged in: from now on the connection is no longer among the
   * not-yet-logged-in ones that a full listener closes first. Idempotent.
   */
  loggedIn(): void;
  /**
   * Ends the connection's accounting now (per-IP count, shutdown drain). The
   * listener otherwise does it on the raw socket's 'close', which after a
   * STARTTLS upgrade may never come: the line sessions call this when their
   * socket closes. Idempotent.
   */
  release(): void;
}

export interface TcpListenerOptions {
  /** e.g. 'imap' or 'imaps' (for logs). */
  name: string;
  protocol: Protocol;
  /** port 0 = ephemeral (tests). */
  host: string;
  port: number;
  implicitTls: boolean;
  tls: TlsProvider;
  proxyProtocol: boolean;
  /** Open connections per client IP (IPv6: per /64) on this listener; 0 = no limit. */
  maxConnectionsPerIp: number;
  /** Open connections on this listener; at the limit the oldest not yet logged in is closed for a new one. 0 = no limit. */
  maxConnections?: number;
  logger: Logger;
  onConnection(conn: Connection): void;
  /**
   * Over a connection limit: returns the protocol's refusal line; on a plain
   * port the listener writes it and closes the socket. On an implicit-TLS
   * port it closes the socket at once, before any TLS work.
   */
  refuse(socket: net.Socket | tls.TLSSocket, reason: 'too_many_connections'): string;
  /** When given, every refusal counts in keygate_connections_refused_total{listener, reason}. */
  metrics?: Metrics;
  /** How long a PROXY header may take (default 5 s). */
  proxyTimeoutMs?: number;
  /** How long an implicit-TLS handshake may take (default: the TlsProvider's, `tls.handshakeTimeout`). */
  handshakeTimeoutMs?: number;
}

/** The connection limits of a mail listener, from the configuration. */
export function listenerLimits(config: Pick<Config, 'limits'>): Pick<TcpListenerOptions, 'maxConnectionsPerIp' | 'maxConnections'> {
  return { maxConnectionsPerIp: config.limits.connectionsPerIp, maxConnections: config.limits.connectionsPerListener };
}

type RefusalReason = 'per_ip' | 'listener_full' | 'evicted' | 'handshake_timeout';

/** A refused socket is destroyed this long after its refusal line if the peer has not closed. */
const REFUSE_LINGER_MS = 1000;
/** After the shutdown hooks, what is still open is destroyed this long later. */
const SHUTDOWN_KILL_MS = 1000;
/** A full listener is logged at warn at most this often (the counter has every refusal). */
const FULL_WARN_EVERY_MS = 60_000;

/** Canonical text of a client IP: IPv4-mapped IPv6 (::ffff:1.2.3.4) as IPv4, IPv6 compressed. */
export function normalizeRemoteAddress(ip: string | undefined): string {
  if (!ip) return '';
  // A dotted quad as Node reports it (no leading zeros) is already in ipaddr's form: every IPv4 connection, without a parse.
  if (net.isIPv4(ip)) return ip;
  try {
    return ipaddr.process(ip).toString();
  } catch {
    return ip;
  }
}

interface Tracked {
  raw: net.Socket;
  socket: net.Socket | tls.TLSSocket;
  /** Set once the socket is counted against its IP bucket (see ipBucket). */
  ip: string | null;
  /** Handed to onConnection (until then shutdown simply destroys it). */
  live: boolean;
  shutdown: (() => void | Promise<void>) | null;
}

/**
 * The shared TCP server for a mail listener: accepts, enforces the listener's
 * connection cap, reads the PROXY header when enabled, enforces the per-IP
 * cap, does the implicit-TLS handshake, and hands a ready Connection to the
 * protocol. Both caps are checked before any TLS work, so a client over them
 * costs no handshake and no wait. Socket errors are logged at debug and never
 * escape. Pieces (readProxyHeader, upgradeToTls, normalizeRemoteAddress) are
 * exported separately.
 */
export class TcpListener {
  private readonly server: net.Server;
  private readonly tracked = new Set<Tracked>();
  /** The tracked connections not logged in yet, oldest first (a Set keeps insertion order): the first to go when the listener is full. */
  private readonly waiting = new Set<Tracked>();
  private readonly perIp = new Map<string, number>();
  /** Refused sockets given their line and a moment to read it; outside every cap, destroyed within REFUSE_LINGER_MS. */
  private readonly refusing = new Set<net.Socket>();
  private readonly log: Logger;
  private lastFullWarning = 0;
  private closing = false;
  private closePromise: Promise<void> | null = null;
  private drained: (() => void) | null = null;

  constructor(private readonly opts: TcpListenerOptions) {
    this.log = opts.logger.child({ listener: opts.name, protocol: opts.protocol });
    this.server = net.createServer((socket) => this.accept(socket));
    this.server.on('error', (err) => this.log.error({ err }, 'listener error'));
  }

  /** Binds host:port; rejects on EADDRINUSE and the like. */
  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.server.once('error', onError);
      this.server.listen({ host: this.opts.host, port: this.opts.port }, () => {
        this.server.off('error', onError);
        const a = this.address();
        this.log.info({ host: a.host, port: a.port, implicitTls: this.opts.implicitTls, proxyProtocol: this.opts.proxyProtocol }, 'listening');
        resolve();
      });
    });
  }

  address(): { host: string; port: number } {
    const a = this.server.address();
    if (a === null || typeof a === 'string') return { host: this.opts.host, port: this.opts.port };
    return { host: a.address, port: a.port };
  }

  /** Open sockets, including those still in the PROXY header or TLS handshake, and refused ones not closed yet. */
  connections(): number {
    return this.tracked.size + this.refusing.size;
  }

  /** Open connections counted against one client IP (IPv6: against its /64). */
  connectionsFrom(ip: string): number {
    return this.perIp.get(ipBucket(normalizeRemoteAddress(ip))) ?? 0;
  }

  private accept(raw: net.Socket): void {
    raw.setNoDelay(true);
    const t: Tracked = { raw, socket: raw, ip: null, live: false, shutdown: null };
    const onError = (err: Error & { code?: string }): void => {
      this.log.debug({ ip: t.ip ?? normalizeRemoteAddress(raw.remoteAddress), code: err.code, err: err.message }, 'socket error');
    };
    raw.on('error', onError);
    raw.once('close', () => this.forget(t));
    if (this.closing) {
      raw.destroy();
      return;
    }
    const max = this.opts.maxConnections ?? 0;
    if (max > 0 && this.tracked.size >= max && !this.makeRoom(max)) {
      this.refuse(t, 'listener_full', normalizeRemoteAddress(raw.remoteAddress));
      return;
    }
    this.tracked.add(t);
    this.waiting.add(t);
    void this.prepare(t, onError);
  }

  /**
   * A full listener makes room for a new connection as Dovecot does: by
   * closing the oldest connections that have not logged in yet (a slow or
   * idle client, or one of a flood); logged-in sessions are never cut for a
   * newcomer. False when every connection is logged in.
   */
  private makeRoom(max: number): boolean {
    if (Date.now() - this.lastFullWarning >= FULL_WARN_EVERY_MS) {
      this.lastFullWarning = Date.now();
      this.log.warn({ max, waiting: this.waiting.size }, 'listener full: closing the oldest connections not logged in yet, refusing when none is left');
    }
    while (this.tracked.size >= max) {
      const oldest = this.waiting.values().next().value;
      if (!oldest) return false;
      this.count('evicted');
      this.log.debug({ ip: oldest.ip ?? normalizeRemoteAddress(oldest.raw.remoteAddress) }, 'listener full; closing the oldest connection not logged in yet');
      oldest.socket.destroy();
      oldest.raw.destroy();
      this.forget(oldest);
    }
    return true;
  }

  private count(reason: RefusalReason): void {
    this.opts.metrics?.connectionsRefused.inc({ listener: this.opts.name, reason });
  }

  /**
   * Refuses a connection over a limit. Plain ports get the protocol's line;
   * implicit-TLS ports are closed at once, since answering would take a
   * handshake (CPU, memory, and up to the handshake timeout) the client is
   * not owed. No longer counted against the listener: a refused socket
   * lingers at most REFUSE_LINGER_MS.
   */
  private refuse(t: Tracked, reason: RefusalReason, ip: string): void {
    this.count(reason);
    // Debug, not info: a flood of refused connections must not flood the log too; the counter shows it.
    this.log.debug({ ip, reason }, 'connection over a limit; refusing');
    this.forget(t);
    const { raw } = t;
    if (this.opts.implicitTls) {
      raw.destroy();
      return;
    }
    let line = '';
    try {
      line = this.opts.refuse(raw, 'too_many_connections');
    } catch (err) {
      this.log.error({ err }, 'refuse() threw');
    }
    this.refusing.add(raw);
    raw.once('close', () => this.refusing.delete(raw));
    raw.end(line);
    setTimeout(() => raw.destroy(), REFUSE_LINGER_MS).unref();
  }

  private async prepare(t: Tracked, onError: (err: Error) => void): Promise<void> {
    const { raw } = t;
    let remoteAddress = normalizeRemoteAddress(raw.remoteAddress);
    let remotePort = raw.remotePort ?? 0;
    try {
      if (this.opts.proxyProtocol) {
        const info = await readProxyHeader(raw, this.opts.proxyTimeoutMs);
        if (info) {
          remoteAddress = normalizeRemoteAddress(info.sourceAddress);
          remotePort = info.sourcePort;
        }
      }
    } catch (err) {
      this.log.debug({ peer: remoteAddress, code: (err as { code?: string }).code, err: (err as Error).message }, 'bad or missing PROXY header; closing');
      raw.destroy();
      return;
    }
    if (raw.destroyed || !this.tracked.has(t)) return;

    const max = this.opts.maxConnectionsPerIp;
    const bucket = ipBucket(remoteAddress);
    if (max > 0 && (this.perIp.get(bucket) ?? 0) >= max) {
      this.refuse(t, 'per_ip', remoteAddress);
      return;
    }
    t.ip = bucket;
    this.perIp.set(bucket, (this.perIp.get(bucket) ?? 0) + 1);

    let socket: net.Socket | tls.TLSSocket = raw;
    if (this.opts.implicitTls) {
      try {
        socket = await upgradeToTls(raw, this.opts.tls, this.opts.handshakeTimeoutMs);
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code === 'ETIMEDOUT' && this.tracked.has(t)) this.count('handshake_timeout');
        this.log.debug({ ip: remoteAddress, code, err: (err as Error).message }, 'TLS handshake failed');
        raw.destroy();
        return;
      }
      socket.on('error', onError);
      socket.once('close', () => this.forget(t));
      t.socket = socket;
      if (this.closing || !this.tracked.has(t)) {
        socket.destroy();
        return;
      }
    }

    t.live = true;
    const conn: Connection = {
      socket,
      remoteAddress,
      remotePort,
      secure: this.opts.implicitTls,
      onShutdown: (fn) => {
        t.shutdown = fn;
      },
      loggedIn: () => {
        this.waiting.delete(t);
      },
      release: () => {
        socket.destroy();
        this.forget(t);
      },
    };
    try {
      this.opts.onConnection(conn);
    } catch (err) {
      this.log.error({ err, ip: remoteAddress }, 'connection handler threw; closing');
      socket.destroy();
    }
  }

  private forget(t: Tracked): void {
    this.waiting.delete(t);
    if (!this.tracked.delete(t)) return;
    if (t.ip !== null) {
      const n = (this.perIp.get(t.ip) ?? 1) - 1;
      if (n <= 0) this.perIp.delete(t.ip);
      else this.perIp.set(t.ip, n);
    }
    if (this.tracked.size === 0) this.drained?.();
  }

  /**
   * Stops accepting; waits up to graceMs for connections to end; then calls
   * each connection's onShutdown hook (default: destroy), then destroys what
   * is left 1 s later. Connections not yet handed to the protocol (PROXY
   * header, TLS handshake) are destroyed at the end of the grace period.
   */
  close(graceMs: number): Promise<void> {
    this.closePromise ??= this.shutdown(graceMs);
    return this.closePromise;
  }

  private async shutdown(graceMs: number): Promise<void> {
    this.closing = true;
    // Stops accepting now; the callback comes only once every connection has ended.
    const serverClosed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (this.tracked.size > 0) await this.waitDrained(graceMs);
    if (this.tracked.size > 0) {
      this.log.info({ open: this.tracked.size }, 'grace period over; ending open connections');
      const finishing: Promise<void>[] = [];
      for (const t of [...this.tracked]) {
        if (!t.live || !t.shutdown) {
          t.socket.destroy();
          continue;
        }
        try {
          const work = t.shutdown();
          if (work) finishing.push(work.catch((err: unknown) => this.log.debug({ err }, 'shutdown hook failed')));
        } catch (err) {
          this.log.debug({ err }, 'shutdown hook threw');
          t.socket.destroy();
        }
      }
      if (finishing.length > 0) {
        this.log.info({ sessions: finishing.length }, 'waiting for work in progress to finish');
        await Promise.all(finishing);
      }
      if (this.tracked.size > 0) await this.waitDrained(SHUTDOWN_KILL_MS);
      for (const t of [...this.tracked]) {
        t.socket.destroy();
        t.raw.destroy();
      }
      // 'close' follows destroy() once libuv has closed the handle.
      if (this.tracked.size > 0) await this.waitDrained(SHUTDOWN_KILL_MS);
    }
    await Promise.race([serverClosed, new Promise((r) => setTimeout(r, SHUTDOWN_KILL_MS).unref())]);
    this.log.info('closed');
  }

  private waitDrained(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.drained = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.drained = done;
    });
  }
}
