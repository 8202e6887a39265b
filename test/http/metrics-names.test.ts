import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupFixtures, createFixture, type Fixture } from './fixture.js';

/*
 * Issue 13, item 10 (part): HTTP latency by route and status class, and
 * Prometheus naming kept — a name ending in `_total` is a counter, never a gauge.
 */

describe('/metrics names and the HTTP latency histogram', () => {
  let f: Fixture;
  let text: string;

  beforeAll(async () => {
    f = await createFixture('sqlite');
    const key = (await f.issue({ scopes: ['app'], account: 'alice@example.com' })).key;
    const metricsKey = (await f.issue({ scopes: ['metrics'] })).key;
    expect((await f.call(key, { url: '/api/smtp-credentials' })).statusCode).toBe(200);
    expect((await f.call(null, { url: '/api/smtp-credentials' })).statusCode).toBe(401);
    expect((await f.call(null, { url: '/no/such/route' })).statusCode).toBe(404);
    text = (await f.call(metricsKey, { url: '/metrics' })).body;
  });
  afterAll(async () => {
    await f?.close();
    await cleanupFixtures();
  });

  it('keygate_http_request_duration_seconds: a histogram by route and status class', () => {
    expect(text).toMatch(/^# TYPE keygate_http_request_duration_seconds histogram$/m);
    expect(text).toMatch(/^keygate_http_request_duration_seconds_count\{route="\/api\/smtp-credentials",status_class="2xx"\} 1$/m);
    expect(text).toMatch(/^keygate_http_request_duration_seconds_count\{route="\/api\/smtp-credentials",status_class="4xx"\} 1$/m);
    expect(text).toMatch(/^keygate_http_request_duration_seconds_bucket\{le="\+Inf",route="\/api\/smtp-credentials",status_class="2xx"\} 1$/m);
    // Unmatched paths share one label value: a client cannot grow the label set.
    expect(text).toMatch(/^keygate_http_request_duration_seconds_count\{route="unmatched",status_class="4xx"\} 1$/m);
    expect(text).not.toContain('/no/such/route');
  });

  it('no gauge (or anything but a counter) has a name ending in _total', () => {
    const types = [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => ({ name: m[1]!, type: m[2]! }));
    expect(types.length).toBeGreaterThan(20);
    expect(types.filter((t) => t.name.endsWith('_total') && t.type !== 'counter')).toEqual([]);
    expect(types).toContainEqual({ name: 'nodejs_active_handles', type: 'gauge' });
    expect(types).toContainEqual({ name: 'keygate_http_requests_total', type: 'counter' });
  });
});
