// The fast reading of a state file (src/state/yaml-fast.ts) must give exactly what the careful one
// (src/state/yaml-source.ts) gives, or decline: same data, same object positions, a value count
// never below the careful one, and every hostile or unusual file left to the careful reading, which
// enforces the limits and reports the problem with its position.
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { writeSyntheticStateRepo } from '../src/bench/synthetic.js';
import { STATE_LIMITS } from '../src/state/files.js';
import { CLI_BIN } from './helpers/agent-fixture.js';
import { loadState } from '../src/state/load.js';
import { isScalar, LineCounter, Parser, Schema as YamlSchema } from 'yaml';
import { CORE_SCALARS } from '../src/state/core-scalars.js';
import { fastPositions, ITEMS_PER_SLICE, parseYamlFast } from '../src/state/yaml-fast.js';
import { lineCounterOf, parseYamlSource, sourceRef } from '../src/state/yaml-source.js';

const exampleDir = fileURLToPath(new URL('../state-example/', import.meta.url));
const scratch = mkdtempSync(path.join(os.tmpdir(), 'cgw-state-fast-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const fullBudget = () => ({ nodes: STATE_LIMITS.yamlNodes });

/** Every YAML file below `dir`, as [relative path, text]. */
function yamlFiles(dir: string): Array<[string, string]> {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.yaml'))
    .sort()
    .map((f) => [f, readFileSync(path.join(dir, f), 'utf8')]);
}

/** The careful reading: data, diagnostics, and how much of the value budget it charged. */
function careful(file: string, text: string) {
  const budget = fullBudget();
  const parsed = parseYamlSource(file, text, budget);
  return { ...parsed, values: STATE_LIMITS.yamlNodes - budget.nodes };
}

/** Fast and careful agree on `text`: the same data, and each mapping's and list's position. */
function expectSameReading(file: string, text: string, itemsPerSlice?: number): ReturnType<typeof parseYamlFast> {
  const fast = parseYamlFast(text, fullBudget(), itemsPerSlice);
  const slow = careful(file, text);
  expect(slow.diagnostics).toEqual([]);
  expect(fast, `${file} was declined`).toBeDefined();
  expect(fast!.data).toEqual(slow.data);
  expect(fast!.values).toBeGreaterThanOrEqual(slow.values);
  expect(fast!.values).toBeLessThanOrEqual(slow.values * 1.1);
  const positions = fastPositions(file, text, fast!);
  const isObject = (v: unknown) => typeof v === 'object' && v !== null;
  const objectPaths: Array<Array<string | number>> = [[]];
  for (const [key, value] of Object.entries(fast!.data).filter(([, v]) => isObject(v))) {
    objectPaths.push([key]);
    if (Array.isArray(value)) value.forEach((item, i) => void (isObject(item) && objectPaths.push([key, i])));
  }
  for (const p of objectPaths) expect(positions.ref(p), `${file} ${JSON.stringify(p)}`).toEqual(sourceRef(slow.source, p));
  return fast;
}

describe('the fast reading gives what the careful one gives', () => {
  it.each(yamlFiles(exampleDir))('state-example/%s', (file, text) => void expectSameReading(file, text));

  it('a generated forwards file (block style, 2,000 forwards)', async () => {
    const dir = path.join(scratch, 'synthetic');
    await writeSyntheticStateRepo(dir, 2000);
    expectSameReading('forwards/bench.yaml', readFileSync(path.join(dir, 'forwards/bench.yaml'), 'utf8'));
  });

  it('flow style, comments, quoting, folding and every core scalar form', () => {
    const text = [
      '# a comment: with [brackets] and - dashes',
      '---',
      'apiVersion: cgw-sync/v1',
      'kind: Forwards',
      'forwards:',
      '  - { name: a, protocol: tcp, port: 0x50, target: { guest: "g\\u00e91", port: 0o17 } }',
      '  - name: b   # trailing comment',
      "    protocol: 'udp'",
      '    port: +22',
      '    target:',
      '      guest: g2',
      '      port: 1_000',
      'numbers: [1, -0, .5, 1e3, .inf, -.Inf, .nan, 010, 0b1]',
      'words: [true, True, FALSE, yes, no, on, ~, null, Null, "", 2024-01-01, 1:30]',
      'text: >',
      '  folded',
      '  lines',
      '',
      '  kept',
      'literal: |-',
      '  one',
      '   two',
      'plain: multi',
      '  line',
      'windows: "a\\r\\nb"\r',
      'empty:',
      '...',
      '',
    ].join('\n');
    expectSameReading('forwards/mixed.yaml', text);
  });
});

describe('plain scalars resolve as the careful parser resolves them', () => {
  const theirs = new YamlSchema({ schema: 'core' }).tags.flatMap((tag) => ('test' in tag && tag.test instanceof RegExp ? [tag] : []));
  const samples = ['', '~', 'null', 'Null', 'NULL', 'nULL', 'true', 'True', 'TRUE', 'tRUE', 'false', 'FALSE', '0', '-0', '+0', '007', '0o17', '0o8', '0x1F', '0xg', '12', '-12', '+12', '9007199254740993', '1.5', '1.50', '-.5', '+.5', '.5', '5.', '1e3', '1.5E-3', '.5e+2', '1e', '.inf', '-.Inf', '+.INF', '.nan', '.NaN', '.NAN', '-.nan', 'tcp', 'fwd-1', '1_000', '1:2'];

  it('the same tags with the same patterns, in the same order, giving the same values', () => {
    expect(CORE_SCALARS.map((c) => [c.tag, c.pattern.source])).toEqual(theirs.map((t) => [t.tag, (t.test as RegExp).source]));
    for (const [i, core] of CORE_SCALARS.entries()) {
      const tag = theirs[i] as { resolve: (s: string, onError: () => void, options: object) => unknown };
      for (const sample of samples) {
        if (!core.pattern.test(sample)) continue;
        const value = tag.resolve(sample, () => {}, {});
        expect(core.resolve(sample), `${core.tag} ${sample}`).toStrictEqual(isScalar(value) ? value.value : value);
      }
    }
  });

  it('no scalar a pattern matches starts with a character its first characters leave out', () => {
    const tails = ['', '0', '1', '7', 'f', 'F', 'x1F', 'o17', 'ull', 'ULL', 'rue', 'RUE', 'alse', 'ALSE', '.5', '5', '5.', '5e3', '.5E-3', 'inf', 'Inf', 'INF', 'nan', 'NaN', 'NAN', '.inf', '.nan', '1.5e+10'];
    for (const { pattern, firstChars } of CORE_SCALARS) {
      expect(pattern.test(''), pattern.source).toBe(firstChars.includes(''));
      for (let c = 0; c < 0x180; c++) {
        const char = String.fromCharCode(c);
        for (const tail of tails) if (pattern.test(char + tail)) expect(firstChars, `${pattern.source}: ${char}${tail}`).toContain(char);
      }
    }
  });

  it('line and column of an offset as yaml counts them', () => {
    const text = 'a: 1\n\nb:\n  - c\r\n  - d';
    const mine = lineCounterOf(text);
    const theirs = new LineCounter();
    Array.from(new Parser(theirs.addNewLine).parse(text));
    for (let offset = 0; offset <= text.length; offset++) expect(mine.linePos(offset), `offset ${offset}`).toEqual(theirs.linePos(offset));
  });
});

describe('a long list is read in slices, and the slices read like the whole file', () => {
  const head = 'apiVersion: cgw-sync/v1\nkind: Forwards\n';
  const item = (i: number) => `  - name: f${i}\n    protocol: tcp\n    port: ${10000 + i}\n    target: { guest: g${i % 3}, port: 80 }`;
  const items = (n: number, each: (i: number) => string = item) => Array.from({ length: n }, (_, i) => each(i)).join('\n');
  /** The file read whole (slices far larger than it) and in slices of `per` items. */
  const bothWays = (text: string, per: number) => ({ whole: parseYamlFast(text, fullBudget(), 1_000_000), sliced: parseYamlFast(text, fullBudget(), per) });

  it('a generated forwards file in six slices: same data and positions as the careful reading', async () => {
    const dir = path.join(scratch, 'sliced');
    await writeSyntheticStateRepo(dir, 600);
    const text = readFileSync(path.join(dir, 'forwards/bench.yaml'), 'utf8');
    const sliced = expectSameReading('forwards/bench.yaml', text, 100);
    // The header's values count once per slice: proof that the file was read in slices.
    expect(sliced!.values).toBeGreaterThan(bothWays(text, 100).whole!.values);
  });

  it.each([
    ['comments, blank lines and nested lists between the items, keys after the list', `# top\n${head}forwards:\n${items(300, (i) => `${item(i)}\n    tags:\n      - a${i}\n\n  # after ${i}`)}\nnotes: done\nmore: [1, 2]\n`],
    ['a compact list (items at column 0) and a key after it', `${head}forwards:\n${items(300, (i) => item(i).replace(/^ {2}/gm, ''))}\nafter: x\n`],
    ['Windows line endings', `${head}forwards:\n${items(300)}\n`.replace(/\n/g, '\r\n')],
    ['a second list at the same indentation under the next key', `${head}forwards:\n${items(150)}\nother:\n${items(150)}\n`],
  ])('%s', (_name, text) => {
    const sliced = expectSameReading('forwards/x.yaml', text, 40);
    expect(sliced!.values).toBeGreaterThan(bothWays(text, 40).whole!.values);
  });

  it('an item line inside a quoted scalar that runs over lines never cuts the list: declined or read as the whole', () => {
    for (let at = 37; at <= 42; at++) {
      const quoted = (i: number) => (i === at ? `  - name: "f${i} runs on\n  - f${i + 1} looks like an item\n  - and so does this"` : item(i));
      const text = `${head}forwards:\n${items(300, quoted)}\n`;
      const { sliced } = bothWays(text, 40);
      if (sliced) expect(sliced.data).toEqual(careful('forwards/q.yaml', text).data);
    }
  });
});

describe('the fast reading declines what only the careful one may judge', () => {
  const head = 'apiVersion: cgw-sync/v1\nkind: Forwards\n';
  const billionLaughs = () => {
    let text = `${head}a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n`;
    for (let i = 1; i < 10; i++) text += `a${i}: &a${i} [${Array(10).fill(`*a${i - 1}`).join(', ')}]\n`;
    return `${text}forwards: *a9\n`;
  };
  const cases: Record<string, string> = {
    'a billion laughs (aliases)': billionLaughs(),
    'an anchor without an alias': `${head}forwards: &x []\n`,
    'an explicit !!str tag': `${head}name: !!str x\n`,
    'a local tag': `${head}forwards: !custom []\n`,
    'a %YAML 1.1 directive (yes would be true)': `%YAML 1.1\n---\n${head}x: yes\n`,
    'two documents': `${head}---\nkind: Node\n`,
    'a duplicate key': `${head}kind: Node\n`,
    'flow nesting deeper than the limit': `${head}forwards: ${'['.repeat(STATE_LIMITS.yamlDepth + 1)}${']'.repeat(STATE_LIMITS.yamlDepth + 1)}\n`,
    'block nesting deeper than the limit': `${head}forwards:\n${Array.from({ length: 100 }, (_, i) => `${' '.repeat(i + 2)}- `).join('\n')}x\n`,
    'a list at the root': '- a\n- b\n',
    'a scalar at the root': 'just text\n',
    'an empty file': '',
    'only comments': '# nothing here\n',
    'a syntax error': `${head}forwards: [\n`,
    'tab indentation': `${head}forwards:\n\t- x\n`,
    'a null key': `${head}~: 1\n`,
    'an empty key': `${head}: 1\n`,
    'a key over 1024 characters': `${head}${'k'.repeat(1025)}: 1\n`,
    'keys 1 and "1"': `${head}1: a\n"1": b\n`,
    'a complex key': `${head}? [a]\n: b\n`,
  };
  it.each(Object.entries(cases))('%s', (_name, text) => {
    expect(parseYamlFast(text, fullBudget())).toBeUndefined();
  });

  it('a file with more values than the budget has left, and a file after the budget ran out', () => {
    const text = `${head}forwards: [${Array(50).fill('1').join(', ')}]\n`;
    expect(parseYamlFast(text, { nodes: 1000 })).toBeDefined();
    expect(parseYamlFast(text, { nodes: 40 })).toBeUndefined();
    expect(parseYamlFast(text, { nodes: -1 })).toBeUndefined();
  });

  it('a file of separators is declined before it is parsed (its events would not fit the budget)', () => {
    // {a,b,c,...}: two values for each comma; the parse would make millions of events.
    const text = `${head}x: {${Array(Math.ceil(1.6 * STATE_LIMITS.yamlNodes)).fill('a').join(',')}}\n`;
    const t0 = performance.now();
    expect(parseYamlFast(text, fullBudget())).toBeUndefined();
    expect(performance.now() - t0).toBeLessThan(1000);
  });

  it('names the least budget it reads a file with: values or separators decide, whole or in slices', () => {
    const forwards = (n: number) => Array.from({ length: n }, (_, i) => `  - name: f-${i}\n    protocol: tcp\n    port: ${1 + i}\n    target:\n      guest: g\n      port: 1\n`).join('');
    const texts = {
      'values decide': `${head}forwards:\n${forwards(20)}`,
      'separators decide (a long comment of dashes)': `${head}# ${'-'.repeat(3_001)}\nforwards:\n${forwards(20)}`,
      'read in three slices': `${head}forwards:\n${forwards(2 * ITEMS_PER_SLICE + 5)}`,
    };
    for (const [what, text] of Object.entries(texts)) {
      const whole = parseYamlFast(text, fullBudget());
      const least = whole?.leastBudget ?? 0;
      expect(least, what).toBeGreaterThanOrEqual(whole?.values ?? Infinity);
      const atLeast = parseYamlFast(text, { nodes: least });
      expect(atLeast?.data, what).toEqual(whole?.data);
      expect(atLeast?.values, what).toBe(whole?.values);
      expect(parseYamlFast(text, { nodes: least - 1 }), what).toBeUndefined();
    }
    const dashes = parseYamlFast(texts['separators decide (a long comment of dashes)'], fullBudget());
    expect(dashes!.leastBudget).toBeGreaterThan(dashes!.values);
  });

  it('does not change the budget: the loader charges it for files it uses', () => {
    const budget = fullBudget();
    const parsed = parseYamlFast(`${head}forwards: []\n`, budget);
    expect(parsed?.values).toBeGreaterThan(0);
    expect(budget.nodes).toBe(STATE_LIMITS.yamlNodes);
  });
});

describe('diagnostics in files read the fast way', () => {
  it('a semantic problem pointing into a large valid file is located exactly (read again with positions)', async () => {
    const dir = path.join(scratch, 'semantic');
    await writeSyntheticStateRepo(dir, 500);
    // A forward deep inside the generated file takes tcp port 80, and so does forwards/web.yaml.
    const bench = path.join(dir, 'forwards/bench.yaml');
    writeFileSync(bench, readFileSync(bench, 'utf8').replace('    port: 10321\n', '    port: 80\n'));
    const web = '  - name: web\n    protocol: tcp\n    port: 80\n    target: { guest: guest1, port: 80 }\n';
    writeFileSync(path.join(dir, 'forwards/web.yaml'), `apiVersion: cgw-sync/v1\nkind: Forwards\nforwards:\n${web}`);
    const line = readFileSync(bench, 'utf8').split('\n').indexOf('    port: 80') + 1;
    expect(line).toBeGreaterThan(1000);
    const { diagnostics } = await loadState(dir);
    expect(diagnostics.length).toBeGreaterThan(0);
    for (const d of diagnostics) {
      expect(d).toMatchObject({ file: 'forwards/web.yaml', line: 6, column: 11, field: 'forwards[0].port' });
      expect(d.message).toContain(`is already taken by forward "fwd-321" (forwards/bench.yaml:${line}:11)`);
    }
  });

  it('a valid state loads with every object at the position the careful reading gives', async () => {
    const dir = path.join(scratch, 'valid');
    await writeSyntheticStateRepo(dir, 300);
    const { state, diagnostics } = await loadState(dir);
    expect(diagnostics).toEqual([]);
    const text = readFileSync(path.join(dir, 'forwards/bench.yaml'), 'utf8');
    const { source, data } = careful('forwards/bench.yaml', text);
    const names = (data as { forwards: Array<{ name: string }> }).forwards.map((f) => f.name);
    for (const forward of state!.forwards.filter((f) => f.source.file === 'forwards/bench.yaml')) {
      expect(forward.source).toEqual(sourceRef(source, ['forwards', names.indexOf(forward.name)]));
    }
  });
});

describe('a valid state is read without the yaml package', () => {
  /** Validates `dir` with the built CLI's main() in a new process: its output, and whether yaml was loaded. */
  const validateInProcess = async (dir: string) => {
    const script = `const { main } = await import(${JSON.stringify(pathToFileURL(path.join(path.dirname(CLI_BIN), 'main.js')).href)});
      const code = await main(['validate', '--state', ${JSON.stringify(dir)}], { out: () => {}, err: () => {} });
      const { createRequire } = await import('node:module');
      const cache = Object.keys(createRequire(import.meta.url).cache);
      console.log(JSON.stringify({ code, yaml: cache.some((f) => f.includes('/node_modules/yaml/')) }));`;
    const r = await execa(process.execPath, ['--input-type=module', '-e', script], { reject: false });
    return JSON.parse(String(r.stdout).trim().split('\n').at(-1) ?? '{}') as { code: number; yaml: boolean };
  };

  it('not loaded for a valid state, loaded when a file must be read carefully', async () => {
    expect(await validateInProcess(exampleDir)).toEqual({ code: 0, yaml: false });
    const dir = path.join(scratch, 'careful');
    cpSync(exampleDir, dir, { recursive: true });
    writeFileSync(path.join(dir, 'forwards/broken.yaml'), 'apiVersion: cgw-sync/v1\nkind: Forwards\nforwards: [\n');
    const broken = await validateInProcess(dir);
    expect(broken.yaml).toBe(true);
    expect(broken.code).not.toBe(0);
  });
});
