// Health checks: the state's declarations (schema and semantic checks with file:line:column, the
// address restrictions), the pure check list and verdict, and the probes for real inside a
// namespace (tcp, udp, http against the lab responder), and the bridge's addresses as the running
// agent remembers them (real `ip` in a namespace).
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadState } from '../src/state/load.js';
import { formatDiagnostics } from '../src/state/diagnostics.js';
import { resolveNode } from '../src/render/node-view.js';
import { causedFailures, nodeHealthChecks } from '../src/health/checks.js';
import type { AgentConfig } from '../src/agent/config.js';
import { runIn } from '../src/netns/netns.js';
import { hostHealthEdge, rememberedHealthEdge } from '../src/rollout/checkpoint.js';
import { PROJECT_ROOT } from './helpers/agent-fixture.js';
import { nftNamespace, type NftNamespace } from './helpers/nft-netns.js';
import { serveGuestsIn, type ServedNode } from './helpers/health-node.js';

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'cgw-health-'));
});
afterAll(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

/** state-example/ with text appended to some of its files. */
async function stateWith(name: string, append: Record<string, string>): Promise<string> {
  const dir = path.join(scratch, name);
  await cp(path.join(PROJECT_ROOT, 'state-example'), dir, { recursive: true });
  for (const [file, text] of Object.entries(append)) await writeFile(path.join(dir, file), (await readFile(path.join(dir, file), 'utf8')) + text);
  return dir;
}

const clusterChecks = (items: string) => `health:\n  windowSeconds: 5\n  checks:\n${items}`;

describe('health checks in the state', () => {
  it('accepts cluster, node and forward checks and lists them per node after the built-ins', async () => {
    const dir = await stateWith('ok', {
      'cluster.yaml': clusterChecks('    - { name: web, type: http, ip: 10.5.5.202, port: 80, path: /healthz, status: 200, expect: OK }\n'),
      'nodes/node1.yaml': 'health:\n  checks:\n    - { name: peer, type: tcp, ip: 192.168.122.12, port: 2201 }\n',
      'forwards/ssh.yaml': '    health: { type: tcp, expect: guest2 }\n',
    });
    const r = await loadState(dir);
    expect(formatDiagnostics(r.diagnostics)).toBe('');
    const checks = nodeHealthChecks(resolveNode(r.state!, 'node1'));
    expect(checks.map((c) => c.name)).toEqual(['read-back plan is empty', 'gateway 10.5.5.254 on guestbr0', 'guests of this node run', 'web', 'peer', 'forward ssh-guest2']);
    // The forward is probed at its target guest, as the node reaches it.
    expect(checks.at(-1)).toEqual({ name: 'forward ssh-guest2', probe: { type: 'tcp', expect: 'guest2', timeoutSeconds: 2, ip: '10.5.5.202', port: 22 } });
    expect(nodeHealthChecks(resolveNode(r.state!, 'node2')).map((c) => c.name)).not.toContain('peer');
  });

  it('refuses targets outside the cluster, misplaced fields and duplicate names, with file:line:column', async () => {
    const dir = await stateWith('bad', {
      'cluster.yaml': clusterChecks(
        [
          '    - { name: dns, type: udp, ip: 8.8.8.8, port: 53 }',
          '    - { name: net, type: tcp, ip: 10.5.5.0, port: 22, path: /x }',
          '    - { name: meta, type: http, ip: 169.254.169.254, port: 80 }',
          '    - { name: dup, type: tcp, ip: 10.5.5.201, port: 22 }',
          '',
        ].join('\n'),
      ),
      'nodes/node2.yaml': 'health:\n  checks:\n    - { name: dup, type: tcp, ip: 10.5.5.201, port: 22, timeoutSeconds: 60 }\n',
    });
    const text = formatDiagnostics((await loadState(dir)).diagnostics);
    expect(text).toMatch(/^cluster\.yaml:\d+:\d+: health\.checks\[0\]\.ip: 8\.8\.8\.8 may not be probed: a health check targets a host address in guestSubnet 10\.5\.5\.0\/24 or a node's publicIP/m);
    expect(text).toMatch(/^cluster\.yaml:\d+:\d+: health\.checks\[1\]\.ip: 10\.5\.5\.0 may not be probed/m);
    expect(text).toMatch(/^cluster\.yaml:\d+:\d+: health\.checks\[1\]\.path: only http checks have a path/m);
    expect(text).toMatch(/^cluster\.yaml:\d+:\d+: health\.checks\[2\]\.ip: 169\.254\.169\.254 may not be probed/m);
    expect(text).toMatch(/^nodes\/node2\.yaml:\d+:\d+: health\.checks\[0\]\.timeoutSeconds: must be <= 10/m);
  });

  it('refuses a duplicate check name and waves naming unknown or repeated nodes', async () => {
    const dir = await stateWith('dup', {
      'cluster.yaml': `${clusterChecks('    - { name: dup, type: tcp, ip: 10.5.5.201, port: 22 }\n')}rollout:\n  waves: [[node1], [node2, node9, node1]]\n`,
      'nodes/node2.yaml': 'health:\n  checks:\n    - { name: dup, type: tcp, ip: 10.5.5.202, port: 22 }\n',
    });
    const text = formatDiagnostics((await loadState(dir)).diagnostics);
    expect(text).toMatch(/^nodes\/node2\.yaml:\d+:\d+: health\.checks\[0\]\.name: duplicate health check name "dup" \(first defined at cluster\.yaml:\d+:\d+\)/m);
    expect(text).toMatch(/^cluster\.yaml:\d+:\d+: rollout\.waves\[1\]\[1\]: unknown node "node9"/m);
    expect(text).toMatch(/^cluster\.yaml:\d+:\d+: rollout\.waves\[1\]\[2\]: node "node1" is already in a wave \(cluster\.yaml:\d+:\d+\)/m);
  });

  it('caps the number of checks', async () => {
    const many = Array.from({ length: 17 }, (_, i) => `    - { name: c${i}, type: tcp, ip: 10.5.5.201, port: ${1000 + i} }`).join('\n');
    const text = formatDiagnostics((await loadState(await stateWith('many', { 'cluster.yaml': clusterChecks(`${many}\n`) }))).diagnostics);
    expect(text).toMatch(/^cluster\.yaml:\d+:\d+: health\.checks: must NOT have more than 16 items/m);
  });
});

describe('the checkpoint verdict', () => {
  const r = (name: string, ok: boolean) => ({ name, ok, detail: ok ? 'fine' : 'broken' });
  it('blames the apply only for checks that passed before it or were not run before', () => {
    const before = [r('gateway', false), r('web', true)];
    const after = [r('readback', false), r('gateway', false), r('web', false), r('db', true)];
    expect(causedFailures(before, after).map((x) => x.name)).toEqual(['readback', 'web']);
    expect(causedFailures(before, [r('gateway', false), r('web', true)])).toEqual([]);
  });
});

describe('probes from inside a node namespace', () => {
  let ns: NftNamespace;
  let served: ServedNode;
  beforeAll(async () => {
    ns = await nftNamespace('hprobe');
    served = await serveGuestsIn(ns, ['10.5.5.201']);
  });
  afterAll(async () => {
    await served?.stop();
    await ns?.destroy();
  });
  const probe = (p: object) => served.prober({ timeoutSeconds: 1, ip: '10.5.5.201', ...p } as Parameters<ServedNode['prober']>[0]);

  it('tcp: connect, and the answer must contain expect', async () => {
    expect(await probe({ type: 'tcp', port: 22 })).toEqual({ ok: true, detail: 'connected' });
    expect(await probe({ type: 'tcp', port: 22, expect: 'this is guest1 OK' })).toMatchObject({ ok: true, detail: expect.stringContaining('answered') });
    expect(await probe({ type: 'tcp', port: 22, expect: 'guest2' })).toMatchObject({ ok: false, detail: expect.stringContaining('closed without "guest2"') });
    expect(await probe({ type: 'tcp', port: 23 })).toEqual({ ok: false, detail: 'ECONNREFUSED' });
  });

  it('udp: request and reply', async () => {
    expect(await probe({ type: 'udp', port: 123, send: 'hi', expect: 'via udp/123' })).toMatchObject({ ok: true });
    expect(await probe({ type: 'udp', port: 124, expect: 'x' })).toMatchObject({ ok: false });
  });

  it('http: status and body', async () => {
    expect(await probe({ type: 'http', port: 80, path: '/', status: 200, expect: 'guest1' })).toEqual({ ok: true, detail: 'status 200' });
    expect(await probe({ type: 'http', port: 80, status: 204 })).toEqual({ ok: false, detail: 'status 200 (wanted 204)' });
    expect(await probe({ type: 'http', port: 80, expect: 'nope' })).toEqual({ ok: false, detail: 'status 200, body without "nope"' });
  });

  it('a probe to an address nobody answers ends with its timeout', async () => {
    const t0 = Date.now();
    expect(await probe({ type: 'tcp', ip: '10.5.5.99', port: 22 })).toMatchObject({ ok: false });
    expect(Date.now() - t0).toBeLessThan(4000);
  });
});

describe('the bridge as the running agent remembers it (real ip in a namespace)', () => {
  let ns: NftNamespace;
  beforeAll(async () => {
    ns = await nftNamespace('hbridge');
    for (const args of [['link', 'add', 'br-test', 'type', 'bridge'], ['addr', 'add', '10.5.5.254/24', 'dev', 'br-test']]) await runIn(ns.ns, 'ip', args);
  });
  afterAll(async () => {
    await ns?.destroy();
  });

  it('trusts what it read until forgotten or too old; a failed read never; `since` asks for a read made at or after then', async () => {
    let now = 0;
    let reads = 0;
    const host = hostHealthEdge({ netns: ns.ns } as AgentConfig);
    const counted = (dev: string) => {
      reads++;
      return host.addresses(dev);
    };
    const edge = rememberedHealthEdge({ ...host, addresses: counted }, 1000, () => now);
    expect(await edge.addresses('br-test')).toEqual(['10.5.5.254']);
    await runIn(ns.ns, 'ip', ['addr', 'add', '10.5.5.253/24', 'dev', 'br-test']);
    expect(await edge.addresses('br-test')).toEqual(['10.5.5.254']);
    // Read at 0: good for a round that began then, not for one that began later.
    expect(await edge.addresses('br-test', 0)).toEqual(['10.5.5.254']);
    expect(reads).toBe(1);
    now = 10;
    expect(await edge.addresses('br-test', 5)).toEqual(['10.5.5.254', '10.5.5.253']);
    await runIn(ns.ns, 'ip', ['addr', 'del', '10.5.5.253/24', 'dev', 'br-test']);
    now = 1009;
    expect(await edge.addresses('br-test')).toEqual(['10.5.5.254', '10.5.5.253']);
    now = 1010;
    expect(await edge.addresses('br-test')).toEqual(['10.5.5.254']);
    await runIn(ns.ns, 'ip', ['addr', 'add', '10.5.5.252/24', 'dev', 'br-test']);
    edge.forget();
    expect(await edge.addresses('br-test')).toEqual(['10.5.5.254', '10.5.5.252']);
    expect(reads).toBe(4);
    // A failed read: good for the round that made it, never remembered beyond.
    await expect(edge.addresses('br-late')).rejects.toThrow(/br-late/);
    await expect(edge.addresses('br-late', now)).rejects.toThrow(/br-late/);
    expect(reads).toBe(5);
    await runIn(ns.ns, 'ip', ['link', 'add', 'br-late', 'type', 'bridge']);
    expect(await edge.addresses('br-late')).toEqual([]);
    expect(reads).toBe(6);
  });
});

