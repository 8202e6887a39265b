import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHarness, type Harness, type Keygate } from '../helpers/keygate.js';
import { LineClient, plain } from '../helpers/line-client.js';
import { waitFor } from '../helpers/wait.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

const SECRET = 'test-webhook-secret-0123456789';
const ACCOUNT = 'ann@example.test';

/** Fast retries and polling, so a down receiver is retried within the test's time. */
function flags(receiver: WebhookReceiver, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    'webhooks.endpoints': JSON.stringify([{ url: receiver.url, secret: SECRET }]),
    'webhooks.pollInterval': '50ms',
    'webhooks.backoff': '100ms',
    'webhooks.maxBackoff': '200ms',
    'webhooks.timeout': '2s',
    'events.failureThreshold': 3,
    ...extra,
  };
}

async function imapLogin(port: number, user: string, key: string, id?: { name: string; version: string }): Promise<string> {
  const c = await LineClient.connect(port);
  try {
    await c.line();
    if (id) await c.command('i1', `ID ("name" "${id.name}" "version" "${id.version}")`);
    return await c.command('a1', `AUTHENTICATE PLAIN ${plain(user, key)}`);
  } finally {
    c.end();
  }
}

describe('webhooks: events from real logins and API calls reach a real receiver, signed', () => {
  let h: Harness;
  let k: Keygate;
  const receiver = new WebhookReceiver(SECRET);
  let admin: string;

  beforeAll(async () => {
    await receiver.start();
    h = await createHarness();
    k = await h.start({ http: true, flags: flags(receiver) });
    admin = (await h.issue(null, ['*'])).key;
  });
  afterAll(async () => {
    await h?.close();
    await receiver.stop();
  });

  const api = (method: string, path: string, body?: unknown) =>
    fetch(`http://127.0.0.1:${k.port('http')}${path}`, {
      method,
      headers: { authorization: `Bearer ${admin}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });

  it('key.created, key.new_network, login.failures, key.rotated, key.revoked; the history shows the logins', async () => {
    const created = await api('POST', `/api/accounts/${ACCOUNT}/smtp-credentials`, { name: 'laptop', scopes: ['imap', 'smtp'] });
    expect(created.status).toBe(201);
    const { apiKey: key, id } = (await created.json()) as { apiKey: string; id: string };
    await waitFor(() => receiver.events('key.created').some((e) => e.keyId === id));

    const ok = await imapLogin(k.port('imap'), ACCOUNT, key, { name: 'Thunderbird', version: '128.1' });
    expect(ok, JSON.stringify(h.audits())).toMatch(/^a1 OK/m);
    const newNetwork = () => receiver.events('key.new_network').filter((e) => e.keyId === id);
    await waitFor(() => newNetwork().length === 1);
    // The administrator key's first API call was news too; this is the IMAP key's.
    expect(newNetwork()[0]).toMatchObject({ account: ACCOUNT, keyId: id, data: { ip: '127.0.0.1', network: '127.0.0.0/24', protocol: 'imap' } });
    // A second login from the same network is no news.
    expect(await imapLogin(k.port('imap'), ACCOUNT, key)).toMatch(/^a1 OK/m);

    for (let i = 0; i < 3; i++) expect(await imapLogin(k.port('imap'), ACCOUNT, `${key.slice(0, -4)}AAAA`)).toMatch(/^a1 NO/m);
    await waitFor(() => receiver.events('login.failures').length === 1);
    expect(receiver.events('login.failures')[0]).toMatchObject({ account: ACCOUNT, data: { count: 3 } });

    const rotated = await api('POST', `/api/accounts/${ACCOUNT}/smtp-credentials/${id}/rotate`);
    expect(rotated.status).toBe(200);
    const newId = ((await rotated.json()) as { id: string }).id;
    expect((await api('DELETE', `/api/accounts/${ACCOUNT}/smtp-credentials/${newId}`)).status).toBe(204);
    await waitFor(() => receiver.events('key.revoked').some((e) => e.keyId === newId));
    expect(receiver.events('key.rotated')).toMatchObject([{ keyId: id, data: { replacedBy: newId } }]);
    expect(newNetwork()).toHaveLength(1);

    // Every delivery signed, with its type and delivery id in headers; no key anywhere in a body.
    expect(receiver.received.every((r) => r.signatureValid)).toBe(true);
    expect(receiver.received.every((r) => r.headers['keygate-event'] === r.event.type && String(r.headers['keygate-delivery']).startsWith(r.event.id))).toBe(true);
    expect(JSON.stringify(receiver.received.map((r) => r.event))).not.toContain(key);

    await k.history!.flush();
    const res = await api('GET', `/api/accounts/${ACCOUNT}/events?protocol=x`);
    expect(res.status).toBe(400); // unknown filters are refused, not ignored
    const page = (await (await api('GET', `/api/accounts/${ACCOUNT}/events`)).json()) as { events: Record<string, unknown>[] };
    const imap = page.events.filter((e) => e.protocol === 'imap');
    expect(imap.map((e) => e.result)).toEqual(['failure', 'failure', 'failure', 'success', 'success']);
    expect(imap.at(-1)).toMatchObject({ keyId: id, ip: '127.0.0.1', client: { name: 'Thunderbird', version: '128.1' }, newNetwork: true });
    expect(imap.at(-2)).toMatchObject({ newNetwork: false });
    const failures = (await (await api('GET', `/api/accounts/${ACCOUNT}/events?result=failure`)).json()) as { events: Record<string, unknown>[] };
    expect(failures.events.every((e) => e.result === 'failure')).toBe(true);
    expect(failures.events.length).toBeGreaterThanOrEqual(3);
  });

  it('GET /api/webhooks shows each endpoint with its last delivery, never its secret', async () => {
    const res = await api('GET', '/api/webhooks');
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).not.toContain(SECRET);
    const { webhooks } = JSON.parse(text) as { webhooks: Record<string, unknown>[] };
    expect(webhooks).toMatchObject([{ url: receiver.url, source: 'config', lastDelivery: { ok: true, status: 204 }, pending: 0 }]);
  });

  it('POST /api/webhooks registers an endpoint: its secret is shown once and signs its deliveries', async () => {
    const second = new WebhookReceiver('');
    await second.start();
    try {
      const res = await api('POST', '/api/webhooks', { url: second.url, events: ['key.revoked'] });
      expect(res.status).toBe(201);
      const made = (await res.json()) as { id: string; secret: string };
      expect(made.secret).toMatch(/^whsec_/);
      (second as { secret: string }).secret = made.secret;
      const listed = await (await api('GET', '/api/webhooks')).text();
      expect(listed).toContain(made.id);
      expect(listed).not.toContain(made.secret);

      expect((await api('POST', '/api/webhooks', { url: 'ftp://x.test/' })).status).toBe(400);
      // null (every event) stays null, not a list with one empty name.
      const all = await api('POST', '/api/webhooks', { url: second.url, events: null });
      expect(all.status).toBe(201);
      const allMade = (await all.json()) as { id: string; events: unknown };
      expect(allMade.events).toBeNull();
      expect((await api('DELETE', `/api/webhooks/${allMade.id}`)).status).toBe(204);
      expect((await api('POST', '/api/webhooks', { url: second.url, events: ['key.nope'] })).status).toBe(400);

      const { id } = await h.issue(ACCOUNT, ['smtp']);
      expect((await api('DELETE', `/api/accounts/${ACCOUNT}/smtp-credentials/${id}`)).status).toBe(204);
      await waitFor(() => second.events('key.revoked').some((e) => e.keyId === id));
      // It asked for key.revoked only.
      expect(second.received.every((r) => r.event.type === 'key.revoked' && r.signatureValid)).toBe(true);
      expect((await api('DELETE', `/api/webhooks/${made.id}`)).status).toBe(204);
      expect((await api('DELETE', `/api/webhooks/${made.id}`)).status).toBe(404);
    } finally {
      await second.stop();
    }
  });

  it('only an administrator manages webhooks', async () => {
    const user = (await h.issue(ACCOUNT, ['app'])).key;
    const res = await fetch(`http://127.0.0.1:${k.port('http')}/api/webhooks`, { headers: { authorization: `Bearer ${user}` } });
    expect(res.status).toBe(403);
  });
});

describe('a receiver that is down gets the event once it is back, across a Keygate restart', () => {
  it('queued in the store, retried with backoff, delivered after the restart', async () => {
    const receiver = new WebhookReceiver(SECRET);
    await receiver.start();
    await receiver.stop(); // the port is known, nothing listens
    const h = await createHarness();
    try {
      let k = await h.start({ http: true, flags: flags(receiver) });
      const { id } = await h.issue(ACCOUNT, ['smtp']);
      const admin = (await h.issue(null, ['*'])).key;
      const get = (path: string, method = 'GET') => fetch(`http://127.0.0.1:${k.port('http')}${path}`, { method, headers: { authorization: `Bearer ${admin}` } });
      const started = Date.now();
      expect((await get(`/api/accounts/${ACCOUNT}/smtp-credentials/${id}`, 'DELETE')).status).toBe(204);
      // The API call did not wait for the receiver.
      expect(Date.now() - started).toBeLessThan(1000);
      let status: { lastDelivery: { ok: boolean; error: string | null; attempt: number } | null; pending: number } | undefined;
      await waitFor(async () => {
        status = ((await (await get('/api/webhooks')).json()) as { webhooks: (typeof status)[] }).webhooks[0];
        return (status?.lastDelivery?.attempt ?? 0) >= 2;
      });
      expect(status).toMatchObject({ lastDelivery: { ok: false, error: 'ECONNREFUSED' } });
      expect(status!.pending).toBeGreaterThanOrEqual(1);

      await k.close();
      k = await h.start({ http: true, flags: flags(receiver) });
      await receiver.start();
      await waitFor(() => receiver.events('key.revoked').some((e) => e.keyId === id), 5000);
      expect(receiver.received.filter((r) => r.event.type === 'key.revoked' && r.event.keyId === id)).toHaveLength(1);
      expect(receiver.received.every((r) => r.signatureValid)).toBe(true);
      await waitFor(async () => ((await (await get('/api/webhooks')).json()) as { webhooks: { pending: number }[] }).webhooks[0]!.pending === 0);
    } finally {
      await h.close();
      await receiver.stop();
    }
  });
});
