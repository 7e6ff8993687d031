// The build precompiles the JSON Schemas into standalone validators (scripts/compile-schemas.mjs ->
// dist/state/schema-validators.js). They must be made from schema/ as it is now, and judge exactly
// as the validators Ajv compiles in-process (which vitest, running from src/, uses).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { compileValidators, standaloneValidatorsSource } from '../src/state/schema-ajv.js';
import { SCHEMA_FILES, type Kind } from '../src/state/schema-files.js';
import { precompiledValidators, type Validators } from '../src/state/schema.js';

const built = new URL('../dist/state/schema-validators.js', import.meta.url);
const scratch = mkdtempSync(path.join(os.tmpdir(), 'cgw-schema-precompiled-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const head = { apiVersion: 'cgw-sync/v1' };
/** Invalid documents of every kind: missing, unknown and mistyped fields, bad formats and patterns. */
const invalid: Array<[Kind, unknown]> = [
  ['Cluster', { ...head, kind: 'Cluster', name: 'Bad Name', guestSubnet: '10.5.5.0/33', gatewayIP: '10.5.5.999', nat: { mode: 'fast', extra: 1 } }],
  ['Cluster', { ...head, kind: 'Node' }],
  ['Node', { ...head, kind: 'Node', name: 'n1', uplink: { interface: 'way-too-long-interface-name', publicIP: 1 }, guestBridge: {}, hypervisor: 'vmware', trunks: ['a', 'a'], hyperviser: 'xen' }],
  ['Guest', { ...head, kind: 'Guest', name: 'g', node: 'n', ip: '10.5.5.1', mac: 'zz:16:3e:00:00:01', resources: { memoryMiB: 1, vcpus: 0 } }],
  ['Forwards', { ...head, kind: 'Forwards', forwards: [{ name: 'f', protocol: 'sctp', port: 70000, target: { guest: 'g' } }, 'x', { nodes: [] }] }],
  ['Forwards', []],
  ['AgentConfig', { ...head, kind: 'AgentConfig', source: { url: '', branch: 'a b' }, schedule: { cron: 5 } }],
];
const valid: Array<[Kind, unknown]> = [
  ['Forwards', { ...head, kind: 'Forwards', forwards: [{ name: 'f', protocol: 'tcp', port: 80, target: { guest: 'g', port: 8080 } }] }],
  ['AgentConfig', { ...head, kind: 'AgentConfig', source: { url: 'https://git.example.org/state.git' } }],
];

/** What a validator says about a copy of `data`: its errors, and the data with defaults applied. */
function judge(validators: Validators, kind: Kind, data: unknown) {
  const copy = structuredClone(data);
  const validate = validators(kind);
  const ok = validate(copy);
  return { ok, errors: validate.errors ?? null, data: copy };
}

describe('precompiled schema validators', () => {
  it('the build made them from schema/ as it is now (regenerated here, byte for byte)', () => {
    expect(readFileSync(built, 'utf8')).toBe(standaloneValidatorsSource());
  });

  it('they are used: the built module matches the schemas, and exports every kind', async () => {
    const precompiled = await precompiledValidators(built);
    expect(precompiled).toBeDefined();
    for (const kind of Object.keys(SCHEMA_FILES) as Kind[]) expect(typeof precompiled!(kind)).toBe('function');
  });

  it.each([...invalid, ...valid].map(([kind, data], i) => [i, kind, data] as const))(
    'document %i (%s): the same errors and defaults as the in-process validators',
    async (_i, kind, data) => {
      const precompiled = (await precompiledValidators(built))!;
      const compiled = compileValidators();
      const a = judge(precompiled, kind, data);
      const b = judge(compiled, kind, data);
      expect(a).toEqual(b);
      expect(a.ok).toBe(valid.some(([, d]) => d === data));
    },
  );

  it('a module made from other schemas is not used (nor even imported)', async () => {
    const stale = path.join(scratch, 'schema-validators.js');
    const text = readFileSync(built, 'utf8').replace(/^export const schemaHash = "[0-9a-f]{64}";$/m, `export const schemaHash = "${'0'.repeat(64)}";\nthrow new Error('imported');`);
    writeFileSync(stale, text);
    await expect(precompiledValidators(pathToFileURL(stale))).resolves.toBeUndefined();
    await expect(precompiledValidators(pathToFileURL(path.join(scratch, 'missing.js')))).resolves.toBeUndefined();
    expect(fileURLToPath(built)).toMatch(/dist\/state\/schema-validators\.js$/);
  });
});
