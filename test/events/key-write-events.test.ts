import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EventHub } from '../../src/events/hub.js';
import { bindEvents, eventsOf, unbindEvents } from '../../src/events/registry.js';
import type { KeyEvent } from '../../src/events/types.js';
import { createLogger } from '../../src/log.js';
import { createCredential, revokeCredential, rotateCredential } from '../../src/services/credentials.js';
import { revokeStoredKey } from '../../src/services/key-writes.js';
import { openSqliteStore } from '../../src/store/sqlite.js';

const dir = mkdtempSync(join(tmpdir(), 'keygate-events-'));
const store = openSqliteStore(join(dir, 'keys.db'));
afterAll(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('the key writer raises key events', () => {
  it('created, rotated and revoked, each once, without the secret', async () => {
    const hub = new EventHub(createLogger('silent'));
    const seen: KeyEvent[] = [];
    hub.listen((e) => seen.push(e));
    // A listener that throws is the hub's problem, never the writer's.
    hub.listen(() => {
      throw new Error('receiver bug');
    });
    bindEvents(store, hub);
    const made = await createCredential(store, 'operator', 'ann@x.test', { name: 'phone', scopes: ['smtp'] });
    const rotated = await rotateCredential(store, 'operator', 'ann@x.test', made.record.id);
    await revokeCredential(store, 'ann@x.test', rotated.record.id);
    // Revoking again changes nothing and raises nothing.
    await revokeStoredKey(store, rotated.record.id, new Date().toISOString(), 'cli');
    unbindEvents(store, hub);
    expect(eventsOf(store)).not.toBe(hub);

    expect(seen.map((e) => [e.type, e.keyId])).toEqual([
      ['key.created', made.record.id],
      ['key.rotated', made.record.id],
      ['key.revoked', rotated.record.id],
    ]);
    expect(seen[1]!.data).toMatchObject({ replacedBy: rotated.record.id, name: 'phone' });
    expect(seen[2]!.data).toMatchObject({ reason: 'api' });
    expect(seen.every((e) => e.account === 'ann@x.test' && /^[0-9a-f-]{36}$/.test(e.id) && !Number.isNaN(Date.parse(e.time)))).toBe(true);
    const text = JSON.stringify(seen);
    for (const secret of [made.key, rotated.key, made.record.hash]) expect(text).not.toContain(secret);
  });
});
