/** One line of `keygate check`: `ok`, `FAIL` (exit 1) or `skip` (could not be tried; says why). */
export interface CheckResult {
  status: 'ok' | 'FAIL' | 'skip';
  /** What was checked: `store`, `certificate`, `imap upstream`, … */
  name: string;
  detail: string;
}

export const ok = (name: string, detail: string): CheckResult => ({ status: 'ok', name, detail });
export const fail = (name: string, detail: string): CheckResult => ({ status: 'FAIL', name, detail });
export const skip = (name: string, detail: string): CheckResult => ({ status: 'skip', name, detail });
