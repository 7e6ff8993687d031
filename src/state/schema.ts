// Structural validation of one state document against the JSON Schemas in schema/ (the same files
// editors use through `# yaml-language-server: $schema=...`). Also applies the schema defaults.
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ErrorObject, ValidateFunction } from 'ajv';
import { quoteValue, type FieldPath } from './diagnostics.js';
import { schemaHash, type Kind } from './schema-files.js';

export type { Kind } from './schema-files.js';

/** A schema violation, before it is given a file position. */
export interface SchemaProblem {
  path: FieldPath;
  /**
   * An unknown property: reported at its key, and harmless to the rest of the object (which still has
   * every field it needs), so later checks can still look at that object.
   */
  unknownProperty: boolean;
  message: string;
}

export type Validators = (kind: Kind) => ValidateFunction;

/** Written by the build (scripts/compile-schemas.mjs) next to the compiled schema.js. */
export const PRECOMPILED_VALIDATORS = new URL('./schema-validators.js', import.meta.url);

/**
 * The build's precompiled validators, when present and made from the schema/ files as they are
 * now; else undefined (then they are compiled in-process, as under vitest, which runs from src/).
 */
export async function precompiledValidators(url: URL = PRECOMPILED_VALIDATORS): Promise<Validators | undefined> {
  const file = fileURLToPath(url);
  if (!existsSync(file)) return undefined;
  // Checked before the import: a stale module is never even run.
  const made = /^export const schemaHash = "([0-9a-f]{64})";$/m.exec(readFileSync(file, 'utf8'))?.[1];
  if (made !== schemaHash()) return undefined;
  const module = (await import(url.href)) as Record<string, unknown>;
  return (kind) => module[kind] as ValidateFunction;
}

// Compiling the schemas takes Ajv's compiler and most of a CLI start: a build does it ahead of time.
const validatorFor: Validators = (await precompiledValidators()) ?? (await import('./schema-ajv.js')).compileValidators();

/**
 * Validates `data` (plain JS from YAML) as a document of `kind`. Mutates `data`: omitted optional
 * fields get their schema defaults.
 */
export function validateDocument(kind: Kind, data: unknown): SchemaProblem[] {
  const validate = validatorFor(kind);
  if (validate(data)) return [];
  return (validate.errors ?? []).map(toProblem);
}

function toProblem(error: ErrorObject): SchemaProblem {
  const path = pointerToPath(error.instancePath);
  const got = describeValue(error.data);
  const problem = (message: string): SchemaProblem => ({ path, unknownProperty: false, message });
  switch (error.keyword) {
    case 'required': {
      const missing = String(error.params.missingProperty);
      return { path: [...path, missing], unknownProperty: false, message: `missing required property "${missing}"` };
    }
    case 'additionalProperties': {
      const extra = String(error.params.additionalProperty);
      const allowed = Object.keys(error.parentSchema?.properties ?? {});
      const hint = closest(extra, allowed);
      const message =
        `unknown property ${quoteValue(extra)}` + (hint ? ` (did you mean "${hint}"?)` : `; allowed: ${allowed.join(', ')}`);
      return { path: [...path, extra], unknownProperty: true, message };
    }
    case 'pattern':
      return problem(`${error.parentSchema?.patternErrorMessage ?? error.message} (got ${got})`);
    case 'format': // only "ipv4" is used
      return problem(`must be an IPv4 address, e.g. 10.5.5.201 (got ${got})`);
    case 'type':
      return problem(`must be ${article(String(error.params.type))} (got ${got})`);
    case 'enum':
      return problem(`must be one of ${error.params.allowedValues.join(', ')} (got ${got})`);
    case 'const':
      return problem(`must be ${JSON.stringify(error.params.allowedValue)} (got ${got})`);
    case 'uniqueItems':
      return {
        path: [...path, error.params.i],
        unknownProperty: false,
        message: `duplicate entry: items ${error.params.j} and ${error.params.i} are equal`,
      };
    default:
      return problem(`${error.message} (got ${got})`);
  }
}

/** "/forwards/2/port" -> ["forwards", 2, "port"] (JSON Pointer, RFC 6901). */
function pointerToPath(pointer: string): FieldPath {
  if (pointer === '') return [];
  return pointer
    .slice(1)
    .split('/')
    .map((raw) => raw.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((segment) => (/^(0|[1-9][0-9]*)$/.test(segment) ? Number(segment) : segment));
}

/** The offending value, escaped and capped: it comes from an untrusted file. */
function describeValue(value: unknown): string {
  return value === null || value === undefined ? 'nothing' : quoteValue(value);
}

function article(type: string): string {
  const names: Record<string, string> = { object: 'a mapping', array: 'a list', integer: 'an integer' };
  return names[type] ?? `a ${type}`;
}

/** The allowed property a typo most likely meant (edit distance <= 2), if any. */
function closest(word: string, candidates: string[]): string | undefined {
  // A word much longer than every candidate is more than 2 edits away (and a huge key would cost).
  if (!candidates.some((c) => Math.abs(c.length - word.length) <= 2)) return undefined;
  const scored = candidates.map((c) => ({ c, d: editDistance(word.toLowerCase(), c.toLowerCase()) }));
  const best = scored.sort((a, b) => a.d - b.d)[0];
  return best && best.d <= 2 ? best.c : undefined;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length];
}
