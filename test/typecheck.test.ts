import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';

/**
 * Vitest strips types without checking them, and `npm run build` checks
 * src/ only: without this, a type error in a test or a benchmark would pass
 * CI unnoticed. The web console is checked by its own build.
 */
describe('types', () => {
  it('src, test and bench type-check under the strict settings', () => {
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    const run = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.json', '--noEmit', '--pretty', 'false'], { encoding: 'utf8', timeout: 120_000 });
    expect(run.stdout + run.stderr).toBe('');
    expect(run.status).toBe(0);
  }, 150_000);
});
