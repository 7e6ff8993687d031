// The JSON Schema files of the state format (schema/, the same files editors use) and their hash.
// Light on purpose: the CLI reads this at start to check the precompiled validators are current.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

export type Kind = 'Cluster' | 'Node' | 'Guest' | 'Forwards' | 'AgentConfig';

export const SCHEMA_FILES: Record<Kind, string> = {
  Cluster: 'cluster.schema.json',
  Node: 'node.schema.json',
  Guest: 'guest.schema.json',
  Forwards: 'forwards.schema.json',
  AgentConfig: 'agent.schema.json',
};

// schema/ sits at the package root: two levels up from both src/state/ (vitest) and dist/state/ (tsc).
const schemaDir = new URL('../../schema/', import.meta.url);

/** Every schema file, the shared definitions first. */
export function readSchemas(): Array<{ file: string; text: string }> {
  return ['common.schema.json', ...Object.values(SCHEMA_FILES)].map((file) => ({ file, text: readFileSync(new URL(file, schemaDir), 'utf8') }));
}

/** SHA-256 over the names and contents of the schema files. */
export function schemaHash(schemas = readSchemas()): string {
  const hash = createHash('sha256');
  for (const { file, text } of schemas) hash.update(`${file}\0${text}\0`);
  return hash.digest('hex');
}
