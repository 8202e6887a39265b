import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeExport } from '../../src/keys/export-codec.js';
import { newKey } from '../../src/keys/new-key.js';
import { builtCliAvailable, runCli } from '../helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'keygate-cli-names-'));
const db = ['--db.path', join(dir, 'k.db')];

beforeAll(() => {
  if (!builtCliAvailable()) throw new Error('dist/cli.js is missing: run `npm run build` (npm test does it)');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('names from the command line and from imports', () => {
  it.each([
    ['NEL U+0085', '\u0085'],
    ['RLO U+202E', '\u202e'],
    ['BEL', '\u0007'],
  ])('%s is refused (exit 2, naming the field) by tokens issue -d, accounts add --display-name and tokens import', async (_label, ch) => {
    const issue = await runCli(['tokens', 'issue', '-d', `evil${ch}name`, '-s', 'smtp', ...db]);
    expect(issue).toMatchObject({ code: 2, stdout: '' });
    expect(issue.stderr).toMatch(/^keygate: description must not contain control characters/);
    const add = await runCli(['accounts', 'add', 'x@example.com', '--display-name', `Eve${ch}`, ...db]);
    expect(add).toMatchObject({ code: 2, stdout: '' });
    expect(add.stderr).toMatch(/^keygate: displayName must not contain control characters/);
    const blob = encodeExport(newKey({ name: `imported${ch}`, scopes: ['smtp'] }).record);
    const imp = await runCli(['tokens', 'import', '-t', blob, ...db]);
    expect(imp).toMatchObject({ code: 2, stdout: '' });
    expect(imp.stderr).toMatch(/malformed token blob: field "name"/);
    const list = await runCli(['tokens', 'list', '--json', ...db]);
    expect(JSON.parse(list.stdout || '[]')).toEqual([]);
  });

  it('names in any script pass', async () => {
    const r = await runCli(['tokens', 'issue', '-d', 'הטלפון של דני', '-s', 'smtp', ...db]);
    expect(r.code).toBe(0);
    const add = await runCli(['accounts', 'add', 'y@example.com', '--display-name', 'Ännchen Müller', ...db]);
    expect(add.code).toBe(0);
  });
});
