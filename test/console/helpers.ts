import { existsSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import jsQRModule from 'jsqr';
import Provider from 'oidc-provider';
import { chromium, type Browser } from 'playwright-core';
import { PNG } from 'pngjs';

// jsqr is CommonJS with `export default` in its types: the function is the default of the default under Node ESM.
const jsQR = ((jsQRModule as unknown as { default?: typeof jsQRModule }).default ?? jsQRModule) as unknown as (data: Uint8ClampedArray, w: number, h: number) => { data: string } | null;

export const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

let warned = false;
/** True when Debian's chromium is installed; warns once (one line) otherwise. */
export function chromiumAvailable(): boolean {
  const ok = existsSync(CHROMIUM);
  if (!ok && !warned) {
    warned = true;
    console.warn(`${CHROMIUM} not found (apt chromium): skipping the console's browser tests`);
  }
  return ok;
}

export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
}

export interface RunningIdp {
  issuer: string;
  clientId: string;
  clientSecret: string;
  stop(): Promise<void>;
}

/**
 * A real OpenID Connect provider (`oidc-provider`) on loopback with its
 * development login pages: any login name with any password signs in as that
 * name, and the name is the `email` claim.
 */
export async function startIdp(redirectUri: string): Promise<RunningIdp> {
  let handler: ((req: IncomingMessage, res: ServerResponse) => void) | null = null;
  const server: Server = createServer((req, res) => handler?.(req, res));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const clientId = 'keygate-console';
  const clientSecret = 'idp-client-secret-for-tests-only';
  const provider = new Provider(issuer, {
    clients: [{ client_id: clientId, client_secret: clientSecret, redirect_uris: [redirectUri], response_types: ['code'], grant_types: ['authorization_code'] }],
    claims: { openid: ['sub'], email: ['email', 'email_verified'] },
    findAccount: (_ctx: unknown, id: string) => ({ accountId: id, claims: () => ({ sub: id, email: id, email_verified: true }) }),
    features: { devInteractions: { enabled: true } },
    cookies: { keys: ['idp-cookie-key-for-tests-only'] },
    ttl: { AccessToken: 600, AuthorizationCode: 60, IdToken: 600, Grant: 600, Interaction: 600, Session: 600 },
  } as never);
  // Quiet: its development-mode warnings are expected here.
  (provider as unknown as { on(e: string, f: () => void): void }).on('server_error', () => {});
  handler = provider.callback() as never;
  return {
    issuer,
    clientId,
    clientSecret,
    stop: () => new Promise((r) => server.close(() => r())),
  };
}

/** Reads the QR code in a `data:image/png;base64,…` URL. */
export function decodeQrDataUrl(dataUrl: string): string | null {
  const png = PNG.sync.read(Buffer.from(dataUrl.replace(/^data:image\/png;base64,/, ''), 'base64'));
  return jsQR(new Uint8ClampedArray(png.data.buffer, png.data.byteOffset, png.data.length), png.width, png.height)?.data ?? null;
}
