#!/usr/bin/env node
// Build step after tsc: compiles the JSON Schemas in schema/ into standalone Ajv validators,
// dist/state/schema-validators.js, so cgw-sync does not load Ajv's compiler and compile the schemas
// at every start. The generated module carries the schemas' hash; at run time a missing or stale
// file means compiling in-process instead (src/state/schema.ts).
import { writeFileSync } from 'node:fs';
import { standaloneValidatorsSource } from '../dist/state/schema-ajv.js';

const out = new URL('../dist/state/schema-validators.js', import.meta.url);
writeFileSync(out, standaloneValidatorsSource());
