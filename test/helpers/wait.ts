import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'vitest';

/**
 * Polls `cond` every 20 ms until it holds, and fails the test, naming the
 * condition, when `timeoutMs` pass first. It is an assertion (it counts as
 * one), so a test never goes on with an unmet precondition. `explain` adds
 * what the test knows (log lines, say) to the failure.
 */
export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs = 5000, explain?: () => string): Promise<void> {
  const end = Date.now() + timeoutMs;
  let met = await cond();
  while (!met && Date.now() < end) {
    await sleep(20);
    met = await cond();
  }
  expect(met, `not met within ${timeoutMs} ms: ${String(cond)}${explain ? `\n${explain()}` : ''}`).toBe(true);
}
