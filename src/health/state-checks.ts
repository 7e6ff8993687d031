// The state's health checks and rollout waves, checked like every other cross-document rule
// (listed in `checks` in src/state/semantic.ts); pure. The state is untrusted: a check may only
// probe what the cluster itself declares (an address in the guest subnet, a node's publicIP),
// never an arbitrary host; the schema caps counts, timeouts and payloads.
import { ipv4ToNumber, parseCidr, subnetContains } from '../state/ipv4.js';
import type { Check, CheckContext, Located } from '../state/semantic.js';
import type { HealthCheckSpec, ProbeSettings } from '../state/types.js';
import { scheduleProblem } from '../rollout/windows.js';

/** At most this many checks run on one node (cluster + node + its forwards), besides the built-ins. */
export const MAX_CHECKS_PER_NODE = 32;

/** Fields that only make sense for some probe types. */
function probeFieldProblems(ctx: CheckContext, object: Located, path: ReadonlyArray<string | number>, p: ProbeSettings): void {
  if (p.type !== 'http' && p.path !== undefined) ctx.report(object, [...path, 'path'], `only http checks have a path (this one is ${p.type})`);
  if (p.type !== 'http' && p.status !== undefined) ctx.report(object, [...path, 'status'], `only http checks have a status (this one is ${p.type})`);
  if (p.type === 'http' && p.send !== undefined) ctx.report(object, [...path, 'send'], 'an http check sends a GET request; use path instead of send');
}

export const healthCheckSettings: Check = (ctx) => {
  const { cluster, nodes } = ctx.input;
  const publicIPs = new Set(nodes.map((n) => n.uplink.publicIP));
  const subnet = cluster && parseCidr(cluster.guestSubnet);
  const target = (object: Located, path: ReadonlyArray<string | number>, c: HealthCheckSpec) => {
    probeFieldProblems(ctx, object, path, c);
    if (!subnet) return;
    const n = ipv4ToNumber(c.ip);
    const inSubnet = subnetContains(subnet, c.ip) && n !== subnet.network && n !== subnet.broadcast;
    if (!inSubnet && !publicIPs.has(c.ip)) {
      ctx.report(object, [...path, 'ip'], `${c.ip} may not be probed: a health check targets a host address in guestSubnet ${cluster.guestSubnet} or a node's publicIP (${[...publicIPs].sort().join(', ') || 'none'})`);
    }
  };
  const clusterChecks = cluster?.health?.checks ?? [];
  for (const [i, c] of clusterChecks.entries()) target(cluster!, ['health', 'checks', i], c);
  // Few forwards have a check: found once (and kept per unchanged file: forward-index.ts), not once per node.
  const probed = ctx.forwardsWithHealth();
  for (const f of probed) probeFieldProblems(ctx, f, ['health'], f.health!);
  for (const node of nodes) {
    const own = node.healthChecks ?? [];
    for (const [i, c] of own.entries()) target(node, ['health', 'checks', i], c);
    const names = new Map(clusterChecks.map((c, i) => [c.name, ctx.where(cluster!, ['health', 'checks', i, 'name'])]));
    own.forEach((c, i) => {
      const first = names.get(c.name);
      if (first) ctx.report(node, ['health', 'checks', i, 'name'], `duplicate health check name "${c.name}" (first defined at ${first})`);
      else names.set(c.name, ctx.where(node, ['health', 'checks', i, 'name']));
    });
    const count = clusterChecks.length + own.length + probed.filter((f) => (f.nodes ?? [node.name]).includes(node.name)).length;
    if (count > MAX_CHECKS_PER_NODE) ctx.report(node, ['name'], `node ${node.name} would run ${count} health checks; at most ${MAX_CHECKS_PER_NODE} (cluster, node and forward checks together)`);
  }
};

/** Change windows have schedules cron understands. */
export const changeWindows: Check = (ctx) => {
  ctx.input.cluster?.windows?.forEach((w, i) => {
    const problem = scheduleProblem(w.schedule);
    if (problem) ctx.report(ctx.input.cluster!, ['windows', i, 'schedule'], problem);
  });
};

/** Waves name known nodes, each node at most once. */
export const rolloutWaves: Check = (ctx) => {
  const { cluster, nodes } = ctx.input;
  if (!cluster?.rollout) return;
  const known = new Set([...nodes.map((n) => n.name), ...(ctx.input.unchecked?.nodes ?? [])]);
  const seen = new Map<string, string>();
  for (const [w, wave] of cluster.rollout.waves.entries()) {
    for (const [i, node] of wave.entries()) {
      const path = ['rollout', 'waves', w, i];
      if (!known.has(node)) ctx.report(cluster, path, `unknown node "${node}" (defined: ${[...known].sort().join(', ') || 'none'})`);
      const first = seen.get(node);
      if (first) ctx.report(cluster, path, `node "${node}" is already in a wave (${first}); a node belongs to one wave`);
      else seen.set(node, ctx.where(cluster, path));
    }
  }
};
