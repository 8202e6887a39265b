import type { FastifyError, FastifyRequest } from 'fastify';
import { KEY_SCAN_RE } from '../keys/format.js';
import { SAFE_TEXT_PATTERN, UNSAFE_TEXT_MESSAGE } from '../keys/names.js';

/**
 * Request-validation errors as the API answers them: one detail per field.
 * An enumerated value that is not one of the known ones is said the way the
 * CLI says it — `unknown scope "bogus" (known: *, smtp, …)` — once, whether
 * the schema is an `enum` or a union of literals (which ajv reports as one
 * error per literal plus one for the union).
 */

export interface ValidationDetail {
  field: string;
  message: string;
}

/** What the values of a field are called in messages; any other field is named by itself. */
const ENUM_NOUNS: Record<string, string> = {
  scopes: 'scope',
  tls: 'TLS mode',
  login: 'login mode',
  masterStyle: 'master style',
};

/** ajv's error object, as much of it as is read here. */
interface AjvError {
  keyword: string;
  instancePath: string;
  schemaPath: string;
  params: Record<string, unknown>;
  message?: string;
}

/** Longest echo of a client's bad value. */
const MAX_SHOWN = 64;

export function validationDetails(err: FastifyError, req: FastifyRequest): ValidationDetail[] {
  const context = err.validationContext ?? 'body';
  const errors = (err.validation ?? []) as AjvError[];
  const data = ({ body: req.body, querystring: req.query, params: req.params, headers: req.headers } as Record<string, unknown>)[context];
  const details: ValidationDetail[] = [];
  const seen = new Set<string>();
  const add = (d: ValidationDetail): void => {
    const key = `${d.field}\0${d.message}`;
    if (!seen.has(key)) (seen.add(key), details.push(d));
  };

  // Errors inside a failed union or enum at one place are one problem: say it once.
  const enums = enumProblems(errors);
  for (const e of errors) {
    const field = `${context}${e.instancePath.replaceAll('/', '.')}`;
    const known = enums.get(e.instancePath);
    if (known) {
      add({ field, message: `unknown ${nounOf(e.instancePath)} ${shown(valueAt(data, e.instancePath))} (known: ${known.values.join(', ')})` });
      continue;
    }
    if (e.keyword === 'additionalProperties') add({ field: `${field}.${String(e.params.additionalProperty)}`, message: 'unknown field' });
    else if (e.keyword === 'required') add({ field: `${field}.${String(e.params.missingProperty)}`, message: e.message ?? 'required' });
    else if (e.keyword === 'pattern' && e.params.pattern === SAFE_TEXT_PATTERN) add({ field, message: UNSAFE_TEXT_MESSAGE });
    else add({ field, message: e.message ?? 'invalid' });
  }
  return details;
}

/**
 * Per data path, the enumerated values a failed `enum` or union of `const`s
 * allowed. Every other error at that path (a `null` branch of a nullable
 * enum, the union's own error) is about the same value and is not repeated.
 */
function enumProblems(errors: AjvError[]): Map<string, { values: unknown[] }> {
  const out = new Map<string, { values: unknown[] }>();
  for (const e of errors) {
    if (e.keyword === 'enum' && Array.isArray(e.params.allowedValues)) out.set(e.instancePath, { values: e.params.allowedValues });
  }
  for (const e of errors) {
    if (e.keyword !== 'anyOf' || out.has(e.instancePath)) continue;
    const union = e.schemaPath.replace(/\/anyOf$/, '');
    const branches = errors.filter((b) => b.instancePath === e.instancePath && b.schemaPath.startsWith(`${union}/anyOf/`));
    const consts = branches.filter((b) => b.keyword === 'const').map((b) => b.params.allowedValue);
    // A union of literals only (type checks of its branches aside), not a union of shapes.
    if (consts.length > 0 && branches.every((b) => b.keyword === 'const' || b.keyword === 'type')) out.set(e.instancePath, { values: consts });
  }
  return out;
}

function nounOf(instancePath: string): string {
  const field = instancePath.split('/').filter((p) => p !== '' && !/^\d+$/.test(p)).at(-1) ?? 'value';
  return ENUM_NOUNS[field] ?? field;
}

function valueAt(data: unknown, instancePath: string): unknown {
  let node = data;
  for (const part of instancePath.split('/').slice(1)) node = node !== null && typeof node === 'object' ? (node as Record<string, unknown>)[part] : undefined;
  return node;
}

/** The client's own value, quoted and cut short (it is echoed back to the client only), a key in it masked. */
function shown(value: unknown): string {
  const text = (JSON.stringify(value) ?? String(value)).replace(KEY_SCAN_RE, 'kg_[REDACTED]');
  return text.length > MAX_SHOWN ? `${text.slice(0, MAX_SHOWN)}…` : text;
}
