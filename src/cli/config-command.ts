import { Command } from 'commander';
import { getPath, SPECS, type Config, type ResolvedConfig } from '../config.js';
import { formatDuration } from '../duration.js';
import { redactRedisUrl } from '../store/redis-connect.js';
import { addSettingFlags, resolvedConfigFrom } from './common.js';

/** What a masked value shows: whether it is set, nothing about it (not its length, not a hash). */
export const MASK = '(set)';
const UNSET = '(not set)';

/**
 * `keygate config`: the effective configuration, one setting per line with
 * where its value came from. A secret shows only whether it is set; values
 * that embed credentials (a Redis URL's password, "password" fields in
 * `upstream.domains`) show with those parts masked.
 */
export function configCommand(): Command {
  const cmd = new Command('config').description('print the effective configuration (secrets masked) and where each value comes from');
  addSettingFlags(cmd, Object.keys(SPECS), [])
    .option('--json', 'print JSON: [{ setting, env, value, source }]')
    .addHelpText('after', '\nTakes every setting flag of `keygate serve --help`, so it shows what `serve` would run with.')
    .action((opts: Record<string, unknown>) => {
      const resolved = resolvedConfigFrom(opts);
      const rows = configRows(resolved);
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
        return;
      }
      const kw = Math.max(...rows.map((r) => r.setting.length));
      const vw = Math.min(48, Math.max(...rows.map((r) => r.value.length)));
      if (resolved.file) process.stdout.write(`# config file: ${resolved.file}\n`);
      for (const r of rows) process.stdout.write(`${r.setting.padEnd(kw)}  ${r.value.padEnd(vw)}  ${r.source}\n`);
    });
  return cmd;
}

export interface ConfigRow {
  setting: string;
  env: string;
  value: string;
  source: string;
}

export function configRows({ config, sources }: ResolvedConfig): ConfigRow[] {
  return Object.keys(SPECS).map((setting) => ({ setting, env: SPECS[setting]!.env, value: shownValue(config, setting), source: sources[setting]! }));
}

/** One setting's value as `keygate config` shows it: never a secret, in any form. */
export function shownValue(config: Config, key: string): string {
  const spec = SPECS[key]!;
  const value = getPath(config, key);
  if (spec.secret) return value === '' || value === undefined ? UNSET : MASK;
  if (typeof value !== 'string') return spec.kind === 'duration' && typeof value === 'number' ? formatDuration(value) : String(value);
  if (value === '') return '""';
  if (spec.embeds === 'url') return maskUrl(value);
  if (spec.embeds === 'json') return maskJson(value);
  return value;
}

/** A URL without its user-info password, nor the value of a query parameter that may be one. */
function maskUrl(url: string): string {
  return redactRedisUrl(url).replace(/([?&][^=&#]*(?:pass|secret|token|key|auth)[^=&#]*=)[^&#]*/gi, `$1${MASK}`);
}

/** JSON with every "password" or "secret" member replaced by the mask; unparsable text is not shown at all. */
function maskJson(text: string): string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return '(not shown: not valid JSON)';
  }
  return JSON.stringify(parsed, (k, v: unknown) => (/password|secret/i.test(k) && v !== null && v !== '' ? MASK : v));
}
