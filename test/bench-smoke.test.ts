// `npm run bench` in miniature: the built benchmark at 200 forwards, one round, without the lab;
// the table has every row (the lab's say why they did not run) and the JSON beside it parses
// with the same rows and real figures. Needs root and a built dist/ (scripts/test.sh builds).
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Row } from '../src/bench/report.js';

const BENCH = path.resolve('dist/bench/main.js');

describe('benchmark smoke run', () => {
  let tmp: string;
  let table: string;
  let json: { rows: Row[]; meta: { sizes: number[] } };

  beforeAll(async () => {
    if (!existsSync(BENCH)) throw new Error(`${BENCH} is missing: run \`npm run build\``);
    tmp = await mkdtemp(path.join(tmpdir(), 'cgw-bench-smoke-'));
    const file = path.join(tmp, 'bench.json');
    const env = { CGW_BENCH_SIZES: '200', CGW_BENCH_ROUNDS: '1', CGW_BENCH_LAB: '0' };
    const r = await execa(process.execPath, ['--expose-gc', BENCH, '--json-file', file], { reject: false, env, timeout: 100_000 });
    expect(r.exitCode, String(r.stderr)).toBe(0);
    table = String(r.stdout);
    json = JSON.parse(await readFile(file, 'utf8'));
  }, 120_000);

  afterAll(async () => {
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('prints one line per row, in the order of the JSON, with the goals', () => {
    const whats = json.rows.map((r) => r.what);
    expect(json.rows.map((r) => r.id)).toEqual(['one-forward-change', 'one-forward-apply', 'no-op-cycle', 'agent-rss', 'validate', 'cli-start', 'push-schedule', 'push-webhook']);
    const lines = table.split('\n');
    const at = whats.map((w) => lines.findIndex((l) => l.startsWith(w)));
    expect(at.every((i) => i > 0)).toBe(true);
    expect([...at].sort((a, b) => a - b)).toEqual(at);
    expect(table).toContain('< 50 ms');
    expect(table).toContain('< 250 ms');
    expect(lines.find((l) => l.startsWith('push-to-converged, 2 lab nodes, schedule only'))).toContain('off (CGW_BENCH_LAB=0)');
  });

  it('measures every row that ran beside its floor, at the size asked for', () => {
    expect(json.meta.sizes).toEqual([200]);
    for (const r of json.rows.filter((x) => !x.id.startsWith('push-'))) {
      expect(r.value, r.what).toBeGreaterThan(0);
      expect(r.floor?.value, r.what).toBeGreaterThan(0);
      if (r.id !== 'cli-start') expect(r.forwards).toBe(200);
    }
    const oneForward = json.rows.find((r) => r.id === 'one-forward-change')!;
    expect(Object.keys(oneForward.phases ?? {})).toEqual(expect.arrayContaining(['load', 'plan', 'apply', 'remember', 'publish', 'save', 'rest']));
    // Converged comes before the end of the cycle, which publishes the report after it.
    expect(oneForward.convergedMs).toBeGreaterThan(0);
    expect(oneForward.convergedMs).toBeLessThan(oneForward.value!);
    // The apply in it is the converged part without the fetch.
    const apply = json.rows.find((r) => r.id === 'one-forward-apply')!;
    expect(apply.value).toBeLessThan(oneForward.convergedMs!);
    expect(apply.value).toBeGreaterThan(0);
    // The cycle's external steps by the system tools (git against the same server, raw nft -f), each measured.
    for (const step of ['fetch', 'nft', 'push'] as const) expect(oneForward.systemSteps?.[step], step).toBeGreaterThan(0);
    expect(table).toMatch(/same steps by the system tools, same run: git fetch [\d.]+ ms \(source phase \d+ ms\), nft -f/);
    for (const r of json.rows.filter((x) => x.id.startsWith('push-'))) expect(r.missing).toBeTruthy();
  });
});
