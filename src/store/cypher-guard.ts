import { ForgeError } from '../errors.ts';

/** A query an overlay may not run; `details.reason` says which rule refused it. */
export class CypherRejectedError extends ForgeError {
  constructor(reason: string, message: string, at: number) {
    super('CYPHER_REJECTED', `Cypher refused: ${message}. Overlays run one read or write statement with $parameters; no procedures outside the allowlist, no subqueries in transactions, no file loading, no administration.`, {
      details: { reason, at },
    });
  }
}

export interface CypherGuardOptions {
  /** Procedures an overlay may CALL, by exact name (case-insensitive), e.g. `db.labels`. Default: none. */
  allowProcedures?: readonly string[];
  /** Allow `CALL { … }` subqueries (never `… IN TRANSACTIONS`). Default false. */
  allowSubqueries?: boolean;
  /** Longest query accepted (characters). Default 16 Ki. */
  maxLength?: number;
}

type TokenKind = 'word' | 'string' | 'quoted' | 'param' | 'number' | 'symbol';

interface Token {
  kind: TokenKind;
  /** Upper-cased for words (keywords compare case-insensitively); the raw text otherwise. */
  text: string;
  at: number;
}

/** Keywords that only appear in administration and schema commands. */
const ADMIN_KEYWORDS = new Set(['GRANT', 'DENY', 'REVOKE', 'SHOW', 'DROP', 'TERMINATE', 'USE', 'ALTER', 'RENAME', 'ENABLE', 'DISABLE', 'DEALLOCATE', 'REALLOCATE']);
/** What follows CREATE / START / STOP in an administration or schema command (never in a graph pattern). */
const ADMIN_OBJECTS = new Set(['DATABASE', 'DATABASES', 'USER', 'USERS', 'ROLE', 'ROLES', 'ALIAS', 'COMPOSITE', 'SERVER', 'INDEX', 'CONSTRAINT', 'FULLTEXT', 'TEXT', 'RANGE', 'POINT', 'LOOKUP', 'VECTOR', 'BTREE', 'OR']);
/** Function namespaces that can run arbitrary Cypher, touch files or the DBMS when called as functions. */
const FORBIDDEN_FUNCTION_NAMESPACES = ['apoc.', 'dbms.', 'gds.'];
const DEFAULT_MAX_LENGTH = 16 * 1024;

const isWordStart = (c: string): boolean => /[A-Za-z_\u0080-\uffff]/.test(c);
const isWordPart = (c: string): boolean => /[A-Za-z0-9_\u0080-\uffff]/.test(c);

/**
 * Splits Cypher into tokens, understanding string literals (with escapes), backtick-quoted names, line and block
 * comments, and parameters, so that a keyword inside a string or comment is never mistaken for one in the query,
 * and one split by tabs, newlines or comments is never missed.
 */
export function tokenize(query: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  const fail = (message: string): never => {
    throw new CypherRejectedError('syntax', message, i);
  };
  while (i < query.length) {
    const c = query[i]!;
    if (/\s/.test(c)) {
      i++;
    } else if (c === '/' && query[i + 1] === '/') {
      while (i < query.length && query[i] !== '\n') i++;
    } else if (c === '/' && query[i + 1] === '*') {
      const end = query.indexOf('*/', i + 2);
      if (end < 0) fail('an unterminated /* comment');
      i = end + 2;
    } else if (c === "'" || c === '"') {
      const start = i++;
      while (i < query.length && query[i] !== c) i += query[i] === '\\' ? 2 : 1;
      if (i >= query.length) fail('an unterminated string');
      i++;
      tokens.push({ kind: 'string', text: query.slice(start, i), at: start });
    } else if (c === '`') {
      const start = i++;
      for (;;) {
        if (i >= query.length) fail('an unterminated `name`');
        if (query[i] === '`' && query[i + 1] === '`') i += 2;
        else if (query[i] === '`') break;
        else i++;
      }
      i++;
      tokens.push({ kind: 'quoted', text: query.slice(start + 1, i - 1).replaceAll('``', '`'), at: start });
    } else if (c === '$') {
      const start = i++;
      if (query[i] === '`') {
        const end = query.indexOf('`', i + 1);
        if (end < 0) fail('an unterminated $`parameter`');
        i = end + 1;
      } else {
        while (i < query.length && isWordPart(query[i]!)) i++;
      }
      if (i === start + 1) fail('a $ without a parameter name');
      tokens.push({ kind: 'param', text: query.slice(start, i), at: start });
    } else if (/[0-9]/.test(c)) {
      const start = i;
      while (i < query.length && /[0-9A-Za-z_.]/.test(query[i]!)) i++;
      tokens.push({ kind: 'number', text: query.slice(start, i), at: start });
    } else if (isWordStart(c)) {
      const start = i;
      while (i < query.length && isWordPart(query[i]!)) i++;
      tokens.push({ kind: 'word', text: query.slice(start, i).toUpperCase(), at: start });
    } else {
      tokens.push({ kind: 'symbol', text: c, at: i });
      i++;
    }
  }
  return tokens;
}

/** A dotted name starting at `start` (words or `quoted` parts joined by `.`): its text and the index after it. */
function dottedName(tokens: readonly Token[], query: string, start: number): { name: string; next: number } {
  const parts: string[] = [];
  let i = start;
  while (i < tokens.length) {
    const token = tokens[i]!;
    if (token.kind === 'word') parts.push(query.slice(token.at, token.at + token.text.length));
    else if (token.kind === 'quoted') parts.push(token.text);
    else break;
    i++;
    if (tokens[i]?.kind === 'symbol' && tokens[i]?.text === '.') i++;
    else break;
  }
  return { name: parts.join('.'), next: i };
}

/**
 * Checks Cypher before an overlay may run it: one statement, no `LOAD CSV`, no `CALL` of a procedure outside the
 * allowlist, no `CALL { … }` unless allowed and never `IN TRANSACTIONS`, no `USING` (periodic commit, planner
 * hints), no administration or schema commands, no functions that run Cypher or touch the DBMS. A real tokenizer,
 * not a substring list: strings, comments and backtick names cannot hide or fake a keyword.
 */
export class CypherGuard {
  readonly #allowed: Set<string>;
  readonly #allowSubqueries: boolean;
  readonly #maxLength: number;

  constructor(options: CypherGuardOptions = {}) {
    this.#allowed = new Set((options.allowProcedures ?? []).map((p) => p.toLowerCase()));
    this.#allowSubqueries = options.allowSubqueries ?? false;
    this.#maxLength = options.maxLength ?? DEFAULT_MAX_LENGTH;
  }

  /** Throws {@link CypherRejectedError} when the query breaks a rule; returns nothing when it may run. */
  check(query: unknown): void {
    if (typeof query !== 'string' || query.trim() === '') throw new CypherRejectedError('empty', 'the query is empty or not a string', 0);
    if (query.length > this.#maxLength) throw new CypherRejectedError('too-long', `the query is ${query.length} characters; the limit is ${this.#maxLength}`, this.#maxLength);
    const tokens = tokenize(query);
    const word = (i: number, text: string): boolean => tokens[i]?.kind === 'word' && tokens[i]?.text === text;
    const symbol = (i: number, text: string): boolean => tokens[i]?.kind === 'symbol' && tokens[i]?.text === text;

    for (let i = 0; i < tokens.length; i++) {
      const token = tokens[i]!;
      if (token.kind === 'symbol' && token.text === ';') {
        if (i < tokens.length - 1) throw new CypherRejectedError('multiple-statements', 'more than one statement', token.at);
        continue;
      }
      if (token.kind !== 'word') continue;
      // A word after `.` or before `:`-less property access is a name, not a keyword (n.show, c.drop).
      if (symbol(i - 1, '.') || symbol(i - 1, ':')) continue;
      const keyword = token.text;
      if (keyword === 'LOAD' && word(i + 1, 'CSV')) throw new CypherRejectedError('load-csv', 'LOAD CSV reads files and URLs', token.at);
      if (keyword === 'USING') throw new CypherRejectedError('using', 'USING (periodic commit or a planner hint)', token.at);
      if (keyword === 'IN' && (word(i + 1, 'TRANSACTIONS') || (tokens[i + 1]?.kind === 'number' && word(i + 2, 'CONCURRENT')))) {
        throw new CypherRejectedError('in-transactions', 'CALL { … } IN TRANSACTIONS', token.at);
      }
      if (ADMIN_KEYWORDS.has(keyword) && !symbol(i + 1, '(') && !symbol(i + 1, '.')) {
        throw new CypherRejectedError('administration', `${keyword} (an administration or schema command)`, token.at);
      }
      if ((keyword === 'CREATE' || keyword === 'START' || keyword === 'STOP') && tokens[i + 1]?.kind === 'word' && ADMIN_OBJECTS.has(tokens[i + 1]!.text)) {
        throw new CypherRejectedError('administration', `${keyword} ${tokens[i + 1]!.text} (an administration or schema command)`, token.at);
      }
      if (keyword === 'CALL') {
        if (symbol(i + 1, '{') || symbol(i + 1, '(')) {
          if (!this.#allowSubqueries) throw new CypherRejectedError('subquery', 'CALL { … } subqueries are not allowed for this overlay', token.at);
          continue;
        }
        const { name } = dottedName(tokens, query, i + 1);
        if (name === '') throw new CypherRejectedError('call', 'CALL without a procedure name', token.at);
        if (!this.#allowed.has(name.toLowerCase())) throw new CypherRejectedError('procedure', `CALL ${name} (not on the procedure allowlist)`, token.at);
        continue;
      }
      // Namespaced function calls: apoc.cypher.doIt(…) as a function, dbms.…(…).
      const { name, next } = dottedName(tokens, query, i);
      if (name.includes('.') && symbol(next, '(')) {
        const lower = name.toLowerCase();
        if (FORBIDDEN_FUNCTION_NAMESPACES.some((ns) => lower.startsWith(ns)) && !this.#allowed.has(lower)) {
          throw new CypherRejectedError('function', `${name}(…) (a function that can run Cypher or reach the DBMS)`, token.at);
        }
        i = next - 1;
      }
    }
  }
}
