// Adversarial group "agent configs": a broken or hostile agent configuration is refused at load by
// `cgw-sync once` / `run` (real processes, from dist/) with a message that names the file, the
// line and column where there is one, and the field; exit 1; nothing changed (no state folder, no
// nft table, no status branch); no secret of the agent in its output; under 10 s.
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONFIG_SIZE_LIMIT, KEY_FILE_SIZE_LIMIT } from '../../src/agent/config.js';
import { readPublished, stateExampleFiles } from '../helpers/agent-fixture.js';
import { canaryValues, expectNoCanary, makeCanaries, runCli } from '../helpers/canary.js';
import { startGitFixture, type GitFixture } from '../helpers/git-server.js';
import { nftNamespace, type NftNamespace } from '../helpers/nft-netns.js';

const TOKEN_ENV = 'CGW_CANARY_GIT';
const PLAIN_ENV = 'CGW_CANARY_PLAIN';

/** Where a case runs: its own folder, and the valid configuration it starts from. */
interface CaseDir {
  dir: string;
  /** A valid AgentConfig document (its stateDir is dir/state). */
  base: Record<string, unknown>;
  secrets: { token: string; urlPassword: string };
}

interface ConfigCase {
  name: string;
  /** Write what the case needs; returns the config path handed to the CLI. */
  setup: (c: CaseDir) => Promise<string>;
  /** The field the message names (omitted for problems of the whole file). */
  field?: string;
  /** A text on the line the message must point at (line:column checked against the file). */
  line?: string;
  /** The message has a line:column, wherever the parser puts it. */
  located?: boolean;
  message: RegExp;
  command?: 'once' | 'run';
  /** Run the CLI as this user instead of root. */
  asUser?: { uid: number; gid: number };
}

const configPath = (c: CaseDir) => path.join(c.dir, 'agent.yaml');
const write = async (c: CaseDir, text: string) => {
  await writeFile(configPath(c), text);
  return configPath(c);
};
/** The base document with `change` merged one level deep (source, status, schedule), as YAML. */
const withDoc = (change: Record<string, unknown>) => (c: CaseDir) => {
  const doc: Record<string, unknown> = { ...c.base };
  for (const [k, v] of Object.entries(change)) {
    const old = doc[k];
    doc[k] = v && typeof v === 'object' && !Array.isArray(v) && old && typeof old === 'object' ? { ...old, ...v } : v;
  }
  return write(c, stringify(doc));
};
/** A file next to the config, with `content` (or made by `make`), named in the document. */
const withFile = (name: string, make: (file: string) => Promise<void>, change: (file: string) => Record<string, unknown>) => async (c: CaseDir) => {
  const file = path.join(c.dir, name);
  await make(file);
  return withDoc(change(file))(c);
};
const fifo = (file: string) => execa('mkfifo', [file]).then(() => undefined);

const BILLION_LAUGHS = ['a0: &a0 [x, x, x, x, x, x, x, x, x, x]', ...Array.from({ length: 9 }, (_, i) => `a${i + 1}: &a${i + 1} [${Array(10).fill(`*a${i}`).join(', ')}]`)].join('\n');

const CASES: ConfigCase[] = [
  // The file itself.
  { name: 'the config path is a folder', setup: async (c) => {
      await mkdir(configPath(c));
      return configPath(c);
    }, message: /cannot read the agent configuration: it is a folder, not a file/ },
  { name: 'the config file does not exist', setup: async (c) => configPath(c), message: /cannot read the agent configuration: no such file/ },
  { name: 'the config is a FIFO (would block a plain read)', setup: async (c) => {
      await fifo(configPath(c));
      return configPath(c);
    }, message: /not a regular file/ },
  { name: 'the config is a device', setup: async () => '/dev/zero', message: /not a regular file/ },
  { name: 'the config is too large', setup: (c) => write(c, `# ${'x'.repeat(CONFIG_SIZE_LIMIT)}\n`), message: /too large \(\d+ bytes; at most \d+\)/ },
  { name: 'the config is binary garbage', setup: (c) => write(c, '\u0000\u0001ELF\u0000garbage'), message: /not a YAML text file \(it contains NUL bytes\)/ },
  {
    name: 'the config is unreadable for the user running the agent',
    setup: async (c) => {
      const p = await withDoc({})(c);
      await chmod(p, 0o600);
      return p;
    },
    asUser: { uid: 65534, gid: 65534 },
    message: /cannot read the agent configuration: permission denied/,
  },
  { name: 'not YAML: an unclosed flow mapping', setup: (c) => write(c, 'apiVersion: cgw-sync/v1\nkind: AgentConfig\nsource: { url: x\n'), located: true, message: /YAML syntax/ },
  { name: 'a key given twice', setup: (c) => write(c, 'apiVersion: cgw-sync/v1\nkind: AgentConfig\nsource: { url: /srv/state }\nkind: AgentConfig\n'), message: /YAML syntax: .*[Uu]nique/ },
  { name: 'two YAML documents', setup: (c) => write(c, 'apiVersion: cgw-sync/v1\n---\nkind: AgentConfig\n'), message: /exactly one document/ },
  { name: 'a list instead of a mapping', setup: (c) => write(c, '- apiVersion: cgw-sync/v1\n'), message: /must be a YAML mapping/ },
  { name: 'a single value instead of a mapping', setup: (c) => write(c, 'just some words\n'), message: /must be a YAML mapping/ },
  { name: 'an empty file', setup: (c) => write(c, '# nothing here\n'), message: /the file is empty/ },
  { name: 'a billion-laughs YAML bomb', setup: (c) => write(c, `${BILLION_LAUGHS}\n`), message: /too many (YAML )?aliases/ },
  { name: '5,000 levels of nesting', setup: (c) => write(c, `${'['.repeat(5000)}${']'.repeat(5000)}\n`), message: /nest(ed|ing) .*deep/ },
  { name: 'a misspelt property', setup: (c) => write(c, stringify({ ...c.base, hookTimoutSeconds: 5 })), field: 'hookTimoutSeconds', line: 'hookTimoutSeconds', message: /unknown property "hookTimoutSeconds" \(did you mean "hookTimeoutSeconds"\?\)/ },
  { name: 'a number that is text', setup: withDoc({ hookTimeoutSeconds: 'soon' }), field: 'hookTimeoutSeconds', line: 'hookTimeoutSeconds', message: /must be an integer/ },
  // Fields the schema cannot check.
  { name: 'a cron alias that does not exist (once)', setup: withDoc({ schedule: { cron: 'eve' } }), field: 'schedule.cron', line: 'cron:', message: /"eve" is not a cron expression: Unknown alias: eve/ },
  { name: 'a cron alias that does not exist (run refuses at start)', setup: withDoc({ schedule: { cron: 'eve' } }), field: 'schedule.cron', line: 'cron:', message: /"eve" is not a cron expression/, command: 'run' },
  { name: 'a cron field out of range', setup: withDoc({ schedule: { cron: '61 * * * *' } }), field: 'schedule.cron', line: 'cron:', message: /is not a cron expression: Field value \(61\) is out of range/ },
  { name: 'a source URL with a space', setup: withDoc({ source: { url: 'http://git.exa mple.org/state.git' } }), field: 'source.url', line: 'url:', message: /is not a valid URL: it contains spaces/ },
  { name: 'a source URL with a broken host', setup: withDoc({ source: { url: 'http://[::1/state.git' } }), field: 'source.url', line: 'url:', message: /is not a valid URL \(expected http:\/\/host/ },
  { name: 'a source URL without a host', setup: withDoc({ source: { url: 'https:///state.git' } }), field: 'source.url', line: 'url:', message: /names no host/ },
  { name: 'a source URL over ssh:// without source.ssh', setup: withDoc({ source: { url: 'ssh://git@example.org/state.git' } }), field: 'source.url', line: 'url:', message: /an ssh URL needs source\.ssh with identityFile .* and knownHostsFile/ },
  { name: 'a source in scp syntax without source.ssh', setup: withDoc({ source: { url: 'git@example.org:infra/state.git' } }), field: 'source.url', line: 'url:', message: /an ssh URL needs source\.ssh/ },
  { name: 'an ssh:// URL without a path', setup: withDoc({ source: { url: 'ssh://git@example.org' } }), field: 'source.url', line: 'url:', message: /is not a valid ssh URL \(expected ssh:\/\/HOST\[:PORT\]\/PATH/ },
  { name: 'an ssh key other users can read', setup: withFile('id_ed25519', (f) => writeFile(f, 'key\n', { mode: 0o644 }), (f) => ({ source: { url: 'git@example.org:state.git', ssh: { identityFile: f, knownHostsFile: f } } })), field: 'source.ssh.identityFile', line: 'identityFile:', message: /id_ed25519 is accessible by other users \(mode 644\); ssh refuses such a key/ },
  { name: 'a known_hosts file that does not exist', setup: withFile('known_hosts', (f) => writeFile(`${f}.key`, 'key\n', { mode: 0o600 }), (f) => ({ source: { url: 'git@example.org:state.git', ssh: { identityFile: `${f}.key`, knownHostsFile: f } } })), field: 'source.ssh.knownHostsFile', line: 'knownHostsFile:', message: /cannot read known_hosts file \/\S+\/known_hosts: no such file/ },
  { name: 'a source URL missing its //', setup: withDoc({ source: { url: 'https:example.org/state.git' } }), field: 'source.url', line: 'url:', message: /is not a valid URL: it names no host/ },
  { name: 'a status URL that is a folder', setup: withDoc({ status: { url: '/srv/status' } }), field: 'status.url', line: 'url: /srv/status', message: /is not an http\(s\) or ssh URL/ },
  { name: 'a source branch with ".."', setup: withDoc({ source: { branch: 'main..evil' } }), field: 'source.branch', line: 'branch:', message: /"main\.\.evil" is not a valid Git branch name/ },
  { name: 'a status branch ending in .lock', setup: withDoc({ status: { branch: 'status/{node}.lock' } }), field: 'status.branch', line: 'branch: status', message: /is not a valid Git branch name/ },
  { name: 'a netns name that is an option', setup: withDoc({ netns: '-all' }), field: 'netns', line: 'netns:', message: /"-all" is not a network namespace name/ },
  { name: 'a netns name ".."', setup: withDoc({ netns: '..' }), field: 'netns', line: 'netns:', message: /"\.\." is not a network namespace name/ },
  // Files the configuration names.
  { name: 'a token file that does not exist', setup: withFile('token', async () => {}, (f) => ({ source: { tokenFile: f } })), field: 'source.tokenFile', line: 'tokenFile:', message: /cannot read token file \/\S+\/token: no such file/ },
  { name: 'a token file that is a folder', setup: withFile('token', (f) => mkdir(f).then(() => undefined), (f) => ({ source: { tokenFile: f } })), field: 'source.tokenFile', line: 'tokenFile:', message: /cannot read token file .*: it is a folder/ },
  { name: 'a token file that is a FIFO', setup: withFile('token', fifo, (f) => ({ source: { tokenFile: f } })), field: 'source.tokenFile', line: 'tokenFile:', message: /cannot read token file .*: not a regular file/ },
  { name: 'an empty token file', setup: withFile('token', (f) => writeFile(f, '\n\n', { mode: 0o600 }), (f) => ({ source: { tokenFile: f } })), field: 'source.tokenFile', line: 'tokenFile:', message: /token file .* is empty/ },
  { name: 'a trusted key file that is garbage', setup: withFile('key.asc', (f) => writeFile(f, 'this is not a key\n'), (f) => ({ source: { trustedKeys: [f] } })), field: 'source.trustedKeys[0]', line: 'key.asc', message: /trusted key file \/\S+\/key\.asc is not an armored OpenPGP public key/ },
  { name: 'a trusted key file that does not exist', setup: withFile('key.asc', async () => {}, (f) => ({ source: { trustedKeys: [f] } })), field: 'source.trustedKeys[0]', line: 'key.asc', message: /cannot read trusted key file \/\S+\/key\.asc: no such file/ },
  { name: 'a huge trusted key file', setup: withFile('key.asc', (f) => writeFile(f, 'x'.repeat(KEY_FILE_SIZE_LIMIT + 1)), (f) => ({ source: { trustedKeys: [f] } })), field: 'source.trustedKeys[0]', line: 'key.asc', message: /too large/ },
  {
    name: 'a hooks folder anyone may write to',
    setup: withFile('hooks', async (f) => {
      await mkdir(f);
      await chmod(f, 0o777);
    }, (f) => ({ hooksDir: f })),
    field: 'hooksDir',
    line: 'hooksDir:',
    message: /is writable by other users \(mode 777\)/,
  },
  // The listener: off unless configured, and then only as configured.
  { name: 'webhooks without the listener', setup: withFile('hook.secret', (f) => writeFile(f, `${'s'.repeat(32)}\n`, { mode: 0o600 }), (f) => ({ webhook: { secretFile: f } })), field: 'webhook', message: /webhooks need the listener: set listen/ },
  { name: 'a listen address that is a host name', setup: withDoc({ listen: { address: 'example.org', port: 9380 } }), field: 'listen.address', line: 'address:', message: /"example\.org" is not an IP address/ },
  { name: 'a listen port out of range', setup: withDoc({ listen: { address: '127.0.0.1', port: 70000 } }), field: 'listen.port', line: 'port:', message: /must be <= 65535/ },
  { name: 'a webhook secret inline instead of in a file', setup: withDoc({ listen: { address: '127.0.0.1', port: 9380 }, webhook: { secret: 'inline-secret-0123456789' } }), field: 'webhook.secretFile', message: /missing required property "secretFile"/ },
  { name: 'a webhook secret that is too short', setup: withFile('hook.secret', (f) => writeFile(f, 'short\n', { mode: 0o600 }), (f) => ({ listen: { address: '127.0.0.1', port: 9380 }, webhook: { secretFile: f } })), field: 'webhook.secretFile', line: 'secretFile:', message: /shorter than 16 characters: make one with `head -c 32 \/dev\/urandom \| base64`/ },
  { name: 'a webhook secret file that does not exist', setup: withFile('hook.secret', async () => {}, (f) => ({ listen: { address: '127.0.0.1', port: 9380 }, webhook: { secretFile: f } })), field: 'webhook.secretFile', line: 'secretFile:', message: /cannot read webhook secret file \/\S+\/hook\.secret: no such file/ },
  { name: 'a webhook path on /metrics', setup: withFile('hook.secret', (f) => writeFile(f, `${'s'.repeat(32)}\n`, { mode: 0o600 }), (f) => ({ listen: { address: '127.0.0.1', port: 9380 }, webhook: { secretFile: f, path: '/metrics' } })), field: 'webhook.path', line: 'path:', message: /\/metrics is the metrics endpoint/ },
  { name: 'a metrics textfile node-exporter would not read', setup: withDoc({ metrics: { textfile: '/var/lib/node-exporter/cgw-sync.txt' } }), field: 'metrics.textfile', line: 'textfile:', message: /reads only files ending in \.prom/ },
  // Secrets in a refused configuration stay out of the message.
  {
    name: 'a password in a malformed source URL is not shown',
    setup: (c) => withDoc({ source: { url: `http://bot:${c.secrets.urlPassword}@git.exa mple.org/s.git` } })(c),
    field: 'source.url',
    line: 'url:',
    message: /"http:\/\/\*\*\*@git\.exa mple\.org\/s\.git" is not a valid URL/,
  },
  {
    name: 'the token of a valid source URL is not shown when another field is wrong',
    setup: (c) => withDoc({ source: { url: `http://bot:${c.secrets.urlPassword}@127.0.0.1:1/s.git` }, schedule: { cron: `${c.secrets.urlPassword} * * *` } })(c),
    field: 'schedule.cron',
    line: 'cron:',
    message: /"\*\*\* \* \* \*" is not a cron expression/,
  },
];

/** 1-based line of the first line of `text` containing `needle`. */
const lineOf = (text: string, needle: string) => text.split('\n').findIndex((l) => l.includes(needle)) + 1;

describe('agent configs: refused at load', () => {
  const canaries = makeCanaries();
  const env = { [TOKEN_ENV]: canaries.token, [PLAIN_ENV]: canaries.plainEnv };
  let fx: GitFixture;
  let ns: NftNamespace;
  let n = 0;

  beforeAll(async () => {
    fx = await startGitFixture({ files: await stateExampleFiles(), token: canaries.token });
    ns = await nftNamespace('cfg');
  });
  afterAll(async () => {
    await ns?.destroy();
    await fx?.cleanup();
  });

  async function caseDir(): Promise<CaseDir> {
    const dir = await fx.tmp(`case${++n}`);
    const base = {
      apiVersion: 'cgw-sync/v1',
      kind: 'AgentConfig',
      node: 'node1',
      source: { url: fx.url, branch: 'main', tokenEnv: TOKEN_ENV, timeoutSeconds: 5 },
      stateDir: path.join(dir, 'state'),
      netns: ns.ns,
      guests: { enabled: false },
    };
    return { dir, base, secrets: { token: canaries.token, urlPassword: `urlcanary${canaries.plainEnv}` } };
  }

  it.each(CASES)('$name: clear message, exit 1, nothing changed, nothing leaked, under 10 s', async (k) => {
    const c = await caseDir();
    const file = await k.setup(c);
    const args = [k.command ?? 'once', '--config', file];
    const run = await runCli(args, env, { asUser: k.asUser });
    expect(run.exitCode, run.stderr).toBe(1);
    expect(run.ms).toBeLessThan(10_000);
    expect(run.stdout).toBe('');
    // file[:line:column]: [field: ]message, then the summary line naming the file.
    const first = run.stderr.split('\n').find((l) => l.startsWith(file)) ?? '';
    expect(first, run.stderr).toMatch(k.message);
    if (k.field) expect(first).toContain(`: ${k.field}: `);
    if (k.line) {
      const line = lineOf(await readFile(file, 'utf8'), k.line);
      expect(line).toBeGreaterThan(0);
      expect(first).toMatch(new RegExp(`^${escapeRe(file)}:${line}:\\d+: `));
    }
    if (k.located) expect(first).toMatch(new RegExp(`^${escapeRe(file)}:\\d+:\\d+: `));
    expect(run.stderr).toContain(`cgw-sync: invalid agent configuration ${file}; nothing was changed`);
    // Nothing changed.
    expect(existsSync(path.join(c.dir, 'state'))).toBe(false);
    expect((await ns.raw(['list', 'tables'])).trim()).toBe('');
    expect(await readPublished(fx, 'node1')).toBeUndefined();
    expectNoCanary({ stdout: run.stdout, stderr: run.stderr }, [...canaryValues(canaries), c.secrets.urlPassword]);
  });

  it('a token file other users can read works, with a warning that names it', async () => {
    const c = await caseDir();
    const tokenFile = path.join(c.dir, 'token');
    await writeFile(tokenFile, `${canaries.token}\n`);
    await chmod(tokenFile, 0o644);
    const file = await withDoc({ source: { tokenFile, tokenEnv: undefined } })(c);
    const run = await runCli(['once', '--config', file], env);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stderr).toContain(`cgw-sync: warning: ${file}: source.tokenFile: ${tokenFile} is readable by other users (mode 644); make it 0600`);
    expect((await stat(tokenFile)).mode & 0o777).toBe(0o644);
    expectNoCanary({ stdout: run.stdout, stderr: run.stderr, report: JSON.stringify((await readPublished(fx, 'node1'))?.json) }, canaryValues(canaries));
  });
});

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

