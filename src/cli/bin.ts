#!/usr/bin/env node
// Entry point of the `cgw-sync` binary; main() stays importable for tests.
import { main } from './main.js';

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`cgw-sync: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  },
);
