import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SWAKS, swaksTlsProblem, Tool } from './tools.js';

describe('Tool', () => {
  it('fails, naming the package, when the program is present but lacks a capability', () => {
    const broken = new Tool('demo', 'demo', () => true, () => 'has no frobnicator: install the Debian package demo-frob');
    expect(broken.found).toBe(true);
    expect(() => broken.assertCapable()).toThrow('demo is installed but has no frobnicator: install the Debian package demo-frob (.ci/run does)');
    const fine = new Tool('demo', 'demo', () => true);
    expect(() => fine.assertCapable()).not.toThrow();
  });
});

describe.skipIf(!SWAKS.found)('swaks', () => {
  it('speaks TLS here', () => {
    expect(swaksTlsProblem()).toBeNull();
  });

  it('without Net::SSLeay, is refused with a message naming the Debian packages', () => {
    // A Net/SSLeay.pm that fails to load, ahead of the real one on @INC: swaks as on a machine without the package.
    const dir = mkdtempSync(join(tmpdir(), 'keygate-no-ssleay-'));
    try {
      mkdirSync(join(dir, 'Net'));
      writeFileSync(join(dir, 'Net', 'SSLeay.pm'), 'die "Net::SSLeay hidden by a test\\n";\n');
      expect(swaksTlsProblem({ ...process.env, PERL5LIB: dir })).toBe(
        'cannot speak TLS (*** TLS not available: requires Net::SSLeay): install the Debian packages libnet-ssleay-perl and libio-socket-ssl-perl',
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
