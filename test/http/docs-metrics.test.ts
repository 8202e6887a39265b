import SwaggerParser from '@apidevtools/swagger-parser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupFixtures, createFixture, storeKinds, type Fixture } from './fixture.js';

afterAll(cleanupFixtures);

const METRIC_NAMES = [
  'keygate_auth_attempts_total',
  'keygate_auth_duration_seconds',
  'keygate_keys',
  'keygate_sessions',
  'keygate_http_requests_total',
  'keygate_rate_limited_total',
  // process metrics (prom-client defaults)
  'process_cpu_seconds_total',
  'process_resident_memory_bytes',
  'nodejs_eventloop_lag_seconds',
];

describe.each(storeKinds())('OpenAPI, docs, metrics, health on %s', (kind) => {
  let f: Fixture;
  beforeAll(async () => {
    f = await createFixture(kind);
  });
  afterAll(() => f.close());

  describe('/openapi.json', () => {
    it('validates as OpenAPI 3 and documents every route with tags, security and response schemas', async () => {
      const res = await f.call(null, { url: '/openapi.json' });
      expect(res.statusCode).toBe(200);
      const doc = res.json();
      expect(doc.openapi).toMatch(/^3\./);
      await expect(SwaggerParser.validate(structuredClone(doc))).resolves.toBeTruthy();
      const expected = {
        '/api/smtp-credentials': ['get', 'post'],
        '/api/smtp-credentials/mobile': ['post'],
        '/api/smtp-credentials/{keyId}': ['delete'],
        '/api/smtp-credentials/{keyId}/rotate': ['post'],
        '/api/accounts/{account}/smtp-credentials': ['get', 'post'],
        '/api/accounts/{account}/smtp-credentials/mobile': ['post'],
        '/api/accounts/{account}/smtp-credentials/{keyId}': ['delete'],
        '/api/accounts/{account}/smtp-credentials/{keyId}/rotate': ['post'],
        '/api/accounts': ['get', 'post'],
        '/api/accounts/{account}': ['get', 'patch', 'delete'],
        '/api/tokens': ['get', 'post'],
        '/api/tokens/{id}': ['delete'],
        '/api/tokens/{id}/export': ['get'],
        '/api/tokens/import': ['post'],
        '/metrics': ['get'],
        '/health': ['get'],
      } as Record<string, string[]>;
      for (const [path, methods] of Object.entries(expected)) {
        expect(Object.keys(doc.paths[path] ?? {}).sort(), path).toEqual([...methods].sort());
        for (const m of methods) {
          const op = doc.paths[path][m];
          expect(op.tags?.length, `${m} ${path} tags`).toBeGreaterThan(0);
          expect(Object.keys(op.responses).length, `${m} ${path} responses`).toBeGreaterThan(0);
          if (path !== '/health') {
            expect(op.security, `${m} ${path} security`).toBeDefined();
            expect(op.responses['401'], `${m} ${path} 401`).toBeDefined();
          }
        }
      }
      // The reference's status codes are documented.
      expect(Object.keys(doc.paths['/api/smtp-credentials'].post.responses)).toContain('201');
      expect(Object.keys(doc.paths['/api/smtp-credentials/{keyId}'].delete.responses)).toContain('204');
      expect(Object.keys(doc.paths['/api/smtp-credentials/{keyId}/rotate'].post.responses)).toContain('200');
      expect(doc.paths['/api/smtp-credentials'].get.description).toMatch(/active keys only/i);
      // Docs pages themselves are not in the spec.
      expect(Object.keys(doc.paths).some((p) => p.startsWith('/docs'))).toBe(false);
    });
  });

  describe('/docs', () => {
    it('serves the Swagger UI page without a key', async () => {
      const res = await f.call(null, { url: '/docs' });
      expect(res.statusCode).toBe(200);
      expect(res.headers['content-type']).toMatch(/text\/html/);
      expect(res.body).toMatch(/swagger/i);
      const init = await f.call(null, { url: '/docs/static/swagger-initializer.js' });
      expect(init.statusCode).toBe(200);
      const json = await f.call(null, { url: '/docs/json' });
      expect(json.statusCode).toBe(200);
      expect(json.json().paths['/api/smtp-credentials']).toBeDefined();
    });
  });

  describe('/metrics', () => {
    it('prom-client text with every Keygate metric and the process metrics, for a metrics key', async () => {
      const key = (await f.issue({ scopes: ['metrics'] })).key;
      await f.call(key, { url: '/api/smtp-credentials' }); // a 403, to have an http request counted
      const res = await f.call(key, { url: '/metrics' });
      expect(res.statusCode).toBe(200);
      expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
      for (const name of METRIC_NAMES) expect(res.body, name).toMatch(new RegExp(`^# TYPE ${name} `, 'm'));
      expect(res.body).toMatch(/^keygate_keys\{state="active"\} \d+$/m);
      expect(res.body).toMatch(/^keygate_http_requests_total\{route="\/api\/smtp-credentials",status="403"\} \d+$/m);
    });

    it('works with *, ?access_token= too; an api-only key gets 403 naming the metrics scope', async () => {
      expect((await f.call(null, { url: `/metrics?access_token=${f.adminKey}` })).statusCode).toBe(200);
      const api = (await f.issue({ scopes: ['api'] })).key;
      const res = await f.call(api, { url: '/metrics' });
      expect(res.statusCode).toBe(403);
      expect(res.json().error.details).toEqual({ missingScope: 'metrics' });
      const boundApi = (await f.issue({ scopes: ['api'], account: 'a@example.com' })).key;
      expect((await f.call(boundApi, { url: '/metrics' })).statusCode).toBe(403);
    });
  });

  describe('/health', () => {
    it('reports store reachability without a key', async () => {
      const res = await f.call(null, { url: '/health' });
      expect(res.statusCode).toBe(200);
      expect(res.json()).toMatchObject({ status: 'ok', store: { kind, reachable: true } });
    });
  });

  describe('unknown routes', () => {
    it('404 in the JSON error shape, without echoing the query', async () => {
      const res = await f.call(null, { url: `/api/nothing?access_token=${f.adminKey}` });
      expect(res.statusCode).toBe(404);
      expect(res.json()).toEqual({ error: { code: 'not_found', message: 'No route GET /api/nothing' } });
    });
  });
});
