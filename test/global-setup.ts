import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { createLogger } from '../src/log.js';
import { ensureSelfSigned } from '../src/tls/selfsigned.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** A self-signed certificate for `localhost`, made once per run (RSA generation is slow) and removed after it. */
    testCertDir: string;
  }
}

/** Made fresh for every run, so no run depends on what an earlier one (or another user) left in the temp dir. */
export default function setup(project: TestProject): () => void {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-test-certs-'));
  ensureSelfSigned(dir, 'localhost', createLogger('silent'));
  project.provide('testCertDir', dir);
  return () => rmSync(dir, { recursive: true, force: true });
}
