import { Command } from 'commander';
import { runChecks } from '../check/index.js';
import { SPECS } from '../config.js';
import { looksLikeAddress } from '../keys/record.js';
import { addSettingFlags, configFrom, UsageError } from './common.js';

/** `keygate check`: one line per check (`ok`, `FAIL`, `skip`); exit 1 when any failed. */
export function checkCommand(): Command {
  const cmd = new Command('check').description('test the configuration: store, certificate, each upstream and its login; exit 1 on any failure');
  addSettingFlags(cmd, Object.keys(SPECS), [])
    .option('-a, --account <address>', 'log in upstream as this account (default: a stored account that uses each upstream)')
    .addHelpText('after', '\nTakes every setting flag of `keygate serve --help`, so it tests what `serve` would run with. Nothing is written: no store, no certificate.')
    .action(async (opts: Record<string, unknown>) => {
      const account = opts.account as string | undefined;
      if (account !== undefined && !looksLikeAddress(account)) throw new UsageError('--account: not an address (expected one such as user@example.com)');
      const results = await runChecks(configFrom(opts), { ...(account !== undefined && { account }) });
      for (const r of results) process.stdout.write(`${r.status.padEnd(4)}  ${r.name}: ${r.detail}\n`);
      if (results.some((r) => r.status === 'FAIL')) process.exitCode = 1;
    });
  return cmd;
}
