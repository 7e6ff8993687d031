// The plain scalars of the YAML 1.2 core schema, resolved as the careful parser (the yaml
// package's core schema) resolves them, so that the fast reading of a valid state never loads that
// package (~30 ms of a `cgw-sync validate`). Same patterns, same order, same values:
// test/state-fast-parse.test.ts compares them with the package's own tags.

const DIGITS = [...'0123456789'];

export interface CoreScalar {
  tag: string;
  pattern: RegExp;
  /** The characters a scalar the pattern matches can start with ('' for the empty scalar). */
  firstChars: readonly string[];
  resolve(source: string): unknown;
}

/** In the careful parser's order: the first whose pattern matches decides. */
export const CORE_SCALARS: readonly CoreScalar[] = [
  { tag: 'tag:yaml.org,2002:null', pattern: /^(?:~|[Nn]ull|NULL)?$/, firstChars: ['', '~', 'N', 'n'], resolve: () => null },
  { tag: 'tag:yaml.org,2002:bool', pattern: /^(?:[Tt]rue|TRUE|[Ff]alse|FALSE)$/, firstChars: ['T', 't', 'F', 'f'], resolve: (s) => s[0] === 't' || s[0] === 'T' },
  { tag: 'tag:yaml.org,2002:int', pattern: /^0o[0-7]+$/, firstChars: ['0'], resolve: (s) => Number.parseInt(s.substring(2), 8) },
  { tag: 'tag:yaml.org,2002:int', pattern: /^[-+]?[0-9]+$/, firstChars: ['-', '+', ...DIGITS], resolve: (s) => Number.parseInt(s, 10) },
  { tag: 'tag:yaml.org,2002:int', pattern: /^0x[0-9a-fA-F]+$/, firstChars: ['0'], resolve: (s) => Number.parseInt(s.substring(2), 16) },
  {
    tag: 'tag:yaml.org,2002:float',
    pattern: /^(?:[-+]?\.(?:inf|Inf|INF)|\.nan|\.NaN|\.NAN)$/,
    firstChars: ['-', '+', '.'],
    resolve: (s) => (s.slice(-3).toLowerCase() === 'nan' ? Number.NaN : s[0] === '-' ? Number.NEGATIVE_INFINITY : Number.POSITIVE_INFINITY),
  },
  { tag: 'tag:yaml.org,2002:float', pattern: /^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$/, firstChars: ['-', '+', '.', ...DIGITS], resolve: (s) => Number.parseFloat(s) },
  { tag: 'tag:yaml.org,2002:float', pattern: /^[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)$/, firstChars: ['-', '+', '.', ...DIGITS], resolve: (s) => Number.parseFloat(s) },
];
