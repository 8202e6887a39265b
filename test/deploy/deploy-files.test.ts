import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { DEFAULTS, knownEnvVars, loadConfig, type Config } from '../../src/config.js';
import { bindMounts, composeEnvironments, portMappings, readCompose, ROOT, TEST_DOTENV, type ComposeService } from './compose.js';

/*
 * Docker cannot run on these machines, so the deployment files are checked by
 * reading them: every KEYGATE_* variable they set or reference must be a real
 * setting (knownEnvVars(), whatever the config module has when this runs),
 * the values must load, and the ports they publish or expose must be the
 * ports Keygate will actually listen on with those values.
 */

const read = (f: string) => readFileSync(join(ROOT, f), 'utf8');
const KNOWN = new Set(knownEnvVars());
const isKeygateVar = (name: string) => name.startsWith('KEYGATE_');

type Listener = 'smtp' | 'imap' | 'pop3';
const LISTENERS: Listener[] = ['smtp', 'imap', 'pop3'];

/** Every port Keygate listens on with `c`, named. */
function listenPorts(c: Config): Map<number, string> {
  const m = new Map<number, string>([[c.http.port, 'http']]);
  for (const l of LISTENERS) {
    if (!c[l].enabled) continue;
    m.set(c[l].port, `${l}.port`);
    m.set(c[l].securePort, `${l}.securePort`);
  }
  return m;
}

/** The public (advertised) port for a listener port name such as `imap.securePort`. */
function publicPortFor(c: Config, name: string): number | null {
  const [l, which] = name.split('.') as [Listener | 'http', 'port' | 'securePort' | undefined];
  if (l === 'http' || which === undefined) return null;
  return c.public[l][which];
}

// --- Dockerfile ------------------------------------------------------------

interface Instruction {
  cmd: string;
  args: string;
  stage: number;
}

interface Dockerfile {
  stages: { name: string | null; from: string; instructions: Instruction[] }[];
  globalArgs: string[];
}

function parseDockerfile(text: string): Dockerfile {
  const logical: string[] = [];
  let current = '';
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    if (current === '' && /^\s*#/.test(line)) continue;
    if (current !== '' && /^\s*#/.test(line)) continue; // comments inside a continuation are dropped by Docker too
    if (line.endsWith('\\')) {
      current += line.slice(0, -1) + ' ';
      continue;
    }
    current += line;
    if (current.trim() !== '') logical.push(current.trim());
    current = '';
  }
  const df: Dockerfile = { stages: [], globalArgs: [] };
  for (const l of logical) {
    const m = /^(\S+)\s*(.*)$/s.exec(l)!;
    const cmd = m[1]!.toUpperCase();
    const args = m[2]!;
    if (cmd === 'FROM') {
      const f = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args)!;
      df.stages.push({ from: f[1]!, name: f[2] ?? null, instructions: [] });
      continue;
    }
    if (df.stages.length === 0) {
      if (cmd === 'ARG') df.globalArgs.push(args);
      continue;
    }
    df.stages.at(-1)!.instructions.push({ cmd, args, stage: df.stages.length - 1 });
  }
  return df;
}

/** `K=V K2="v 2"` or the legacy `K V` form. */
function parseEnvArgs(args: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (!/^[A-Za-z_][A-Za-z0-9_]*=/.test(args)) {
    const m = /^(\S+)\s+(.*)$/s.exec(args);
    if (m) out[m[1]!] = m[2]!;
    return out;
  }
  const re = /([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|'[^']*'|\S*)/g;
  for (const m of args.matchAll(re)) out[m[1]!] = m[2]!.replace(/^["']|["']$/g, '');
  return out;
}

// --- systemd ---------------------------------------------------------------

function parseUnit(text: string): Record<string, [string, string][]> {
  const sections: Record<string, [string, string][]> = {};
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s) {
      section = s[1]!;
      sections[section] ??= [];
      continue;
    }
    const i = line.indexOf('=');
    sections[section]!.push([line.slice(0, i).trim(), line.slice(i + 1).trim()]);
  }
  return sections;
}

const unknownVars = (names: Iterable<string>) => [...names].filter((n) => isKeygateVar(n) && !KNOWN.has(n));

describe('docker-compose.yml', () => {
  const { text, compose } = readCompose();
  const { envs, it: interpolation } = composeEnvironments();
  const refs = interpolation.refs;
  const keygate = compose.services.keygate!;
  const env = envs.keygate!;

  it('runs Keygate, Redis and Dovecot', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['dovecot', 'keygate', 'redis']);
    expect(keygate.build).toBeDefined();
    expect(compose.services.redis!.image).toMatch(/^redis:/);
    expect(compose.services.dovecot!.image).toMatch(/dovecot/);
  });

  it('sets and references only real KEYGATE_* settings', () => {
    const set = Object.keys(env);
    expect(set.filter(isKeygateVar).length).toBeGreaterThan(10);
    expect(unknownVars(set)).toEqual([]);
    // Dovecot gets the one setting it shares with Keygate (deploy/dovecot/keygate.conf reads it).
    expect(Object.keys(envs.dovecot!)).toEqual(['KEYGATE_UPSTREAM_MASTER_PASSWORD']);
    expect(unknownVars(refs)).toEqual([]);
    // Nothing left commented out as "not a setting yet".
    expect([...text.matchAll(/^\s*#\s*(KEYGATE_[A-Z0-9_]+)\s*:/gm)].map((m) => m[1]!)).toEqual([]);
  });

  it('uses Redis as the store and shows the prepared-token variable', () => {
    expect(env.KEYGATE_REDIS_URL).toMatch(/^redis:\/\/redis:6379\b/);
    expect(Object.keys(env)).toContain('KEYGATE_PREPARED_TOKEN');
    expect(refs.has('KEYGATE_PREPARED_TOKEN')).toBe(true); // taken from the caller's environment
    const deps = Array.isArray(keygate.depends_on) ? keygate.depends_on : Object.keys(keygate.depends_on ?? {});
    expect(deps).toEqual(expect.arrayContaining(['redis', 'dovecot']));
  });

  it('loads as a valid configuration, listening on all interfaces', () => {
    const c = loadConfig({ env });
    expect(c.dbs.redis).toBe('redis://redis:6379/0');
    for (const l of ['http', ...LISTENERS] as const) expect(c[l].host, `${l}.host`).toBe('0.0.0.0');
  });

  it('routes IMAP, POP3 and SMTP to its Dovecot, at the ports the shipped Dovecot configuration listens on, with its master user', () => {
    const c = loadConfig({ env });
    const dovecotConf = read('deploy/dovecot/dovecot.conf');
    const listenerPort = (name: string): number => Number(new RegExp(`inet_listener ${name} \\{\\s*port = (\\d+)`).exec(dovecotConf)?.[1]);
    expect(c.upstream.imap).toMatchObject({ host: 'dovecot', port: listenerPort('imap'), tls: 'starttls', login: 'master' });
    expect(c.upstream.pop3).toMatchObject({ host: 'dovecot', port: listenerPort('pop3'), tls: 'starttls', login: 'master' });
    expect(c.upstream.smtp).toMatchObject({ host: 'dovecot', port: listenerPort('lmtp'), login: 'lmtp' });
    expect(dovecotConf).toMatch(/^protocols = .*\bimap\b.*\bpop3\b.*\blmtp\b/m);
    // The master user Keygate logs in as is the one keygate.conf lets in, with the password Dovecot is given.
    const keygateConf = read('deploy/dovecot/keygate.conf');
    expect(c.upstream.master.user).toBe(/^\s*username_filter = (\S+)$/m.exec(keygateConf)?.[1]);
    expect(c.upstream.master.password).toBe(TEST_DOTENV.KEYGATE_UPSTREAM_MASTER_PASSWORD);
    expect(envs.dovecot!.KEYGATE_UPSTREAM_MASTER_PASSWORD).toBe(c.upstream.master.password);
    expect(keygateConf).toContain('%{env:KEYGATE_UPSTREAM_MASTER_PASSWORD}');
    expect(keygateConf).toMatch(/^import_environment = .*\bKEYGATE_UPSTREAM_MASTER_PASSWORD\b/m);
    expect(c.upstream.master.separator).toBe(/^auth_master_user_separator = (\S+)$/m.exec(keygateConf)?.[1]);
  });

  it('refuses to start without a master password: Compose requires it for both services', () => {
    expect(interpolation.required).toEqual(new Set(['KEYGATE_UPSTREAM_MASTER_PASSWORD']));
    expect(() => composeEnvironments({})).toThrow(/KEYGATE_UPSTREAM_MASTER_PASSWORD/);
    expect(() => composeEnvironments({ KEYGATE_UPSTREAM_MASTER_PASSWORD: '' })).toThrow(/KEYGATE_UPSTREAM_MASTER_PASSWORD/);
  });

  it("mounts the shipped Dovecot files, which exist, into Dovecot's /etc/dovecot", () => {
    const mounts = bindMounts(compose.services.dovecot!);
    expect(mounts.map((m) => m.target).sort()).toEqual(['/etc/dovecot/dovecot.conf', '/etc/dovecot/keygate.conf']);
    for (const m of mounts) expect(existsSync(join(ROOT, m.source)), m.source).toBe(true);
    expect(read('deploy/dovecot/dovecot.conf')).toMatch(/^!include keygate\.conf$/m);
  });

  it('publishes exactly the ports Keygate listens on, at the ports it tells clients', () => {
    const c = loadConfig({ env });
    const listening = listenPorts(c);
    const mappings = portMappings(keygate);
    for (const { host, container } of mappings) {
      const name = listening.get(container);
      expect(name, `container port ${container} is not a Keygate listener`).toBeDefined();
      const advertised = publicPortFor(c, name!);
      if (advertised !== null) expect(host, `${name}: published ${host}, advertised ${advertised}`).toBe(advertised);
    }
    expect(mappings.map((m) => m.container).sort()).toEqual([...listening.keys()].sort());
    // Dovecot and Redis are reached over the compose network only.
    expect(compose.services.redis!.ports ?? []).toEqual([]);
    expect(compose.services.dovecot!.ports ?? []).toEqual([]);
  });
});

describe('Dockerfile', () => {
  const df = parseDockerfile(read('Dockerfile'));
  const final = df.stages.at(-1)!;
  const all = df.stages.flatMap((s) => s.instructions);
  const finalEnv = Object.assign({}, ...final.instructions.filter((i) => i.cmd === 'ENV').map((i) => parseEnvArgs(i.args))) as Record<string, string>;

  it('is multi-stage', () => {
    expect(df.stages.length).toBeGreaterThanOrEqual(2);
  });

  it('runs as a non-root user in the final stage', () => {
    const users = final.instructions.filter((i) => i.cmd === 'USER').map((i) => i.args.split(':')[0]!.trim());
    expect(users.length).toBeGreaterThan(0);
    expect(['root', '0']).not.toContain(users.at(-1));
    const lastUser = final.instructions.map((i) => i.cmd).lastIndexOf('USER');
    const after = final.instructions.slice(lastUser + 1).map((i) => i.cmd);
    expect(after).not.toContain('RUN'); // nothing runs as root after the switch… nor needs to
  });

  it('installs production dependencies with `npm ci --omit=dev` and ships only those', () => {
    const prodStages = df.stages.filter((s) => s.instructions.some((i) => i.cmd === 'RUN' && /\bnpm ci\b[^&;|]*--omit=dev/.test(i.args)));
    expect(prodStages.length).toBeGreaterThan(0);
    const copies = final.instructions.filter((i) => i.cmd === 'COPY' && /node_modules/.test(i.args));
    expect(copies).toHaveLength(1);
    const from = /--from=(\S+)/.exec(copies[0]!.args)?.[1];
    expect(prodStages.map((s) => s.name)).toContain(from);
    expect(final.instructions.some((i) => i.cmd === 'RUN' && /\bnpm (ci|install)\b/.test(i.args))).toBe(false);
  });

  it('has the native-build toolchain (better-sqlite3) where dependencies are installed', () => {
    const runs = all.filter((i) => i.cmd === 'RUN').map((i) => i.args).join('\n');
    for (const tool of ['python3', 'make', 'g++']) expect(runs).toContain(tool);
    expect(final.instructions.filter((i) => i.cmd === 'RUN').map((i) => i.args).join('\n')).not.toMatch(/g\+\+/);
  });

  it('sets only real KEYGATE_* settings, and they load', () => {
    const names = [
      ...all.filter((i) => i.cmd === 'ENV').flatMap((i) => Object.keys(parseEnvArgs(i.args))),
      ...[...all.filter((i) => i.cmd === 'ARG').map((i) => i.args), ...df.globalArgs].map((a) => a.split('=')[0]!),
    ];
    expect(unknownVars(names)).toEqual([]);
    const c = loadConfig({ env: finalEnv });
    for (const l of ['http', ...LISTENERS] as const) expect(c[l].host, `${l}.host`).toBe('0.0.0.0');
  });

  it('exposes exactly the ports Keygate listens on with its settings, and compose publishes a subset of them', () => {
    const exposed = final.instructions
      .filter((i) => i.cmd === 'EXPOSE')
      .flatMap((i) => i.args.split(/\s+/))
      .map((p) => Number(p.replace(/\/(tcp|udp)$/, '')));
    const c = loadConfig({ env: finalEnv });
    expect(exposed.sort()).toEqual([...listenPorts(c).keys()].sort());
    const composed = portMappings((parseYaml(read('docker-compose.yml')) as { services: Record<string, ComposeService> }).services.keygate!);
    for (const { container } of composed) expect(exposed).toContain(container);
  });

  it('starts the CLI’s serve command and copies only files that exist and are not ignored', () => {
    const entry = final.instructions.filter((i) => i.cmd === 'ENTRYPOINT' || i.cmd === 'CMD').map((i) => i.args).join(' ');
    expect(entry).toContain('dist/cli.js');
    expect(entry).toContain('serve');
    const ignored = read('.dockerignore')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    for (const i of all.filter((i) => i.cmd === 'COPY' && !i.args.includes('--from='))) {
      const sources = i.args.split(/\s+/).slice(0, -1);
      for (const src of sources) {
        expect(existsSync(join(ROOT, src)), `${src} exists`).toBe(true);
        expect(ignored, `${src} is not in .dockerignore`).not.toContain(src);
      }
    }
  });
});

describe('.dockerignore', () => {
  it('keeps local state and build output out of the image context', () => {
    const lines = read('.dockerignore').split('\n').map((l) => l.trim());
    for (const p of ['node_modules', '.node', 'dist', 'data', 'certs', '.env', '.git']) expect(lines, p).toContain(p);
  });
});

describe('deploy/keygate.service', () => {
  const unit = parseUnit(read('deploy/keygate.service'));
  const service = unit.Service!;
  const get = (k: string) => service.filter(([key]) => key === k).map(([, v]) => v);
  const env = Object.fromEntries(
    get('Environment').map((v) => {
      const i = v.indexOf('=');
      return [v.slice(0, i).replace(/^"/, ''), v.slice(i + 1).replace(/"$/, '')];
    }),
  ) as Record<string, string>;

  it('sets only real KEYGATE_* settings, and they load with listeners on the advertised ports', () => {
    expect(unknownVars(Object.keys(env))).toEqual([]);
    const c = loadConfig({ env });
    for (const l of LISTENERS) {
      expect(c[l].port).toBe(c.public[l].port);
      expect(c[l].securePort).toBe(c.public[l].securePort);
    }
    expect(c.http.port).toBe(DEFAULTS.http.port);
  });

  it('runs `serve` as an unprivileged user that may bind the mail ports', () => {
    expect(get('User')[0]).toBeDefined();
    expect(['root', '0']).not.toContain(get('User')[0]);
    expect(get('ExecStart')[0]).toMatch(/dist\/cli\.js serve$/);
    expect(get('AmbientCapabilities')[0]).toContain('CAP_NET_BIND_SERVICE');
    expect(get('NoNewPrivileges')[0]).toBe('true');
    expect(unit.Install?.some(([k, v]) => k === 'WantedBy' && v === 'multi-user.target')).toBe(true);
  });

  it('keeps the store and certificates in its state directory (KEYGATE_HOME), where the CLI finds them too', () => {
    const c = loadConfig({ env });
    expect(c.home).toBe(`/var/lib/${get('StateDirectory')[0]}`);
    expect(c.db.path).toBe('/var/lib/keygate/data/keygate.db');
    expect(c.tls.dir).toBe('/var/lib/keygate/certs');
  });

  it('restarts after runtime failures (exit 1) but not after a bad configuration (exit 2)', () => {
    expect(get('Restart')).toEqual(['on-failure']);
    expect(get('RestartPreventExitStatus').flatMap((v) => v.split(/\s+/))).toEqual(['2']);
  });

  const analyze = spawnSync('systemd-analyze', ['--version'], { stdio: 'ignore' }).status === 0;
  it.skipIf(!analyze)('passes `systemd-analyze verify`', () => {
    const res = spawnSync('systemd-analyze', ['verify', join(ROOT, 'deploy/keygate.service')], { encoding: 'utf8' });
    // A machine without /usr/bin/node (or the keygate user) is not the unit's fault.
    const problems = `${res.stdout}${res.stderr}`
      .split('\n')
      .filter((l) => l.includes('keygate.service') && !/not executable|No such file|does not exist/i.test(l));
    expect(problems).toEqual([]);
  });
});
