// Adversarial group "secrets": nothing the agent writes to Git, prints or hands to hooks contains
// its environment or secrets. A real token-protected Git smart-HTTP server; the agent runs as a
// real process (`cgw-sync once`, from dist/) with nft in its own network namespace, a unique
// canary token in its environment (tokenEnv) or token file, a canary variable in its environment
// and a canary file outside the state. Hostile states are committed to the repository (symlinks
// to the canary file and /proc/self/environ, the token in values the validator echoes, huge
// values, Markdown/HTML injection), and then EVERY object the agent added to the bare repository
// (git cat-file --batch-all-objects), its stdout and stderr, status.json/REPORT.md (pushed and
// local) and the hooks' output are searched for the canaries.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hookEnvironment, HOOK_PATH } from '../../src/agent/hooks.js';
import { MESSAGE_LIMIT, quoteValue, redactText, VALUE_LIMIT } from '../../src/agent/redact.js';
import { commitMessage, mdBlock, mdCode, mdText, statusFiles, type NodeStatus } from '../../src/agent/report.js';
import { environmentSecrets } from '../../src/git/remote.js';
import type { FileMap } from '../../src/git/tree.js';
import { readPublished, startTestAgent, stateExampleFiles, withExtraForward, type PublishedStatus, type TestAgent } from '../helpers/agent-fixture.js';
import {
  canaryValues,
  commitWithLinks,
  envPrintingHooks,
  expectNoCanary,
  liveMarkdownLines,
  makeCanaries,
  objectIds,
  objectsText,
  runCli,
  withoutCodeSpans,
  type Canaries,
} from '../helpers/canary.js';
import { startGitFixture, type GitFixture } from '../helpers/git-server.js';

/** Names deliberately not secret-looking: masking must come from knowing the token, not from a name. */
const TOKEN_ENV = 'CGW_CANARY_GIT';
const PLAIN_ENV = 'CGW_CANARY_PLAIN';

interface HostileCase {
  name: string;
  /** The state tree, from state-example. */
  files: (example: FileMap, canaries: Canaries) => FileMap;
  /** Symlinks in the tree: path -> target. */
  links?: (ctx: { canaryFile: string; tokenFile: string; outsideDir: string }) => Record<string, string>;
  /** The source message must match (it names the file). */
  message: RegExp;
  /** More strings that must not leak in this case. */
  extraSecrets?: string[];
  check?: (published: PublishedStatus) => void;
  /**
   * Passes only once state loading refuses symlinks (another part of issue 9): until then the
   * loader follows the link and echoes what it read (a secret the agent cannot know to mask),
   * or silently skips the file.
   */
  needsSymlinkRefusal?: boolean;
}

const without = (files: FileMap, p: string): FileMap => Object.fromEntries(Object.entries(files).filter(([k]) => k !== p));
/** cluster.yaml with one top-level field set to `value` (a value the validator refuses and echoes). */
const withClusterField = (files: FileMap, field: string, value: string): FileMap => ({
  ...files,
  'cluster.yaml': String(files['cluster.yaml']).replace(new RegExp(`^${field}: .*$`, 'm'), `${field}: ${JSON.stringify(value)}`),
});
const withClusterName = (files: FileMap, name: string): FileMap => withClusterField(files, 'name', name);

const BEARER = 'bearercanary0123456789abcdef';
const URL_PASSWORD = 'urlpasswordcanary0123456789';
const INJECTION = 'x`</code><img src=x onerror=alert(1)>\n```\n# injected heading\n<script>alert(1)</script>\n~~~\n[click](javascript:alert(1))';

const HOSTILE: HostileCase[] = [
  { name: 'cluster.yaml is a symlink to /proc/self/environ', files: (f) => without(f, 'cluster.yaml'), links: () => ({ 'cluster.yaml': '/proc/self/environ' }), message: /cluster\.yaml/, needsSymlinkRefusal: true },
  { name: 'cluster.yaml is a symlink to a secret file outside the state', files: (f) => without(f, 'cluster.yaml'), links: ({ canaryFile }) => ({ 'cluster.yaml': canaryFile }), message: /cluster\.yaml/, needsSymlinkRefusal: true },
  {
    name: 'cluster.yaml is a relative symlink climbing out of the checkout',
    files: (f) => without(f, 'cluster.yaml'),
    links: ({ canaryFile }) => ({ 'cluster.yaml': `${'../'.repeat(12)}${canaryFile.slice(1)}` }),
    message: /cluster\.yaml/,
    needsSymlinkRefusal: true,
  },
  { name: 'cluster.yaml is a symlink to the token file', files: (f) => without(f, 'cluster.yaml'), links: ({ tokenFile }) => ({ 'cluster.yaml': tokenFile }), message: /cluster\.yaml/, needsSymlinkRefusal: true },
  { name: 'a node file is a symlink to /proc/self/environ', files: (f) => without(f, 'nodes/node1.yaml'), links: () => ({ 'nodes/node1.yaml': '/proc/self/environ' }), message: /node1\.yaml/, needsSymlinkRefusal: true },
  { name: 'a forwards file is a symlink to a secret file', files: (f) => f, links: ({ canaryFile }) => ({ 'forwards/leak.yaml': canaryFile }), message: /leak\.yaml/, needsSymlinkRefusal: true },
  {
    name: 'the guests folder is a symlink to a folder outside the state',
    files: (f) => Object.fromEntries(Object.entries(f).filter(([k]) => !k.startsWith('guests/'))),
    links: ({ outsideDir }) => ({ guests: outsideDir }),
    message: /guests/,
    needsSymlinkRefusal: true,
  },
  { name: 'the Git token in a value the validator echoes', files: (f, c) => withClusterField(f, 'gatewayIP', c.token), message: /cluster\.yaml:\d+:\d+: gatewayIP/ },
  {
    name: 'the Git token at the end of a 1 MB value',
    files: (f, c) => withClusterName(f, `${'x'.repeat(1_000_000)}${c.token}`),
    message: /cluster\.yaml:\d+:\d+: name/,
    // Capped, here or by the loader's own excerpt: never the megabyte.
    check: (p) => expect(p.json.source.message!.length).toBeLessThanOrEqual(MESSAGE_LIMIT + 60),
  },
  { name: 'an Authorization header in a value', files: (f) => withClusterName(f, `Authorization: Bearer ${BEARER}`), message: /cluster\.yaml/, extraSecrets: [BEARER] },
  { name: 'a URL with a password in a value', files: (f) => withClusterName(f, `https://admin:${URL_PASSWORD}@git.example.org/`), message: /cluster\.yaml/, extraSecrets: [URL_PASSWORD] },
  {
    name: 'Markdown and HTML injection through a value and a key',
    files: (f) => {
      const named = withClusterName(f, INJECTION);
      return { ...named, 'cluster.yaml': `${String(named['cluster.yaml'])}"<img src=y onerror=alert(2)>": 1\n` };
    },
    message: /cluster\.yaml/,
    check: (p) => {
      const live = liveMarkdownLines(p.markdown).map(withoutCodeSpans);
      for (const line of live) {
        expect(line).not.toMatch(/<(img|script)/i);
        expect(line).not.toMatch(/^#+ injected/);
        expect(line).not.toMatch(/\]\(javascript:/);
      }
    },
  },
  {
    name: 'invisible and bidi characters in a value are shown, not kept',
    files: (f) => withClusterName(f, 'ev\u202eil\u200bname'),
    message: /cluster\.yaml/,
    check: (p) => {
      expect(p.markdown).not.toMatch(/[\u202e\u200b]/);
      expect(JSON.stringify(p.json)).not.toMatch(/[\u202e\u200b]/);
      // Shown in some visible form (the loader's or redact.ts's), never as the character itself.
      expect(p.json.source.message).toMatch(/202e/i);
    },
  },
  {
    name: 'a 5 MB state file',
    files: (f) => ({ ...f, 'forwards/huge.yaml': `apiVersion: cgw-sync/v1\nkind: Forwards\nforwards: ${'y'.repeat(5_000_000)}\n` }),
    message: /huge\.yaml/,
    check: (p) => expect(p.markdown.length).toBeLessThan(50_000),
  },
];

/** What one `once` run against a hostile revision left behind. */
/** Objects of the bare repository: the ones the test wrote, and every one looked at so far. */
interface ObjectBook {
  testMade: Set<string>;
  seen: Set<string>;
}

/** Commit a revision, run `once` on it; `pushed`: the content of the objects the agent added. */
async function runHostile(fx: GitFixture, agent: TestAgent, env: Record<string, string>, files: FileMap, links: Record<string, string>, book: ObjectBook) {
  const rulesetBefore = await agent.ns.raw(['list', 'ruleset']);
  await commitWithLinks(fx.repo, files, links);
  for (const id of await objectIds(fx.repo)) {
    if (!book.seen.has(id)) book.testMade.add(id);
    book.seen.add(id);
  }
  const run = await runCli(['once', '--config', agent.configFile], env);
  const published = await readPublished(fx, agent.node);
  const pushed = await objectsText(fx.repo, book.seen);
  for (const id of await objectIds(fx.repo)) book.seen.add(id);
  return { run, published, pushed, rulesetAfter: await agent.ns.raw(['list', 'ruleset']), rulesetBefore };
}

function describeAgent(variant: 'tokenEnv' | 'tokenFile', cases: HostileCase[]) {
  describe(`secrets: hostile states against an agent with ${variant}`, () => {
    const canaries = makeCanaries();
    const env = { [TOKEN_ENV]: canaries.token, [PLAIN_ENV]: canaries.plainEnv };
    const book: ObjectBook = { testMade: new Set(), seen: new Set() };
    let fx: GitFixture;
    let agent: TestAgent;
    let example: FileMap;
    let ctx: { canaryFile: string; tokenFile: string; outsideDir: string };
    let reportDir: string;

    beforeAll(async () => {
      example = await stateExampleFiles();
      fx = await startGitFixture({ files: example, token: canaries.token });
      for (const id of await objectIds(fx.repo)) {
        book.testMade.add(id);
        book.seen.add(id);
      }
      const secret = await fx.tmp('outside');
      // Shaped like state files, so a loader that follows the link echoes the canary in errors.
      const canaryFile = path.join(secret, 'secret.yaml');
      await writeFile(canaryFile, `apiVersion: cgw-sync/v1\nkind: Cluster\nname: ${canaries.file}\n${canaries.file}: ${canaries.file}\n`, { mode: 0o600 });
      const outsideDir = path.join(secret, 'guests');
      await mkdir(outsideDir);
      await writeFile(path.join(outsideDir, 'g.yaml'), `apiVersion: cgw-sync/v1\nkind: Guest\nname: ${canaries.file}\n`);
      const tokenFile = path.join(secret, 'token');
      await writeFile(tokenFile, `${canaries.token}\n`, { mode: 0o600 });
      ctx = { canaryFile, tokenFile, outsideDir };
      reportDir = path.join(secret, 'report');
      const source = variant === 'tokenEnv' ? { tokenEnv: TOKEN_ENV } : { tokenFile };
      agent = await startTestAgent(fx, variant === 'tokenEnv' ? 'node1' : 'node2', { source, hooksDir: await envPrintingHooks(secret), hookEnv: { CGW_MAX_REMOVED: '7' }, status: { dir: reportDir } });
    });
    afterAll(async () => {
      await agent?.destroy();
      await fx?.cleanup();
    });

    /** Every place the agent writes, searched for every canary. */
    async function expectNothingLeaked(run: { stdout: string; stderr: string }, published: PublishedStatus | undefined, pushed: string, extra: string[] = []) {
      expectNoCanary(
        {
          stdout: run.stdout,
          stderr: run.stderr,
          'pushed objects': pushed,
          'status.json': JSON.stringify(published?.json ?? {}),
          'REPORT.md': published?.markdown ?? '',
          'commit subject': published?.subject ?? '',
          'local status.json': await readFile(path.join(reportDir, 'status.json'), 'utf8'),
          'local REPORT.md': await readFile(path.join(reportDir, 'REPORT.md'), 'utf8'),
        },
        [...canaryValues(canaries), ...extra],
      );
    }

    it('applies a good revision; its hooks see only the documented environment', async () => {
      const { run, published, pushed } = await runHostile(fx, agent, env, withExtraForward(example), {}, book);
      expect(run.exitCode, run.stderr).toBe(0);
      expect(published?.json.outcome).toBe('applied');
      const hooks = published!.json.hooks;
      expect(hooks.map((h) => [h.phase, h.ok])).toEqual([['pre-apply', true], ['post-apply', true]]);
      for (const h of hooks) {
        // The hook really printed its environment: the variables it was given are there.
        expect(h.output).toContain(`CGW_NODE=${agent.node}`);
        expect(h.output).toContain(`PATH=${HOOK_PATH}`);
        expect(h.output).toContain('CGW_MAX_REMOVED=7');
        const names = [...h.output.matchAll(/^([A-Za-z_][A-Za-z0-9_]*)=/gm)].map((m) => m[1]);
        expect(names.filter((n) => !/^(PATH|LANG|TZ|CGW_[A-Z_]+|PWD|OLDPWD|SHLVL|_|phase)$/.test(n))).toEqual([]);
        expect(h.output).not.toContain(TOKEN_ENV);
        expect(h.output).not.toContain(PLAIN_ENV);
      }
      await expectNothingLeaked(run, published, pushed.text);
    });

    it.each(cases)('$name: refused with a clear message, exit 1, nothing changed, nothing leaked, under 10 s', async (c) => {
      if (c.links) {
        // A clean revision first: the source checkout cannot replace a symlink by a symlink
        // (EEXIST), which would make this case depend on the one before.
        const reset = await runHostile(fx, agent, env, example, {}, book);
        expect(reset.run.exitCode, reset.run.stderr).toBe(0);
      }
      const before = await readPublished(fx, agent.node);
      const r = await runHostile(fx, agent, env, c.files(example, canaries), c.links?.(ctx) ?? {}, book);
      const p = r.published!;
      // First what matters most: whatever else happened, nothing leaked.
      await expectNothingLeaked(r.run, p, r.pushed.text, c.extraSecrets);
      expect(r.run.exitCode, r.run.stderr).toBe(1);
      expect(r.run.ms).toBeLessThan(10_000);
      // Invalid (the loader refused it) or refused (the source refused the tree before checkout).
      expect(['invalid', 'refused'], p.json.source.message).toContain(p.json.source.state);
      expect(p.json.source.message, p.json.source.message).toMatch(c.message);
      // Still enforcing the revision it had before.
      expect(p.json.appliedRevision).toBe(before?.json.appliedRevision);
      expect(r.rulesetAfter).toBe(r.rulesetBefore);
      expect(r.pushed.count, `the agent pushed a report (stderr: ${r.run.stderr})`).toBeGreaterThan(0);
      c.check?.(p);
    });

    it('--json output of a cycle carries no canary either', async () => {
      const run = await runCli(['once', '--json', '--config', agent.configFile], env);
      const status = JSON.parse(run.stdout) as NodeStatus;
      expect(status.node).toBe(agent.node);
      expectNoCanary({ stdout: run.stdout, stderr: run.stderr }, canaryValues(canaries));
    });

    it('no object the agent ever added to the repository holds a canary', async () => {
      const added = await objectsText(fx.repo, book.testMade);
      expect(added.count, 'the agent pushed status commits').toBeGreaterThan(cases.length);
      expectNoCanary({ 'objects added by the agent': added.text }, canaryValues(canaries));
      // The test's own commits hold the token where a case puts it in a state value, never the others.
      const all = await objectsText(fx.repo);
      expectNoCanary({ 'every object': all.text }, [canaries.plainEnv, canaries.file]);
    });
  });
}

const TOKEN_FILE_CASES = HOSTILE.filter((c) => /token|environ/.test(c.name));
describeAgent('tokenEnv', HOSTILE);
describeAgent('tokenFile', TOKEN_FILE_CASES);

describe('secrets: the hook environment', () => {
  it('is PATH, LANG, TZ and the CGW_* variables, nothing of the agent', () => {
    const env = hookEnvironment({ node: 'n1', revision: 'abc' }, 'pre-apply', '/tmp/p.json', { TZ: 'UTC', HOME: '/root', GIT_TOKEN: 'x' });
    expect(env).toEqual({ PATH: HOOK_PATH, LANG: 'C.UTF-8', TZ: 'UTC', CGW_NODE: 'n1', CGW_REVISION: 'abc', CGW_PHASE: 'pre-apply', CGW_PLAN_FILE: '/tmp/p.json' });
  });

  it("adds the config's hookEnv, which cannot change the CGW_* variables of the run", () => {
    const env = hookEnvironment({ node: 'n1', revision: 'abc', env: { CGW_MAX_REMOVED: '20', CGW_NODE: 'evil' } }, 'post-apply', '/tmp/p.json', {});
    expect(env).toMatchObject({ CGW_MAX_REMOVED: '20', CGW_NODE: 'n1', CGW_PHASE: 'post-apply' });
    expect(Object.keys(env).sort()).toEqual(['CGW_MAX_REMOVED', 'CGW_NODE', 'CGW_PHASE', 'CGW_PLAN_FILE', 'CGW_REVISION', 'LANG', 'PATH']);
  });
});

describe('secrets: redaction and escaping (pure)', () => {
  const SECRET = 'pure-canary-0123456789';
  it.each([
    { name: 'a known secret', text: `token ${SECRET} rejected`, gone: [SECRET], kept: ['token', 'rejected'] },
    { name: 'userinfo in a URL', text: 'clone of https://bot:hunter2hunter2@git.example.org/x failed', gone: ['hunter2hunter2', 'bot:'], kept: ['https://***@git.example.org/x'] },
    { name: 'an Authorization header', text: 'sent Authorization: Basic Ym90Omh1bnRlcjI= to the server', gone: ['Ym90Omh1bnRlcjI='], kept: ['Authorization: Basic ***'] },
    { name: 'a bearer token', text: 'header was bearer abcdefghijklmnop', gone: ['abcdefghijklmnop'], kept: ['bearer ***'] },
    { name: 'a secret across the cap is masked before cutting, no piece left', text: `${'x'.repeat(MESSAGE_LIMIT - 5)}${SECRET}`, gone: [SECRET, SECRET.slice(0, 5)], kept: ['***'] },
    { name: 'an over-long text is cut with a note', text: 'z'.repeat(MESSAGE_LIMIT * 3), gone: ['z'.repeat(MESSAGE_LIMIT + 1)], kept: [`cut: ${MESSAGE_LIMIT * 2} more characters`] },
    { name: 'zero-width and bidi characters', text: 'a\u200bb\u202ec\u0007d', gone: ['\u200b', '\u202e', '\u0007'], kept: ['\\u{200b}', '\\u{202e}', '\\u{7}'] },
  ])('redactText: $name', ({ text, gone, kept }) => {
    const out = redactText(text, [SECRET]);
    for (const g of gone) expect(out).not.toContain(g);
    for (const k of kept) expect(out).toContain(k);
    expect(out.length).toBeLessThanOrEqual(MESSAGE_LIMIT + 40);
  });

  it('redactText is linear: a megabyte of scheme-like letters takes milliseconds', () => {
    const t0 = Date.now();
    redactText(`${'a'.repeat(1_000_000)}://`, [SECRET]);
    redactText(`authorization${' '.repeat(1_000_000)}`, [SECRET]);
    expect(Date.now() - t0).toBeLessThan(1000);
  });

  it('quoteValue escapes, masks and caps a value inside a message', () => {
    expect(quoteValue('a"b\\c\nd', [])).toBe('"a\\"b\\\\c\\nd"');
    expect(quoteValue(`x${SECRET}`, [SECRET])).toBe('"x***"');
    expect(quoteValue('y'.repeat(500), [])).toBe(`"${'y'.repeat(VALUE_LIMIT)}"… (cut: 300 more characters)`);
  });

  it('the environment: secret-looking names and long values are masked; paths and the host name are not', () => {
    const found = environmentSecrets({ GIT_TOKEN: 'short-ok', HOSTNAME: 'a-rather-long-host-name', PATH: '/usr/bin:/bin', DATA: 'some long opaque value 123', PWD: '/var/lib/cgw-sync/state' });
    expect(found.sort()).toEqual(['short-ok', 'some long opaque value 123']);
  });

  it.each([
    { name: 'a code span cannot be closed by backticks inside', value: 'a ``` b ` c', check: (md: string) => expect(md).toBe('````a ``` b ` c````') },
    { name: 'a code span cannot split a table cell', value: 'a|b', check: (md: string) => expect(md).toBe('`a\\|b`') },
    { name: 'a code span is one line', value: 'a\n# b', check: (md: string) => expect(md).not.toContain('\n') },
  ])('mdCode: $name', ({ value, check }) => check(mdCode(value)));

  it.each([
    { name: 'HTML is inert', value: '<img src=x onerror=alert(1)>', expected: '&lt;img src=x onerror=alert(1)>' },
    { name: 'links and emphasis are literal', value: '[x](javascript:alert(1)) *b* _i_', expected: '\\[x\\](javascript:alert(1)) \\*b\\* \\_i\\_' },
    { name: 'an underscore inside a name stays readable', value: 'cgw_nat', expected: 'cgw_nat' },
    { name: 'a newline cannot start a heading', value: 'a\n# pwned', expected: 'a # pwned' },
  ])('mdText: $name', ({ value, expected }) => expect(mdText(value)).toBe(expected));

  it('mdBlock: a fenced block is longer than any backtick run inside', () => {
    const [open, body, close] = mdBlock('x\n````\ny');
    expect(open).toBe('`````text');
    expect(body).toBe('x\n````\ny');
    expect(close).toBe('`````');
  });

  it('statusFiles and commitMessage redact whatever reaches them', () => {
    const status = {
      format: 'cgw-sync.status/v1',
      node: 'n1',
      time: '2026-01-01T00:00:00.000Z',
      outcome: 'error',
      source: { url: 'http://git', branch: 'main', state: 'invalid', message: `leaked ${SECRET}` },
      plan: null,
      drift: { items: [], corrected: false },
      guests: [],
      hooks: [],
      errors: [`hook said ${SECRET}`],
      timings: {},
    } as NodeStatus;
    const files = statusFiles(status, [SECRET]);
    expect(files['status.json']).not.toContain(SECRET);
    expect(files['REPORT.md']).not.toContain(SECRET);
    expect(commitMessage({ ...status, node: `n1 ${SECRET}` }, [SECRET])).not.toContain(SECRET);
  });
});
