import tls from 'node:tls';
import type { KeyStore } from '../store/types.js';

/** The ALPN protocol of TLS-ALPN-01 validation connections (RFC 8737). */
export const ACME_TLS_ALPN = 'acme-tls/1';
/** A challenge answer outlives any validation of it (the order is abandoned long before). */
const CHALLENGE_TTL_MS = 60 * 60_000;
/** HTTP-01 tokens are base64url (RFC 8555 §8.1); anything else is not ours to look up. */
const TOKEN_RE = /^[A-Za-z0-9_-]{1,256}$/;

export type ChallengeStore = Pick<KeyStore, 'putValue' | 'getValue' | 'deleteValue'>;

/**
 * Answers to the CA's challenges, kept in the key store so that whichever
 * instance the CA's validation request reaches can answer it — not only the
 * one that placed the order. HTTP-01: the key authorization for a token
 * (served at /.well-known/acme-challenge/<token>). TLS-ALPN-01: the
 * validation certificate for a name, served to connections that ask for the
 * `acme-tls/1` protocol with that name (RFC 8737).
 */
export class AcmeChallenges {
  /** Sockets whose client asked for acme-tls/1 (set by the ALPN callback, read by the SNI callback that follows it). */
  private readonly alpnSockets = new WeakSet<tls.TLSSocket>();

  constructor(private readonly store: ChallengeStore) {}

  async putHttp(token: string, keyAuthorization: string): Promise<void> {
    await this.store.putValue(`acme:http-01:${token}`, keyAuthorization, CHALLENGE_TTL_MS);
  }

  async removeHttp(token: string): Promise<void> {
    await this.store.deleteValue(`acme:http-01:${token}`);
  }

  /** The key authorization to answer for `token`, or null. */
  async httpResponse(token: string): Promise<string | null> {
    if (!TOKEN_RE.test(token)) return null;
    return this.store.getValue(`acme:http-01:${token}`);
  }

  async putAlpn(name: string, certPem: string, keyPem: string): Promise<void> {
    await this.store.putValue(`acme:tls-alpn-01:${name.toLowerCase()}`, JSON.stringify({ certPem, keyPem }), CHALLENGE_TTL_MS);
  }

  async removeAlpn(name: string): Promise<void> {
    await this.store.deleteValue(`acme:tls-alpn-01:${name.toLowerCase()}`);
  }

  /**
   * ALPNCallback for a TLS server. Must be a method-style function: Node
   * calls it with the TLSSocket as `this`. A client asking for acme-tls/1 is
   * marked for the SNI callback; any other client gets `otherwise(protocols)`
   * (undefined refuses the handshake, as Node does when no protocol matches).
   */
  alpnCallback(otherwise: (protocols: string[]) => string | undefined): (this: tls.TLSSocket, params: { servername: string; protocols: string[] }) => string | undefined {
    const sockets = this.alpnSockets;
    return function (this: tls.TLSSocket, { protocols }) {
      if (protocols.includes(ACME_TLS_ALPN)) {
        sockets.add(this);
        return ACME_TLS_ALPN;
      }
      return otherwise(protocols);
    };
  }

  /** True when `socket` asked for acme-tls/1 (OpenSSL runs the ALPN callback before the SNI one). */
  isValidation(socket: tls.TLSSocket): boolean {
    return this.alpnSockets.has(socket);
  }

  /** The validation context for `servername`, or null when no TLS-ALPN-01 challenge for it is pending. */
  async alpnContext(servername: string): Promise<tls.SecureContext | null> {
    const stored = await this.store.getValue(`acme:tls-alpn-01:${servername.toLowerCase()}`);
    if (stored === null) return null;
    const { certPem, keyPem } = JSON.parse(stored) as { certPem: string; keyPem: string };
    return tls.createSecureContext({ cert: certPem, key: keyPem });
  }
}
