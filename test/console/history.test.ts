import AxeBuilder from '@axe-core/playwright';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startKeygate, type SingleKeygate } from '../helpers/keygate.js';
import { LineClient, plain } from '../helpers/line-client.js';
import { chromiumAvailable, launchChromium } from './helpers.js';

const ACCOUNT = 'eve@example.test';

/**
 * The login history in the console, in a real Chromium: an administrator
 * opens an account and sees its failed sign-ins, then one key's recent
 * sign-ins with the app that made them and the new-network mark.
 */
describe.skipIf(!chromiumAvailable())('login history in the web console', { timeout: 60_000 }, () => {
  let server: SingleKeygate;
  let browser: Browser;
  let adminKey: string;

  beforeAll(async () => {
    server = await startKeygate({ http: true, flags: { 'rateLimit.credentials.max': 10_000 } });
    adminKey = (await server.issue(null, ['*'])).key;
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });

  /** No serious or critical axe violation on the page as it is. */
  const accessible = async (page: Page, name: string): Promise<void> => {
    const results = await new AxeBuilder({ page }).analyze();
    const bad = results.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
    expect(bad.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`), name).toEqual([]);
  };

  const imapLogin = async (key: string, name: string): Promise<string> => {
    const c = await LineClient.connect(server.port('imap'));
    try {
      await c.line();
      await c.command('i', `ID ("name" "${name}" "version" "2.0")`);
      return await c.command('a', `AUTHENTICATE PLAIN ${plain(ACCOUNT, key)}`);
    } finally {
      c.end();
    }
  };

  it("shows an account's failed sign-ins and a key's recent sign-ins, with the app and the new network", async () => {
    const { key } = await server.issue(ACCOUNT, ['imap']);
    expect(await imapLogin(key, 'K-9 Mail')).toMatch(/^a OK/m);
    expect(await imapLogin(`${key.slice(0, -1)}${key.endsWith('A') ? 'B' : 'A'}`, 'Guesser')).toMatch(/^a NO/m);
    await server.history!.flush();

    const context = await browser.newContext({ baseURL: `http://127.0.0.1:${server.port('http')}` });
    const page = await context.newPage();
    // Generous: a page wait that runs out on a loaded 2-core machine says nothing about the console.
    page.setDefaultTimeout(30_000);
    await page.goto('/');
    await page.getByLabel('Administrator key').fill(adminKey);
    await page.getByRole('button', { name: 'Sign in as administrator' }).click();
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    await page.goto(`/#/admin/accounts/${encodeURIComponent(ACCOUNT)}`);

    const failed = page.getByRole('table', { name: 'Failed sign-ins' });
    await failed.waitFor();
    await expect.poll(() => failed.locator('tbody tr').count()).toBe(1);
    const row = failed.locator('tbody tr').first();
    expect(await row.textContent()).toMatch(/Refused — Not a key.*IMAP.*127\.0\.0\.1.*Guesser 2\.0/);
    await accessible(page, 'account with failed sign-ins');

    await page.getByRole('button', { name: 'History of key test' }).click();
    const dialog = page.getByRole('dialog', { name: 'Sign-ins with test' });
    const rows = dialog.locator('tbody tr');
    await expect.poll(() => rows.count()).toBe(1);
    expect(await rows.first().textContent()).toMatch(/Signed in.*IMAP.*127\.0\.0\.1 new network.*K-9 Mail 2\.0/);
    await accessible(page, 'key history dialog');
    expect(await page.content()).not.toContain(key);
    await context.close();
  });
});
