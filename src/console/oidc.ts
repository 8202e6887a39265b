import { createHash, randomBytes } from 'node:crypto';
import * as client from 'openid-client';
import type { Config } from '../config.js';
import { normalizeAddress } from '../keys/record.js';
import type { Logger } from '../log.js';
import type { KeyStore } from '../store/types.js';

/** How long a started sign-in may take at the identity provider. */
const FLOW_TTL_MS = 10 * 60_000;
const STATE_RE = /^[A-Za-z0-9_-]{20,100}$/;

export type OidcResult = { ok: true; email: string } | { ok: false; reason: string };

interface Flow {
  nonce: string;
  verifier: string;
  /** SHA-256 of the browser-binding cookie: the callback must come back to the browser that started. */
  binding: string;
  redirectUri: string;
}

/**
 * OpenID Connect sign-in (authorization code with PKCE, `openid-client`). The
 * `email` claim of the ID token names the account. A flow in progress is kept
 * in the key store's shared values under its state, so the callback may reach
 * any instance, and is taken once. Discovery runs on first use and again
 * after a failure.
 */
export class OidcSignIn {
  private discovered: Promise<client.Configuration> | null = null;

  constructor(
    private readonly settings: Config['console']['oidc'],
    private readonly store: KeyStore,
    private readonly logger: Logger,
  ) {}

  get enabled(): boolean {
    return this.settings.issuer !== '';
  }

  /** The identity provider's authorization URL for a new flow, and the binding cookie value to set. */
  async start(redirectUri: string): Promise<{ url: string; binding: string }> {
    const config = await this.configuration();
    const state = client.randomState();
    const nonce = client.randomNonce();
    const verifier = client.randomPKCECodeVerifier();
    const binding = randomBytes(32).toString('base64url');
    const flow: Flow = { nonce, verifier, binding: sha256(binding), redirectUri };
    await this.store.putValue(`console-oidc:${sha256(state)}`, JSON.stringify(flow), FLOW_TTL_MS);
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      scope: 'openid email',
      state,
      nonce,
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
    });
    return { url: url.href, binding };
  }

  /** Finishes a flow from the callback URL; the email the identity provider vouches for, or why not. */
  async finish(callbackUrl: URL, binding: string | null): Promise<OidcResult> {
    const state = callbackUrl.searchParams.get('state') ?? '';
    if (!STATE_RE.test(state)) return { ok: false, reason: 'oidc_bad_state' };
    const raw = await this.store.takeValue(`console-oidc:${sha256(state)}`);
    if (raw === null) return { ok: false, reason: 'oidc_unknown_state' };
    const flow = JSON.parse(raw) as Flow;
    if (binding === null || sha256(binding) !== flow.binding) return { ok: false, reason: 'oidc_other_browser' };
    if (callbackUrl.searchParams.has('error')) return { ok: false, reason: `oidc_error:${callbackUrl.searchParams.get('error')?.slice(0, 64)}` };
    try {
      const config = await this.configuration();
      // The callback URL as the provider was told it (the request's own may differ behind a proxy).
      const current = new URL(flow.redirectUri);
      current.search = callbackUrl.search;
      const tokens = await client.authorizationCodeGrant(config, current, { pkceCodeVerifier: flow.verifier, expectedState: state, expectedNonce: flow.nonce, idTokenExpected: true });
      const claims = tokens.claims();
      if (!claims) return { ok: false, reason: 'oidc_no_id_token' };
      let { email, email_verified: verified } = claims as { email?: unknown; email_verified?: unknown };
      // Many providers put `email` in the ID token only when asked by claim; the userinfo endpoint always has it.
      if (email === undefined) ({ email, email_verified: verified } = await client.fetchUserInfo(config, tokens.access_token, claims.sub));
      if (typeof email !== 'string' || email === '') return { ok: false, reason: 'oidc_no_email' };
      if (verified === false) return { ok: false, reason: 'oidc_email_unverified' };
      return { ok: true, email: normalizeAddress(email) };
    } catch (err) {
      this.logger.warn({ component: 'console', err: (err as Error).message }, 'OpenID Connect sign-in failed');
      return { ok: false, reason: 'oidc_exchange_failed' };
    }
  }

  private configuration(): Promise<client.Configuration> {
    this.discovered ??= (async () => {
      const issuer = new URL(this.settings.issuer);
      // Plain HTTP only to an identity provider on this machine (development, tests).
      const loopback = ['localhost', '127.0.0.1', '[::1]'].includes(issuer.hostname);
      const options = issuer.protocol === 'http:' && loopback ? { execute: [client.allowInsecureRequests] } : undefined;
      return client.discovery(issuer, this.settings.clientId, this.settings.clientSecret, undefined, options);
    })();
    this.discovered.catch(() => {
      this.discovered = null;
    });
    return this.discovered;
  }
}

function sha256(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}
