import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import ipaddr from 'ipaddr.js';
import type { Authenticator, FailReason } from '../../auth/authenticate.js';
import { PROTOCOLS, type Protocol } from '../../keys/scopes.js';
import type { Logger } from '../../log.js';
import { plaintextLoginAllowed } from '../limits.js';
import { mechanismNamed, MECHANISMS, SaslExchange, type SaslStep } from '../sasl-mechanisms.js';
import { normalizeRemoteAddress } from '../tcp-listener.js';
import { traceCommand } from '../trace.js';
import { contLine, failLine, handshake, okLine, parseClientLine, PROTOCOL_MAJOR, type AuthParams } from './codec.js';

/** What every connection of one SASL server shares. */
export interface SaslServerContext {
  authenticator: Authenticator;
  log: Logger;
  /** `limits.lineLength`: a longer line ends the connection. */
  lineLength: number;
  /** `limits.loginTimeout`: time allowed from connect to a complete handshake (VERSION and CPID). */
  handshakeTimeoutMs: number;
  /** `auth.allowPlaintext`. */
  allowPlaintext: boolean;
  /** This connection's number (CUID). */
  nextCuid(): number;
}

/**
 * Requests one connection may have open at once. Postfix and Exim have one
 * (each smtpd process or Exim child holds its own connection); a peer with
 * more is not one of them.
 */
export const MAX_PENDING = 32;

/** Why a connection was ended for bad input; the log says it, the peer is told nothing. */
type BadInput =
  | 'line_too_long'
  | 'unknown_command'
  | 'out_of_order'
  | 'version_mismatch'
  | 'id_not_increasing'
  | 'unknown_id'
  | 'too_many_requests'
  | 'unknown_mechanism'
  | 'unknown_service'
  | 'handshake_timeout';

interface Request {
  exchange: SaslExchange;
  protocol: Protocol;
  ip: string;
  /** The user name once the client has given one (FAIL's `user=`). */
  username: string | null;
  /**
   * What the request waits for: the peer's next CONT (`response`), the
   * peer's answer to a bearer error challenge before the final FAIL
   * (`failure_ack`, with the final kind), or our own check (`check`: a CONT
   * now is out of order).
   */
  waiting: { for: 'response' } | { for: 'failure_ack'; final: 'refused' | 'temporary' } | { for: 'check' };
}

/**
 * One client of the Dovecot-protocol SASL server (a Postfix smtpd process,
 * an Exim child): the handshake, then AUTH requests, each a SASL exchange
 * decided by the Authenticator's `logIn` — the same limits (by the request's
 * `rip`), policy (the `service` names the scope), audit, metrics and failure
 * delay as a login on Keygate's own listeners, without a session (the peer
 * serves the mail). Request ids must increase; anything that is not the
 * protocol ends the connection without a word to the peer.
 */
export class SaslServerConnection {
  private state: 'version' | 'cpid' | 'ready' = 'version';
  private buffer = '';
  private lastId = 0;
  private readonly requests = new Map<number, Request>();
  private closed = false;
  private handshakeTimer: NodeJS.Timeout | null;
  /** The peer's own address, for requests without a usable `rip` ('' on a unix socket). */
  private readonly peerIp: string;
  /** The last `rip` and the address it gave: an smtpd process asks for one client many times over. */
  private lastRip: string | null = null;
  private lastRipIp = '';

  constructor(
    private readonly ctx: SaslServerContext,
    private readonly socket: net.Socket,
  ) {
    this.peerIp = normalizeRemoteAddress(socket.remoteAddress);
    socket.setNoDelay?.(true);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (err: Error & { code?: string }) => ctx.log.debug({ code: err.code, err: err.message }, 'SASL client socket error'));
    socket.on('close', () => {
      this.closed = true;
      this.clearHandshakeTimer();
    });
    this.handshakeTimer = setTimeout(() => this.badInput('handshake_timeout'), ctx.handshakeTimeoutMs);
    this.handshakeTimer.unref();
    socket.write(handshake({ mechanisms: MECHANISMS, spid: process.pid, cuid: ctx.nextCuid(), cookie: randomBytes(16).toString('hex') }));
  }

  /** Requests whose answer is still to come (shutdown waits for them). */
  get pending(): number {
    return this.requests.size;
  }

  destroy(): void {
    this.closed = true;
    this.clearHandshakeTimer();
    this.socket.destroy();
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    for (let nl = this.buffer.indexOf('\n'); nl >= 0 && !this.closed; nl = this.buffer.indexOf('\n')) {
      const line = this.buffer.slice(0, nl).replace(/\r$/, '');
      this.buffer = this.buffer.slice(nl + 1);
      if (line.length > this.ctx.lineLength) return this.badInput('line_too_long');
      this.onLine(line);
    }
    if (!this.closed && this.buffer.length > this.ctx.lineLength) this.badInput('line_too_long');
  }

  private onLine(line: string): void {
    traceCommand(this.ctx.log, 'sasl', this.peerIp || 'unix', line);
    const cmd = parseClientLine(line);
    if (cmd === null) return this.badInput('unknown_command');
    switch (cmd.command) {
      case 'VERSION':
        if (this.state !== 'version') return this.badInput('out_of_order');
        if (cmd.major !== PROTOCOL_MAJOR) return this.badInput('version_mismatch');
        this.state = 'cpid';
        return;
      case 'CPID':
        if (this.state !== 'cpid') return this.badInput('out_of_order');
        this.state = 'ready';
        this.clearHandshakeTimer();
        return;
      case 'AUTH':
        if (this.state !== 'ready') return this.badInput('out_of_order');
        return this.onAuth(cmd.id, cmd.mechanism, cmd.params);
      case 'CONT': {
        const request = this.requests.get(cmd.id);
        if (this.state !== 'ready' || !request) return this.badInput('unknown_id');
        const waiting = request.waiting;
        if (waiting.for === 'check') return this.badInput('out_of_order');
        if (waiting.for === 'failure_ack') return this.finish(cmd.id, failLine(cmd.id, waiting.final, request.username));
        return this.step(cmd.id, request, request.exchange.next(cmd.response));
      }
    }
  }

  private onAuth(id: number, mechanismName: string, params: AuthParams): void {
    if (id <= this.lastId) return this.badInput('id_not_increasing');
    this.lastId = id;
    if (this.requests.size >= MAX_PENDING) return this.badInput('too_many_requests');
    const mechanism = mechanismNamed(mechanismName);
    if (!mechanism) return this.badInput('unknown_mechanism', { mechanism: mechanismName });
    const protocol = PROTOCOLS.find((p) => p === params.service);
    if (!protocol) return this.badInput('unknown_service', { service: params.service?.slice(0, 64) ?? null });
    const ip = this.clientIp(params.rip);
    // The one plaintext rule of every surface: a key travels only over TLS, or from loopback, unless allowed.
    if (!plaintextLoginAllowed({ secure: params.secured, remoteAddress: ip, allowPlaintext: this.ctx.allowPlaintext })) {
      this.ctx.log.info({ protocol, ip }, 'SASL request refused: plaintext login before TLS');
      this.socket.write(failLine(id, 'refused', null));
      return;
    }
    const request: Request = { exchange: new SaslExchange(mechanism), protocol, ip, username: null, waiting: { for: 'check' } };
    this.requests.set(id, request);
    this.step(id, request, request.exchange.start(params.resp));
  }

  /** The end client's address: `rip` when it is an IP address, else the peer's own. */
  private clientIp(rip: string | null): string {
    if (rip === null) return this.peerIp;
    if (rip !== this.lastRip) {
      this.lastRipIp = ipaddr.isValid(rip) ? normalizeRemoteAddress(rip) : this.peerIp;
      this.lastRip = rip;
    }
    return this.lastRipIp;
  }

  /** Moves a request on by one step of its exchange. */
  private step(id: number, request: Request, step: SaslStep): void {
    if (step.kind === 'challenge') {
      request.waiting = { for: 'response' };
      this.socket.write(contLine(id, step.challenge));
      return;
    }
    request.waiting = { for: 'check' };
    const { protocol, ip } = request;
    let refused: FailReason | undefined;
    let username = '';
    let key = '';
    if (step.kind === 'credentials') ({ username, key } = step);
    else if (step.kind === 'refused') ({ username, reason: refused } = step);
    else refused = 'malformed';
    request.username = username || null;
    void this.ctx.authenticator.logIn({ protocol, username, key, ip, ...(refused && { refused }) }).then((outcome) => {
      if (this.closed) return;
      if (outcome.kind === 'loggedIn') return this.finish(id, okLine(id, outcome.account.address));
      const challenge = step.kind === 'credentials' ? request.exchange.failureChallenge() : null;
      if (challenge === null) return this.finish(id, failLine(id, outcome.kind, request.username));
      // RFC 7628 §3.2.2: a bearer mechanism's failure is a challenge first; the FAIL follows the peer's answer.
      request.waiting = { for: 'failure_ack', final: outcome.kind };
      this.socket.write(contLine(id, challenge));
    });
  }

  private finish(id: number, line: string): void {
    this.requests.delete(id);
    this.socket.write(line);
  }

  private badInput(reason: BadInput, detail: Record<string, unknown> = {}): void {
    if (this.closed) return;
    this.ctx.log.info({ reason, peer: this.peerIp || 'unix', ...detail }, 'SASL client sent bad input; closing');
    this.destroy();
  }

  private clearHandshakeTimer(): void {
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
  }
}
