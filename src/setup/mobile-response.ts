import { Type, type Static } from 'typebox';
import type { ConnectionInfo } from './connection.js';
import {
  buildMobileconfig,
  buildMobileconfigPlist,
  checkSigner,
  MOBILECONFIG_CONTENT_TYPE,
  MobileconfigError,
  mobileconfigFilename,
  type ProfileSigner,
} from './mobileconfig.js';
import { qrPngDataUrl, qrSvg } from './qr.js';
import type { SetupLinks } from './setup-links.js';

/**
 * What `POST /api/smtp-credentials/mobile` adds to the plain key response:
 * the signed Apple profile itself, or a one-time setup link with its QR code.
 *
 * Order of calls in the route:
 *   1. `const mode = preflightMobileSetup({...})` — before the key is made, so
 *      a server that cannot build a profile refuses without leaving a key behind;
 *   2. create the key (createMobileCredential);
 *   3. `const out = await buildMobileResponse({...})` and send it.
 */

/** Body fields to spread into the mobile route's body schema (which refuses unknown fields). */
export const MobileSetupFields = {
  format: Type.Optional(
    Type.Enum(['json', 'mobileconfig'], {
      description: '`mobileconfig`: answer with the signed Apple configuration profile instead of JSON (as `Accept: application/x-apple-aspen-config` does)',
    }),
  ),
  setupLink: Type.Optional(
    Type.Boolean({ description: 'Also return a one-time link (`setupUrl`) that serves the profile once, for a short time, and its QR code' }),
  ),
  qr: Type.Optional(Type.Boolean({ description: 'With `setupLink`: include `qrSvg` and `qrPngDataUrl` (default true)' })),
};

/** JSON fields added to the 201 body when a setup link was asked for (spread into the 201 schema). */
export const MobileSetupAdditions = Type.Object({
  setupUrl: Type.Optional(Type.String({ description: 'Open on the device (or scan the QR code) to install the profile; works once' })),
  setupExpiresAt: Type.Optional(Type.String({ format: 'date-time' })),
  qrSvg: Type.Optional(Type.String({ description: 'QR code of setupUrl, SVG document' })),
  qrPngDataUrl: Type.Optional(Type.String({ description: 'QR code of setupUrl, data:image/png;base64 URL' })),
});
export type MobileSetupAdditionsValue = Static<typeof MobileSetupAdditions>;

/** What the client asked for: the body's `format` / `setupLink` / `qr` and the `Accept` header. */
export interface MobileSetupRequest {
  format?: 'json' | 'mobileconfig';
  setupLink?: boolean;
  qr?: boolean;
  accept?: string | string[];
}

/**
 * `setupLink` when `setupLink: true` (the link delivers the profile, so it
 * wins over `format`); else `mobileconfig` for `format: "mobileconfig"`, or for
 * an `Accept` header that prefers `application/x-apple-aspen-config` over JSON
 * when `format` is absent; else `json`.
 */
export type MobileSetupMode = 'json' | 'mobileconfig' | 'setupLink';

export function mobileSetupMode(req: MobileSetupRequest): MobileSetupMode {
  if (req.setupLink === true) return 'setupLink';
  if (req.format === 'mobileconfig') return 'mobileconfig';
  if (req.format === 'json') return 'json';
  return prefersProfile(req.accept) ? 'mobileconfig' : 'json';
}

/** True when Accept names application/x-apple-aspen-config with a q at least that of JSON. */
function prefersProfile(accept: string | string[] | undefined): boolean {
  if (accept === undefined) return false;
  const q = (type: string): number => {
    let best = -1;
    for (const part of (Array.isArray(accept) ? accept.join(',') : accept).split(',')) {
      const [media, ...params] = part.split(';').map((s) => s.trim().toLowerCase());
      if (media !== type) continue;
      const qp = params.find((p) => p.startsWith('q='));
      const value = qp ? Number(qp.slice(2)) : 1;
      if (Number.isFinite(value)) best = Math.max(best, value);
    }
    return best;
  };
  const profile = q(MOBILECONFIG_CONTENT_TYPE);
  return profile > 0 && profile >= q('application/json');
}

export interface MobilePreflightInput {
  request: MobileSetupRequest;
  connectionInfo: ConnectionInfo;
  signer: ProfileSigner;
  links?: SetupLinks | null;
}

/**
 * Decides the mode and, when a profile will be needed, proves it can be built
 * and signed (servers advertised; signer readable, matching, RSA or EC)
 * before any key exists. Cheap: nothing is signed.
 * @throws MobileconfigError when IMAP/POP3 or SMTP is not advertised or the signer is unusable;
 *   Error when a setup link is asked for and no SetupLinks service was given.
 */
export function preflightMobileSetup(input: MobilePreflightInput): MobileSetupMode {
  const mode = mobileSetupMode(input.request);
  if (mode === 'json') return mode;
  if (mode === 'setupLink' && !input.links) throw new Error('setup links are not configured (pass a SetupLinks service)');
  buildMobileconfigPlist({ address: 'preflight@keygate.invalid', apiKey: 'preflight', connectionInfo: input.connectionInfo });
  checkSigner(input.signer);
  return mode;
}

export interface MobileResponseInput {
  /** The new key, as createMobileCredential returned it. */
  apiKey: string;
  /** The new key's record (its deviceId makes the profile replace that device's earlier one). */
  key: { id: string; deviceId: string | null };
  /** The account the key is bound to; `displayName` becomes the sender name in Mail. */
  account: { address: string; displayName?: string | null };
  connectionInfo: ConnectionInfo;
  signer: ProfileSigner;
  request: MobileSetupRequest;
  /** Required for setupLink. */
  links?: SetupLinks | null;
  /** Public origin the phone can reach, e.g. `https://keygate.example.com` (see `requestOrigin`). */
  origin: string;
  /** PayloadOrganization; default "Keygate". */
  organization?: string;
  now?: Date;
}

export type MobileResponse =
  /** Send `body` with `headers` (content type, disposition, no-store) and status 201 instead of JSON. */
  | { kind: 'profile'; headers: Record<string, string>; body: Buffer; filename: string }
  /** Send the usual JSON 201 body with `additions` spread in (empty for plain JSON). */
  | { kind: 'json'; additions: MobileSetupAdditionsValue };

/**
 * Builds the mobile route's answer for a key that has just been created.
 * @throws MobileconfigError (see preflightMobileSetup), SetupLinkCapacityError,
 *   or the setup-link backend's error when it is unreachable.
 */
export async function buildMobileResponse(input: MobileResponseInput): Promise<MobileResponse> {
  const mode = mobileSetupMode(input.request);
  if (mode === 'json') return { kind: 'json', additions: {} };

  const body = buildMobileconfig({
    address: input.account.address,
    apiKey: input.apiKey,
    connectionInfo: input.connectionInfo,
    displayName: input.account.displayName ?? null,
    deviceId: input.key.deviceId,
    signer: input.signer,
    ...(input.organization !== undefined && { organization: input.organization }),
    ...(input.now !== undefined && { now: input.now }),
  });
  const filename = mobileconfigFilename(input.account.address);

  if (mode === 'mobileconfig') {
    return { kind: 'profile', body, filename, headers: profileHeaders(filename) };
  }

  if (!input.links) throw new Error('setup links are not configured (pass a SetupLinks service)');
  const link = await input.links.create({ body, contentType: MOBILECONFIG_CONTENT_TYPE, filename });
  const setupUrl = `${input.origin.replace(/\/+$/, '')}${link.path}`;
  const additions: MobileSetupAdditionsValue = { setupUrl, setupExpiresAt: link.expiresAt };
  if (input.request.qr !== false) {
    const [svg, png] = await Promise.all([qrSvg(setupUrl), qrPngDataUrl(setupUrl)]);
    additions.qrSvg = svg;
    additions.qrPngDataUrl = png;
  }
  return { kind: 'json', additions };
}

/** Headers for a profile download: Apple's content type, an attachment name, never cached. */
export function profileHeaders(filename: string): Record<string, string> {
  return {
    'content-type': MOBILECONFIG_CONTENT_TYPE,
    'content-disposition': `attachment; filename="${filename.replace(/["\\]/g, '_')}"`,
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
  };
}

const HOST_RE = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

/**
 * The origin to put in setup links: `publicUrl` when configured, otherwise the
 * request's own scheme and Host (Fastify's `req.protocol` / `req.host`, which
 * follow X-Forwarded-Proto / -Host only when `http.trustProxy` is on); a Host
 * that is not a plain host name falls back to `fallbackHost` over https.
 */
export function requestOrigin(req: { protocol: string; host: string }, fallbackHost: string, publicUrl?: string): string {
  if (publicUrl) return publicUrl.replace(/\/+$/, '');
  const scheme = req.protocol === 'http' ? 'http' : 'https';
  return HOST_RE.test(req.host) ? `${scheme}://${req.host}` : `https://${fallbackHost}`;
}

export { MobileconfigError };
