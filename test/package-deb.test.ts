// The Debian package as an operator gets it: built by scripts/build-deb.sh (what `npm run deb`
// runs after compiling), checked with dpkg-deb and lintian, unpacked into a scratch root
// (dpkg-deb -x) and run from there: --help, validate on the shipped state-example, and one agent
// cycle (`once`) with the shipped example config against a real Git server and a namespace of
// its own. Also the units it ships pass `systemd-analyze verify`, and `npm pack` carries the docs.
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDocument } from 'yaml';
import { run, runUnchecked, type RunResult } from '../src/netns/netns.js';
import type { NodeStatus } from '../src/agent/report.js';
import { PROJECT_ROOT, readPublished, stateExampleFiles } from './helpers/agent-fixture.js';
import { commitFiles, generateKey, startGitFixture, type GitFixture } from './helpers/git-server.js';
import { nftNamespace, type NftNamespace } from './helpers/nft-netns.js';

const version = JSON.parse(await readFile(path.join(PROJECT_ROOT, 'package.json'), 'utf8')).version as string;

let work: string;
let deb: string;
let root: string;
let lintian: Promise<RunResult>;

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), `cgw-deb-${process.pid}-`));
  const built = await run('bash', ['scripts/build-deb.sh', '--out', work], { cwd: PROJECT_ROOT });
  deb = built.stdout.trim();
  // lintian takes ~20 s: run it beside the other checks, await it in its own test.
  lintian = runUnchecked('lintian', ['--fail-on', 'error', deb]);
  root = path.join(work, 'root');
  await run('dpkg-deb', ['-x', deb, root]);
}, 60_000);

afterAll(async () => {
  await lintian?.catch(() => undefined);
  if (work) await rm(work, { recursive: true, force: true });
});

async function cgw(args: string[], opts: { env?: Record<string, string> } = {}) {
  return runUnchecked(path.join(root, 'usr/bin/cgw-sync'), args, { env: opts.env });
}

describe('Debian package', () => {
  it('has the metadata a node needs: name, version, all architectures, its dependencies', async () => {
    expect(path.basename(deb)).toBe(`cgw-sync_${version}_all.deb`);
    const field = async (f: string) => (await run('dpkg-deb', ['-f', deb, f])).stdout.trim();
    expect(await field('Package')).toBe('cgw-sync');
    expect(await field('Version')).toBe(version);
    expect(await field('Architecture')).toBe('all');
    const depends = (await field('Depends')).split(/,\s*/);
    expect(depends).toEqual(expect.arrayContaining(['nodejs (>= 20.5)', 'nftables', 'iproute2', 'git']));
    const info = (await run('dpkg-deb', ['-I', deb])).stdout;
    expect(info).toMatch(/ lines? +conffiles\b/);
    expect(await readConffiles()).toEqual(['/etc/cgw-sync/agent.example.yaml']);
  });

  it('holds the program, its production dependencies only, the units, the example config and the docs, owned by root', async () => {
    const listing = (await run('dpkg-deb', ['-c', deb])).stdout.split('\n').filter(Boolean);
    const entries = new Map(listing.map((l) => [l.replace(/^.*?\.\//, '/').replace(/ -> .*$/, ''), l]));
    for (const p of [
      '/usr/bin/cgw-sync',
      '/usr/lib/cgw-sync/dist/cli/bin.js',
      // The schemas precompiled by the build (else every start compiles them).
      '/usr/lib/cgw-sync/dist/state/schema-validators.js',
      '/usr/lib/cgw-sync/node_modules/js-yaml/package.json',
      '/usr/lib/cgw-sync/schema/agent.schema.json',
      '/usr/lib/cgw-sync/state-example/cluster.yaml',
      '/usr/lib/cgw-sync/node_modules/isomorphic-git/package.json',
      '/usr/lib/cgw-sync/node_modules/openpgp/package.json',
      '/lib/systemd/system/cgw-sync.service',
      '/lib/systemd/system/cgw-sync-once.service',
      '/lib/systemd/system/cgw-sync.timer',
      '/etc/cgw-sync/agent.example.yaml',
      '/usr/share/doc/cgw-sync/README.md',
      '/usr/share/doc/cgw-sync/docs/state-format.md',
      '/usr/share/doc/cgw-sync/copyright',
      '/usr/share/doc/cgw-sync/changelog.gz',
    ]) {
      expect(entries.has(p), p).toBe(true);
    }
    expect(entries.get('/usr/bin/cgw-sync')).toMatch(/^-rwxr-xr-x root\/root /);
    // Development tools stay out.
    for (const dev of ['vitest', 'typescript', '@types/node']) expect(entries.has(`/usr/lib/cgw-sync/node_modules/${dev}/`), dev).toBe(false);
    expect(listing.every((l) => / root\/root /.test(l))).toBe(true);
  });

  it('runs from the unpacked tree: --help and validate on the shipped state-example', async () => {
    const help = await cgw(['--help']);
    expect(help.exitCode).toBe(0);
    expect(help.stdout).toMatch(/\bonce\b/);
    const ok = await cgw(['validate', '--state', path.join(root, 'usr/lib/cgw-sync/state-example')]);
    expect(ok.stderr).toBe('');
    expect(ok.exitCode).toBe(0);
  });

  it('its units pass systemd-analyze verify, with /run/netns optional', async () => {
    // A scratch root with the host's own units (targets the ours refer to) and the package's.
    const unitRoot = path.join(work, 'units-root');
    await cp('/lib/systemd/system', path.join(unitRoot, 'lib/systemd/system'), { recursive: true, dereference: false });
    await cp(path.join(root, 'usr'), path.join(unitRoot, 'usr'), { recursive: true });
    await cp(path.join(root, 'lib/systemd/system'), path.join(unitRoot, 'lib/systemd/system'), { recursive: true });
    const units = ['cgw-sync.service', 'cgw-sync-once.service', 'cgw-sync.timer'].map((u) => path.join(unitRoot, 'lib/systemd/system', u));
    const r = await runUnchecked('systemd-analyze', ['verify', '--man=no', `--root=${unitRoot}`, ...units]);
    // Warnings (unknown keys, bad values) go to stderr without changing the exit code.
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    for (const unit of units.slice(0, 2)) {
      const rw = (await readFile(unit, 'utf8')).match(/^ReadWritePaths=(.*)$/m)?.[1].split(/\s+/) ?? [];
      expect(rw).toContain('-/run/netns');
    }
  });

  describe('one agent cycle with the shipped example config', () => {
    let fx: GitFixture;
    let ns: NftNamespace;
    beforeAll(async () => {
      fx = await startGitFixture({ files: await stateExampleFiles() });
      ns = await nftNamespace('deb');
    });
    afterAll(async () => {
      await ns?.destroy();
      await fx?.cleanup();
    });

    it('applies a signed state-example in a namespace and reports to status/node1', async () => {
      // Signed, so the packaged OpenPGP code is exercised too.
      const key = await generateKey('Deb Admin');
      const signed = await commitFiles(fx.repo, await stateExampleFiles(), { sign: key.privateKey, message: 'signed' });
      const keyFile = path.join(work, 'admins.asc');
      await writeFile(keyFile, key.publicKey);
      // The shipped file, changed only where a test host differs from a node: the repository
      // URL, the folders, the namespace, and no Xen here to run guests.
      const doc = parseDocument(await readFile(path.join(root, 'etc/cgw-sync/agent.example.yaml'), 'utf8'));
      doc.setIn(['source', 'url'], fx.url);
      doc.setIn(['stateDir'], path.join(work, 'var'));
      doc.setIn(['hooksDir'], path.join(work, 'hooks'));
      doc.setIn(['guests', 'runDir'], path.join(work, 'run'));
      doc.setIn(['guests', 'enabled'], false);
      doc.setIn(['netns'], ns.ns);
      doc.setIn(['source', 'trustedKeys'], [keyFile]);
      const config = path.join(work, 'agent.yaml');
      await writeFile(config, doc.toString());

      const r = await cgw(['once', '--config', config, '--json']);
      const status = JSON.parse(r.stdout) as NodeStatus;
      expect(status.outcome, r.stdout + r.stderr).toBe('applied');
      expect(status.appliedRevision).toBe(signed);
      expect(r.exitCode).toBe(0);
      const tables = (await ns.raw(['list', 'tables'])).trim().split('\n').sort();
      expect(tables).toEqual(['table ip cgw_nat', 'table netdev cgw_arp']);
      const published = await readPublished(fx, 'node1');
      expect(published?.json.outcome).toBe('applied');
    });
  });

  it('npm pack carries the docs and the LICENSE', async () => {
    const [pack] = JSON.parse((await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: PROJECT_ROOT })).stdout) as [{ files: { path: string }[] }];
    const files = pack.files.map((f) => f.path);
    expect(files).toEqual(expect.arrayContaining(['LICENSE', 'README.md', 'docs/architecture.md', 'docs/state-format.md', 'systemd/cgw-sync.service']));
    expect(await readFile(path.join(PROJECT_ROOT, 'LICENSE'), 'utf8')).toBe(await readFile('/usr/share/common-licenses/Apache-2.0', 'utf8'));
  });

  // Last: lintian ran in the background while the tests above did their work.
  it('passes lintian without errors', async () => {
    const r = await lintian;
    expect(r.stdout).not.toMatch(/^E: /m);
    expect(r.exitCode, r.stdout + r.stderr).toBe(0);
  }, 60_000);
});

async function readConffiles(): Promise<string[]> {
  const ctrl = path.join(work, 'ctrl');
  await run('dpkg-deb', ['-e', deb, ctrl]);
  return (await readFile(path.join(ctrl, 'conffiles'), 'utf8')).split('\n').filter(Boolean);
}
