import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';

/*
 * docker-compose.yml read as Compose reads it (Docker cannot run on these
 * machines): YAML, then variable interpolation with the caller's environment.
 */

export const ROOT = join(import.meta.dirname, '..', '..');

export interface ComposeService {
  image?: string;
  build?: unknown;
  environment?: Record<string, string | number | boolean | null> | string[];
  ports?: (string | number | { target: number; published?: string | number; host_ip?: string })[];
  depends_on?: string[] | Record<string, unknown>;
  volumes?: (string | { type: string; source?: string; target: string; read_only?: boolean })[];
  command?: string | string[];
}

export interface ComposeFile {
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
}

/** What interpolation saw: every variable referenced, and those Compose requires (`${VAR:?…}`). */
export interface Interpolation {
  /** The caller's environment (`.env` and the shell). */
  vars: Record<string, string>;
  refs: Set<string>;
  required: Set<string>;
}

export function newInterpolation(vars: Record<string, string> = {}): Interpolation {
  return { vars, refs: new Set(), required: new Set() };
}

/**
 * Compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR-default},
 * ${VAR:?err}, ${VAR?err}, $VAR, $$. A required variable that is unset (or
 * empty, for `:?`) fails as `docker compose` does.
 */
export function interpolate(value: string, it: Interpolation): string {
  return value.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (whole, braced?: string, op?: string, arg?: string, bare?: string) => {
    if (whole === '$$') return '$';
    const name = (braced ?? bare)!;
    it.refs.add(name);
    const value = it.vars[name];
    if (op === ':-') return value === undefined || value === '' ? (arg ?? '') : value;
    if (op === '-') return value ?? arg ?? '';
    if (op === ':?' || op === '?') {
      it.required.add(name);
      if (value === undefined || (op === ':?' && value === '')) throw new Error(`compose requires ${name} to be set (${arg})`);
    }
    return value ?? '';
  });
}

export function serviceEnv(svc: ComposeService, it: Interpolation): Record<string, string> {
  const out: Record<string, string> = {};
  const entries: [string, string][] = Array.isArray(svc.environment)
    ? svc.environment.map((e) => {
        const i = e.indexOf('=');
        return i < 0 ? [e, ''] : [e.slice(0, i), e.slice(i + 1)];
      })
    : Object.entries(svc.environment ?? {}).map(([k, v]) => [k, v === null ? '' : String(v)]);
  for (const [k, v] of entries) out[k] = interpolate(v, it);
  return out;
}

/** Short (`[ip:]host:container[/proto]`) and long port syntax → { host, container }. */
export function portMappings(svc: ComposeService): { host: number | null; container: number }[] {
  return (svc.ports ?? []).map((p) => {
    if (typeof p === 'object') return { host: p.published === undefined ? null : Number(p.published), container: Number(p.target) };
    const parts = String(p).replace(/\/(tcp|udp)$/, '').split(':');
    const container = Number(parts.at(-1));
    return { host: parts.length >= 2 ? Number(parts.at(-2)) : null, container };
  });
}

/** Bind mounts of a service: host path (relative to the compose file) → container path. */
export function bindMounts(svc: ComposeService): { source: string; target: string }[] {
  return (svc.volumes ?? []).flatMap((v) => {
    if (typeof v === 'object') return v.type === 'bind' && v.source ? [{ source: v.source, target: v.target }] : [];
    const [source, target] = v.split(':');
    return source && target && /^[./]/.test(source) ? [{ source, target }] : [];
  });
}

export function readCompose(): { text: string; compose: ComposeFile } {
  const text = readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8');
  return { text, compose: parseYaml(text) as ComposeFile };
}

/** The value `.env` gives the master password in these tests (any non-empty value). */
export const TEST_DOTENV = { KEYGATE_UPSTREAM_MASTER_PASSWORD: 'from-dot-env' };

/** Every service's environment as Compose computes it from `vars`. */
export function composeEnvironments(vars: Record<string, string> = TEST_DOTENV): { envs: Record<string, Record<string, string>>; it: Interpolation } {
  const { compose } = readCompose();
  const it = newInterpolation(vars);
  const envs = Object.fromEntries(Object.entries(compose.services).map(([name, svc]) => [name, serviceEnv(svc, it)]));
  return { envs, it };
}
