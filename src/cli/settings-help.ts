import { Option } from 'commander';
import { CONFIG_FILE_NAME, DEFAULTS, getPath, SPECS } from '../config.js';
import { formatDuration } from '../duration.js';

/**
 * The settings' part of `--help`, made from the settings table (SPECS) and
 * DEFAULTS alone, so a setting added there is listed with its flag,
 * environment variable and default without touching this file. Settings are
 * grouped by their first name part; a part without a title here is listed
 * under its own name.
 */
const GROUP_TITLES: Record<string, string> = {
  home: 'Files and key store',
  db: 'Files and key store',
  dbs: 'Files and key store',
  preparedToken: 'Files and key store',
  hostname: 'Server',
  log: 'Server',
  proxyProtocol: 'Server',
  shutdownGrace: 'Server',
  touchInterval: 'Server',
  http: 'HTTP control plane',
  rateLimit: 'HTTP rate limits',
  smtp: 'SMTP listeners',
  imap: 'IMAP listeners',
  pop3: 'POP3 listeners',
  public: 'What clients are told (autoconfig, Autodiscover, Apple profiles, connectionInfo)',
  tls: 'TLS certificate',
  auth: 'Logins',
  limits: 'Limits',
  upstream: 'Upstream mail servers',
  mailbox: 'Local mailbox (a private Dovecot)',
  mailboxDir: 'Local mailbox (a private Dovecot)',
  mailboxDovecot: 'Local mailbox (a private Dovecot)',
  setup: 'Client setup links and profiles',
  nginx: 'nginx mail proxy',
  console: 'Web console',
};

export function groupTitle(key: string): string {
  const head = key.split('.')[0]!;
  return GROUP_TITLES[head] ?? `${head} settings`;
}

/** The default as a person would write it: `1s`, `data/keygate.db`, `none`, or the setting it follows. */
export function defaultText(key: string): string {
  const spec = SPECS[key]!;
  if (spec.follows) return `as ${spec.follows}`;
  const value = getPath(DEFAULTS, key);
  if (spec.kind === 'duration' && typeof value === 'number') return formatDuration(value);
  if (value === '') return 'none';
  return String(value);
}

/** One setting as a command-line option, described from the table. */
export function settingOption(key: string): Option {
  const spec = SPECS[key]!;
  return new Option(`--${key} <value>`, `${spec.doc} [${spec.env}, default: ${defaultText(key)}]`).helpGroup(groupTitle(key));
}

/** The help section for secrets: they have no flag (others can read a command line in `ps`). */
export function secretsHelp(keys: readonly string[]): string {
  const secrets = keys.filter((k) => SPECS[k]!.secret);
  if (secrets.length === 0) return '';
  const width = Math.max(...secrets.map((k) => SPECS[k]!.env.length));
  const lines = secrets.map((k) => `  ${SPECS[k]!.env.padEnd(width)}  ${SPECS[k]!.doc} (setting ${k})`);
  return `\nSecrets: environment or --config file only, never a flag (every user of the machine can read a command line):\n${lines.join('\n')}\n`;
}

export const PRECEDENCE_HELP =
  `\nEvery setting: defaults < JSON file (--config, KEYGATE_CONFIG, or ${CONFIG_FILE_NAME} in --home) < KEYGATE_* environment < flags.\n` +
  'Durations: 500ms, 1s, 15m, 2h, 30d. `keygate config` prints the effective values, `keygate check` tests them.\n';
