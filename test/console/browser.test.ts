import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import AxeBuilder from '@axe-core/playwright';
import { ImapFlow } from 'imapflow';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueKey } from '../../src/services/keys.js';
import { dovecotAvailable, startDovecot, type RunningDovecot } from '../helpers/dovecot.js';
import { freePort } from '../helpers/free-port.js';
import { startKeygate, type SingleKeygate } from '../helpers/keygate.js';
import { chromiumAvailable, decodeQrDataUrl, launchChromium, startIdp, type RunningIdp } from './helpers.js';

/** Screenshots of every page, desktop and phone size (git-ignored; one of each is copied to docs/ for the README). */
export const SCREENSHOT_DIR = join(process.cwd(), 'test-results', 'console');
const DESKTOP = { width: 1280, height: 860 };
const PHONE = { width: 390, height: 844 };
const FAILURE_DELAY_MS = 400;
const REFUSED = 'Sign-in failed: check what you typed and try again.';

/**
 * The web console in a real Chromium against a real Keygate (its own IMAP
 * listener, the proxy backend to a real Dovecot) and a real OpenID Connect
 * provider: every way to sign in, keys made and revoked on the page and used
 * over IMAP, the QR code of a phone's setup link, sign-out, cookie flags,
 * cross-site requests, hostile names, and axe on every page.
 */
describe.skipIf(!chromiumAvailable() || !dovecotAvailable())('web console in Chromium', { timeout: 90_000 }, () => {
  let dc: RunningDovecot;
  let idp: RunningIdp;
  let server: SingleKeygate;
  let browser: Browser;
  let base: string;
  let adminKey: string;
  const logText = (): string => JSON.stringify(server.logs);
  /** Every key, token and sign-in link the pages showed: none may reach the log, in any encoding. */
  const secrets: string[] = [];

  beforeAll(async () => {
    mkdirSync(SCREENSHOT_DIR, { recursive: true });
    dc = await startDovecot();
    const httpPort = await freePort();
    base = `http://127.0.0.1:${httpPort}`;
    idp = await startIdp(`${base}/api/console/oidc/callback`);
    const flags = {
      'http.port': httpPort,
      'auth.failureDelay': `${FAILURE_DELAY_MS}ms`,
      'rateLimit.credentials.max': 10_000, // every page here comes from 127.0.0.1
      'upstream.loginTimeout': '15s', // Dovecot's auth penalty after the wrong passwords below
      'touchInterval': '100ms',
      'log.level': 'trace', // the secrets check at the end reads every level
      'console.oidc.issuer': idp.issuer,
      'console.oidc.clientId': idp.clientId,
      'console.oidc.clientSecret': idp.clientSecret,
    };
    server = await startKeygate({ dovecot: dc, http: true, flags });
    adminKey = (await issueKey(server.store, 'operator', { name: 'console admin', scopes: ['*'] })).key;
    secrets.push(adminKey);
    await server.store.ensureAccount('bob@example.com'); // OpenID Connect signs in existing accounts only
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await idp?.stop();
    await dc?.stop();
  });

  const newPage = async (viewport = DESKTOP): Promise<{ context: BrowserContext; page: Page }> => {
    const context = await browser.newContext({ viewport, baseURL: base });
    const page = await context.newPage();
    // Generous: a page wait that runs out on a loaded 2-core machine says nothing about the console.
    page.setDefaultTimeout(30_000);
    return { context, page };
  };
  const signInWithPassword = async (page: Page, address: string, password: string): Promise<void> => {
    await page.goto('/');
    await page.getByLabel('Email address').fill(address);
    await page.getByLabel('Password', { exact: true }).fill(password);
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  };
  const signInAsAdmin = async (page: Page): Promise<void> => {
    await page.goto('/');
    await page.getByLabel('Administrator key').fill(adminKey);
    await page.getByRole('button', { name: 'Sign in as administrator' }).click();
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
  };
  /** No serious or critical axe violation; then a screenshot at desktop and phone size. */
  const checkPage = async (page: Page, name: string): Promise<void> => {
    const results = await new AxeBuilder({ page }).analyze();
    const bad = results.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    expect(bad.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`), name).toEqual([]);
    const size = page.viewportSize();
    for (const [label, viewport] of [['desktop', DESKTOP], ['phone', PHONE]] as const) {
      await page.setViewportSize(viewport);
      await page.screenshot({ path: join(SCREENSHOT_DIR, `${name}-${label}.png`), fullPage: true });
    }
    if (size) await page.setViewportSize(size);
  };
  const sessionCookie = async (context: BrowserContext) => (await context.cookies()).find((c) => c.name === 'kg_session');

  it('serves the sign-in page with a strict CSP and security headers; /ui redirects there', async () => {
    const res = await fetch(`${base}/`);
    expect(res.status).toBe(200);
    const csp = res.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).not.toContain('unsafe-inline');
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('x-frame-options')).toBe('SAMEORIGIN');
    const html = await res.text();
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/); // no inline script
    expect(html).toMatch(/src="\/assets\/index-[\w-]{8}\.js"/); // hashed names
    const ui = await fetch(`${base}/ui`, { redirect: 'manual' });
    expect([301, 302]).toContain(ui.status);
    expect(ui.headers.get('location')).toBe('/');

    const { context, page } = await newPage();
    await page.goto('/ui');
    await page.getByRole('heading', { name: 'Sign in to Keygate' }).waitFor();
    expect(page.url()).toBe(`${base}/#/sign-in`);
    await checkPage(page, 'sign-in');
    await context.close();
  });

  it('an account holder signs in with the mailbox password; the cookie is HttpOnly and SameSite=Strict', async () => {
    const { context, page } = await newPage();
    await signInWithPassword(page, 'alice@example.com', 'alice-upstream-pw');
    await page.getByRole('heading', { name: 'My keys' }).waitFor();
    const cookie = await sessionCookie(context);
    expect(cookie).toMatchObject({ httpOnly: true, sameSite: 'Strict', secure: false, path: '/' });
    expect(await page.evaluate('document.cookie')).toBe(''); // out of reach of scripts
    expect(logText()).not.toContain('alice-upstream-pw');
    await checkPage(page, 'my-keys');
    await context.close();
  });

  it('creates a Thunderbird key, logs in to IMAP with it, shows where it was used, and revoking it on the page ends the IMAP session', async () => {
    const { context, page } = await newPage();
    await signInWithPassword(page, 'alice@example.com', 'alice-upstream-pw');
    await page.getByRole('button', { name: 'Create a key' }).click();
    const dialog = page.getByRole('dialog', { name: 'Create a key' });
    await dialog.getByLabel('Name').fill('Thunderbird');
    await expect(dialog.getByLabel('Read mail (IMAP)').isChecked()).resolves.toBe(true);
    await dialog.getByRole('button', { name: 'Create key' }).click();
    const shown = page.getByRole('dialog', { name: 'Your new key' });
    const key = await shown.getByTestId('new-key').inputValue();
    secrets.push(key);
    expect(key).toMatch(/^kg_[A-Za-z0-9]{40,}$/);
    expect(await shown.getByText('User name:').count()).toBe(1);
    await checkPage(page, 'key-created');
    await shown.getByRole('button', { name: 'Done' }).click();

    const imap = new ImapFlow({ host: '127.0.0.1', port: server.port('imap'), secure: false, tls: { rejectUnauthorized: false }, auth: { user: 'alice@example.com', pass: key }, logger: false });
    await imap.connect();
    const lock = await imap.getMailboxLock('INBOX');
    lock.release();
    const closed = new Promise<void>((r) => imap.once('close', () => r()));

    // Last use: when, from where, over which protocol.
    const row = page.locator('tr', { has: page.getByText('Thunderbird', { exact: true }) });
    await expect.poll(async () => {
      await page.reload();
      return row.locator('.last-used').textContent();
    }, { timeout: 10_000 }).toMatch(/just now from 127\.0\.0\.1 over IMAP/);

    await row.getByRole('button', { name: 'Revoke key Thunderbird' }).click();
    await page.getByRole('dialog', { name: 'Revoke this key?' }).getByRole('button', { name: 'Revoke key' }).click();
    await page.getByText('Revoked “Thunderbird”.').first().waitFor();
    await Promise.race([closed, new Promise((_, reject) => setTimeout(() => reject(new Error('IMAP session still open 5 s after revocation')), 5000))]);
    // The list reloads after the notice is shown: wait for the row to go rather than race the reload.
    await expect.poll(() => row.count(), { timeout: 5000 }).toBe(0);
    await context.close();
  });

  it('adds an iPhone: the QR code holds the one-time setup link, which serves the profile once, then 410', async () => {
    const { context, page } = await newPage();
    await signInWithPassword(page, 'alice@example.com', 'alice-upstream-pw');
    await page.getByRole('button', { name: 'Add a phone or tablet' }).click();
    const dialog = page.getByRole('dialog', { name: 'Add a phone or tablet' });
    await dialog.getByLabel('Device name').fill('iPhone 15');
    await dialog.getByLabel('Kind of device').selectOption('ios');
    await dialog.getByRole('button', { name: 'Add device' }).click();
    const setup = page.getByRole('dialog', { name: 'Set up iPhone 15' });
    const src = await setup.getByRole('img', { name: 'QR code of the one-time setup link' }).getAttribute('src');
    const url = decodeQrDataUrl(src!);
    expect(url).toMatch(new RegExp(`^${base}/`));
    expect(await setup.getByRole('link', { name: 'Download the profile (.mobileconfig)' }).getAttribute('href')).toBe(url);
    await checkPage(page, 'add-iphone');

    const first = await fetch(url!);
    expect(first.status).toBe(200);
    expect(first.headers.get('content-type')).toContain('application/x-apple-aspen-config');
    expect((await first.arrayBuffer()).byteLength).toBeGreaterThan(500);
    expect((await fetch(url!)).status).toBe(410);

    await setup.getByRole('button', { name: 'Done' }).click();
    const row = page.locator('tr', { has: page.getByText('iPhone 15', { exact: true }) });
    await expect(row.getByText('iPhone or iPad').count()).resolves.toBe(1);
    await context.close();
  });

  it('shows API errors in plain words beside the field, and hostile names inert', async () => {
    const { context, page } = await newPage();
    await signInWithPassword(page, 'alice@example.com', 'alice-upstream-pw');
    await page.getByRole('button', { name: 'Create a key' }).click();
    const dialog = page.getByRole('dialog', { name: 'Create a key' });
    // A right-to-left override would make "exe.png" read as "gnp.exe": the API refuses it (issue 11 §8).
    const hostile = '<img src=x onerror="window.pwned=1">gnp.exe';
    await dialog.getByLabel('Name').fill(`${hostile}\u202E`);
    await dialog.getByLabel('Only from these addresses (optional)').fill('not-an-ip');
    await dialog.getByRole('button', { name: 'Create key' }).click();
    const nameField = dialog.locator('.field', { has: page.getByLabel('Name', { exact: true }) });
    await expect(nameField.locator('.error').textContent()).resolves.toMatch(/control characters/);
    await dialog.getByLabel('Name', { exact: true }).fill(hostile);
    await dialog.getByRole('button', { name: 'Create key' }).click();
    const ipField = dialog.locator('.field', { has: page.getByLabel('Only from these addresses (optional)') });
    await expect(ipField.locator('.error').textContent()).resolves.toBe('Entry 1 is not an IP address or CIDR range.');
    expect(await dialog.textContent()).not.toContain('{');
    await dialog.getByLabel('Only from these addresses (optional)').fill('127.0.0.0/8');
    await dialog.getByRole('button', { name: 'Create key' }).click();
    await page.getByRole('dialog', { name: 'Your new key' }).getByRole('button', { name: 'Done' }).click();
    const cell = page.locator('tbody th .name').filter({ hasText: 'gnp.exe' });
    expect(await cell.textContent()).toBe(hostile);
    expect(await page.locator('tbody img').count()).toBe(0);
    expect(await page.evaluate('window.pwned')).toBeUndefined();
    await context.close();
  });

  it('creates a key with sending limits from the form; a limit out of range is marked before anything is sent', async () => {
    const { context, page } = await newPage();
    await signInWithPassword(page, 'alice@example.com', 'alice-upstream-pw');
    await page.getByRole('button', { name: 'Create a key' }).click();
    const dialog = page.getByRole('dialog', { name: 'Create a key' });
    await dialog.getByLabel('Name', { exact: true }).fill('Newsletter');
    await dialog.getByLabel('Messages per hour').fill('0');
    await dialog.getByRole('button', { name: 'Create key' }).click();
    await expect(dialog.locator('fieldset.invalid .error').textContent()).resolves.toBe('Each limit is a whole number from 1 to 1,000,000.');
    await dialog.getByLabel('Messages per hour').fill('10');
    await dialog.getByLabel('Recipients per day').fill('500');
    await dialog.getByRole('button', { name: 'Create key' }).click();
    await page.getByRole('dialog', { name: 'Your new key' }).getByRole('button', { name: 'Done' }).click();
    const row = page.locator('tbody tr', { has: page.locator('th .name', { hasText: 'Newsletter' }) });
    await expect(row.locator('td[data-label="State"]').textContent()).resolves.toBe('Active; at most 10 messages/hour, 500 recipients/day');
    await context.close();
  });

  it('signing out ends the session for the API too; cross-site requests are refused', async () => {
    const { context, page } = await newPage();
    await signInWithPassword(page, 'alice@example.com', 'alice-upstream-pw');
    await page.getByRole('heading', { name: 'My keys' }).waitFor();
    const cookie = (await sessionCookie(context))!;
    const headers = { cookie: `kg_session=${cookie.value}` };
    expect((await fetch(`${base}/api/smtp-credentials`, { headers })).status).toBe(200);

    // The session works in place of a key, but a state-changing request needs the CSRF token and our own origin.
    const body = JSON.stringify({ name: 'forged', scopes: ['imap'] });
    const post = (extra: Record<string, string>) => fetch(`${base}/api/smtp-credentials`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json', ...extra }, body });
    expect((await post({})).status).toBe(403);
    const { csrfToken } = (await (await fetch(`${base}/api/console/session`, { headers })).json()) as { csrfToken: string };
    expect((await post({ 'x-csrf-token': csrfToken, origin: 'http://evil.example' })).status).toBe(403);

    // A page on another site posting to the API in this browser: the Strict cookie stays home.
    const evil: Server = createServer((_req, res) => {
      res.setHeader('content-type', 'text/html');
      res.end(`<form method="post" action="${base}/api/smtp-credentials" enctype="text/plain"><input name='{"name":"x","scopes":["imap"],"a":"' value='"}'></form><script>document.forms[0].submit()</script>`);
    });
    await new Promise<void>((r) => evil.listen(0, '127.0.0.1', r));
    const evilPage = await context.newPage();
    const response = evilPage.waitForResponse((r) => r.url() === `${base}/api/smtp-credentials`);
    await evilPage.goto(`http://localhost:${(evil.address() as AddressInfo).port}/`);
    const forged = await response;
    expect(forged.status()).toBeGreaterThanOrEqual(400);
    expect((await forged.request().allHeaders()).cookie).toBeUndefined();
    await evilPage.close();
    await new Promise((r) => evil.close(r));
    const listed = (await (await fetch(`${base}/api/smtp-credentials`, { headers })).json()) as { keys: { name: string }[] };
    expect(listed.keys.map((k) => k.name)).not.toContain('forged');
    expect(listed.keys.map((k) => k.name)).not.toContain('x');

    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in to Keygate' }).waitFor();
    expect(await sessionCookie(context)).toBeUndefined();
    expect((await fetch(`${base}/api/smtp-credentials`, { headers })).status).toBe(401);
    await context.close();
  });

  it('an administrator manages any account: creates one, makes a one-time sign-in link that works once', async () => {
    const { context, page } = await newPage();
    await signInAsAdmin(page);
    await checkPage(page, 'admin-overview');
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Accounts' }).click();
    await page.getByRole('button', { name: 'Create an account' }).click();
    const dialog = page.getByRole('dialog', { name: 'Create an account' });
    await dialog.getByLabel('Address').fill('carol@example.com');
    await dialog.getByLabel('Display name (optional)').fill('Carol');
    await dialog.getByRole('button', { name: 'Create account' }).click();
    await page.getByRole('heading', { name: 'carol@example.com' }).waitFor();

    // Her keys, as she would see them: create one for Thunderbird.
    await page.getByRole('button', { name: 'Create a key' }).click();
    const create = page.getByRole('dialog', { name: 'Create a key' });
    await create.getByLabel('Name').fill('Thunderbird');
    await create.getByRole('button', { name: 'Create key' }).click();
    const first = await page.getByRole('dialog', { name: 'Your new key' }).getByTestId('new-key').inputValue();
    secrets.push(first);
    expect(first).toMatch(/^kg_/);
    await page.getByRole('dialog', { name: 'Your new key' }).getByRole('button', { name: 'Done' }).click();
    // Replace (rotate): a new key, shown once; the old one stops working.
    await page.getByRole('button', { name: 'Replace key Thunderbird' }).click();
    await page.getByRole('dialog', { name: 'Replace this key?' }).getByRole('button', { name: 'Replace key' }).click();
    const replacement = await page.getByRole('dialog', { name: 'Your replacement key' }).getByTestId('new-key').inputValue();
    secrets.push(replacement);
    expect(replacement).toMatch(/^kg_/);
    expect(replacement).not.toBe(first);
    // Carol has no mailbox upstream: ask Keygate's own login check rather than a whole IMAP session.
    const imapLogin = async (key: string): Promise<boolean> => (await server.authenticator.logIn({ protocol: 'imap', username: 'carol@example.com', key, ip: '127.0.0.1' })).kind === 'loggedIn';
    expect(await imapLogin(first)).toBe(false);
    expect(await imapLogin(replacement)).toBe(true);
    await page.getByRole('dialog', { name: 'Your replacement key' }).getByRole('button', { name: 'Done' }).click();
    await page.getByRole('button', { name: 'Make a sign-in link' }).click();
    const link = await page.getByTestId('sign-in-link').inputValue();
    secrets.push(link.slice(link.lastIndexOf('/') + 1));
    expect(link).toMatch(new RegExp(`^${base}/#/link/[\\w-]{43}$`));
    await checkPage(page, 'admin-account');

    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Accounts' }).click();
    await page.getByLabel('Search accounts').fill('carol');
    // The list loads after the page: wait for it rather than count whatever table is on screen.
    await expect.poll(() => page.locator('tbody tr').count()).toBe(1);
    await expect(page.locator('tbody tr').first().textContent()).resolves.toContain('carol@example.com');
    await checkPage(page, 'admin-accounts');

    const carol = await newPage(PHONE);
    await carol.page.goto(link);
    await carol.page.getByRole('heading', { name: 'Sign in with a link' }).waitFor();
    await checkPage(carol.page, 'link-sign-in');
    await carol.page.getByRole('button', { name: 'Sign in' }).click();
    await carol.page.getByRole('heading', { name: 'My keys' }).waitFor();
    // The heading comes before the list has loaded: wait for the list, then count.
    await expect.poll(() => carol.page.getByText('Thunderbird', { exact: true }).count(), { timeout: 5000 }).toBe(1);
    await carol.context.close();

    const again = await newPage();
    await again.page.goto(link);
    await again.page.getByRole('button', { name: 'Sign in' }).click();
    await again.page.getByText(/may have been used already/).waitFor();
    await again.context.close();
    await context.close();
  });

  it('access tokens: create (shown once), export, revoke', async () => {
    const { context, page } = await newPage();
    await signInAsAdmin(page);
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Access tokens' }).click();
    await page.getByRole('button', { name: 'Create new' }).click();
    const dialog = page.getByRole('dialog', { name: 'Create an access token' });
    await dialog.getByLabel('Description').fill('Prometheus');
    await dialog.getByRole('button', { name: 'Create token' }).click();
    const token = await page.getByTestId('new-token').inputValue();
    secrets.push(token);
    const metrics = await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${token}` } });
    expect(metrics.status).toBe(200);
    await page.getByRole('dialog', { name: 'Your new access token' }).getByRole('button', { name: 'Done' }).click();
    await page.getByRole('button', { name: 'Export token Prometheus' }).click();
    expect(await page.getByRole('dialog', { name: 'Export token' }).getByRole('textbox', { name: 'Export blob' }).inputValue()).not.toContain(token);
    await page.getByRole('dialog', { name: 'Export token' }).getByRole('button', { name: 'Done' }).click();
    await checkPage(page, 'admin-tokens');
    await page.getByRole('button', { name: 'Revoke token Prometheus' }).click();
    await page.getByRole('dialog', { name: 'Revoke this token?' }).getByRole('button', { name: 'Revoke token' }).click();
    await expect.poll(() => page.locator('tr', { hasText: 'Prometheus' }).locator('td[data-label="State"]').textContent()).toBe('Revoked');
    expect((await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(401);
    await context.close();
  });

  it('access tokens come a page at a time: 100, then the rest on "Show more tokens", none twice', async () => {
    for (let i = 0; i < 120; i++) await issueKey(server.store, 'operator', { name: `paged ${i}`, scopes: ['metrics'] });
    const { context, page } = await newPage();
    await signInAsAdmin(page);
    await page.goto('/#/admin/tokens');
    await page.getByRole('heading', { name: 'Access tokens' }).waitFor();
    const names = () => page.locator('tbody tr th[data-label="Description"]').allTextContents();
    const more = page.getByRole('button', { name: 'Show more tokens' });
    await more.waitFor();
    // Newest first: the first page is the last 100 made above.
    expect(await names()).toEqual(Array.from({ length: 100 }, (_, i) => `paged ${119 - i}`));
    while (await more.isVisible()) {
      const before = (await names()).length;
      await more.click();
      await expect.poll(async () => (await names()).length).toBeGreaterThan(before);
    }
    const all = await names();
    const paged = all.filter((n) => n.startsWith('paged '));
    expect(new Set(paged).size).toBe(120);
    // Every token once: as many rows as the API lists (the tests before made some with the same names).
    let total = 0;
    let cursor: string | null = null;
    do {
      const query: string = cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`;
      const body = (await (await fetch(`${base}/api/tokens?limit=1000${query}`, { headers: { authorization: `Bearer ${adminKey}` } })).json()) as { tokens: unknown[]; nextCursor: string | null };
      total += body.tokens.length;
      cursor = body.nextCursor;
    } while (cursor !== null);
    expect(all.length).toBe(total);
    expect(total).toBeGreaterThan(120);
    await context.close();
  });

  it('a page appears only at its own address: none under the sign-in address while the redirect is pending', async () => {
    const { context, page } = await newPage();
    // Every h1 the page shows, with the address it was shown at, recorded in the page as the DOM changes.
    // (A string: this file is typed for Node, without the DOM's names.)
    await page.addInitScript(`
      window.seenHeadings = [];
      new MutationObserver(() => {
        const h1 = document.querySelector('h1')?.textContent ?? '';
        const entry = h1 + ' @ ' + location.hash;
        if (h1 && window.seenHeadings.at(-1) !== entry) window.seenHeadings.push(entry);
      }).observe(document, { childList: true, subtree: true, characterData: true });
    `);
    await page.goto('/#/admin/tokens');
    await page.getByRole('heading', { name: 'Sign in to Keygate' }).waitFor();
    await page.getByLabel('Administrator key').fill(adminKey);
    await page.getByRole('button', { name: 'Sign in as administrator' }).click();
    await page.getByRole('heading', { name: 'Access tokens' }).waitFor();
    const seen = (await page.evaluate('window.seenHeadings')) as string[];
    // Before the fix, Overview was drawn at #/sign-in for a frame; a test that navigated then was sent back to it.
    expect(seen).toEqual(['Sign in to Keygate @ #/sign-in?next=%2Fadmin%2Ftokens', 'Access tokens @ #/admin/tokens']);
    await context.close();
  });

  it('a hostile or looping `next` after sign-in lands on the Overview inside the console', async () => {
    const { context, page } = await newPage();
    await signInAsAdmin(page);
    expect(page.url()).toBe(`${base}/#/admin`);
    const hostile = ['//evil.example/x', 'https://evil.example/', 'javascript:alert(1)', '/sign-in?next=/sign-in', '/link/abc', '/', '/admin\\..\\x', `/${'a'.repeat(20_000)}x?`];
    for (const next of hostile) {
      await page.goto(`/#/sign-in?next=${encodeURIComponent(next)}`);
      await page.waitForURL(`${base}/#/admin`);
      await page.getByRole('heading', { name: 'Overview' }).waitFor();
      // Settled: no further redirect (a loop would keep changing the address).
      await new Promise((r) => setTimeout(r, 200));
      expect(page.url(), next.slice(0, 40)).toBe(`${base}/#/admin`);
    }
    await context.close();
  });

  it('an expired session returns to sign-in, and back to the page after it', async () => {
    const { context, page } = await newPage();
    await signInAsAdmin(page);
    await page.goto('/#/admin/tokens');
    await page.getByRole('heading', { name: 'Access tokens' }).waitFor();
    // The list's own request must be answered first: ended while it is in flight, the page would leave for sign-in before the click.
    await page.getByRole('table', { name: 'Access tokens' }).waitFor();
    // The session ends on the server (as at its idle timeout); the page finds out at its next request.
    const cookie = (await sessionCookie(context))!;
    await server.store.deleteValue(`console-session:${createHash('sha256').update(cookie.value).digest('hex')}`);
    await page.getByRole('button', { name: 'Create new' }).click();
    await page.getByRole('dialog', { name: 'Create an access token' }).getByLabel('Description').fill('after expiry');
    await page.getByRole('dialog', { name: 'Create an access token' }).getByRole('button', { name: 'Create token' }).click();
    await page.getByRole('heading', { name: 'Sign in to Keygate' }).waitFor();
    expect(page.url()).toContain('next=%2Fadmin%2Ftokens');
    await page.getByLabel('Administrator key').fill(adminKey);
    await page.getByRole('button', { name: 'Sign in as administrator' }).click();
    await page.getByRole('heading', { name: 'Access tokens' }).waitFor();
    expect(page.url()).toBe(`${base}/#/admin/tokens`);
    await context.close();
  });

  it('signs in through the organisation’s OpenID Connect provider; the email claim names the account', async () => {
    const { context, page } = await newPage();
    await page.goto('/');
    await page.getByRole('link', { name: 'Sign in with your organisation' }).click();
    await page.waitForURL((u) => u.href.startsWith(idp.issuer));
    await page.locator('input[name="login"]').fill('bob@example.com');
    await page.locator('input[name="password"]').fill('anything');
    await page.locator('button[type="submit"]').click();
    // The provider's consent page, when it asks.
    const consent = page.locator('button[autofocus], button[type="submit"]');
    await page.waitForURL((u) => u.href.startsWith(base) || u.pathname.includes('/interaction/'));
    if (page.url().startsWith(idp.issuer)) await consent.first().click();
    await page.getByRole('heading', { name: 'My keys' }).waitFor();
    expect(await page.locator('.who-name').textContent()).toBe('bob@example.com');
    await context.close();
  });
  it('the README’s screenshots: a Thunderbird key used over IMAP and an iPhone', async () => {
    const { context, page } = await newPage();
    await signInWithPassword(page, 'bob@example.com', 'bob-upstream-pw');
    await page.getByRole('button', { name: 'Create a key' }).click();
    await page.getByRole('dialog', { name: 'Create a key' }).getByLabel('Name').fill('Thunderbird');
    await page.getByRole('dialog', { name: 'Create a key' }).getByRole('button', { name: 'Create key' }).click();
    const key = await page.getByTestId('new-key').inputValue();
    secrets.push(key);
    await page.getByRole('dialog', { name: 'Your new key' }).getByRole('button', { name: 'Done' }).click();
    const imap = new ImapFlow({ host: '127.0.0.1', port: server.port('imap'), secure: false, tls: { rejectUnauthorized: false }, auth: { user: 'bob@example.com', pass: key }, logger: false });
    await imap.connect();
    await imap.logout();
    await page.getByRole('button', { name: 'Add a phone or tablet' }).click();
    await page.getByRole('dialog', { name: 'Add a phone or tablet' }).getByLabel('Device name').fill('iPhone 15');
    await page.getByRole('dialog', { name: 'Add a phone or tablet' }).getByRole('button', { name: 'Add device' }).click();
    await page.getByRole('dialog', { name: 'Set up iPhone 15' }).getByRole('button', { name: 'Done' }).click();
    const row = page.locator('tr', { has: page.getByText('Thunderbird', { exact: true }) });
    await expect.poll(async () => {
      await page.reload();
      return row.locator('.last-used').textContent();
    }, { timeout: 10_000 }).toContain('over IMAP');
    await checkPage(page, 'readme-my-keys');
    await context.close();
  });

  // Last: Dovecot slows down logins from an address after a failure (its auth penalty), and every check comes from Keygate's.
  it('a wrong password, an unknown address and a wrong key all get one answer, after the failure delay', async () => {
    const { context, page } = await newPage();
    const answers: string[] = [];
    for (const [address, password] of [['alice@example.com', 'not-her-password'], ['nobody@example.com', 'whatever']] as const) {
      const started = Date.now();
      await signInWithPassword(page, address, password);
      const alert = page.locator('#pw-h ~ form .form-error');
      await alert.waitFor();
      expect(Date.now() - started).toBeGreaterThanOrEqual(FAILURE_DELAY_MS);
      answers.push((await alert.textContent()) ?? '');
    }
    await page.getByLabel('Administrator key').fill('kg_thisIsNotAKeyAtAll');
    await page.getByRole('button', { name: 'Sign in as administrator' }).click();
    const keyAlert = page.locator('#key-h ~ form .form-error');
    await keyAlert.waitFor();
    answers.push((await keyAlert.textContent()) ?? '');
    expect(answers).toEqual([REFUSED, REFUSED, REFUSED]);
    // Audited like mail logins, reason for operators only.
    expect(logText()).toMatch(/"protocol":"console-password".*"reason":"wrong_password"/);
    expect(logText()).not.toContain('not-her-password');
    await context.close();
  });

  it('no key, token, sign-in link or password used on these pages is in the log at any level, in any encoding', () => {
    const text = logText();
    expect(server.logs.some((l) => l.level === 10)).toBe(true); // trace lines were captured
    expect(secrets.length).toBeGreaterThanOrEqual(7);
    for (const secret of [...secrets, 'alice-upstream-pw', 'not-her-password']) {
      for (const form of [secret, Buffer.from(secret).toString('base64'), encodeURIComponent(secret), secret.slice(3, 23)]) {
        expect(text.includes(form), `${secret.slice(0, 6)}… as ${form === secret ? 'itself' : form.slice(0, 6)}…`).toBe(false);
      }
    }
  });
});
