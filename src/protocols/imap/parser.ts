/**
 * IMAP command parsing (RFC 9051 §9): a framed command — tag, name and
 * arguments, with literals inline as `{n}\r\n<n bytes>` — into tokens. The
 * framer has already bounded every size; this module only reads syntax.
 */

export type Token =
  | { type: 'atom'; value: string }
  /** A quoted string or a literal. */
  | { type: 'string'; value: string; literal: boolean }
  | { type: 'list'; items: Token[] };

export interface ImapRequest {
  tag: string;
  /** Upper-cased command name. */
  name: string;
  args: Token[];
}

/** A command that cannot be read; `tag` is null when not even the tag could be (answered with `* BAD`). */
export class ImapSyntaxError extends Error {
  constructor(
    message: string,
    readonly tag: string | null,
  ) {
    super(message);
    this.name = 'ImapSyntaxError';
  }
}

const SP = 0x20;
const DQUOTE = 0x22;
const BACKSLASH = 0x5c;
const LPAREN = 0x28;
const RPAREN = 0x29;
const LBRACE = 0x7b;
const RBRACE = 0x7d;
const PLUS = 0x2b;
const CR = 0x0d;
const LF = 0x0a;
const MAX_LIST_DEPTH = 8;

function isCtl(b: number): boolean {
  return b < 0x20 || b === 0x7f;
}

/** ATOM-CHAR plus `]` (ASTRING-CHAR) and 8-bit bytes (UTF-8 user names); stops at specials. */
function isAtomByte(b: number): boolean {
  return !isCtl(b) && b !== SP && b !== LPAREN && b !== RPAREN && b !== LBRACE && b !== DQUOTE && b !== BACKSLASH;
}

/** A tag is 1*<ASTRING-CHAR except "+">, and we also refuse `*` so untagged replies cannot be forged. */
function isTagByte(b: number): boolean {
  return isAtomByte(b) && b !== PLUS && b !== 0x2a && b !== 0x25 && b < 0x80;
}

/** Reads the tag alone (to answer a command refused before parsing, e.g. an oversized literal); null if there is none. */
export function peekTag(raw: Buffer): string | null {
  let i = 0;
  while (i < raw.length && isTagByte(raw[i]!)) i++;
  return i > 0 && (i === raw.length || raw[i] === SP) ? raw.toString('latin1', 0, i) : null;
}

class Reader {
  pos = 0;
  constructor(
    readonly raw: Buffer,
    readonly tag: string | null,
  ) {}

  get done(): boolean {
    return this.pos >= this.raw.length;
  }

  peek(): number | undefined {
    return this.raw[this.pos];
  }

  fail(message: string): never {
    throw new ImapSyntaxError(message, this.tag);
  }
}

function readAtom(r: Reader): string {
  const start = r.pos;
  while (!r.done && isAtomByte(r.peek()!)) r.pos++;
  if (r.pos === start) r.fail('Expected an atom');
  return r.raw.toString('utf8', start, r.pos);
}

function readQuoted(r: Reader): string {
  r.pos++; // opening quote
  const bytes: number[] = [];
  for (;;) {
    if (r.done) r.fail('Unterminated quoted string');
    const b = r.raw[r.pos++]!;
    if (b === DQUOTE) break;
    if (b === CR || b === LF || b === 0) r.fail('Invalid character in quoted string');
    if (b === BACKSLASH) {
      const next = r.raw[r.pos++];
      if (next !== DQUOTE && next !== BACKSLASH) r.fail('Invalid escape in quoted string');
      bytes.push(next);
      continue;
    }
    bytes.push(b);
  }
  return Buffer.from(bytes).toString('utf8');
}

function readLiteral(r: Reader): string {
  r.pos++; // {
  const start = r.pos;
  while (!r.done && r.peek()! >= 0x30 && r.peek()! <= 0x39) r.pos++;
  if (r.pos === start) r.fail('Invalid literal');
  const size = Number(r.raw.toString('latin1', start, r.pos));
  if (r.peek() === PLUS) r.pos++;
  if (r.raw[r.pos] !== RBRACE || r.raw[r.pos + 1] !== CR || r.raw[r.pos + 2] !== LF) r.fail('Invalid literal');
  r.pos += 3;
  if (r.pos + size > r.raw.length) r.fail('Truncated literal');
  const value = r.raw.subarray(r.pos, r.pos + size);
  if (value.includes(0)) r.fail('NUL in literal');
  r.pos += size;
  return value.toString('utf8');
}

function readToken(r: Reader, depth: number): Token {
  const b = r.peek();
  if (b === DQUOTE) return { type: 'string', value: readQuoted(r), literal: false };
  if (b === LBRACE) return { type: 'string', value: readLiteral(r), literal: true };
  if (b === LPAREN) {
    if (depth >= MAX_LIST_DEPTH) r.fail('Lists nested too deeply');
    r.pos++;
    const items: Token[] = [];
    for (;;) {
      if (r.done) r.fail('Unterminated list');
      if (r.peek() === RPAREN) {
        r.pos++;
        return { type: 'list', items };
      }
      if (items.length > 0) {
        if (r.peek() !== SP) r.fail('Expected a space');
        r.pos++;
      }
      items.push(readToken(r, depth + 1));
    }
  }
  return { type: 'atom', value: readAtom(r) };
}

/**
 * Parses one framed command. Throws ImapSyntaxError (with the tag when one
 * was read) for anything that is not `tag SP name *(SP argument)`.
 */
export function parseCommand(raw: Buffer): ImapRequest {
  const tag = peekTag(raw);
  if (tag === null) throw new ImapSyntaxError(raw.length === 0 ? 'Empty command' : 'Invalid tag', null);
  const r = new Reader(raw, tag);
  r.pos = tag.length;
  if (r.done) r.fail('Missing command');
  r.pos++; // SP
  const start = r.pos;
  while (!r.done && r.peek() !== SP) {
    const c = r.peek()!;
    if (!((c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d)) r.fail('Invalid command name');
    r.pos++;
  }
  if (r.pos === start) r.fail('Missing command');
  const name = raw.toString('latin1', start, r.pos).toUpperCase();
  const args: Token[] = [];
  while (!r.done) {
    if (r.peek() !== SP) r.fail('Expected a space');
    r.pos++;
    if (r.done) break; // tolerate one trailing space, as several clients send it
    args.push(readToken(r, 0));
  }
  return { tag, name, args };
}
