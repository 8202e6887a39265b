import { fork, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Target, WorkerReply, WorkerRequest } from './load-worker.js';
import { quantile, sortNumbers } from './stats.js';

const WORKER = join(dirname(fileURLToPath(import.meta.url)), 'load-worker.ts');

export interface LoadResult {
  cycles: number;
  /** Cycles whose TLS session was resumed. */
  resumed: number;
  errors: number;
  firstError: string | null;
  /** Seconds the load ran (the longest worker). */
  seconds: number;
  cyclesPerSecond: number;
  loginP50: number;
  loginP99: number;
}

/** Load-generating worker processes, forked once and reused for every run. */
export class LoadPool {
  private readonly workers: ChildProcess[];

  constructor(size: number) {
    this.workers = Array.from({ length: size }, () => fork(WORKER, [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  }

  get size(): number {
    return this.workers.length;
  }

  private ask<T extends WorkerReply['type']>(worker: ChildProcess, request: WorkerRequest, type: T): Promise<Extract<WorkerReply, { type: T }>> {
    return new Promise((resolve, reject) => {
      const onMessage = (msg: WorkerReply): void => {
        if (msg.type !== type) return;
        worker.off('message', onMessage);
        worker.off('exit', onExit);
        resolve(msg as Extract<WorkerReply, { type: T }>);
      };
      const onExit = (code: number | null): void => reject(new Error(`load worker exited (${code})`));
      worker.on('message', onMessage);
      worker.once('exit', onExit);
      worker.send(request);
    });
  }

  /** Spreads `concurrency` loops over the workers (one worker for concurrency 1) and runs them for durationMs. */
  async run(target: Target, concurrency: number, durationMs: number): Promise<LoadResult> {
    const n = Math.min(concurrency, this.workers.length);
    const shares = Array.from({ length: n }, (_, i) => Math.floor(concurrency / n) + (i < concurrency % n ? 1 : 0));
    const replies = await Promise.all(shares.map((c, i) => this.ask(this.workers[i]!, { type: 'run', target, concurrency: c, durationMs }, 'result')));
    const latencies = sortNumbers(replies.flatMap((r) => r.latencies));
    const cycles = replies.reduce((s, r) => s + r.cycles, 0);
    const seconds = Math.max(...replies.map((r) => r.elapsedMs)) / 1000;
    return {
      cycles,
      resumed: replies.reduce((s, r) => s + r.resumed, 0),
      errors: replies.reduce((s, r) => s + r.errors, 0),
      firstError: replies.find((r) => r.firstError)?.firstError ?? null,
      seconds,
      cyclesPerSecond: cycles / seconds,
      loginP50: quantile(latencies, 0.5),
      loginP99: quantile(latencies, 0.99),
    };
  }

  /** Opens `count` logged-in connections spread over the workers and keeps them idle until release(). */
  async hold(target: Target, count: number): Promise<{ held: number; errors: number; firstError: string | null }> {
    const n = this.workers.length;
    const replies = await Promise.all(
      this.workers.map((w, i) => this.ask(w, { type: 'hold', target, count: Math.floor(count / n) + (i < count % n ? 1 : 0), parallel: 25 }, 'held')),
    );
    return { held: replies.reduce((s, r) => s + r.held, 0), errors: replies.reduce((s, r) => s + r.errors, 0), firstError: replies.find((r) => r.firstError)?.firstError ?? null };
  }

  async release(): Promise<void> {
    await Promise.all(this.workers.map((w) => this.ask(w, { type: 'release' }, 'released')));
  }

  close(): void {
    for (const w of this.workers) w.disconnect();
  }
}
